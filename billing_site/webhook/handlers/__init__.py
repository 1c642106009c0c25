"""Importing this package registers every handler in the registry."""

from billing_site.webhook.handlers import checkout, disputes, payments, refunds, subscriptions

__all__ = ["checkout", "disputes", "payments", "refunds", "subscriptions"]
