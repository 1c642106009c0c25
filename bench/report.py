"""bench/RESULTS.md: every figure beside its floor, with the machine and the versions."""

from pathlib import Path


def write(path: Path, *, bench, machine, versions, settings, targets, elapsed, generated_at):
    lines = [
        "# Benchmark results",
        "",
        f"Written by `make bench` (`.venv/bin/python -m bench.run`) on "
        f"{generated_at:%Y-%m-%d %H:%M} UTC in {elapsed:.0f} s. Do not edit: run it again.",
        "",
        "## Machine",
        "",
        f"- CPUs: {machine['cpus']} ({machine['cpu_model']})",
        f"- memory: {machine['memory']}",
        f"- kernel: {machine['kernel']}",
        *[
            f"- {name}: {value}"
            for name, value in machine.items()
            if name not in ("cpus", "cpu_model", "memory", "kernel")
        ],
        "",
        "## Versions",
        "",
        *[f"- {name}: {version}" for name, version in versions.items()],
        "",
        "## Setup",
        "",
        *[f"- {name}: {value}" for name, value in settings.items()],
        "",
        "## Results",
        "",
        "Throughput is completed requests per second over the whole run; latency is",
        "wrk's, from sending a request to its full response.",
        "",
        "| measurement | req/s | p50 ms | p99 ms | floor | floor req/s | floor p99 ms "
        "| site/floor | target | result |",
        "|---|---:|---:|---:|---|---:|---:|---:|---|---|",
        *[_row(run) for run in bench.runs],
        "",
        *_notes(bench),
        *_cpu(bench),
        *_multiples(bench),
        *_worker(bench),
        *_correctness(bench),
        *_memory(bench),
        *_statuses(bench),
    ]
    path.write_text("\n".join(lines) + "\n")


def _row(run) -> str:
    if run.site is None:
        return f"| {run.name} | | | | | | | | | {run.note} |"
    site, floor = run.site, run.floor
    ratio = f"{site.throughput / floor.throughput:.0%}" if floor and floor.throughput else ""
    verdict = {True: "**pass**", False: "**FAIL**", None: "—"}[run.passed]
    floor_cells = (
        f"{run.floor_name} | {floor.throughput:,.0f} | {floor.p99_ms:.1f}" if floor else " | | "
    )
    return (
        f"| {run.name} | {site.throughput:,.0f} | {site.p50_ms:.1f} | {site.p99_ms:.1f} "
        f"| {floor_cells} | {ratio} | {run.target or '—'} | {verdict} |"
    )


def _notes(bench) -> list[str]:
    notes = [f"- {run.name}: {run.note}" for run in bench.runs if run.note]
    if bench.missing:
        notes.append("- routes missing when this ran: " + ", ".join(bench.missing))
    return ["### Notes", "", *notes, ""] if notes else []


def _cpu(bench) -> list[str]:
    lines = [
        "## CPU per request",
        "",
        "CPU time (user + system, from /proc/<pid>/stat) per completed request, over each measured",
        "run and the drain after it (warm-ups excluded): the server's gunicorn workers (app), and",
        "PostgreSQL's postmaster with every process it forked (backends, autovacuum and the like,",
        "counting those that exited). The site and the floors share one PostgreSQL and run one at",
        "a time, so each run's share is its own. wrk's own CPU is not included.",
        "",
        "| measurement | site app ms | site PostgreSQL ms | floor | floor app ms "
        "| floor PostgreSQL ms |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for run in bench.runs:
        if run.site is not None:
            floor = _cpu_cells(run.floor) if run.floor else " | "
            lines.append(f"| {run.name} | {_cpu_cells(run.site)} | {run.floor_name} | {floor} |")
    worker, backlog = getattr(bench, "worker", None), getattr(bench, "backlog_worker", None)
    # The workers' figures are CPU multiples: beside the floor run of median app CPU.
    floor = getattr(bench, "floor_yardsticks", {}).get("app CPU") or _webhook_floor(bench)
    floor_cells = f"webhook floor | {_cpu_cells(floor)}" if floor else " | | "
    if worker is not None and worker.app_cpu_ms is not None:
        lines.append(
            f"| worker: a new event applied (per distinct event) | {worker.app_cpu_ms:.2f} | — "
            f"| {floor_cells} |"
        )
    if backlog is not None and backlog.app_cpu_ms is not None:
        lines.append(
            "| worker: a stored backlog applied, nothing arriving (per event) "
            f"| {backlog.app_cpu_ms:.2f} | — | {floor_cells} |"
        )
    if worker is not None:
        lines += [
            "",
            "The worker rows are the `flask worker` processes' CPU: from just before the site's",
            "webhook run to the end of the drain, over the distinct events applied (its PostgreSQL",
            "work overlaps the webhook run's and is not separated; see Worker below), and from the",
            "resume to the end of the drain of the batch stored while they were paused.",
        ]
    return [*lines, ""]


def _webhook_floor(bench):
    return next((run.floor for run in bench.runs if run.floor_name == "webhook floor"), None)


def _multiples(bench) -> list[str]:
    rows = getattr(bench, "multiples", None)
    if not rows:
        return []
    lines = [
        "## Hot paths as multiples of the webhook floor",
        "",
        "App CPU per request (the table above) over the webhook floor's (verify a signature,",
        "insert one row), both measured in this run: absolute CPU times on these machines move",
        "by 2.5x from one day to the next, the multiple much less. Before: the 2026-11-21 run.",
        "",
        "| path | app ms | webhook floor app ms | multiple | before | target | result |",
        "|---|---:|---:|---|---|---|---|",
    ]
    for row in rows:
        verdict = {True: "**pass**", False: "**FAIL**", None: "—"}[row["passed"]]
        lines.append(
            f"| {row['name']} | {row['app_ms']:.2f} | {row['floor_ms']:.2f} | {row['multiple']} "
            f"| {row['before']} | {row['target']} | {verdict} |"
        )
    return [*lines, "", *_site_repeats(bench, rows), *_floor_runs(bench)]


def _site_repeats(bench, rows) -> list[str]:
    """Each repeated path's runs, so the median's spread is on the page too."""
    repeats = getattr(bench, "site_repeats", {})
    floor = getattr(bench, "floor_yardsticks", {}).get("app CPU")
    lines = []
    for row in rows:
        runs = repeats.get(row.get("key"))
        if not runs or floor is None or not floor.app_cpu_ms:
            continue
        multiples = ", ".join(f"{run.app_cpu_ms / floor.app_cpu_ms:.1f}x" for run in runs)
        lines.append(f"- {row['name']}: {len(runs)} runs, {multiples} (the median is above)")
    if not lines:
        return []
    return [
        "Each of these paths was measured more than once; the multiple above is the run of",
        "median app CPU:",
        "",
        *lines,
        "",
    ]


def _floor_runs(bench) -> list[str]:
    """Every run of the webhook floor, so the yardstick's own spread is on the page."""
    runs = getattr(bench, "floor_webhook_runs", [])
    if not runs:
        return []
    yardsticks = getattr(bench, "floor_yardsticks", {})
    cpu = [result.app_cpu_ms for _when, result in runs if result.app_cpu_ms]
    lines = [
        f"The webhook floor was measured {len(runs)} times in this run, the same deliveries"
        " each time. The run with the median app CPU is the yardstick of the multiples above,",
        "the run with the median throughput that of the webhook's share of the floor."
        + (
            f" Spread: the slowest run's app CPU is {max(cpu) / min(cpu):.2f}x the fastest's."
            if cpu
            else ""
        ),
        "",
        "| webhook floor run | req/s | p99 ms | app ms | PostgreSQL ms | the median of |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for when, result in runs:
        medians = ", ".join(name for name, run in yardsticks.items() if run is result)
        lines.append(
            f"| {when} | {result.throughput:,.0f} | {result.p99_ms:.1f} "
            f"| {_cpu_cells(result)} | {medians} |"
        )
    return [*lines, ""]


def _worker(bench) -> list[str]:
    worker, fault = getattr(bench, "worker", None), getattr(bench, "fault", None)
    if worker is None:
        return []
    lines = [
        "## Worker",
        "",
        "The webhook stores each event; two `flask --app wsgi worker --no-jobs` processes apply",
        "them. After the drain, for the webhook run's distinct events:",
        "",
        f"- events applied: {worker.events:,}",
        f"- last delivery to last event applied: {_seconds(worker.drained, 'never drained')}",
        "- stored to applied (processed_at - received_at): "
        f"p50 {_seconds(worker.lag.get('p50'))}, p99 {_seconds(worker.lag.get('p99'))},"
        f" max {_seconds(worker.lag.get('max'))}",
        f"- the workers' CPU per distinct event: {_ms(worker.app_cpu_ms)} ms",
        "- PostgreSQL's CPU from the start of the webhook run to the end of the drain, per"
        f" distinct event (the webhook's inserts and the workers' applying together):"
        f" {_ms(worker.window_postgres_ms)} ms",
    ]
    backlog = getattr(bench, "backlog_worker", None)
    if backlog is not None:
        lines += [
            "",
            f"The batch stored while the workers were paused ({backlog.events:,} events), applied"
            f" once they were resumed, with nothing else arriving: {_ms(backlog.app_cpu_ms)} ms of"
            f" the workers' CPU per event, all applied {_seconds(backlog.drained, 'never')} after"
            " the resume. This is the figure judged against the floor, which also runs alone.",
        ]
    if fault is not None:
        lines += [
            "",
            f"Fault run: {fault.events:,} more events ({fault.deliveries:,} deliveries, "
            f"{fault.answered:,} answered 200) posted while one worker, in turn, was SIGKILLed "
            f"and restarted at once: {fault.kills} kills ({fault.spared} turns spared a worker"
            " still starting up); last delivery to last event applied "
            f"{_seconds(fault.drained, 'not drained while killing')}. Its books are under"
            " Correctness below.",
        ]
    return [*lines, ""]


def _seconds(value, missing="?") -> str:
    return missing if value is None else f"{value:.1f} s"


def _ms(value) -> str:
    return "?" if value is None else f"{value:.2f}"


def _cpu_cells(result, separator=" | ") -> str:
    return separator.join(
        "?" if ms is None else f"{ms:.2f}" for ms in (result.app_cpu_ms, result.postgres_cpu_ms)
    )


def _correctness(bench) -> list[str]:
    lines = ["## Correctness after the load", ""]
    if bench.checks:
        lines += _checks(
            "Webhook ingest (every order is paid once and granted once):", bench.checks
        )
    else:
        lines += ["Webhook ingest: not measured, so not checked.", ""]
    fault = getattr(bench, "fault", None)
    if fault is not None:
        lines += _checks(
            f"Fault run, {fault.kills} workers SIGKILLed while it was applied (zero lost, zero"
            " doubled):",
            fault.checks,
        )
    if bench.spending:
        overspent = [row for row in bench.spending if row["overspent"]]
        crooked = [row for row in bench.spending if not row["books_straight"]]
        lines += [
            "Generations (no customer spends more than they had; balance column == live lots"
            " == last balance_after == sum of deltas):",
            "",
            "| customer | starting credits | generations succeeded | balance after | books |",
            "|---|---:|---:|---:|---|",
        ]
        for row in bench.spending:
            verdict = "straight" if row["books_straight"] and not row["overspent"] else "**WRONG**"
            lines.append(
                f"| {row['customer']} | {row['start']:,} | {row['succeeded']:,} "
                f"| {row['balance']:,} | {verdict} |"
            )
        lines += [
            "",
            f"Overspent customers: {len(overspent)}; customers whose books disagree: "
            f"{len(crooked)}.",
            "",
        ]
    else:
        lines += ["Generations: not measured, so not checked.", ""]
    return lines


def _checks(title: str, checks: dict) -> list[str]:
    lines = [title, "", "| check | found | expected | |", "|---|---:|---:|---|"]
    for name, (actual, expected) in checks.items():
        verdict = "ok" if actual == expected else "**WRONG**"
        lines.append(f"| {name} | {actual:,} | {expected:,} | {verdict} |")
    return [*lines, ""]


def _memory(bench) -> list[str]:
    lines = [
        "## Memory per worker",
        "",
        "Peak resident set size (VmRSS from /proc, sampled every 0.5 s) of each gunicorn worker.",
        "",
        "| server | worker | peak RSS MiB |",
        "|---|---|---:|",
    ]
    for server, peaks in bench.memory.items():
        for number, (_pid, rss) in enumerate(sorted(peaks.items()), start=1):
            lines.append(f"| {server} | {number} | {rss / 1024:.1f} |")
    return [*lines, ""]


def _statuses(bench) -> list[str]:
    lines = [
        "## Responses by status",
        "",
        "| measurement | statuses | socket errors |",
        "|---|---|---|",
    ]
    seen = set()
    for run in bench.runs:
        for name, result in ((run.name, run.site), (run.floor_name, run.floor)):
            if result is None or id(result) in seen:
                continue
            seen.add(id(result))
            statuses = ", ".join(
                f"{code}: {count:,}" for code, count in sorted(result.statuses.items())
            )
            lines.append(f"| {name} | {statuses} | {result.socket_errors} |")
    return [*lines, ""]


def summary(bench) -> str:
    lines = []
    for run in bench.runs:
        if run.site is None:
            lines.append(f"  {run.name}: {run.note}")
            continue
        verdict = {True: "pass", False: "FAIL", None: "-"}[run.passed]
        floor = f" (floor {run.floor.throughput:,.0f} req/s)" if run.floor else ""
        lines.append(
            f"  {run.name}: {run.site.throughput:,.0f} req/s, p50 {run.site.p50_ms:.1f} ms,"
            f" p99 {run.site.p99_ms:.1f} ms{floor} [{verdict}]"
        )
        floor_cpu = f" (floor {_cpu_cells(run.floor, ' + ')})" if run.floor else ""
        lines.append(
            f"    CPU ms per request, app + PostgreSQL: {_cpu_cells(run.site, ' + ')}{floor_cpu}"
        )
    floor_runs = getattr(bench, "floor_webhook_runs", [])
    if floor_runs:
        per_run = ", ".join(_ms(result.app_cpu_ms) for _when, result in floor_runs)
        lines.append(f"  webhook floor, app CPU ms per request, run by run: {per_run}")
    for row in getattr(bench, "multiples", []):
        verdict = {True: "pass", False: "FAIL", None: "-"}[row["passed"]]
        lines.append(f"  {row['name']}: {row['multiple']} the webhook floor's app CPU [{verdict}]")
    worker = getattr(bench, "worker", None)
    if worker is not None:
        lines.append(
            f"  worker: {_ms(worker.app_cpu_ms)} ms CPU per event; stored to applied"
            f" p50 {_seconds(worker.lag.get('p50'))}, p99 {_seconds(worker.lag.get('p99'))};"
            f" drained {_seconds(worker.drained, 'never')} after the last delivery"
        )
    backlog = getattr(bench, "backlog_worker", None)
    if backlog is not None:
        lines.append(
            f"  worker, a stored backlog alone: {_ms(backlog.app_cpu_ms)} ms CPU per event"
        )
    for name, (actual, expected) in bench.checks.items():
        lines.append(f"  check {name}: {actual} (expected {expected})")
    fault = getattr(bench, "fault", None)
    if fault is not None:
        lines.append(
            f"  fault run: {fault.kills} kills, drained"
            f" {_seconds(fault.drained, 'not while killing')} after the last delivery"
        )
        for name, (actual, expected) in fault.checks.items():
            lines.append(f"  fault check {name}: {actual} (expected {expected})")
    if bench.spending:
        bad = [
            row["customer"]
            for row in bench.spending
            if row["overspent"] or not row["books_straight"]
        ]
        lines.append(f"  generations: overspent or crooked books: {bad or 'none'}")
    return "\n".join(lines)
