"""Handlers for checkout events (see billing_site.webhook.registry)."""
