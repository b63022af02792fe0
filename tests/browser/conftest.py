"""Browser tests: the real panel served on loopback, driven by Playwright in Debian's headless Chromium.

Screenshots go to ``$HOSTBAY_TEST_ARTIFACTS/browser`` (default ``artifacts/browser``).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

@pytest.fixture
def app_config():
    return {"HOSTBAY_JOBS": "thread", "WTF_CSRF_ENABLED": True}


@pytest.fixture
def live_server(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def page(browser, tmp_path):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    pg.set_default_timeout(15000)
    yield pg
    context.close()


@pytest.fixture
def shot():
    folder = Path(os.environ.get("HOSTBAY_TEST_ARTIFACTS", "artifacts")) / "browser"
    folder.mkdir(parents=True, exist_ok=True)

    def _shot(page, name: str) -> Path:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return _shot
