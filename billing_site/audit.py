"""The admins' audit log: who did what to which object, and when.

`record` adds its row to the caller's transaction and never commits, so an
admin action and its audit entry are committed together or not at all.
"""

from billing_site.extensions import db
from billing_site.models import AuditLog, User


def record(
    admin: User | int | None,
    action: str,
    target_type: str,
    target_id: object,
    details: dict | None = None,
) -> AuditLog:
    """Add an audit entry to the current transaction (flushed, so it has an id)."""
    admin_id = admin.id if isinstance(admin, User) else admin
    entry = AuditLog(
        admin_id=admin_id,
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        details=details or {},
    )
    db.session.add(entry)
    db.session.flush()
    return entry
