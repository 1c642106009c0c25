"""The orders CSV export: exactly the payments the orders page lists (packs, first
subscription payments, renewals, prorations), as a download.

The rows come from the page's own query (services.orders_query), read in
batches along its (created_at, id) order, so 100,000 orders never sit in memory
at once and the file cannot disagree with the list.
"""

import csv
import io
from collections.abc import Iterator
from datetime import date, datetime
from decimal import Decimal
from urllib.parse import urlencode

from sqlalchemy import and_, or_, select

from billing_site import audit
from billing_site.admin.services import OrderFilters, orders_query
from billing_site.extensions import db
from billing_site.models import Order, Refund, User

BATCH_SIZE = 500

COLUMNS = (
    "Order ID",
    "Created (UTC)",
    "Paid at (UTC)",
    "Customer email",
    "Kind",
    "Item",
    "Currency",
    "Amount",
    "Amount refunded",
    "Net amount",
    "Credits",
    "Credits clawed back",
    "Status",
    "Stripe checkout session",
    "Stripe payment intent",
    "Stripe charge",
    "Stripe subscription",
    "Stripe refunds",
    "Expected amount",
    "Discount",
    "Tax",
    "Promotion code",
    "Stripe invoice",
    "Stripe customer",
    "Period start (UTC)",
    "Period end (UTC)",
)
# Orders no money came in for: they have no net amount (summing Net is revenue).
UNPAID_STATUSES = ("pending", "failed", "expired")
# What one exported row reads; plain columns, not Order objects, so the session's
# identity map does not grow with the file.
ROW_COLUMNS = (
    Order.id,
    Order.created_at,
    Order.paid_at,
    User.email,
    Order.kind,
    Order.item_id,
    Order.currency,
    Order.amount_cents,
    Order.amount_refunded_cents,
    Order.credits,
    Order.credits_clawed_back,
    Order.status,
    Order.checkout_session_id,
    Order.payment_intent_id,
    Order.charge_id,
    Order.stripe_subscription_id,
    Order.expected_amount_cents,
    Order.amount_discount_cents,
    Order.amount_tax_cents,
    Order.promotion_code,
    Order.stripe_invoice_id,
    Order.stripe_customer_id,
    Order.period_start,
    Order.period_end,
)

# A spreadsheet runs a cell starting with one of these as a formula (OWASP, "CSV
# Injection"); tab and carriage return count because Excel skips them first.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# Stripe's currencies whose minor unit is not a hundredth.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd"}
    | {"vuv", "xaf", "xof", "xpf"}
)
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


# --- pure formatting --------------------------------------------------------------------


def neutralise_formula(text: str | None) -> str:
    """A cell a spreadsheet shows as text: a leading ' defuses a would-be formula."""
    if not text:
        return ""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def major_units(minor: int, currency: str) -> str:
    """Minor units as a plain decimal a spreadsheet reads as a number: 2000 usd → "20.00"."""
    exponent = minor_unit_exponent(currency)
    return f"{Decimal(minor).scaleb(-exponent):.{exponent}f}"


def minor_unit_exponent(currency: str) -> int:
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    return 3 if code in THREE_DECIMAL_CURRENCIES else 2


def timestamp(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else ""


def filename_for(day: date) -> str:
    return f"orders-{day.isoformat()}.csv"


def csv_row(row, refund_ids: list[str]) -> list[str]:
    """One order as CSV cells. Text that came from customers or Stripe is neutralised;
    numbers and times we format ourselves are not (an apostrophe would turn them into text)."""
    text = neutralise_formula
    credits = "unlimited" if row.credits < 0 else str(row.credits)
    net = row.amount_cents - row.amount_refunded_cents
    return [
        str(row.id),
        timestamp(row.created_at),
        timestamp(row.paid_at),
        text(row.email),
        text(row.kind),
        text(row.item_id),
        text(row.currency.upper()),
        major_units(row.amount_cents, row.currency),
        major_units(row.amount_refunded_cents, row.currency),
        "" if row.status in UNPAID_STATUSES else major_units(net, row.currency),
        credits,
        str(row.credits_clawed_back),
        text(row.status),
        text(row.checkout_session_id),
        text(row.payment_intent_id),
        text(row.charge_id),
        text(row.stripe_subscription_id),
        text(" ".join(refund_ids)),
        major_units(row.expected_amount_cents, row.currency),
        major_units(row.amount_discount_cents, row.currency),
        major_units(row.amount_tax_cents, row.currency),
        text(row.promotion_code),
        text(row.stripe_invoice_id),
        text(row.stripe_customer_id),
        timestamp(row.period_start),
        timestamp(row.period_end),
    ]


def csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)  # RFC 4180: quoted as needed, CRLF line ends
    return buffer.getvalue()


# --- reading ---------------------------------------------------------------------------


def csv_chunks(filters: OrderFilters, batch_size: int | None = None) -> Iterator[str]:
    """The header, then one chunk of CSV text per batch of matching orders."""
    yield csv_text([list(COLUMNS)])
    for batch in order_batches(filters, batch_size or BATCH_SIZE):
        refunds = refund_ids_by_order([row.id for row in batch])
        # End the read before sending, so a slow download holds no connection or
        # transaction open between batches.
        db.session.close()
        yield csv_text([csv_row(row, refunds.get(row.id, [])) for row in batch])


def order_batches(filters: OrderFilters, batch_size: int) -> Iterator[list]:
    """The orders matching `filters`, newest first, `batch_size` rows at a time (keyset)."""
    statement = orders_query(filters).with_only_columns(*ROW_COLUMNS).limit(batch_size)
    last = None
    while True:
        page = statement if last is None else statement.where(_older_than(last))
        batch = db.session.execute(page).all()
        if not batch:
            return
        yield batch
        if len(batch) < batch_size:
            return
        last = batch[-1]


def _older_than(row):
    # The list's order is (created_at desc, id desc); this continues it after `row`.
    # An order's (created_at, id) never changes, so each batch being its own short
    # read skips and repeats no order, whatever is written meanwhile.
    return or_(
        Order.created_at < row.created_at,
        and_(Order.created_at == row.created_at, Order.id < row.id),
    )


def refund_ids_by_order(order_ids: list[int]) -> dict[int, list[str]]:
    rows = db.session.execute(
        select(Refund.order_id, Refund.stripe_refund_id)
        .where(Refund.order_id.in_(order_ids), Refund.stripe_refund_id.is_not(None))
        .order_by(Refund.order_id, Refund.sequence)
    ).all()
    found: dict[int, list[str]] = {}
    for order_id, refund_id in rows:
        found.setdefault(order_id, []).append(refund_id)
    return found


# --- the audit entry ---------------------------------------------------------------------


def record_export(admin_id: int, filters: OrderFilters) -> None:
    """Audit the export (customers' emails leave the site in it) before a byte is sent."""
    args = filters.as_args()
    audit.record(admin_id, "orders.export", "orders", urlencode(args, safe="@") or "all", args)
    db.session.commit()
