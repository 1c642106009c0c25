"""Handlers for refunds events (see billing_site.webhook.registry)."""
