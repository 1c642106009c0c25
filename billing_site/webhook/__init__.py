from billing_site.webhook.routes import bp

__all__ = ["bp"]
