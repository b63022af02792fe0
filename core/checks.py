"""``hostbay check``: what is misconfigured for production, one finding per line, each with what to do.

Each check returns findings ``(level, text)``; ``error`` findings make the command exit non-zero, ``warning`` ones
do not. The checks read the app's configuration and ask the database and Redis, nothing else; plugins add their
own through ``hostbay_checks``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

WORKER_SEEN_SECONDS = 60


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    text: str


def run_checks(app) -> list[Finding]:
    out: list[Finding] = []
    cfg = app.config
    for check in (_embedded, _base_url, _secret_keys, _database, _redis_and_workers, _proxies):
        out.extend(check(app, cfg))
    out.extend(_plugins(app))
    return out


def _plugins(app):
    """The plugins' own findings (``hostbay_checks``; a plugin whose check raises costs only its own findings)."""
    with app.app_context():
        for level, text in app.extensions["hostbay"].collect("hostbay_checks", app=app):
            yield Finding("error" if level == "error" else "warning", text)


def _embedded(app, cfg):
    if cfg["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        yield Finding("error", "embedded mode: the database is SQLite; set HOSTBAY_DATABASE_URL to PostgreSQL")
    if cfg["HOSTBAY_JOBS"] != "rq":
        yield Finding("error", f"embedded mode: jobs run in the panel process ({cfg['HOSTBAY_JOBS']}); "
                               "set HOSTBAY_REDIS_URL and run `hostbay worker`")


def _base_url(app, cfg):
    if not cfg["HOSTBAY_BASE_URL"].startswith("https://"):
        yield Finding("error", f"HOSTBAY_BASE_URL is {cfg['HOSTBAY_BASE_URL']}: customers, e-mails and payment "
                               "return links need the panel's public https:// URL")


def _secret_keys(app, cfg):
    if not cfg.get("HOSTBAY_SECRET_KEY_SET"):
        yield Finding("warning", "HOSTBAY_SECRET_KEY is not set: sessions are signed with the key generated in "
                                 f"{cfg['INSTANCE_PATH']}/secret_key; every web process must share it (set it, or "
                                 "share and back up that file)")
    from . import config as config_mod

    if "HOSTBAY_SECRET_KEYS" in config_mod.SETTINGS and not cfg.get("HOSTBAY_SECRET_KEYS"):
        yield Finding("warning", "HOSTBAY_SECRET_KEYS is not set: stored secrets are encrypted with keys generated "
                                 f"in {cfg['INSTANCE_PATH']}; every process must share them and a lost key loses "
                                 "the secrets (set it, or back up that file)")


def _database(app, cfg):
    from .db import db

    try:
        with app.app_context():
            db.session.execute(db.text("SELECT 1"))
            from alembic.migration import MigrationContext
            from alembic.script import ScriptDirectory

            from flask import current_app

            current = MigrationContext.configure(db.session.connection()).get_current_revision()
            script = ScriptDirectory.from_config(current_app.extensions["migrate"].migrate.get_config())
            head = script.get_current_head()
            db.session.rollback()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        yield Finding("error", f"database unreachable: {type(exc).__name__}")
        return
    if current != head:
        yield Finding("error", f"database schema is at {current or 'nothing'}, the code expects {head}: "
                               "run `hostbay db upgrade`")


def _redis_and_workers(app, cfg):
    if not cfg["HOSTBAY_REDIS_URL"]:
        return
    from rq import Worker

    from . import jobs

    try:
        conn = jobs.redis_connection(app)
        conn.ping()
        workers = Worker.all(connection=conn)
    except Exception as exc:  # noqa: BLE001
        yield Finding("error", f"Redis unreachable at the configured HOSTBAY_REDIS_URL: {type(exc).__name__}")
        return
    now = time.time()
    served = set()
    for w in workers:
        if w.last_heartbeat and now - w.last_heartbeat.timestamp() <= WORKER_SEEN_SECONDS:
            served.update(w.queue_names())
    what = {jobs.MONEY: "renewals, suspensions and payments", jobs.DRIVER: "provisioning and server actions",
            jobs.NOTIFY: "notices, webhooks and probes"}
    missing = [(c, name) for c, name in zip(jobs.QUEUE_CLASSES, jobs.queue_names(app)) if name not in served]
    if len(missing) == len(jobs.QUEUE_CLASSES):
        yield Finding("error", f"no `hostbay worker` on the queues {', '.join(repr(n) for _, n in missing)} seen in "
                               f"the last {WORKER_SEEN_SECONDS} s: nothing runs provisioning, renewals or notices")
        return
    for cls, name in missing:
        yield Finding("error", f"no `hostbay worker` on queue {name!r} seen in the last {WORKER_SEEN_SECONDS} s: "
                               f"nothing runs {what[cls]}")


def _proxies(app, cfg):
    from . import config as config_mod

    if ("HOSTBAY_TRUSTED_PROXIES" in config_mod.SETTINGS and cfg["HOSTBAY_BASE_URL"].startswith("https://")
            and not int(cfg.get("HOSTBAY_TRUSTED_PROXIES") or 0)):
        yield Finding("warning", "HOSTBAY_TRUSTED_PROXIES is 0: behind a TLS proxy every client has the proxy's "
                                 "address (rate limits, audit trail); set it to the number of proxies in front")
