"""The ``hostbay`` command: Flask's CLI with hostbay's commands (run, worker, db, create-admin, demo, plugins)."""

from __future__ import annotations

import logging
import sys
import threading

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
@click.option("--queue", "queues", multiple=True, help="Queue(s) to listen on (default: HOSTBAY_QUEUE).")
@click.option("--burst", is_flag=True, help="Quit when the queue is empty.")
@click.option("--with-scheduler/--without-scheduler", default=True,
              help="Also enqueue scheduled jobs (safe to run in several workers: each period runs once).")
@with_appcontext
def worker(queues, burst, with_scheduler):
    """Run an RQ worker for hostbay jobs (needs HOSTBAY_REDIS_URL)."""
    from rq import Queue, SimpleWorker

    from hostbay.core import jobs

    app = current_app._get_current_object()
    if not app.config["HOSTBAY_REDIS_URL"]:
        raise click.ClickException("HOSTBAY_REDIS_URL is not set: in embedded mode jobs run inside the panel.")
    conn = jobs.redis_connection(app)
    names = queues or (app.config["HOSTBAY_QUEUE"],)
    stop = threading.Event()
    if with_scheduler and not burst:
        threading.Thread(target=jobs.scheduler_loop, args=(app, stop), daemon=True, name="hostbay-scheduler").start()
    # SimpleWorker runs jobs in this process, which holds the app context and its database pool (no fork).
    w = SimpleWorker([Queue(n, connection=conn) for n in names], connection=conn)
    click.echo(f"hostbay worker listening on {', '.join(names)}")
    try:
        w.work(burst=burst, with_scheduler=True, logging_level=app.config["HOSTBAY_LOG_LEVEL"])
    finally:
        stop.set()


@main.command("run-jobs")
@with_appcontext
def run_jobs():
    """Run queued operations in this process and exit (maintenance)."""
    from hostbay.core import jobs

    click.echo(f"ran {jobs.run_pending()} operation(s)")


@main.command("create-admin")
@click.option("--email", required=True)
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True)
@click.option("--role", default="admin", type=click.Choice(["admin", "support", "billing"]))
@with_appcontext
def create_admin(email, password, role):
    """Create a staff account."""
    from hostbay.core.accounts import create_user
    from hostbay.core.db import db
    from hostbay.core.errors import UserError

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
        rows.append((p.name, p.version or "-", p.state, p.error if p.state == "failed" else ", ".join(p.hooks) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:3], widths)) + "  " + r[3])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
