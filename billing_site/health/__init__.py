from billing_site.health.routes import bp

__all__ = ["bp"]
