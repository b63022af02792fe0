"""pytest fixtures for hostbay and its plugins (registered through the ``pytest11`` entry point).

Database: ``HOSTBAY_TEST_DATABASE_URL`` (e.g. PostgreSQL in CI) or a temporary SQLite file. The schema is created
once per session; every table is emptied after each test, so tests may commit and use several connections.
Override the ``app_config`` fixture in a test module to change configuration (e.g. enable CSRF).
"""

from __future__ import annotations

import contextlib
import os
from datetime import datetime

import pytest

from hostbay.core.clock import FrozenClock

DEFAULT_NOW = datetime(2026, 1, 15, 10, 0, 0)


def pytest_configure(config):
    for line in ("postgres: needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL)",
                 "redis: needs a real Redis (HOSTBAY_TEST_REDIS_URL)",
                 "libvirt: needs a running libvirtd with QEMU", "slow: takes more than a few seconds"):
        config.addinivalue_line("markers", line)
    # One key for secrets at rest for the whole session, in the environment: the test apps and every hostbay
    # process a test starts (console proxy, workers) open each other's sealed values, as production processes
    # sharing one HOSTBAY_SECRET_KEYS do.
    if not os.environ.get("HOSTBAY_SECRET_KEYS"):
        from cryptography.fernet import Fernet

        os.environ["HOSTBAY_SECRET_KEYS"] = Fernet.generate_key().decode()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory) -> str:
    url = os.environ.get("HOSTBAY_TEST_DATABASE_URL")
    if url:
        return url
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'hostbay-test.sqlite3'}"


@pytest.fixture(scope="session")
def _schema(database_url, tmp_path_factory):
    from hostbay.core.db import db
    from hostbay.web import create_app

    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url, "TESTING": True, "HOSTBAY_JOBS": "sync",
                      "INSTANCE_PATH": str(tmp_path_factory.mktemp("instance")), "SECRET_KEY": "schema"})
    with app.app_context():
        db.drop_all()
        with db.engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS alembic_version")
        db.create_all()
        db.engine.dispose()
    return True


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(DEFAULT_NOW)


@pytest.fixture
def app_config() -> dict:
    """Extra configuration for the ``app`` fixture; override it in a test module."""
    return {}


@pytest.fixture
def app(_schema, database_url, clock, app_config, tmp_path):
    from hostbay.core.db import db
    from hostbay.web import create_app

    cfg = {"SQLALCHEMY_DATABASE_URI": database_url, "TESTING": True, "HOSTBAY_JOBS": "sync",
           "WTF_CSRF_ENABLED": False, "INSTANCE_PATH": str(tmp_path / "instance"), "SECRET_KEY": "test-secret",
           "RATELIMIT_ENABLED": False, "HOSTBAY_REDIS_URL": None, "HOSTBAY_SMTP_URL": None}
    cfg.update(app_config)
    application = create_app(cfg, clock=clock)
    _fresh_g_per_request(application)
    ctx = application.app_context()
    ctx.push()
    try:
        yield application
    finally:
        db.session.remove()
        _empty_tables(db)
        db.engine.dispose()
        ctx.pop()


def _fresh_g_per_request(application) -> None:
    """This fixture keeps one application context open for the whole test, so ``flask.g`` would outlive every
    request (a server gives each request a fresh one): the user one client logged in and its CSRF state would leak
    into the next request of another client. Empty ``g`` when each request starts."""
    from flask import g, request_started

    def _clear(sender, **_extra):
        for key in list(g):
            g.pop(key, None)

    request_started.connect(_clear, application, weak=False)


def _empty_tables(db) -> None:
    """Empty every table, then put back the rows every database has (the built-in staff roles)."""
    from hostbay.core.staff_roles import ensure_builtin_roles

    tables = [t.name for t in db.metadata.sorted_tables]
    with db.engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE")
        else:
            for t in reversed(tables):
                conn.exec_driver_sql(f'DELETE FROM "{t}"')
        ensure_builtin_roles(conn)


@pytest.fixture
def db(app):
    from hostbay.core.db import db as database

    return database


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def registry(app):
    return app.extensions["hostbay"]


@pytest.fixture
def register_plugin(app):
    """Context manager: ``with register_plugin(obj): ...`` adds a plugin to the app's registry for the block."""
    reg = app.extensions["hostbay"]

    @contextlib.contextmanager
    def _register(plugin, name: str | None = None):
        name = reg.add(plugin, name=name)  # the checks and isolation of any plugin
        try:
            yield reg
        finally:
            reg.remove(name)

    return _register


class RunningWorkers:
    """Real ``hostbay worker`` processes on Redis and the test database (see :func:`running_workers`)."""

    def __init__(self, env: dict[str, str], queue: str):
        self.env, self.queue = env, queue

    @property
    def command(self) -> list[str]:
        import sys
        from pathlib import Path

        return [str(Path(sys.executable).with_name("hostbay")), "worker", "--burst"]

    def start(self, quiet: bool = False):
        """One burst worker (it exits when the queue is empty); ``quiet`` discards its output."""
        import subprocess

        out = subprocess.DEVNULL if quiet else subprocess.PIPE
        return subprocess.Popen(self.command, env=self.env, stdout=out,
                                stderr=subprocess.DEVNULL if quiet else subprocess.STDOUT)

    def burst(self, n: int = 1, timeout: float = 240) -> list[str]:
        """Run ``n`` burst workers side by side until the queue is empty; fails unless every one exits 0.
        Returns their outputs."""
        procs = [self.start() for _ in range(n)]
        outs = [p.communicate(timeout=timeout)[0].decode() for p in procs]
        assert [p.returncode for p in procs] == [0] * n, outs
        return outs


@pytest.fixture
def running_workers(app, database_url, tmp_path):
    """Jobs go to a fresh RQ queue on ``HOSTBAY_TEST_REDIS_URL``, for real ``hostbay worker`` processes
    (``running_workers.burst(2)``, ``running_workers.start()``) on the test database. Skips without PostgreSQL or
    Redis; the queue's keys are removed afterwards."""
    import uuid

    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/2")
    if not database_url.startswith("postgresql"):
        pytest.skip("needs PostgreSQL (HOSTBAY_TEST_DATABASE_URL)")
    try:
        from redis import Redis

        conn = Redis.from_url(redis_url)
        conn.ping()
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"needs Redis at {redis_url}: {exc}")
    queue = f"hostbay-test-{uuid.uuid4().hex[:8]}"
    app.config.update(HOSTBAY_JOBS="rq", HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue)
    env = dict(os.environ, HOSTBAY_DATABASE_URL=database_url, HOSTBAY_REDIS_URL=redis_url, HOSTBAY_QUEUE=queue,
               HOSTBAY_JOBS="rq", HOSTBAY_INSTANCE_PATH=str(tmp_path / "worker"), HOSTBAY_SECRET_KEY="w",
               HOSTBAY_LOG_LEVEL="WARNING")
    yield RunningWorkers(env, queue)
    for key in conn.scan_iter(f"rq:*{queue}*"):
        conn.delete(key)
    app.extensions.pop("hostbay.redis", None)


class JobRunner:
    """Holds operations queued until ``run_all()`` (the ``manual`` job mode)."""

    def __init__(self, app):
        self.app = app

    def run_all(self) -> int:
        from hostbay.core import jobs

        return jobs.run_pending()


@pytest.fixture
def job_runner(app):
    app.config["HOSTBAY_JOBS"] = "manual"
    return JobRunner(app)


@pytest.fixture
def make_user(app):
    from hostbay.core import ledger
    from hostbay.core.accounts import create_user
    from hostbay.core.db import db as database

    counter = iter(range(1, 10**6))

    def _make(email: str | None = None, role: str = "customer", balance_cents: int = 0,
              password: str = "correct horse battery"):
        user = create_user(email or f"user{next(counter)}@example.test", password, role=role)
        if balance_cents:
            ledger.credit(user.id, balance_cents, kind="topup", key=f"test-topup:{user.id}",
                          description="Test top-up")
        database.session.commit()
        return user

    return _make


def login(client, user, password: str = "correct horse battery"):
    """Log ``user`` in through the real login form."""
    resp = client.post("/login", data={"email": user.email, "password": password})
    assert resp.status_code in (302, 303), resp.status_code
    return resp


@pytest.fixture
def make_package(app):
    """``make_package(slug="vps-1", monthly_cents=1000, disk_gib=10, driver="fake", **columns)``: a VPS package
    with a price for every cycle (monthly price x months)."""
    from hostbay.core.catalog import CYCLES, Package, PackagePrice
    from hostbay.core.db import db as database

    counter = iter(range(1, 10**6))

    def _make(slug: str | None = None, monthly_cents: int = 1000, driver: str = "fake", **columns):
        values = dict(name="Test VPS", kind="vps", vcpus=1, memory_mib=512, disk_gib=10, ipv4_count=1,
                      port_speed_mbit=1000)
        values.update(columns)
        pkg = Package(slug=slug or f"pkg-{next(counter)}", driver=driver, **values)
        pkg.prices = [PackagePrice(cycle=c, price_cents=monthly_cents * m) for c, m in CYCLES.items()]
        database.session.add(pkg)
        database.session.commit()
        return pkg

    return _make


@pytest.fixture
def make_node(app):
    from hostbay.core.catalog import Node
    from hostbay.core.db import db as database

    counter = iter(range(1, 10**6))

    def _make(driver: str = "fake", settings: dict | None = None, **columns):
        values = dict(vcpus=64, memory_mib=262144, disk_gib=4000)
        values.update(columns)
        node = Node(name=values.pop("name", f"node-{next(counter)}"), driver=driver, settings=settings or {},
                    **values)
        database.session.add(node)
        database.session.commit()
        return node

    return _make


@pytest.fixture
def make_image(app):
    from hostbay.core.catalog import Image
    from hostbay.core.db import db as database

    counter = iter(range(1, 10**6))

    def _make(driver: str = "fake", source: str = "test.qcow2", **columns):
        n = next(counter)
        img = Image(driver=driver, slug=columns.pop("slug", f"img-{n}"), name=columns.pop("name", f"Image {n}"),
                    source=source, **columns)
        database.session.add(img)
        database.session.commit()
        return img

    return _make


@pytest.fixture
def make_service(app, clock):
    """``make_service(user, package, state="active", cycle="monthly", node=None, **columns)``: a service row as if
    ordered at the clock's time (no money moves; billing tests use the order API instead)."""
    from hostbay.core.catalog import add_cycle
    from hostbay.core.db import db as database
    from hostbay.core.services import Service

    counter = iter(range(1, 10**6))

    def _make(user, package, state: str = "active", cycle: str = "monthly", node=None, **columns):
        now = clock.now()
        values = dict(hostname=f"host{next(counter)}.example.test", period_start=now,
                      renews_at=add_cycle(now, cycle), price_cents=package.price_cents(cycle))
        values.update(columns)
        svc = Service(user_id=user.id, package_id=package.id, kind=package.kind, state=state, cycle=cycle,
                      node_id=getattr(node, "id", None), **values)
        database.session.add(svc)
        database.session.commit()
        return svc

    return _make


CHROMIUM = os.environ.get("HOSTBAY_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


@pytest.fixture(scope="session")
def browser():
    """Headless Chromium (``HOSTBAY_CHROMIUM``, default /usr/bin/chromium) through Playwright's sync API, one for
    the whole session and every test tree: a second ``sync_playwright()`` while one runs finds its asyncio loop
    running in the main thread and refuses, so tests take this fixture instead of starting their own."""
    import shutil

    sync_api = pytest.importorskip("playwright.sync_api")
    if not shutil.which(CHROMIUM):
        pytest.skip(f"no Chromium at {CHROMIUM}")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
