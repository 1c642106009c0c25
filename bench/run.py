"""`make bench`: the site under load beside its floors, written to bench/RESULTS.md.

Starts a throwaway PostgreSQL and Redis (tests/servers.py), migrates the schema,
seeds customers, orders and histories, then serves first the floors
(bench/floor_app.py) and then the site (wsgi:app) with the same gunicorn
command, and drives each with wrk (bench/replay.lua). Afterwards it checks the
books: every webhook-paid order granted exactly once, no customer overspent. A
fault run then posts a second batch while a worker is SIGKILLed every few
seconds, and checks that batch's books the same way.

Exit status: 0 when the run completed and the books are straight (targets missed
are reported in RESULTS.md, not failed on), 1 when a correctness check failed,
2 when a tool is missing. Knobs (environment): BENCH_WORKERS (4),
BENCH_WORKER_CLASS (sync), BENCH_THREADS (gthread only, 4), BENCH_SECONDS (10),
BENCH_EVENTS (10000), BENCH_FAULT_EVENTS (3000; 0 skips the fault run),
BENCH_KILL_SECONDS (2), BENCH_PAUSED_EVENTS (5000; 0 skips the webhook-alone run),
BENCH_SITE_REPEATS (3).

The webhook floor is the yardstick of most targets, and one measurement of it on
these VMs moves by up to 60% from one minute to the next; so it is measured three
times, bracketing the site's runs, and the median run is the yardstick (by app
CPU for the multiples, by throughput for the webhook's share).
"""

import os
import random
import re
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from bench import load, report, seed, workers
from bench.stack import (
    PROJECT_ROOT,
    Gunicorn,
    machine_description,
    postgres_cpu_seconds,
    postmaster_pid,
    tool_version,
)
from tests import servers

WORKERS = int(os.environ.get("BENCH_WORKERS", "4"))
WORKER_CLASS = os.environ.get("BENCH_WORKER_CLASS", "sync")
THREADS = int(os.environ.get("BENCH_THREADS", "4"))
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
WARMUP_SECONDS = 2
INGEST_EVENTS = int(os.environ.get("BENCH_EVENTS", "10000"))
FAULT_EVENTS = int(os.environ.get("BENCH_FAULT_EVENTS", "3000"))
# A batch posted while the workers are paused: the webhook alone beside its floor,
# since on a small machine the workers applying events share its CPUs.
PAUSED_EVENTS = int(os.environ.get("BENCH_PAUSED_EVENTS", "5000"))
KILL_SECONDS = float(os.environ.get("BENCH_KILL_SECONDS", "2"))
# The site's own runs judged by a CPU multiple are repeated too, for the same reason
# as the floor's: the median of three, not one measurement.
SITE_REPEATS = int(os.environ.get("BENCH_SITE_REPEATS", "3"))
APPLIERS = 2  # `flask worker` processes
REPEATED_SHARE = 0.2
HISTORY_ENTRIES = (10, 100_000)
GENERATION_CUSTOMERS = {"rich": (6, 5_000), "poor": (6, 15)}  # count, starting credits
PARALLEL_PER_CUSTOMER = 4
CONNECTIONS = {"page": 16, "webhook": 8, "generation": 32}
WEBHOOK_SECRET = "whsec_bench_secret"
HOST = "127.0.0.1"

TARGETS = {
    "webhook_share_of_floor": 0.70,
    "webhook_p99_ms": 50.0,
    "pricing_share_of_floor": 0.70,
    "history_slowdown": 1.5,
}

# The hot paths' app CPU per request as multiples of the webhook floor's, measured
# in the same run (issue 15, item 6): (path, target, multiple before the work, from
# the 2026-11-21 run: 12.05, 11.79 and 10.44 ms against a floor of 0.69 ms; the
# worker's before is that run's in-request cost of applying a new event, 7.8x).
# The worker is judged where it runs alone, as the floor does: applying the batch
# stored while it was paused. Its cost beside the webhook's burst is shown too.
CPU_MULTIPLE_TARGETS = {
    "account10": ("GET /account, customer with 10 ledger entries", 6.0, 17.5),
    "generation": ("a generation (POST /api/v1/generations, built-in generator)", 5.0, 15.1),
    "worker": ("a new event applied by the worker (a stored backlog, per event)", 3.0, 7.8),
    "worker_beside_webhook": (
        "a new event applied by the worker while the webhook takes the burst", None, 7.8,
    ),
}  # fmt: skip
# The 100,000-entry account page beside the 10-entry one (before: 0.98x).
HISTORY_CPU_TARGET = 1.2


@dataclass
class Run:
    """One wrk run beside its floor, with the target it is judged by."""

    name: str
    site: load.LoadResult | None
    floor: load.LoadResult | None = None
    floor_name: str = ""
    target: str = ""
    passed: bool | None = None
    note: str = ""


@dataclass
class WorkerCost:
    """The `flask worker` processes over the site's ingest run and the drain after it."""

    events: int  # distinct events of the batch applied
    app_cpu_ms: float | None  # the workers' CPU per distinct event
    drained: float | None  # seconds from the last delivery to the last event applied
    lag: dict  # p50, p99, max seconds from stored (received_at) to applied (processed_at)
    window_postgres_ms: float | None = None  # PostgreSQL's, webhook and workers together


@dataclass
class FaultRun:
    """A second batch posted while a worker is SIGKILLed and restarted every few seconds."""

    events: int
    deliveries: int
    answered: int = 0
    kills: int = 0
    spared: int = 0  # the killer's turns on which the worker was still starting
    drained: float | None = None  # seconds from the last delivery to the last event applied
    checks: dict = field(default_factory=dict)


@dataclass
class Bench:
    workdir: Path
    runs: list[Run] = field(default_factory=list)
    checks: dict = field(default_factory=dict)
    spending: list = field(default_factory=list)
    memory: dict = field(default_factory=dict)
    multiples: list = field(default_factory=list)  # rows for the CPU multiples table
    missing: list = field(default_factory=list)
    log: object = None
    servers: dict = field(default_factory=dict)  # base URL -> the Gunicorn serving it
    postmaster: int = 0  # the one PostgreSQL both servers use
    env: dict = field(default_factory=dict)  # the site's environment, for restarting workers
    appliers: list = field(default_factory=list)  # the `flask worker` processes now running
    worker: WorkerCost | None = None  # applying the main batch beside the webhook
    backlog_worker: WorkerCost | None = None  # applying the paused batch, alone
    fault: FaultRun | None = None
    floor_webhook_runs: list = field(default_factory=list)  # (when, LoadResult), in order
    floor_yardsticks: dict = field(default_factory=dict)  # figure -> its median floor run
    site_repeats: dict = field(default_factory=dict)  # path key -> every repeat of it

    def say(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    started = time.monotonic()
    load_before = os.getloadavg()
    try:
        load.require_wrk()
    except load.WrkMissing as error:
        print(error, file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="billing-bench-"))
    bench = Bench(workdir=workdir, log=(workdir / "wrk.log").open("w"))
    try:
        postgres, redis_server = servers.start_postgres(), servers.start_redis()
    except servers.ServerUnavailable as error:
        print(f"{error}; the benchmark needs it.", file=sys.stderr)
        return 2
    try:
        env = site_environment(postgres.url, redis_server.url)
        os.environ.update(env)  # the in-process app (migrate, seed, checks) reads the same
        bench.postmaster = postmaster_pid(postgres.directory / "data")
        ok = run_everything(bench, env, postgres.url)
    finally:
        postgres.stop()
        redis_server.stop()
    elapsed = time.monotonic() - started
    versions = collect_versions()
    machine = machine_description()
    machine["load average (1 min) before / after"] = (
        f"{load_before[0]:.2f} / {os.getloadavg()[0]:.2f}"
        " (anything else running on the machine shares its CPUs with the benchmark)"
    )
    report.write(
        PROJECT_ROOT / "bench" / "RESULTS.md",
        bench=bench,
        machine=machine,
        versions=versions,
        settings=settings_description(),
        targets=TARGETS,
        elapsed=elapsed,
        generated_at=datetime.now(UTC),
    )
    bench.say(f"done in {elapsed:.0f} s; wrote bench/RESULTS.md")
    print(report.summary(bench), flush=True)
    bench.log.close()
    shutil.rmtree(workdir, ignore_errors=True) if ok else bench.say(f"logs kept in {workdir}")
    return 0 if ok else 1


def site_environment(database_url: str, storage_url: str) -> dict:
    return {
        "APP_ENV": "bench",
        "DATABASE_URL": database_url,
        "FLOOR_DATABASE_URL": database_url,
        "RATELIMIT_STORAGE_URI": storage_url,
        "SECRET_KEY": "bench-secret-key-not-for-production",
        "STRIPE_SECRET_KEY": "",
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        # Logging the benchmark's customers in is setup, not a brute-force attack.
        "LOGIN_RATE_LIMIT": "1000000 per minute",
    }


def run_everything(bench: Bench, env: dict, database_url: str) -> bool:
    import flask_migrate

    from billing_site import create_app
    from billing_site.extensions import db

    app = create_app()
    with app.app_context():
        bench.say("migrating the schema")
        flask_migrate.upgrade()
        bench.say("seeding customers, histories and pending orders")
        fixtures = seed_everything()
        db.session.remove()
    create_floor_table(database_url)

    # Both servers run side by side and each figure is taken right after its
    # floor's, so a change in the machine's load hits both alike.
    floor = gunicorn("bench.floor_app:app", env, bench.workdir / "floor.log")
    site = gunicorn("wsgi:app", env, bench.workdir / "site.log")
    bench.servers = {floor.url: floor, site.url: site}
    appliers = workers.start(env, bench.workdir, APPLIERS)  # the webhook stores; these apply
    bench.env, bench.appliers = env, appliers  # the fault run's killer replaces its entries
    fixtures["database_url"] = database_url
    try:
        floor.start("/page")
        site.start("/healthz")
        measure_everything(bench, floor.url, site.url, fixtures)
    finally:
        workers.stop(appliers)
        for name, server in (("floor (bench.floor_app)", floor), ("site (wsgi:app)", site)):
            server.stop()
            bench.memory[name] = server.peak_rss_kib

    with app.app_context():
        if "ingest" in fixtures["measured"]:
            bench.checks = seed.ingest_outcome(fixtures["orders"], seed.INGEST_PACK["credits"])
        if "paused ingest" in fixtures["measured"]:
            paused = seed.ingest_outcome(fixtures["paused_orders"], seed.INGEST_PACK["credits"])
            bench.checks |= {f"workers-paused batch: {k}": v for k, v in paused.items()}
        if bench.fault is not None:
            bench.fault.checks = seed.ingest_outcome(
                fixtures["fault_orders"], seed.INGEST_PACK["credits"]
            )
        if "generation" in fixtures["measured"]:
            bench.spending = seed.spending_outcome(fixtures["spenders"])
        db.session.remove()
        db.engine.dispose()
    books_straight = all(actual == expected for actual, expected in bench.checks.values())
    no_overspend = all(row["books_straight"] and not row["overspent"] for row in bench.spending)
    fault_straight = bench.fault is None or all(
        actual == expected for actual, expected in bench.fault.checks.values()
    )
    return books_straight and no_overspend and fault_straight


def gunicorn(app_spec: str, env: dict, log_path: Path) -> Gunicorn:
    return Gunicorn(
        app_spec,
        servers.free_port(),
        {**os.environ, **env},
        workers=WORKERS,
        worker_class=WORKER_CLASS,
        threads=THREADS,
        log_path=log_path,
    )


def seed_everything() -> dict:
    history = {}
    for entries in HISTORY_ENTRIES:
        customer = seed.create_customer(
            f"history{entries}@bench.example", entries * 2, note="bench history"
        )
        seed.add_history(customer, entries)
        history[entries] = customer
    spenders = []
    for kind, (count, starting) in GENERATION_CUSTOMERS.items():
        for number in range(count):
            spenders.append(
                seed.create_customer(
                    f"{kind}{number}@bench.example", starting, note="bench generations"
                )
            )
    orders = seed.create_pending_orders(INGEST_EVENTS)
    # The fault run's batch: orders of its own customers, untouched by the main ingest.
    fault_orders = seed.create_pending_orders(FAULT_EVENTS, batch="fault") if FAULT_EVENTS else []
    paused_orders = (
        seed.create_pending_orders(PAUSED_EVENTS, batch="paused") if PAUSED_EVENTS else []
    )
    return {
        "history": history,
        "spenders": spenders,
        "orders": orders,
        "fault_orders": fault_orders,
        "paused_orders": paused_orders,
        "measured": set(),
    }


def create_floor_table(database_url: str) -> None:
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE IF NOT EXISTS floor_events ("
                " id serial PRIMARY KEY, event_id varchar(255) NOT NULL,"
                " received_at timestamptz NOT NULL DEFAULT now())"
            )
        )
    engine.dispose()


# --- the measurements -------------------------------------------------------------------


def measure_page(bench: Bench, base_url: str, path: str, headers: dict) -> load.LoadResult:
    """GET `path` for SECONDS after a short warm-up, with `headers` (a session cookie)."""
    host = base_url.removeprefix("http://")
    request_file = load.write_requests(
        bench.workdir / "page.req", [load.HttpRequest("GET", path, headers)], host
    )
    connections = CONNECTIONS["page"]
    load.run_wrk(base_url, request_file, connections=connections, seconds=WARMUP_SECONDS)
    bench.say(f"GET {base_url}{path}: {SECONDS} s at {connections} connections")
    return measured_wrk(bench, base_url, request_file, connections=connections, seconds=SECONDS)


def measured_wrk(bench: Bench, base_url: str, request_file: Path, **wrk_options):
    """One measured wrk run, drained, with the CPU per request the server's workers and
    PostgreSQL spent on it. Runs are sequential, so PostgreSQL's CPU over a run is that run's."""
    server = bench.servers[base_url]

    def cpu_seconds_so_far() -> tuple[float, float]:
        return server.workers_cpu_seconds(), postgres_cpu_seconds(bench.postmaster)

    before = cpu_seconds_so_far()
    result = load.run_wrk(base_url, request_file, log=bench.log, **wrk_options)
    wait_until_idle(base_url)
    if result.requests:
        result.app_cpu_ms, result.postgres_cpu_ms = (
            (after - start) * 1000 / result.requests
            for start, after in zip(before, cpu_seconds_so_far(), strict=True)
        )
    return result


def wait_until_idle(base_url: str) -> None:
    """Let the requests wrk left queued drain, so they do not weigh on the next run."""
    requests.get(base_url + "/", timeout=300)


def ingest_deliveries(orders: list[dict]) -> list[str]:
    """Every order's checkout.session.completed once, plus 20% redelivered, shuffled."""
    payloads = [seed.checkout_completed_event(order) for order in orders]
    deliveries = payloads + random.Random(6).sample(payloads, int(len(payloads) * REPEATED_SHARE))
    random.Random(7).shuffle(deliveries)
    return deliveries


def measure_ingest(bench: Bench, base_url: str, path: str, deliveries: list[str]):
    host = base_url.removeprefix("http://")
    # Signed right before sending: the webhook rejects signatures older than 300 s.
    request_file = load.write_requests(
        bench.workdir / "webhook.req",
        [
            load.HttpRequest(
                "POST", path, seed.signed_headers(payload, WEBHOOK_SECRET), payload.encode()
            )
            for payload in deliveries
        ],
        host,
    )
    connections = CONNECTIONS["webhook"]
    bench.say(f"POST {base_url}{path}: {len(deliveries):,} deliveries at {connections} connections")
    return measured_wrk(
        bench,
        base_url,
        request_file,
        connections=connections,
        seconds=240,
        stop_after=len(deliveries),
    )


def measure_everything(bench: Bench, floor_url: str, site_url: str, fixtures: dict) -> None:
    floor_page = measure_page(bench, floor_url, "/page", {})
    pricing = measure_page(bench, site_url, "/pricing", {})
    bench.runs.append(
        judged_share(
            "pricing page (GET /pricing)", pricing, floor_page, "page floor",
            TARGETS["pricing_share_of_floor"],
        )
    )  # fmt: skip
    measure_floor_webhook(bench, floor_url, fixtures, "before the account pages")
    measure_accounts(bench, site_url, fixtures, floor_page)
    measure_webhook(bench, floor_url, site_url, fixtures)
    measure_generations(bench, site_url, fixtures)
    measure_fault_run(bench, site_url, fixtures)
    bench.multiples = cpu_multiples(fixtures)
    bench.floor_yardsticks = {
        "app CPU": fixtures.get("floor_webhook"),
        "throughput": fixtures.get("floor_webhook_throughput"),
    }


def measure_floor_webhook(bench: Bench, floor_url: str, fixtures: dict, when: str) -> None:
    """One run of the webhook floor on the main batch's deliveries. The yardsticks are
    the median of the runs so far: by app CPU for the multiples (fixtures["floor_webhook"]),
    by throughput for the webhook's share (fixtures["floor_webhook_throughput"])."""
    result = measure_ingest(bench, floor_url, "/webhook", ingest_deliveries(fixtures["orders"]))
    bench.floor_webhook_runs.append((when, result))
    results = [result for _when, result in bench.floor_webhook_runs]
    fixtures["floor_webhook"] = median_run(results, lambda run: run.app_cpu_ms or 0.0)
    fixtures["floor_webhook_throughput"] = median_run(results, lambda run: run.throughput)


def median_of_repeats(bench: Bench, key: str, repeats: list[load.LoadResult]):
    """The repeat of median app CPU; every repeat is kept for the report."""
    bench.site_repeats[key] = repeats
    return median_run(repeats, lambda run: run.app_cpu_ms or 0.0)


def median_run(results: list[load.LoadResult], figure) -> load.LoadResult:
    """The run whose `figure` is the median (the upper one of an even count). A whole
    run rather than a median per figure, so its other figures stay one measurement's."""
    return sorted(results, key=figure)[len(results) // 2]


def cpu_multiples(fixtures: dict) -> list[dict]:
    """Each hot path's app CPU per request over the webhook floor's, against its target."""
    floor = fixtures.get("floor_webhook")
    if floor is None or not floor.app_cpu_ms:
        return []
    rows = []
    for key, (name, target, before) in CPU_MULTIPLE_TARGETS.items():
        result = fixtures.get("cpu", {}).get(key)
        if result is None or result.app_cpu_ms is None:
            continue
        multiple = result.app_cpu_ms / floor.app_cpu_ms
        rows.append(
            {
                "key": key,
                "name": name,
                "app_ms": result.app_cpu_ms,
                "floor_ms": floor.app_cpu_ms,
                "multiple": f"{multiple:.1f}x",
                "before": f"{before:.1f}x",
                "target": f"<= {target:.0f}x the floor" if target else "—",
                "passed": multiple <= target if target else None,
            }
        )
        if key == "account10" and fixtures["cpu"].get("account100k") is not None:
            heavy = fixtures["cpu"]["account100k"]
            ratio = heavy.app_cpu_ms / result.app_cpu_ms
            rows.append(
                {
                    "key": "account100000",
                    "name": "GET /account, customer with 100,000 ledger entries",
                    "app_ms": heavy.app_cpu_ms,
                    "floor_ms": floor.app_cpu_ms,
                    "multiple": f"{heavy.app_cpu_ms / floor.app_cpu_ms:.1f}x"
                    f" ({ratio:.2f}x the 10-entry page)",
                    "before": "17.1x (0.98x the 10-entry page)",
                    "target": f"within {HISTORY_CPU_TARGET}x of the 10-entry page",
                    "passed": ratio <= HISTORY_CPU_TARGET,
                }
            )
    return rows


def measure_accounts(bench, base_url, fixtures, floor_page) -> None:
    light, heavy = (fixtures["history"][entries] for entries in HISTORY_ENTRIES)
    sessions = {
        entries: log_in(base_url, fixtures["history"][entries].email) for entries in HISTORY_ENTRIES
    }
    if any(session is None for session in sessions.values()):
        return not_measured(bench, "account page", "logging in failed (POST /auth/login)")
    if route_missing(base_url, "GET", "/account", sessions[HISTORY_ENTRIES[0]]):
        bench.missing.append("GET /account")
        return not_measured(bench, "account page (GET /account)", "route missing")
    # Interleaved (light, heavy, light, heavy, ...): the two pages are compared with
    # each other, and the machine's speed drifts over a minute by more than they differ.
    repeats = {entries: [] for entries in HISTORY_ENTRIES}
    for _ in range(SITE_REPEATS):
        for entries in HISTORY_ENTRIES:
            headers = sessions[entries].headers()
            repeats[entries].append(measure_page(bench, base_url, "/account", headers))
    results = {
        entries: median_of_repeats(bench, f"account{entries}", runs)
        for entries, runs in repeats.items()
    }
    few, many = (results[entries] for entries in HISTORY_ENTRIES)
    fixtures.setdefault("cpu", {}).update(account10=few, account100k=many)
    bench.runs.append(
        Run(
            f"account page, customer with {HISTORY_ENTRIES[0]} ledger entries",
            few, floor_page, "page floor", note="no target; beside the page floor",
        )
    )  # fmt: skip
    slowdown = few.throughput / many.throughput if many.throughput else float("inf")
    bench.runs.append(
        Run(
            f"account page, customer with {HISTORY_ENTRIES[1]:,} ledger entries",
            many, few, f"the {HISTORY_ENTRIES[0]}-entry account page",
            target=f"within {TARGETS['history_slowdown']}x of the {HISTORY_ENTRIES[0]}-entry page",
            passed=slowdown <= TARGETS["history_slowdown"],
            note=f"{slowdown:.2f}x slower by throughput",
        )
    )  # fmt: skip
    fixtures["measured"].add("account")


def measure_webhook(bench, floor_url, site_url, fixtures) -> None:
    probe = requests.post(site_url + "/stripe/webhook", data=b"{}", timeout=60)
    if probe.status_code in (404, 405):
        bench.missing.append("POST /stripe/webhook")
        return not_measured(bench, "webhook ingest (POST /stripe/webhook)", "route missing")
    measure_floor_webhook(bench, floor_url, fixtures, "right before the site's webhook")
    ingests = [measure_ingest_with_workers(bench, site_url, fixtures)]
    if fixtures["paused_orders"]:
        ingests.append(measure_ingest_with_workers_paused(bench, site_url, fixtures))
    measure_floor_webhook(bench, floor_url, fixtures, "after the site's webhook runs")
    # Judged only now, against the median throughput of the three floor runs, and
    # the p99 against the floor's best (lowest) p99 among them.
    floor_p99_ms = min(run.p99_ms for _when, run in bench.floor_webhook_runs)
    for name, result, note in ingests:
        floor = fixtures["floor_webhook_throughput"]
        bench.runs.append(judged_ingest(name, result, floor, floor_p99_ms, note))


def measure_ingest_with_workers(bench, site_url, fixtures) -> tuple:
    """The main batch, applied by the workers as it arrives; their CPU and lag."""
    deliveries = ingest_deliveries(fixtures["orders"])
    # The workers' CPU from just before the site's run to the end of the drain.
    worker_cpu = workers.cpu_seconds(bench.appliers)
    postgres_cpu = postgres_cpu_seconds(bench.postmaster)
    result = measure_ingest(bench, site_url, "/stripe/webhook", deliveries)
    fixtures["measured"].add("ingest")
    drained = workers.wait_for_drain(fixtures["database_url"])
    worker_cpu = workers.cpu_seconds(bench.appliers) - worker_cpu
    postgres_cpu = postgres_cpu_seconds(bench.postmaster) - postgres_cpu
    lag = workers.lag(fixtures["database_url"], seed.event_ids(fixtures["orders"]))
    events = lag.pop("applied")
    bench.worker = WorkerCost(
        events=events,
        app_cpu_ms=worker_cpu * 1000 / events if events else None,
        drained=drained,
        lag=lag,
        window_postgres_ms=postgres_cpu * 1000 / events if events else None,
    )
    fixtures.setdefault("cpu", {})["worker_beside_webhook"] = bench.worker
    applied = "never all applied" if drained is None else f"last applied {drained:.1f} s later"
    if lag["p50"] is not None:
        applied += f"; stored to applied p50 {lag['p50']:.1f} s, p99 {lag['p99']:.1f} s"
    note = (
        f"{result.count(200):,} of {result.requests:,} deliveries answered 200 "
        f"({APPLIERS} workers: {applied})."
    )
    return "webhook ingest (POST /stripe/webhook)", result, note


def measure_ingest_with_workers_paused(bench, site_url, fixtures) -> tuple:
    """The webhook alone: its own batch, posted while the workers are stopped (SIGSTOP)."""
    deliveries = ingest_deliveries(fixtures["paused_orders"])
    workers.pause(bench.appliers)
    try:
        result = measure_ingest(bench, site_url, "/stripe/webhook", deliveries)
    finally:
        worker_cpu = workers.cpu_seconds(bench.appliers)
        workers.resume(bench.appliers)
    fixtures["measured"].add("paused ingest")
    drained = workers.wait_for_drain(fixtures["database_url"])
    # The workers alone, as the floor runs alone: the stored batch, nothing arriving.
    events = len(fixtures["paused_orders"])
    bench.backlog_worker = WorkerCost(
        events=events,
        app_cpu_ms=(workers.cpu_seconds(bench.appliers) - worker_cpu) * 1000 / events,
        drained=drained,
        lag={},
    )
    fixtures.setdefault("cpu", {})["worker"] = bench.backlog_worker
    applied = "never all applied" if drained is None else f"all applied {drained:.1f} s after"
    note = (
        f"{result.count(200):,} of {result.requests:,} deliveries answered 200; "
        f"{APPLIERS} workers resumed: {applied}."
    )
    return "webhook ingest, workers paused (the webhook alone)", result, note


def judged_ingest(name, result, floor, floor_p99_ms, note) -> Run:
    """Throughput beside the webhook floor's, and p99 under its bound.

    The bound is 50 ms, or the floor's own best p99 in this run where that is
    higher: a p99 is a wall-clock time, and on a shared 2-CPU machine the floor,
    which does less than the site, has had p99s from 45 to 700 ms. The site adds
    no tail of its own if its p99 is no worse than the floor's.
    """
    run = judged_share(name, result, floor, "webhook floor", TARGETS["webhook_share_of_floor"])
    limit = TARGETS["webhook_p99_ms"]
    floor_best = f"the floor's best p99 in this run ({floor_p99_ms:.0f} ms)"
    if result.p99_ms < limit:
        verdict = f"under {limit:.0f} ms"
    elif result.p99_ms < floor_p99_ms:
        verdict = f"over {limit:.0f} ms, but under {floor_best}"
    else:
        verdict = f"over {limit:.0f} ms and not under {floor_best}"
    run.target += f"; p99 < {limit:.0f} ms (or < the floor's)"
    run.passed = run.passed and result.p99_ms < max(limit, floor_p99_ms)
    run.note = f"{note} {run.note} p99 {result.p99_ms:.0f} ms: {verdict}."
    if result.count(400):
        run.note += (
            f" {result.count(400):,} rejected with 400: signatures go stale after 300 s,"
            " so a site this slow cannot take the whole batch in time."
        )
    return run


def measure_generations(bench, base_url, fixtures) -> None:
    spenders = fixtures["spenders"]
    sessions = [log_in(base_url, customer.email) for customer in spenders]
    if any(session is None for session in sessions):
        return not_measured(bench, "generations", "logging in failed (POST /auth/login)")
    probe = requests.post(
        base_url + "/api/v1/generations",
        data=b"{}",
        headers={**sessions[0].headers(), "Content-Type": "application/json"},
        timeout=60,
    )
    if probe.status_code in (404, 405):
        bench.missing.append("POST /api/v1/generations")
        return not_measured(bench, "generations (POST /api/v1/generations)", "route missing")
    host = base_url.removeprefix("http://")
    # Consecutive requests go to one customer, so several of that customer's
    # requests are in flight at once and contend for the same balance.
    generation_requests = []
    for number in range(len(spenders) * PARALLEL_PER_CUSTOMER * 50):
        session = sessions[(number // PARALLEL_PER_CUSTOMER) % len(spenders)]
        body = f'{{"prompt": "a lighthouse at dusk, take {number}", "model": "standard"}}'
        generation_requests.append(
            load.HttpRequest(
                "POST",
                "/api/v1/generations",
                {**session.headers(), "Content-Type": "application/json"},
                body.encode(),
            )
        )
    request_file = load.write_requests(bench.workdir / "generate.req", generation_requests, host)
    connections = CONNECTIONS["generation"]
    bench.say(f"POST /api/v1/generations: {SECONDS} s at {connections} connections")
    repeats = [
        measured_wrk(bench, base_url, request_file, connections=connections, seconds=SECONDS)
        for _ in range(SITE_REPEATS)
    ]
    result = median_of_repeats(bench, "generation", repeats)
    fixtures["measured"].add("generation")
    fixtures.setdefault("cpu", {})["generation"] = result
    created, refused = result.count(200, 201), result.count(402)
    bench.runs.append(
        Run(
            f"generations, {len(spenders)} customers x {PARALLEL_PER_CUSTOMER} parallel",
            result, fixtures.get("floor_webhook"), "webhook floor (one verified insert)",
            note=f"{created:,} generated ({created / result.seconds:.0f}/s), "
            f"{refused:,} refused for want of credits (402); no target",
        )
    )  # fmt: skip


def measure_fault_run(bench, site_url, fixtures) -> None:
    """A second batch posted while the workers drain it, one of them SIGKILLed (in turn)
    every KILL_SECONDS and restarted at once: none of its events lost or applied twice."""
    orders = fixtures["fault_orders"]
    if not orders or "ingest" not in fixtures["measured"]:
        return
    deliveries = ingest_deliveries(orders)
    bench.fault = FaultRun(events=len(orders), deliveries=len(deliveries))
    bench.say(
        f"fault run: {len(orders):,} events, a worker SIGKILLed every {KILL_SECONDS:g} s"
        " until they are all applied"
    )
    killer = workers.Killer(
        bench.appliers, bench.env, bench.workdir, fixtures["database_url"], KILL_SECONDS
    )
    killer.start()
    try:
        result = measure_ingest(bench, site_url, "/stripe/webhook", deliveries)
        bench.fault.drained = workers.wait_for_drain(fixtures["database_url"], timeout=600)
    finally:
        bench.fault.kills = killer.stop()
    bench.fault.spared = killer.spared
    bench.fault.answered = result.count(200)
    if bench.fault.drained is None:  # let the workers finish unharmed, so the books can be read
        workers.wait_for_drain(fixtures["database_url"])
    bench.say(f"fault run: {bench.fault.kills} kills, {killer.spared} turns spared (starting)")


def judged_share(name, site, floor, floor_name, share) -> Run:
    ratio = site.throughput / floor.throughput if floor.throughput else 0.0
    return Run(
        name, site, floor, floor_name,
        target=f"throughput >= {share:.0%} of the floor",
        passed=ratio >= share,
        note=f"{ratio:.0%} of the floor.",
    )  # fmt: skip


def not_measured(bench: Bench, name: str, reason: str) -> None:
    bench.say(f"{name}: not measured: {reason}")
    bench.runs.append(Run(name, None, note=f"not measured: {reason}"))


# --- logging in -------------------------------------------------------------------------


@dataclass
class Session:
    cookie: str
    csrf_token: str

    def headers(self) -> dict:
        return {"Cookie": self.cookie, "X-CSRFToken": self.csrf_token}


CSRF_META = re.compile(r'name="csrf-token" content="([^"]+)"')


def log_in(base_url: str, email: str) -> Session | None:
    """Log in through the real form; the session cookie and the page's CSRF token."""
    browser = requests.Session()
    page = browser.get(base_url + "/auth/login", timeout=10)
    token = CSRF_META.search(page.text)
    if page.status_code != 200 or token is None:
        return None
    answer = browser.post(
        base_url + "/auth/login",
        data={"email": email, "password": seed.BENCH_PASSWORD, "csrf_token": token.group(1)},
        allow_redirects=False,
        timeout=10,
    )
    if answer.status_code not in (302, 303):
        return None
    token = CSRF_META.search(browser.get(base_url + "/pricing", timeout=10).text)
    cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
    return Session(cookie, token.group(1)) if token else None


def route_missing(base_url: str, method: str, path: str, session: Session) -> bool:
    answer = requests.request(
        method, base_url + path, headers=session.headers(), allow_redirects=False, timeout=10
    )
    return answer.status_code in (404, 405)


# --- the report's context ----------------------------------------------------------------


def collect_versions() -> dict:
    from importlib.metadata import version

    import gunicorn
    import sqlalchemy
    import stripe

    bin_dir = servers.postgres_bin_dir()
    return {
        "Python": sys.version.split()[0],
        "PostgreSQL": tool_version([str(bin_dir / "postgres"), "--version"]) if bin_dir else "?",
        "Redis": tool_version(["redis-server", "--version"]),
        "gunicorn": gunicorn.__version__,
        "wrk": tool_version(["wrk", "-v"]),
        "Flask": version("flask"),
        "SQLAlchemy": sqlalchemy.__version__,
        "psycopg": version("psycopg"),
        "stripe-python": stripe.VERSION,
        "site commit": tool_version(
            ["git", "-C", str(PROJECT_ROOT), "describe", "--always", "--dirty"]
        ),
    }


def settings_description() -> dict:
    worker = f"{WORKERS} {WORKER_CLASS} workers"
    if WORKER_CLASS == "gthread":
        worker += f" x {THREADS} threads"
    return {
        "server": f"gunicorn, {worker}, on 127.0.0.1 (the same command for the site and the floors)",
        "database": "PostgreSQL on 127.0.0.1, fsync=off, synchronous_commit=off (tests/servers.py)",
        "rate-limit storage": "Redis on 127.0.0.1",
        "load generator": f"wrk, {load.WRK_THREADS} thread, bench/replay.lua",
        "pages": f"{CONNECTIONS['page']} connections, {WARMUP_SECONDS} s warm-up then {SECONDS} s",
        "webhook": (
            f"{INGEST_EVENTS:,} distinct checkout.session.completed events plus "
            f"{REPEATED_SHARE:.0%} redelivered, shuffled, at {CONNECTIONS['webhook']} connections;"
            f" {APPLIERS} `flask --app wsgi worker --no-jobs` processes apply them"
        ),
        "fault run": (
            f"{FAULT_EVENTS:,} more distinct events (their own customers) plus "
            f"{REPEATED_SHARE:.0%} redelivered, posted the same way while one worker, in turn,"
            f" is SIGKILLed every {KILL_SECONDS:g} s and restarted at once, until all are applied"
            if FAULT_EVENTS
            else "skipped (BENCH_FAULT_EVENTS=0)"
        ),
        "generations": (
            f"{CONNECTIONS['generation']} connections for {SECONDS} s; customers: "
            + ", ".join(
                f"{count} starting with {credits:,} credits"
                for count, credits in GENERATION_CUSTOMERS.values()
            )
        ),
    }


if __name__ == "__main__":
    sys.exit(main())
