from billing_site.pricing.routes import bp

__all__ = ["bp"]
