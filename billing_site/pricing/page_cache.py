"""The pricing page's answer to a visitor without cookies, kept in memory per worker.

Such a visitor (a first visit, a crawler, a load generator) gets the same bytes
every time, and once the page itself was rendered once (routes.index), most of
the request's cost was the extensions' per-request hooks: the rate limiter,
Talisman's headers, Flask-Login and the session. This WSGI layer stores the whole
response Flask gave the first such request, security headers included, and
replays it to the next ones without running Flask at all.

It stores only what the view marked as the shared anonymous page (PUBLIC_PAGE in
the environ), answered 200 without setting a cookie, and replays it only to a
request no different in what that response depends on: a GET of the same path,
with no cookie, query string or credentials, over the same scheme (Talisman adds
HSTS for HTTPS). Anything else goes through Flask as usual.
"""

from collections.abc import Callable, Iterable

from flask import Flask

PUBLIC_PAGE = "billing_site.public_page"

Key = tuple[str, str, str, bool]
Stored = tuple[str, list[tuple[str, str]], bytes]


class AnonymousPageCache:
    """WSGI middleware replaying the stored response of a public page (see the module doc)."""

    def __init__(self, wsgi_app: Callable, paths: Iterable[str]):
        self.wsgi_app = wsgi_app
        self.paths = frozenset(paths)
        self.responses: dict[Key, Stored] = {}

    def __call__(self, environ: dict, start_response: Callable):
        key = self.key(environ)
        if key is None:
            return self.wsgi_app(environ, start_response)
        stored = self.responses.get(key)
        if stored is None:
            return self.answer_and_store(key, environ, start_response)
        status, headers, body = stored
        start_response(status, list(headers))
        return [body]

    def key(self, environ: dict) -> Key | None:
        """What the stored response depends on, or None when it must not be used."""
        if environ.get("REQUEST_METHOD") != "GET" or environ.get("PATH_INFO") not in self.paths:
            return None
        if any(environ.get(name) for name in ("HTTP_COOKIE", "QUERY_STRING", "HTTP_AUTHORIZATION")):
            return None
        return (
            environ.get("SCRIPT_NAME", ""),
            environ["PATH_INFO"],
            environ.get("wsgi.url_scheme", "http"),
            # Talisman reads this header as-is; as a boolean a client cannot grow the cache.
            environ.get("HTTP_X_FORWARDED_PROTO") == "https",
        )

    def answer_and_store(self, key: Key, environ: dict, start_response: Callable):
        answer: dict = {}

        def remember(status, headers, exc_info=None):
            answer.update(status=status, headers=list(headers))
            return start_response(status, headers, exc_info)

        chunks = self.wsgi_app(environ, remember)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        if self.storable(environ, answer):
            self.responses[key] = (answer["status"], answer["headers"], body)
        return [body]

    @staticmethod
    def storable(environ: dict, answer: dict) -> bool:
        return (
            environ.get(PUBLIC_PAGE) is True
            and answer.get("status", "").startswith("200 ")
            and not any(name.lower() == "set-cookie" for name, _ in answer["headers"])
        )


def cache_anonymous_page(app: Flask, *endpoints: str) -> None:
    """Serve the endpoints' paths to visitors without cookies from memory (see the module doc)."""
    paths = [rule.rule for endpoint in endpoints for rule in app.url_map.iter_rules(endpoint)]
    app.wsgi_app = AnonymousPageCache(app.wsgi_app, paths)
