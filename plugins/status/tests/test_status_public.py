"""Public surfaces: Statuspage-shaped JSON checked against a schema written from Statuspage's documented fields,
the Atom feed, the cache and its invalidation; staff pages and the customers' banners."""

import json
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import jsonschema
import pytest

from hostbay.core.db import db
from hostbay.plugins.status.incidents import add_update, open_incident, schedule_maintenance
from hostbay.plugins.status.status import advance_maintenance
from hostbay.testing.pytest_plugin import login

SCHEMA = json.loads((Path(__file__).parent / "statuspage_v2.schema.json").read_text())
DOCS = {"summary": "summary", "status": "statusDoc", "components": "componentsDoc", "incidents": "incidentsDoc",
        "incidents/unresolved": "unresolvedDoc", "scheduled-maintenances": "maintenancesDoc",
        "scheduled-maintenances/upcoming": "upcomingDoc", "scheduled-maintenances/active": "activeDoc"}
NODE_NAME = "fra-node-secret-07"


def validator(name):
    return jsonschema.Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{name}"})


@pytest.fixture
def world(app, clock, make_component, make_node, make_package, make_user, make_service):
    node = make_node(name=NODE_NAME, location="fra")
    other = make_node(name="ams-node-1", location="ams")
    fra = make_component("Frankfurt servers", group_name="Locations", kind="location", location="fra")
    ams = make_component("Amsterdam servers", group_name="Locations", kind="location", location="ams")
    panel = make_component("Customer panel", kind="panel")
    pkg = make_package()
    hit = make_user(email="hit@example.test")
    miss = make_user(email="miss@example.test")
    svc = make_service(hit, pkg, node=node, hostname="web1.customer.test")
    make_service(miss, pkg, node=other, hostname="db1.other.test")
    staff = make_user(email="staff@example.test", role="admin")
    return {"node": node, "fra": fra, "ams": ams, "panel": panel, "hit": hit, "miss": miss, "svc": svc,
            "staff": staff}


def _populate(clock, w):
    old = open_incident(name="Past API errors", impact="minor", component_status="degraded_performance",
                        component_ids=[w["panel"].id], body="Errors on sign-in.")
    db.session.commit()
    clock.advance(minutes=30)
    add_update(old, status="resolved", body="Fixed.")
    inc = open_incident(name="Packet loss in Frankfurt", impact="major", component_status="partial_outage",
                        component_ids=[w["fra"].id], body="Investigating packet loss.")
    now = clock.now()
    schedule_maintenance(name="Router upgrade", body="", scheduled_for=now + timedelta(days=2),
                         scheduled_until=now + timedelta(days=2, hours=1), component_ids=[w["ams"].id])
    schedule_maintenance(name="Storage work", body="", scheduled_for=now - timedelta(minutes=5),
                         scheduled_until=now + timedelta(hours=1), component_ids=[w["ams"].id])
    db.session.commit()
    advance_maintenance()
    return inc


def test_json_endpoints_match_the_statuspage_schema(app, client, clock, world):
    inc = _populate(clock, world)
    for doc, schema_name in DOCS.items():
        resp = client.get(f"/status/api/v2/{doc}.json")
        assert resp.status_code == 200 and resp.mimetype == "application/json"
        data = resp.get_json()
        errors = sorted(validator(schema_name).iter_errors(data), key=str)
        assert not errors, f"{doc}: {errors[0]}"
    summary = client.get("/status/api/v2/summary.json").get_json()
    assert summary["status"] == {"indicator": "major", "description": "Partial System Outage"}
    assert [i["id"] for i in summary["incidents"]] == [inc.uuid]
    assert {m["status"] for m in summary["scheduled_maintenances"]} == {"scheduled", "in_progress"}
    comps = {c["name"]: c for c in summary["components"]}
    assert comps["Frankfurt servers"]["status"] == "partial_outage"
    assert comps["Amsterdam servers"]["status"] == "under_maintenance"
    assert comps["Locations"]["group"] is True and comps["Frankfurt servers"]["group_id"] == comps["Locations"]["id"]
    assert comps["Locations"]["status"] == "partial_outage"
    incidents = client.get("/status/api/v2/incidents.json").get_json()["incidents"]
    assert [i["name"] for i in incidents] == ["Packet loss in Frankfurt", "Past API errors"]
    assert NODE_NAME not in json.dumps(summary)
    assert client.get("/status/api/v2/nothing.json").status_code == 404


def test_the_schema_rejects_what_statuspage_tooling_could_not_read(app, client, clock, world):
    _populate(clock, world)
    doc = client.get("/status/api/v2/summary.json").get_json()
    bad = json.loads(json.dumps(doc))
    bad["status"]["indicator"] = "green"
    assert list(validator("summary").iter_errors(bad))
    bad = json.loads(json.dumps(doc))
    del bad["incidents"][0]["incident_updates"][0]["display_at"]
    assert list(validator("summary").iter_errors(bad))
    bad = json.loads(json.dumps(doc))
    bad["scheduled_maintenances"][0]["scheduled_for"] = "tomorrow"
    assert list(validator("summary").iter_errors(bad))


def test_pages_feed_and_history(app, client, clock, world):
    inc = _populate(clock, world)
    page = client.get("/status").get_data(as_text=True)
    assert "Partial System Outage" in page and "Packet loss in Frankfurt" in page
    assert "Router upgrade" in page and "Storage work" in page
    assert NODE_NAME not in page
    detail = client.get(f"/status/incidents/{inc.uuid}").get_data(as_text=True)
    assert "Investigating packet loss." in detail
    hist = client.get("/status/history").get_data(as_text=True)
    assert "Past API errors" in hist and "Packet loss in Frankfurt" in hist
    feed = client.get("/status/history.atom")
    assert feed.mimetype == "application/atom+xml"
    root = ET.fromstring(feed.data)
    ns = {"a": "http://www.w3.org/2005/Atom"}
    titles = [e.find("a:title", ns).text for e in root.findall("a:entry", ns)]
    assert "Packet loss in Frankfurt" in titles and "Past API errors" in titles
    assert "Maintenance: Router upgrade" in titles
    assert client.get("/status/incidents/does-not-exist").status_code == 404


def test_cache_serves_hits_and_staff_changes_invalidate(app, client, clock, world):
    first = client.get("/status")
    assert first.headers["X-Status-Cache"] == "miss" and "public" in first.headers["Cache-Control"]
    second = client.get("/status")
    assert second.headers["X-Status-Cache"] == "hit" and second.data == first.data
    assert "Set-Cookie" not in second.headers
    assert client.get("/status", headers={"If-None-Match": second.headers["ETag"].strip('"')}).status_code == 304
    open_incident(name="Fresh incident", impact="minor", component_status="degraded_performance",
                  component_ids=[world["fra"].id], body="Looking.")
    db.session.commit()
    third = client.get("/status")
    assert third.headers["X-Status-Cache"] == "miss" and b"Fresh incident" in third.data


def test_staff_pages_open_an_incident_and_customers_get_404(app, client, clock, world):
    login(client, world["hit"])
    assert client.get("/staff/status/").status_code == 404
    assert client.post("/staff/status/incidents", data={"name": "x"}).status_code == 404
    client.post("/logout")
    login(client, world["staff"])
    home = client.get("/staff/").get_data(as_text=True)
    assert 'href="/staff/status/"' in home  # the menu entry from hostbay_admin_menu
    resp = client.post("/staff/status/incidents", data={
        "name": "Frankfurt outage", "impact": "critical", "component_status": "major_outage",
        "components": [str(world["fra"].id)], "status": "investigating", "body": "Power feed lost."})
    assert resp.status_code == 302
    assert client.get("/status/api/v2/status.json").get_json()["status"]["indicator"] == "critical"
    uuid = resp.headers["Location"].rsplit("/", 1)[-1]
    client.post(f"/staff/status/incidents/{uuid}/updates", data={"status": "resolved", "body": "Power is back."})
    assert client.get("/status/api/v2/status.json").get_json()["status"]["indicator"] == "none"
    page = client.get("/staff/status/").get_data(as_text=True)
    assert "Frankfurt outage" in page


def test_banner_for_affected_customers_only_without_node_names(app, client, clock, world):
    open_incident(name="Packet loss in Frankfurt", impact="major", component_status="partial_outage",
                  component_ids=[world["fra"].id], body="Investigating packet loss.")
    db.session.commit()
    login(client, world["hit"])
    dash = client.get("/panel/").get_data(as_text=True)
    assert "Packet loss in Frankfurt" in dash and "web1.customer.test" in dash
    assert NODE_NAME not in dash and "fra" not in dash.replace("Frankfurt", "")
    svc_page = client.get(f"/panel/services/{world['svc'].uuid}").get_data(as_text=True)
    assert "Packet loss in Frankfurt" in svc_page and NODE_NAME not in svc_page
    client.post("/logout")
    login(client, world["miss"])
    assert "Packet loss in Frankfurt" not in client.get("/panel/").get_data(as_text=True)


def test_banner_for_a_named_service_and_for_the_panel(app, client, clock, world):
    inc = open_incident(name="Disk trouble on one server", impact="minor", component_status="degraded_performance",
                        service_uuids=[world["svc"].uuid], body="One disk is slow.")
    db.session.commit()
    login(client, world["hit"])
    assert "Disk trouble on one server" in client.get("/panel/").get_data(as_text=True)
    client.post("/logout")
    login(client, world["miss"])
    assert "Disk trouble" not in client.get("/panel/").get_data(as_text=True)
    open_incident(name="Panel sign-in errors", impact="minor", component_status="degraded_performance",
                  component_ids=[world["panel"].id], body="Sign-in fails for some.")
    db.session.commit()
    assert "Panel sign-in errors" in client.get("/panel/").get_data(as_text=True)
    add_update(inc, status="resolved", body="Replaced.")
    db.session.commit()


def test_staff_schedule_maintenance_and_probes_through_the_forms(app, client, clock, world, http_server):
    from sqlalchemy import select

    from hostbay.plugins.status.models import Maintenance, Probe

    login(client, world["staff"])
    resp = client.post("/staff/status/maintenance", data={
        "name": "Core router swap", "body": "Up to 5 minutes without network.", "scheduled_for": "2026-01-16T02:00",
        "scheduled_until": "2026-01-16T03:00", "components": [str(world["fra"].id)], "notify": "1",
        "notice_hours": "24"})
    assert resp.status_code == 302
    m = db.session.scalar(select(Maintenance).filter_by(name="Core router swap"))
    assert m.notify and m.notice_hours == 24 and m.scheduled_for.hour == 2
    bad = client.post("/staff/status/maintenance", data={"name": "x", "scheduled_for": "2026-01-16T03:00",
                                                         "scheduled_until": "2026-01-16T02:00",
                                                         "components": [str(world["fra"].id)]},
                      follow_redirects=True)
    assert b"The window must end after it starts." in bad.data
    client.post("/staff/status/probes", data={"name": "fra gw", "component_id": str(world["fra"].id),
                                               "kind": "http", "url": http_server + "/", "expected_status": "200",
                                               "interval_seconds": "30", "timeout_seconds": "2"})
    p = db.session.scalar(select(Probe).filter_by(name="fra gw"))
    assert p.kind == "http" and p.interval_seconds == 30 and p.timeout_seconds == 2.0
    refused = client.post("/staff/status/probes", data={"name": "no port", "component_id": str(world["fra"].id),
                                                         "kind": "tcp", "host": "127.0.0.1"}, follow_redirects=True)
    assert b"A TCP probe needs a host and a port." in refused.data
    # the job layer runs the window's steps: the tick and the rollup are ordinary scheduled jobs
    from hostbay.core import jobs

    clock.set(m.scheduled_for)
    for kind in ("status.tick", "status.rollup", "status.probe_sweep"):
        op = jobs.enqueue(kind, key=f"test:{kind}")
        db.session.commit()
        assert db.session.get(jobs.Operation, op.id).state == jobs.SUCCEEDED, kind
    db.session.refresh(m)
    assert m.status == "in_progress"
    page = client.get("/staff/status/").get_data(as_text=True)
    assert "Core router swap" in page and "up," in page  # the probe ran and is listed as up
