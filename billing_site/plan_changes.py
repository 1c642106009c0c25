"""Changing plan: upgrades now with a proration invoice, downgrades at the period end.

An upgrade (to a dearer tier) is previewed first: Stripe's invoices.create_preview
with the new Price and proration_behavior=always_invoice says what is due today.
The confirm form carries a one-time token kept in the session; it is the
idempotency key of the subscription update, and the subscription row is locked
while Stripe is asked, so confirming twice (two tabs, a double click, a retry)
updates Stripe once. After Stripe has taken the money the row's tier changes in
the same transaction, so the next page shows the new tier; the
customer.subscription.updated that follows says the same (the tier is read from
the Price, see subscriptions.tier_of_subscription). The allowance becomes the new
tier's less what this period already spent: the difference is added as a lot
keyed by the proration invoice (unlimited tiers need none).

A downgrade (to a cheaper tier) is a subscription schedule: this period on the
current Price, the next ones on the new Price, then released. Nothing is
refunded and the tier stays until the renewal switches the Price. The row keeps
the scheduled change so the account page can say "Changes to Basic on 1 Feb"
and offer to keep the current plan (which releases the schedule).
"""

import logging
import secrets
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from flask import session
from sqlalchemy import select

from billing_site import credits, stripe_catalog
from billing_site.account.services import current_subscription
from billing_site.catalog import Tier, current_catalog
from billing_site.extensions import db
from billing_site.models import Subscription, User
from billing_site.stripe_gateway import GatewayError, current_gateway, stripe_id

log = logging.getLogger(__name__)

SESSION_KEY = "plan_change"
# A preview's amount is good for this long; the confirm then uses the same
# proration date, so what is charged is what was shown.
PREVIEW_LIFETIME_SECONDS = 15 * 60


class PlanChangeError(Exception):
    """The change cannot be made; `message` is safe to show, `status` fits an answer."""

    def __init__(self, message: str, status: int = 409):
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class PlanChoice:
    """One tier as the customer's plan switcher shows it."""

    tier: Tier
    label: str  # "Current plan", "Upgrade", "Switch", "Subscribe"

    @property
    def action(self) -> str:
        return {"Current plan": "current", "Upgrade": "upgrade", "Switch": "downgrade"}.get(
            self.label, "subscribe"
        )


@dataclass(frozen=True)
class Plans:
    """What the plan switcher shows: each paid tier, and any downgrade waiting."""

    subscription: Subscription | None
    choices: list[PlanChoice]
    scheduled_tier: Tier | None
    scheduled_at: datetime | None


@dataclass(frozen=True)
class UpgradePreview:
    tier: Tier
    amount_due: int
    currency: str
    token: str
    next_renewal: datetime | None


# --- what the pages show -----------------------------------------------------------------


def label_for(tier: Tier, current: Tier | None) -> str:
    """ "Current plan", "Upgrade" (dearer), "Switch" (cheaper), or "Subscribe" (no plan yet)."""
    if current is None:
        return "Current plan" if tier.is_free else "Subscribe"
    if tier.id == current.id:
        return "Current plan"
    return "Upgrade" if tier.price_cents > current.price_cents else "Switch"


def plans(user: User) -> Plans:
    """The customer's plan and what each other tier would be to them."""
    catalog = current_catalog()
    subscription = current_subscription(user)
    current = catalog.tier(subscription.tier) if subscription else None
    choices = [PlanChoice(tier, label_for(tier, current)) for tier in catalog.tiers]
    scheduled = _scheduled(subscription)
    return Plans(
        subscription=subscription,
        choices=choices,
        scheduled_tier=catalog.tier(scheduled.scheduled_tier) if scheduled else None,
        scheduled_at=scheduled.scheduled_change_at if scheduled else None,
    )


def pricing_labels(user: User) -> dict[str, str]:
    """Tier id → its button's words on /pricing for this customer."""
    return {choice.tier.id: choice.label for choice in plans(user).choices}


def _scheduled(subscription: Subscription | None) -> Subscription | None:
    # Once the renewal has switched the tier the schedule has done its work.
    if subscription is None or not subscription.scheduled_tier:
        return None
    if subscription.scheduled_tier == subscription.tier:
        return None
    return subscription


# --- upgrade -------------------------------------------------------------------------------


def preview_upgrade(user: User, tier_id: str) -> UpgradePreview:
    """What moving to `tier_id` now costs today (Stripe's preview); remembers a one-time token."""
    subscription = _live_or_error(user)
    tier = _target(subscription, tier_id, "upgrade")
    stripe_subscription = _retrieve(subscription)
    proration_date = int(time.time())
    try:
        preview = current_gateway().preview_invoice(
            {
                "customer": stripe_subscription["customer"],
                "subscription": subscription.stripe_subscription_id,
                "subscription_details": {
                    "items": [_item_change(stripe_subscription, tier)],
                    "proration_behavior": "always_invoice",
                    "proration_date": proration_date,
                },
            }
        )
    except GatewayError as error:
        raise PlanChangeError(error.message, status=502) from error
    token = secrets.token_urlsafe(24)
    session[SESSION_KEY] = {
        "token": token,
        "tier": tier.id,
        "subscription": subscription.stripe_subscription_id,
        "proration_date": proration_date,
    }
    return UpgradePreview(
        tier=tier,
        amount_due=int(preview["amount_due"]),
        currency=preview["currency"],
        token=token,
        next_renewal=subscription.current_period_end,
    )


def confirm_upgrade(user: User, tier_id: str, token: str) -> Tier:
    """Move the subscription to `tier_id` now, charging the proration; once per token."""
    pending = session.get(SESSION_KEY) or {}
    subscription = _live_or_error(user, lock=True)
    tier = current_catalog().tier(tier_id)
    if tier is not None and subscription.tier == tier.id:
        session.pop(SESSION_KEY, None)
        return tier  # the same confirm, again: already done
    if not _token_matches(pending, token, tier_id, subscription):
        raise PlanChangeError("This preview has expired. Please check the new price again.")
    tier = _target(subscription, tier_id, "upgrade")
    stripe_subscription = _retrieve(subscription)
    if subscription.stripe_schedule_id:
        _release_schedule(subscription)
    try:
        updated = current_gateway().update_subscription(
            subscription.stripe_subscription_id,
            {
                "items": [_item_change(stripe_subscription, tier)],
                "proration_behavior": "always_invoice",
                "proration_date": pending["proration_date"],
                # A declined card leaves the subscription as it was, not half-changed.
                "payment_behavior": "error_if_incomplete",
                "metadata": {"tier": tier.id},
            },
            idempotency_key=f"plan-upgrade-{subscription.stripe_subscription_id}-{token}",
        )
    except GatewayError as error:
        db.session.rollback()
        log.warning(
            "plan upgrade failed id=%s error=%s", subscription.stripe_subscription_id, error.message
        )
        raise PlanChangeError(
            error.message, status=402 if error.code == "card_declined" else 502
        ) from error
    _top_up_allowance(subscription, tier, stripe_id(updated.get("latest_invoice")))
    subscription.tier = tier.id
    _clear_schedule(subscription)
    db.session.commit()
    session.pop(SESSION_KEY, None)
    log.info("plan upgraded id=%s tier=%s", subscription.stripe_subscription_id, tier.id)
    return tier


def _top_up_allowance(subscription: Subscription, tier: Tier, invoice_id: str | None) -> None:
    """The new tier's allowance minus what this period already spent: add the difference.

    The lot is keyed by the proration invoice, as invoice.paid's grant would be,
    so that grant then finds it and adds nothing. Unlimited tiers need no credits.
    """
    old = current_catalog().tier(subscription.tier)
    if old is None or tier.is_unlimited or old.is_unlimited or not invoice_id:
        return
    extra = tier.credits_per_month - old.credits_per_month
    if extra <= 0 or subscription.current_period_end is None:
        return
    credits.grant(
        subscription.user_id,
        extra,
        source="monthly",
        source_ref=invoice_id,
        expires_at=subscription.current_period_end,
        note=f"{tier.name} plan, the rest of this period's monthly credits",
    )


def _token_matches(pending: dict, token: str, tier_id: str, subscription: Subscription) -> bool:
    fresh = time.time() - int(pending.get("proration_date") or 0) < PREVIEW_LIFETIME_SECONDS
    return (
        bool(token)
        and secrets.compare_digest(str(pending.get("token") or ""), token)
        and pending.get("tier") == tier_id
        and pending.get("subscription") == subscription.stripe_subscription_id
        and fresh
    )


# --- downgrade ------------------------------------------------------------------------------


def schedule_downgrade(user: User, tier_id: str) -> Subscription:
    """Switch to the cheaper `tier_id` at the period end (a subscription schedule)."""
    subscription = _live_or_error(user, lock=True)
    tier = _target(subscription, tier_id, "downgrade")
    if subscription.scheduled_tier == tier.id and subscription.stripe_schedule_id:
        return subscription  # pressed twice
    stripe_subscription = _retrieve(subscription)
    item = stripe_subscription["items"]["data"][0]
    gateway = current_gateway()
    key = f"plan-downgrade-{subscription.stripe_subscription_id}-{uuid.uuid4().hex}"
    try:
        schedule_id = stripe_subscription.get("schedule") or subscription.stripe_schedule_id
        if not schedule_id:
            schedule_id = gateway.create_subscription_schedule(
                {"from_subscription": subscription.stripe_subscription_id},
                idempotency_key=f"{key}-create",
            )["id"]
        gateway.update_subscription_schedule(
            schedule_id, _downgrade_phases(item, tier), idempotency_key=f"{key}-phases"
        )
    except GatewayError as error:
        db.session.rollback()
        raise PlanChangeError(error.message, status=502) from error
    subscription.stripe_schedule_id = schedule_id
    subscription.scheduled_tier = tier.id
    subscription.scheduled_change_at = _time(item["current_period_end"])
    db.session.commit()
    log.info("plan downgrade scheduled id=%s tier=%s", subscription.stripe_subscription_id, tier.id)
    return subscription


def cancel_downgrade(user: User) -> Subscription:
    """Keep the current plan: release the schedule so the subscription renews as it is."""
    subscription = _live_or_error(user, lock=True)
    if subscription.stripe_schedule_id:
        _release_schedule(subscription)
    _clear_schedule(subscription)
    db.session.commit()
    return subscription


def _downgrade_phases(item: dict, tier: Tier) -> dict:
    return {
        "end_behavior": "release",
        "proration_behavior": "none",
        "phases": [
            {
                "items": [{"price": item["price"]["id"], "quantity": 1}],
                "start_date": item["current_period_start"],
                "end_date": item["current_period_end"],
            },
            {
                "items": [{"price": _price_id(tier), "quantity": 1}],
                "metadata": {"tier": tier.id},
            },
        ],
    }


def _release_schedule(subscription: Subscription) -> None:
    try:
        current_gateway().release_subscription_schedule(
            subscription.stripe_schedule_id,
            idempotency_key=f"plan-release-{subscription.stripe_schedule_id}",
        )
    except GatewayError as error:
        # Already released (by the renewal, the portal or the dashboard) is what we wanted.
        if error.code != "invalid_state":
            db.session.rollback()
            raise PlanChangeError(error.message, status=502) from error


def _clear_schedule(subscription: Subscription) -> None:
    subscription.stripe_schedule_id = None
    subscription.scheduled_tier = None
    subscription.scheduled_change_at = None


# --- shared ---------------------------------------------------------------------------------


def _live_or_error(user: User, *, lock: bool = False) -> Subscription:
    subscription = current_subscription(user)
    if subscription is None:
        raise PlanChangeError("You have no subscription to change. Choose a plan first.")
    if lock:
        subscription = db.session.execute(
            select(Subscription)
            .where(Subscription.id == subscription.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).scalar_one()
    if subscription.cancel_at_period_end:
        raise PlanChangeError("Your plan is set to cancel. Keep your plan first, then change it.")
    return subscription


def _target(subscription: Subscription, tier_id: str, direction: str) -> Tier:
    catalog = current_catalog()
    tier, current = catalog.tier(tier_id), catalog.tier(subscription.tier)
    if tier is None or tier.is_free:
        raise PlanChangeError("There is no such plan.", status=404)
    if current is not None and label_for(tier, current) != (
        "Upgrade" if direction == "upgrade" else "Switch"
    ):
        raise PlanChangeError(f"You cannot {direction} to {tier.name} from {current.name}.")
    return tier


def _retrieve(subscription: Subscription) -> dict:
    try:
        return current_gateway().retrieve_subscription(subscription.stripe_subscription_id)
    except GatewayError as error:
        raise PlanChangeError(error.message, status=502) from error


def _item_change(stripe_subscription: dict, tier: Tier) -> dict:
    item = stripe_subscription["items"]["data"][0]
    return {"id": item["id"], "price": _price_id(tier)}


def _price_id(tier: Tier) -> str:
    price_id = stripe_catalog.checkout_price_id("tier", tier.id)
    if not price_id:
        raise PlanChangeError(
            "Plan changes are not available right now. Please try again later.", status=503
        )
    return price_id


def _time(unix: int | None) -> datetime | None:
    return datetime.fromtimestamp(int(unix), UTC) if unix else None
