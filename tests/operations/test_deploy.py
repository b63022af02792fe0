"""deploy/: the systemd units run commands that exist, read only settings hostbay knows, and the reverse proxy
routes the console to where the console settings say."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from hostbay.core import config as config_mod
from hostbay.web.cli import main

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def _env_example() -> dict[str, str]:
    out = {}
    for line in (DEPLOY / "hostbay.env.example").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k] = v
    return out


def _unit(path: Path) -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read(path)
    return cp


def test_one_unit_per_process():
    assert {u.name for u in UNITS} == {"hostbay-web.service", "hostbay-worker@.service",
                                       "hostbay-console-proxy.service"}


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_runs_a_real_command_with_the_shared_environment(unit):
    cp = _unit(unit)
    svc = cp["Service"]
    assert svc["EnvironmentFile"] == "/etc/hostbay/hostbay.env" and svc["User"] == "hostbay"
    assert svc["NoNewPrivileges"] == "true" and "Restart" in svc
    for key in ("ExecStartPre", "ExecStart"):
        if key not in svc:
            continue
        argv = shlex.split(svc[key])
        prog = Path(argv[0]).name
        if prog == "hostbay":
            # the subcommand (and its sub-subcommand) exist, and --help works for them
            res = CliRunner().invoke(main, argv[1:] + ["--help"])
            assert res.exit_code == 0, (unit.name, argv, res.output)
        else:
            assert prog == "gunicorn", argv
            app_spec = argv[-1]
            assert app_spec == "hostbay.web:create_app()"
            assert "--forwarded-allow-ips" in argv and argv[argv.index("--bind") + 1].startswith("127.0.0.1:")


def test_environment_example_names_only_known_settings():
    env = _env_example()
    unknown = sorted(set(env) - set(config_mod.SETTINGS))
    assert unknown == [], f"deploy/hostbay.env.example names settings hostbay does not have: {unknown}"
    assert env["HOSTBAY_BASE_URL"].startswith("https://") and env["HOSTBAY_CONSOLE_URL"].startswith("wss://")
    assert env["HOSTBAY_CONSOLE_PROXY_HOST"] == "127.0.0.1"


def test_reverse_proxy_routes_the_console_where_the_settings_say():
    conf = (DEPLOY / "nginx" / "hostbay.conf").read_text()
    env = _env_example()
    path = re.match(r"wss://[^/]+(/.*)$", env["HOSTBAY_CONSOLE_URL"]).group(1)
    block = re.search(r"location %s \{(.*?)\}" % re.escape(path), conf, re.S)
    assert block, f"no nginx location for the console path {path}"
    body = block.group(1)
    assert "proxy_set_header Upgrade $http_upgrade;" in body and "access_log off;" in body
    upstream = re.search(r"upstream hostbay_console\s*\{\s*server ([\d.]+):(\d+);", conf)
    assert upstream.groups() == (env["HOSTBAY_CONSOLE_PROXY_HOST"], env["HOSTBAY_CONSOLE_PROXY_PORT"])
    web = re.search(r"upstream hostbay_web\s*\{\s*server ([\d.:]+);", conf).group(1)
    web_unit = shlex.split(_unit(DEPLOY / "systemd" / "hostbay-web.service")["Service"]["ExecStart"])
    assert web_unit[web_unit.index("--bind") + 1] == web
    # the client address is replaced, not appended to (an appended header lets a client choose its address)
    assert "proxy_add_x_forwarded_for" not in conf and conf.count("X-Forwarded-For $remote_addr") == 2
    assert env["HOSTBAY_TRUSTED_PROXIES"] == "1"
