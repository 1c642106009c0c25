"""The OpenAPI 3.1 document of /api/v1, written by hand (served at /api/v1/openapi.json).

tests/test_api_openapi.py validates it and fails when a route under /api/v1 is
missing from it, so it cannot drift from the URL map.
"""

from copy import deepcopy

STRING = {"type": "string"}
INTEGER = {"type": "integer"}
BOOLEAN = {"type": "boolean"}
TIME = {"type": "string", "format": "date-time", "description": "ISO 8601, UTC (Z)."}


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict, required: list | None = None, **extra) -> dict:
    schema = {"type": "object", "properties": properties, **extra}
    schema["required"] = list(properties) if required is None else required
    return schema


def page_of(item: str) -> dict:
    return obj(
        {
            "data": {"type": "array", "items": ref(item)},
            "has_more": BOOLEAN,
            "next_starting_after": nullable(INTEGER),
        }
    )


SCHEMAS = {
    "Error": obj(
        {
            "error": {**STRING, "description": "A stable code, e.g. invalid_api_key."},
            "message": {**STRING, "description": "A sentence a person can act on."},
            "field": {**STRING, "description": "The input at fault (validation errors)."},
        },
        ["error", "message"],
        additionalProperties=True,
        description="Every error under /api. Some carry context beside these fields "
        "(retry_after, balance, cost, pricing_url, signup_url, portal_url).",
    ),
    "Money": obj(
        {
            "amount": {**INTEGER, "description": "Minor units (cents)."},
            "currency": {**STRING, "description": "ISO 4217, lower case."},
            "display": {**STRING, "examples": ["$9.99"]},
        }
    ),
    "Pack": obj(
        {
            "id": STRING,
            "name": STRING,
            "credits": INTEGER,
            "price": ref("Money"),
            "price_per_credit": ref("Money"),
            "popular": BOOLEAN,
            "savings_percent": INTEGER,
            "credits_expire_after_days": INTEGER,
            "unlocks": {
                "type": "object",
                "additionalProperties": INTEGER,
                "description": "Generations of each model the pack's credits pay for.",
            },
        }
    ),
    "Tier": obj(
        {
            "id": STRING,
            "name": STRING,
            "price": ref("Money"),
            "interval": {"const": "month"},
            "allowance": nullable(INTEGER),
            "unlimited": BOOLEAN,
            "models": {"type": "array", "items": STRING},
            "features": {"type": "array", "items": STRING},
        }
    ),
    "Model": obj({"id": STRING, "name": STRING, "cost": INTEGER}),
    "Catalog": obj(
        {
            "currency": STRING,
            "packs": {"type": "array", "items": ref("Pack")},
            "tiers": {"type": "array", "items": ref("Tier")},
            "models": {"type": "array", "items": ref("Model")},
        }
    ),
    "StripeConfig": obj({"publishable_key": STRING}),
    "Me": obj(
        {
            "id": INTEGER,
            "email": STRING,
            "is_admin": BOOLEAN,
            "balance": INTEGER,
            "plan": obj({"id": STRING, "name": STRING}),
            "unlimited": BOOLEAN,
            "created_at": TIME,
        }
    ),
    "CreditCheckRequest": obj(
        {"model": {**STRING, "default": "standard"}, "count": {**INTEGER, "minimum": 1}}, []
    ),
    "Purchase": obj(
        {
            "kind": {"enum": ["pack", "plan"]},
            "id": STRING,
            "name": STRING,
            "credits": INTEGER,
            "allowance": nullable(INTEGER),
            "unlimited": BOOLEAN,
            "price": ref("Money"),
        },
        ["kind", "id", "name", "price"],
    ),
    "CreditCheck": obj(
        {
            "has_credit": BOOLEAN,
            "balance": INTEGER,
            "cost": INTEGER,
            "unlimited": BOOLEAN,
            "free_uses_remaining": nullable(INTEGER),
            "plan": nullable(STRING),
            "reason": nullable(
                {"enum": ["model_not_in_tier", "insufficient_credits", "free_uses_exhausted"]}
            ),
            "purchase_required": BOOLEAN,
            "signup_required": BOOLEAN,
            "signup_url": STRING,
            "daily_free_uses": INTEGER,
            "suggested_purchase": nullable(ref("Purchase")),
        },
        [
            "has_credit",
            "balance",
            "unlimited",
            "free_uses_remaining",
            "plan",
            "reason",
            "purchase_required",
            "suggested_purchase",
        ],
    ),
    "GenerationRequest": obj(
        {"prompt": {**STRING, "maxLength": 500}, "model": {**STRING, "default": "standard"}},
        ["prompt"],
    ),
    "Generation": obj(
        {
            "id": INTEGER,
            "status": {"enum": ["pending", "succeeded", "failed"]},
            "model": STRING,
            "prompt": STRING,
            "credits_charged": INTEGER,
            "image": nullable({**STRING, "description": "A data: URL of the SVG."}),
            "created_at": TIME,
        }
    ),
    "GenerationCreated": {
        "allOf": [
            ref("Generation"),
            obj({"charge": obj({"credits": INTEGER}), "balance_after": nullable(INTEGER)}),
        ]
    },
    "GenerationPage": page_of("Generation"),
    "Usage": obj(
        {
            "plan": STRING,
            "balance": INTEGER,
            "used": INTEGER,
            "generations": INTEGER,
            "allowance": nullable(INTEGER),
            "unlimited": BOOLEAN,
            "percentage": INTEGER,
            "period_start": TIME,
            "period_end": TIME,
            "has_credit": BOOLEAN,
            "purchase_required": BOOLEAN,
            "per_day": {
                "type": "array",
                "items": obj({"date": {**STRING, "format": "date"}, "count": INTEGER}),
            },
        }
    ),
    "LedgerEntry": obj(
        {
            "id": INTEGER,
            "kind": STRING,
            "delta": INTEGER,
            "balance_after": INTEGER,
            "reference": nullable(STRING),
            "note": nullable(STRING),
            "payment_id": nullable(INTEGER),
            "created_at": TIME,
        }
    ),
    "LedgerPage": page_of("LedgerEntry"),
    "CheckoutRequest": obj(
        {
            "pack": STRING,
            "plan": STRING,
            "package_id": {**STRING, "deprecated": True, "description": "Old name of pack."},
        },
        [],
        description="Exactly one of pack or plan.",
    ),
    "Checkout": obj(
        {
            "checkout_url": STRING,
            "session_id": STRING,
            "expires_at": nullable(TIME),
            "payment_id": INTEGER,
        }
    ),
    "Payment": obj(
        {
            "id": INTEGER,
            "status": STRING,
            "kind": {**STRING, "examples": ["pack", "subscription", "renewal", "proration"]},
            "item": obj({"id": STRING, "name": STRING}),
            "amount": {**ref("Money"), "description": "What Stripe actually took."},
            "amount_refunded": ref("Money"),
            "credits": nullable(INTEGER),
            "unlimited": BOOLEAN,
            "created_at": TIME,
            "paid_at": nullable(TIME),
            "receipt_url": nullable(STRING),
            "failure_reason": nullable(STRING),
        }
    ),
    "PaymentPage": page_of("Payment"),
    "PendingChange": obj(
        {"type": {"const": "cancel"}, "effective_at": nullable(TIME), "to_tier": STRING}
    ),
    "Subscription": obj(
        {
            "tier": obj({"id": STRING, "name": STRING}),
            "status": STRING,
            "allowance": nullable(INTEGER),
            "allowance_remaining": nullable(INTEGER),
            "unlimited": BOOLEAN,
            "current_period_end": nullable(TIME),
            "cancel_at_period_end": BOOLEAN,
            "pending_change": nullable(ref("PendingChange")),
            "features": {"type": "array", "items": STRING},
            "confirmed": BOOLEAN,
        },
        ["tier", "status", "allowance", "unlimited", "current_period_end", "cancel_at_period_end"],
    ),
    "PortalSession": obj({"url": STRING}),
    "PaymentMethod": obj(
        {
            "id": STRING,
            "brand": STRING,
            "last4": STRING,
            "exp_month": nullable(INTEGER),
            "exp_year": nullable(INTEGER),
            "default": BOOLEAN,
        }
    ),
    "PaymentMethods": obj({"data": {"type": "array", "items": ref("PaymentMethod")}}),
    "RefundRequest": obj(
        {
            "amount": {**INTEGER, "minimum": 1, "description": "Cents; default all refundable."},
            "reason": {"enum": ["requested_by_customer", "duplicate", "fraudulent"]},
            "note": STRING,
            "preview": {**BOOLEAN, "default": False},
        },
        ["reason"],
    ),
    "RefundPreview": obj(
        {
            "amount": ref("Money"),
            "refundable": ref("Money"),
            "credits_clawed_back": INTEGER,
            "balance_before": INTEGER,
            "balance_after": INTEGER,
            "goes_negative": BOOLEAN,
        }
    ),
    "Refund": obj(
        {
            "id": INTEGER,
            "status": STRING,
            "amount": ref("Money"),
            "reason": nullable(STRING),
            "stripe_refund_id": nullable(STRING),
            "created_at": TIME,
        }
    ),
    "RefundResult": obj(
        {
            "refund": ref("Refund"),
            "state": {"enum": ["succeeded", "pending", "duplicate"]},
            "message": STRING,
            "preview": ref("RefundPreview"),
            "payment": ref("Payment"),
        }
    ),
    "AdminPayment": {
        "allOf": [
            ref("Payment"),
            obj({"customer": obj({"id": INTEGER, "email": STRING})}),
        ]
    },
    "AdminPaymentPage": obj(
        {
            "data": {"type": "array", "items": ref("AdminPayment")},
            "page": INTEGER,
            "has_more": BOOLEAN,
        }
    ),
    "ApiKey": obj(
        {
            "id": INTEGER,
            "name": STRING,
            "prefix": STRING,
            "scopes": {"type": "array", "items": {"enum": ["read", "write", "admin"]}},
            "created_at": TIME,
            "expires_at": nullable(TIME),
            "last_used_at": nullable(TIME),
            "revoked_at": nullable(TIME),
        }
    ),
    "ApiKeyCreated": {
        "allOf": [
            ref("ApiKey"),
            obj({"key": {**STRING, "description": "The whole key; shown only this once."}}),
        ]
    },
    "ApiKeyRequest": obj(
        {
            "name": STRING,
            "expires_at": TIME,
            "scopes": {"type": "array", "items": {"enum": ["read", "write", "admin"]}},
        },
        ["name"],
    ),
    "ApiKeyList": obj({"data": {"type": "array", "items": ref("ApiKey")}}),
}

ERROR_DESCRIPTIONS = {
    "400": "The body is not JSON, a header is malformed, or a cookie request lacks its CSRF token.",
    "401": "No caller, or the API key is unknown, revoked or expired (invalid_api_key).",
    "402": "Not enough credits (insufficient_credits).",
    "403": "Not allowed: a missing scope, a model outside the plan, or not an admin.",
    "404": "Not found, or not yours.",
    "409": "Conflicts with the current state, or the Idempotency-Key is still in use.",
    "422": "Valid JSON that fails validation, or an Idempotency-Key reused with another body.",
    "429": "A rate limit: per key, the anonymous cap or fair use (see Retry-After).",
    "502": "Stripe could not do it; nothing was charged.",
    "503": "The generator failed; any credits taken were given back.",
}
IDEMPOTENCY_HEADER = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 255},
    "description": "Repeat the same key with the same body within 24 hours and get the "
    "first answer again, without a second charge. Another body: 422 idempotency_key_reused.",
}
PAGE_PARAMETERS = [
    {"name": "starting_after", "in": "query", "schema": INTEGER, "description": "An id."},
    {"name": "limit", "in": "query", "schema": {**INTEGER, "minimum": 1, "maximum": 100}},
]


def operation(
    summary: str,
    response: str,
    *,
    status: str = "200",
    errors: tuple = ("401",),
    body: str | None = None,
    tag: str = "customer",
    parameters: list | None = None,
    deprecated: bool = False,
    security: bool = True,
    post: bool = False,
) -> dict:
    responses = {
        status: {
            "description": summary,
            "content": {"application/json": {"schema": ref(response)}},
        }
    }
    for code in (*errors, "429"):
        responses[code] = {"$ref": f"#/components/responses/E{code}"}
    op = {
        "summary": summary,
        "tags": [tag],
        "operationId": "",
        "responses": responses,
    }
    parameters = list(parameters or [])
    if post:
        parameters.append(IDEMPOTENCY_HEADER)
    if parameters:
        op["parameters"] = parameters
    if body:
        content = {"application/json": {"schema": ref(body)}}
        op["requestBody"] = {"required": body != "CreditCheckRequest", "content": content}
    if deprecated:
        op["deprecated"] = True
    if not security:
        op["security"] = [{}, {"bearer": []}]
    return op


def id_parameter(name: str) -> list:
    return [{"name": name, "in": "path", "required": True, "schema": INTEGER}]


def _paths() -> dict:
    catalog = operation(
        "Packs, tiers and models with their costs",
        "Catalog",
        errors=(),
        security=False,
        tag="catalog",
    )
    packages = operation(
        "The packs (alias: part of /catalog)",
        "Catalog",
        errors=(),
        security=False,
        tag="catalog",
        deprecated=True,
    )
    tiers = operation(
        "The tiers (alias: part of /catalog)",
        "Catalog",
        errors=(),
        security=False,
        tag="catalog",
        deprecated=True,
    )
    usage = operation("This period's use, allowance and per-day counts", "Usage")
    checkout = operation(
        "Start a Stripe Checkout for a pack or a plan",
        "Checkout",
        status="201",
        errors=("400", "401", "403", "404", "409", "422", "502"),
        body="CheckoutRequest",
        tag="payments",
        post=True,
    )
    payment = operation(
        "One payment: status, amount paid, credits, what for, receipt",
        "Payment",
        errors=("401", "404"),
        parameters=id_parameter("payment_id"),
        tag="payments",
    )
    return {
        "/api/v1/catalog": {"get": catalog},
        "/api/v1/stripe/packages": {"get": packages},
        "/api/v1/subscriptions/tiers": {"get": tiers},
        "/api/v1/stripe/config": {
            "get": operation(
                "Stripe's publishable key", "StripeConfig", errors=(), security=False, tag="catalog"
            )
        },
        "/api/v1/me": {"get": operation("Who the key belongs to, balance and plan", "Me")},
        "/api/v1/credits/check": {
            "post": operation(
                "Could I generate now? Anonymous callers get the free cap's view",
                "CreditCheck",
                errors=("400", "403", "422"),
                body="CreditCheckRequest",
                security=False,
                tag="credits",
                post=True,
            )
        },
        "/api/v1/generations": {
            "post": operation(
                "Generate an image, charging the model's cost once",
                "GenerationCreated",
                status="201",
                errors=("400", "401", "402", "403", "409", "422", "503"),
                body="GenerationRequest",
                security=False,
                tag="generations",
                post=True,
            ),
            "get": operation(
                "Your generations, newest first (keyset pages)",
                "GenerationPage",
                errors=("401", "422"),
                parameters=PAGE_PARAMETERS,
                tag="generations",
            ),
        },
        "/api/v1/generations/{generation_id}": {
            "get": operation(
                "One generation with its image",
                "Generation",
                errors=("401", "404"),
                parameters=id_parameter("generation_id"),
                tag="generations",
            )
        },
        "/api/v1/usage": {"get": usage},
        "/api/v1/account/usage": {"get": {**deepcopy(usage), "deprecated": True}},
        "/api/v1/ledger": {
            "get": operation(
                "Ledger entries with balance_after, newest first (keyset pages)",
                "LedgerPage",
                errors=("401", "422"),
                parameters=PAGE_PARAMETERS,
                tag="credits",
            )
        },
        "/api/v1/checkout": {"post": checkout},
        "/api/v1/stripe/checkout": {"post": {**deepcopy(checkout), "deprecated": True}},
        "/api/v1/payments": {
            "get": operation(
                "Your payments, newest first (keyset pages)",
                "PaymentPage",
                errors=("401", "422"),
                parameters=PAGE_PARAMETERS,
                tag="payments",
            )
        },
        "/api/v1/payments/{payment_id}": {"get": payment},
        "/api/v1/orders/{payment_id}": {"get": {**deepcopy(payment), "deprecated": True}},
        "/api/v1/subscription": {
            "get": operation(
                "Your plan, allowance and pending change", "Subscription", tag="subscription"
            ),
            "delete": operation(
                "Cancel at the end of the paid period (202: Stripe accepted it)",
                "Subscription",
                status="202",
                errors=("401", "403", "409", "422", "502"),
                parameters=[
                    {"name": "at_period_end", "in": "query", "schema": {"enum": ["true"]}},
                    IDEMPOTENCY_HEADER,
                ],
                tag="subscription",
            ),
        },
        "/api/v1/subscription/resume": {
            "post": operation(
                "Undo a cancellation before the period ends",
                "Subscription",
                status="202",
                errors=("401", "403", "409", "502"),
                tag="subscription",
                post=True,
            )
        },
        "/api/v1/billing-portal": {
            "post": operation(
                "A Stripe billing portal link",
                "PortalSession",
                status="201",
                errors=("401", "403", "409", "502"),
                tag="subscription",
                post=True,
            )
        },
        "/api/v1/payment-methods": {
            "get": operation(
                "Your saved cards (brand, last4, expiry, default)",
                "PaymentMethods",
                errors=("401", "502"),
                tag="subscription",
            )
        },
        "/api/v1/api-keys": {
            "get": operation("Your API keys (never the keys themselves)", "ApiKeyList", tag="keys"),
            "post": operation(
                "Create a key (shown once); a key only creates keys with its own scopes",
                "ApiKeyCreated",
                status="201",
                errors=("400", "401", "403", "422"),
                body="ApiKeyRequest",
                tag="keys",
                post=True,
            ),
        },
        "/api/v1/api-keys/{key_id}": {
            "delete": operation(
                "Revoke a key: it answers 401 from then on",
                "ApiKey",
                errors=("401", "403", "404"),
                parameters=[*id_parameter("key_id"), IDEMPOTENCY_HEADER],
                tag="keys",
            )
        },
        "/api/v1/admin/payments": {
            "get": operation(
                "Search payments by email, id or Stripe id (admin scope)",
                "AdminPaymentPage",
                errors=("401", "403", "422"),
                parameters=[
                    {"name": "q", "in": "query", "schema": STRING},
                    {"name": "status", "in": "query", "schema": STRING},
                    {"name": "page", "in": "query", "schema": {**INTEGER, "minimum": 1}},
                ],
                tag="admin",
            )
        },
        "/api/v1/admin/payments/{payment_id}/refunds": {
            "post": operation(
                "Refund a payment (or preview it) as the admin page does (admin scope)",
                "RefundResult",
                status="201",
                errors=("400", "401", "403", "404", "409", "422", "502"),
                body="RefundRequest",
                parameters=id_parameter("payment_id"),
                tag="admin",
                post=True,
            )
        },
        "/api/v1/stripe/webhook": {
            "post": {
                "summary": "Stripe's webhook deliveries (for Stripe only: signed, not keyed)",
                "tags": ["stripe"],
                "security": [{}],
                "parameters": [
                    {"name": "Stripe-Signature", "in": "header", "required": True, "schema": STRING}
                ],
                "responses": {
                    "200": {"description": "Recorded (and applied)."},
                    "400": {"$ref": "#/components/responses/E400"},
                },
            }
        },
        "/api/v1/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["catalog"],
                "security": [{}],
                "responses": {"200": {"description": "The OpenAPI 3.1 document."}},
            }
        },
    }


def _with_operation_ids(paths: dict) -> dict:
    for path, methods in paths.items():
        for method, op in methods.items():
            words = [part.strip("{}") for part in path.removeprefix("/api/v1/").split("/")]
            name = "_".join(word.replace("-", "_").replace(".", "_") for word in words)
            op["operationId"] = f"{method}_{name}"
    return paths


def document(server_url: str) -> dict:
    """The whole document, with the server it is served from."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Pixel Forge API",
            "version": "1.0.0",
            "description": (
                "Check credit, generate images, buy credits and read usage and payments. "
                "Authenticate with `Authorization: Bearer pf_live_…` (keys are made on "
                "/account/api-keys). Money is integer minor units with its currency; "
                "unlimited allowances are null with unlimited: true; times are ISO 8601 UTC. "
                "Every error is {error, message, field?}. Every POST and DELETE takes an "
                "Idempotency-Key. Keys have a per-key rate limit (X-RateLimit-* headers)."
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}],
        "tags": [
            {"name": name}
            for name in (
                "catalog",
                "customer",
                "credits",
                "generations",
                "payments",
                "subscription",
                "keys",
                "admin",
            )
        ],
        "paths": _with_operation_ids(_paths()),
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "pf_live_… or pf_test_…",
                }
            },
            "schemas": deepcopy(SCHEMAS),
            "responses": {
                f"E{code}": {
                    "description": description,
                    "content": {"application/json": {"schema": ref("Error")}},
                }
                for code, description in ERROR_DESCRIPTIONS.items()
            },
        },
    }
