"""Handlers for payments events (see billing_site.webhook.registry)."""
