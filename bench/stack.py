"""The server stack under test: gunicorn in front of an app, and what it costs in memory and CPU."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Gunicorn:
    """`gunicorn APP` on a loopback port, with its workers' memory sampled while it runs."""

    def __init__(
        self,
        app_spec: str,
        port: int,
        env: dict,
        *,
        workers: int,
        worker_class: str,
        threads: int,
        log_path: Path,
    ):
        self.app_spec = app_spec
        self.port = port
        self.env = env
        self.workers = workers
        self.worker_class = worker_class
        self.threads = threads
        self.log_path = log_path
        self.process = None
        self.peak_rss_kib: dict[int, int] = {}
        self._sampling = threading.Event()
        self._sampler = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "gunicorn", self.app_spec,
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--worker-class", self.worker_class,
            "--backlog", "2048",
            "--timeout", "60",
            "--log-level", "warning",
            # gunicorn 27 opens a control socket at one fixed path; two servers would share it.
            "--no-control-socket",
        ]  # fmt: skip
        if self.worker_class == "gthread":
            command += ["--threads", str(self.threads)]
        return command

    def start(self, ready_path: str) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(), cwd=PROJECT_ROOT, env=self.env, stdout=log, stderr=log
        )
        try:
            self._wait_until_ready(ready_path)
        except BaseException:
            self.stop()
            raise
        self._sampling.set()
        self._sampler = threading.Thread(target=self._sample_memory, daemon=True)
        self._sampler.start()

    def _wait_until_ready(self, ready_path: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn {self.app_spec} exited; see {self.log_path}")
            try:
                ready = requests.get(self.url + ready_path, timeout=5).status_code < 500
            except (requests.ConnectionError, requests.Timeout):
                ready = False
            if ready and len(self.worker_pids()) == self.workers:
                return
            time.sleep(0.2)
        raise RuntimeError(f"gunicorn {self.app_spec} not ready in {timeout}s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        """The master's children (gunicorn forks one per worker)."""
        return children_of(self.process.pid)

    def workers_cpu_seconds(self) -> float:
        """CPU spent so far by the workers, those alive and those the master has reaped."""
        return children_cpu_seconds(self.process.pid)

    def _sample_memory(self) -> None:
        while self._sampling.is_set():
            for pid, rss in self.worker_rss_kib().items():
                self.peak_rss_kib[pid] = max(rss, self.peak_rss_kib.get(pid, 0))
            time.sleep(0.5)

    def worker_rss_kib(self) -> dict[int, int]:
        sizes = {}
        for pid in self.worker_pids():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmRSS:"):
                    sizes[pid] = int(line.split()[1])
        return sizes

    def stop(self) -> None:
        self._sampling.clear()
        if self._sampler is not None:
            self._sampler.join(timeout=2)
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat from field 3 (state) on: the name before it may hold spaces."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def children_of(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(int(entry.name))[1])
        except OSError:
            continue  # exited while we looked
        if parent == pid:
            children.append(int(entry.name))
    return sorted(children)


def _cpu_ticks(pid: int, *, reaped_children: bool) -> int:
    """utime + stime (fields 14-15), or cutime + cstime (16-17); 0 once `pid` has exited."""
    first = 13 if reaped_children else 11  # field n is _stat_fields()[n - 3]
    try:
        return sum(int(ticks) for ticks in _stat_fields(pid)[first : first + 2])
    except OSError:
        return 0


def children_cpu_seconds(pid: int) -> float:
    """CPU spent by `pid`'s children: the live ones' own, plus the reaped ones' (which the
    kernel adds to the parent's cutime + cstime), so a child that exits is still counted."""
    live = sum(_cpu_ticks(child, reaped_children=False) for child in children_of(pid))
    return (live + _cpu_ticks(pid, reaped_children=True)) / CLOCK_TICKS


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().splitlines()[0])


def process_cpu_seconds(pid: int) -> float:
    """CPU spent so far by `pid` itself and every child it forked, alive or reaped
    (0 for its own part once it has exited)."""
    return _cpu_ticks(pid, reaped_children=False) / CLOCK_TICKS + children_cpu_seconds(pid)


def postgres_cpu_seconds(postmaster: int) -> float:
    """CPU spent by PostgreSQL so far: the postmaster and every process it forked (backends,
    autovacuum, checkpointer and the like), alive or gone."""
    return process_cpu_seconds(postmaster)


def tool_version(command: list[str]) -> str:
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    output = (result.stdout or result.stderr).strip().splitlines()
    return output[0] if output else "unknown"


def machine_description() -> dict:
    cpu_model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory": f"{memory_kib / 1024 / 1024:.1f} GiB",
        "kernel": os.uname().release,
    }
