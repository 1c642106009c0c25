"""The local stand-in for Stripe, used in development when no key is set.

(Filled in by the buying work: same methods as stripe_gateway.StripeGateway.)
"""


class LocalGateway:
    is_local = True

    def __init__(self, config: dict):
        self.config = config
