"""The billing portal's sessions."""

import copy

from billing_site.local_stripe.state import _new_id, _now


class PortalMixin:
    """Billing portal sessions; the page itself is billing_site/dev."""

    def create_portal_session(self, *, customer_id: str, return_url: str) -> dict:
        with self._state() as state:
            portal_id = _new_id("bps")
            portal = {
                "id": portal_id,
                "object": "billing_portal.session",
                "configuration": "bpc_local",
                "created": _now(),
                "customer": customer_id,
                "flow": None,
                "livemode": False,
                "locale": None,
                "on_behalf_of": None,
                "return_url": return_url,
                "url": f"{self._site()}/dev/portal?customer={customer_id}&session={portal_id}",
            }
            self._store(state, "portal_sessions", portal)
            return copy.deepcopy(portal)

    def retrieve_portal_session(self, portal_id: str) -> dict:
        with self._state() as state:
            return copy.deepcopy(self._get(state, "portal_sessions", portal_id))
