"""The ledger: the only code that writes credit lots and ledger entries.

Every function here works inside the caller's transaction and never commits:
the use case that calls it (fulfil an order, spend on a generation, refund)
commits once. Each function first locks the user's row (SELECT … FOR UPDATE on
PostgreSQL), so two requests touching one balance run one after the other, and
keeps three things equal at every commit:

    users.balance == sum of live lots' credits_remaining == last entry's balance_after

A clawback larger than the live credits leaves the balance negative; the shortfall
sits in the user's single "debt" lot (negative remaining, never expires) and the
next credits granted pay it off first.
"""

import logging
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import bindparam, case, event, func, insert, inspect, select, update
from sqlalchemy.orm import Session, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from billing_site import metrics
from billing_site.extensions import db, insert_once, update_now
from billing_site.models import CreditLot, LedgerEntry, User, utcnow

# Spend order for lots expiring at the same moment: monthly allowances first,
# since they are replaced at renewal, then purchased credits.
# Every money event, once, with who, how much and the Stripe id (grep "money ").
money_log = logging.getLogger("billing_site.money")
SPEND_PRIORITY = {"free": 0, "monthly": 0, "restore": 1, "pack": 1, "admin": 2}
# The lots that top a balance up (not a refund's restore, not debt): the newest
# one's size is kept on the user as last_top_up_credits.
TOP_UP_SOURCES = ("pack", "monthly", "free", "admin")


class InsufficientCredits(Exception):
    """The balance does not cover the cost; nothing was written."""

    def __init__(self, balance: int, cost: int):
        super().__init__(f"balance {balance} does not cover {cost}")
        self.balance = balance
        self.cost = cost


@dataclass(frozen=True)
class Draw:
    """Credits taken from one lot, so a failed generation can put them back."""

    lot_id: int
    credits: int


# The statements every spend runs are built once, with bound parameters:
# building a select() costs about as much as running it.
LOCK_USER_ROW = select(User).with_for_update().execution_options(populate_existing=True)
LOCK_USER = LOCK_USER_ROW.where(User.id == bindparam("user_id"))
# Key in Session.info: {user id: User} of the rows this transaction has locked. The
# User is kept, not just its id: the session's identity map holds objects weakly,
# and a user nobody references would be read again by the next lock or lazy load.
LOCKED_USERS = "locked_users"


def lock_user(user_id: int) -> User:
    """The user's row, locked for the rest of the transaction, its balance freshly read.

    A user the session already holds in full keeps its other columns as read
    (see _lock_loaded_user); any other is read whole. Locked once per
    transaction: a row this transaction already holds cannot have changed under
    it, so a second lock (a generation's reserve, then its spend) answers from
    the session instead of asking PostgreSQL again.
    """
    locked = db.session.info.setdefault(LOCKED_USERS, {})
    if user_id not in locked:
        locked[user_id] = (
            _lock_loaded_user(user_id)
            or db.session.execute(LOCK_USER, {"user_id": user_id}).scalar_one()
        )
    return locked[user_id]


def lock_user_found_by(statement, parameters: dict) -> User | None:
    """lock_user for a user found through another table, in one round trip: `statement`
    is LOCK_USER_ROW narrowed by a subquery (built once by the caller). None when it
    names nobody. The user is then held as lock_user holds it."""
    user = db.session.execute(statement, parameters).scalar_one_or_none()
    if user is not None:
        db.session.info.setdefault(LOCKED_USERS, {}).setdefault(user.id, user)
    return user


# The ledger's own columns: all it reads of a user once the row is locked.
LEDGER_COLUMNS = ("balance", "next_expiry_at", "last_top_up_credits")
LOCK_USER_CREDITS = (
    select(*(User.__table__.c[name] for name in LEDGER_COLUMNS))
    .where(User.__table__.c.id == bindparam("user_id"))
    .with_for_update()
)


def _lock_loaded_user(user_id: int) -> User | None:
    """Lock a user the session already holds in full, re-reading only the ledger's columns.

    A request's log-in has just loaded the customer: reading the whole row again
    under the lock would only repeat it. The ledger's columns (LEDGER_COLUMNS:
    the balance, the next expiry, the last top-up's size) are what a concurrent
    transaction may have changed and what the ledger decides on, so those are
    read fresh under the lock. None (nothing locked) when the session's copy is
    missing, partly expired or has unflushed changes: LOCK_USER then flushes and
    reads the whole row.
    """
    user = db.session.identity_map.get(identity_key(User, user_id))
    if user is None:
        return None
    state = inspect(user)
    if state.modified or state.expired_attributes:
        return None
    row = db.session.connection().execute(LOCK_USER_CREDITS, {"user_id": user_id}).one()
    for name in LEDGER_COLUMNS:
        set_committed_value(user, name, row._mapping[name])
    return user


@event.listens_for(Session, "after_transaction_end")
def _forget_locks(session: Session, transaction) -> None:
    # The database transaction's end, or a savepoint's (rolled back, it releases
    # its locks); not the inner transactions the ORM opens around each flush.
    if transaction.parent is None or transaction.nested:
        session.info.pop(LOCKED_USERS, None)


FIND_LOT = select(CreditLot).where(
    CreditLot.source == bindparam("source"), CreditLot.source_ref == bindparam("source_ref")
)


def find_lot(source: str, source_ref: str) -> CreditLot | None:
    return db.session.execute(
        FIND_LOT, {"source": source, "source_ref": source_ref}
    ).scalar_one_or_none()


def grant(
    user_id: int,
    credits: int,
    *,
    source: str,
    source_ref: str,
    expires_at: datetime | None,
    kind: str = "grant",
    order_id: int | None = None,
    stripe_event_id: str | None = None,
    reference: str | None = None,
    note: str | None = None,
) -> CreditLot | None:
    """Grant `credits` as a new lot, once per (source, source_ref).

    Returns the new lot, or None when that source was already granted, which
    makes a repeated delivery a no-op. Debt is paid off first.
    """
    if credits <= 0:
        raise ValueError("a grant must be positive")
    user = lock_user(user_id)
    paying_off = _debt_to_pay_off(user, credits)
    now = utcnow()
    lot_values = {
        "user_id": user.id,
        "source": source,
        "source_ref": source_ref,
        "order_id": order_id,
        "credits_granted": credits,
        "credits_remaining": credits - paying_off,
        "expires_at": expires_at,
        "created_at": now,
    }
    # The unique (source, source_ref) makes the insert itself the once-only check.
    lot_id = _run(_insert_lot_statement(), lot_values).scalar()
    if lot_id is None:
        return None
    if paying_off:
        _debt_lot(user).credits_remaining += paying_off
    balance = user.balance + credits
    if source in TOP_UP_SOURCES:
        user.last_top_up_credits = credits
    _insert_entry(
        user.id,
        kind,
        credits,
        balance,
        lot_id=lot_id,
        order_id=order_id,
        stripe_event_id=stripe_event_id,
        reference=reference or f"{source}:{source_ref}",
        note=note,
    )
    _save_balance(user, balance, expires_at)
    lot = _persistent(CreditLot(id=lot_id, **lot_values))
    metrics.CREDITS_GRANTED.labels(source=source).inc(credits)
    money_log.info(
        "money %s user_id=%s credits=%s source=%s source_ref=%s order_id=%s "
        "stripe_event_id=%s balance_after=%s",
        kind,
        user.id,
        credits,
        source,
        source_ref,
        order_id,
        stripe_event_id,
        user.balance,
    )
    return lot


def replace_allowance(
    user_id: int,
    credits: int,
    *,
    source: str,
    source_ref: str,
    expires_at: datetime,
    stripe_event_id: str | None = None,
    note: str | None = None,
) -> CreditLot | None:
    """Grant a period's allowance ("monthly" or "free"), retiring the last one.

    Allowances are replaced at renewal, not added to. An allowance whose period
    is already over (a late, out-of-order delivery) grants nothing.
    """
    user = lock_user(user_id)
    if find_lot(source, source_ref) is not None or expires_at <= utcnow():
        return None
    for lot in _live_lots(user.id, sources=("monthly", "free")):
        if lot.expires_at is not None and lot.expires_at < expires_at:
            _retire_lot(user, lot, kind="expire", note="replaced by the next period's allowance")
    return grant(
        user.id,
        credits,
        source=source,
        source_ref=source_ref,
        expires_at=expires_at,
        stripe_event_id=stripe_event_id,
        note=note,
    )


def spend(user_id: int, cost: int, *, reference: str, note: str | None = None) -> list[Draw]:
    """Take `cost` credits, soonest-expiring lot first, or raise InsufficientCredits.

    The user row is locked before the balance is checked, so parallel spends
    against one balance cannot overspend; the balance never goes below zero here.
    """
    if cost <= 0:
        raise ValueError("a spend must be positive")
    user = lock_user_covering(user_id, cost)
    # What the session holds goes first (an expiry just made): the lots are read
    # and written below without it, and its entries must come before these.
    db.session.flush()
    lots = _spendable_lots(user.id)
    draws = _draws(lots, cost)
    lacking = cost - sum(draw.credits for draw in draws)
    if lacking:  # the balance column and the lots disagree: never write that
        raise RuntimeError(f"user {user.id}: balance {user.balance} but lots lack {lacking}")
    _write_spend(user, dict(lots), draws, reference=reference, note=note)
    money_log.info(
        "money spend user_id=%s credits=%s reference=%s balance_after=%s",
        user.id,
        cost,
        reference,
        user.balance,
    )
    return draws


def lock_user_covering(user_id: int, cost: int) -> User:
    """The user's row locked, or InsufficientCredits unless its balance covers `cost`.

    The balance is read under the lock and net of lots that have just expired: the
    check spend() makes, which a caller may make before writing anything else. A
    cost of 0 still refuses a negative balance (after a clawback).
    """
    user = lock_user(user_id)
    expire_due_lots_for(user)
    if user.balance < cost:
        raise InsufficientCredits(user.balance, cost)
    return user


def _spendable_lots(user_id: int) -> list[tuple[int, int]]:
    """(id, credits remaining) of the user's live lots in spend order, as plain rows."""
    rows = db.session.connection().execute(LIVE_LOT_CREDITS, {"user_id": user_id, "now": utcnow()})
    return [tuple(row) for row in rows]


def _draws(lots: list[tuple[int, int]], cost: int) -> list[Draw]:
    """What `cost` takes from each (lot id, credits remaining), in order, until it is covered."""
    draws = []
    remaining = cost
    for lot_id, credits_remaining in lots:
        if remaining == 0:
            break
        taken = min(credits_remaining, remaining)
        remaining -= taken
        draws.append(Draw(lot_id, taken))
    return draws


# A spend's writes as plain statements, built once: the ORM's unit of work costs
# several times the SQL for these few rows, and a generation spends every time.
# The bound names differ from the columns': values() reserves the columns' own.
_lots, _users = CreditLot.__table__, User.__table__
DRAW_FROM_LOT = (
    update(_lots)
    .where(_lots.c.id == bindparam("lot_id"))
    .values(credits_remaining=bindparam("remaining_after"))
)


def _write_spend(
    user: User, remaining: dict[int, int], draws: list[Draw], *, reference: str, note: str | None
) -> None:
    """Write the draws (lots, one entry each, the balance) and tell the session's objects.

    `remaining` is each lot's credits before the spend. The user, and any lot
    the session holds, get the new values as already committed, so nothing
    reads them again and no flush writes them twice.
    """
    connection = db.session.connection()
    balance = user.balance
    for draw in draws:
        remaining_after = remaining[draw.lot_id] - draw.credits
        balance -= draw.credits
        connection.execute(
            DRAW_FROM_LOT, {"lot_id": draw.lot_id, "remaining_after": remaining_after}
        )
        _insert_entry(
            user.id,
            "spend",
            -draw.credits,
            balance,
            lot_id=draw.lot_id,
            reference=reference,
            note=note,
        )
        lot = db.session.identity_map.get(identity_key(CreditLot, draw.lot_id))
        if lot is not None:
            set_committed_value(lot, "credits_remaining", remaining_after)
    _save_balance(user, balance)


def _save_balance(user: User, balance: int, expires_at: datetime | None = None) -> None:
    """Write the user's new balance (and next expiry, if `expires_at` is sooner) at once,
    as one UPDATE that no flush repeats (extensions.update_now)."""
    user.balance = balance
    _note_expiry(user, expires_at)
    update_now(user)


def compensate(user_id: int, draws: list[Draw], *, reference: str, note: str | None = None) -> None:
    """Give back exactly what `spend` took, to the lots it came from."""
    user = lock_user(user_id)
    for draw in draws:
        lot = db.session.get(CreditLot, draw.lot_id)
        lot.credits_remaining += draw.credits - _pay_off_debt(user, draw.credits)
        _note_expiry(user, lot.expires_at)  # in case the lot expired meanwhile
        _write_entry(user, "compensate", draw.credits, lot=lot, reference=reference, note=note)
    money_log.info(
        "money compensate user_id=%s credits=%s reference=%s balance_after=%s",
        user.id,
        sum(draw.credits for draw in draws),
        reference,
        user.balance,
    )


def claw_back(
    user_id: int,
    credits: int,
    *,
    reference: str,
    order_id: int | None = None,
    stripe_event_id: str | None = None,
    note: str | None = None,
    kind: str = "clawback",
) -> None:
    """Take `credits` back (a refund, a dispute, an admin's minus), even below zero.

    The order's own lot is drawn first, then the others soonest-expiring first;
    whatever is left becomes debt. Callers guard against applying one cause twice.
    """
    if credits <= 0:
        return
    user = lock_user(user_id)
    expire_due_lots_for(user)
    lots = _live_lots(user.id)
    lots.sort(key=lambda lot: 0 if order_id is not None and lot.order_id == order_id else 1)
    remaining = credits
    for lot in lots:
        if remaining == 0:
            break
        taken = min(lot.credits_remaining, remaining)
        lot.credits_remaining -= taken
        remaining -= taken
    if remaining:
        _debt_lot(user).credits_remaining -= remaining
    _write_entry(
        user,
        kind,
        -credits,
        order_id=order_id,
        stripe_event_id=stripe_event_id,
        reference=reference,
        note=note,
    )
    metrics.CREDITS_CLAWED_BACK.labels(reason=_clawback_reason(kind, reference)).inc(credits)
    money_log.info(
        "money %s user_id=%s credits=%s reference=%s order_id=%s stripe_event_id=%s "
        "balance_after=%s",
        kind,
        user.id,
        credits,
        reference,
        order_id,
        stripe_event_id,
        user.balance,
    )


def _clawback_reason(kind: str, reference: str) -> str:
    if kind == "adjust":
        return "admin"
    cause = reference.split(":", 1)[0]
    return cause if cause in ("refund", "dispute") else "other"


def expire_due_lots_for(user: User, now: datetime | None = None) -> int:
    """Expire the user's lots past their expiry (the user row must be locked)."""
    now = now or utcnow()
    if user.next_expiry_at is None or user.next_expiry_at > now:
        return 0
    due = db.session.execute(
        select(CreditLot)
        .where(
            CreditLot.user_id == user.id,
            CreditLot.credits_remaining > 0,
            CreditLot.expires_at <= now,
        )
        .order_by(CreditLot.expires_at, CreditLot.id)
    ).scalars()
    count = 0
    for lot in due:
        _retire_lot(user, lot, kind="expire", note="expired")
        count += 1
    user.next_expiry_at = db.session.execute(
        select(func.min(CreditLot.expires_at)).where(
            CreditLot.user_id == user.id,
            CreditLot.credits_remaining > 0,
            CreditLot.expires_at > now,
        )
    ).scalar_one_or_none()
    return count


def expire_due_lots(now: datetime | None = None) -> int:
    """Expire every user's due lots, one committed transaction per user."""
    now = now or utcnow()
    user_ids = (
        db.session.execute(select(User.id).where(User.next_expiry_at <= now).order_by(User.id))
        .scalars()
        .all()
    )
    total = 0
    for user_id in user_ids:
        total += expire_due_lots_for(lock_user(user_id), now)
        db.session.commit()
    return total


def current_balance(user_id: int) -> int:
    """The user's balance, read in O(1) from its column.

    If a lot has passed its expiry since the last write, it is expired first
    (and that is committed), so the balance shown never includes dead credits.
    """
    user = db.session.get(User, user_id)
    if user.next_expiry_at is not None and user.next_expiry_at <= utcnow():
        expire_due_lots_for(lock_user(user_id))
        db.session.commit()
    return user.balance


def live_lots(user_id: int) -> list[CreditLot]:
    """The user's spendable lots, in the order they would be spent."""
    return _live_lots(user_id)


# The spend order, soonest expiry first. Like LOCK_USER, built once: building a
# select() costs about as much as running it.
_LIVE_LOTS = select(CreditLot).where(
    CreditLot.user_id == bindparam("user_id"),
    CreditLot.credits_remaining > 0,
    (CreditLot.expires_at.is_(None)) | (CreditLot.expires_at > bindparam("now")),
)
_SPEND_ORDER = (
    CreditLot.expires_at.is_(None),
    CreditLot.expires_at,
    case(SPEND_PRIORITY, value=CreditLot.source, else_=3),
    CreditLot.id,
)
LIVE_LOTS = _LIVE_LOTS.order_by(*_SPEND_ORDER)
# What a spend needs of them, as plain rows: loading the lots as objects costs more.
LIVE_LOT_CREDITS = LIVE_LOTS.with_only_columns(CreditLot.id, CreditLot.credits_remaining)
LIVE_LOTS_FROM = _LIVE_LOTS.where(
    CreditLot.source.in_(bindparam("sources", expanding=True))
).order_by(*_SPEND_ORDER)


def _live_lots(user_id: int, sources: tuple[str, ...] | None = None) -> list[CreditLot]:
    params = {"user_id": user_id, "now": utcnow()}
    if sources:
        statement, params["sources"] = LIVE_LOTS_FROM, list(sources)
    else:
        statement = LIVE_LOTS
    return list(db.session.execute(statement, params).scalars())


def _retire_lot(user: User, lot: CreditLot, *, kind: str, note: str) -> None:
    credits = lot.credits_remaining
    lot.credits_remaining = 0
    _write_entry(user, kind, -credits, lot=lot, reference=f"lot:{lot.id}", note=note)


def _debt_lot(user: User) -> CreditLot:
    lot = find_lot("debt", str(user.id))
    if lot is None:
        lot = CreditLot(
            user_id=user.id,
            source="debt",
            source_ref=str(user.id),
            credits_granted=0,
            credits_remaining=0,
            expires_at=None,
        )
        db.session.add(lot)
        db.session.flush()
    return lot


def _debt_to_pay_off(user: User, available: int) -> int:
    """How many of `available` incoming credits the debt lot would take (none written)."""
    if user.balance >= 0:
        return 0
    return min(available, -_debt_lot(user).credits_remaining)


def _pay_off_debt(user: User, available: int) -> int:
    """Move up to `available` incoming credits into the debt lot; return how many."""
    if user.balance >= 0:
        return 0
    debt = _debt_lot(user)
    paid = min(available, -debt.credits_remaining)
    debt.credits_remaining += paid
    return paid


def _note_expiry(user: User, expires_at: datetime | None) -> None:
    if expires_at is not None and (user.next_expiry_at is None or expires_at < user.next_expiry_at):
        user.next_expiry_at = expires_at


def _write_entry(
    user: User,
    kind: str,
    delta: int,
    *,
    lot: CreditLot | None = None,
    lot_id: int | None = None,
    **fields,
) -> None:
    user.balance += delta
    _insert_entry(
        user.id, kind, delta, user.balance, lot_id=lot.id if lot is not None else lot_id, **fields
    )


def _insert_entry(user_id: int, kind: str, delta: int, balance_after: int, **fields) -> None:
    entry = dict.fromkeys(ENTRY_COLUMNS)
    entry.update(
        fields,
        user_id=user_id,
        kind=kind,
        delta=delta,
        balance_after=balance_after,
        created_at=utcnow(),
    )
    _run(INSERT_ENTRY, entry)


# The ledger's inserts as Core statements on the tables, built once: a row needs no
# ORM object (the ledger never reads an entry back in the transaction that wrote
# it), and they run on the session's connection without an autoflush, so the
# user's and the order's changes are flushed once, at the commit.
ENTRY_COLUMNS = (
    "user_id", "kind", "delta", "balance_after", "lot_id", "order_id",
    "stripe_event_id", "reference", "note", "created_at",
)  # fmt: skip
INSERT_ENTRY = insert(LedgerEntry.__table__).values(
    {name: bindparam(name, type_=LedgerEntry.__table__.c[name].type) for name in ENTRY_COLUMNS}
)
LOT_COLUMNS = (
    "user_id", "source", "source_ref", "order_id", "credits_granted", "credits_remaining",
    "expires_at", "created_at",
)  # fmt: skip
_insert_lot_statements = {}  # dialect name → INSERT … ON CONFLICT DO NOTHING RETURNING id


def _insert_lot_statement():
    dialect = db.session.get_bind().dialect.name
    if dialect not in _insert_lot_statements:
        _insert_lot_statements[dialect] = insert_once(
            CreditLot.__table__, LOT_COLUMNS, "source", "source_ref"
        )
    return _insert_lot_statements[dialect]


def _run(statement, values: dict):
    return db.session.connection().execute(statement, values)


def _persistent(lot: CreditLot) -> CreditLot:
    """The lot just inserted, as the session's object for its row, without reading it back."""
    make_transient_to_detached(lot)
    db.session.add(lot)
    return lot
