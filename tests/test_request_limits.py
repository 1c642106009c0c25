"""Request bodies (issue 12, item 1; TESTING row 48): size caps and slow clients.

The caps are checked from Content-Length before anything reads the body, and
the real gunicorn (gunicorn.conf.py) keeps answering /healthz while one client
sends 30 MB and three others trickle their bodies one byte every 2 seconds.
"""

import contextlib
import io
import socket
import threading
import time
from pathlib import Path

import requests
from werkzeug.exceptions import RequestTimeout

from billing_site.request_limits import DeadlineInput
from tests import gunicorn_server

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def test_a_form_over_the_cap_gets_the_error_page_unread(client):
    response = client.post(
        "/auth/login",
        data={"email": "a@example.com", "password": "x" * (65 * 1024)},
    )
    assert response.status_code == 413
    assert "text/html" in response.content_type
    assert "64 KiB" in response.get_data(as_text=True)


def test_the_api_answers_413_in_the_flat_error_shape(client):
    response = client.post(
        "/api/v1/checkout", data=b"{" + b" " * (65 * 1024) + b"}", content_type="application/json"
    )
    assert response.status_code == 413
    assert response.json == {
        "error": "request_entity_too_large",
        "message": "The request body is larger than the 64 KiB this address accepts.",
    }


def test_the_webhook_accepts_more_than_a_form_but_not_more_than_its_cap(client):
    # 100 KiB is past the form cap but an acceptable event size: it reaches
    # signature verification (and fails it), not the size check.
    response = client.post("/stripe/webhook", data=b"x" * (100 * 1024))
    assert response.status_code == 400
    assert response.json["error"] == "invalid_webhook"
    for path in ("/stripe/webhook", "/api/v1/stripe/webhook"):
        response = client.post(path, data=b"x" * (1024 * 1024 + 1))
        assert response.status_code == 413
        assert response.json["error"] == "request_entity_too_large"
        assert "1024 KiB" in response.json["message"]


def test_both_caps_are_configurable(make_app):
    client = make_app(MAX_FORM_BYTES=1024, MAX_WEBHOOK_BYTES=2048).test_client()
    assert client.post("/auth/login", data={"email": "x" * 1100}).status_code == 413
    assert client.post("/stripe/webhook", data=b"x" * 1500).status_code == 400
    assert client.post("/stripe/webhook", data=b"x" * 2100).status_code == 413


def test_a_body_without_content_length_is_cut_off_at_the_cap(client):
    # A chunked body announces no length; werkzeug stops reading at the cap.
    body = io.BytesIO(b"x" * (2 * 1024 * 1024))
    response = client.post(
        "/stripe/webhook",
        environ_overrides={"wsgi.input": body, "wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert body.tell() <= 1024 * 1024 + 64 * 1024


def test_the_procfile_serves_with_the_gunicorn_config():
    web = next(
        line
        for line in (PROJECT_ROOT / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    assert "--config gunicorn.conf.py" in web


# --- under the real gunicorn -------------------------------------------------------


def request_head(port: int, path: str, length: int) -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {length}\r\n\r\n"
    ).encode()


def read_status(sock: socket.socket) -> int:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return int(data.split(b" ", 2)[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def timed_healthz(url: str) -> float:
    started = time.monotonic()
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
    return time.monotonic() - started


def test_gunicorn_refuses_30_mb_unread_and_slow_bodies_do_not_starve_healthz(
    db, database_url, redis_server, tmp_path
):
    env = {"BODY_READ_TIMEOUT_SECONDS": "6"}
    with gunicorn_server.serve(
        database_url, redis_server.url, tmp_path, workers=2, env=env
    ) as site:
        port = int(site.url.rsplit(":", 1)[1])
        rss_before = {pid: rss_kib(pid) for pid in site.worker_pids()}
        slow_outcomes: list[int] = []
        stop = threading.Event()

        def trickle():
            with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
                sock.sendall(request_head(port, "/auth/login", 100))
                for _ in range(100):
                    if stop.is_set():
                        return
                    try:
                        sock.sendall(b"a")
                    except OSError:
                        break
                    sock.settimeout(2)
                    with contextlib.suppress(TimeoutError):
                        if sock.recv(1, socket.MSG_PEEK):
                            break  # the server answered before the body was done
                sock.settimeout(10)
                slow_outcomes.append(read_status(sock))

        slow = [threading.Thread(target=trickle) for _ in range(3)]
        for thread in slow:
            thread.start()
        try:
            time.sleep(1)
            # 30 MB announced to the webhook: answered from the headers alone.
            with socket.create_connection(("127.0.0.1", port), timeout=5) as big:
                started = time.monotonic()
                big.sendall(request_head(port, "/stripe/webhook", 30_000_000))
                big.sendall(b"x" * 65536)
                assert read_status(big) == 413
                assert time.monotonic() - started < 3
                with contextlib.suppress(OSError):
                    # The worker closes rather than read the rest.
                    for _ in range(460):
                        big.sendall(b"x" * 65536)
                    raise AssertionError("the server kept reading the 30 MB body")

            # While the three slow bodies hold their threads, /healthz answers.
            timings = [timed_healthz(site.url) for _ in range(8)]
            assert max(timings) < 1.5, timings
            for pid, before in rss_before.items():
                assert rss_kib(pid) - before < 20 * 1024, "a worker read the big body"
        finally:
            for thread in slow:
                thread.join(timeout=20)
            stop.set()
        # The trickling clients were cut off at BODY_READ_TIMEOUT_SECONDS.
        assert slow_outcomes == [408, 408, 408]
        assert timed_healthz(site.url) < 1.5


def stalled_body(seconds: float, *, length: int = 10):
    """A DeadlineInput over a socket whose client sent nothing yet, and that client's end."""
    server_end, client_end = socket.socketpair()
    stream = DeadlineInput(server_end.makefile("rb"), server_end, seconds, length)
    return stream, client_end


def read_outcome(stream, outcomes: dict, name: str) -> None:
    started = time.monotonic()
    try:
        stream.read(10)
        outcomes[name] = ("read", time.monotonic() - started)
    except RequestTimeout:
        outcomes[name] = ("408", time.monotonic() - started)


def test_the_watchdog_cuts_each_stalled_body_at_its_own_deadline_and_spares_a_finished_one():
    outcomes: dict[str, tuple[str, float]] = {}
    late, late_client = stalled_body(3.0)
    soon, soon_client = stalled_body(0.3)
    finished, finished_client = stalled_body(0.3)
    finished_client.sendall(b"x" * 10)
    readers = [  # daemons: a watchdog that never fires fails the test instead of hanging it
        threading.Thread(target=read_outcome, args=(late, outcomes, "late"), daemon=True),
        threading.Thread(target=read_outcome, args=(soon, outcomes, "soon"), daemon=True),
    ]
    readers[0].start()
    time.sleep(0.1)  # the later deadline is first in the heap: the sooner one must wake it
    readers[1].start()
    read_outcome(finished, outcomes, "finished")
    for reader in readers:
        reader.join(timeout=10)

    assert outcomes.get("finished", ("",))[0] == "read"
    assert "soon" in outcomes and "late" in outcomes, outcomes
    assert outcomes["soon"][0] == "408" and outcomes["soon"][1] < 2.0, outcomes
    assert outcomes["late"][0] == "408" and outcomes["late"][1] >= 2.9, outcomes
    time.sleep(0.5)  # past the finished body's deadline: its socket still reads
    finished_client.sendall(b"more")
    assert finished._sock.recv(4) == b"more"
    for stream in (late, soon, finished):
        stream._stream.close()
        stream._sock.close()
    for end in (late_client, soon_client, finished_client):
        end.close()
