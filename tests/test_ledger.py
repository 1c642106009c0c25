"""The ledger (billing_site.credits), one rule at a time, on PostgreSQL.

After every operation the three views of a balance agree: the users.balance
column, the sum of the live lots, and the last ledger entry's balance_after.
"""

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from billing_site import credits
from billing_site.models import CreditLot, LedgerEntry, User, utcnow
from tests.factories import make_order, make_user


def assert_books_balance(db, user_id: int, expected: int) -> None:
    db.session.expire_all()
    now = utcnow()
    balance = db.session.get(User, user_id).balance
    live = db.session.scalar(
        select(func.coalesce(func.sum(CreditLot.credits_remaining), 0)).where(
            CreditLot.user_id == user_id,
            (CreditLot.expires_at.is_(None)) | (CreditLot.expires_at > now),
        )
    )
    last = db.session.scalars(
        select(LedgerEntry.balance_after)
        .where(LedgerEntry.user_id == user_id)
        .order_by(LedgerEntry.id.desc())
        .limit(1)
    ).first()
    assert (balance, live, last) == (expected, expected, expected)


def entries(db, user_id: int) -> list[tuple[str, int, int]]:
    db.session.expire_all()
    rows = db.session.scalars(
        select(LedgerEntry).where(LedgerEntry.user_id == user_id).order_by(LedgerEntry.id)
    )
    return [(entry.kind, entry.delta, entry.balance_after) for entry in rows]


def grant(user, credits_, *, source="pack", ref="1", days=30, **kwargs):
    expires_at = utcnow() + timedelta(days=days) if days is not None else None
    lot = credits.grant(
        user.id, credits_, source=source, source_ref=ref, expires_at=expires_at, **kwargs
    )
    credits.db.session.commit()
    return lot


def test_a_source_is_granted_once(db):
    user = make_user()

    first = grant(user, 100, ref="order-1")
    second = grant(user, 100, ref="order-1")

    assert first is not None and second is None
    assert entries(db, user.id) == [("grant", 100, 100)]
    assert_books_balance(db, user.id, 100)


def test_grants_from_different_sources_add_up(db):
    user = make_user()
    grant(user, 100, ref="order-1")
    grant(user, 20, ref="order-2")
    grant(user, 5, source="admin", ref="audit-1", days=None)
    assert_books_balance(db, user.id, 125)


def test_spend_takes_the_soonest_expiring_lot_first(db):
    user = make_user()
    later = grant(user, 10, ref="later", days=60)
    sooner = grant(user, 10, ref="sooner", days=5)
    never = grant(user, 10, source="admin", ref="never", days=None)

    draws = credits.spend(user.id, 15, reference="generation:1")
    db.session.commit()

    assert draws == [credits.Draw(sooner.id, 10), credits.Draw(later.id, 5)]
    db.session.expire_all()
    assert [
        db.session.get(CreditLot, lot.id).credits_remaining for lot in (sooner, later, never)
    ] == [
        0,
        5,
        10,
    ]
    assert entries(db, user.id)[-2:] == [("spend", -10, 20), ("spend", -5, 15)]
    assert_books_balance(db, user.id, 15)


def test_monthly_credits_go_before_pack_credits_expiring_at_the_same_moment(db):
    user = make_user()
    expires_at = utcnow() + timedelta(days=30)
    pack = credits.grant(user.id, 10, source="pack", source_ref="o1", expires_at=expires_at)
    monthly = credits.grant(user.id, 10, source="monthly", source_ref="in_1", expires_at=expires_at)
    db.session.commit()

    draws = credits.spend(user.id, 12, reference="generation:2")
    db.session.commit()

    assert draws == [credits.Draw(monthly.id, 10), credits.Draw(pack.id, 2)]
    assert_books_balance(db, user.id, 8)


def test_spending_more_than_the_balance_raises_and_writes_nothing(db):
    user = make_user()
    lot = grant(user, 5)
    before = entries(db, user.id)

    with pytest.raises(credits.InsufficientCredits) as refused:
        credits.spend(user.id, 6, reference="generation:3")
    db.session.commit()  # even a commit after the refusal has nothing to write

    assert (refused.value.balance, refused.value.cost) == (5, 6)
    assert entries(db, user.id) == before
    assert db.session.get(CreditLot, lot.id).credits_remaining == 5
    assert_books_balance(db, user.id, 5)


def test_compensation_puts_back_exactly_what_was_spent(db):
    user = make_user()
    grant(user, 10, ref="a", days=5)
    grant(user, 10, ref="b", days=50)
    draws = credits.spend(user.id, 15, reference="generation:4")
    db.session.commit()

    credits.compensate(user.id, draws, reference="generation:4", note="generator failed")
    db.session.commit()

    remaining = db.session.scalars(select(CreditLot.credits_remaining).order_by(CreditLot.id))
    assert list(remaining) == [10, 10]
    assert_books_balance(db, user.id, 20)


def test_clawback_beyond_the_balance_leaves_debt_and_the_next_grant_pays_it_off(db):
    user = make_user()
    order = make_order(user, "pro", status="paid")
    grant(user, 100, ref=str(order.id), order_id=order.id)
    credits.spend(user.id, 90, reference="generation:5")
    db.session.commit()

    credits.claw_back(user.id, 100, reference=f"refund:{order.id}", order_id=order.id)
    db.session.commit()

    assert entries(db, user.id)[-1] == ("clawback", -100, -90)
    assert_books_balance(db, user.id, -90)
    with pytest.raises(credits.InsufficientCredits):
        credits.spend(user.id, 1, reference="generation:6")
    db.session.rollback()

    topped_up = grant(user, 100, ref="top-up")

    db.session.expire_all()
    assert db.session.get(CreditLot, topped_up.id).credits_remaining == 10
    debt = credits.find_lot("debt", str(user.id))
    assert debt.credits_remaining == 0
    assert entries(db, user.id)[-1] == ("grant", 100, 10)
    assert_books_balance(db, user.id, 10)


def test_clawback_takes_the_refunded_orders_own_lot_first(db):
    user = make_user()
    grant(user, 50, ref="other", days=1)
    refunded = grant(user, 100, ref="refunded", days=90, order_id=make_order(user).id)

    credits.claw_back(user.id, 40, reference="refund:1", order_id=refunded.order_id)
    db.session.commit()

    db.session.expire_all()
    assert db.session.get(CreditLot, refunded.id).credits_remaining == 60
    assert_books_balance(db, user.id, 110)


def test_expiry_writes_an_entry_and_the_balance_drops(db):
    user = make_user()
    lot = grant(user, 30, ref="short", days=1)
    grant(user, 5, source="admin", ref="forever", days=None)

    expired = credits.expire_due_lots(now=utcnow() + timedelta(days=2))

    assert expired == 1
    db.session.expire_all()
    assert db.session.get(CreditLot, lot.id).credits_remaining == 0
    assert entries(db, user.id)[-1] == ("expire", -30, 5)
    assert db.session.get(User, user.id).next_expiry_at is None
    assert_books_balance(db, user.id, 5)


def test_reading_the_balance_expires_dead_credits_first(db):
    user = make_user()
    credits.grant(
        user.id, 7, source="pack", source_ref="dead", expires_at=utcnow() - timedelta(seconds=1)
    )
    grant(user, 3, ref="alive")

    assert credits.current_balance(user.id) == 3
    assert ("expire", -7, 3) in entries(db, user.id)
    assert_books_balance(db, user.id, 3)


def test_a_new_periods_allowance_replaces_the_last_one(db):
    user = make_user()
    now = utcnow()
    credits.replace_allowance(
        user.id, 200, source="monthly", source_ref="in_1", expires_at=now + timedelta(days=30)
    )
    db.session.commit()
    credits.spend(user.id, 50, reference="generation:7")
    grant(user, 20, ref="pack-kept", days=180)

    second = credits.replace_allowance(
        user.id, 200, source="monthly", source_ref="in_2", expires_at=now + timedelta(days=60)
    )
    again = credits.replace_allowance(
        user.id, 200, source="monthly", source_ref="in_2", expires_at=now + timedelta(days=60)
    )
    db.session.commit()

    assert second is not None and again is None
    assert entries(db, user.id)[-2:] == [("expire", -150, 20), ("grant", 200, 220)]
    assert_books_balance(db, user.id, 220)


def test_an_allowance_for_a_period_already_over_grants_nothing(db):
    user = make_user()
    late = credits.replace_allowance(
        user.id, 200, source="monthly", source_ref="in_old", expires_at=utcnow() - timedelta(days=1)
    )
    db.session.commit()
    assert late is None
    assert entries(db, user.id) == []


@pytest.mark.parametrize("amount", [0, -5])
def test_grants_and_spends_must_be_positive(db, amount):
    user = make_user()
    with pytest.raises(ValueError):
        credits.grant(user.id, amount, source="pack", source_ref="x", expires_at=None)
    with pytest.raises(ValueError):
        credits.spend(user.id, amount, reference="generation:8")
