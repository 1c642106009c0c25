"""An admin adjusts a customer's credits: plus or minus, a reason required, audited, through
the ledger, once per form."""

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from billing_site.models import AuditLog, CreditLot
from tests.admin_actions import adjustment_form, admin_client, inside
from tests.factories import make_paid_order, make_user


@pytest.fixture
def customer_id(app):
    with inside(app):
        customer = make_user("carol@example.com")
        make_paid_order(customer, "starter")  # 20 credits
        return customer.id


def adjust(client, user_id: int, form: dict | None = None, **fields):
    form = form or adjustment_form(client.get(f"/admin/users/{user_id}").get_data(as_text=True))
    return client.post(f"/admin/users/{user_id}/credits", data={**form, **fields})


def balance_and_ledger(app, user_id: int):
    from billing_site.models import LedgerEntry, User

    with inside(app) as session:
        entries = session.scalars(
            select(LedgerEntry).where(LedgerEntry.user_id == user_id).order_by(LedgerEntry.id)
        ).all()
        return session.get(User, user_id).balance, [(e.kind, e.delta, e.note) for e in entries]


def test_an_admin_gives_credits_with_an_expiry_and_it_is_audited(app, customer_id):
    client, admin_id = admin_client(app)
    expiry = date.today() + timedelta(days=30)
    response = adjust(
        client, customer_id, delta="50", reason="apology for the outage", expires_on=str(expiry)
    )
    assert response.status_code == 303
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Adjusted carol@example.com by +50 credits." in page
    assert '<span id="customer-balance">70</span>' in page
    balance, ledger = balance_and_ledger(app, customer_id)
    assert balance == 70
    assert ledger[-1] == ("adjust", 50, "apology for the outage")
    with inside(app) as session:
        entry = session.scalar(select(AuditLog))
        assert (entry.admin_id, entry.action, entry.target_id) == (
            admin_id,
            "credits.adjust",
            str(customer_id),
        )
        assert entry.details["delta"] == 50
        lot = session.scalar(select(CreditLot).where(CreditLot.source == "admin"))
        assert lot.source_ref == f"audit:{entry.id}"
        assert lot.expires_at.date() == expiry


def test_an_admin_takes_credits_even_below_zero(app, customer_id):
    client, _ = admin_client(app)
    assert adjust(client, customer_id, delta="-30", reason="abuse").status_code == 303
    balance, ledger = balance_and_ledger(app, customer_id)
    assert balance == -10
    assert ledger[-1] == ("adjust", -30, "abuse")


def test_submitting_one_adjustment_form_twice_adjusts_once(app, customer_id):
    client, _ = admin_client(app)
    form = adjustment_form(client.get(f"/admin/users/{customer_id}").get_data(as_text=True))
    adjust(client, customer_id, form, delta="5", reason="bonus")
    second = adjust(client, customer_id, form, delta="5", reason="bonus")
    assert "This adjustment was already made." in client.get(second.headers["Location"]).get_data(
        as_text=True
    )
    assert balance_and_ledger(app, customer_id)[0] == 25


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"delta": "10", "reason": ""}, "Say why (it goes in the audit log)."),
        ({"delta": "0", "reason": "nothing"}, "Enter a number of credits other than zero."),
        ({"delta": "ten", "reason": "typo"}, "Enter a whole number of credits"),
        ({"delta": "-5", "reason": "x", "expires_on": "2099-01-01"}, "Only credits given"),
        ({"delta": "5", "reason": "x", "expires_on": "2000-01-01"}, "Choose a date after today."),
    ],
)
def test_an_invalid_adjustment_is_refused_beside_its_field(app, customer_id, fields, message):
    client, _ = admin_client(app)
    response = adjust(client, customer_id, **fields)
    assert response.status_code == 422
    assert message in response.get_data(as_text=True)
    assert balance_and_ledger(app, customer_id)[0] == 20
