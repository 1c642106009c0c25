from billing_site.checkout.routes import bp

__all__ = ["bp"]
