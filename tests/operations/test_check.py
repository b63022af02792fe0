"""`hostbay check`: embedded mode, a non-TLS base URL, missing keys, schema behind, no live worker."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from hostbay.core.checks import run_checks


def _texts(findings, level=None):
    return [f.text for f in findings if level is None or f.level == level]


def test_embedded_defaults_are_reported(app):
    app.config.update(SQLALCHEMY_DATABASE_URI="sqlite:///x.sqlite3", HOSTBAY_JOBS="thread",
                      HOSTBAY_BASE_URL="http://127.0.0.1:5000", HOSTBAY_SECRET_KEY_SET=False)
    errors = " | ".join(_texts(run_checks(app), "error"))
    assert "the database is SQLite" in errors and "jobs run in the panel process" in errors
    assert "HOSTBAY_BASE_URL is http://127.0.0.1:5000" in errors
    assert any("HOSTBAY_SECRET_KEY is not set" in t for t in _texts(run_checks(app), "warning"))


@pytest.mark.postgres
@pytest.mark.redis
def test_a_production_configuration_passes_only_with_a_live_worker_on_its_queue(app, db, monkeypatch):
    redis_url = os.environ.get("HOSTBAY_TEST_REDIS_URL")
    if not redis_url or app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("needs HOSTBAY_TEST_REDIS_URL and PostgreSQL")
    from rq import Queue, Worker

    from hostbay.core import jobs

    monkeypatch.setitem(app.config, "HOSTBAY_SECRET_KEY_SET", True)  # as config.load maps HOSTBAY_SECRET_KEY
    monkeypatch.setitem(app.config, "HOSTBAY_SECRET_KEYS", "k")
    queue = f"hbcheck-{os.getpid()}"
    app.config.update(HOSTBAY_REDIS_URL=redis_url, HOSTBAY_JOBS="rq", HOSTBAY_BASE_URL="https://panel.example.test",
                      HOSTBAY_TRUSTED_PROXIES=1, HOSTBAY_QUEUE=queue)
    db.session.execute(db.text("CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)"))
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(app.extensions["migrate"].migrate.get_config()).get_current_head()
    db.session.execute(db.text("INSERT INTO alembic_version VALUES (:head)"), {"head": head})
    db.session.commit()
    conn = jobs.redis_connection(app)
    other = Worker([Queue(queue + "-other", connection=conn)], connection=conn, name=queue + "-other")
    money = Worker([Queue(queue + "-money", connection=conn)], connection=conn, name=queue + "-m")
    rest = Worker([Queue(queue + "-driver", connection=conn), Queue(queue + "-notify", connection=conn)],
                  connection=conn, name=queue + "-dn")
    try:
        other.register_birth()
        other.heartbeat()
        assert [f.text for f in run_checks(app)] == [
            f"no `hostbay worker` on the queues '{queue}-money', '{queue}-driver', '{queue}-notify' seen in the last "
            "60 s: nothing runs provisioning, renewals or notices"]
        rest.register_birth()
        rest.heartbeat()
        assert [f.text for f in run_checks(app)] == [  # each queue class needs a worker of its own or a shared one
            f"no `hostbay worker` on queue '{queue}-money' seen in the last 60 s: nothing runs renewals, "
            "suspensions and payments"]
        money.register_birth()
        money.heartbeat()
        assert run_checks(app) == []
    finally:
        for w in (other, money, rest):
            w.register_death()
        db.session.execute(db.text("DROP TABLE alembic_version"))
        db.session.commit()


def test_schema_behind_is_an_error(app, db):
    db.session.execute(db.text("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) NOT NULL)"))
    db.session.execute(db.text("DELETE FROM alembic_version"))
    db.session.execute(db.text("INSERT INTO alembic_version VALUES ('0000')"))
    db.session.commit()
    try:
        assert any("database schema is at 0000" in t for t in _texts(run_checks(app), "error"))
    finally:
        db.session.execute(db.text("DROP TABLE alembic_version"))
        db.session.commit()


def test_command_exits_non_zero_in_embedded_mode(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTBAY_")}
    env.update(HOSTBAY_INSTANCE_PATH=str(tmp_path))
    subprocess.run([sys.executable, "-m", "hostbay.web.cli", "db", "upgrade"], env=env, check=True,
                   capture_output=True)
    res = subprocess.run([sys.executable, "-m", "hostbay.web.cli", "check"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "ERROR    embedded mode: the database is SQLite" in res.stdout
    assert "database schema" not in res.stdout  # upgraded to head


def test_key_settings_from_the_environment_still_count(tmp_path):
    """The check reads the app config; the config loader maps the environment onto it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTBAY_")}
    env.update(HOSTBAY_INSTANCE_PATH=str(tmp_path))

    def warnings(**extra):
        res = subprocess.run([sys.executable, "-m", "hostbay.web.cli", "check"], env={**env, **extra},
                             capture_output=True, text=True, timeout=60)
        return [line for line in res.stdout.splitlines() if line.startswith("WARNING")]

    unset = " | ".join(warnings())
    assert "HOSTBAY_SECRET_KEY is not set" in unset and "HOSTBAY_SECRET_KEYS is not set" in unset
    both = warnings(HOSTBAY_SECRET_KEY="x" * 32, HOSTBAY_SECRET_KEYS="Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE=")
    assert not any("SECRET_KEY" in w for w in both), both


def test_a_kvm_node_whose_routed_taps_no_filter_protects_is_reported(app, db):
    """Through the plugins' ``hostbay_checks``: a KVM node on libvirt's nwfilter in ``ethernet`` mode is reported;
    the same node on a bridge, or on hostbay's nftables filter, is not."""
    from hostbay.core.catalog import Node

    node = Node(name="kvm-remote", driver="kvm", settings={"uri": "qemu+ssh://root@hv1.example.test/system"})
    db.session.add(node)
    db.session.commit()
    warned = [t for t in _texts(run_checks(app), "warning") if "KVM node kvm-remote" in t]
    assert len(warned) == 1 and "not filtered against spoofing" in warned[0]
    node.settings = {"uri": "qemu+ssh://root@hv1.example.test/system", "network": "bridge", "bridge": "br0"}
    db.session.commit()
    assert not [t for t in _texts(run_checks(app), "warning") if "KVM node kvm-remote" in t]
    node.settings = {"uri": "qemu:///system", "antispoof": "nftables"}
    db.session.commit()
    assert not [t for t in _texts(run_checks(app), "warning") if "KVM node kvm-remote" in t]
