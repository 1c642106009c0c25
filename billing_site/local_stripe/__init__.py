"""The local stand-in for Stripe, used in development when no key is set.

LocalGateway has StripeGateway's methods and returns Stripe-shaped dicts (API
version 2026-07-29.dahlia: a subscription's period lives on items.data[0]; an invoice
names its subscription at parent.subscription_details.subscription). Its state
(customers, Checkout Sessions, subscriptions, invoices, payment intents,
charges, refunds, events) is a JSON file under instance/ (LOCAL_STRIPE_STATE_FILE),
read and written under a thread lock and an OS file lock, so several web
processes can share it.

Whatever Stripe would announce by webhook, this announces the same way: each
event is recorded (so list_events and `reconcile` see it) and posted, signed
with the first STRIPE_WEBHOOK_SECRET, to the site's own /stripe/webhook, through
the very verification and handlers production uses.

When events are delivered: inside a request, after the view has returned (an
after_this_request hook), so the view's own transaction is committed and a
handler never waits on a row the view still holds locked; outside a request
(a CLI command, a test) at once, so the caller must commit first. Delivery runs
in a fresh thread, hence in its own app context and database session. The
webhook only stores events; the delivery then drains the inbox in-process
through the worker's own step, so "Pay" shows the credits at once and tests
stay deterministic. "Fail the next delivery" (the portal's control) makes the
next delivered event's first attempt fail, so retries and replay can be seen
offline.

The package is split by resource: state (the file, locks, ids, recorded
events), catalog (products and prices), checkout (customers, sessions,
payment intents, charges), promotions (TEST50, FREE100), subscriptions
(subscriptions and their invoices), plans (previews, price changes,
schedules), refunds and disputes, portal, and delivery (posting events to
the webhook). LocalGateway puts them together.

It never runs in production (see build_gateway and the check below).
"""

from pathlib import Path

from billing_site.config import INSTANCE_DIR, ConfigError
from billing_site.local_stripe.catalog import CatalogMixin
from billing_site.local_stripe.checkout import CheckoutMixin
from billing_site.local_stripe.delivery import DeliveryMixin
from billing_site.local_stripe.plans import PlansMixin
from billing_site.local_stripe.portal import PortalMixin
from billing_site.local_stripe.promotions import PromotionsMixin
from billing_site.local_stripe.refunds import RefundsMixin
from billing_site.local_stripe.state import API_VERSION, StateMixin, add_month
from billing_site.local_stripe.subscriptions import SubscriptionsMixin

__all__ = ["API_VERSION", "LocalGateway", "add_month"]


class LocalGateway(
    CatalogMixin,
    CheckoutMixin,
    PromotionsMixin,
    SubscriptionsMixin,
    PlansMixin,
    RefundsMixin,
    PortalMixin,
    DeliveryMixin,
    StateMixin,
):
    """Stripe's API, played locally; see the module docstring."""

    is_local = True

    def __init__(self, config: dict):
        if config.get("APP_ENV") == "production":
            raise ConfigError("The local Stripe stand-in never runs in production.")
        self.config = config
        self.state_file = Path(
            config.get("LOCAL_STRIPE_STATE_FILE") or INSTANCE_DIR / "local_stripe.json"
        )
