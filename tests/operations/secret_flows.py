"""The flows that handle secrets, driven through the real pages (shared by the secrets-at-rest and the DEBUG log
scan tests): a Proxmox node with its API token (stand-in cluster), a BTCPay gateway with its API key and webhook
secret (stand-in server), a PowerDNS backend key, a BMC password, an outgoing webhook's signing secret and a user
with TOTP. Every secret is fresh per test, so finding one anywhere means this test put it there."""

from __future__ import annotations

import re
import secrets
import uuid

import pyotp

from hostbay.core import credentials, payments, webhooks
from hostbay.core.accounts import User
from hostbay.core.catalog import Node
from hostbay.core.db import db
from hostbay.core.inventory import HardwareServer
from hostbay.core.payments import Payment
from hostbay.core.rdns import DnsBackendConfig
from hostbay.plugins.crypto_payments.tests.crypto_standins import BTCPayStandIn
from hostbay.plugins.proxmox.standin import ProxmoxStandin
from hostbay.testing.pytest_plugin import login

PW = "correct horse battery"


class TotpClock:
    """The time TOTP codes are checked against, moved in 30-second steps (each code is accepted once)."""

    def __init__(self):
        self.t = 1_800_000_000.0

    def code(self, seed: str) -> str:
        self.t += 30
        return pyotp.TOTP(seed).at(self.t)


class SecretWorld:
    def __init__(self, tmp_path, monkeypatch):
        self.pve = ProxmoxStandin(nodes=("pve1",), task_delay=0.01, workdir=tmp_path / "pve",
                                  token_secret=str(uuid.uuid4())).start()
        self.btcpay = BTCPayStandIn(api_key="bk-" + secrets.token_hex(12),
                                    webhook_secret="wh-" + secrets.token_hex(12))
        self.pdns_key = "pdns-" + secrets.token_hex(12)
        self.bmc_password = "Bmc-" + secrets.token_hex(10)
        self.staff_password = "staff-" + secrets.token_hex(10)
        self.totp_seed = pyotp.random_base32()
        self.totp = TotpClock()
        monkeypatch.setattr(credentials, "_totp_now", lambda: self.totp.t)
        self.webhook_secret_out: str | None = None
        self.admin = self.customer = None
        self.node_id = self.server_id = self.backend_id = None

    def close(self):
        self.pve.stop()
        self.btcpay.close()

    @property
    def secrets(self) -> dict[str, str]:
        out = {"proxmox token secret": self.pve.token_secret, "gateway API key": self.btcpay.api_key,
               "gateway webhook secret": self.btcpay.webhook_secret, "PowerDNS API key": self.pdns_key,
               "BMC password": self.bmc_password, "TOTP seed": self.totp_seed, "staff password": self.staff_password}
        if self.webhook_secret_out:
            out["outgoing webhook secret"] = self.webhook_secret_out
        return out

    # -- accounts -------------------------------------------------------------------------------------------------
    def make_accounts(self, make_user):
        self.admin = make_user(role="admin", password=self.staff_password)
        self.customer = make_user()
        db.session.commit()

    def enable_totp(self, client):
        """The admin turns on two-factor through the account page (the seed the page shows is the one stored)."""
        login(client, self.admin, self.staff_password)
        page = client.get("/panel/account/two-factor")
        seed = re.search(rb'id="totp-secret">([A-Z2-7]+)<', page.data).group(1).decode()
        self.totp_seed = seed
        resp = client.post("/panel/account/two-factor", data={"code": self.totp.code(seed)})
        assert resp.status_code == 200, resp.data
        client.post("/logout")
        db.session.expire_all()
        assert db.session.get(User, self.admin.id).totp_secret == seed

    def staff_login(self, client):
        """Password, then the TOTP code: the second step is what signs in."""
        resp = client.post("/login", data={"email": self.admin.email, "password": self.staff_password})
        assert resp.status_code == 302 and resp.headers["Location"].endswith("/login/two-factor"), resp.status_code
        resp = client.post("/login/two-factor", data={"code": self.totp.code(self.totp_seed)})
        assert resp.status_code == 302, resp.data
        assert client.get("/staff/").status_code == 200
        return resp

    # -- staff configuration -------------------------------------------------------------------------------------
    def add_proxmox_node(self, client) -> str:
        form = {"driver": "proxmox", "name": f"pve-{secrets.token_hex(3)}", "location": "default", "vcpus": "16",
                "memory_mib": "32768", "disk_gib": "500", "enabled": "1"}
        values = {"api_url": self.pve.url, "token_id": self.pve.token_id, "token_secret": self.pve.token_secret,
                  "verify_tls": "1", "ca_bundle": self.pve.ca_file, "node": self.pve.nodes[0],
                  "storage": "local-lvm", "iso_storage": "local", "bridge": "vmbr0", "vmid_min": "100",
                  "vmid_max": "199", "timeout": "5", "task_timeout": "30", "stop_timeout": "2"}
        form.update({f"setting_{k}": v for k, v in values.items()})
        resp = client.post("/staff/nodes/", data=form)
        assert resp.status_code == 302, resp.data
        node = db.session.scalar(db.select(Node).filter_by(name=form["name"]))
        self.node_id = node.id
        page = client.get(resp.headers["Location"]).get_data(as_text=True)
        assert "The connection test passed." in page, page
        assert self.pve.token_secret not in page  # shown write-only
        return page

    def test_node(self, client) -> str:
        resp = client.post(f"/staff/nodes/{self.node_id}/test")
        return client.get(resp.headers["Location"]).get_data(as_text=True)

    def configure_gateway(self, client) -> str:
        form = {**self.btcpay.settings(), "enabled": "1"}
        resp = client.post("/staff/payments/gateways/btcpay", data=form)
        assert resp.status_code == 303, resp.data
        page = client.get("/staff/payments/gateways/btcpay").get_data(as_text=True)
        assert self.btcpay.api_key not in page and self.btcpay.webhook_secret not in page
        return page

    def test_gateway(self, client) -> str:
        resp = client.post("/staff/payments/gateways/btcpay/test")
        return client.get(resp.headers["Location"]).get_data(as_text=True)

    def add_dns_backend(self, client):
        resp = client.post("/staff/network/dns-backends", data={
            "driver": "powerdns", "setting_api_url": "http://127.0.0.1:9", "setting_api_key": self.pdns_key,
            "setting_timeout": "2"})
        assert resp.status_code == 302
        self.backend_id = db.session.scalar(db.select(DnsBackendConfig.id).filter_by(driver="powerdns"))
        assert self.backend_id

    def add_bmc_server(self, client):
        resp = client.post("/staff/inventory/new", data={
            "name": f"fra1-{secrets.token_hex(3)}", "cpu_model": "Xeon", "cpu_cores": "8", "ram_gib": "64",
            "disk_size_gib": "960", "location": "fra1", "bmc_host": "127.0.0.1", "bmc_username": "operator",
            "bmc_password": self.bmc_password})
        assert resp.status_code == 302, resp.data
        self.server_id = db.session.scalar(db.select(HardwareServer.id).order_by(HardwareServer.id.desc()))

    def add_outgoing_webhook(self, app):
        app.config["HOSTBAY_WEBHOOK_ALLOW_PRIVATE"] = True
        ep = webhooks.register_endpoint("http://127.0.0.1:9/hook", ["wallet.credited"], self.admin)
        db.session.commit()
        self.webhook_secret_out = ep.secret
        return ep

    # -- customer money --------------------------------------------------------------------------------------------
    def topup(self, client, amount="25.00") -> Payment:
        login(client, self.customer)
        resp = client.post("/panel/topup", data={"amount": amount, "gateway": "btcpay"})
        assert resp.status_code == 303, resp.get_data(as_text=True)
        return db.session.scalar(db.select(Payment).filter_by(user_id=self.customer.id).order_by(Payment.id.desc()))

    def settle(self, client, payment: Payment):
        """A signed InvoiceSettled delivery (credited) and one with a wrong signature (rejected)."""
        self.btcpay.set_state(payment.provider_ref, "Settled")
        headers, body = self.btcpay.webhook(payment.provider_ref, "InvoiceSettled")
        ok = client.post("/payments/webhook/btcpay", data=body, headers=headers)
        bad_headers, bad_body = self.btcpay.webhook(payment.provider_ref, "InvoiceSettled",
                                                    secret="not-" + self.btcpay.webhook_secret)
        bad = client.post("/payments/webhook/btcpay", data=bad_body, headers=bad_headers)
        return ok, bad, body, bad_body

    def build_all(self, app, client, make_user):
        """Every secret stored through the pages staff use."""
        self.make_accounts(make_user)
        self.enable_totp(client)
        self.staff_login(client)
        self.add_proxmox_node(client)
        self.configure_gateway(client)
        self.add_dns_backend(client)
        self.add_bmc_server(client)
        client.post("/logout")
        self.add_outgoing_webhook(app)
        db.session.expire_all()


def gateway_reads_secrets(world: SecretWorld) -> dict:
    return dict(payments.gateway_config("btcpay").settings)
