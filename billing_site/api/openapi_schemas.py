"""The schemas of the OpenAPI document (billing_site/api/openapi.py): one per shape the API answers."""

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
            "description": {**STRING, "examples": ["Pro Pack", "Basic — renewal, 1–31 Jan"]},
            "amount": {**ref("Money"), "description": "What Stripe actually took."},
            "amount_subtotal": nullable(ref("Money")),
            "amount_discount": ref("Money"),
            "amount_tax": ref("Money"),
            "promotion_code": nullable(STRING),
            "amount_refunded": ref("Money"),
            "period_start": nullable(TIME),
            "period_end": nullable(TIME),
            "credits": nullable(INTEGER),
            "unlimited": BOOLEAN,
            "created_at": TIME,
            "paid_at": nullable(TIME),
            "receipt_url": nullable(STRING),
            "stripe_receipt_url": nullable(STRING),
            "hosted_invoice_url": nullable(STRING),
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
