from billing_site.dev.routes import bp

__all__ = ["bp"]
