"""The stand-in's state: one JSON file, locked, plus ids, clocks and recorded events."""

import calendar
import copy
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from billing_site.stripe_gateway import STRIPE_API_VERSION, GatewayError

API_VERSION = STRIPE_API_VERSION  # the version the site pins (stripe_gateway)
SESSION_LIFETIME_SECONDS = 24 * 60 * 60
DECLINE_MESSAGE = "Your card was declined."
COLLECTIONS = (
    "customers",
    "checkout_sessions",
    "session_extras",
    "subscriptions",
    "invoices",
    "payment_intents",
    "charges",
    "refunds",
    "portal_sessions",
    "products",
    "prices",
    "disputes",
    "subscription_schedules",
    "idempotency",
)

# One lock per state file for the threads of this process; fcntl covers the others.
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(str(path), threading.Lock())


def _now() -> int:
    return int(time.time())


def _new_id(prefix: str) -> str:
    return f"{prefix}_local{secrets.token_hex(12)}"


def add_month(timestamp: int) -> int:
    """The same moment one calendar month later (31 Jan → 28/29 Feb)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    year, month = moment.year + moment.month // 12, moment.month % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def _missing(kind: str, object_id: str) -> GatewayError:
    return GatewayError(f"No such {kind}: '{object_id}'", code="resource_missing")


def _strings(metadata: dict | None) -> dict:
    """Stripe stores metadata values as strings."""
    return {str(key): str(value) for key, value in (metadata or {}).items()}


class StateMixin:
    """Reading and writing the state file, and recording events in it."""

    state_file: Path
    config: dict

    def list_events(self, *, created_since: int) -> Iterator[dict]:
        """Every recorded event created at or after `created_since`, oldest first."""
        with self._state() as state:
            events = [e for e in state["events"] if e["created"] >= created_since]
        return iter(copy.deepcopy(events))

    # --- events --------------------------------------------------------------------

    def _event(self, state: dict, event_type: str, obj: dict, previous: dict | None = None) -> dict:
        """Record an event about `obj` as it is now (a snapshot, as Stripe sends)."""
        data = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": _now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        state["events"].append(event)
        return event

    # --- state ---------------------------------------------------------------------

    def _site(self) -> str:
        return self.config["SITE_URL"].rstrip("/")

    @contextmanager
    def _state(self):
        """The whole state, locked for this thread and process; saved if no error."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.state_file.with_name(self.state_file.name + ".lock")
        with _thread_lock(self.state_file), open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                state = self._read()
                yield state
                self._write(state)
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _read(self) -> dict:
        state = {}
        if self.state_file.exists() and self.state_file.stat().st_size:
            state = json.loads(self.state_file.read_text())
        for name in COLLECTIONS:
            state.setdefault(name, {})
        state.setdefault("events", [])
        return state

    def _write(self, state: dict) -> None:
        # Write then rename: a reader in another process never sees half a file.
        temporary = self.state_file.with_name(
            f"{self.state_file.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        )
        temporary.write_text(json.dumps(state, indent=1))
        os.replace(temporary, self.state_file)

    @staticmethod
    def _get(state: dict, collection: str, object_id: str) -> dict:
        found = state[collection].get(object_id or "")
        if found is None:
            raise _missing(collection[:-1].replace("_", " "), object_id)
        return found

    @staticmethod
    def _store(state: dict, collection: str, obj: dict, idempotency_key: str | None = None):
        state[collection][obj["id"]] = obj
        if idempotency_key:
            state["idempotency"][idempotency_key] = [collection, obj["id"]]

    @staticmethod
    def _replay(state: dict, idempotency_key: str) -> dict | None:
        """What a request with this idempotency key made the first time, if any."""
        stored = state["idempotency"].get(idempotency_key)
        if stored is None:
            return None
        collection, object_id = stored
        return copy.deepcopy(state[collection][object_id])
