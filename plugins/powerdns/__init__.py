"""PowerDNS Authoritative as hostbay's reverse-DNS backend, through its HTTP API (``/api/v1``).

PTR records are written with ``PATCH /servers/{server}/zones/{zone}`` (rrset ``REPLACE`` / ``DELETE``) into the
longest existing reverse zone that contains the record's name. When none exists, the plugin creates one (a
``Native`` zone) at the configured boundary: ``/24`` for IPv4 (``c.b.a.in-addr.arpa.``) and ``/48`` for IPv6 by
default. ``resolve`` answers from the zones PowerDNS holds (the "forward must match" policy) and falls back to the
system resolver for names outside them.
"""

from __future__ import annotations

import ipaddress
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from hostbay.core.drivers import DnsBackend, Setting
from hostbay.core.errors import FatalDriverError, TransientDriverError
from hostbay.core.hookspecs import hookimpl


def reverse_name(address: str) -> str:
    """The PTR owner name of ``address`` with the trailing dot (``4.3.2.1.in-addr.arpa.``)."""
    return ipaddress.ip_address(address).reverse_pointer + "."


def reverse_zone(address: str, v4_prefix: int = 24, v6_prefix: int = 48) -> str:
    """The reverse zone at a label boundary: v4 in 8-bit steps, v6 in 4-bit (nibble) steps."""
    ip = ipaddress.ip_address(address)
    labels = ip.reverse_pointer.split(".")
    if ip.version == 4:
        keep = v4_prefix // 8  # octets kept
        return ".".join(labels[4 - keep:]) + "."
    keep = v6_prefix // 4  # nibbles kept
    return ".".join(labels[32 - keep:]) + "."


def _fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


class PowerDnsBackend(DnsBackend):
    name = "powerdns"
    label = "PowerDNS Authoritative (HTTP API)"
    settings = [
        Setting("api_url", "API URL", type="url", help="The webserver address, e.g. http://127.0.0.1:8081"),
        Setting("api_key", "API key", type="secret", help="The api-key of pdns.conf."),
        Setting("server_id", "Server ID", required=False, default="localhost"),
        Setting("ttl", "PTR TTL (seconds)", type="int", required=False, default=3600),
        Setting("nameservers", "Name servers for new reverse zones", required=False, default="",
                help="Comma-separated host names (with or without the trailing dot); empty: none."),
        Setting("ipv4_zone_prefix", "IPv4 reverse zone size", type="choice", required=False, default="24",
                choices=("8", "16", "24")),
        Setting("ipv6_zone_prefix", "IPv6 reverse zone size (prefix, multiple of 4)", type="int", required=False,
                default=48),
        Setting("timeout", "Timeout (seconds)", type="int", required=False, default=10),
    ]

    # -- HTTP -----------------------------------------------------------------------------------------------------
    def _request(self, method: str, path: str, body: Any = None, query: dict | None = None) -> Any:
        url = self.config["api_url"].rstrip("/") + "/api/v1" + path
        if query:
            url += "?" + urllib.parse.urlencode(query)
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={"X-API-Key": self.config["api_key"], "Accept": "application/json",
                                              **({"Content-Type": "application/json"} if data else {})})
        try:
            with urllib.request.urlopen(req, timeout=self.config["timeout"]) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            try:
                detail = json.loads(detail).get("error", detail)
            except (ValueError, AttributeError):
                pass
            if exc.code >= 500 or exc.code == 429:
                raise TransientDriverError(f"PowerDNS {method} {path}: HTTP {exc.code}: {detail}") from None
            raise FatalDriverError(f"PowerDNS {method} {path}: HTTP {exc.code}: {detail}") from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            raise TransientDriverError(f"PowerDNS API unreachable at {self.config['api_url']}: {exc}") from None
        return json.loads(raw) if raw else None

    def _server(self) -> str:
        return "/servers/" + urllib.parse.quote(self.config["server_id"], safe="")

    def zones(self) -> list[dict]:
        return self._request("GET", self._server() + "/zones", query={"dnssec": "false"}) or []

    def _zone_for(self, name: str, zones: list[dict] | None = None) -> dict | None:
        """The longest zone that contains ``name`` (both with trailing dots)."""
        best = None
        for z in zones if zones is not None else self.zones():
            zn = z["name"].lower()
            if name.lower() == zn or name.lower().endswith("." + zn):
                if best is None or len(zn) > len(best["name"]):
                    best = z
        return best

    def ensure_zone(self, zone_name: str) -> dict:
        found = self._request("GET", self._server() + "/zones", query={"zone": zone_name, "dnssec": "false"})
        if found:
            return found[0]
        ns = [_fqdn(n.strip()) for n in (self.config["nameservers"] or "").split(",") if n.strip()]
        try:
            return self._request("POST", self._server() + "/zones", {"name": zone_name, "kind": "Native",
                                                                    "nameservers": ns}, query={"rrsets": "false"})
        except FatalDriverError as exc:
            if "exists" in str(exc).lower():  # created concurrently
                return self._request("GET", self._server() + "/zones", query={"zone": zone_name})[0]
            raise

    def zone_for_address(self, address: str, create: bool = True) -> dict | None:
        name = reverse_name(address)
        zone = self._zone_for(name)
        if zone is None and create:
            zone = self.ensure_zone(reverse_zone(address, int(self.config["ipv4_zone_prefix"]),
                                                 int(self.config["ipv6_zone_prefix"])))
        return zone

    # -- DnsBackend -----------------------------------------------------------------------------------------------
    def validate(self) -> None:
        self._request("GET", self._server())

    def set_ptr(self, address: str, hostname: str | None) -> None:
        name = reverse_name(address)
        zone = self.zone_for_address(address, create=hostname is not None)
        if zone is None:
            return  # nothing to remove
        if hostname is None:
            rrset = {"name": name, "type": "PTR", "changetype": "DELETE"}
        else:
            rrset = {"name": name, "type": "PTR", "ttl": int(self.config["ttl"]), "changetype": "REPLACE",
                     "records": [{"content": _fqdn(hostname), "disabled": False}]}
        self._request("PATCH", f"{self._server()}/zones/{urllib.parse.quote(zone['id'], safe='')}",
                      {"rrsets": [rrset]})

    def get_ptr(self, address: str) -> str | None:
        """The PTR content PowerDNS holds for ``address`` (without the trailing dot), or None."""
        name = reverse_name(address)
        zone = self._zone_for(name)
        if zone is None:
            return None
        data = self._request("GET", f"{self._server()}/zones/{urllib.parse.quote(zone['id'], safe='')}",
                             query={"rrset_name": name, "rrset_type": "PTR"})
        for rr in data.get("rrsets", []):
            if rr["name"].lower() == name.lower() and rr["type"] == "PTR" and rr["records"]:
                return rr["records"][0]["content"].rstrip(".")
        return None

    def resolve(self, hostname: str) -> list[str]:
        name = _fqdn(hostname.lower())
        zone = self._zone_for(name)
        if zone is None:
            return super().resolve(hostname)
        data = self._request("GET", f"{self._server()}/zones/{urllib.parse.quote(zone['id'], safe='')}",
                             query={"rrsets": "true", "rrset_name": name})
        out = set()
        for rr in data.get("rrsets", []):
            if rr["name"].lower() == name and rr["type"] in ("A", "AAAA"):
                out.update(r["content"] for r in rr["records"] if not r.get("disabled"))
        return sorted(out)


@hookimpl
def hostbay_dns_backends():
    return [PowerDnsBackend]
