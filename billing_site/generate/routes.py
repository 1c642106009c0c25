"""GET/POST /generate (HTMX or whole page), and the limits POST /api/v1/generations shares.

Two rate limits guard generation, each shared by the page and the API so a
visitor cannot get a second allowance by switching between them:

- anonymous visitors: ANONYMOUS_DAILY_LIMIT per client key per 24 h (customers
  are exempt: they pay), backed by a per-address ceiling so rotating the
  X-Client-Fingerprint header cannot mint fresh allowances;
- unlimited-tier customers: PREMIUM_HOURLY_LIMIT an hour (fair use).

When the Redis storage is unreachable, Flask-Limiter 4.1 (with
RATELIMIT_IN_MEMORY_FALLBACK_ENABLED) switches to a per-process memory storage.
Because RATELIMIT_IN_MEMORY_FALLBACK is left unset, it keeps evaluating these
same decorated limits there (a non-empty fallback list would *replace* them),
so the cap keeps holding per process instead of vanishing.
"""

import time
from datetime import UTC, datetime

from flask import Blueprint, abort, current_app, jsonify, make_response, request, url_for
from flask_login import current_user, login_required
from limits import parse

from billing_site import credits, formatting
from billing_site.account.services import (
    model_offers,
    recent_generations,
    tier_of,
    touch_month,
    unlocked_models,
)
from billing_site.catalog import current_catalog
from billing_site.client_identity import address_key, client_key
from billing_site.errors import error_response
from billing_site.extensions import db, limiter
from billing_site.generate import services
from billing_site.generate.forms import PROMPT_MAX_LENGTH, GenerationInput, validate_generation
from billing_site.htmx import render_page_or_fragment
from billing_site.models import Generation

bp = Blueprint("generate", __name__)

ANONYMOUS_SCOPE = "anonymous-generations"
# Up to ANONYMOUS_ADDRESS_FACTOR people behind one address (an office, a NAT)
# each get the anonymous allowance; beyond that, a new fingerprint buys nothing.
API_PREFIX = "/api/"


# --- the limits ------------------------------------------------------------------


def anonymous_limit() -> str:
    return f"{current_app.config['ANONYMOUS_DAILY_LIMIT']} per 24 hours"


def address_ceiling_limit() -> str:
    config = current_app.config
    return f"{config['ANONYMOUS_DAILY_LIMIT'] * config['ANONYMOUS_ADDRESS_FACTOR']} per 24 hours"


def fair_use_limit() -> str:
    return f"{current_app.config['PREMIUM_HOURLY_LIMIT']} per hour"


def is_customer() -> bool:
    return current_user.is_authenticated


def is_not_unlimited() -> bool:
    return not (current_user.is_authenticated and tier_of(current_user).is_unlimited)


def customer_key() -> str:
    return f"user:{current_user.id}"


def attempt_cost() -> int:
    """An invalid request (422) does not use up an allowance; anything else does."""
    _, errors = validate_generation(request_data(), current_catalog())
    return 0 if errors else 1


def cap_reached(limit) -> object:
    """The friendly 429 for a visitor past the anonymous cap."""
    # Computed as Flask-Limiter computes the Retry-After header, so the two agree.
    retry_after = max(0, int(limit.reset_at - time.time()))
    message = (
        f"You've used your {limit.limit.amount} free generations today. "
        f"You can try again {_when(limit.reset_at)}, or sign up for "
        f"{current_catalog().free_tier.credits_per_month} free credits a month."
    )
    if request.path.startswith(API_PREFIX):
        body = {
            "error": "rate_limit_exceeded",
            "message": message,
            "limit": limit.limit.amount,
            "window": "24h",
            "retry_after": retry_after,
            "signup_url": url_for("auth.signup", _external=True),
        }
        return _json(body, 429)
    notice = {"kind": "cap", "message": message, "link": url_for("auth.signup")}
    return _render(429, notice=notice, tries_left=0, **_submitted())


def _when(reset_at: float) -> str:
    """When the window reopens, in the site's time (UTC): "at 14:05 UTC" or "tomorrow at …"."""
    moment = datetime.fromtimestamp(reset_at, UTC)
    day = "" if moment.date() == datetime.now(UTC).date() else "tomorrow "
    return f"{day}at {formatting.time(moment)} UTC"


def fair_use_reached(limit) -> object:
    minutes = max(1, (int(limit.reset_at - time.time()) + 59) // 60)
    message = (
        f"You have made {limit.limit.amount} generations this hour, the fair-use limit. "
        f"Try again in {minutes} minute{'s' if minutes != 1 else ''}."
    )
    if request.path.startswith(API_PREFIX):
        body = {
            "error": "rate_limit_exceeded",
            "message": message,
            "limit": limit.limit.amount,
            "window": "1h",
            "retry_after": max(0, int(limit.reset_at - time.time())),
        }
        return _json(body, 429)
    return _render(429, notice={"kind": "fair_use", "message": message}, **_submitted())


def _submitted() -> dict:
    """What the visitor typed, so a refused request does not wipe the form."""
    data, _ = validate_generation(request.form, current_catalog())
    return {"prompt": data.prompt, "model": data.model}


# Declared once and applied to both routes: one shared bucket per visitor.
anonymous_cap = limiter.shared_limit(
    anonymous_limit,
    scope=ANONYMOUS_SCOPE,
    exempt_when=is_customer,
    cost=attempt_cost,
    on_breach=cap_reached,
)
address_ceiling = limiter.shared_limit(
    address_ceiling_limit,
    scope="anonymous-generations-per-address",
    key_func=address_key,
    exempt_when=is_customer,
    cost=attempt_cost,
    on_breach=cap_reached,
)
fair_use = limiter.shared_limit(
    fair_use_limit,
    scope="unlimited-tier-generations",
    key_func=customer_key,
    exempt_when=is_not_unlimited,
    cost=attempt_cost,
    on_breach=fair_use_reached,
)


def free_tries() -> tuple[int | None, float | None]:
    """This visitor's anonymous generations left today and when more open (None if unknown)."""
    item = parse(anonymous_limit())
    prefix = current_app.config.get("RATELIMIT_KEY_PREFIX")
    args = [prefix, client_key(), ANONYMOUS_SCOPE] if prefix else [client_key(), ANONYMOUS_SCOPE]
    try:
        stats = limiter.limiter.get_window_stats(item, *args)
    except Exception:  # the storage is down: the page still renders, without the count
        return None, None
    return stats.remaining, stats.reset_time


def free_tries_left() -> int | None:
    """This visitor's anonymous generations left today (None when the storage is down)."""
    return free_tries()[0]


@bp.errorhandler(429)
def too_many_generations(error):
    # on_breach built the friendly answer; Flask-Limiter attaches it to the error.
    return getattr(error, "response", None) or error_response(429)


# --- the page ----------------------------------------------------------------------


@bp.get("/generate")
def page():
    if current_user.is_authenticated:
        touch_month(current_user)
    return _render(200, model=current_catalog().models[0].id)


@bp.post("/generate")
@address_ceiling
@anonymous_cap
@fair_use
def create():
    data, errors = validate_generation(request.form, current_catalog())
    if errors:
        return _render(422, prompt=data.prompt, model=data.model, errors=errors)
    try:
        result = _generate(data)
    except services.GenerationRefused as refused:
        return _render(
            refused.status, prompt=data.prompt, model=data.model, notice=_notice(refused)
        )
    return _render(200, prompt=data.prompt, model=data.model, result=result)


def _generate(data: GenerationInput) -> services.GenerationResult:
    if current_user.is_authenticated:
        return services.generate_for_customer(current_user.id, data)
    return services.generate_for_visitor(client_key(), data)


def _notice(refused: services.GenerationRefused) -> dict:
    links = {402: url_for("pricing.index"), 403: url_for("pricing.index")}
    if isinstance(refused, services.ModelNotInTier) and refused.tier is None:
        links[403] = url_for("auth.signup")
    return {"kind": refused.code, "message": refused.message, "link": links.get(refused.status)}


def _render(status: int, **context):
    """The generator card: the whole page, or (for HTMX) the card and the balance badge."""
    context.setdefault("prompt", "")
    context.setdefault("model", "")
    context.setdefault("errors", {})
    if not current_user.is_authenticated:
        tries_left, reset_at = free_tries()
        context.setdefault("tries_left", tries_left)
        if context["tries_left"] == 0 and reset_at:
            context["tries_reset"] = _when(reset_at)
    result = context.get("result")
    if result is not None and result.balance is not None:
        context["nav_balance"] = result.balance  # the badge shows the balance after spending
    balance = _balance(result)
    return render_page_or_fragment(
        "generate/page.html",
        "generate/_response.html",
        status,
        models=_model_choices(balance),
        balance=balance,
        gallery=recent_generations(current_user.id) if current_user.is_authenticated else [],
        prompt_max_length=PROMPT_MAX_LENGTH,
        daily_limit=current_app.config["ANONYMOUS_DAILY_LIMIT"],
        **context,
    )


def _balance(result) -> int | None:
    if not current_user.is_authenticated:
        return None
    if result is not None and result.balance is not None:
        return result.balance
    return credits.current_balance(current_user.id)


def _model_choices(balance: int | None) -> list[dict]:
    """Each model, whether the visitor may use it, and what pressing Generate would cost."""
    catalog = current_catalog()
    tier = tier_of(current_user) if current_user.is_authenticated else None
    allowed = unlocked_models(current_user) if tier else catalog.free_tier.models
    offers = model_offers()
    return [
        {
            "model": model,
            "allowed": model.id in allowed,
            "offers": offers[model.id],
            "summary": _cost_summary(model, tier, balance),
        }
        for model in catalog.models
    ]


def _cost_summary(model, tier, balance: int | None) -> str:
    if tier is None:
        return f"{model.name}: a free try, no credits needed."
    if tier.is_unlimited:
        return f"{model.name}: included in your {tier.name} plan."
    after = balance - model.cost
    if after < 0:
        return f"{model.name} costs {formatting.credits(model.cost)}; you have {balance}."
    return f"{model.name} costs {formatting.credits(model.cost)}: balance after {after}."


@bp.get("/generate/<int:generation_id>/image.svg")
@login_required
def download(generation_id: int):
    """The customer's own image as a file to keep (anyone else's is a 404)."""
    generation = db.session.get(Generation, generation_id)
    if generation is None or generation.user_id != current_user.id or not generation.result:
        abort(404)
    response = make_response(generation.result)
    response.headers["Content-Type"] = "image/svg+xml"
    response.headers["Content-Disposition"] = (
        f'attachment; filename="pixel-forge-{generation.id}.svg"'
    )
    return response


# --- shared with the API (billing_site/api/generations.py) ------------------------


def request_data() -> dict:
    """The form or the JSON body as a mapping (an unreadable body reads as empty)."""
    if request.path.startswith(API_PREFIX):
        data = request.get_json(silent=True)
        # The API's default model, so a request without one costs an attempt too.
        return {"model": current_catalog().models[0].id, **(data if isinstance(data, dict) else {})}
    return request.form


def _json(body: dict, status: int):
    # A Response object, not a tuple: on_breach callbacks must return one.
    return make_response(jsonify(body), status)
