"""Handlers for subscriptions events (see billing_site.webhook.registry)."""
