"""Stripe's webhook: the inbox (routes, services), the handlers and their registry.

Unlike the other blueprints' packages this one does not import its routes: the
ledger's neighbours (fulfilment, the worker) import the registry and services
from here, and the routes import the handlers, which import those neighbours.
The app registers billing_site.webhook.routes.bp itself.
"""
