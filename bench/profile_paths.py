"""In-process CPU per request of the hot paths, beside the webhook floor, in one process.

    .venv/bin/python -m bench.profile_paths [--requests N] [--profile PATH] [--repeat R]

Starts a throwaway PostgreSQL and Redis (tests/servers.py), migrates, seeds the
same customers as `make bench` (bench/seed.py), and drives each path through
Flask's test client, so no HTTP server or wrk is involved and one run takes
seconds. For each path it reports this process's CPU (time.process_time) per
request, PostgreSQL's CPU per request (/proc), the SQL statements and
transactions (COMMIT/ROLLBACK) per request, and the multiple of the floor's app
CPU: the floor is bench/floor_app.py's webhook (verify a Stripe signature, insert
one row) called the same way. Paths:

    floor            POST /webhook on bench.floor_app (verify + one INSERT)
    account10        GET /account, a customer with 10 ledger entries
    account100k      GET /account, a customer with 100,000 ledger entries
    generate         POST /api/v1/generations, the built-in generator
    webhook          POST /stripe/webhook storing a new paid-checkout event (verify + insert)
    worker           the worker applying one stored checkout.session.completed (a pack
                     order paid), claimed and committed as `flask worker` does under a
                     backlog (WORKER_BATCH_SIZE at a time); the events are stored
                     through POST /stripe/webhook beforehand, unmeasured

`--profile PATH` runs that path once more under cProfile and prints the top
functions. Absolute times move with the machine's load (it is shared): compare
the multiples within one run, and repeat (`--repeat`) to see the spread.
"""

import argparse
import cProfile
import json
import os
import pstats
import re
import sys
import time
from dataclasses import dataclass

from sqlalchemy import event

from bench import seed
from bench.stack import postgres_cpu_seconds, postmaster_pid
from tests import servers

WEBHOOK_SECRET = "whsec_profile_secret"
CSRF_META = re.compile(r'name="csrf-token" content="([^"]+)"')
PATHS = ("floor", "webhook", "account10", "account100k", "generate", "worker")
TARGETS = {
    "account10": 6.0,
    "generate": 5.0,
    "worker": 3.0,
}  # multiples of the floor; account100k: 1.2x of 10


@dataclass
class Measurement:
    path: str
    app_ms: float
    postgres_ms: float
    statements: float
    transactions: float


class StatementCounter:
    """SQL statements, COMMITs and ROLLBACKs an engine sent, counted by engine events."""

    def __init__(self, engine):
        self.statements = self.commits = self.rollbacks = 0
        self.echo = False
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)
        event.listen(engine, "rollback", self._rollback)

    def _statement(self, connection, cursor, statement, *args):
        self.statements += 1
        if self.echo:
            print("   ", " ".join(statement.split())[:160])

    def _commit(self, *args):
        self.commits += 1
        if self.echo:
            print("    COMMIT")

    def _rollback(self, *args):
        self.rollbacks += 1
        if self.echo:
            print("    ROLLBACK")

    def snapshot(self) -> tuple[int, int, int]:
        return self.statements, self.commits, self.rollbacks


def main() -> int:
    options = parse_arguments()
    postgres, redis_server = servers.start_postgres(), servers.start_redis()
    try:
        os.environ.update(environment(postgres.url, redis_server.url))
        postmaster = postmaster_pid(postgres.directory / "data")
        paths = Paths(postgres.url, postmaster)
        for number in range(options.repeat):
            results = [paths.measure(path, options.requests) for path in options.paths]
            print(f"\nrun {number + 1} of {options.repeat} ({options.requests} requests each)")
            print(table(results, paths.counter_for))
        for path in options.sql or ():
            paths.show_statements(path)
        if options.profile:
            paths.profile(options.profile, options.requests, options.top)
    finally:
        postgres.stop()
        redis_server.stop()
    return 0


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS))
    parser.add_argument("--profile", choices=PATHS[1:])
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument(
        "--sql", nargs="+", choices=PATHS, help="print the statements one request sends"
    )
    return parser.parse_args()


def environment(database_url: str, storage_url: str) -> dict:
    return {
        "APP_ENV": "bench",
        "DATABASE_URL": database_url,
        "FLOOR_DATABASE_URL": database_url,
        "RATELIMIT_STORAGE_URI": storage_url,
        "SECRET_KEY": "profile-secret-key-not-for-production",
        "STRIPE_SECRET_KEY": "",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "LOGIN_RATE_LIMIT": "1000000 per minute",
        "LOG_LEVEL": "WARNING",
    }


class Paths:
    """The site and the floor, seeded, logged in, ready to be driven."""

    def __init__(self, database_url: str, postmaster: int):
        import flask_migrate

        from bench.run import create_floor_table
        from billing_site import create_app
        from billing_site.extensions import db

        self.postmaster = postmaster
        self.app = create_app()
        with self.app.app_context():
            flask_migrate.upgrade()
            self.history = {
                entries: self._customer_with_history(entries) for entries in (10, 100_000)
            }
            self.spender = seed.create_customer(
                "spender@profile.example", 10_000_000, note="profile"
            )
            self.counter = StatementCounter(db.engine)
            db.session.remove()
        create_floor_table(database_url)
        from bench import floor_app

        self.floor_counter = StatementCounter(floor_app.engine)
        self.floor_client = floor_app.app.test_client()
        self.clients = {
            "account10": self._logged_in(self.history[10].email),
            "account100k": self._logged_in(self.history[100_000].email),
            "generate": self._logged_in(self.spender.email),
        }
        self.generation_number = 0
        self.site_client = self.app.test_client()
        self.unsent_events: list[str] = []
        self.worker_batch_left = 0

    def prepare(self, path: str, count: int) -> None:
        """Seed what `count` requests of `path` will use up, before they are measured."""
        if path == "worker":
            self.store_events(count)
        elif path == "webhook":
            with self.app.app_context():
                orders = seed.create_pending_orders(count, batch=f"hook{time.monotonic_ns()}x")
            self.unsent_events += [seed.checkout_completed_event(order) for order in orders]

    def store_events(self, count: int) -> None:
        """Store `count` paid-checkout events through the webhook, for "worker" to apply."""
        with self.app.app_context():
            orders = seed.create_pending_orders(count, batch=f"profile{time.monotonic_ns()}x")
        for order in orders:
            payload = seed.checkout_completed_event(order)
            answer = self.site_client.post(
                "/stripe/webhook",
                data=payload,
                headers=seed.signed_headers(payload, WEBHOOK_SECRET),
            )
            assert answer.status_code == 200, answer.status_code

    def counter_for(self, path: str) -> StatementCounter:
        return self.floor_counter if path == "floor" else self.counter

    @staticmethod
    def _customer_with_history(entries: int):
        customer = seed.create_customer(
            f"history{entries}@profile.example", entries * 2, note="profile history"
        )
        seed.add_history(customer, entries)
        return customer

    def _logged_in(self, email: str):
        client = self.app.test_client()
        page = client.get("/auth/login").get_data(as_text=True)
        token = CSRF_META.search(page).group(1)
        answer = client.post(
            "/auth/login",
            data={"email": email, "password": seed.BENCH_PASSWORD, "csrf_token": token},
        )
        assert answer.status_code in (302, 303), answer.status_code
        token = CSRF_META.search(client.get("/pricing").get_data(as_text=True)).group(1)
        client.csrf_token = token
        return client

    def request(self, path: str) -> None:
        """One request on `path`; fails loudly if the answer is not the expected one."""
        if path == "floor":
            self.generation_number += 1
            payload = json.dumps({"id": f"evt_profile_{self.generation_number}"})
            answer = self.floor_client.post(
                "/webhook", data=payload, headers=seed.signed_headers(payload, WEBHOOK_SECRET)
            )
            expected = 200
        elif path == "generate":
            self.generation_number += 1
            body = {"prompt": f"a lighthouse at dusk, take {self.generation_number}"}
            answer = self.clients[path].post(
                "/api/v1/generations",
                json={**body, "model": "standard"},
                headers={"X-CSRFToken": self.clients[path].csrf_token},
            )
            expected = 201
        elif path == "webhook":
            payload = self.unsent_events.pop()
            answer = self.site_client.post(
                "/stripe/webhook",
                data=payload,
                headers=seed.signed_headers(payload, WEBHOOK_SECRET),
            )
            expected = 200
        elif path == "worker":
            # One request is one event; as `flask worker` does under a backlog,
            # the events are claimed and committed WORKER_BATCH_SIZE at a time.
            if not self.worker_batch_left:
                from billing_site.worker import queue

                with self.app.app_context():
                    applied = queue.apply_next(limit=queue.batch_size())
                if not applied or not all(result.ok for result in applied):
                    raise RuntimeError(f"worker: {applied}")
                self.worker_batch_left = len(applied)
            self.worker_batch_left -= 1
            return
        else:
            answer = self.clients[path].get("/account")
            expected = 200
        if answer.status_code != expected:
            raise RuntimeError(f"{path}: {answer.status_code} {answer.get_data(as_text=True)}")

    def measure(self, path: str, requests: int) -> Measurement:
        self.prepare(path, max(10, requests // 10) + requests)
        for _ in range(max(10, requests // 10)):  # warm-up: caches, prepared statements
            self.request(path)
        counter = self.counter_for(path)
        statements, commits, rollbacks = counter.snapshot()
        cpu, postgres = time.process_time(), postgres_cpu_seconds(self.postmaster)
        for _ in range(requests):
            self.request(path)
        app_ms = (time.process_time() - cpu) * 1000 / requests
        postgres_ms = (postgres_cpu_seconds(self.postmaster) - postgres) * 1000 / requests
        after = counter.snapshot()
        return Measurement(
            path,
            app_ms,
            postgres_ms,
            (after[0] - statements) / requests,
            (after[1] - commits + after[2] - rollbacks) / requests,
        )

    def show_statements(self, path: str) -> None:
        counter = self.counter_for(path)
        print(f"\nthe statements of one {path} request:")
        self.prepare(path, 1)
        counter.echo = True
        try:
            self.request(path)
        finally:
            counter.echo = False

    def profile(self, path: str, requests: int, top: int) -> None:
        # CPU time, not wall time: waiting for PostgreSQL is not this process's cost.
        self.prepare(path, requests)
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        for _ in range(requests):
            self.request(path)
        profiler.disable()
        print(f"\ncProfile of {requests} x {path}, by own time then cumulative:")
        stats = pstats.Stats(profiler, stream=sys.stdout).strip_dirs()
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        print("\nthe site's own functions, cumulative:")
        pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(
            "billing_site", top
        )


def table(results: list[Measurement], counter_for) -> str:
    by_path = {result.path: result for result in results}
    floor = by_path.get("floor")
    lines = [
        "| path | app ms | PostgreSQL ms | statements | transactions | x floor app | target |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for result in results:
        multiple = f"{result.app_ms / floor.app_ms:.1f}x" if floor and floor.app_ms else ""
        target = f"<= {TARGETS[result.path]:.0f}x" if result.path in TARGETS else ""
        if result.path == "account100k" and "account10" in by_path:
            ratio = result.app_ms / by_path["account10"].app_ms
            target = f"<= 1.2x of account10 (now {ratio:.2f}x)"
        lines.append(
            f"| {result.path} | {result.app_ms:.2f} | {result.postgres_ms:.2f} "
            f"| {result.statements:.1f} | {result.transactions:.1f} | {multiple} | {target} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
