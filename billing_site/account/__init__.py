from billing_site.account.routes import bp

__all__ = ["bp"]
