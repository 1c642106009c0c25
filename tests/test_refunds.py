"""An admin refunds an order from its page (TESTING.md rows 23, 26-29), against Stripe's API
mocked with `responses` and the real StripeGateway."""

import pytest
import requests
import responses
from sqlalchemy import select

from billing_site import credits
from billing_site.admin.forms import parse_money
from billing_site.models import AuditLog, Refund
from billing_site.refunds import credits_to_claw_back
from tests.admin_actions import (
    STRIPE_REFUNDS_URL,
    STRIPE_TEST_KEY,
    admin_client,
    confirm_refund,
    inside,
    log_in_as,
    order_state,
    paid_order,
    preview_refund,
    refund_callback,
    refund_form,
)
from tests.conftest import post_json
from tests.stripe_events import make_event, post_event, stripe_object


@pytest.fixture
def stripe_app(make_app):
    """The app with a Stripe test key: the real StripeGateway, over `responses`."""
    return make_app(STRIPE_SECRET_KEY=STRIPE_TEST_KEY)


# --- the arithmetic, without an app ----------------------------------------------------


@pytest.mark.parametrize(
    ("credits_", "amount", "refunded_after", "already", "expected"),
    [
        (100, 2000, 2000, 0, 100),  # full refund
        (100, 2000, 600, 0, 30),  # 30%
        (100, 2000, 1000, 30, 20),  # then up to 50%: 20 more
        (100, 2000, 1000, 50, 0),  # the same total again: nothing
        (20, 500, 333, 0, 13),  # 13.32 rounds down
        (100, 2000, 5000, 0, 100),  # never more than the order's credits
        (0, 2000, 2000, 0, 0),  # nothing to take back
    ],
)
def test_credits_to_claw_back_is_the_refunded_share_rounded_down(
    credits_, amount, refunded_after, already, expected
):
    assert credits_to_claw_back(credits_, amount, refunded_after, already) == expected


@pytest.mark.parametrize(
    ("typed", "cents"),
    [("5.00", 500), ("5", 500), ("$5.00", 500), ("5.5", 550), (" $1,250.05 ", 125005), ("0.01", 1)],
)
def test_money_is_read_as_a_person_types_it(typed, cents):
    assert parse_money(typed) == cents


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("-5", "positive"),
        ("0", "more than zero"),
        ("0.00", "more than zero"),
        ("5.001", "two decimal places"),
        ("five", "like 5.00"),
        ("5,00", "like 5.00"),
    ],
)
def test_money_that_is_not_an_amount_is_refused_with_a_reason(typed, message):
    with pytest.raises(ValueError, match=message):
        parse_money(typed)


# --- row 23: a full refund ---------------------------------------------------------------


def test_full_refund_calls_stripe_once_with_a_deterministic_key_and_takes_all_credits(
    stripe_app,
):
    order_id, _ = paid_order(stripe_app, "pro")
    client, admin_id = admin_client(stripe_app)
    with responses.RequestsMock() as stripe:
        stripe.add_callback(responses.POST, STRIPE_REFUNDS_URL, callback=refund_callback())
        response = confirm_refund(client, order_id, amount="", note="customer asked")
        assert len(stripe.calls) == 1
        call = stripe.calls[0].request
        assert call.headers["Idempotency-Key"] == f"test-refund-{order_id}-1"
        assert f"payment_intent=pi_test_order_{order_id}" in call.body
        assert "amount=2000" in call.body
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Refunded $20.00; 100 credits clawed back." in page
    state = order_state(stripe_app, order_id)
    assert state["status"] == "refunded"
    assert state["amount_refunded_cents"] == 2000
    assert state["balance"] == 0
    assert state["ledger"] == [("grant", 100), ("clawback", -100)]
    assert state["refunds"] == [(1, "succeeded", 2000)]
    with inside(stripe_app) as session:
        actions = session.scalars(select(AuditLog.action).order_by(AuditLog.id)).all()
        assert actions == ["refund.requested", "refund.succeeded"]
        assert session.scalar(select(Refund.stripe_refund_id)) == "re_test_1"


def test_a_partial_refund_and_then_the_rest_claw_back_in_proportion(stripe_app):
    order_id, _ = paid_order(stripe_app, "pro")  # $20.00, 100 credits
    client, _ = admin_client(stripe_app)
    with responses.RequestsMock() as stripe:
        stripe.add_callback(responses.POST, STRIPE_REFUNDS_URL, callback=refund_callback())
        assert confirm_refund(client, order_id, amount="$5.00").status_code == 303
        assert order_state(stripe_app, order_id)["balance"] == 75
        assert order_state(stripe_app, order_id)["status"] == "partially_refunded"
        assert confirm_refund(client, order_id, amount="").status_code == 303
        keys = [call.request.headers["Idempotency-Key"] for call in stripe.calls]
    assert keys == [f"test-refund-{order_id}-1", f"test-refund-{order_id}-2"]
    state = order_state(stripe_app, order_id)
    assert state["refunds"] == [(1, "succeeded", 500), (2, "succeeded", 1500)]
    assert state["status"] == "refunded"
    assert state["ledger"] == [("grant", 100), ("clawback", -25), ("clawback", -75)]


# --- row 26: over-refund ------------------------------------------------------------------


def test_refunding_more_than_remains_is_refused_before_stripe_is_called(stripe_app):
    order_id, _ = paid_order(stripe_app, "pro")
    client, _ = admin_client(stripe_app)
    before = order_state(stripe_app, order_id)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stripe:
        stripe.add_callback(responses.POST, STRIPE_REFUNDS_URL, callback=refund_callback())
        response = confirm_refund(client, order_id, amount="20.01")
        assert len(stripe.calls) == 0
    assert response.status_code == 400
    assert "At most $20.00 can still be refunded" in response.get_data(as_text=True)
    assert order_state(stripe_app, order_id) == before


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("-5", "Enter a positive amount"),
        ("0", "The amount must be more than zero."),
        ("5.001", "Use at most two decimal places"),
        ("lots", "Enter an amount in dollars, like 5.00."),
    ],
)
def test_an_amount_that_is_not_money_is_shown_beside_the_field(stripe_app, typed, message):
    order_id, _ = paid_order(stripe_app, "pro")
    client, _ = admin_client(stripe_app)
    for response in (
        preview_refund(client, order_id, typed),
        confirm_refund(client, order_id, amount=typed),
    ):
        assert response.status_code == 422
        html = response.get_data(as_text=True)
        assert f'<p class="field-error" id="amount-error">{message}' in html
    assert order_state(stripe_app, order_id)["refunds"] == []


# --- the preview ----------------------------------------------------------------------------


def test_the_preview_shows_the_credits_to_claw_back_and_the_balance_after(stripe_app):
    order_id, _ = paid_order(stripe_app, "pro")
    client, _ = admin_client(stripe_app)
    response = preview_refund(client, order_id, "5")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # HTMX gets only the refund panel, not the page.
    assert html.lstrip().startswith('<section id="refund-panel"')
    assert "<html" not in html
    assert '<dd id="preview-credits">25</dd>' in html
    assert '<strong id="preview-balance-after">75</strong>' in html
    assert "Confirm refund of $5.00" in html
    assert "negative-balance-warning" not in html
    assert order_state(stripe_app, order_id)["refunds"] == []


# --- row 27: Stripe 500, then 200 -------------------------------------------------------


def test_stripe_500_then_200_retries_with_the_same_key_and_refunds_once(stripe_app):
    order_id, _ = paid_order(stripe_app, "pro")
    client, _ = admin_client(stripe_app)
    with responses.RequestsMock() as stripe:
        stripe.add(
            responses.POST,
            STRIPE_REFUNDS_URL,
            status=500,
            json={"error": {"type": "api_error", "message": "Something went wrong"}},
        )
        stripe.add_callback(responses.POST, STRIPE_REFUNDS_URL, callback=refund_callback())
        response = confirm_refund(client, order_id, amount="10.00")
        keys = [call.request.headers["Idempotency-Key"] for call in stripe.calls]
    assert response.status_code == 303
    assert keys == [f"test-refund-{order_id}-1", f"test-refund-{order_id}-1"]
    state = order_state(stripe_app, order_id)
    assert state["refunds"] == [(1, "succeeded", 1000)]
    assert state["ledger"] == [("grant", 100), ("clawback", -50)]


def test_a_refund_stripe_refuses_is_failed_and_takes_no_credits(stripe_app):
    order_id, _ = paid_order(stripe_app, "pro")
    client, _ = admin_client(stripe_app)
    with responses.RequestsMock() as stripe:
        stripe.add(
            responses.POST,
            STRIPE_REFUNDS_URL,
            status=400,
            json={
                "error": {
                    "type": "invalid_request_error",
                    "code": "charge_already_refunded",
                    "message": "Charge has already been refunded.",
                }
            },
        )
        response = confirm_refund(client, order_id, amount="")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Stripe refused the refund" in page
    state = order_state(stripe_app, order_id)
    assert state["refunds"] == [(1, "failed", 2000)]
    assert state["balance"] == 100
    assert state["status"] == "paid"


# --- row 28: Stripe times out -----------------------------------------------------------


def test_a_stripe_timeout_leaves_the_refund_pending_until_the_webhook_settles_it_once(
    stripe_app,
):
    order_id, _ = paid_order(stripe_app, "pro")
    client, _ = admin_client(stripe_app)
    with responses.RequestsMock() as stripe:
        stripe.add(
            responses.POST, STRIPE_REFUNDS_URL, body=requests.exceptions.ConnectTimeout("slow")
        )
        response = confirm_refund(client, order_id, amount="")
        attempts = [call.request.headers["Idempotency-Key"] for call in stripe.calls]
    assert set(attempts) == {f"test-refund-{order_id}-1"}
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "pending — it will be settled by reconcile or the webhook" in page
    state = order_state(stripe_app, order_id)
    assert state["refunds"] == [(1, "pending", 2000)]
    assert state["balance"] == 100

    # While it is pending its money is reserved: a second form cannot refund it again.
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stripe:
        assert confirm_refund(client, order_id, amount="1.00").status_code == 400
        assert len(stripe.calls) == 0

    # Stripe did make it; the webhook (or reconcile, which replays the same event) says so.
    with inside(stripe_app):
        charge = stripe_object(
            "charge",
            id=f"ch_test_order_{order_id}",
            payment_intent=f"pi_test_order_{order_id}",
            amount=2000,
            amount_refunded=2000,
            refunded=True,
        )
        refund = stripe_object(
            "refund",
            id="re_made_during_timeout",
            amount=2000,
            charge=charge["id"],
            payment_intent=charge["payment_intent"],
            metadata={"order_id": str(order_id), "refund_id": "1"},
            status="succeeded",
        )
    webhook = stripe_app.test_client()
    assert post_event(webhook, make_event("charge.refunded", charge)).status_code == 200
    assert post_event(webhook, make_event("refund.updated", refund)).status_code == 200
    assert post_event(webhook, make_event("charge.refunded", charge)).status_code == 200
    state = order_state(stripe_app, order_id)
    assert state["refunds"] == [(1, "succeeded", 2000)]
    assert state["ledger"] == [("grant", 100), ("clawback", -100)]
    assert state["status"] == "refunded"


def test_retrying_a_pending_refund_reuses_its_key(stripe_app):
    order_id, _ = paid_order(stripe_app, "pro")
    client, _ = admin_client(stripe_app)
    with responses.RequestsMock() as stripe:
        stripe.add(
            responses.POST, STRIPE_REFUNDS_URL, body=requests.exceptions.ConnectionError("down")
        )
        confirm_refund(client, order_id, amount="4.00")
    with inside(stripe_app) as session:
        refund_id = session.scalar(select(Refund.id))
    html = client.get(f"/admin/orders/{order_id}").get_data(as_text=True)
    assert "Retry (same key)" in html
    with responses.RequestsMock() as stripe:
        stripe.add_callback(responses.POST, STRIPE_REFUNDS_URL, callback=refund_callback())
        response = client.post(
            f"/admin/refunds/{refund_id}/retry",
            data={"csrf_token": refund_form(client, order_id)["csrf_token"]},
        )
        assert [c.request.headers["Idempotency-Key"] for c in stripe.calls] == [
            f"test-refund-{order_id}-1"
        ]
    assert response.status_code == 303
    state = order_state(stripe_app, order_id)
    assert state["refunds"] == [(1, "succeeded", 400)]
    assert state["balance"] == 80


# --- row 29: credits already spent -------------------------------------------------------


def test_refunding_spent_credits_warns_first_and_then_blocks_generation(stripe_app):
    order_id, customer_id = paid_order(stripe_app, "pro")
    with inside(stripe_app) as session:
        credits.spend(customer_id, 90, reference="test:spent")
        session.commit()
    client, _ = admin_client(stripe_app)

    preview = preview_refund(client, order_id, "")
    html = preview.get_data(as_text=True)
    assert '<dd id="preview-credits">100</dd>' in html
    assert '<strong id="preview-balance-after">-90</strong>' in html
    assert "A negative balance blocks generation until they top up." in html

    with responses.RequestsMock() as stripe:
        stripe.add_callback(responses.POST, STRIPE_REFUNDS_URL, callback=refund_callback())
        confirm_refund(client, order_id, amount="")
    assert order_state(stripe_app, order_id)["balance"] == -90

    customer = stripe_app.test_client()
    log_in_as(customer, customer_id)
    response = post_json(
        customer, "/api/v1/generations", {"prompt": "a lighthouse", "model": "standard"}
    )
    assert response.status_code == 402
    assert order_state(stripe_app, order_id)["balance"] == -90


def test_an_order_that_is_not_paid_cannot_be_refunded(stripe_app):
    with inside(stripe_app):
        from tests.factories import make_order, make_user

        order_id = make_order(make_user(), "pro").id
    client, _ = admin_client(stripe_app)
    html = client.get(f"/admin/orders/{order_id}").get_data(as_text=True)
    assert "there is nothing to refund" in html
    form = {
        "csrf_token": refund_form_csrf(client),
        "refund_token": "0b8a2f1e-8a55-4a9c-9d53-1b1d1f3b0c11",
        "amount": "",
        "reason": "duplicate",
    }
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stripe:
        response = client.post(f"/admin/orders/{order_id}/refund", data=form)
        assert len(stripe.calls) == 0
    assert response.status_code == 400
    assert "Only a paid order can be refunded" in response.get_data(as_text=True)


def refund_form_csrf(client) -> str:
    from tests.conftest import csrf_token_from

    return csrf_token_from(client.get("/admin/").get_data(as_text=True))
