"""A crawler over every customer page reachable from the dashboard finds no infrastructure identifier: node names,
driver references (domain names, VMIDs, BMC addresses) or node settings."""

import re
from urllib.parse import urljoin, urlsplit

from hostbay.core import tickets as tk
from hostbay.core.accounts import add_ssh_key
from hostbay.core.activity import log_activity
from hostbay.core.db import db as database
from hostbay.testing.pytest_plugin import login

SECRETS = ("kvm-node-7.dc1.internal", "hostbay-vm-0042", "vmid-918273", "10.99.88.77", "pve-token-secret")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@host"


def test_customer_pages_show_no_infrastructure(app, client, make_user, make_package, make_node, make_service):
    node = make_node(name=SECRETS[0], settings={"host": SECRETS[3], "token": SECRETS[4]})
    user = make_user(balance_cents=5000)
    vps = make_service(user, make_package(name="Cloud S"), node=node,
                       infra_ref={"domain": SECRETS[1], "vmid": SECRETS[2], "bmc": SECRETS[3]})
    make_service(user, make_package(name="Metal", kind="dedicated"), node=node, state="suspended",
                 infra_ref={"bmc": SECRETS[3]})
    add_ssh_key(user, "laptop", KEY)
    ticket = tk.open_ticket(user, "Question", "About my server", vps.uuid)
    log_activity(user.id, "restart", "Server restarted.", vps.id)
    database.session.commit()

    login(client, user)
    seen, queue, pages = set(), ["/panel/"], 0
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        resp = client.get(path)
        if resp.status_code != 200 or not resp.content_type.startswith("text/html"):
            continue
        pages += 1
        html = resp.data.decode()
        for secret in SECRETS:
            assert secret not in html, (path, secret)
        # No internal row id as a path segment of a link.
        assert not re.search(rf'href="[^"]*/{vps.id}(?:[/?"])', html), path
        for href in re.findall(r'href="([^"#]+)"', html):
            url = urlsplit(urljoin(path, href))
            if not url.netloc and url.path.startswith(("/panel/", "/contact")) and url.path not in seen:
                queue.append(url.path + (f"?{url.query}" if url.query else ""))
    assert pages >= 8, seen
    assert f"/panel/tickets/{ticket.uuid}" in seen and "/panel/activity" in seen
