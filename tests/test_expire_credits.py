"""`flask --app wsgi expire-credits`: the scheduled sweep of lots past their expiry."""

from datetime import timedelta

from sqlalchemy import select

from billing_site import credits
from billing_site.models import CreditLot, LedgerEntry, User, utcnow
from tests.factories import make_user


def grant_expiring(db, user, credits_, ref, expires_at):
    credits.grant(user.id, credits_, source="pack", source_ref=ref, expires_at=expires_at)
    db.session.commit()


def test_expire_credits_expires_every_due_lot_with_one_entry_each(db, runner):
    ada, bob = make_user(), make_user()
    past = utcnow() - timedelta(minutes=1)
    grant_expiring(db, ada, 20, "ada-old", past)
    grant_expiring(db, ada, 100, "ada-live", utcnow() + timedelta(days=30))
    grant_expiring(db, bob, 5, "bob-old", past)

    result = runner.invoke(args=["expire-credits"])

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Expired 2 lot(s)."
    db.session.expire_all()
    assert (db.session.get(User, ada.id).balance, db.session.get(User, bob.id).balance) == (100, 0)
    expiries = db.session.execute(
        select(LedgerEntry.user_id, LedgerEntry.delta, LedgerEntry.balance_after)
        .where(LedgerEntry.kind == "expire")
        .order_by(LedgerEntry.user_id)
    ).all()
    assert [tuple(row) for row in expiries] == [(ada.id, -20, 100), (bob.id, -5, 0)]
    remaining = db.session.scalars(
        select(CreditLot.credits_remaining).where(CreditLot.source_ref.in_(["ada-old", "bob-old"]))
    )
    assert list(remaining) == [0, 0]


def test_expire_credits_run_twice_expires_nothing_the_second_time(db, runner):
    user = make_user()
    grant_expiring(db, user, 20, "old", utcnow() - timedelta(minutes=1))

    assert runner.invoke(args=["expire-credits"]).output.strip() == "Expired 1 lot(s)."
    again = runner.invoke(args=["expire-credits"])

    assert again.exit_code == 0
    assert again.output.strip() == "Expired 0 lot(s)."
    assert (
        len(db.session.scalars(select(LedgerEntry).where(LedgerEntry.kind == "expire")).all()) == 1
    )


def test_expire_credits_leaves_live_and_never_expiring_lots_alone(db, runner):
    user = make_user()
    grant_expiring(db, user, 100, "live", utcnow() + timedelta(days=1))
    credits.grant(user.id, 7, source="admin", source_ref="gift", expires_at=None)
    db.session.commit()

    result = runner.invoke(args=["expire-credits"])

    assert result.output.strip() == "Expired 0 lot(s)."
    db.session.expire_all()
    assert db.session.get(User, user.id).balance == 107
