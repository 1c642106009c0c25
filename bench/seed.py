"""Rows the benchmarks stand on, and the checks that the load left the books straight.

Everything runs inside the site's own app (create_app) against the benchmark's
PostgreSQL. Bulk rows go in with set-based SQL so seeding takes seconds; grants
that start a balance go through billing_site.credits, the ledger's only writer.
"""

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, text
from werkzeug.security import generate_password_hash

from billing_site import credits
from billing_site.extensions import db
from billing_site.models import CreditLot, LedgerEntry, Order, User
from billing_site.stripe_gateway import STRIPE_API_VERSION, sign_payload

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "stripe"
BENCH_PASSWORD = "bench horse battery staple"
# A cheap hash: logging in many customers is setup, not what is measured.
FAST_HASH = generate_password_hash(BENCH_PASSWORD, method="pbkdf2:sha256:1000")

INGEST_PACK = {"item_id": "pro", "credits": 100, "amount_cents": 2000}


@dataclass(frozen=True)
class Customer:
    id: int
    email: str
    credits: int


def create_customer(email: str, credits_to_grant: int, *, note: str) -> Customer:
    """A customer who can log in with BENCH_PASSWORD, holding one admin lot."""
    user = User(email=email, password_hash=FAST_HASH)
    db.session.add(user)
    db.session.flush()
    if credits_to_grant:
        credits.grant(
            user.id,
            credits_to_grant,
            source="admin",
            source_ref=f"bench:{email}",
            expires_at=None,
            kind="adjust",
            note=note,
        )
    db.session.commit()
    return Customer(user.id, email, credits_to_grant)


# One generation every 315 s: 100,000 entries span a year, as a heavy customer's would.
HISTORY_SPACING_SECONDS = 315


def add_history(customer: Customer, entries: int, *, with_generations: bool = True) -> None:
    """Give `customer` a history of `entries` ledger entries (their grant plus spends).

    The customer already holds one grant entry; `entries - 1` one-credit spends
    follow, each with its generation row, spaced HISTORY_SPACING_SECONDS apart up
    to now, and the lot and the balance column are brought down to match, so the
    ledger's invariant holds as if they had happened.
    """
    spends = entries - 1
    if spends <= 0:
        return
    lot = db.session.execute(
        select(CreditLot).where(CreditLot.user_id == customer.id, CreditLot.source == "admin")
    ).scalar_one()
    if spends >= lot.credits_remaining:
        raise ValueError("grant more credits than the history spends")
    params = {
        "user_id": customer.id,
        "spends": spends,
        "lot_id": lot.id,
        "spacing": HISTORY_SPACING_SECONDS,
    }
    first_generation = None
    if with_generations:
        first_generation = db.session.execute(
            text(
                "INSERT INTO generations (user_id, prompt, model, credits_charged, status,"
                " result, created_at)"
                " SELECT :user_id, 'bench prompt ' || g, 'standard', 1, 'succeeded',"
                "  '<svg xmlns=\"http://www.w3.org/2000/svg\"/>',"
                "  now() - (:spends - g) * :spacing * interval '1 second'"
                " FROM generate_series(1, :spends) AS g RETURNING id"
            ),
            params,
        )
        first_generation = min(first_generation.scalars())
    db.session.execute(
        text(
            "INSERT INTO ledger_entries (user_id, kind, delta, balance_after, lot_id,"
            " reference, created_at)"
            " SELECT :user_id, 'spend', -1, :start - g, :lot_id,"
            "  'generation:' || (:first_generation + g - 1),"
            "  now() - (:spends - g) * :spacing * interval '1 second'"
            " FROM generate_series(1, :spends) AS g"
        ),
        {
            **params,
            "start": db.session.get(User, customer.id).balance,
            "first_generation": first_generation or 0,
        },
    )
    lot.credits_remaining -= spends
    db.session.get(User, customer.id).balance -= spends
    db.session.commit()


# --- webhook ingest -------------------------------------------------------------------


def create_pending_orders(count: int, batch: str = "ingest") -> list[dict]:
    """`count` customers, each with one pending pack order and its Checkout Session id.

    The customers are <batch><n>@bench.example, so each batch has its own."""
    customers = f"{batch}%@bench.example"
    db.session.execute(
        text(
            "INSERT INTO users (email, password_hash, is_admin, balance, created_at, updated_at)"
            " SELECT :batch || g || '@bench.example', :hash, false, 0, now(), now()"
            " FROM generate_series(1, :count) AS g"
        ),
        {"batch": batch, "hash": FAST_HASH, "count": count},
    )
    db.session.execute(
        text(
            "INSERT INTO orders (user_id, kind, item_id, amount_cents, expected_amount_cents,"
            " amount_discount_cents, amount_tax_cents, currency, credits, status,"
            " checkout_session_id, amount_refunded_cents, credits_clawed_back,"
            " created_at, updated_at)"
            " SELECT id, 'pack', :item_id, :amount_cents, :amount_cents, 0, 0, 'usd', :credits,"
            "  'pending', 'cs_bench_' || id, 0, 0, now(), now()"
            " FROM users WHERE email LIKE :customers"
        ),
        {**INGEST_PACK, "customers": customers},
    )
    db.session.commit()
    rows = db.session.execute(
        select(Order.id, Order.user_id, Order.checkout_session_id, Order.amount_cents)
        .join(User, Order.user_id == User.id)
        .where(Order.checkout_session_id.like("cs_bench_%"), User.email.like(customers))
        .order_by(Order.id)
    ).all()
    return [row._asdict() for row in rows]


def event_id(order: dict) -> str:
    """The id of `order`'s checkout.session.completed event (checkout_completed_event)."""
    return f"evt_bench_{order['id']}"


def event_ids(orders: list[dict]) -> list[str]:
    return [event_id(order) for order in orders]


def checkout_completed_event(order: dict) -> str:
    """A checkout.session.completed event for `order`, shaped like Stripe's fixtures."""
    session = _fixture("checkout_session")
    session.update(
        id=order["checkout_session_id"],
        mode="payment",
        status="complete",
        payment_status="paid",
        amount_total=order["amount_cents"],
        amount_subtotal=order["amount_cents"],
        currency="usd",
        client_reference_id=str(order["user_id"]),
        metadata={"order_id": str(order["id"]), "user_id": str(order["user_id"])},
        payment_intent=f"pi_bench_{order['id']}",
        subscription=None,
    )
    event = _fixture("event")
    event.update(
        id=event_id(order),
        type="checkout.session.completed",
        created=int(time.time()),
        data={"object": session},
        api_version=STRIPE_API_VERSION,  # the pinned one: no "other version" warning
        livemode=False,
    )
    return json.dumps(event)


def signed_headers(payload: str, secret: str) -> dict:
    """Signed now: Stripe's 300 s tolerance starts when this is called."""
    return {
        "Content-Type": "application/json",
        "Stripe-Signature": sign_payload(payload, secret),
    }


_fixtures: dict[str, dict] = {}


def _fixture(name: str) -> dict:
    if name not in _fixtures:
        _fixtures[name] = json.loads((FIXTURES / f"{name}.json").read_text())
    return copy.deepcopy(_fixtures[name])


def ingest_outcome(orders: list[dict], credits_per_order: int) -> dict:
    """What the ingest left for `orders` (one batch, each order its own customer's only
    order): every order paid once, one lot each, balances to match."""
    expected_orders = len(orders)
    batch_orders = Order.id.in_([order["id"] for order in orders])
    paid = db.session.execute(
        select(func.count()).where(batch_orders, Order.status == "paid")
    ).scalar_one()
    lots = db.session.execute(
        select(func.count(CreditLot.id))
        .join(Order, CreditLot.order_id == Order.id)
        .where(batch_orders)
    ).scalar_one()
    orders_with_two_lots = db.session.execute(
        select(func.count()).select_from(
            select(CreditLot.order_id)
            .join(Order, CreditLot.order_id == Order.id)
            .where(batch_orders)
            .group_by(CreditLot.order_id)
            .having(func.count() > 1)
            .subquery()
        )
    ).scalar_one()
    grant_entries = db.session.execute(
        select(func.count(LedgerEntry.id))
        .join(Order, LedgerEntry.order_id == Order.id)
        .where(batch_orders, LedgerEntry.kind == "grant")
    ).scalar_one()
    balances = db.session.execute(
        select(func.coalesce(func.sum(User.balance), 0)).where(
            User.id.in_([order["user_id"] for order in orders])
        )
    ).scalar_one()
    expected_balance = expected_orders * credits_per_order
    outcome = {
        "orders paid": (paid, expected_orders),
        "pack lots": (lots, expected_orders),
        "orders with more than one lot": (orders_with_two_lots, 0),
        "grant ledger entries": (grant_entries, expected_orders),
        "sum of balances": (int(balances), expected_balance),
    }
    outcome["lost"] = (expected_orders - paid, 0)
    outcome["double grants"] = (max(lots - expected_orders, 0) + orders_with_two_lots, 0)
    return outcome


# --- generations ----------------------------------------------------------------------


def spending_outcome(customers: list[Customer]) -> list[dict]:
    """Per customer: credits granted, generations that succeeded, balance, books straight.

    Credits granted counts every grant (ours, and the free tier's monthly allowance
    the site adds on first use), so "succeeded <= granted" is the no-overspend rule.
    """
    rows = []
    for customer in customers:
        user = db.session.get(User, customer.id)
        db.session.refresh(user)
        granted = db.session.execute(
            select(func.coalesce(func.sum(LedgerEntry.delta), 0)).where(
                LedgerEntry.user_id == customer.id,
                LedgerEntry.kind.in_(("grant", "adjust")),
                LedgerEntry.delta > 0,
            )
        ).scalar_one()
        succeeded = db.session.execute(
            text("SELECT count(*) FROM generations WHERE user_id = :id AND status = 'succeeded'"),
            {"id": customer.id},
        ).scalar_one()
        live = db.session.execute(
            select(func.coalesce(func.sum(CreditLot.credits_remaining), 0)).where(
                CreditLot.user_id == customer.id
            )
        ).scalar_one()
        last = db.session.execute(
            select(LedgerEntry.balance_after)
            .where(LedgerEntry.user_id == customer.id)
            .order_by(LedgerEntry.id.desc())
            .limit(1)
        ).scalar_one_or_none()
        deltas = db.session.execute(
            select(func.coalesce(func.sum(LedgerEntry.delta), 0)).where(
                LedgerEntry.user_id == customer.id
            )
        ).scalar_one()
        rows.append(
            {
                "customer": customer.email,
                "start": int(granted),
                "succeeded": succeeded,
                "balance": user.balance,
                "books_straight": user.balance == live == last == deltas,
                "overspent": user.balance < 0 or succeeded > granted,
            }
        )
    return rows
