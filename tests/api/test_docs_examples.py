"""The curl examples of docs/api.md, run with bash against a live hostbay on loopback (werkzeug server in a
thread, the test database), so the document cannot drift from the API."""

import os
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from hostbay.core import credentials
from hostbay.core.db import db

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def _blocks():
    return [b for b in re.findall(r"```sh\n(.*?)```", DOC.read_text(), re.S) if "curl" in b]


@pytest.fixture
def live(app, make_user, make_package, make_image):
    app.config["HOSTBAY_JOBS"] = "manual"
    customer = make_user(balance_cents=100000)
    admin = make_user(role="admin")
    env = {"PACKAGE": make_package(monthly_cents=1000).uuid, "IMAGE": make_image().uuid}
    for name, user, scope in (("TOKEN", customer, "write"), ("READ_TOKEN", customer, "read"),
                              ("STAFF_TOKEN", admin, "write")):
        env[name] = credentials.create_api_token(user, name, scope=scope)[1]
    db.session.commit()
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    class Ok(BaseHTTPRequestHandler):
        def do_POST(self):
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Ok)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    env["HOSTBAY"] = f"http://127.0.0.1:{server.server_port}"
    env["RECEIVER"] = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    yield env
    server.shutdown()
    receiver.shutdown()


def test_every_curl_example_of_the_api_doc_runs(live, tmp_path):
    blocks = _blocks()
    assert len(blocks) >= 7
    for block in blocks:
        res = subprocess.run(["bash", "-euo", "pipefail", "-c", block], cwd=tmp_path, capture_output=True, text=True,
                             timeout=60, env={**os.environ, **live, "http_proxy": "", "https_proxy": ""})
        assert res.returncode == 0, (block, res.stdout[-2000:], res.stderr[-2000:])
