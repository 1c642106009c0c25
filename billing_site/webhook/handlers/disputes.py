"""Handlers for disputes events (see billing_site.webhook.registry)."""
