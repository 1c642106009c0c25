"""Driving a server with wrk: pre-rendered requests in, throughput and latency out."""

import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

REPLAY_SCRIPT = Path(__file__).resolve().parent / "replay.lua"
WRK_THREADS = 1  # one wrk thread keeps up with this site easily and leaves a core to it


class WrkMissing(RuntimeError):
    pass


def require_wrk() -> str:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise WrkMissing(
            "wrk (the HTTP load generator) is not installed. Install it with "
            "`apt-get install -y wrk` (Debian/Ubuntu package `wrk`) and run `make bench` again."
        )
    return wrk


@dataclass
class HttpRequest:
    method: str
    path: str
    headers: dict = field(default_factory=dict)
    body: bytes = b""

    def render(self, host: str) -> bytes:
        lines = [f"{self.method} {self.path} HTTP/1.1", f"Host: {host}"]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        if self.body or self.method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


def write_requests(path: Path, requests: list[HttpRequest], host: str) -> Path:
    """Records "<length>\\n<raw request>" for bench/replay.lua."""
    with path.open("wb") as file:
        for request in requests:
            raw = request.render(host)
            file.write(f"{len(raw)}\n".encode())
            file.write(raw)
    return path


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    statuses: dict
    errors: dict
    connections: int
    # CPU per completed request, set by the caller that can see the server's processes.
    app_cpu_ms: float | None = None
    postgres_cpu_ms: float | None = None

    @property
    def throughput(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def count(self, *statuses: int) -> int:
        return sum(self.statuses.get(str(status), 0) for status in statuses)

    @property
    def socket_errors(self) -> int:
        return sum(value for key, value in self.errors.items() if key != "status")


def run_wrk(
    base_url: str,
    request_file: Path,
    *,
    connections: int,
    seconds: int,
    stop_after: int = 0,
    log=None,
) -> LoadResult:
    """Replay `request_file` for `seconds` (or until `stop_after` responses)."""
    done_file = request_file.with_suffix(".done")
    env = {
        **os.environ,
        "BENCH_REQUESTS": str(request_file),
        "BENCH_THREADS": str(WRK_THREADS),
        "BENCH_STOP_AFTER": str(stop_after),
        "BENCH_DONE_FILE": str(done_file),
    }
    command = [
        require_wrk(),
        "-t", str(WRK_THREADS),
        "-c", str(connections),
        "-d", f"{seconds}s",
        "--timeout", "10s",
        "-s", str(REPLAY_SCRIPT),
        base_url,
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    if stop_after:
        _interrupt_when_done(process, done_file, seconds + 30)
    stdout, stderr = process.communicate(timeout=seconds + 60)
    if log is not None:
        log.write(f"$ {' '.join(command)}\n{stdout}{stderr}\n")
    line = next((line for line in stdout.splitlines() if line.startswith("BENCH_JSON ")), None)
    if process.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.strip()}")
    figures = json.loads(line.removeprefix("BENCH_JSON "))
    return LoadResult(
        requests=figures["requests"],
        seconds=figures["duration_us"] / 1e6,
        p50_ms=figures["p50_us"] / 1000,
        p90_ms=figures["p90_us"] / 1000,
        p99_ms=figures["p99_us"] / 1000,
        max_ms=figures["max_us"] / 1000,
        statuses=figures["statuses"],
        errors=figures["errors"],
        connections=connections,
    )


def _interrupt_when_done(process: subprocess.Popen, done_file: Path, timeout: float) -> None:
    """SIGINT wrk once every thread has its responses: wrk then reports at once."""
    markers = [done_file.with_name(f"{done_file.name}.{number}") for number in range(WRK_THREADS)]
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if all(marker.exists() for marker in markers):
            process.send_signal(signal.SIGINT)
            break
        time.sleep(0.01)
    for marker in markers:
        marker.unlink(missing_ok=True)
