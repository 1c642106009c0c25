"""Generating: the page and its HTMX card, the JSON API, charging, refusals, compensation.

Arranging and asserting happen in short app contexts, never around a request:
a request inside a pushed app context would share its `g` (and so its
logged-in user) and its database session with the test.
"""

import re

import pytest
from sqlalchemy import select

from billing_site import credits
from billing_site.extensions import db
from billing_site.generator import GeneratorError
from billing_site.models import Generation, LedgerEntry
from tests.conftest import csrf_token_from, post_json
from tests.factories import logged_in, make_customer


def token(client):
    return csrf_token_from(client.get("/generate").get_data(as_text=True))


def post_generate(client, prompt="a lighthouse at dusk", model="standard", htmx=True, **extra):
    headers = {"HX-Request": "true"} if htmx else {}
    data = {"prompt": prompt, "model": model, "csrf_token": token(client), **extra}
    return client.post("/generate", data=data, headers=headers)


def balance_of(app, user_id):
    with app.app_context():
        return credits.current_balance(user_id)


def ledger_of(app, user_id):
    with app.app_context():
        rows = db.session.execute(
            select(LedgerEntry).where(LedgerEntry.user_id == user_id).order_by(LedgerEntry.id)
        ).scalars()
        return [(row.kind, row.delta, row.reference) for row in rows]


def generations(app):
    with app.app_context():
        return db.session.execute(select(Generation).order_by(Generation.id)).scalars().all()


def badge_number(html):
    match = re.search(
        r'id="balance-badge"[^>]*hx-swap-oob="true"[^>]*>\s*<span class="badge-number">(-?\d+)',
        html,
    )
    return int(match.group(1)) if match else None


class FailingGenerator:
    def generate(self, prompt, model):
        raise GeneratorError("the GPU caught fire")


# --- the page --------------------------------------------------------------------------


def test_page_lists_each_model_with_its_cost_and_what_a_visitor_may_use(client):
    html = client.get("/generate").get_data(as_text=True)
    assert 'name="prompt"' in html
    assert "1 credit<" in html and "2 credits" in html and "4 credits" in html
    assert re.search(r'value="standard"\s+checked>', html)
    assert re.search(r'value="hd"\s+disabled>', html)
    assert "3</strong> of 3 free generations left today" in html


def test_free_customer_gets_ten_credits_the_first_time_the_month_is_touched(app, client):
    user_id = make_customer(app)
    logged_in(client, app, user_id)
    html = client.get("/generate").get_data(as_text=True)
    client.get("/generate")
    assert balance_of(app, user_id) == 10
    assert [kind for kind, _, _ in ledger_of(app, user_id)] == ["grant"]
    assert "upgrade to use" in html  # hd and pro are not in the free tier


# --- HTMX fragment or whole page -----------------------------------------------------------


def test_htmx_generation_returns_the_card_and_the_badge_out_of_band(app, client):
    user_id = make_customer(app, balance=5, tier="basic")
    logged_in(client, app, user_id)
    response = post_generate(client)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "HX-Request" in response.headers["Vary"]
    assert "<html" not in html
    assert html.lstrip().startswith('<section id="generator"')
    assert 'src="data:image/svg+xml;base64,' in html
    assert "1 credit spent, 4 left" in html
    assert badge_number(html) == 4
    assert balance_of(app, user_id) == 4


def test_plain_form_post_answers_with_the_whole_page(app, client):
    user_id = make_customer(app, balance=5, tier="basic")
    logged_in(client, app, user_id)
    response = post_generate(client, htmx=False)
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "<!doctype html>" in html
    assert 'id="generator"' in html and "1 credit spent, 4 left" in html
    assert 'hx-swap-oob="true"' not in html


def test_charges_the_models_cost_and_records_the_generation(app, client):
    user_id = make_customer(app, balance=5, tier="basic")
    logged_in(client, app, user_id)
    assert post_generate(client, model="hd").status_code == 200
    assert balance_of(app, user_id) == 3
    [generation] = generations(app)
    assert (generation.user_id, generation.model, generation.credits_charged) == (user_id, "hd", 2)
    assert generation.status == "succeeded" and generation.result.startswith("<svg")
    assert ("spend", -2, f"generation:{generation.id}") in ledger_of(app, user_id)


def test_anonymous_generation_records_a_client_key_not_an_address(app, client):
    response = post_generate(client)
    assert response.status_code == 200
    [generation] = generations(app)
    assert generation.user_id is None
    assert generation.client_key.startswith("client:")
    assert "127.0.0.1" not in generation.client_key
    assert generation.credits_charged == 0


# --- bad input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "model", "field", "message"),
    [
        ("", "standard", "prompt", "Describe the image you want."),
        ("x" * 501, "standard", "prompt", "Keep the prompt to 500 characters (it has 501)."),
        ("a cat", "ultra", "model", "Choose one of the models: standard, hd, pro."),
    ],
    ids=["missing-prompt", "over-long-prompt", "unknown-model"],
)
def test_invalid_input_is_422_with_the_message_beside_the_field(
    app, client, prompt, model, field, message
):
    response = post_generate(client, prompt=prompt, model=model)
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert f'<p class="field-error" id="{field}-error">{message}</p>' in html
    api = post_json(client, "/api/v1/generations", {"prompt": prompt, "model": model})
    assert api.status_code == 422
    assert api.json == {"error": "validation_error", "message": message, "field": field}
    assert generations(app) == []


def test_a_500_character_prompt_is_accepted(client):
    assert post_generate(client, prompt="y" * 500).status_code == 200


def test_api_rejects_a_body_that_is_not_json(client):
    token = csrf_token_from(client.get("/generate").get_data(as_text=True))
    response = client.post(
        "/api/v1/generations",
        data="prompt=a+cat&model=standard",
        content_type="text/plain",
        headers={"X-CSRFToken": token},
    )
    assert response.status_code == 400
    assert response.json["error"] == "invalid_json"


def test_html_form_without_csrf_token_is_refused(client):
    response = client.post("/generate", data={"prompt": "a cat", "model": "standard"})
    assert response.status_code == 400


# --- the API -------------------------------------------------------------------------------


def test_api_generation_answers_201_with_the_image_and_balance(app, client):
    user_id = make_customer(app, balance=5, tier="basic")
    logged_in(client, app, user_id)
    response = post_json(client, "/api/v1/generations", {"prompt": "a cat", "model": "hd"})
    assert response.status_code == 201
    body = response.json
    assert (body["model"], body["credits_charged"], body["balance_after"]) == ("hd", 2, 3)
    assert (body["status"], body["charge"], body["prompt"]) == (
        "succeeded",
        {"credits": 2},
        "a cat",
    )
    assert body["image"].startswith("data:image/svg+xml;base64,")


# --- refusals ------------------------------------------------------------------------------


def test_out_of_credits_is_402_with_a_link_to_pricing(app, client):
    user_id = make_customer(app, balance=1, tier="basic")
    logged_in(client, app, user_id)
    response = post_generate(client, model="hd")
    html = response.get_data(as_text=True)
    assert response.status_code == 402
    assert "costs 2 credits and you have 1" in html
    assert 'href="/pricing"' in html and "See pricing" in html
    api = post_json(client, "/api/v1/generations", {"prompt": "a cat", "model": "hd"})
    assert api.status_code == 402
    assert api.json["error"] == "insufficient_credits"
    assert api.json["pricing_url"].endswith("/pricing")
    assert balance_of(app, user_id) == 1
    assert generations(app) == []


def test_model_outside_the_tier_is_403_with_an_upgrade_link(app, client):
    user_id = make_customer(app)  # free tier: standard only
    logged_in(client, app, user_id)
    response = post_generate(client, model="pro")
    html = response.get_data(as_text=True)
    assert response.status_code == 403
    assert "not in the Free plan" in html and "Upgrade your plan" in html
    api = post_json(client, "/api/v1/generations", {"prompt": "a cat", "model": "pro"})
    assert (api.status_code, api.json["error"]) == (403, "model_not_in_tier")
    assert balance_of(app, user_id) == 10  # the month's free credits, untouched


def test_visitor_asking_for_a_paid_model_is_sent_to_sign_up(client):
    response = post_generate(client, model="hd")
    assert response.status_code == 403
    assert 'href="/auth/signup"' in response.get_data(as_text=True)


def test_negative_balance_after_a_clawback_blocks_generation(app, client):
    user_id = make_customer(app, balance=3, tier="basic")
    with app.app_context():
        credits.claw_back(user_id, 5, reference="refund:test")
        db.session.commit()
    logged_in(client, app, user_id)
    response = post_generate(client)
    assert response.status_code == 402
    assert "balance is -2 credits" in response.get_data(as_text=True)
    assert balance_of(app, user_id) == -2


# --- unlimited tier ------------------------------------------------------------------------


def test_premium_generates_without_a_debit(app, client):
    user_id = make_customer(app, tier="premium")
    logged_in(client, app, user_id)
    response = post_json(client, "/api/v1/generations", {"prompt": "a cat", "model": "pro"})
    assert response.status_code == 201
    assert (response.json["credits_charged"], response.json["balance_after"]) == (0, 0)
    assert ledger_of(app, user_id) == []


def test_premium_is_held_to_the_hourly_fair_use_limit(make_app):
    app = make_app(PREMIUM_HOURLY_LIMIT=2)
    client = app.test_client()
    user_id = make_customer(app, tier="premium")
    logged_in(client, app, user_id)
    for _ in range(2):
        assert post_generate(client).status_code == 200
    response = post_generate(client)
    assert response.status_code == 429
    assert "fair-use limit" in response.get_data(as_text=True)
    assert response.headers["X-RateLimit-Limit"] == "2"
    api = post_json(client, "/api/v1/generations", {"prompt": "a cat", "model": "standard"})
    assert (api.status_code, api.json["error"]) == (429, "rate_limit_exceeded")


def test_negative_balance_blocks_even_an_unlimited_tier(app, client):
    user_id = make_customer(app, balance=1, tier="premium")
    with app.app_context():
        credits.claw_back(user_id, 4, reference="dispute:test")
        db.session.commit()
    logged_in(client, app, user_id)
    assert post_generate(client).status_code == 402


# --- the generator fails -------------------------------------------------------------------


def test_generator_failure_gives_the_credits_back(app, client):
    user_id = make_customer(app, balance=5, tier="basic")
    app.extensions["generator"] = FailingGenerator()
    logged_in(client, app, user_id)
    response = post_generate(client, model="hd")
    html = response.get_data(as_text=True)
    assert response.status_code == 503
    assert "Your credits were returned" in html
    assert "GPU" not in html  # the backend's own words stay in the log
    assert balance_of(app, user_id) == 5
    [generation] = generations(app)
    assert generation.status == "failed"
    entries = [entry for entry in ledger_of(app, user_id) if entry[0] != "grant"]
    reference = f"generation:{generation.id}"
    assert entries == [("spend", -2, reference), ("compensate", 2, reference)]
    assert sum(delta for _, delta, _ in entries) == 0


def test_generator_failure_through_the_api_is_a_plain_503(app, client):
    user_id = make_customer(app, balance=5, tier="basic")
    app.extensions["generator"] = FailingGenerator()
    logged_in(client, app, user_id)
    response = post_json(client, "/api/v1/generations", {"prompt": "a cat", "model": "standard"})
    assert response.status_code == 503
    assert response.json["error"] == "generation_failed"
    assert balance_of(app, user_id) == 5
