"""`make run`: the web process and the worker from Procfile.dev, together, in one terminal.

Each line of output is prefixed with its process's name. When the site answers
/healthz, a short "ready" note says where it is and how to try it. Ctrl-C stops
both; if either stops on its own, the other is stopped too. (Honcho does the
same; this is thirty lines and one dependency fewer for a newcomer's first run.)
"""

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ADDRESS = f"http://127.0.0.1:{os.environ.get('DEV_PORT', '5000')}"
READY = f"""
  Pixel Forge is running at {ADDRESS}
  Payments go to the local test checkout (no Stripe keys needed): Pay succeeds and the
  credits appear at once; Decline shows what a declined card does.
  Make yourself an admin:
    .venv/bin/flask --app wsgi create-admin you@example.com --password 'a long password'
  Ctrl-C stops the site and the worker.
"""


def processes() -> list[tuple[str, str]]:
    lines = (ROOT / "Procfile.dev").read_text().splitlines()
    return [tuple(part.strip() for part in line.split(":", 1)) for line in lines if ":" in line]


def relay(name: str, stream) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{name:>6} | {line}")
        sys.stdout.flush()


def announce_when_ready(stopping: threading.Event) -> None:
    while not stopping.is_set():
        try:
            with urllib.request.urlopen(f"{ADDRESS}/healthz", timeout=2):
                print(READY, flush=True)
                return
        except OSError:
            time.sleep(0.3)


def main() -> int:
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["PYTHONUNBUFFERED"] = "1"
    children = []
    for name, command in processes():
        child = subprocess.Popen(
            command,
            shell=True,
            cwd=ROOT,
            env=env,
            text=True,
            start_new_session=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        threading.Thread(target=relay, args=(name, child.stdout), daemon=True).start()
        children.append(child)
    stopping = threading.Event()
    threading.Thread(target=announce_when_ready, args=(stopping,), daemon=True).start()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    code = 0
    try:
        while not stopping.is_set():
            finished = [child for child in children if child.poll() is not None]
            if finished:
                code = finished[0].returncode
                break
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    stopping.set()
    for child in children:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
    return code


if __name__ == "__main__":
    sys.exit(main())
