"""Telling people: emails queued with their cause and sent after it commits.

- outbox: the queue/outbox table, sending, retries (send_due_emails);
- messages: one function per message;
- events: after_event(event), the follow-ups of a Stripe event;
- hooks: one-line hooks for refunds, disputes and spends;
- scans: the daily expiring-credits scan;
- preferences / dev_routes: the account's opt-out form and /dev/mail.
"""

from billing_site.notifications.events import after_event
from billing_site.notifications.outbox import send_due_emails

__all__ = ["after_event", "send_due_emails"]
