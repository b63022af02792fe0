""""Test connection": validate() runs when staff add or change a node, a DNS backend or a payment gateway, and its
message is shown."""

import pytest

from hostbay.core.catalog import Node
from hostbay.core.db import db
from hostbay.core.drivers import DnsBackend, PaymentGateway, Setting
from hostbay.core.errors import FatalDriverError
from hostbay.core.hookspecs import hookimpl
from hostbay.testing import fakes
from hostbay.testing.pytest_plugin import login

CALLS = []


class UnreachableVirt(fakes.FakeVirtDriver):
    name, label = "unreachable", "Unreachable host"
    settings = [Setting("uri", "URI", type="url")]

    def validate(self):
        CALLS.append(("virt", self.config["uri"]))
        raise FatalDriverError(f"cannot connect to {self.config['uri']}: connection refused")


class UnreachableDns(DnsBackend):
    name, label = "unreachable-dns", "Unreachable DNS"

    def set_ptr(self, address, hostname):
        pass

    def validate(self):
        CALLS.append(("dns", None))
        raise FatalDriverError("the DNS API answered 401")


class UnreachableGateway(PaymentGateway):
    name, label = "unreachable-pay", "Unreachable payments"
    settings = [Setting("api_key", "API key", type="secret")]

    def create_checkout(self, amount, reference, return_url, notify_url):
        raise NotImplementedError

    def parse_webhook(self, headers, raw_body):
        raise NotImplementedError

    def validate(self):
        CALLS.append(("payment", None))
        raise FatalDriverError("the provider refused the API key")


class Plugin:
    @hookimpl
    def hostbay_virt_drivers(self):
        return [UnreachableVirt]

    @hookimpl
    def hostbay_dns_backends(self):
        return [UnreachableDns]

    @hookimpl
    def hostbay_payment_gateways(self):
        return [UnreachableGateway]


@pytest.fixture
def admin(app, client, make_user, register_plugin):
    CALLS.clear()
    with register_plugin(Plugin()):
        user = make_user(role="admin")
        login(client, user)
        yield user


def _page(client, resp):
    assert resp.status_code in (302, 303), resp.status_code
    return client.get(resp.headers["Location"]).get_data(as_text=True)


def test_adding_and_changing_a_node_runs_validate(admin, client):
    page = _page(client, client.post("/staff/nodes/", data={"driver": "unreachable", "name": "hv-1", "vcpus": "8",
                                                           "memory_mib": "16384", "disk_gib": "200", "enabled": "1",
                                                           "setting_uri": "qemu+tcp://127.0.0.1:1/system"}))
    node = db.session.scalar(db.select(Node).filter_by(name="hv-1"))
    assert node is not None and node.vcpus == 8 and node.settings == {"uri": "qemu+tcp://127.0.0.1:1/system"}
    assert "The connection test failed: cannot connect to qemu+tcp://127.0.0.1:1/system" in page
    assert CALLS == [("virt", "qemu+tcp://127.0.0.1:1/system")]
    page = _page(client, client.post(f"/staff/nodes/{node.id}", data={"setting_uri": "qemu+tcp://127.0.0.1:2/system",
                                                                       "enabled": "1"}))
    assert CALLS[-1] == ("virt", "qemu+tcp://127.0.0.1:2/system") and "connection test failed" in page
    page = _page(client, client.post(f"/staff/nodes/{node.id}/test"))
    assert len(CALLS) == 3 and "connection test failed" in page


def test_a_working_node_passes_the_test(admin, client):
    page = _page(client, client.post("/staff/nodes/", data={"driver": "fake", "name": "sim-1", "vcpus": "4",
                                                           "memory_mib": "4096", "disk_gib": "50"}))
    assert "sim-1 was added. The connection test passed." in page


def test_adding_a_dns_backend_runs_validate(admin, client):
    page = _page(client, client.post("/staff/network/dns-backends", data={"driver": "unreachable-dns"}))
    assert "The connection test failed: the DNS API answered 401" in page and CALLS == [("dns", None)]


def test_saving_a_gateway_runs_validate(admin, client):
    resp = client.post("/staff/payments/gateways/unreachable-pay", data={"api_key": "k-123"})
    assert "The connection test failed: the provider refused the API key" in _page(client, resp)
    assert CALLS == [("payment", None)]
    resp = client.post("/staff/payments/gateways/unreachable-pay/test")
    assert "provider refused" in _page(client, resp) and len(CALLS) == 2


def test_node_pages_are_for_administrators(app, client, make_user):
    login(client, make_user(role="support"))
    assert client.get("/staff/nodes/").status_code == 404
    assert client.post("/staff/nodes/", data={"driver": "fake", "name": "x"}).status_code == 404
