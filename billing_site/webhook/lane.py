"""POST /stripe/webhook past the hooks the rest of the site runs on every request.

Stripe is this path's only client, and after an outage it sends a burst of
thousands of events. The request needs nothing the site's pages need: no
session, no logged-in user, no CSRF token, no rate limit (the view is exempt)
and no browser security headers. Those hooks cost more than verifying and
storing the event does, so this WSGI layer runs the webhook's own view in a
request context of its own, with only what the webhook needs from the site's
hooks: the body cap, the request id and the request metrics. Errors are
answered by the site's own error handlers. The read deadline (BodyDeadline)
sits outside this layer and still applies; every other request goes through
Flask as usual.
"""

import time
from collections.abc import Callable

from flask import Flask, g, request
from flask.ctx import RequestContext

from billing_site import logs, metrics
from billing_site.request_limits import WEBHOOK_PATHS, enforce_body_limit

ENDPOINT = "webhook.receive_event"


class WebhookLane:
    """WSGI middleware answering the webhook's POSTs with its view alone (see the module doc)."""

    def __init__(self, app: Flask, wsgi_app: Callable):
        self.app = app
        self.wsgi_app = wsgi_app
        self.trust_request_id = app.config.get("TRUSTED_PROXIES", 0) > 0

    def __call__(self, environ: dict, start_response: Callable):
        if environ.get("REQUEST_METHOD") != "POST" or environ.get("PATH_INFO") not in WEBHOOK_PATHS:
            return self.wsgi_app(environ, start_response)
        started = time.perf_counter()
        # Stripe sends no cookie and the webhook keeps no session: a null one
        # spares opening the signed cookie session on every delivery.
        null_session = self.app.session_interface.make_null_session(self.app)
        with RequestContext(self.app, environ, session=null_session):
            response = self.answer()
            metrics.observe_request("POST", ENDPOINT, response.status_code, started)
            return response(environ, start_response)

    def answer(self):
        sent = request.headers.get(logs.REQUEST_ID_HEADER, "") if self.trust_request_id else ""
        g.request_id = logs.request_id_from(sent)
        try:
            enforce_body_limit()
            response = self.app.make_response(self.app.view_functions[ENDPOINT]())
        except Exception as error:  # the site's handlers: JSON here, as for the API
            response = self.app.make_response(self.app.handle_user_exception(error))
        response.headers[logs.REQUEST_ID_HEADER] = g.request_id
        return response


def install_webhook_lane(app: Flask) -> None:
    app.wsgi_app = WebhookLane(app, app.wsgi_app)
