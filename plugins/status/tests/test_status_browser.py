"""In headless Chromium: staff open an incident on a location, an affected customer sees the banner, and /status
shows it with the latency graph drawn (uPlot served by hostbay, CSP intact). Screenshots go to
``$HOSTBAY_TEST_ARTIFACTS/browser`` (default ``artifacts/browser``)."""

from __future__ import annotations

import os
import threading

from pathlib import Path

import pytest

from hostbay.core.db import db

VENDOR = Path(__file__).resolve().parents[1] / "static" / "vendor" / "uplot" / "uPlot.iife.min.js"
NODE_NAME = "fra-hv-rack12-07"


@pytest.fixture
def app_config():
    return {"HOSTBAY_JOBS": "thread", "WTF_CSRF_ENABLED": True}


@pytest.fixture
def live_server(app):
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    t.join(10)


@pytest.fixture
def shots():
    folder = Path(os.environ.get("HOSTBAY_TEST_ARTIFACTS", "artifacts")) / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _page(browser, violations):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = ctx.new_page()
    pg.set_default_timeout(15000)
    pg.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    return ctx, pg


def _login(pg, base, email, password):
    pg.goto(base + "/login")
    pg.get_by_label("E-mail").fill(email)
    pg.get_by_label("Password").fill(password)
    pg.get_by_role("button", name="Log in").click()
    pg.wait_for_url("**/panel/**" if "staff" not in email else "**/*")


def test_incident_banner_and_graph(app, clock, live_server, browser, shots, http_server, make_user, make_node,
                                   make_package, make_service, make_component, make_probe):
    assert VENDOR.exists(), "run scripts/assets (uPlot from the npm registry)"
    from hostbay.plugins.status.probes import sweep

    node = make_node(name=NODE_NAME, location="fra")
    comp = make_component("Frankfurt servers", group_name="Locations", kind="location", location="fra")
    make_component("Customer panel", kind="panel")
    make_probe(comp, name="Frankfurt gateway", kind="http", url=http_server + "/", interval_seconds=60)
    for _ in range(45):  # 45 minutes of real probe results against the loopback server
        sweep()
        clock.advance(minutes=1)
    customer = make_user(email="cust@example.test")
    svc = make_service(customer, make_package(), node=node, hostname="shop.customer.test")
    make_user(email="staff@example.test", role="admin")
    svc_uuid, comp_uuid = svc.uuid, comp.uuid
    db.session.commit()  # SQLite: this thread holds no transaction (and no write lock) while the server runs
    violations: list[str] = []

    # staff open the incident on the location
    ctx, pg = _page(browser, violations)
    _login(pg, live_server, "staff@example.test", "correct horse battery")
    pg.goto(live_server + "/staff/")
    pg.get_by_role("link", name="Status page").click()
    form = pg.locator("#open-incident")
    form.get_by_label("Title").fill("Network degradation in Frankfurt")
    form.get_by_label("Impact").select_option("major")
    form.get_by_label("Frankfurt servers").check()
    form.get_by_label("First update (public)").fill("We see packet loss on the Frankfurt uplinks and are on it.")
    form.get_by_role("button", name="Open incident").click()
    pg.wait_for_url("**/staff/status/incidents/**")
    assert pg.get_by_text("Incident opened.").is_visible()
    pg.screenshot(path=str(shots / "status-01-staff-incident.png"), full_page=True)
    ctx.close()

    # the affected customer sees the banner, on the dashboard and on the service page
    ctx, pg = _page(browser, violations)
    _login(pg, live_server, "cust@example.test", "correct horse battery")
    banner = pg.locator(".notices .notice")
    assert "Network degradation in Frankfurt" in banner.first.inner_text()
    assert "shop.customer.test" in banner.first.inner_text()
    assert NODE_NAME not in pg.content()
    pg.screenshot(path=str(shots / "status-02-customer-banner.png"), full_page=True)
    pg.goto(live_server + f"/panel/services/{svc_uuid}")
    assert "Network degradation in Frankfurt" in pg.locator(".notices").inner_text()
    banner.first.get_by_role("link", name="Details").click()
    pg.wait_for_url("**/status/incidents/**")
    assert "packet loss on the Frankfurt uplinks" in pg.content()
    ctx.close()

    # the public page, signed out: the incident and the graph, drawn
    ctx, pg = _page(browser, violations)
    pg.goto(live_server + "/status")
    assert pg.locator("h1.indicator").get_attribute("data-indicator") == "major"
    assert "Network degradation in Frankfurt" in pg.locator(".incidents").inner_text()
    fig = pg.locator(f'li[data-component="{comp_uuid}"] figure.graph')
    fig.locator("canvas").first.wait_for()
    pg.locator(f'li[data-component="{comp_uuid}"] figure.graph[data-drawn="1"]').wait_for()
    assert int(fig.get_attribute("data-points")) >= 40
    inked = fig.locator("canvas").first.evaluate("""c => {
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
        return n; }""")
    assert inked > 500, f"the latency canvas is (nearly) empty: {inked} painted pixels"
    assert NODE_NAME not in pg.content()
    pg.screenshot(path=str(shots / "status-03-public-page.png"), full_page=True)
    fig.get_by_role("button", name="7 d").click()
    pg.locator(f'li[data-component="{comp_uuid}"] figure.graph[data-drawn="1"]').wait_for()
    ctx.close()
    assert violations == [], violations
    db.session.commit()

