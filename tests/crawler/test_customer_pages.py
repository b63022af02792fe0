"""A crawler logs in as a customer and follows every link and form it can reach: no page may show
infrastructure identifiers (node names, hypervisor domain names, VMIDs, BMC addresses, node settings) and no
customer URL may carry an internal row id."""

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

from hostbay.core.db import db as _db
from hostbay.testing.pytest_plugin import login

SECRETS = ["node-secret-7f3a", "hb-dom-9c1e77", "vmid-48213", "10.66.77.88", "qemu+ssh://hv-secret"]


class Links(HTMLParser):
    """Links, GET forms and the service page's live-progress endpoint (a data attribute its script reads)."""

    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.urls.append(a["href"])
        if tag == "form" and (a.get("method") or "get").lower() == "get" and a.get("action"):
            self.urls.append(a["action"])
        if a.get("data-progress-url"):
            self.urls.append(a["data-progress-url"])


def crawl(client, *starts, limit=300, json=False):
    """Pages reached from ``starts`` (default the panel home), keyed by URL; with ``json`` every URL is also asked
    for as JSON, keyed ``<url> [json]``."""
    seen, queue, pages = set(), list(starts or ["/panel/"]), {}
    while queue and len(seen) < limit:
        url = queue.pop(0)
        path = urlsplit(url).path
        if url in seen or not path.startswith("/panel") or "logout" in path:
            continue
        seen.add(url)
        for accept in ("text/html", "application/json") if json else (None,):
            resp = client.get(url, headers={"Accept": accept} if accept else {})
            if resp.status_code != 200 or not resp.content_type.startswith(
                    ("text/html", "application/json", "text/csv")):
                continue
            body = resp.get_data(as_text=True)
            pages[url + (" [json]" if accept == "application/json" else "")] = body
            if resp.content_type.startswith("text/html"):
                parser = Links()
                parser.feed(body)
                queue.extend(urljoin(url, u) for u in parser.urls if not u.startswith(("http", "mailto:", "#")))
    return pages


def test_customer_pages_hide_infrastructure(client, make_user, make_package, make_node, make_image, make_service):
    user = make_user(balance_cents=5000)
    node = make_node(name=SECRETS[0], settings={"uri": SECRETS[4], "bmc": SECRETS[3]})
    pkg = make_package()
    make_image(source="/var/lib/templates/" + SECRETS[1] + ".qcow2")
    svc = make_service(user, pkg, node=node, infra_ref={"domain": SECRETS[1], "vmid": SECRETS[2]})
    login(client, user)
    pages = crawl(client)
    assert "/panel/" in pages
    for url, body in pages.items():
        for secret in SECRETS:
            assert secret not in body, f"{secret} shown on {url}"
        assert f"/{svc.id}/" not in url and not re.search(r"/panel/(?:[a-z-]+/)*\d+(?:/|$)", urlsplit(url).path), \
            f"internal id in customer URL {url}"
    _db.session.rollback()


def test_service_with_operations_addresses_iso_and_ledger_hides_infrastructure(
        client, make_user, make_package, make_node, make_image, make_service):
    from hostbay.core import clock, iso, jobs, ledger
    from hostbay.core.ipam import allocate_for_service, create_pool

    user = make_user(balance_cents=5000)
    node = make_node(name=SECRETS[0], settings={"uri": SECRETS[4], "bmc": SECRETS[3]})
    pkg = make_package()
    make_image(source="/var/lib/templates/" + SECRETS[1] + ".qcow2")
    svc = make_service(user, pkg, node=node, infra_ref={"domain": SECRETS[1], "vmid": SECRETS[2]})
    create_pool(name="crawl-v4", cidr="203.0.113.0/28", gateway="203.0.113.1", node_ids=[node.id])
    allocate_for_service(svc)
    op = jobs.enqueue("service.restart", key=f"crawl:{svc.uuid}", service=svc, title="Restart")
    op.state, op.progress_pct, op.progress_text = jobs.FAILED, 20, "Restarting"
    op.error = f"libvirtError: domain {SECRETS[1]} on {SECRETS[0]} ({SECRETS[4]}) not found"
    op.customer_error = "The operation could not be completed. Our staff have been notified."
    ledger.debit(user.id, 1000, kind="renewal", key=f"crawl-renewal:{svc.uuid}", description="Renewal of server",
                 reference=("service", svc.uuid), note=f"placed on {SECRETS[0]}", service_id=svc.id)
    _db.session.add(iso.IsoImage(user_id=user.id, name="rescue.iso", stored_name="crawl-" + SECRETS[2],
                                 size_bytes=1024, sha256="0" * 64, state=iso.APPROVED,
                                 staff_note="Checked: a rescue image.", created_at=clock.now()))
    _db.session.commit()
    login(client, user)
    base = f"/panel/services/{svc.uuid}"
    pages = crawl(client, "/panel/", base, base + "/progress", base + "/addresses", "/panel/isos", "/panel/billing",
                  "/panel/billing/export.csv", json=True)
    for must in (base, base + "/progress", base + "/addresses", base + "/addresses [json]", "/panel/isos",
                 "/panel/billing", "/panel/billing/export.csv"):
        assert must in pages, f"{must} not reached"
    assert any("203.0.113." in body for body in pages.values())  # the addresses were really shown
    assert any("rescue.iso" in body for body in pages.values())
    for url, body in pages.items():
        for secret in SECRETS:
            assert secret not in body, f"{secret} shown on {url}"
        assert f'"id": {svc.id}' not in body and f'"service_id": {svc.id}' not in body
    _db.session.rollback()
