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
