"""A customer's tier, allowance, balance and usage, and their subscription changes.

current_tier and current_subscription are the one answer to "what does this
customer pay for"; other blueprints import them from here.
"""

import logging
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from flask import current_app
from sqlalchemy import BigInteger, Date, bindparam, case, cast, event, func, or_, select
from sqlalchemy.orm import Session

from billing_site import books, credits, formatting
from billing_site.catalog import Tier, current_catalog
from billing_site.extensions import db
from billing_site.models import (
    LIVE_SUBSCRIPTION_STATUSES,
    CreditLot,
    Generation,
    LedgerEntry,
    Order,
    Subscription,
    User,
    utcnow,
)
from billing_site.notifications.preferences import EmailChoices, preferences_of
from billing_site.stripe_gateway import GatewayError, current_gateway

log = logging.getLogger(__name__)

LEDGER_PAGE_SIZE = 20
RECENT_GENERATIONS = 8
RECENT_ORDERS = 20
# Orders a receipt makes sense for: money changed hands.
RECEIPT_STATUSES = ("paid", "refunded", "partially_refunded", "disputed")


# --- tier ------------------------------------------------------------------------


# Statements used on every page view are built once, with bound parameters:
# building a select() costs about as much as running it, and a statement object
# keeps its cache key, so SQLAlchemy's compiled cache is hit without rebuilding.
CURRENT_SUBSCRIPTION = (
    select(Subscription)
    .where(
        Subscription.user_id == bindparam("user_id"),
        # OR of plain comparisons: an IN list is re-rendered on every execution.
        or_(*(Subscription.status == status for status in LIVE_SUBSCRIPTION_STATUSES)),
    )
    .order_by(Subscription.current_period_end.desc().nulls_last(), Subscription.id.desc())
    .limit(1)
)
# Key in Session.info: {user_id: Subscription | None}, read in this transaction.
SUBSCRIPTION_CACHE = "current_subscription"


def current_subscription(user: User) -> Subscription | None:
    """The customer's live subscription (the one running longest if several are).

    Read once per transaction: a page view or a generation asks several times
    (the limiter, the tier check, the free allowance, the page). Any flush, commit
    or rollback forgets it, and unflushed changes bypass it (the query autoflushes
    them), so a change made in this session is always seen.
    """
    session = db.session
    cache = session.info.setdefault(SUBSCRIPTION_CACHE, {})
    user_id = user.id
    if user_id not in cache or session.new or session.dirty or session.deleted:
        cache[user_id] = db.session.execute(
            CURRENT_SUBSCRIPTION, {"user_id": user_id}
        ).scalar_one_or_none()
    return cache[user_id]


@event.listens_for(Session, "after_flush")
@event.listens_for(Session, "after_transaction_end")
def _forget_subscriptions(session: Session, *_) -> None:
    session.info.pop(SUBSCRIPTION_CACHE, None)


def current_tier(user: User) -> str:
    """The id of the tier the customer is on: their live subscription's, else free."""
    subscription = current_subscription(user)
    return subscription.tier if subscription is not None else current_catalog().free_tier.id


def tier_of(user: User) -> Tier:
    catalog = current_catalog()
    return catalog.tier(current_tier(user)) or catalog.free_tier


# --- the free tier's monthly allowance -------------------------------------------------


# A pack bought and not refunded (in full) or charged back unlocks the pack models.
PACK_UNLOCK_STATUSES = ("paid", "partially_refunded")


def has_bought_pack(user_id: int) -> bool:
    return (
        db.session.scalar(
            select(Order.id)
            .where(
                Order.user_id == user_id,
                Order.kind == "pack",
                Order.status.in_(PACK_UNLOCK_STATUSES),
            )
            .limit(1)
        )
        is not None
    )


def unlocked_models(user: User, tier: Tier | None = None) -> tuple[str, ...]:
    """The models this customer may use: their plan's, plus the pack models if they bought one."""
    tier = tier or tier_of(user)
    catalog = current_catalog()
    if not has_bought_pack(user.id):
        return tier.models
    extra = tuple(m for m in catalog.pack_models if m not in tier.models)
    return tier.models + extra


def model_offers() -> dict[str, str]:
    """Per model, what gives it: "Free, Basic, Premium and credit packs"."""
    catalog = current_catalog()
    offers = {}
    for model in catalog.models:
        names = [tier.name for tier in catalog.tiers if model.id in tier.models]
        if model.id in catalog.pack_models:
            names.append("credit packs")
        offers[model.id] = (
            ", ".join(names[:-1])
            + (" and " if len(names) > 1 else "")
            + (names[-1] if names else "no plan")
        )
    return offers


def month_start(moment: datetime) -> datetime:
    return moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(moment: datetime) -> datetime:
    return month_start(month_start(moment) + timedelta(days=32))


def free_allowance_ref(user_id: int, moment: datetime) -> str:
    return f"{user_id}:{moment:%Y-%m}"


def grant_free_allowance(user: User, now: datetime | None = None) -> bool:
    """Grant this month's free credits if the customer is on the free tier and has none yet.

    Does not commit (the caller does). The allowance is granted lazily, the first
    time a month is touched, and expires when the month ends.
    """
    now = now or utcnow()
    free_tier = current_catalog().free_tier
    if free_tier.credits_per_month <= 0 or current_tier(user) != free_tier.id:
        return False
    # A farm of fresh sign-ups gets nothing until each address is proven.
    if current_app.config["REQUIRE_EMAIL_VERIFICATION"] and not user.email_verified:
        return False
    source_ref = free_allowance_ref(user.id, now)
    # Checked without a lock first so page views do not queue on the user row;
    # replace_allowance checks again under the lock.
    if credits.find_lot("free", source_ref) is not None:
        return False
    lot = credits.replace_allowance(
        user.id,
        free_tier.credits_per_month,
        source="free",
        source_ref=source_ref,
        expires_at=next_month_start(now),
        note=f"free credits for {now:%B %Y}",
    )
    return lot is not None


def touch_month(user: User) -> None:
    """Grant the free allowance if it is due, and commit it (for page views)."""
    if grant_free_allowance(user):
        db.session.commit()


# --- the balance in the header --------------------------------------------------------

# Stripe's default Smart Retries try a failed renewal for up to two weeks before
# the subscription is cancelled: the date a past-due customer must act by.
PAST_DUE_GRACE = timedelta(days=14)


def nav_badge(user: User) -> dict:
    """What the header's credits badge shows: a balance, "Unlimited", or nothing.

    An admin who is not a customer (no credits, no plan, never paid) gets no badge.
    """
    balance = credits.current_balance(user.id)
    unlimited = tier_of(user).is_unlimited
    shown = not (user.is_admin and balance == 0 and not unlimited and not user.stripe_customer_id)
    return {"balance": balance, "unlimited": unlimited and balance >= 0, "shown": shown}


def update_card_by(subscription: Subscription) -> datetime | None:
    """The day a past-due subscription's payment must be fixed by, before Stripe gives up."""
    start = subscription.current_period_start or subscription.updated_at
    return start + PAST_DUE_GRACE if start else None


# --- the dashboard ---------------------------------------------------------------------


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime


@dataclass(frozen=True)
class Usage:
    tier: Tier
    balance: int
    credits_used: int
    generations: int
    period: Period

    @property
    def usage_percentage(self) -> int:
        if self.tier.is_unlimited or self.tier.credits_per_month <= 0:
            return 0
        return min(100, round(100 * self.credits_used / self.tier.credits_per_month))

    @property
    def has_credit(self) -> bool:
        # A negative balance (after a clawback) blocks even an unlimited tier.
        if self.tier.is_unlimited:
            return self.balance >= 0
        return self.balance > 0

    def as_json(self) -> dict:
        return {
            "tier": self.tier.id,
            "balance": self.balance,
            "credits_used": self.credits_used,
            "credits_per_month": None if self.tier.is_unlimited else self.tier.credits_per_month,
            "is_unlimited": self.tier.is_unlimited,
            "usage_percentage": self.usage_percentage,
            "period_end": self.period.end.isoformat(),
            "has_credit": self.has_credit,
            "purchase_required": not self.has_credit,
        }


def current_period(user: User, now: datetime | None = None) -> Period:
    """The subscription's billing period, or the calendar month on the free tier."""
    now = now or utcnow()
    subscription = current_subscription(user)
    if subscription and subscription.current_period_start and subscription.current_period_end:
        return Period(subscription.current_period_start, subscription.current_period_end)
    return Period(month_start(now), next_month_start(now))


# Totals, not entities: built on the table and run on the session's connection,
# which skips the ORM's per-statement work (about two thirds of a small query's CPU).
_generations = Generation.__table__
USAGE_IN_PERIOD = (
    select(func.coalesce(func.sum(_generations.c.credits_charged), 0), func.count())
    .select_from(_generations)
    .where(
        _generations.c.user_id == bindparam("user_id"),
        _generations.c.status == "succeeded",
        _generations.c.created_at >= bindparam("start"),
        _generations.c.created_at < bindparam("end"),
    )
)


def usage(user: User) -> Usage:
    """The customer's balance and what they generated this period."""
    period = current_period(user)
    used, count = (
        db.session.connection()
        .execute(USAGE_IN_PERIOD, {"user_id": user.id, "start": period.start, "end": period.end})
        .one()
    )
    return Usage(
        tier=tier_of(user),
        balance=credits.current_balance(user.id),
        credits_used=int(used),
        generations=int(count),
        period=period,
    )


@dataclass(frozen=True)
class ChartBar:
    day: date
    count: int
    x: int
    y: int
    height: int
    label: str = ""  # the day of the month under the bar ("today" under today), or nothing


@dataclass(frozen=True)
class UsageChart:
    bars: list[ChartBar]
    width: int  # of the plotting area, every day of the period included
    height: int
    bar_width: int
    peak: int
    total: int
    ticks: list[tuple[int, int]] = field(default_factory=list)  # (count, y) up the side

    @property
    def top(self) -> int:
        return self.ticks[-1][0] if self.ticks else 0


CHART_HEIGHT = 120
CHART_BAR_WIDTH = 14
CHART_GAP = 4
CHART_MAX_DAYS = 31


def usage_chart(user: User, period: Period, now: datetime | None = None) -> UsageChart:
    """Generations per day this period, laid out as SVG bars (drawn by the template)."""
    now = now or utcnow()
    frame = ChartFrame.of(period, now)
    rows = (
        db.session.connection()
        .execute(
            _daily_counts_statement(db.engine.dialect.name),
            {"user_id": user.id, "start": frame.start},
        )
        .all()
    )
    return frame.layout({_as_date(value): count for value, count in rows})


@dataclass(frozen=True)
class ChartFrame:
    """The days the usage chart draws: this period's, at most the last CHART_MAX_DAYS."""

    first_day: date
    last_day: date
    slots: int
    today: date
    start: datetime  # the first day's midnight: counting starts here

    @classmethod
    def of(cls, period: Period, now: datetime) -> "ChartFrame":
        first_day = max(period.start, now - timedelta(days=CHART_MAX_DAYS - 1)).date()
        last_day = min(period.end - timedelta(microseconds=1), now).date()
        # The frame spans the whole period, so the first day of a month is one slot of
        # thirty, not a bar stretched across the card.
        period_days = (period.end - timedelta(microseconds=1)).date() - first_day
        slots = min(CHART_MAX_DAYS, period_days.days + 1)
        start = datetime.combine(first_day, datetime.min.time(), tzinfo=period.start.tzinfo)
        return cls(first_day, last_day, slots, now.date(), start)

    def layout(self, per_day: dict[date, int]) -> UsageChart:
        count = (self.last_day - self.first_day).days + 1
        days = [self.first_day + timedelta(days=n) for n in range(count)]
        counts = [(day, per_day.get(day, 0)) for day in days]
        return layout_chart(counts, slots=self.slots, today=self.today)


def usage_with_chart(user: User, now: datetime | None = None) -> tuple[Usage, UsageChart]:
    """usage() and usage_chart() of this period, read in one statement (the account page)."""
    now = now or utcnow()
    period = current_period(user, now)
    frame = ChartFrame.of(period, now)
    params = {
        "user_id": user.id,
        "since": min(frame.start, period.start),
        "chart_start": frame.start,
        "start": period.start,
        "end": period.end,
    }
    rows = (
        db.session.connection()
        .execute(_daily_usage_statement(db.engine.dialect.name), params)
        .all()
    )
    current = Usage(
        tier=tier_of(user),
        balance=credits.current_balance(user.id),
        credits_used=sum(int(row.credits_used) for row in rows),
        generations=sum(row.generations for row in rows),
        period=period,
    )
    return current, frame.layout({_as_date(row.day): row.drawn for row in rows})


_DAILY_COUNTS = {}  # dialect name -> statement


def _daily_counts_statement(dialect: str):
    """Generations per UTC day since :start (built once per dialect)."""
    if dialect not in _DAILY_COUNTS:
        # Counted per day in the database: a heavy customer makes thousands of
        # generations a month, and only the daily totals are drawn.
        day = _utc_day(_generations.c.created_at, dialect)
        _DAILY_COUNTS[dialect] = (
            select(day, func.count())
            .where(
                _generations.c.user_id == bindparam("user_id"),
                _generations.c.status == "succeeded",
                _generations.c.created_at >= bindparam("start"),
            )
            .group_by(day)
        )
    return _DAILY_COUNTS[dialect]


_DAILY_USAGE = {}  # dialect name -> statement


def _daily_usage_statement(dialect: str):
    """Per UTC day since :since: the generations the chart draws (from :chart_start), and
    the generations and credits within the period [:start, :end) (built once per dialect)."""
    if dialect not in _DAILY_USAGE:
        created_at = _generations.c.created_at
        day = _utc_day(created_at, dialect)
        in_period = (created_at >= bindparam("start")) & (created_at < bindparam("end"))
        _DAILY_USAGE[dialect] = (
            select(
                day.label("day"),
                func.count().filter(created_at >= bindparam("chart_start")).label("drawn"),
                func.count().filter(in_period).label("generations"),
                func.coalesce(func.sum(_generations.c.credits_charged).filter(in_period), 0).label(
                    "credits_used"
                ),
            )
            .where(
                _generations.c.user_id == bindparam("user_id"),
                _generations.c.status == "succeeded",
                created_at >= bindparam("since"),
            )
            .group_by(day)
        )
    return _DAILY_USAGE[dialect]


def _utc_day(column, dialect: str):
    """The UTC calendar day of a timestamp column, on PostgreSQL and SQLite alike."""
    if dialect == "postgresql":
        return cast(func.timezone("UTC", column), Date)
    return func.date(column)  # SQLite keeps the UTC time as text


def _as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)


def layout_chart(
    counts: list[tuple[date, int]], slots: int = 0, today: date | None = None
) -> UsageChart:
    """Pure: place one bar per day, scaled to the busiest day, with labels for the axes."""
    peak = max((count for _, count in counts), default=0)
    top = max(peak, 1)
    bars = []
    for index, (day, count) in enumerate(counts):
        height = round(CHART_HEIGHT * count / peak) if peak else 0
        bars.append(
            ChartBar(
                day=day,
                count=count,
                x=index * (CHART_BAR_WIDTH + CHART_GAP),
                y=CHART_HEIGHT - height,
                height=height,
                label=_day_label(day, index, today),
            )
        )
    width = max(1, max(slots, len(counts)) * (CHART_BAR_WIDTH + CHART_GAP))
    total = sum(count for _, count in counts)
    values = sorted({0, top // 2, top}) if top >= 4 else sorted({0, top})
    scale = peak or top
    ticks = [(value, CHART_HEIGHT - round(CHART_HEIGHT * value / scale)) for value in values]
    return UsageChart(bars, width, CHART_HEIGHT, CHART_BAR_WIDTH, peak, total, ticks)


def _day_label(day: date, index: int, today: date | None) -> str:
    if day == today:
        return "today"
    # Every seventh day and the first, so labels never crowd "today".
    if today is not None and 0 < (today - day).days < 3:
        return ""
    return str(day.day) if index == 0 or day.day % 7 == 1 else ""


# The ledger is read as rows of the columns the page shows, not as entities: the
# ORM's per-row work was most of the page's query CPU. Each row carries what its
# description needs of its lot, order and generation, joined in the same statement
# (one round trip instead of up to four); admin notes and references stay internal.
_entries, _lots, _orders = LedgerEntry.__table__, CreditLot.__table__, Order.__table__
_entry_generations = _generations.alias("entry_generations")
# "generation:<id>" names the generation an entry spent or returned credits for.
GENERATION_PREFIX = "generation:"


def _ledger_newest(dialect: str):
    """The newest entries first, each with its lot, order and generation facts."""
    order_id = func.coalesce(_entries.c.order_id, _lots.c.order_id)
    joined = (
        _entries.outerjoin(_lots, _lots.c.id == _entries.c.lot_id)
        .outerjoin(_orders, _orders.c.id == order_id)
        .outerjoin(
            _entry_generations,
            _entry_generations.c.id == _generation_id(_entries.c.reference, dialect),
        )
    )
    return (
        select(
            _entries.c.id,
            _entries.c.kind,
            _entries.c.delta,
            _entries.c.balance_after,
            _entries.c.reference,
            _entries.c.note,
            _entries.c.created_at,
            _lots.c.source.label("lot_source"),
            _orders.c.kind.label("order_kind"),
            _orders.c.item_id.label("order_item_id"),
            _entry_generations.c.model.label("generation_model"),
        )
        .select_from(joined)
        .where(_entries.c.user_id == bindparam("user_id"))
        .order_by(_entries.c.id.desc())
        .limit(LEDGER_PAGE_SIZE + 1)  # one extra row says whether another page exists
    )


def _generation_id(reference, dialect: str):
    """The id in a "generation:<id>" reference, NULL for any other reference.

    Guarded so that no other reference is ever cast: PostgreSQL would refuse
    "generation:abc" as an integer (SQLite reads it as 0, which matches no row).
    """
    digits = func.substr(reference, len(GENERATION_PREFIX) + 1)
    if dialect == "postgresql":
        is_generation = reference.regexp_match(f"^{GENERATION_PREFIX}[0-9]{{1,18}}$")
    else:
        is_generation = reference.like(f"{GENERATION_PREFIX}%")
    return cast(case((is_generation, digits)), BigInteger)


_LEDGER_STATEMENTS = {}  # (dialect, form) -> statement


def _ledger_statement(form: str):
    """The newest page ("offset") or the page before a cursor ("before"), once per dialect."""
    dialect = db.engine.dialect.name
    key = (dialect, form)
    if key not in _LEDGER_STATEMENTS:
        newest = _ledger_newest(dialect)
        _LEDGER_STATEMENTS[key] = (
            newest.where(_entries.c.id < bindparam("before"))
            if form == "before"
            else newest.offset(bindparam("offset"))
        )
    return _LEDGER_STATEMENTS[key]


@dataclass(frozen=True)
class LedgerPage:
    entries: list  # rows: the entry's columns (id, kind, delta, created_at, …) and its facts
    next_before: int | None  # the cursor for "load more", None on the last page

    @staticmethod
    def describe(entry) -> str:
        return describe_entry(entry)


def describe_entry(entry) -> str:
    """One ledger row in the customer's words, from the facts joined onto it."""
    return formatting.ledger_description(
        entry.kind,
        entry.reference,
        lot_source=entry.lot_source,
        model=entry.generation_model,
        product=_product(entry),
    )


def _product(entry) -> str | None:
    if entry.order_kind is not None:
        return formatting.product_name(entry.order_kind, entry.order_item_id)
    if entry.lot_source == "monthly" and entry.note:
        # The monthly lot names its tier only in the note it was granted with.
        tier = next((t for t in current_catalog().tiers if entry.note.startswith(t.name)), None)
        return f"{tier.name} plan" if tier else None
    return None


def ledger_page(user_id: int, before: int | None = None, page: int = 1) -> LedgerPage:
    """Twenty ledger entries, newest first, without counting the whole ledger.

    It walks the (user_id, id) index backwards: `before` (the last id shown) is a
    keyset cursor that stays fast however long the ledger is, and is what "load
    more" sends; `page` is the plain offset form for links.
    """
    if before is not None:
        statement, params = _ledger_statement("before"), {"user_id": user_id, "before": before}
    else:
        offset = (max(page, 1) - 1) * LEDGER_PAGE_SIZE
        statement, params = _ledger_statement("offset"), {"user_id": user_id, "offset": offset}
    rows = db.session.connection().execute(statement, params).all()
    entries = rows[:LEDGER_PAGE_SIZE]
    has_more = len(rows) > LEDGER_PAGE_SIZE
    return LedgerPage(entries, entries[-1].id if has_more else None)


@dataclass(frozen=True)
class Dashboard:
    user: User
    usage: Usage
    lots: list  # rows: source, credits_remaining, credits_granted, expires_at
    next_expiry: datetime | None
    subscription: Subscription | None
    chart: UsageChart
    ledger: LedgerPage
    orders: list["Payment"]
    generations: list  # rows of Generation's shown columns
    email_choices: EmailChoices


def dashboard(user: User) -> Dashboard:
    """Everything the account page shows, after granting the month's free credits."""
    touch_month(user)
    current_usage, chart = usage_with_chart(user)
    lots = live_lots(user.id)
    expiries = [lot.expires_at for lot in lots if lot.expires_at is not None]
    return Dashboard(
        user=user,
        usage=current_usage,
        lots=lots,
        next_expiry=min(expiries, default=None),
        subscription=current_subscription(user),
        chart=chart,
        ledger=ledger_page(user.id),
        orders=billing_history(user.id, limit=RECENT_ORDERS),
        generations=recent_generations(user.id),
        email_choices=preferences_of(user.id),
    )


# The balance card's lots, in spend order, as rows of the columns it shows: the
# same statement the ledger spends by (credits.LIVE_LOTS), read without entities.
LIVE_LOT_ROWS = credits.LIVE_LOTS.with_only_columns(
    CreditLot.source, CreditLot.credits_remaining, CreditLot.credits_granted, CreditLot.expires_at
)


def live_lots(user_id: int) -> list:
    """The customer's spendable lots, soonest spent first (read-only rows)."""
    params = {"user_id": user_id, "now": utcnow()}
    return db.session.connection().execute(LIVE_LOT_ROWS, params).all()


# The strip (and the generator's gallery) shows these columns only: rows, not
# entities, skip the ORM's per-row work.
RECENT_GENERATIONS_STATEMENT = (
    select(
        _generations.c.id,
        _generations.c.prompt,
        _generations.c.model,
        _generations.c.credits_charged,
        _generations.c.status,
        _generations.c.result,
        _generations.c.created_at,
    )
    .where(_generations.c.user_id == bindparam("user_id"))
    # created_at, not id: it walks the (user_id, created_at) index.
    .order_by(_generations.c.created_at.desc(), _generations.c.id.desc())
    .limit(RECENT_GENERATIONS)
)


def recent_generations(user_id: int) -> list:
    """The customer's latest generations, as rows with Generation's shown columns."""
    return db.session.connection().execute(RECENT_GENERATIONS_STATEMENT, {"user_id": user_id}).all()


# --- billing history ---------------------------------------------------------------------

# Payments a customer sees: everything Stripe was asked to take, except checkouts
# that were never paid (pending, expired).
BILLING_STATUSES = (
    "paid",
    "refunded",
    "partially_refunded",
    "disputed",
    "failed",
    "needs_review",
)
BILLING_PAGE_SIZE = 50


@dataclass(frozen=True)
class Payment:
    """One row of the billing history, as the customer reads it."""

    order: Order  # or, in the history, a row of the Order columns it shows
    date: datetime
    label: str
    amount: str
    refunded: str | None
    status: str
    has_receipt: bool
    price: str | None = None  # before a discount, when there was one
    discount: str | None = None
    tax: str | None = None


# The columns payment_view and the payments table read: a row of them reads like
# the Order (row.amount_cents), so one payment_view serves rows and receipts.
_BILLING_COLUMNS = (
    "id",
    "kind",
    "item_id",
    "status",
    "amount_cents",
    "amount_subtotal_cents",
    "amount_discount_cents",
    "amount_tax_cents",
    "amount_refunded_cents",
    "currency",
    "promotion_code",
    "customer_notice",
    "hosted_invoice_url",
    "period_start",
    "period_end",
    "paid_at",
    "created_at",
)
BILLING_HISTORY = (
    select(*(_orders.c[name] for name in _BILLING_COLUMNS))
    .where(
        _orders.c.user_id == bindparam("user_id"),
        # OR of plain comparisons: an IN list is re-rendered on every execution.
        or_(*(_orders.c.status == status for status in BILLING_STATUSES)),
    )
    .order_by(_orders.c.id.desc())
    .limit(bindparam("limit"))
)


def billing_history(user_id: int, limit: int = BILLING_PAGE_SIZE) -> list[Payment]:
    """The customer's payments, newest first: packs, first payments, renewals, plan changes."""
    orders = db.session.connection().execute(BILLING_HISTORY, {"user_id": user_id, "limit": limit})
    return [payment_view(order) for order in orders]


def payment_view(order: Order) -> Payment:
    return Payment(
        order=order,
        date=order.paid_at or order.created_at,
        label=books.payment_label(order),
        amount=books.money_text(order.amount_cents, order.currency),
        refunded=books.money_text(order.amount_refunded_cents, order.currency)
        if order.amount_refunded_cents
        else None,
        status=books.CUSTOMER_STATUS.get(order.status, order.status),
        has_receipt=order.status in RECEIPT_STATUSES,
        price=_money_or_none(order.amount_subtotal_cents, order)
        if order.amount_discount_cents
        else None,
        discount=_money_or_none(order.amount_discount_cents, order),
        tax=_money_or_none(order.amount_tax_cents, order),
    )


def _money_or_none(cents: int | None, order: Order) -> str | None:
    return books.money_text(cents, order.currency) if cents else None


def order_for_receipt(user: User, order_id: int) -> Order | None:
    """The customer's own order with a receipt; None for anyone else's (shown as 404)."""
    order = db.session.get(Order, order_id)
    if order is None or order.user_id != user.id or order.status not in RECEIPT_STATUSES:
        return None
    return order


# --- subscription self-service ---------------------------------------------------------


class SelfServiceError(Exception):
    """The change could not be made; `message` is safe to show, `status` fits an answer."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.message = message
        self.status = status


def portal_url(user: User, return_url: str) -> str:
    """A Stripe billing portal session for the customer (or raise SelfServiceError)."""
    subscription = current_subscription(user)
    customer_id = user.stripe_customer_id or (subscription and subscription.stripe_customer_id)
    if not customer_id:
        raise SelfServiceError(
            "You have no billing account yet. It is created with your first purchase."
        )
    try:
        session = current_gateway().create_portal_session(
            customer_id=customer_id, return_url=return_url
        )
    except GatewayError as error:
        raise SelfServiceError(error.message, status=502) from error
    return session["url"]


@dataclass(frozen=True)
class PendingChange:
    """What Stripe accepted, shown until its webhook confirms it."""

    cancel_at_period_end: bool
    period_end: datetime | None


def set_cancel_at_period_end(user: User, cancel: bool) -> PendingChange:
    """Ask Stripe to cancel at period end (or to resume); the webhook records the result.

    Nothing is written here: the Subscription row changes only when Stripe's
    customer.subscription.updated arrives, so the row always says what Stripe
    says, and a failed call leaves everything as it was.
    """
    subscription = current_subscription(user)
    if subscription is None:
        raise SelfServiceError("You have no subscription to change.")
    action = "cancel" if cancel else "resume"
    # Setting a flag is idempotent in itself, so each press gets its own key:
    # a fixed key would make Stripe replay an earlier answer for cancel, resume,
    # cancel within 24 h. The client's own retries still reuse this one key.
    idempotency_key = (
        f"subscription-{subscription.stripe_subscription_id}-{action}-{uuid.uuid4().hex}"
    )
    try:
        stripe_subscription = current_gateway().set_cancel_at_period_end(
            subscription.stripe_subscription_id, cancel, idempotency_key=idempotency_key
        )
    except GatewayError as error:
        log.warning(
            "subscription %s failed id=%s error=%s",
            action,
            subscription.stripe_subscription_id,
            error.message,
        )
        raise SelfServiceError(error.message, status=502) from error
    log.info("subscription %s requested id=%s", action, subscription.stripe_subscription_id)
    return PendingChange(
        cancel_at_period_end=bool(stripe_subscription.get("cancel_at_period_end", cancel)),
        period_end=_period_end(stripe_subscription) or subscription.current_period_end,
    )


def _period_end(stripe_subscription: dict) -> datetime | None:
    """The period end from Stripe's object (on the items in recent API versions)."""
    items = (stripe_subscription.get("items") or {}).get("data") or [{}]
    timestamp = (
        stripe_subscription.get("current_period_end")
        or items[0].get("current_period_end")
        or stripe_subscription.get("cancel_at")
    )
    return datetime.fromtimestamp(timestamp, UTC) if timestamp else None


# --- saved payment methods -------------------------------------------------------------


@dataclass(frozen=True)
class SavedCard:
    id: str
    brand: str
    last4: str
    exp_month: int | None
    exp_year: int | None
    default: bool


def saved_cards(user: User) -> list[SavedCard]:
    """The customer's cards as Stripe holds them (none before their first purchase)."""
    subscription = current_subscription(user)
    customer_id = user.stripe_customer_id or (subscription and subscription.stripe_customer_id)
    if not customer_id:
        return []
    try:
        listed = current_gateway().list_payment_methods(customer_id)
    except GatewayError as error:
        raise SelfServiceError(error.message, status=502) from error
    default_id = listed.get("default_payment_method")
    cards = []
    for method in listed["data"]:
        card = method.get("card") or {}
        cards.append(
            SavedCard(
                id=method["id"],
                brand=card.get("display_brand") or card.get("brand") or "card",
                last4=card.get("last4") or "",
                exp_month=card.get("exp_month"),
                exp_year=card.get("exp_year"),
                default=method["id"] == default_id,
            )
        )
    return cards
