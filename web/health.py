"""Dependency health and the answer when a dependency is down: ``/healthz`` names each dependency's state (the
database, and Redis when jobs go through it), and a request that finds the database unreachable gets a plain 503
page (problem+json under /api/) with ``Retry-After``, never a stack trace."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, request, url_for

from hostbay import __version__
from hostbay.core.db import db

log = logging.getLogger(__name__)
RETRY_AFTER = "30"


def dependency_states(app: Flask) -> dict[str, str]:
    """``{"database": "ok" | "down", "redis": "ok" | "down"}`` (Redis only when configured)."""
    states = {}
    try:
        db.session.execute(db.text("SELECT 1"))
        db.session.rollback()
        states["database"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means the dependency cannot serve
        log.warning("health: database unreachable: %s", type(exc).__name__)
        _discard_session()
        states["database"] = "down"
    if app.config.get("HOSTBAY_REDIS_URL"):
        from hostbay.core import jobs

        try:
            jobs.redis_connection(app).ping()
            states["redis"] = "ok"
        except Exception as exc:  # noqa: BLE001
            log.warning("health: Redis unreachable: %s", type(exc).__name__)
            states["redis"] = "down"
    return states


def _discard_session() -> None:
    try:
        db.session.rollback()
    except Exception:  # noqa: BLE001 - the connection is gone; dropping the session invalidates it
        pass
    db.session.remove()


def is_database_unavailable(exc: BaseException) -> bool:
    from hostbay.core.jobs import _lost_database

    return _lost_database(exc)


def init_health(app: Flask) -> None:
    @app.get("/healthz")
    def healthz():
        return _health_response()

    def _health_response():
        states = dependency_states(app)
        down = sorted(k for k, v in states.items() if v != "ok")
        body = {"status": "ok" if not down else "unavailable", "version": __version__, "dependencies": states}
        if down:
            body["down"] = down
            resp = jsonify(body)
            resp.status_code, resp.headers["Retry-After"] = 503, RETRY_AFTER
            return resp
        return jsonify(body)

    def unavailable(exc):
        if not is_database_unavailable(exc):
            raise exc
        log.error("database unreachable while serving %s %s: %s", request.method, request.path,
                  type(exc).__name__)
        _discard_session()
        if request.path == "/healthz":  # failed before the view (a signed-in caller's session lookup)
            return _health_response()
        if request.path.startswith("/api/"):
            from .api.common import problem_response

            return problem_response(503, "unavailable", "The service is temporarily unavailable. Try again in a "
                                    "minute.", headers={"Retry-After": RETRY_AFTER})
        # rendered without the context processors: they load the signed-in user, from the database that is down
        page = app.jinja_env.get_template("unavailable.html").render(
            css=url_for("static", filename="hostbay.css"))
        return page, 503, {"Retry-After": RETRY_AFTER}

    from sqlalchemy.exc import DBAPIError

    app.register_error_handler(DBAPIError, unavailable)
    try:
        import psycopg

        app.register_error_handler(psycopg.OperationalError, unavailable)
    except ImportError:  # pragma: no cover
        pass
