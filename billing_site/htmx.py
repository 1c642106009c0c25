"""One place that decides between an HTMX fragment and a whole page."""

from flask import make_response, render_template, request


def is_htmx_request() -> bool:
    return request.headers.get("HX-Request") == "true"


def render_page_or_fragment(page: str, fragment: str, status: int = 200, **context):
    """Render `fragment` for HTMX and `page` (which includes it) otherwise.

    Vary tells caches the two answers differ, so a cached fragment is never
    served as a page.
    """
    template = fragment if is_htmx_request() else page
    response = make_response(render_template(template, **context), status)
    response.vary.add("HX-Request")
    return response
