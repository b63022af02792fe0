"""Secrets at rest: every secret stored through the staff and account pages is encrypted in the database (a dump
of it holds none of them), reads back in plain text in memory, survives a key rotation with the old key dropped,
and plain-text rows written before sealing are still read and get sealed by ``hostbay secrets rotate``."""

from __future__ import annotations

import json
import subprocess

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import JSON, bindparam, inspect, text

from hostbay.core import ledger, payments, sealed
from hostbay.core.accounts import User
from hostbay.core.catalog import Node
from hostbay.core.inventory import HardwareServer
from hostbay.core.rdns import DnsBackendConfig
from hostbay.core.webhooks import WebhookEndpoint, sign
from hostbay.web.cli import main

from .secret_flows import SecretWorld

OLD, NEW = Fernet.generate_key().decode(), Fernet.generate_key().decode()


@pytest.fixture
def app_config():
    return {"HOSTBAY_SECRET_KEYS": OLD}


@pytest.fixture
def world(app, tmp_path, monkeypatch):
    w = SecretWorld(tmp_path, monkeypatch)
    yield w
    w.close()


def dump_database(db) -> str:
    """Everything the database holds, as text: ``pg_dump`` on PostgreSQL, SQLite's own dump otherwise."""
    db.session.commit()
    url = db.engine.url
    if url.get_backend_name() == "postgresql":
        dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        return subprocess.run(["pg_dump", "--data-only", "--no-owner", dsn], check=True, capture_output=True,
                              text=True).stdout
    return "\n".join(db.session.connection().connection.driver_connection.iterdump())


def every_text_value(db) -> str:
    """Every text and JSON column of every table, SELECTed raw (no type decoding)."""
    out = []
    conn = db.session.connection()  # the session's own (SQLite: one writer; no second connection waits on it)
    insp = inspect(conn)
    for table in insp.get_table_names():
        for col in insp.get_columns(table):
            t = str(col["type"]).upper()
            if any(k in t for k in ("CHAR", "TEXT", "JSON", "CLOB")):
                out.extend(str(v) for v in conn.exec_driver_sql(f'SELECT "{col["name"]}" FROM "{table}"')
                           .scalars() if v is not None)
    db.session.commit()
    return "\n".join(out)


def assert_nowhere(haystack: str, found_in: str, world: SecretWorld):
    leaked = [name for name, value in world.secrets.items() if value in haystack]
    assert not leaked, f"{', '.join(leaked)} found in {found_in}"


def assert_reads_back(db, world: SecretWorld):
    db.session.expire_all()
    node = db.session.get(Node, world.node_id)
    assert node.settings["token_secret"] == world.pve.token_secret
    gw = payments.gateway_config("btcpay").settings
    assert gw["api_key"] == world.btcpay.api_key and gw["webhook_secret"] == world.btcpay.webhook_secret
    assert db.session.get(DnsBackendConfig, world.backend_id).settings["api_key"] == world.pdns_key
    assert db.session.get(HardwareServer, world.server_id).power_target()["bmc_password"] == world.bmc_password
    assert db.session.get(User, world.admin.id).totp_secret == world.totp_seed
    assert db.session.scalar(db.select(WebhookEndpoint.secret)) == world.webhook_secret_out


def test_no_stored_secret_appears_in_a_database_dump(app, db, client, make_user, world):
    world.build_all(app, client, make_user)
    assert len(world.secrets) == 8
    assert_nowhere(dump_database(db), "the database dump", world)
    assert_nowhere(every_text_value(db), "a text or JSON column", world)
    assert_reads_back(db, world)
    # what the database holds is a token in place of each secret setting; the other settings stay readable
    raw = db.session.execute(text("SELECT settings FROM nodes")).scalar()
    raw = raw if isinstance(raw, dict) else json.loads(raw)
    assert set(raw["token_secret"]) == {sealed.MARK} and raw["token_secret"][sealed.MARK].startswith("gAAAAA")
    assert raw["token_id"] == world.pve.token_id and raw["api_url"] == world.pve.url
    # the pages keep showing secrets write-only
    world.staff_login(client)
    for url in (f"/staff/nodes/{world.node_id}", "/staff/payments/gateways/btcpay", "/staff/network/",
                f"/staff/inventory/{db.session.get(HardwareServer, world.server_id).uuid}"):
        assert_nowhere(client.get(url).get_data(as_text=True), url, world)


def test_rotate_under_a_new_key_then_the_old_key_is_dropped(app, db, client, make_user, world):
    world.build_all(app, client, make_user)
    before = every_text_value(db)
    app.config["HOSTBAY_SECRET_KEYS"] = f"{NEW},{OLD}"
    out = app.test_cli_runner().invoke(main, ["secrets", "rotate"])
    assert out.exit_code == 0, out.output
    lines = dict(line.split(": ", 1) for line in out.output.splitlines() if ": " in line)
    assert lines["nodes.settings"] == "1 re-encrypted, 0 sealed from plain text"
    assert lines["gateway_configs.settings"] == "2 re-encrypted, 0 sealed from plain text"
    assert lines["dns_backends.settings"] == "1 re-encrypted, 0 sealed from plain text"
    assert lines["hardware_servers.bmc_password_sealed"] == "1 re-encrypted, 0 sealed from plain text"
    assert lines["users.totp_secret"] == "1 re-encrypted, 0 sealed from plain text"
    assert lines["webhook_endpoints.secret"] == "1 re-encrypted, 0 sealed from plain text"
    assert "re-encrypted 7 secrets with the newest key" in out.output
    assert_nowhere(out.output, "the rotate report", world)
    after = every_text_value(db)
    assert after != before
    assert_nowhere(dump_database(db), "the database dump after rotation", world)

    app.config["HOSTBAY_SECRET_KEYS"] = NEW  # the old key is gone
    assert_reads_back(db, world)
    # ... and everything works with the new key alone: the driver reads its token (Test connection against the
    # stand-in), TOTP login, a signed webhook is verified and credits, a wrongly signed one is rejected
    world.staff_login(client)
    assert "The connection test passed." in world.test_node(client)
    assert "The connection test passed." in world.test_gateway(client)
    client.post("/logout")
    p = world.topup(client)
    ok, bad, _body, _bad_body = world.settle(client, p)
    assert ok.status_code == 200 and ok.get_json()["outcome"] == "processed"
    assert bad.status_code in (400, 401, 403)
    assert ledger.balance_cents(world.customer.id) == 2500
    ep = db.session.scalar(db.select(WebhookEndpoint))
    assert sign(ep.secret, b"x") == sign(world.webhook_secret_out, b"x")

    # a stored token of a key nobody has any more is a clear error, not garbage
    app.config["HOSTBAY_SECRET_KEYS"] = OLD
    db.session.expire_all()
    with pytest.raises(sealed.secretbox.SecretError):
        db.session.get(Node, world.node_id).settings  # noqa: B018


def test_plain_text_rows_are_read_and_sealed_by_rotate(app, db, registry):
    """Rows written before sealing existed (plain settings, plain TOTP seed) still work; rotate seals them."""
    settings = {"api_url": "http://127.0.0.1:9", "api_key": "legacy-pdns-key-123", "server_id": "localhost",
                "ttl": 3600, "nameservers": "", "ipv4_zone_prefix": "24", "ipv6_zone_prefix": 48, "timeout": 2}
    u = User(email="legacy@example.test", password_hash="x", totp_secret="placeholder")
    db.session.add(u)
    db.session.add(DnsBackendConfig(driver="powerdns", label="PowerDNS", settings={}))
    db.session.commit()
    db.session.execute(text("UPDATE dns_backends SET settings = :s").bindparams(
        bindparam("s", type_=JSON)), {"s": settings})
    db.session.execute(text("UPDATE users SET totp_secret = 'JBSWY3DPEHPK3PXP'"))
    db.session.commit()
    db.session.expire_all()
    assert db.session.scalar(db.select(DnsBackendConfig)).settings["api_key"] == "legacy-pdns-key-123"
    assert db.session.scalar(db.select(User)).totp_secret == "JBSWY3DPEHPK3PXP"
    out = app.test_cli_runner().invoke(main, ["secrets", "rotate"])
    assert out.exit_code == 0, out.output
    assert "dns_backends.settings: 0 re-encrypted, 1 sealed from plain text" in out.output
    assert "users.totp_secret: 0 re-encrypted, 1 sealed from plain text" in out.output
    raw = every_text_value(db)
    assert "legacy-pdns-key-123" not in raw and "JBSWY3DPEHPK3PXP" not in raw
    db.session.expire_all()
    assert db.session.scalar(db.select(DnsBackendConfig)).settings["api_key"] == "legacy-pdns-key-123"
    assert db.session.scalar(db.select(User)).totp_secret == "JBSWY3DPEHPK3PXP"


def test_a_settings_key_is_sealed_by_its_drivers_declaration(app, db):
    """Which keys are sealed is what the driver class declares: ``token_id`` (not secret) stays readable, a key
    stored sealed stays sealed when the driver is not loaded, and without a driver class credential-like names
    are sealed."""
    node = Node(name="n1", driver="proxmox", settings={"token_id": "a@pve!b", "token_secret": "s3cret-value",
                                                       "api_url": "https://127.0.0.1:1"})
    ghost = Node(name="n2", driver="not-installed", settings={"password": "ghost-password", "host": "h"})
    db.session.add_all([node, ghost])
    db.session.commit()
    raw = {r[0]: r[1] for r in db.session.execute(text("SELECT name, settings FROM nodes"))}
    raw = {k: (v if isinstance(v, dict) else json.loads(v)) for k, v in raw.items()}
    assert raw["n1"]["token_id"] == "a@pve!b" and sealed.MARK in raw["n1"]["token_secret"]
    assert sealed.MARK in raw["n2"]["password"] and raw["n2"]["host"] == "h"
    db.session.expire_all()
    ghost = db.session.scalar(db.select(Node).filter_by(name="n2"))
    assert ghost.settings == {"password": "ghost-password", "host": "h"}
    ghost.settings = {**ghost.settings, "host": "h2"}
    db.session.commit()
    stored = db.session.execute(text("SELECT settings FROM nodes WHERE name = 'n2'")).scalar()
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    assert sealed.MARK in stored["password"] and stored["host"] == "h2"
