"""The ``hostbay`` command: Flask's CLI with hostbay's commands (run, worker, db, create-admin, demo, plugins)."""

from __future__ import annotations

import logging
import sys
import threading
import time

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

log = logging.getLogger(__name__)


def _create_app():
    from hostbay.web import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_version_option=False, load_dotenv=False)
def main():
    """hostbay: plugin-based hosting framework."""


@main.command("worker")
@click.option("--queue", "queues", multiple=True, metavar="CLASS",
              help="Queue class to serve: money, driver, notify or all; repeat for several (default: "
                   "HOSTBAY_WORKER_QUEUES, else all). Several are served in priority order money → driver → notify.")
@click.option("--burst", is_flag=True, help="Quit when the queue is empty.")
@click.option("--with-scheduler/--without-scheduler", default=True,
              help="Also enqueue scheduled jobs (safe to run in several workers: each period runs once).")
@with_appcontext
def worker(queues, burst, with_scheduler):
    """Run an RQ worker for hostbay jobs (needs HOSTBAY_REDIS_URL)."""
    from hostbay.core import jobs

    app = current_app._get_current_object()
    if not app.config["HOSTBAY_REDIS_URL"]:
        raise click.ClickException("HOSTBAY_REDIS_URL is not set: in embedded mode jobs run inside the panel.")
    conn = jobs.redis_connection(app)
    try:
        classes = jobs.parse_queue_classes(queues or [app.config.get("HOSTBAY_WORKER_QUEUES") or "all"])
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--queue") from None
    names = jobs.queue_names(app, classes)
    stop = threading.Event()
    if with_scheduler and not burst:
        threading.Thread(target=jobs.scheduler_loop, args=(app, stop), daemon=True, name="hostbay-scheduler").start()
    click.echo(f"hostbay worker listening on {', '.join(names)}")
    try:
        _work_surviving_redis(conn, names, burst, app.config["HOSTBAY_LOG_LEVEL"])
    finally:
        stop.set()


def _work_surviving_redis(conn, names, burst, level, max_wait: float = 30.0) -> None:
    """Run RQ's worker loop; when Redis goes away under it (RQ waits for Redis between jobs but gives up when the
    connection drops while it records a job), wait with back-off and start a new worker on the same queues. What
    was queued survives in Redis (run it with an append-only file); an operation finished while Redis was away is
    not run again (the operation's claim), and one queued meanwhile is re-dispatched by the stale sweep."""
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from rq import Queue, SimpleWorker

    wait = 1.0
    while True:
        # SimpleWorker runs jobs in this process, which holds the app context and its database pool (no fork).
        w = SimpleWorker([Queue(n, connection=conn) for n in names], connection=conn)
        try:
            w.work(burst=burst, with_scheduler=True, logging_level=level)
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("lost Redis (%s); starting again in %.0f s", exc, wait)
            time.sleep(wait)
            wait = min(max_wait, wait * 2)
            while True:
                try:
                    conn.ping()
                    break
                except (RedisConnectionError, RedisTimeoutError):
                    time.sleep(wait)
                    wait = min(max_wait, wait * 2)
            wait = 1.0


@main.command("run-jobs")
@with_appcontext
def run_jobs():
    """Run queued operations in this process and exit (maintenance)."""
    from hostbay.core import jobs

    click.echo(f"ran {jobs.run_pending()} operation(s)")


@main.command("create-admin")
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", default="admin", help="A staff role of the staff_roles table: admin, support, billing or a "
              "custom one.")
@with_appcontext
def create_admin(email, password, role):
    """Create a staff account."""
    from hostbay.core.accounts import create_user
    from hostbay.core.db import db
    from hostbay.core.errors import UserError
    from hostbay.core.staff_roles import staff_role_names

    names = staff_role_names()
    if role not in names:
        raise click.BadParameter(f"{role!r} is not a staff role (one of: {', '.join(names)}).", param_hint="--role")
    try:
        user = create_user(email, password, role=role)
        db.session.commit()
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created {role} {user.email}")


@main.command("demo")
@with_appcontext
def demo():
    """Create demo data (idempotent): packages, images, a node, a customer with balance and an admin."""
    from hostbay.core.demo import load_demo

    for line in load_demo():
        click.echo(line)


@main.command("console-proxy")
@click.option("--host", default=None, help="Listen address (default: HOSTBAY_CONSOLE_PROXY_HOST, 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Listen port (default: HOSTBAY_CONSOLE_PROXY_PORT, 6080).")
@with_appcontext
def console_proxy(host, port):
    """Run the web console proxy (websockify with single-use console tokens); put it behind the TLS proxy."""
    from hostbay.core.console_proxy import serve

    app = current_app._get_current_object()
    click.echo(f"hostbay console proxy on {host or app.config['HOSTBAY_CONSOLE_PROXY_HOST']}:"
               f"{port or app.config['HOSTBAY_CONSOLE_PROXY_PORT']} for {app.config['HOSTBAY_CONSOLE_URL']}")
    serve(app, host, port)


@main.group("api-token")
def api_token_group():
    """API tokens."""


@api_token_group.command("create")
@click.option("--email", required=True, help="The account the token acts as (customer or staff).")
@click.option("--scope", type=click.Choice(["read", "write"]), required=True)
@click.option("--name", default="command line", show_default=True)
@click.option("--expires", "expires_days", type=int, default=None, help="Days until the token expires.")
@click.option("--network", "networks", multiple=True, help="Allowed client network (CIDR); repeatable.")
@with_appcontext
def api_token_create(email, scope, name, expires_days, networks):
    """Create an API token and print it (once: only its hash is stored)."""
    from hostbay.core import credentials
    from hostbay.core.accounts import User, normalise_email
    from hostbay.core.activity import log_activity
    from hostbay.core.db import db
    from hostbay.core.errors import UserError

    try:
        user = db.session.scalar(db.select(User).filter_by(email=normalise_email(email), active=True))
        if user is None:
            raise UserError(f"No active account with the e-mail address {email}.")
        token, raw = credentials.create_api_token(user, name, scope=scope, expires_days=expires_days,
                                                  networks=list(networks))
        log_activity(user.id, "account", f"API token “{token.name}” created.")
        db.session.commit()
    except UserError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(raw)

@main.command("check")
@with_appcontext
def check():
    """Print what is misconfigured for production; exits 1 when anything must be fixed."""
    from hostbay.core.checks import run_checks

    findings = run_checks(current_app._get_current_object())
    for f in findings:
        click.echo(f"{f.level.upper():8} {f.text}")
    if not findings:
        click.echo("ok: nothing to fix")
    if any(f.level == "error" for f in findings):
        raise SystemExit(1)


@main.group("plugins")
def plugins_group():
    """Inspect plugins."""


@plugins_group.command("list")
@with_appcontext
def plugins_list():
    """Print every plugin with its version, state and implemented hooks."""
    reg = current_app.extensions["hostbay"]
    rows = [("NAME", "VERSION", "STATE", "HOOKS / REASON")]
    for p in reg.plugins:
        reason = " ".join((p.error or "").split())  # one line per plugin, whatever the exception text
        rows.append((p.name, p.version or "-", p.state, reason if p.state != "loaded" else ", ".join(p.hooks) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


@main.group("secrets")
def secrets_group():
    """Secrets at rest (HOSTBAY_SECRET_KEYS)."""


@secrets_group.command("rotate")
@with_appcontext
def secrets_rotate():
    """Re-encrypt every stored secret with the newest key of HOSTBAY_SECRET_KEYS and seal any secret still stored
    in plain text; prints counts per column, never a value. Afterwards the old keys can be dropped."""
    from hostbay.core import sealed, secretbox
    from hostbay.core.db import db

    try:
        report = sealed.rotate_all()
        db.session.commit()
    except secretbox.SecretError as exc:
        db.session.rollback()
        raise click.ClickException(f"{exc}: nothing was changed (keep the old key in HOSTBAY_SECRET_KEYS until "
                                   "rotate has run)") from None
    for r in report:
        click.echo(f"{r['table']}.{r['column']}: {r['rotated']} re-encrypted, {r['sealed']} sealed from plain text")
    total = sum(r["rotated"] + r["sealed"] for r in report)
    click.echo(f"re-encrypted {total} secrets with the newest key")
