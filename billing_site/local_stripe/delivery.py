"""Posting recorded events, signed, to the site's own webhook."""

import json
import logging
import threading

import sqlalchemy
from flask import after_this_request, current_app, has_request_context

from billing_site.config import webhook_secrets
from billing_site.stripe_gateway import sign_payload

log = logging.getLogger(__name__)

WEBHOOK_PATH = "/stripe/webhook"


class DeliveryMixin:
    """When and how the stand-in's events reach the webhook (see the package docstring)."""

    def deliver(self, events: list[dict]) -> list[int]:
        """Post recorded events to the site's webhook now; returns the statuses."""
        return _post_events(current_app._get_current_object(), events, self._take_fail_next())

    def fail_next_delivery(self) -> None:
        """Make the first event of the next delivery fail its first attempt (then retried)."""
        with self._state() as state:
            state["fail_next_delivery"] = True

    def _take_fail_next(self) -> bool:
        with self._state() as state:
            return bool(state.pop("fail_next_delivery", False))

    def _deliver(self, events: list[dict]) -> None:
        if not events:
            return
        app = current_app._get_current_object()
        fail_first = self._take_fail_next()
        if not has_request_context():
            _post_after_transaction(app, events, fail_first)
            return

        # Inside a request: after the view returns (and has committed), so a
        # handler never waits on a row this request still holds locked.
        @after_this_request
        def deliver_after_view(response):
            _post_events(app, events, fail_first)
            return response


def _post_after_transaction(app, events: list[dict], fail_first: bool) -> None:
    """Post now, or once the caller's transaction ends if one is open (a worker's handler).

    A handler that calls the stand-in (a refund, a cancel) holds row locks until it
    commits; the events must not be applied before then, or they would wait on
    those locks while the handler waits for them. Stripe sends them either way,
    so a rollback delivers them too.
    """
    from billing_site.extensions import db

    session = db.session()
    if not (session.info.get("applying_event") and session.in_transaction()):
        _post_events(app, events, fail_first)
        return
    root = session.get_transaction()
    sent = []

    def post_when_root_ends(_session, transaction):
        # Savepoints (a flush's, SQLite's receipt savepoint) end first; wait for the root.
        # (A listener must not remove itself while SQLAlchemy iterates the listeners.)
        if transaction is root and not sent:
            sent.append(True)
            _post_events(app, events, fail_first)

    sqlalchemy.event.listen(session, "after_transaction_end", post_when_root_ends)


def _post_events(app, events: list[dict], fail_first: bool = False) -> list[int]:
    """Post each event, signed, to the app's own webhook, then apply them; returns the statuses.

    A fresh thread has no Flask context, so the webhook request gets its own app
    context and database session rather than sharing the caller's.
    """
    statuses: list[int] = []

    def post_all():
        client = app.test_client()
        secret = webhook_secrets(app.config)[0]
        for event in events:
            payload = json.dumps(event)
            try:
                response = client.post(
                    WEBHOOK_PATH,
                    data=payload,
                    headers={"Stripe-Signature": sign_payload(payload, secret)},
                    content_type="application/json",
                )
            except Exception:  # the webhook is the site's; report and go on, as Stripe would
                log.exception("local stripe: delivering %s %s raised", event["type"], event["id"])
                statuses.append(500)
                continue
            statuses.append(response.status_code)
            level = logging.INFO if response.status_code < 300 else logging.WARNING
            log.log(
                level,
                "local stripe: delivered %s %s -> %s",
                event["type"],
                event["id"],
                response.status_code,
            )
        _apply_delivered(app, events, fail_first)

    thread = threading.Thread(target=post_all, name="local-stripe-webhook")
    thread.start()
    thread.join()
    return statuses


def _apply_delivered(app, events: list[dict], fail_first: bool) -> None:
    """Apply what was just stored, in-process, through the worker's own step."""
    from billing_site import worker

    with app.app_context():
        if fail_first and events:
            reason = "The local stand-in failed this delivery on purpose (fail the next delivery)."
            worker.fail_once(events[0]["id"], reason)
        try:
            worker.drain()
        except Exception:  # the worker process (or a replay) picks up whatever is left
            log.exception("local stripe: applying delivered events raised")
        finally:
            from billing_site.extensions import db

            db.session.remove()
