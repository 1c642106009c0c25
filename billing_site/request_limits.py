"""Request bodies: a size cap checked before any byte is read, and a read deadline.

Forms and the API need a few KiB; Stripe's events are well under 1 MiB. A body
announced larger than the endpoint's cap is refused from its Content-Length
alone (413), and a body sent without one is refused (413) once it streams past
the cap. A client trickling its body is cut off when the
whole body has not arrived within BODY_READ_TIMEOUT_SECONDS (408), so it frees
its worker thread instead of holding it for as long as it likes.
"""

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
import weakref

from flask import Flask, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

# Stripe posts here; its events are larger than any form.
WEBHOOK_PATHS = frozenset({"/stripe/webhook", "/api/v1/stripe/webhook"})


def body_limit(path: str) -> int:
    """The largest body (bytes) accepted at `path`."""
    config = current_app.config
    return config["MAX_WEBHOOK_BYTES"] if path in WEBHOOK_PATHS else config["MAX_FORM_BYTES"]


def too_large_message(limit: int) -> str:
    return f"The request body is larger than the {limit // 1024} KiB this address accepts."


def enforce_body_limit():
    """Refuse an announced over-size body before anything reads it."""
    limit = body_limit(request.path)
    if request.content_length is not None:
        if request.content_length > limit:
            raise RequestEntityTooLarge(too_large_message(limit))
        request.max_content_length = limit
        return
    # A chunked body: werkzeug would silently stop at its cap, handing the view a
    # truncated body. It may read one byte more, and that byte is refused below.
    request.max_content_length = limit + 1
    stream = request.environ.get("wsgi.input")
    if isinstance(stream, DeadlineInput):
        stream.limit = limit


class DeadlineInput:
    """wsgi.input that gives up once the body has taken longer than `seconds`.

    gunicorn's body reader blocks until a whole chunk has arrived, however slowly
    it comes, so the deadline is kept by a watchdog: at the deadline it shuts the
    socket's read side, which wakes the blocked read with end-of-file, and the
    read then raises RequestTimeout (408). The response can still be written.
    """

    def __init__(self, stream, sock, seconds: float, length: int | None = None):
        self._stream = stream
        self._length = length
        self._sock = sock
        self._seconds = seconds
        self._watched = False
        self._done = False
        self._expired = False
        self._read = 0
        self.limit: int | None = None

    def _start_clock(self) -> None:
        if not self._watched and self._sock is not None:
            self._watched = True
            WATCHDOG.watch(time.monotonic() + self._seconds, self)

    def expire(self) -> None:
        """The deadline passed (called by the watchdog): cut the read unless the body is in."""
        if self._done:
            return
        self._expired = True
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RD)

    def stop_clock(self) -> None:
        self._done = True

    def _call(self, method, *args):
        self._start_clock()
        if self._expired:
            raise RequestTimeout("The request body arrived too slowly.")
        data = getattr(self._stream, method)(*args)
        if self._expired:
            raise RequestTimeout("The request body arrived too slowly.")
        self._read += sum(map(len, data)) if method == "readlines" else len(data)
        if not data or (self._length is not None and self._read >= self._length):
            self.stop_clock()  # the whole body is in
        if self.limit is not None and self._read > self.limit:
            raise RequestEntityTooLarge(too_large_message(self.limit))
        return data

    def read(self, *args):
        return self._call("read", *args)

    def readline(self, *args):
        return self._call("readline", *args)

    def readlines(self, *args):
        return self._call("readlines", *args)

    def __iter__(self):
        return iter(self.readline, b"")


class Watchdog:
    """One thread per process that keeps every request's body deadline.

    A timer thread per request (threading.Timer) cost about 170 µs of CPU each,
    more than verifying a webhook's signature. Here a deadline is a heap entry;
    a finished request's entry stays until its time and is then dropped. Every
    deadline is "now + the same seconds", so a new one is the earliest only
    when the heap was empty, and only then wakes the thread.
    """

    def __init__(self):
        self._pid = None
        self._starting = threading.Lock()

    def watch(self, when: float, stream: DeadlineInput) -> None:
        if self._pid != os.getpid():  # first use, or a forked child (threads don't fork)
            with self._starting:  # two request threads may get here at once
                if self._pid != os.getpid():
                    self._start()
        # Weakly held: a finished request's body and socket are not kept until its time.
        entry = (when, next(self._order), weakref.ref(stream))
        with self._wake:
            heapq.heappush(self._deadlines, entry)
            if self._deadlines[0] is entry:
                self._wake.notify()

    def _start(self) -> None:
        self._wake = threading.Condition()
        self._deadlines: list[tuple[float, int, weakref.ref]] = []
        self._order = itertools.count()  # ties: never compare two references
        threading.Thread(target=self._run, name="body-deadlines", daemon=True).start()
        self._pid = os.getpid()  # last: another thread may now skip the lock

    def _run(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                while self._deadlines and self._deadlines[0][0] <= now:
                    stream = heapq.heappop(self._deadlines)[2]()
                    if stream is not None:
                        stream.expire()
                self._wake.wait(self._deadlines[0][0] - now if self._deadlines else None)


WATCHDOG = Watchdog()


class BodyDeadline:
    """WSGI middleware installing DeadlineInput (the clock runs only under gunicorn)."""

    def __init__(self, wsgi_app, seconds: float):
        self.wsgi_app = wsgi_app
        self.seconds = seconds

    def __call__(self, environ, start_response):
        length = environ.get("CONTENT_LENGTH", "")
        stream = DeadlineInput(
            environ["wsgi.input"],
            environ.get("gunicorn.socket"),
            self.seconds,
            int(length) if length.isdigit() else None,
        )
        environ["wsgi.input"] = stream
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            # The view has read what it wanted; a long call after that is not slow input.
            stream.stop_clock()


def install_body_limits(app: Flask) -> None:
    """Check sizes first of all before_request hooks (CSRF reads the form)."""
    app.before_request_funcs.setdefault(None, []).insert(0, enforce_body_limit)
    app.wsgi_app = BodyDeadline(app.wsgi_app, app.config["BODY_READ_TIMEOUT_SECONDS"])
