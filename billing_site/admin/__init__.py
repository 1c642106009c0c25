from billing_site.admin.routes import bp

__all__ = ["bp"]
