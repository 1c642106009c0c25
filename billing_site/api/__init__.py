"""The public API under /api/v1: one module per resource, all on one blueprint.

blueprint.py decides who is calling (an API key, a cookie session or nobody),
applies the per-key rate limit and renders errors; the resource modules below
attach their routes to it and call the same services as the site's pages.
"""

from billing_site.api import (  # noqa: F401  (each attaches its routes)
    admin,
    catalog,
    credits,
    docs,
    generations,
    keys,
    payments,
    subscription,
)
from billing_site.api.blueprint import bp
from billing_site.api.key_pages import bp as key_pages_bp

__all__ = ["bp", "key_pages_bp"]
