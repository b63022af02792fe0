"""Dedicated services announce their changes through the one after-commit mechanism
(``jobs.notify_after_commit``): each event fires once, after its change committed, with the service loaded anew."""

from hostbay.core import billing, jobs, ledger, renewals
from hostbay.core.hookspecs import hookimpl


def _fresh(db, obj):
    db.session.expire_all()
    return db.session.get(type(obj), obj.id)


def test_dedicated_events_fire_once_after_their_commit(db, app, clock, sim, make_user, ded_package, add_server,
                                                       make_image, register_plugin):
    seen = []

    class Listener:
        # the listener runs in its own session after the commit: the state it reads is the committed one
        @hookimpl
        def hostbay_service_provisioned(self, service):
            seen.append(("provisioned", service.uuid, service.state))

        @hookimpl
        def hostbay_service_suspended(self, service, reason):
            seen.append(("suspended", service.uuid, service.state, reason))

        @hookimpl
        def hostbay_service_unsuspended(self, service):
            seen.append(("unsuspended", service.uuid, service.state))

        @hookimpl
        def hostbay_service_terminated(self, service):
            seen.append(("terminated", service.uuid, service.state))

    image = make_image(driver="ipmi", source="debian-12/amd64", name="Debian 12", slug="debian-12")
    pkg = ded_package()
    add_server(sim, auto_install=True)
    user = make_user(balance_cents=9900)
    sim.control({})
    with register_plugin(Listener(), name="listener"):
        svc = billing.place_order(user, pkg, "monthly", "metal.example.com", image, [], key="k")
        assert seen == []  # nothing before the order's commit
        db.session.commit()
        svc = _fresh(db, svc)
        assert svc.state == "active"
        assert seen == [("provisioned", svc.uuid, "active")]

        clock.set(svc.renews_at)
        renewals.renewal_sweep()
        jobs.run_pending()
        assert seen[1:] == [("suspended", svc.uuid, "suspended", "unpaid")]

        ledger.credit(user.id, 9900, kind="topup", key="topup-1", description="Top-up")
        db.session.commit()
        jobs.run_pending()
        assert seen[2:] == [("unsuspended", svc.uuid, "active")]

        svc = _fresh(db, svc)
        clock.set(svc.renews_at)
        renewals.renewal_sweep()
        jobs.run_pending()
        clock.advance(days=app.config["HOSTBAY_RETENTION_DAYS"] + 1)
        assert renewals.retention_sweep() == 1
        jobs.run_pending()
        assert seen[3:] == [("suspended", svc.uuid, "suspended", "unpaid"), ("terminated", svc.uuid, "terminated")]
