"""The server spec a driver receives carries the IPAM addresses, the pool's resolvers and the port speed."""

from hostbay.core import ipam
from hostbay.core.lifecycle import build_spec


def test_spec_has_addresses_resolvers_and_port_speed(db, make_user, make_package, make_node, make_service):
    node = make_node()
    ipam.create_pool(name="v4", cidr="198.51.100.0/24", gateway="198.51.100.1", nameservers=["198.51.100.53"],
                     node_ids=[node.id])
    db.session.commit()
    pkg = make_package(port_speed_mbit=250, ipv4_count=2)
    svc = make_service(make_user(), pkg, node=node, state="provisioning")
    ipam.allocate_for_service(svc)
    spec = build_spec(svc)
    assert [a.address for a in spec.addresses] == ["198.51.100.2", "198.51.100.3"]
    assert all(a.gateway == "198.51.100.1" and a.prefix == 24 for a in spec.addresses)
    assert spec.nameservers == ("198.51.100.53",)
    assert spec.port_speed_mbit == 250


def test_service_history_shows_each_charge_once(db, setup, make_user):
    from hostbay.core import billing
    from hostbay.core.lifecycle import service_history

    user = make_user(balance_cents=5000)
    svc = billing.place_order(user, setup.package, "monthly", "h1.example.test", image=setup.image, key="k1")
    db.session.commit()
    lines = [h["message"] for h in service_history(svc) if h["event"] == "billing"]
    assert len(lines) == 1 and "charged from your wallet" in lines[0], lines
