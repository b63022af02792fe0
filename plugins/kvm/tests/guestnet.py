"""Network plumbing for real-guest tests and the guest benchmark: a network namespace holding the guests'
gateway, the guests' tap devices moved into it as they appear, an SSH client inside it, and a socat relay that
carries the guests' phone-home (to the gateway address) over a Unix socket to hostbay's WSGI app in the calling
process. Nothing reaches any network but the namespace and loopback."""

from __future__ import annotations

import subprocess
import threading
import time

GW, NET = "10.77.0.1", "10.77.0.0/24"
NAMESERVER = "10.77.0.53"
READY_PORT = 8077


def _sh(*cmd, check=True, **kw):
    return subprocess.run(list(cmd), check=check, capture_output=True, text=True, **kw)


class Netns:
    """A network namespace holding the gateway; taps of domains named ``domain_prefix...`` are moved into it
    as they appear. Stale namespaces named ``ns_prefix...`` (an interrupted run) are removed first."""

    def __init__(self, name: str, sock: str, domain_prefix: str, ns_prefix: str):
        self.name, self.sock, self.domain_prefix = name, sock, domain_prefix
        self.moved: set[str] = set()
        self.stop = threading.Event()
        for old in _sh("ip", "netns", "list").stdout.split():  # left by an interrupted run of this suite
            if old.startswith(ns_prefix):
                _sh("ip", "netns", "del", old, check=False)
        _sh("ip", "netns", "add", name)
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        self.relay = subprocess.Popen(
            ["ip", "netns", "exec", name, "socat", f"TCP-LISTEN:{READY_PORT},fork,reuseaddr",
             f"UNIX-CONNECT:{sock}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self):
        import libvirt

        from hostbay.plugins.kvm import xml as X

        conn = libvirt.open("qemu:///system")
        try:
            while not self.stop.is_set():
                for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                    if not dom.name().startswith(self.domain_prefix):
                        continue
                    try:
                        target = X.parse(dom.XMLDesc(0)).find("./devices/interface/target")
                    except libvirt.libvirtError:
                        continue
                    dev = target.get("dev") if target is not None else None
                    if dev and _sh("ip", "link", "show", dev, check=False).returncode == 0:
                        self._adopt(dev)
                time.sleep(0.3)
        finally:
            conn.close()

    def _adopt(self, dev: str):
        _sh("ip", "link", "set", dev, "netns", self.name)
        _sh("ip", "-n", self.name, "addr", "add", f"{GW}/24", "dev", dev)
        _sh("ip", "-n", self.name, "link", "set", dev, "up")
        self.moved.add(dev)

    def ssh(self, key: Path, user: str, host: str, command: str, timeout=30) -> str:
        res = _sh("ip", "netns", "exec", self.name, "ssh", "-i", str(key), "-o", "BatchMode=yes",
                  "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10",
                  "-o", "LogLevel=ERROR", f"{user}@{host}", command, check=False, timeout=timeout)
        assert res.returncode == 0, f"ssh {user}@{host} {command!r}: {res.returncode} {res.stderr}"
        return res.stdout

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.relay.terminate()
        try:
            self.relay.wait(5)
        except subprocess.TimeoutExpired:
            self.relay.kill()
        _sh("ip", "netns", "del", self.name, check=False)
