"""Ledger properties: any sequence of purchases, renewals, generations, refunds,
disputes and expiries keeps the books straight.

Hypothesis draws a sequence of operations on billing_site.credits, applies them to
a fresh customer on PostgreSQL (committing after each, as the use cases do) and
checks after every step that:

- the balance column == the sum of the live lots == the last entry's balance_after;
- the entries' deltas add up to the balance, and replaying them from scratch in id
  order gives every entry's balance_after;
- no (source, source_ref) was granted twice, and a repeated grant writes nothing;
- each operation moved the balance by exactly what it should (a spend never
  overspends, a refused spend writes nothing, a clawback takes exactly its amount).

Time is a fake clock patched into billing_site.credits, so expiries happen when
the sequence says so, not when the wall clock does.
"""

import itertools
import time
from dataclasses import dataclass
from datetime import timedelta
from unittest import mock

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from billing_site import credits
from billing_site.models import CreditLot, LedgerEntry, StripeEvent, User, utcnow
from tests.factories import make_order, make_user
from tests.stripe_events import checkout_session, make_event, post_event, stripe_object

_examples = itertools.count(1)


class FakeClock:
    def __init__(self):
        self.current = utcnow()

    def now(self):
        return self.current

    def advance(self, hours: int) -> None:
        self.current += timedelta(hours=hours)


# --- the operations ------------------------------------------------------------------


@dataclass(frozen=True)
class BuyPack:
    """checkout.session.completed for pack number `pack` (the same number = a redelivery)."""

    pack: int
    credits: int
    lifetime_hours: int


@dataclass(frozen=True)
class Renew:
    """invoice.paid for invoice number `invoice`; a period already over grants nothing."""

    invoice: int
    credits: int
    period_end_hours: int


@dataclass(frozen=True)
class Generate:
    cost: int
    generator_fails: bool


@dataclass(frozen=True)
class ClawBack:
    """A refund or dispute: takes credits, from the pack's own lot first, even below zero."""

    credits: int
    pack: int | None


@dataclass(frozen=True)
class Restore:
    """A dispute won: its credits come back, once per dispute."""

    dispute: int
    credits: int


@dataclass(frozen=True)
class AdminGrant:
    credits: int
    lifetime_hours: int | None


@dataclass(frozen=True)
class Wait:
    """Time passes; reading the balance expires what is due."""

    hours: int


operations = st.one_of(
    st.builds(
        BuyPack,
        pack=st.integers(0, 4),
        credits=st.integers(1, 120),
        lifetime_hours=st.integers(1, 24 * 200),
    ),
    st.builds(
        Renew,
        invoice=st.integers(0, 4),
        credits=st.integers(1, 200),
        period_end_hours=st.integers(-48, 24 * 35),
    ),
    st.builds(Generate, cost=st.integers(1, 40), generator_fails=st.booleans()),
    st.builds(ClawBack, credits=st.integers(1, 150), pack=st.none() | st.integers(0, 4)),
    st.builds(Restore, dispute=st.integers(0, 2), credits=st.integers(1, 100)),
    st.builds(
        AdminGrant, credits=st.integers(1, 50), lifetime_hours=st.none() | st.integers(1, 500)
    ),
    st.builds(Wait, hours=st.integers(1, 24 * 60)),
)


# --- applying them --------------------------------------------------------------------


class Customer:
    """One fresh customer per example, with the refs that make its grants unique."""

    def __init__(self, db, clock: FakeClock):
        self.db = db
        self.clock = clock
        self.prefix = f"prop{next(_examples)}"
        self.user = make_user(f"{self.prefix}@example.com")
        self.user_id = self.user.id
        self.orders = {}  # pack number -> order id
        self.granted = set()  # (source, source_ref) this example has granted

    def order_id(self, pack: int) -> int:
        if pack not in self.orders:
            self.orders[pack] = make_order(self.user).id
        return self.orders[pack]

    def balance(self) -> int:
        return credits.current_balance(self.user_id)

    def entry_count(self) -> int:
        return self.db.session.execute(
            select(func.count()).where(LedgerEntry.user_id == self.user_id)
        ).scalar_one()

    def apply(self, operation) -> None:
        before = self.balance()  # expires what is due now, so the op itself expires nothing
        entries_before = self.entry_count()
        expected = getattr(self, "_" + type(operation).__name__)(operation, before)
        self.db.session.commit()
        after = self.balance()
        assert after == expected, f"{operation}: balance {before} -> {after}, expected {expected}"
        if self._was_noop:
            assert self.entry_count() == entries_before, f"{operation} was a no-op but wrote"

    # Each handler performs the operation and returns the balance it must leave.

    def _grant(self, source: str, source_ref: str, amount: int, before: int, **fields) -> int:
        lot = credits.grant(self.user_id, amount, source=source, source_ref=source_ref, **fields)
        repeated = (source, source_ref) in self.granted
        assert (lot is None) == repeated, f"{source}:{source_ref} granted twice or not at all"
        self.granted.add((source, source_ref))
        self._was_noop = repeated
        return before if repeated else before + amount

    def _BuyPack(self, operation: BuyPack, before: int) -> int:
        order_id = self.order_id(operation.pack)
        return self._grant(
            "pack",
            str(order_id),
            operation.credits,
            before,
            expires_at=self.clock.now() + timedelta(hours=operation.lifetime_hours),
            order_id=order_id,
            reference=f"order:{order_id}",
        )

    def _Renew(self, operation: Renew, before: int) -> int:
        source_ref = f"{self.prefix}:in_{operation.invoice}"
        period_end = self.clock.now() + timedelta(hours=operation.period_end_hours)
        replaced = sum(
            lot.credits_remaining
            for lot in credits.live_lots(self.user_id)
            if lot.source in ("monthly", "free") and lot.expires_at < period_end
        )
        lot = credits.replace_allowance(
            self.user_id,
            operation.credits,
            source="monthly",
            source_ref=source_ref,
            expires_at=period_end,
        )
        expected_noop = ("monthly", source_ref) in self.granted or period_end <= self.clock.now()
        assert (lot is None) == expected_noop, f"{operation}: granted {lot}"
        self._was_noop = expected_noop
        if expected_noop:
            return before
        self.granted.add(("monthly", source_ref))
        return before - replaced + operation.credits

    def _Generate(self, operation: Generate, before: int) -> int:
        self._was_noop = before < operation.cost
        reference = f"generation:{self.prefix}"
        try:
            draws = credits.spend(self.user_id, operation.cost, reference=reference)
        except credits.InsufficientCredits:
            self.db.session.rollback()
            assert before < operation.cost, f"refused {operation.cost} with {before} credits"
            return before
        assert before >= operation.cost, f"spent {operation.cost} with only {before} credits"
        assert sum(draw.credits for draw in draws) == operation.cost
        if not operation.generator_fails:
            return before - operation.cost
        self.db.session.commit()  # the debit is committed before the generator is called
        credits.compensate(self.user_id, draws, reference=reference)
        return before

    def _ClawBack(self, operation: ClawBack, before: int) -> int:
        order_id = self.orders.get(operation.pack) if operation.pack is not None else None
        credits.claw_back(
            self.user_id, operation.credits, reference=f"refund:{self.prefix}", order_id=order_id
        )
        self._was_noop = False
        return before - operation.credits

    def _Restore(self, operation: Restore, before: int) -> int:
        return self._grant(
            "restore",
            f"{self.prefix}:dp_{operation.dispute}",
            operation.credits,
            before,
            expires_at=None,
            kind="restore",
        )

    def _AdminGrant(self, operation: AdminGrant, before: int) -> int:
        hours = operation.lifetime_hours
        return self._grant(
            "admin",
            f"{self.prefix}:audit_{len(self.granted)}",
            operation.credits,
            before,
            expires_at=None if hours is None else self.clock.now() + timedelta(hours=hours),
            kind="adjust",
        )

    def _Wait(self, operation: Wait, before: int) -> int:
        self.clock.advance(operation.hours)
        dying = sum(
            lot.credits_remaining
            for lot in self._lots()
            if lot.credits_remaining > 0
            and lot.expires_at is not None
            and lot.expires_at <= self.clock.now()
        )
        self._was_noop = dying == 0
        return before - dying

    # --- the invariants ---------------------------------------------------------------

    def _lots(self) -> list[CreditLot]:
        return list(
            self.db.session.execute(
                select(CreditLot).where(CreditLot.user_id == self.user_id)
            ).scalars()
        )

    def check_invariants(self) -> None:
        assert_books_straight(self.db, self.user_id, self.clock.now())


def assert_books_straight(db, user_id: int, now) -> None:
    """The ledger's invariants for one customer, after expiring what is due at `now`."""
    balance = credits.current_balance(user_id)
    user = db.session.get(User, user_id)
    lots = list(db.session.execute(select(CreditLot).where(CreditLot.user_id == user_id)).scalars())
    live = [lot for lot in lots if lot.is_live(now)]
    assert balance == user.balance == sum(lot.credits_remaining for lot in live)
    dead_with_credits = [lot.id for lot in lots if lot not in live and lot.credits_remaining]
    assert not dead_with_credits, f"expired lots still hold credits: {dead_with_credits}"
    assert all(lot.credits_remaining >= 0 for lot in lots if lot.source != "debt")
    assert all(lot.credits_remaining <= lot.credits_granted for lot in lots)
    # Debt is paid off by the next credits in, so it never sits beside spendable credits.
    debt = sum(lot.credits_remaining for lot in lots if lot.source == "debt")
    assert debt == min(balance, 0), f"debt {debt} beside a balance of {balance}"

    entries = list(
        db.session.execute(
            select(LedgerEntry).where(LedgerEntry.user_id == user_id).order_by(LedgerEntry.id)
        ).scalars()
    )
    running = 0
    for entry in entries:  # the ledger replayed from scratch
        running += entry.delta
        assert entry.balance_after == running, f"entry {entry.id} ({entry.kind}) disagrees"
    assert running == balance
    assert (entries[-1].balance_after if entries else 0) == balance

    sources = [(lot.source, lot.source_ref) for lot in lots]
    assert len(sources) == len(set(sources)), "a source was granted twice"
    granted_refs = [entry.reference for entry in entries if entry.kind == "grant"]
    assert len(granted_refs) == len(set(granted_refs)), "a grant entry was written twice"


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    max_examples=60,
    deadline=None,
)
@given(steps=st.lists(operations, min_size=1, max_size=25))
def test_any_sequence_of_purchases_generations_refunds_and_expiries_keeps_the_books(db, steps):
    clock = FakeClock()
    with mock.patch.object(credits, "utcnow", clock.now):
        customer = Customer(db, clock)
        for operation in steps:
            customer.apply(operation)
            customer.check_invariants()


# --- the same books, when the operations arrive as Stripe webhooks ------------------------

PACK_CREDITS = 100  # the "pro" pack make_order sells, for 2000 cents
BASIC_MONTHLY_CREDITS = 200
# What happens to an order after it is paid, and the credits that leaves clawed back.
ORDER_FATES = {
    "kept": 0,
    "refunded 30%": 30,
    "refunded 30% then 50%": 50,
    "disputed and lost": PACK_CREDITS,
    "disputed and won": 0,
}


def webhook_deliveries(prefix: str, user, orders: list, fates: list[str]) -> list[tuple]:
    """Every event Stripe would send for these orders and one renewal, as (after, event).

    `after` names the event that must have been delivered once before this one can
    mean anything (a refund of an order the site has not seen paid is not ours).
    """
    events = []
    renewal = basic_plan_invoice(user, invoice_id=f"in_{prefix}", sub_id=f"sub_{prefix}")
    # Two different events about one invoice, as Stripe may send: still one grant.
    for number in (1, 2):
        events.append(
            (None, make_event("invoice.paid", renewal, event_id=f"evt_{prefix}_in{number}"))
        )
    for order, fate in zip(orders, fates, strict=True):
        paid = make_event(
            "checkout.session.completed",
            checkout_session(order),
            event_id=f"evt_{prefix}_cs{order.id}",
        )
        events.append((None, paid))
        after = paid["id"]
        refunded_levels = {"refunded 30%": [600], "refunded 30% then 50%": [600, 1000]}
        for cents in refunded_levels.get(fate, []):
            charge = stripe_object(
                "charge",
                id=f"ch_{prefix}_{order.id}",
                payment_intent=f"pi_for_order_{order.id}",
                amount=2000,
                amount_captured=2000,
                amount_refunded=cents,
                refunded=cents >= 2000,
            )
            event_id = f"evt_{prefix}_re{order.id}_{cents}"
            events.append((after, make_event("charge.refunded", charge, event_id=event_id)))
        if fate.startswith("disputed"):
            for status in ("needs_response", fate.rsplit(" ", 1)[1]):
                dispute = stripe_object(
                    "dispute",
                    id=f"dp_{prefix}_{order.id}",
                    amount=2000,
                    charge=f"ch_{prefix}_{order.id}",
                    payment_intent=f"pi_for_order_{order.id}",
                    status=status,
                    reason="fraudulent",
                    evidence_details={
                        "due_by": 1893456000,
                        "has_evidence": False,
                        "past_due": False,
                    },
                )
                event_type = (
                    "charge.dispute.created"
                    if status == "needs_response"
                    else "charge.dispute.closed"
                )
                event_id = f"evt_{prefix}_dp{order.id}_{status}"
                events.append((after, make_event(event_type, dispute, event_id=event_id)))
    return events


def basic_plan_invoice(user, *, invoice_id: str, sub_id: str) -> dict:
    """A paid invoice for this month of the basic plan (API 2026-07-29.dahlia shape)."""
    start = int(time.time())
    paid = stripe_object(
        "invoice",
        id=invoice_id,
        status="paid",
        customer="cus_unknown",
        billing_reason="subscription_cycle",
        amount_paid=999,
        amount_due=999,
        subtotal=999,
        total=999,
    )
    paid["parent"] = {
        "type": "subscription_details",
        "quote_details": None,
        "subscription_details": {
            "metadata": {"user_id": str(user.id), "tier": "basic"},
            "subscription": sub_id,
        },
    }
    line = paid["lines"]["data"][0]
    line["period"] = {"start": start, "end": start + 30 * 24 * 3600}
    line["parent"] = {
        "type": "subscription_item_details",
        "invoice_item_details": None,
        "subscription_item_details": {
            "invoice_item": None,
            "proration": False,
            "proration_details": {"credited_items": None},
            "subscription": sub_id,
            "subscription_item": f"si_{sub_id}",
        },
    }
    return paid


def delivery_order(events: list[tuple], repeats: list[int], rng) -> list[dict]:
    """Each event delivered 1 + repeats[i] times, shuffled, but never before what it needs."""
    pending = [
        event for (_, event), extra in zip(events, repeats, strict=False) for _ in range(1 + extra)
    ]
    pending += [event for (_, event) in events[len(repeats) :]]
    needs = {event["id"]: after for after, event in events}
    delivered, order = set(), []
    while pending:
        ready = [
            event
            for event in pending
            if needs[event["id"]] in delivered or needs[event["id"]] is None
        ]
        event = rng.choice(ready)
        pending.remove(event)
        delivered.add(event["id"])
        order.append(event)
    return order


@settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    max_examples=25,
    deadline=None,
)
@given(
    fates=st.lists(st.sampled_from(sorted(ORDER_FATES)), min_size=1, max_size=3),
    repeats=st.lists(st.integers(0, 2), max_size=12),
    rng=st.randoms(use_true_random=False),
)
def test_webhooks_in_any_order_and_repeated_grant_once_and_keep_the_books(
    db, client, fates, repeats, rng
):
    prefix = f"hook{next(_examples)}"
    user = make_user(f"{prefix}@example.com")
    orders = [make_order(user) for _ in fates]
    events = webhook_deliveries(prefix, user, orders, fates)

    for event in delivery_order(events, repeats, rng):
        response = post_event(client, event)
        assert response.status_code == 200, response.get_data(as_text=True)
        db.session.rollback()  # read what the request committed, not a stale snapshot
        assert_books_straight(db, user.id, utcnow())

    expected = BASIC_MONTHLY_CREDITS + sum(PACK_CREDITS - ORDER_FATES[fate] for fate in fates)
    assert credits.current_balance(user.id) == expected
    lots = db.session.execute(select(CreditLot).where(CreditLot.user_id == user.id)).scalars()
    assert sorted(lot.source for lot in lots if lot.source in ("pack", "monthly")) == [
        "monthly",
        *["pack"] * len(orders),
    ]
    grants = (
        db.session.execute(
            select(LedgerEntry.stripe_event_id).where(
                LedgerEntry.user_id == user.id, LedgerEntry.kind == "grant"
            )
        )
        .scalars()
        .all()
    )
    assert len(grants) == len(orders) + 1, "an event was granted twice"
    stored = db.session.execute(
        select(func.count()).where(StripeEvent.id.like(f"evt_{prefix}_%"))
    ).scalar_one()
    assert stored == len(events), "each event is recorded once however often it came"
