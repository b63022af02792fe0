import pytest

from hostbay.core import jobs
from hostbay.core.services import Service


@pytest.fixture
def setup(make_user, make_package, make_node, make_image):
    """A customer, a package, a node and an image of the fake driver."""
    class S:
        pass

    s = S()
    s.user = make_user(balance_cents=0)
    s.package = make_package(monthly_cents=1000)
    s.node = make_node(name="fake-node-a", vcpus=4, memory_mib=2048, disk_gib=100)
    s.image = make_image()
    from hostbay.core.ipam import create_pool

    s.pool = create_pool(name="lifecycle-v4", cidr="198.51.100.0/24", gateway="198.51.100.1")
    return s


@pytest.fixture
def order(db, setup):
    """Create a pending service and enqueue its provisioning the way billing's order does."""
    from hostbay.core import clock
    from hostbay.core.catalog import add_cycle

    def _order(user=None, package=None, hostname="web1.example.test", ssh_key_ids=()):
        user, package = user or setup.user, package or setup.package
        now = clock.now()
        svc = Service(user_id=user.id, package_id=package.id, kind=package.kind, state="pending", cycle="monthly",
                      hostname=hostname, price_cents=package.price_cents("monthly"), image_id=setup.image.id,
                      ssh_key_ids=list(ssh_key_ids), period_start=now, renews_at=add_cycle(now, "monthly"))
        db.session.add(svc)
        db.session.flush()
        op = jobs.enqueue("service.provision", key=f"provision:{svc.uuid}", service=svc, title="Set up server")
        db.session.commit()
        return svc, op

    return _order


def ops_of(db, svc, kind=None):
    q = db.select(jobs.Operation).where(jobs.Operation.service_id == svc.id)
    if kind:
        q = q.where(jobs.Operation.kind == kind)
    return db.session.scalars(q.order_by(jobs.Operation.created_at)).all()
