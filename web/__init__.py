"""hostbay.web: the Flask application factory and its blueprints."""

from __future__ import annotations

from pathlib import Path

from flask import Flask, render_template, request

from hostbay import __version__
from hostbay.core import config as config_mod
from hostbay.core import sessions
from hostbay.core import logs
from hostbay.core.db import configure_sqlite, db
from hostbay.core.plugins import build_registry

from .extensions import csrf, limiter, login_manager, migrate

# Core blueprint modules (each defines ``bp``); plugins add theirs through the hostbay_blueprints hook.
BLUEPRINT_MODULES = [
    "public",
    "staff_brand",
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
    "staff_nodes",
    "staff_inventory",
    "staff_admin",
    "metrics",
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
    _session_cookie_flags(app, config or {})
    app.config.setdefault("MAX_CONTENT_LENGTH", 8 * 1024 ** 3)
    logs.configure(app.config["HOSTBAY_LOG_LEVEL"], app.config.get("HOSTBAY_LOG_FORMAT") or "text")

    from hostbay.core import models  # noqa: F401  (complete metadata)

    db.init_app(app)
    with app.app_context():
        configure_sqlite(db.engine)
        if app.testing or app.config.get("HOSTBAY_STATE_GUARD"):
            from hostbay.core.services import guard_state_writes

            guard_state_writes(db.engine)  # any write of services.state outside services.transition raises
    migrate.init_app(app, db, directory=_migrations_dir())
    csrf.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["HOSTBAY_REDIS_URL"] or "memory://")
    app.config.setdefault("RATELIMIT_HEADERS_ENABLED", True)
    # The limiter is one module-level object and keeps the first app's key prefix otherwise (several apps in one
    # process, as in tests, would share counters).
    limiter._key_prefix = app.config.get("RATELIMIT_KEY_PREFIX", "")
    limiter.init_app(app)

    # the opt-in plugins (the simulated `fake` drivers) load in tests and the demo, or when HOSTBAY_PLUGINS names them
    include = ["fake"] if app.testing or app.config.get("HOSTBAY_DEMO") else []
    _install_links(app)
    registry = build_registry(app.config["HOSTBAY_PLUGINS"], extra_plugins, include=include)
    app.extensions["hostbay"] = registry
    if clock is not None:
        app.extensions["hostbay.clock"] = clock

    import importlib

    for name in BLUEPRINT_MODULES:
        app.register_blueprint(importlib.import_module(f"hostbay.web.{name}").bp)
    for bp in registry.collect("hostbay_blueprints"):
        app.register_blueprint(bp)
    from .api import init_api  # the REST API (/api/v1): token auth only, so CSRF is exempt there

    init_api(app)
    for cmd in registry.collect("hostbay_cli_commands"):
        app.cli.add_command(cmd)

    @login_manager.user_loader
    def load_user(user_uuid: str):
        from sqlalchemy.orm import lazyload

        from hostbay.core.accounts import User

        # SSH keys load when a page uses them, not on every request.
        user = db.session.scalar(db.select(User).filter_by(uuid=user_uuid, active=True)
                                 .options(lazyload(User.ssh_keys)))
        if user is not None and not sessions.is_current(user):  # ended by logout, password change, staff lock
            from flask import session

            session.clear()
            return None
        return user

    if app.config.get("HOSTBAY_IN_PROCESS_SCHEDULER", app.config["HOSTBAY_JOBS"] == "thread" and not app.testing):
        @app.before_request
        def _scheduler():  # started by the first request, so short CLI commands never start it
            from hostbay.core import jobs

            if "hostbay.scheduler" not in app.extensions:
                jobs.start_in_process_scheduler(app)

    from .health import init_health  # /healthz by dependency; a 503 page when the database is unreachable

    init_health(app)

    @app.errorhandler(404)
    def not_found(_e):
        if request.path.startswith("/api/"):
            from .api.common import problem_for_http_exception

            return problem_for_http_exception(_e)
        return render_template("error.html", code=404, title="Page not found",
                               message="There is nothing at this address. It may have moved, or the link is mistyped."), 404

    @app.errorhandler(429)
    def too_many(_e):
        if request.path.startswith("/api/"):
            from .api.common import problem_for_http_exception

            return problem_for_http_exception(_e)
        return render_template("error.html", code=429, title="Too many attempts",
                               message="Too many attempts. Wait a minute and try again."), 429

    from .errors import install_error_pages  # 403, 500 and an expired form (CSRF) in the panel's style

    install_error_pages(app)

    @app.before_request
    def _log_context():
        from flask import g, request, session

        g.hostbay_log_context = logs.bind(
            request_id=logs.new_request_id(request.headers.get("X-Request-ID")),
            user_uuid=session.get("_user_id"),
            service_uuid=(request.view_args or {}).get("service_uuid"))

    @app.after_request
    def _request_id_header(resp):
        rid = logs.get("request_id")
        if rid:
            resp.headers["X-Request-ID"] = rid
        return resp

    @app.teardown_request
    def _log_context_end(_exc):
        from flask import g

        logs.unbind(g.pop("hostbay_log_context", []))

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

        from hostbay.core import branding

        return {"format_cents": format_cents, "hostbay_version": __version__,
                "embedded": app.config["HOSTBAY_EMBEDDED"], "brand": branding.current()}

    if app.config["HOSTBAY_EMBEDDED"] and not app.testing and not app.config.get("TESTING"):
        app.logger.warning("hostbay runs in embedded mode (%s, jobs: %s): for trying it out, not for production.",
                           app.config["SQLALCHEMY_DATABASE_URI"].split(":")[0], app.config["HOSTBAY_JOBS"])
    return app


# The pages core links to (notices, payment return and webhook URLs): core names them, the web layer builds them.
LINK_ENDPOINTS = {"topup": "payments.topup", "payment": "payments.status", "webhook": "payments.webhook",
                  "service": "services.detail", "guest_ready": "guest.ready"}
# pages reached by machines at another base URL than the panel's (a new server's phone-home: HOSTBAY_READY_URL)
LINK_BASES = {"guest_ready": "HOSTBAY_READY_URL"}


def _install_links(app) -> None:
    from urllib.parse import urlsplit

    from hostbay.core import links

    def build(page: str, **params) -> str:
        base = urlsplit(app.config.get(LINK_BASES.get(page, "HOSTBAY_BASE_URL")) or app.config.get("HOSTBAY_BASE_URL")
                        or "http://127.0.0.1:5000")
        adapter = app.url_map.bind(base.netloc, script_name=base.path.rstrip("/") or "/", url_scheme=base.scheme)
        return adapter.build(LINK_ENDPOINTS[page], params, force_external=True)

    links.install(app, build)


def _session_cookie_flags(app: Flask, overrides: dict) -> None:
    """Flask defines the cookie keys itself (so ``setdefault`` would change nothing): set them here unless the
    caller's configuration names them. Secure follows an https HOSTBAY_BASE_URL. Behind
    ``HOSTBAY_TRUSTED_PROXIES`` reverse proxies, the client address, scheme and host come from their
    X-Forwarded-* headers (ProxyFix), so rate limits and audit entries see the real client."""
    from datetime import timedelta

    defaults = {"SESSION_COOKIE_HTTPONLY": True, "SESSION_COOKIE_SAMESITE": "Lax",
                "SESSION_COOKIE_SECURE": str(app.config.get("HOSTBAY_BASE_URL", "")).startswith("https://"),
                "PERMANENT_SESSION_LIFETIME": timedelta(hours=int(app.config.get("HOSTBAY_SESSION_HOURS", 336)))}
    for key, value in defaults.items():
        if key not in overrides:
            app.config[key] = value
    hops = int(app.config.get("HOSTBAY_TRUSTED_PROXIES") or 0)
    if hops > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)


def _engine_options(url: str) -> dict:
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": 30, "check_same_thread": False}}
    return {"pool_pre_ping": True, "pool_size": 10, "max_overflow": 20}
