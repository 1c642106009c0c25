"""POST /api/v1/generations (charged once per Idempotency-Key), and reading them back.

The POST shares the page's limits (the anonymous cap, its per-address ceiling and
the unlimited tier's fair use), declared once in generate/routes.py: switching
between the page and the API buys no second allowance.
"""

from flask import jsonify, url_for
from flask_login import current_user
from sqlalchemy import select

from billing_site.api.blueprint import require_customer, require_scope, route
from billing_site.api.idempotency import idempotent
from billing_site.api.shapes import ApiError, iso, json_body, keyset, page_args, page_json
from billing_site.catalog import current_catalog
from billing_site.client_identity import client_key
from billing_site.extensions import db
from billing_site.generate import services
from billing_site.generate.forms import validate_generation
from billing_site.generate.routes import address_ceiling, anonymous_cap, fair_use
from billing_site.generator import svg_data_url
from billing_site.models import Generation


@route("/v1/generations", methods=("POST",), endpoint="create_generation")
@idempotent
@address_ceiling
@anonymous_cap
@fair_use
def create_generation():
    body = json_body()
    catalog = current_catalog()
    # The default model is the catalog's first (standard), as on the page.
    data, errors = validate_generation({"model": catalog.models[0].id, **body}, catalog)
    if errors:
        field = next(iter(errors))
        raise ApiError(422, "validation_error", " ".join(errors.values()), field)
    try:
        if current_user.is_authenticated:
            require_scope("write")
            result = services.generate_for_customer(current_user.id, data)
        else:
            result = services.generate_for_visitor(client_key(), data)
    except services.GenerationRefused as refused:
        raise refusal(refused) from refused
    body = generation_json(result.generation)
    body.update(charge={"credits": result.generation.credits_charged}, balance_after=result.balance)
    return jsonify(body), 201


def refusal(refused: services.GenerationRefused) -> ApiError:
    extra = {}
    if refused.status in (402, 403):
        extra["pricing_url"] = url_for("pricing.index", _external=True)
    if isinstance(refused, services.OutOfCredits):
        extra.update(balance=refused.balance, cost=refused.cost)
    return ApiError(refused.status, refused.code, refused.message, **extra)


@route("/v1/generations", endpoint="list_generations")
def list_generations():
    user = require_customer()
    require_scope("read")
    cursor, limit = page_args()
    statement = select(Generation).where(Generation.user_id == user.id)
    rows, has_more = keyset(statement, Generation.id, cursor, limit)
    return jsonify(page_json(rows, has_more, generation_json))


@route("/v1/generations/<int:generation_id>")
def get_generation(generation_id: int):
    user = require_customer()
    require_scope("read")
    generation = db.session.get(Generation, generation_id)
    if generation is None or generation.user_id != user.id:
        raise ApiError(404, "not_found", "No such generation.")
    return jsonify(generation_json(generation))


def generation_json(generation: Generation) -> dict:
    return {
        "id": generation.id,
        "status": generation.status,
        "model": generation.model,
        "prompt": generation.prompt,
        "credits_charged": generation.credits_charged,
        "image": svg_data_url(generation.result) if generation.result else None,
        "created_at": iso(generation.created_at),
    }
