"""One function per message: each builds its words and links and queues it once per cause.

All of them run inside the transaction of their cause (see outbox.queue) and
return the new message's id, or None when that cause already had its message
(or the customer turned that kind off). Links are absolute, built from SITE_URL.
"""

from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import select

from billing_site import formatting, metrics
from billing_site.catalog import current_catalog
from billing_site.extensions import db
from billing_site.models import (
    CreditLot,
    Dispute,
    EmailPreference,
    Order,
    Refund,
    Subscription,
    User,
    utcnow,
)
from billing_site.notifications.outbox import already_queued, queue

# How long Stripe keeps retrying a failed renewal (its default Smart Retries
# schedule) before the subscription ends; the failure email names that date.
RENEWAL_RETRY_WINDOW = timedelta(days=14)
# billing_reason of a subscription invoice -> the payment kind the site shows.
INVOICE_KINDS = {
    "subscription_create": "subscription",
    "subscription_cycle": "renewal",
    "subscription_update": "proration",
}
OPTIONAL_KINDS = ("credits_expiring", "low_balance")


def format_cents(cents: int) -> str:
    """$1,234.50 (the site's single currency; refunds.format_cents, without importing it)."""
    sign = "-" if cents < 0 else ""
    return f"{sign}${abs(cents) // 100:,}.{abs(cents) % 100:02d}"


def link(endpoint: str, **values) -> str:
    """An absolute link to one of the site's pages (no request needed)."""
    path = current_app.url_map.bind("localhost").build(endpoint, values)
    return current_app.config["SITE_URL"] + path


def wants(user_id: int, kind: str) -> bool:
    """Receipts and payment failures always go; the optional kinds obey the customer."""
    if kind not in OPTIONAL_KINDS:
        return True
    preference = db.session.get(EmailPreference, user_id)
    return preference is None or getattr(preference, kind)


def _day(moment: datetime | None) -> str:
    return formatting.long_date(moment, empty="today")


# --- payments ------------------------------------------------------------------------


def pack_receipt(order: Order) -> int | None:
    """A receipt for a paid credit pack."""
    pack = current_catalog().pack(order.item_id)
    what = f"{pack.name if pack else order.item_id} ({order.credits:,} credits)"
    links = [("See your receipt", link("account.receipt", order_id=order.id))]
    if order.receipt_url:
        links.append(("Stripe's receipt", order.receipt_url))
    return _receipt(
        f"receipt:order:{order.id}",
        order.user,
        "pack",
        what,
        order.amount_cents,
        order.paid_at,
        links,
    )


def invoice_receipt(user: User, invoice: dict, tier_name: str) -> int | None:
    """A receipt for a paid subscription invoice: first payment, renewal or proration."""
    kind = INVOICE_KINDS.get(invoice.get("billing_reason") or "", "renewal")
    what = {
        "subscription": f"the {tier_name} plan, first month",
        "renewal": f"the {tier_name} plan, renewal",
        "proration": f"the {tier_name} plan, plan change (prorated)",
    }[kind]
    links = []
    order = _order_for_invoice(invoice["id"])
    if order is not None:
        links.append(("See your receipt", link("account.receipt", order_id=order.id)))
    if invoice.get("hosted_invoice_url"):
        links.append(("View the invoice", invoice["hosted_invoice_url"]))
    if invoice.get("invoice_pdf"):
        links.append(("Download the invoice (PDF)", invoice["invoice_pdf"]))
    links.append(("Your account", link("account.dashboard")))
    paid_at = _time((invoice.get("status_transitions") or {}).get("paid_at")) or _time(
        invoice.get("created")
    )
    amount = int(invoice.get("amount_paid") or 0)
    return _receipt(f"receipt:invoice:{invoice['id']}", user, kind, what, amount, paid_at, links)


def _receipt(cause, user, kind, what, amount_cents, paid_at, links) -> int | None:
    email_id = queue(
        cause,
        kind="receipt",
        to=user.email,
        user_id=user.id,
        subject=f"Receipt: {what}, {format_cents(amount_cents)}",
        template="receipt",
        what=what,
        amount=format_cents(amount_cents),
        paid_on=_day(paid_at),
        extra_facts=[],
        links=links,
    )
    if email_id is not None:  # once per payment, however often its event comes
        metrics.PAYMENTS.labels(kind=kind, status="succeeded").inc()
    return email_id


def renewal_failed(subscription: Subscription, invoice: dict) -> int | None:
    """A renewal was declined: update the card in the billing portal before access ends."""
    tier = current_catalog().tier(subscription.tier)
    plan = tier.name if tier else subscription.tier
    started = _time(invoice.get("created")) or utcnow()
    next_attempt = _time(invoice.get("next_payment_attempt"))
    access_ends = started + RENEWAL_RETRY_WINDOW if next_attempt else started
    error = (invoice.get("last_finalization_error") or {}).get("message")
    user = subscription.user
    email_id = queue(
        f"payment_failed:invoice:{invoice['id']}",
        kind="payment_failed",
        to=user.email,
        user_id=user.id,
        subject=f"Action needed: your {plan} renewal did not go through",
        template="payment_failed",
        plan=plan,
        amount=format_cents(int(invoice.get("amount_due") or 0)),
        reason=error,
        next_attempt=_day(next_attempt) if next_attempt else None,
        access_ends=_day(access_ends),
        billing_url=link("account.subscription_card"),
        invoice_url=invoice.get("hosted_invoice_url"),
    )
    if email_id is not None:
        metrics.PAYMENTS.labels(kind="renewal", status="failed").inc()
    return email_id


def renewal_recovered(subscription: Subscription, invoice: dict) -> int | None:
    """A renewal that failed (and was told about) is paid after all."""
    if not already_queued(f"payment_failed:invoice:{invoice['id']}"):
        return None
    tier = current_catalog().tier(subscription.tier)
    user = subscription.user
    return queue(
        f"payment_recovered:invoice:{invoice['id']}",
        kind="payment_recovered",
        to=user.email,
        user_id=user.id,
        subject=f"Your {tier.name if tier else subscription.tier} plan is back in good standing",
        template="payment_recovered",
        plan=tier.name if tier else subscription.tier,
        amount=format_cents(int(invoice.get("amount_paid") or 0)),
        plan_url=link("account.subscription_card"),
    )


def trial_ending(subscription: Subscription, now: datetime) -> int | None:
    """customer.subscription.trial_will_end: three days' notice before the first charge."""
    if subscription.trial_end is None or subscription.trial_end <= now:
        return None
    tier = current_catalog().tier(subscription.tier)
    user = subscription.user
    days_left = max(1, round((subscription.trial_end - now) / timedelta(days=1)))
    return queue(
        f"trial_ending:subscription:{subscription.stripe_subscription_id}:"
        f"{int(subscription.trial_end.timestamp())}",
        kind="trial_ending",
        to=user.email,
        user_id=user.id,
        subject=f"Your {tier.name if tier else subscription.tier} trial ends in {days_left} days",
        template="trial_ending",
        plan=tier.name if tier else subscription.tier,
        trial_ends=_day(subscription.trial_end),
        days_left=days_left,
        price=format_cents(tier.price_cents) if tier else "the plan's price",
        plan_url=link("account.subscription_card"),
    )


# --- credits -------------------------------------------------------------------------


def credits_expiring(lot: CreditLot, user: User) -> int | None:
    """Credits of one lot expire within days: once per lot, unless turned off."""
    if not wants(user.id, "credits_expiring"):
        return None
    source = {"pack": "from a credit pack", "monthly": "this month's plan credits"}.get(
        lot.source, "granted to you"
    )
    return queue(
        f"expiring:lot:{lot.id}",
        kind="credits_expiring",
        to=user.email,
        user_id=user.id,
        subject=f"{formatting.credits(lot.credits_remaining)} expire on {_day(lot.expires_at)}",
        template="credits_expiring",
        credits=lot.credits_remaining,
        source=source,
        expires_on=_day(lot.expires_at),
        balance=user.balance,
        generate_url=link("generate.page"),
        preferences_url=link("account.dashboard") + "#email-preferences",
    )


def low_balance(user: User, top_up: CreditLot) -> int | None:
    """The balance fell under a tenth of the last top-up: once per top-up, unless turned off."""
    if not wants(user.id, "low_balance"):
        return None
    return queue(
        f"low_balance:lot:{top_up.id}",
        kind="low_balance",
        to=user.email,
        user_id=user.id,
        subject=f"You have {formatting.credits(user.balance)} left",
        template="low_balance",
        balance=user.balance,
        granted=top_up.credits_granted,
        pricing_url=link("pricing.index"),
        preferences_url=link("account.dashboard") + "#email-preferences",
    )


# --- refunds and disputes -------------------------------------------------------------


def refund_issued(order: Order, refund: Refund) -> int | None:
    """Money went back to the customer, with the credits that came with it."""
    user = order.user
    item = current_catalog().pack(order.item_id) if order.kind == "pack" else None
    what = item.name if item else f"order #{order.id}"
    return queue(
        f"refund:refund:{refund.id}",
        kind="refund_issued",
        to=user.email,
        user_id=user.id,
        subject=f"We refunded {format_cents(refund.amount_cents)} for {what}",
        template="refund_issued",
        amount=format_cents(refund.amount_cents),
        what=what,
        credits_clawed_back=refund.credits_clawed_back or 0,
        balance=user.balance,
        receipt_url=link("account.receipt", order_id=order.id),
    )


def dispute_opened(dispute: Dispute, order: Order | None) -> list[int]:
    """Tell every admin about a new dispute (the customer is not emailed)."""
    admins = db.session.execute(select(User).where(User.is_admin.is_(True))).scalars().all()
    customer = order.user.email if order is not None else "an unknown customer"
    ids = []
    for admin in admins:
        email_id = queue(
            f"dispute_opened:{dispute.stripe_dispute_id}:admin:{admin.id}",
            kind="dispute_opened",
            to=admin.email,
            user_id=admin.id,
            subject=f"Dispute opened: {format_cents(dispute.amount_cents)} from {customer}",
            template="dispute_opened",
            amount=format_cents(dispute.amount_cents),
            customer=customer,
            reason=(dispute.reason or "no reason given").replace("_", " "),
            dispute_id=dispute.stripe_dispute_id,
            order_label=f"#{order.id}" if order is not None else "not found",
            credits_clawed_back=dispute.credits_clawed_back if order is not None else None,
            due_by=_day(dispute.evidence_due_by) if dispute.evidence_due_by else None,
            disputes_url=link("admin.disputes"),
        )
        if email_id is not None:
            ids.append(email_id)
    return ids


# --- accounts (verification, password reset, sign-up) -----------------------------------


def account_notice(
    cause_key: str,
    *,
    kind: str,
    to: str,
    subject: str,
    paragraphs: list[str],
    action_label: str | None = None,
    action_url: str | None = None,
    user_id: int | None = None,
    send_after_commit: bool = True,
) -> int | None:
    """A message about the account itself (verify your address, reset your password, …)."""
    return queue(
        cause_key,
        kind=kind,
        to=to,
        user_id=user_id,
        subject=subject,
        template="account_notice",
        heading=subject,
        paragraphs=paragraphs,
        action_label=action_label,
        action_url=action_url,
        send_after_commit=send_after_commit,
    )


def _order_for_invoice(invoice_id: str) -> Order | None:
    column = getattr(Order, "stripe_invoice_id", None)  # the payment record, once it has one
    if column is None:
        return None
    return db.session.execute(select(Order).where(column == invoice_id)).scalar_one_or_none()


def _time(unix) -> datetime | None:
    return datetime.fromtimestamp(int(unix), UTC) if unix else None
