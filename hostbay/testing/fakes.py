"""In-memory fake drivers, one per interface. They keep state per process in class-level dicts, honour the same
contracts as real drivers (the conformance suites prove it), and back the embedded demo. Registered as the
``fake`` plugin."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from decimal import Decimal
from typing import Any

from hostbay.core.drivers import (Address, Checkout, ConsoleTarget, DnsBackend, NetworkFilter, PaymentGateway,
                                  PaymentState, PaymentStatus, PowerDriver, PowerState, ServerSpec, Setting,
                                  SignatureError, VirtDriver, WebhookEvent)
from hostbay.core.errors import FatalDriverError
from hostbay.core.hookspecs import hookimpl

_lock = threading.Lock()


class FakeVirtDriver(VirtDriver):
    name = "fake"
    label = "Simulated (demo)"
    settings = [Setting("step_delay", "Seconds per simulated step", type="int", required=False, default=0,
                        help="Slow the simulation down to watch progress in the panel."),
                Setting("console_screen", "Serve a console screen", type="bool", required=False, default=False,
                        help="Answer console connections with a small VNC server showing a text screen (the "
                             "demo's console); otherwise the console target is a fixed placeholder."),
                Setting("guest_boot_seconds", "Seconds until the simulated guest reports readiness", type="int",
                        required=False, default=0,
                        help="0: the simulated guest never reports (tests play the guest); otherwise it POSTs "
                             "its phone-home to the readiness URL through the app after this many seconds."),
                Setting("host", "Simulated host name", required=False, default="fake-host",
                        help="Where the simulated servers of this node live (a move changes it).")]
    capabilities = frozenset({"resize", "rebuild", "iso", "console", "suspend", "readiness", "move"})
    servers: dict[str, dict[str, Any]] = {}  # a server's "ready_url" is where its (simulated) guest would report

    def _step(self, progress, pct, text):
        progress(pct, text)
        if self.config["step_delay"]:
            time.sleep(self.config["step_delay"])

    def _get(self, ref) -> dict[str, Any]:
        server = self.servers.get(ref.get("id", ""))
        if server is None or server.get("host", self.config["host"]) != self.config["host"]:
            raise FatalDriverError(f"fake server {ref!r} does not exist on {self.config['host']}")
        return server

    def create(self, spec: ServerSpec, progress):
        with _lock:
            server = self.servers.get(spec.uuid)
            if server is None:
                server = self.servers[spec.uuid] = {"state": PowerState.STOPPED, "spec": spec, "iso": None,
                                                    "host": self.config["host"],
                                                    "disk_gib": spec.disk_gib, "boot": "hd", "installs": 0,
                                                    "filter": [a.address for a in spec.addresses]}
        self._step(progress, 30, "Creating disk")
        server["installs"] += 1
        server["ready_url"] = spec.ready_url
        self._simulate_guest(spec)
        self._step(progress, 70, "Starting server")
        server["state"] = PowerState.RUNNING
        return {"id": spec.uuid, "domain": f"fake-{spec.uuid[:8]}"}

    def status(self, ref):
        server = self.servers.get(ref.get("id", ""))
        if server is None or server.get("host", self.config["host"]) != self.config["host"]:
            return PowerState.MISSING
        return server["state"]

    def start(self, ref):
        self._get(ref)["state"] = PowerState.RUNNING

    def stop(self, ref, timeout=60):
        self._get(ref)["state"] = PowerState.STOPPED

    def restart(self, ref):
        self._get(ref)["state"] = PowerState.RUNNING

    def reinstall(self, ref, spec, progress):
        server = self._get(ref)
        self._step(progress, 40, "Writing a fresh disk")
        server.update(spec=spec, installs=server["installs"] + 1, disk_gib=spec.disk_gib, state=PowerState.RUNNING,
                      ready_url=spec.ready_url)
        self._simulate_guest(spec)
        return ref

    def _simulate_guest(self, spec: ServerSpec) -> None:
        """A simulated guest's cloud-init phone_home: POST to the readiness URL through the app itself (no
        network), ``guest_boot_seconds`` after the server started."""
        delay = self.config.get("guest_boot_seconds") or 0
        if not spec.ready_url or delay <= 0:
            return
        from urllib.parse import urlsplit

        from flask import current_app

        app, path = current_app._get_current_object(), urlsplit(spec.ready_url).path
        form = {"instance_id": f"{spec.uuid}-fake", "hostname": spec.hostname.split(".")[0], "fqdn": spec.hostname}

        def report():
            with app.test_client() as client:
                client.post(path, data=form)

        timer = threading.Timer(delay, report)
        timer.daemon = True
        timer.start()

    def delete(self, ref):
        self.servers.pop(ref.get("id", ""), None)

    def resize(self, ref, spec, progress):
        server = self._get(ref)
        if spec.disk_gib < server["disk_gib"]:
            raise FatalDriverError("disks only grow; use rebuild")
        server.update(spec=spec, disk_gib=spec.disk_gib)
        return ref

    def rebuild(self, ref, spec, progress):
        return self.reinstall(ref, spec, progress)

    def suspend(self, ref):
        self._get(ref)["state"] = PowerState.STOPPED

    def move(self, ref, spec, target, progress):
        host = self.clean_settings(target)["host"]
        server = self.servers.get(ref.get("id", ""))
        if server is None or server.get("host") not in (self.config["host"], host):
            raise FatalDriverError(f"fake server {ref!r} does not exist on {self.config['host']}")
        if server["host"] != host:
            self._step(progress, 30, "Stopping the server")
            server["state"] = PowerState.STOPPED
            self._step(progress, 60, "Copying the disk")
            server["host"] = host
        server["state"] = PowerState.RUNNING
        return ref

    def mount_iso(self, ref, iso_path):
        server = self._get(ref)
        server.update(iso=iso_path, boot="cdrom")

    def eject_iso(self, ref):
        self._get(ref).update(iso=None, boot="hd")

    def console_target(self, ref):
        if self.config.get("console_screen"):
            # The console proxy runs in its own process, which does not share this class's server table: any
            # server of this driver shows the same text screen there.
            from .rfb import shared_server

            return ConsoleTarget("127.0.0.1", shared_server().port, protocol="vnc")
        self._get(ref)
        return ConsoleTarget("127.0.0.1", 5700, protocol="vnc-websocket")


class FakeNetworkFilter(NetworkFilter):
    name = "fake"
    label = "Simulated filter"
    drivers = frozenset({"fake"})

    def apply(self, virt, ref, addresses: list[Address]):
        FakeVirtDriver.servers[ref["id"]]["filter"] = sorted(a.address for a in addresses)


class FakePowerDriver(PowerDriver):
    name = "fake"
    label = "Simulated power"
    capabilities = frozenset({"boot_device"})
    machines: dict[str, dict[str, Any]] = {}

    def _m(self, target):
        return self.machines.setdefault(target.get("address", "default"), {"power": PowerState.STOPPED, "boot": "disk"})

    def power_state(self, target):
        return self._m(target)["power"]

    def power_on(self, target):
        self._m(target)["power"] = PowerState.RUNNING

    def power_off(self, target, soft=False):
        self._m(target)["power"] = PowerState.STOPPED

    def power_cycle(self, target):
        self._m(target)["power"] = PowerState.RUNNING

    def set_boot_device(self, target, device, efi=False):
        if device not in ("pxe", "disk", "cdrom"):
            raise FatalDriverError(f"unknown boot device {device!r}")
        self._m(target)["boot"] = device
        self._m(target)["efi"] = bool(efi)


class FakePaymentGateway(PaymentGateway):
    """Checkout and webhooks with an HMAC-SHA256 signature over the raw body (header ``X-Fake-Signature``)."""

    name = "fake"
    label = "Test payments"
    settings = [Setting("secret", "Webhook secret", type="secret", required=False, default="fake-secret")]
    capabilities = frozenset({"refetch"})
    invoices: dict[str, dict[str, Any]] = {}

    def create_checkout(self, amount: Decimal, reference: str, return_url: str, notify_url: str) -> Checkout:
        """The checkout link is the hosted pay page (:data:`pay_page`), served by the panel itself."""
        from urllib.parse import urlsplit

        ref = "fk_" + hashlib.sha256(reference.encode()).hexdigest()[:16]
        self.invoices.setdefault(ref, {"amount": Decimal(amount), "status": PaymentStatus.PENDING,
                                       "return_url": return_url, "notify_url": notify_url})
        origin = "{0.scheme}://{0.netloc}".format(urlsplit(notify_url))
        return Checkout(ref, f"{origin}{PAY_PAGE_PREFIX}/{ref}")

    def sign(self, body: bytes) -> str:
        return hmac.new(self.config["secret"].encode(), body, hashlib.sha256).hexdigest()

    def parse_webhook(self, headers, raw_body: bytes) -> WebhookEvent:
        given = {k.lower(): v for k, v in headers.items()}.get("x-fake-signature", "")
        if not hmac.compare_digest(given, self.sign(raw_body)):
            raise SignatureError("bad signature")
        data = json.loads(raw_body)
        return WebhookEvent(data["id"], data["invoice"], PaymentStatus(data["status"]),
                            Decimal(data["amount"]) if data.get("amount") else None, data["status"])

    def fetch(self, provider_ref: str) -> PaymentState:
        inv = self.invoices.get(provider_ref)
        if inv is None:
            raise FatalDriverError(f"unknown invoice {provider_ref}")
        return PaymentState(provider_ref, inv["status"], inv["amount"], inv["status"].value)


PAY_PAGE_PREFIX = "/test-gateway/pay"

_PAY_PAGE = """{% extends "base.html" %}
{% block title %}Test payment · hostbay{% endblock %}
{% block content %}
<h1>Test payment</h1>
<p>This is the <strong>test payment gateway</strong>: no money moves. Paying here settles the invoice and sends
   the gateway's signed webhook to the panel, exactly as a real provider would.</p>
<dl class="summary"><dt>Amount</dt><dd data-amount>${{ amount }}</dd><dt>Status</dt><dd>{{ status }}</dd></dl>
{% if status == "pending" %}
<form method="post" class="inline">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <input type="hidden" name="outcome" value="settled">
  <button type="submit">Pay ${{ amount }}</button>
</form>
<form method="post" class="inline">
  <input type="hidden" name="csrf_token" value="{{ csrf_token() }}">
  <input type="hidden" name="outcome" value="expired">
  <button type="submit" class="secondary">Cancel payment</button>
</form>
{% else %}
<p><a class="button" href="{{ return_url }}">Back to the panel</a></p>
{% endif %}
{% endblock %}"""


def _pay_blueprint():
    """The test gateway's hosted pay page. It exists only while the test gateway is enabled (else 404), for
    signed-in users: paying marks the invoice settled (so the panel's re-fetch sees it settled), posts the signed
    webhook to the real webhook endpoint and returns the customer to the panel."""
    import urllib.request

    from flask import Blueprint, abort, redirect, render_template_string, request
    from flask_login import login_required

    bp = Blueprint("test_gateway", __name__, url_prefix=PAY_PAGE_PREFIX)

    def _invoice(ref):
        from hostbay.core import payments
        from hostbay.core.errors import NotFound

        try:
            drv = payments.gateway(FakePaymentGateway.name)
        except NotFound:
            abort(404)
        inv = FakePaymentGateway.invoices.get(ref)
        if inv is None or not inv.get("notify_url"):
            abort(404)
        return drv, inv

    @bp.route("/<ref>", methods=["GET", "POST"])
    @login_required
    def pay(ref):
        drv, inv = _invoice(ref)
        if request.method == "POST" and inv["status"] == PaymentStatus.PENDING:
            outcome = PaymentStatus.SETTLED if request.form.get("outcome") == "settled" else PaymentStatus.EXPIRED
            inv["status"] = outcome
            body = json.dumps({"id": f"evt-{ref}-{outcome.value}", "invoice": ref, "status": outcome.value,
                               "amount": str(inv["amount"])}).encode()
            req = urllib.request.Request(inv["notify_url"], data=body, method="POST",
                                         headers={"Content-Type": "application/json",
                                                  "X-Fake-Signature": drv.sign(body)})
            from hostbay.core.db import db

            db.session.commit()  # hold no transaction (nor SQLite's write lock) while the panel takes the webhook
            try:
                with urllib.request.urlopen(req, timeout=20) as resp:  # noqa: S310 - the panel's own endpoint
                    resp.read()
            except OSError:
                pass  # like a real provider: the panel's re-fetch and sweep settle it later
            return redirect(inv["return_url"], 303)
        return render_template_string(_PAY_PAGE, amount=f"{inv['amount']:.2f}", status=inv["status"].value,
                                      return_url=inv["return_url"])

    return bp


class FakeDns(DnsBackend):
    name = "fake"
    label = "In-memory DNS"
    records: dict[str, str] = {}
    forward: dict[str, list[str]] = {}

    def set_ptr(self, address, hostname):
        if hostname is None:
            self.records.pop(address, None)
        else:
            self.records[address] = hostname

    def resolve(self, hostname):
        return self.forward.get(hostname, [])


@hookimpl
def hostbay_virt_drivers():
    return [FakeVirtDriver]


@hookimpl
def hostbay_network_filters():
    return [FakeNetworkFilter]


@hookimpl
def hostbay_power_drivers():
    return [FakePowerDriver]


@hookimpl
def hostbay_payment_gateways():
    return [FakePaymentGateway]


@hookimpl
def hostbay_dns_backends():
    return [FakeDns]


@hookimpl
def hostbay_blueprints():
    return [_pay_blueprint()]


def _wait_job(op, payload):
    """``fake.wait``: a job whose one driver call waits ``payload["seconds"]`` (I/O-bound, like a hypervisor call),
    through the driver-call template. When ``payload["record"]`` names a Redis list (rq mode), the operation's id
    is appended to it once per run of the handler (``payload["record_file"]``: a line appended to that file): the
    scale-out benchmark and the fault tests count runs there."""
    from hostbay.core import jobs

    jobs.call_driver(op, time.sleep, float(payload.get("seconds", 0.05)))
    if payload.get("record"):
        jobs.redis_connection().rpush(payload["record"], op.id)
    if payload.get("record_file"):  # the same, in a file (for tests that stop Redis): one line per run
        with open(payload["record_file"], "a") as fh:
            fh.write(op.id + "\n")
    return {"text": "Waited", "pid": os.getpid()}


@hookimpl
def hostbay_job_handlers():
    from hostbay.core import jobs

    return {"fake.wait": jobs.handler("fake.wait", queue=jobs.DRIVER)(_wait_job)}
