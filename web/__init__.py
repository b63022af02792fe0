"""hostbay.web: the Flask application factory and its blueprints."""

from __future__ import annotations

import logging
from pathlib import Path

from flask import Flask, jsonify, render_template

from hostbay import __version__
from hostbay.core import config as config_mod
from hostbay.core.db import configure_sqlite, db
from hostbay.core.plugins import build_registry

from .extensions import csrf, limiter, login_manager, migrate

# Core blueprint modules (each defines ``bp``); plugins add theirs through the hostbay_blueprints hook.
BLUEPRINT_MODULES = [
    "public",
    "auth",
    "panel",
    "staff",
    "billing",
    "staff_billing",
    "account",
    "tickets",
    "staff_tickets",
    "iso",
    "staff_iso",
    "console",
    "network",
    "staff_network",
    "payments",
    "services",
    "staff_services",
    "guest",
    "staff_images",
]


def _migrations_dir() -> str:
    import hostbay.core.migrations as m

    return str(Path(m.__file__).parent)


def create_app(config: dict | None = None, *, extra_plugins: list | None = None, clock=None) -> Flask:
    """Build the app. ``config`` overrides values read from the ``HOSTBAY_*`` environment."""
    settings = config_mod.load()
    settings.update(config or {})
    app = Flask(__name__, instance_path=settings["INSTANCE_PATH"])
    app.config.update(settings)
    if "HOSTBAY_EMBEDDED" not in (config or {}):
        app.config["HOSTBAY_EMBEDDED"] = (app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite")
                                          or app.config["HOSTBAY_JOBS"] != "rq")
    app.config.setdefault("SQLALCHEMY_ENGINE_OPTIONS", _engine_options(app.config["SQLALCHEMY_DATABASE_URI"]))
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", None)
    app.config.setdefault("SESSION_COOKIE_HTTPONLY", True)
    app.config.setdefault("SESSION_COOKIE_SAMESITE", "Lax")
    app.config.setdefault("MAX_CONTENT_LENGTH", 8 * 1024 ** 3)
    logging.basicConfig(level=app.config["HOSTBAY_LOG_LEVEL"],
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from hostbay.core import models  # noqa: F401  (complete metadata)

    db.init_app(app)
    with app.app_context():
        configure_sqlite(db.engine)
    migrate.init_app(app, db, directory=_migrations_dir())
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["HOSTBAY_REDIS_URL"] or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    limiter.init_app(app)

    registry = build_registry(app.config["HOSTBAY_PLUGINS"], extra_plugins)
    app.extensions["hostbay"] = registry
    if clock is not None:
        app.extensions["hostbay.clock"] = clock

    import importlib

    for name in BLUEPRINT_MODULES:
        app.register_blueprint(importlib.import_module(f"hostbay.web.{name}").bp)
    for bp in registry.collect("hostbay_blueprints"):
        app.register_blueprint(bp)
    for cmd in registry.collect("hostbay_cli_commands"):
        app.cli.add_command(cmd)

    @login_manager.user_loader
    def load_user(user_uuid: str):
        from sqlalchemy.orm import lazyload

        from hostbay.core.accounts import User

        # SSH keys load when a page uses them, not on every request.
        return db.session.scalar(db.select(User).filter_by(uuid=user_uuid, active=True)
                                 .options(lazyload(User.ssh_keys)))

    if app.config.get("HOSTBAY_IN_PROCESS_SCHEDULER", app.config["HOSTBAY_JOBS"] == "thread" and not app.testing):
        @app.before_request
        def _scheduler():  # started by the first request, so short CLI commands never start it
            from hostbay.core import jobs

            if "hostbay.scheduler" not in app.extensions:
                jobs.start_in_process_scheduler(app)

    @app.get("/healthz")
    def healthz():
        db.session.execute(db.text("SELECT 1"))
        return jsonify(status="ok", version=__version__)

    @app.errorhandler(404)
    def not_found(_e):
        return render_template("error.html", code=404, message="Page not found."), 404

    @app.errorhandler(429)
    def too_many(_e):
        return render_template("error.html", code=429, message="Too many attempts. Wait a minute and try again."), 429

    @app.after_request
    def security_headers(resp):
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault("Content-Security-Policy",
                                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
                                "connect-src 'self' ws: wss:; frame-ancestors 'none'; form-action 'self' https:")
        return resp

    @app.context_processor
    def inject():
        from hostbay.core.money import format_cents

        return {"format_cents": format_cents, "hostbay_version": __version__,
                "embedded": app.config["HOSTBAY_EMBEDDED"]}

    if app.config["HOSTBAY_EMBEDDED"] and not app.testing and not app.config.get("TESTING"):
        app.logger.warning("hostbay runs in embedded mode (%s, jobs: %s): for trying it out, not for production.",
                           app.config["SQLALCHEMY_DATABASE_URI"].split(":")[0], app.config["HOSTBAY_JOBS"])
    return app


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}
