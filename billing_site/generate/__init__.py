from billing_site.generate.routes import bp

__all__ = ["bp"]
