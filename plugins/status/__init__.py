"""Public status page: components, incidents with their timeline, maintenance windows that follow the clock,
latency probes with rolled-up history, Statuspage-shaped JSON and an Atom feed. See docs/status.md.

Everything registers through hooks: blueprints (public and staff), job handlers and their schedules, the staff
menu entry, the customers' incident banners (dashboard notices) and the demo data.
"""

from __future__ import annotations

from hostbay.core.hookspecs import hookimpl

if __name__ == "hostbay.plugins.status":
    # The tables join the metadata once the plugin loads. (A test collector walking the source tree may import
    # this folder a second time as ``plugins.status``; the tables are defined under the installed name only.)
    from . import models  # noqa: F401

PROBE_EVERY = 30
TICK_EVERY = 60
ROLLUP_EVERY = 300


@hookimpl
def hostbay_blueprints():
    from .staff import bp as staff_bp
    from .views import bp

    return [bp, staff_bp]


def _probe_sweep(op, payload):
    from .probes import sweep

    return sweep()


def _tick(op, payload):
    from .status import advance_maintenance

    return {"changed": advance_maintenance()}


def _rollup(op, payload):
    from . import rollup

    out = rollup.run()
    return {"written": {str(k): v for k, v in out["written"].items()}, "purged": out["purged"]}


@hookimpl
def hostbay_job_handlers():
    from hostbay.core import jobs

    # probes and the page's bookkeeping: the notifications queue, never ahead of renewals or driver work
    return {kind: jobs.handler(kind, queue=jobs.NOTIFY)(fn)
            for kind, fn in (("status.probe_sweep", _probe_sweep), ("status.tick", _tick), ("status.rollup", _rollup))}


@hookimpl
def hostbay_scheduled_jobs():
    return [("status.probe_sweep", PROBE_EVERY), ("status.tick", TICK_EVERY), ("status.rollup", ROLLUP_EVERY)]


@hookimpl
def hostbay_admin_menu():
    return [("Status page", "status_staff.index", "status.manage")]


@hookimpl
def hostbay_dashboard_notices(user):
    from .banners import notices_for

    return notices_for(user)


@hookimpl
def hostbay_demo_data():
    from .demo import load

    return load()
