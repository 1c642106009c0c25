"""Throwaway PostgreSQL and Redis servers on loopback, started by the test setup.

Each pytest process (each xdist worker too) gets its own servers on free ports
in a temporary directory, and stops them by PID at the end.
"""

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


class ServerUnavailable(Exception):
    """The server's binaries are not installed on this machine."""


@dataclass
class RunningServer:
    url: str
    stop: callable
    port: int
    directory: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin_dir() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _as_postgres_user(command: list[str]) -> list[str]:
    # initdb refuses to run as root; the Debian package creates a postgres user.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def start_postgres() -> RunningServer:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        raise ServerUnavailable("PostgreSQL is not installed (apt-get install postgresql)")
    directory = Path(tempfile.mkdtemp(prefix="billing-pg-"))
    data = directory / "data"
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    port = free_port()

    def run(*cmd):
        return subprocess.run(  # noqa: E731
            _as_postgres_user([str(bin_dir / cmd[0]), *cmd[1:]]),
            check=True,
            capture_output=True,
        )

    run("initdb", "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale")
    options = (
        f"-p {port} -k {directory} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300"
    )
    run("pg_ctl", "-D", str(data), "-w", "-l", str(directory / "log"), "-o", options, "start")
    run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "billing_test")

    def stop():
        subprocess.run(
            _as_postgres_user(
                [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]
            ),
            capture_output=True,
        )
        shutil.rmtree(directory, ignore_errors=True)

    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/billing_test"
    return RunningServer(url=url, stop=stop, port=port, directory=directory)


def start_redis() -> RunningServer:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable("Redis is not installed (apt-get install redis-server)")
    directory = Path(tempfile.mkdtemp(prefix="billing-redis-"))
    port = free_port()
    pidfile = directory / "redis.pid"
    subprocess.run(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "yes",
            "--pidfile",
            str(pidfile),
            "--logfile",
            str(directory / "redis.log"),
            "--dir",
            str(directory),
        ],
        check=True,
    )
    _wait_for_port(port)

    def stop():
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text().strip()), 15)
        shutil.rmtree(directory, ignore_errors=True)

    return RunningServer(
        url=f"redis://127.0.0.1:{port}/0", stop=stop, port=port, directory=directory
    )


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")
