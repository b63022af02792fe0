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
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "a" and a.get("href"):
            self.urls.append(a["href"])
        if tag == "form" and (a.get("method") or "get").lower() == "get" and a.get("action"):
            self.urls.append(a["action"])


def crawl(client, start="/panel/", limit=300):
    seen, queue, pages = set(), [start], {}
    while queue and len(seen) < limit:
        url = queue.pop(0)
        path = urlsplit(url).path
        if url in seen or not path.startswith("/panel") or "logout" in path:
            continue
        seen.add(url)
        resp = client.get(url)
        if resp.status_code != 200 or not resp.content_type.startswith(("text/html", "application/json", "text/csv")):
            continue
        body = resp.get_data(as_text=True)
        pages[url] = body
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
