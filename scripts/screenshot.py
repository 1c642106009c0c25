"""Take docs/screenshot.png of the home page (run: .venv/bin/python -m scripts.screenshot).

Serves the app on a throwaway SQLite file and photographs it with Debian's
headless Chromium, the same way the browser tests do.
"""

import tempfile
import threading
from pathlib import Path

import flask_migrate
from playwright.sync_api import sync_playwright
from werkzeug.serving import make_server

from billing_site import create_app
from tests.conftest import CHROMIUM, CHROMIUM_ARGS

OUTPUT = Path(__file__).resolve().parent.parent / "docs" / "screenshot.png"


def main() -> None:
    with tempfile.TemporaryDirectory() as directory:
        app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{directory}/screenshot.db"})
        with app.app_context():
            flask_migrate.upgrade()
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(f"http://127.0.0.1:{server.server_port}/")
                page.screenshot(path=str(OUTPUT), full_page=True)
                browser.close()
        finally:
            server.shutdown()
    print(f"Wrote {OUTPUT}")


if __name__ == "__main__":
    main()
