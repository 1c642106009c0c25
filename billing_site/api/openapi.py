"""The OpenAPI 3.1 document of /api/v1, written by hand (served at /api/v1/openapi.json).

tests/test_api_openapi.py validates it and fails when a route under /api/v1 is
missing from it, so it cannot drift from the URL map.
"""

from copy import deepcopy

from billing_site.api.openapi_schemas import INTEGER, SCHEMAS, STRING, ref

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
