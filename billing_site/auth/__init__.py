from billing_site.auth.routes import bp

__all__ = ["bp"]
