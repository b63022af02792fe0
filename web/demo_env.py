"""The address of the demo (``scripts/demo``): ``PORT`` and ``HOSTBAY_BASE_URL`` agree, and the ports are free.

``python -m hostbay.web.demo_env`` reads ``PORT``, ``HOSTBAY_BASE_URL`` and ``HOSTBAY_CONSOLE_PROXY_PORT`` from
the environment and prints shell ``export`` lines that make them agree (PORT alone: the base URL follows it;
HOSTBAY_BASE_URL alone: the port follows it; both: they must name the same port), plus the console proxy's URL.
Before anything is printed it checks that the panel's and the console proxy's ports are free on 127.0.0.1; a port
in use, or a disagreement, is reported on stderr with exit status 1, so the script stops before it prints a URL
that would not work.
"""

from __future__ import annotations

import os
import shlex
import socket
import sys
from urllib.parse import urlsplit

DEFAULT_PORT = 5000
DEFAULT_CONSOLE_PORT = 6080


class DemoAddressError(Exception):
    pass


def resolve(env) -> dict[str, str]:
    """The demo's PORT, HOSTBAY_BASE_URL, HOSTBAY_CONSOLE_PROXY_PORT and HOSTBAY_CONSOLE_URL from ``env``."""
    port_text, base = (env.get("PORT") or "").strip(), (env.get("HOSTBAY_BASE_URL") or "").strip().rstrip("/")
    try:
        port = int(port_text) if port_text else None
    except ValueError:
        raise DemoAddressError(f"PORT={port_text!r} is not a port number.") from None
    if base:
        parts = urlsplit(base)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DemoAddressError(f"HOSTBAY_BASE_URL={base!r} is not an http(s) URL.")
        url_port = parts.port or (443 if parts.scheme == "https" else 80)
        if port is None:
            port = url_port
        elif port != url_port:
            raise DemoAddressError(f"PORT={port} and HOSTBAY_BASE_URL={base} name different ports: payment return "
                                   "links and e-mails would point elsewhere. Set one of them, or both alike.")
    else:
        port = port or DEFAULT_PORT
        base = f"http://127.0.0.1:{port}"
    if not 0 < port < 65536:
        raise DemoAddressError(f"PORT={port} is not a port number.")
    console_port = int(env.get("HOSTBAY_CONSOLE_PROXY_PORT") or DEFAULT_CONSOLE_PORT)
    console_url = (env.get("HOSTBAY_CONSOLE_URL") or "").strip() or f"ws://127.0.0.1:{console_port}/"
    return {"PORT": str(port), "HOSTBAY_BASE_URL": base, "HOSTBAY_CONSOLE_PROXY_PORT": str(console_port),
            "HOSTBAY_CONSOLE_URL": console_url}


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def check_ports(values: dict[str, str]) -> None:
    for what, key, hint in (("panel", "PORT", "PORT=5077 bash scripts/demo"),
                            ("console proxy", "HOSTBAY_CONSOLE_PROXY_PORT",
                             "HOSTBAY_CONSOLE_PROXY_PORT=6081 bash scripts/demo")):
        port = int(values[key])
        if not port_free(port):
            raise DemoAddressError(f"Port {port} on 127.0.0.1 is in use, so the demo's {what} cannot listen there. "
                                   f"Stop the program using it, or choose another port: {hint}")


def main(env=None) -> int:
    env = os.environ if env is None else env
    try:
        values = resolve(env)
        check_ports(values)
    except DemoAddressError as exc:
        print(f"hostbay demo: {exc}", file=sys.stderr)
        return 1
    for key, value in values.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
