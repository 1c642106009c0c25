"""The landing page at /, the pricing page at /pricing (the catalog as JSON is in billing_site/api/catalog.py)."""

from decimal import Decimal

from flask import Blueprint, current_app, render_template, request, session
from flask_login import current_user

from billing_site import formatting
from billing_site.account.services import current_tier
from billing_site.catalog import Pack, current_catalog
from billing_site.generator import SvgGenerator
from billing_site.pricing.page_cache import PUBLIC_PAGE

bp = Blueprint("pricing", __name__)

# Drawn by the built-in generator (the same bytes every time), one per model.
EXAMPLE_PROMPTS = (
    ("A lighthouse on a cliff at dusk", "standard"),
    ("A fox made of autumn leaves", "hd"),
    ("A city of glass under two moons", "pro"),
)


def format_money(cents: int | Decimal, currency: str = "usd") -> str:
    """Minor units as a price a person reads (the site's one money format)."""
    return formatting.money(cents, currency)


def price_per_credit(pack: Pack, currency: str = "usd") -> str:
    """A pack's price per credit, rounded to the cent: the Pro Pack → "$0.20"."""
    return format_money(Decimal(pack.price_cents) / pack.credits, currency)


@bp.app_context_processor
def catalog_context() -> dict:
    # Every page may mention the catalog (sign-up names the free tier's credits).
    return {"catalog": current_catalog()}


@bp.get("/")
def home():
    if current_user.is_authenticated or "_flashes" in session:
        return render_landing_page()
    return anonymous_page(render_landing_page)


@bp.get("/pricing")
def index():
    if current_user.is_authenticated or "_flashes" in session:
        return render_pricing_page()
    return anonymous_page(render_pricing_page)


def render_pricing_page() -> str:
    # A visitor who is not logged in is shown Buy links to sign up rather than
    # forms, so the page carries no CSRF token and mints them no session cookie.
    return render_template(
        "pricing/index.html",
        catalog=current_catalog(),
        price_per_credit=price_per_credit,
        public_page=not current_user.is_authenticated,
        plan_labels=_plan_labels(),
        free_tier_is_current=_on_free_tier(),
    )


def _plan_labels() -> dict[str, str]:
    """Per tier, "Current plan", "Upgrade", "Switch" or "Subscribe" for the customer."""
    from billing_site.plan_changes import pricing_labels

    return pricing_labels(current_user) if current_user.is_authenticated else {}


def _on_free_tier() -> bool:
    if not current_user.is_authenticated:
        return False
    return current_tier(current_user) == current_catalog().free_tier.id


def render_landing_page() -> str:
    examples = [
        {"prompt": prompt, "model": model, "image": SvgGenerator().generate(prompt, model)}
        for prompt, model in EXAMPLE_PROMPTS
        if current_catalog().model(model) is not None
    ]
    return render_template(
        "pricing/landing.html",
        catalog=current_catalog(),
        examples=examples,
        public_page=not current_user.is_authenticated,
    )


def anonymous_page(render) -> str:
    """The page as every anonymous visitor sees it, rendered once per process.

    It is the busiest page and, without a user, a token or a flash message, the
    same for everyone; it is keyed on the catalog (fixed at start-up) and on the
    path the app is mounted at, the only inputs it has. The whole response may
    then be replayed to visitors without cookies (page_cache).
    """
    request.environ[PUBLIC_PAGE] = True
    catalog = current_catalog()
    pages = current_app.extensions.setdefault("pricing.anonymous_pages", {})
    key = (request.script_root, request.endpoint)
    cached = pages.get(key)
    if cached is None or cached[0] is not catalog:
        cached = pages[key] = (catalog, render())
    return cached[1]
