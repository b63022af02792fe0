"""The fake drivers pass the same conformance suites every real driver must pass."""

import json

from hostbay.testing import (DnsBackendConformance, FakeDns, FakeNetworkFilter, FakePaymentGateway,
                             FakePowerDriver, FakeVirtDriver, NetworkFilterConformance, PaymentGatewayConformance,
                             PowerDriverConformance, VirtDriverConformance)


class TestFakeVirt(VirtDriverConformance):
    def make_driver(self):
        return FakeVirtDriver({})

    def make_unreachable_driver(self):
        return None  # in memory: nothing to reach

    def observed(self, drv, ref):
        server = FakeVirtDriver.servers[ref["id"]]
        spec = server["spec"]
        return {"vcpus": spec.vcpus, "memory_mib": spec.memory_mib, "disk_gib": server["disk_gib"],
                "system_disk": server["installs"], "iso": server["iso"], "node": server["host"]}

    def make_move_target(self):
        return {"host": "fake-host-2"}


class TestFakePower(PowerDriverConformance):
    def make_driver(self):
        return FakePowerDriver({})

    def make_unreachable_driver(self):
        return None

    def make_target(self):
        return {"address": "127.0.0.1:6230"}

    def observed(self, target):
        m = FakePowerDriver.machines[target["address"]]
        return {"power": m["power"], "boot_device": m["boot"], "boot_efi": m.get("efi", False)}


class TestFakePayments(PaymentGatewayConformance):
    def make_driver(self):
        return FakePaymentGateway({})

    def make_unreachable_driver(self):
        return None

    def signed_delivery(self, drv, provider_ref, settled):
        body = json.dumps({"id": "ev-1", "invoice": provider_ref, "status": "settled" if settled else "pending",
                           "amount": "25.00"}).encode()
        return {"X-Fake-Signature": drv.sign(body)}, body


class TestFakeFilter(NetworkFilterConformance):
    def make_driver(self):
        return FakeNetworkFilter({})

    def make_unreachable_driver(self):
        return None

    def make_server(self):
        virt = FakeVirtDriver({})
        return virt, virt.create(VirtDriverConformance().make_spec(), lambda p, t: None)

    def applied_addresses(self, virt, ref):
        return set(FakeVirtDriver.servers[ref["id"]]["filter"])


class TestFakeDns(DnsBackendConformance):
    def make_driver(self):
        return FakeDns({})

    def make_unreachable_driver(self):
        return None

    def lookup_ptr(self, drv, address):
        return FakeDns.records.get(address)
