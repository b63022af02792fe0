"""A Proxmox VE API stand-in for tests, benchmarks and the demo (a Proxmox cluster cannot run here).

It serves ``/api2/json`` over real HTTPS on loopback with a self-signed certificate (``ca_file`` is what a client
trusts) and is strict to Proxmox's own API viewer schema (``pve-api-schema.json``, flattened path → method →
parameters): a path or method not in the schema answers 501; an unknown parameter or a missing required one
answers 400 with Proxmox's ``{"errors": {name: reason}, "data": null}``; integer and boolean values are checked.
Every request needs ``Authorization: PVEAPIToken=<user@realm!name>=<secret>`` (401 otherwise).

Clone, resize, start, shutdown, stop, reboot, suspend, resume, delete, upload and volume deletion are tasks: the
call returns a UPID at once and the task finishes ``task_delay`` seconds later (``GET /nodes/{node}/tasks/{upid}/
status`` says ``running`` until then, then ``stopped`` with ``exitstatus``). State is kept: VM configs, power
status, locks, firewall options, ipsets and storage contents. Tests ask for failures: :meth:`fail_task` (a task
ends with an error such as "storage full" or "can't lock file"), :meth:`lock_vm` (calls on a locked VM fail like
Proxmox's "VM is locked"), :meth:`drop_next` (the connection is closed without an answer), :meth:`stall_next` (the
answer comes late). ``vncproxy`` + ``vncwebsocket`` implement Proxmox's console: the ticket is bound to the token's
user, the VM and the port, valid for 10 seconds and single use, and the websocket speaks RFB 3.8 with VNC
authentication against the password ``vncproxy`` returned.

Every request is recorded in :attr:`requests` (method, schema path template, decoded parameters) so a test can
replay them against the schema.

Run it alone with ``python -m hostbay.plugins.proxmox.standin`` (prints its URL, token and CA file as JSON).
"""

from __future__ import annotations

import base64
import datetime as _dt
import email.parser
import email.policy
import hashlib
import ipaddress
import json
import os
import re
import secrets
import socket
import ssl
import struct
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

SCHEMA_ENV = "HOSTBAY_PVE_SCHEMA"
_HERE = Path(__file__).resolve().parent
DEFAULT_SCHEMA_PATHS = (_HERE / "pve-api-schema.json",)  # Proxmox's API viewer schema, flattened
BOOLEAN = {"0", "1", "true", "false", "yes", "no", "on", "off"}
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def schema_path() -> Path:
    if os.environ.get(SCHEMA_ENV):
        return Path(os.environ[SCHEMA_ENV])
    for p in DEFAULT_SCHEMA_PATHS:
        if p.exists():
            return p
    raise FileNotFoundError("pve-api-schema.json not found (set HOSTBAY_PVE_SCHEMA)")


class Schema:
    """Path templates with their methods and parameters; ``match(path)`` → (template, path params)."""

    def __init__(self, path: Path | None = None):
        data = json.loads(Path(path or schema_path()).read_text())
        self.paths: dict[str, dict] = data["paths"]
        self._res = []
        for tpl in self.paths:
            names = re.findall(r"{([^}]+)}", tpl)
            rx = "^" + re.sub(r"\\{[^}]+\\}", "([^/]+)", re.escape(tpl)) + "$"
            self._res.append((tpl.count("{"), re.compile(rx), tpl, names))
        self._res.sort(key=lambda t: t[0])  # literal segments win over placeholders

    def match(self, path: str):
        for _n, rx, tpl, names in self._res:
            m = rx.match(path)
            if m:
                return tpl, {k: unquote(v) for k, v in zip(names, m.groups())}
        return None, {}

    def check(self, method: str, tpl: str, params: dict) -> dict:
        """Proxmox's parameter errors for ``params`` (empty when they are valid)."""
        spec = self.paths[tpl][method]["parameters"]
        errors = {}
        indexed = {k[:-3]: v for k, v in spec.items() if k.endswith("[n]")}
        for name, value in params.items():
            decl = spec.get(name)
            if decl is None:
                m = re.fullmatch(r"([a-z_-]+?)(\d+)", name)
                decl = indexed.get(m.group(1)) if m else None
            if decl is None:
                errors[name] = "property is not defined in schema and the schema does not allow additional " \
                               "properties"
                continue
            t = decl.get("type")
            if t == "integer" and not re.fullmatch(r"-?\d+", str(value)):
                errors[name] = f"type check ('integer') failed - got '{value}'"
            elif t == "boolean" and str(value).lower() not in BOOLEAN:
                errors[name] = f"type check ('boolean') failed - got '{value}'"
            elif t == "number":
                try:
                    float(value)
                except ValueError:
                    errors[name] = f"type check ('number') failed - got '{value}'"
        for name, decl in spec.items():
            if not decl.get("optional") and not name.endswith("[n]") and name not in params:
                errors[name] = "property is missing and it is not optional"
        return errors


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


@dataclass
class Task:
    upid: str
    node: str
    type: str
    id: str
    user: str
    finish_at: float
    effect: object = None
    failure: str | None = None
    done: bool = False
    exitstatus: str | None = None
    starttime: int = field(default_factory=lambda: int(time.time()))


@dataclass
class VM:
    vmid: int
    node: str
    config: dict
    status: str = "stopped"
    template: bool = False
    firewall: dict = field(default_factory=dict)
    ipsets: dict = field(default_factory=dict)  # name -> {cidr: {"comment": ..., "nomatch": 0}}


def _size_gib(disk: str) -> float:
    m = re.search(r"size=(\d+(?:\.\d+)?)([KMGT]?)", disk)
    if not m:
        return 0
    n, unit = float(m.group(1)), m.group(2)
    return n * {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1, "T": 1024, "": 1 / 1024 ** 3}[unit]


def _fmt_gib(g: float) -> str:
    return f"{int(g)}G" if float(g).is_integer() else f"{int(g * 1024)}M"


def make_certificate(directory: Path, names=("127.0.0.1", "localhost", "::1")) -> tuple[Path, Path]:
    """A self-signed certificate (also its own CA) for the loopback names; returns (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Proxmox VE stand-in")])
    alt = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    now = _dt.datetime.now(_dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - _dt.timedelta(minutes=5))
            .not_valid_after(now + _dt.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "pve-standin.crt", directory / "pve-standin.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


class ProxmoxStandin:
    """The stand-in cluster. ``start()`` serves it; ``url``, ``token_id``, ``token_secret``, ``ca_file``."""

    def __init__(self, nodes=("pve1",), storages=None, task_delay: float = 0.2, token_id="hostbay@pve!hosting",
                 token_secret: str | None = None, templates: dict | None = None, schema: Schema | None = None,
                 workdir: Path | None = None, host: str = "127.0.0.1", storage_gib: int = 10000):
        self.schema = schema or Schema()
        self.nodes = list(nodes)
        self.task_delay = task_delay
        self.token_id = token_id
        self.token_secret = token_secret or str(__import__("uuid").uuid4())
        self.host = host
        self.lock = threading.RLock()
        self.vms: dict[int, VM] = {}
        self.tasks: dict[str, Task] = {}
        self.requests: list[dict] = []
        self.vnc_tickets: dict[str, dict] = {}
        self.vnc_sessions: list[dict] = []
        self._fail: dict[str, list[str]] = {}
        self._drop: list[tuple[str, str]] = []
        self._stall: list[tuple[str, str, float]] = []
        self._pid = 1000
        self._volumes_made = 0
        self.hidden: set[int] = set()  # VMIDs /cluster/resources does not list yet (a guest being created elsewhere)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="pve-standin-"))
        self.storages = {}
        for node in self.nodes:
            for st in (storages or ({"name": "local", "content": "iso,vztmpl,backup"},
                                    {"name": "local-lvm", "content": "images,rootdir"})):
                st = dict(st) if isinstance(st, dict) else {"name": st, "content": "images,iso"}
                self.storages[(node, st["name"])] = {"content": st.get("content", "images,iso"),
                                                     "total_gib": st.get("total_gib", storage_gib),
                                                     "volumes": {}}
        for vmid, spec in (templates or {9000: {"node": self.nodes[0], "disk_gib": 2}}).items():
            node = spec.get("node", self.nodes[0])
            disk = f"local-lvm:base-{vmid}-disk-0,size={_fmt_gib(spec.get('disk_gib', 2))}"
            self.vms[int(vmid)] = VM(int(vmid), node, {
                "name": spec.get("name", f"template-{vmid}"), "cores": "1", "memory": "512", "template": "1",
                "scsi0": disk, "scsihw": "virtio-scsi-pci", "ide0": "local-lvm:vm-%d-cloudinit,media=cdrom" % vmid,
                "net0": f"virtio={self._mac()},bridge=vmbr0", "boot": "order=scsi0", "serial0": "socket",
                "vga": "std"}, template=True)
            self._add_volume(node, "local-lvm", f"local-lvm:base-{vmid}-disk-0", spec.get("disk_gib", 2))
        self.httpd = None
        self.thread = None
        self.ca_file = None

    # -- control for tests ----------------------------------------------------------------------------------
    def fail_task(self, task_type: str, message: str, times: int = 1) -> None:
        """The next ``times`` tasks of ``task_type`` (qmclone, qmresize, qmstart, ...) end with ``message``."""
        with self.lock:
            self._fail.setdefault(task_type, []).extend([message] * times)

    def lock_vm(self, vmid: int, reason: str | None = "backup") -> None:
        with self.lock:
            cfg = self.vms[vmid].config
            if reason:
                cfg["lock"] = reason
            else:
                cfg.pop("lock", None)

    def drop_next(self, method: str, path_re: str, after: bool = False) -> None:
        """Close the connection of the next matching request without answering: before acting on it, or with
        ``after`` once it was carried out (the answer is lost, the effect is not)."""
        with self.lock:
            self._drop.append((method, path_re, after))

    def stall_next(self, method: str, path_re: str, seconds: float) -> None:
        with self.lock:
            self._stall.append((method, path_re, seconds))

    def vm_by_name(self, name: str) -> list[VM]:
        return [v for v in self.vms.values() if v.config.get("name") == name]

    def guests(self) -> list[VM]:
        return [v for v in self.vms.values() if not v.template]

    def api_calls(self) -> int:
        return len(self.requests)

    # -- server ---------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"https://{host}:{self.port}"

    def start(self, port: int = 0) -> "ProxmoxStandin":
        cert, key = make_certificate(self.workdir)
        self.ca_file = str(cert)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        standin = self

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET

            def handle_error(self, request, client_address):
                pass

            def get_request(self):
                sock, addr = super().get_request()
                sock.settimeout(30)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # like pveproxy: no Nagle delay
                return ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

        class Handler(_Handler):
            pass

        Handler.standin = standin
        self.httpd = Server((self.host, port), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                       daemon=True)
        self.thread.start()
        self._ticker = threading.Thread(target=self._tick_forever, daemon=True)
        self._running = True
        self._ticker.start()
        return self

    def stop(self) -> None:
        self._running = False
        if self.httpd:
            self.httpd.shutdown()
            self.httpd.server_close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _tick_forever(self):
        while self._running:
            self.tick()
            time.sleep(0.01)

    def tick(self) -> None:
        now = time.monotonic()
        with self.lock:
            for task in list(self.tasks.values()):
                if not task.done and now >= task.finish_at:
                    self._finish(task)

    def _finish(self, task: Task) -> None:
        task.done = True
        failure = task.failure
        if failure is None:
            queued = self._fail.get(task.type)
            if queued:
                failure = queued.pop(0)
        if failure is None and task.effect is not None:
            try:
                task.effect()
            except ApiError as exc:
                failure = exc.message
        elif failure is not None and task.type == "qmclone":
            # a failed clone leaves no VM behind (Proxmox removes the half-created guest)
            vmid = int(task.id)
            vm = self.vms.get(vmid)
            if vm is not None and vm.config.get("lock") == "clone":
                self._drop_vm(vm)
        task.exitstatus = failure or "OK"

    # -- helpers --------------------------------------------------------------------------------------------
    def _mac(self) -> str:
        return "BC:24:11:" + ":".join(f"{secrets.randbelow(256):02X}" for _ in range(3))

    def _upid(self, node: str, ttype: str, tid: str, user: str) -> str:
        self._pid += 1
        now = int(time.time())
        return f"UPID:{node}:{self._pid:08X}:{self._pid * 7:08X}:{now:08X}:{ttype}:{tid}:{user}:"

    def task(self, node: str, ttype: str, tid, user: str, effect=None, delay: float | None = None) -> str:
        upid = self._upid(node, ttype, str(tid), user)
        delay = self.task_delay if delay is None else delay
        self.tasks[upid] = Task(upid, node, ttype, str(tid), user, time.monotonic() + delay, effect)
        return upid

    def _add_volume(self, node, storage, volid, size_gib, content="images"):
        st = self.storages[(node, storage)]
        self._volumes_made += 1  # a volume's identity (a new volume under an old name is another volume)
        st["volumes"][volid] = {"size_gib": size_gib, "content": content, "serial": self._volumes_made}

    def _used(self, node, storage) -> float:
        return sum(v["size_gib"] for v in self.storages[(node, storage)]["volumes"].values())

    def _drop_vm(self, vm: VM) -> None:
        for (node, _st), st in self.storages.items():
            for volid in [k for k in st["volumes"] if re.search(rf"(vm|base)-{vm.vmid}-", k)]:
                del st["volumes"][volid]
        self.vms.pop(vm.vmid, None)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    standin: ProxmoxStandin
    server_version = "pve-api-daemon/3.0"

    def log_message(self, *args):  # quiet
        pass

    def setup(self):
        super().setup()
        try:
            self.connection.do_handshake()
        except (ssl.SSLError, OSError):
            self.close_connection = True
            raise

    def _send(self, status: int, data=None, errors=None, message: str | None = None, headers=None):
        body = {"data": data}
        if errors is not None:
            body["errors"] = errors
        if message:
            body["message"] = message
        if getattr(self, "_entry", None) is not None:
            self._entry["status"] = status
            self._entry = None
        raw = json.dumps(body).encode()
        reason = (message or "").splitlines()[0][:200] if message else None
        self.send_response(status, reason)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(raw)

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    def do_DELETE(self):
        self._dispatch("DELETE")

    def _params(self) -> dict:
        parts = urlsplit(self.path)
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        ctype = self.headers.get("Content-Type", "")
        if body and ctype.startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(body.decode(), keep_blank_values=True))
        elif body and ctype.startswith("multipart/form-data"):
            msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
                b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
            for part in msg.iter_parts():
                name = part.get_param("name", header="content-disposition")
                fname = part.get_filename()
                payload = part.get_payload(decode=True)
                params[name] = {"filename": fname, "data": payload} if fname is not None else payload.decode()
        elif body and ctype.startswith("application/json"):
            params.update({k: str(v) for k, v in json.loads(body).items()})
        return params

    def _dispatch(self, method: str):
        s = self.standin
        self._entry = None
        parts = urlsplit(self.path)
        try:
            params = self._params()
        except Exception as exc:  # noqa: BLE001
            return self._send(400, errors={"body": str(exc)}, message="bad request")
        drop_after = False
        with s.lock:
            for i, (m, rx, after) in enumerate(s._drop):
                if m == method and re.search(rx, parts.path):
                    del s._drop[i]
                    if after:
                        drop_after = True
                        break
                    self.close_connection = True
                    self.connection.close()
                    return
            stall = 0
            for i, (m, rx, secs) in enumerate(s._stall):
                if m == method and re.search(rx, parts.path):
                    del s._stall[i]
                    stall = secs
                    break
        if stall:
            time.sleep(stall)
        if not parts.path.startswith("/api2/json/"):
            return self._send(501, message="no such uri")
        path = parts.path[len("/api2/json"):]
        auth = self.headers.get("Authorization", "")
        if auth != f"PVEAPIToken={s.token_id}={s.token_secret}":
            time.sleep(0.05)
            return self._send(401, message="authentication failure")
        tpl, path_params = s.schema.match(path)
        if tpl is None or method not in s.schema.paths[tpl]:
            return self._send(501, message=f"Method '{method} {path}' not implemented")
        values = {k: (v if not isinstance(v, dict) else "<file>") for k, v in params.items()}
        self._entry = {"method": method, "path": path, "template": tpl, "params": values, "status": None,
                       "at": time.monotonic()}
        with s.lock:
            s.requests.append(self._entry)
        errors = s.schema.check(method, tpl, {**params, **path_params})
        if errors:
            return self._send(400, errors=errors, message="Parameter verification failed.")
        handler = ROUTES.get((method, tpl))
        if handler is None:
            return self._send(501, message=f"Method '{method} {path}' not implemented in the stand-in")
        if tpl.endswith("/vncwebsocket") and self.headers.get("Upgrade", "").lower() == "websocket":
            return _vncwebsocket(self, s, {**params, **path_params})
        try:
            with s.lock:
                result = handler(s, {**params, **path_params}, s.token_id)
        except ApiError as exc:
            return self._send(exc.status, errors=exc.errors, message=exc.message)
        if drop_after:
            self._entry["status"] = "dropped"
            self.close_connection = True
            self.connection.close()
            return
        self._send(200, result)


# ------------------------------------------------------------------------------------------------------------
# API implementation
# ------------------------------------------------------------------------------------------------------------

ROUTES: dict = {}


def route(method: str, tpl: str):
    def deco(fn):
        ROUTES[(method, tpl)] = fn
        return fn
    return deco


def _node(s: ProxmoxStandin, p) -> str:
    if p["node"] not in s.nodes:
        raise ApiError(595, f"no such cluster node '{p['node']}'")
    return p["node"]


def _vm(s: ProxmoxStandin, p, modify: bool = False) -> VM:
    node = _node(s, p)
    vm = s.vms.get(int(p["vmid"]))
    if vm is None or vm.node != node:
        raise ApiError(500, f"Configuration file 'nodes/{node}/qemu-server/{p['vmid']}.conf' does not exist")
    if modify and vm.config.get("lock") and not str(p.get("skiplock", "0")) in ("1", "true"):
        raise ApiError(500, f"VM is locked ({vm.config['lock']})")
    return vm


def _bool(v) -> bool:
    return str(v).lower() in ("1", "true", "yes", "on")


@route("GET", "/version")
def _version(s, p, user):
    return {"version": "8.2.4", "release": "8.2", "repoid": "faa83925c9641325"}


@route("GET", "/nodes")
def _nodes(s, p, user):
    return [{"node": n, "status": "online", "type": "node", "maxcpu": 32, "maxmem": 256 * 1024 ** 3}
            for n in s.nodes]


@route("GET", "/nodes/{node}/status")
def _node_status(s, p, user):
    _node(s, p)
    return {"uptime": 1000, "cpu": 0.01, "memory": {"total": 256 * 1024 ** 3, "used": 1024 ** 3},
            "pveversion": "pve-manager/8.2.4"}


@route("GET", "/cluster/resources")
def _resources(s, p, user):
    out = []
    if p.get("type") in (None, "", "vm"):
        for vm in s.vms.values():
            if vm.vmid in s.hidden:
                continue
            out.append({"id": f"qemu/{vm.vmid}", "type": "qemu", "vmid": vm.vmid, "node": vm.node,
                        "name": vm.config.get("name"), "status": vm.status, "template": int(vm.template)})
    if p.get("type") in (None, "", "storage"):
        for (node, name), st in s.storages.items():
            out.append({"id": f"storage/{node}/{name}", "type": "storage", "node": node, "storage": name})
    return out


@route("GET", "/nodes/{node}/storage")
def _storages(s, p, user):
    node = _node(s, p)
    return [{"storage": name, "content": st["content"], "active": 1, "enabled": 1,
             "total": st["total_gib"] * 1024 ** 3, "used": int(s._used(node, name) * 1024 ** 3)}
            for (n, name), st in s.storages.items() if n == node]


def _storage(s, p):
    node = _node(s, p)
    st = s.storages.get((node, p["storage"]))
    if st is None:
        raise ApiError(500, f"storage '{p['storage']}' does not exist")
    return node, st


@route("GET", "/nodes/{node}/storage/{storage}/status")
def _storage_status(s, p, user):
    node, st = _storage(s, p)
    used = int(s._used(node, p["storage"]) * 1024 ** 3)
    return {"active": 1, "enabled": 1, "content": st["content"], "total": st["total_gib"] * 1024 ** 3,
            "used": used, "avail": st["total_gib"] * 1024 ** 3 - used, "type": "lvmthin"}


@route("GET", "/nodes/{node}/storage/{storage}/content")
def _content(s, p, user):
    node, st = _storage(s, p)
    return [{"volid": k, "content": v["content"], "size": int(v["size_gib"] * 1024 ** 3), "format": "iso"
             if v["content"] == "iso" else "raw"} for k, v in st["volumes"].items()
            if not p.get("content") or v["content"] == p["content"]]


@route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}")
def _content_delete(s, p, user):
    node, st = _storage(s, p)
    volid = p["volume"] if ":" in p["volume"] else f"{p['storage']}:{p['volume']}"
    if volid not in st["volumes"]:
        raise ApiError(500, f"volume '{volid}' does not exist")

    def effect():
        st["volumes"].pop(volid, None)
    return s.task(node, "imgdel", volid, user, effect)


@route("POST", "/nodes/{node}/storage/{storage}/upload")
def _upload(s, p, user):
    node, st = _storage(s, p)
    f = p["filename"]
    if not isinstance(f, dict):
        raise ApiError(400, "Parameter verification failed.", {"filename": "no file uploaded"})
    if p["content"] not in st["content"].split(","):
        raise ApiError(500, f"storage '{p['storage']}' does not support content type '{p['content']}'")
    name = os.path.basename(f["filename"] or "")
    if not re.fullmatch(r"[\w.+-]+\.(iso|img)", name):
        raise ApiError(400, "Parameter verification failed.", {"filename": "invalid filename"})
    volid = f"{p['storage']}:{p['content']}/{name}"
    size = len(f["data"]) / 1024 ** 3
    if s._used(node, p["storage"]) + size > st["total_gib"]:
        raise ApiError(500, f"storage '{p['storage']}' full")
    digest = hashlib.sha256(f["data"]).hexdigest()
    if p.get("checksum") and p.get("checksum") != digest:
        raise ApiError(500, "checksum mismatch")

    def effect():
        s._add_volume(node, p["storage"], volid, size, content=p["content"])
        st["volumes"][volid]["sha256"] = digest
    return s.task(node, "imgcopy", "", user, effect)


@route("GET", "/nodes/{node}/tasks/{upid}/status")
def _task_status(s, p, user):
    _node(s, p)
    task = s.tasks.get(p["upid"])
    if task is None:
        raise ApiError(500, f"no such task '{p['upid']}'")
    s.tick()
    out = {"upid": task.upid, "node": task.node, "type": task.type, "id": task.id, "user": task.user,
           "starttime": task.starttime, "pid": int(task.upid.split(":")[2], 16),
           "status": "stopped" if task.done else "running"}
    if task.done:
        out["exitstatus"] = task.exitstatus
    return out


@route("GET", "/nodes/{node}/qemu")
def _qemu_list(s, p, user):
    node = _node(s, p)
    return [{"vmid": v.vmid, "name": v.config.get("name"), "status": v.status, "template": int(v.template)}
            for v in s.vms.values() if v.node == node]


@route("GET", "/nodes/{node}/qemu/{vmid}/config")
def _config_get(s, p, user):
    vm = _vm(s, p)
    cfg = dict(vm.config)
    cfg["digest"] = hashlib.sha1(json.dumps(vm.config, sort_keys=True).encode()).hexdigest()
    return cfg


def _apply_config(s, vm: VM, p):
    reserved = {"node", "vmid", "digest", "delete", "skiplock", "revert", "background_delay", "force"}
    for key in [k.strip() for k in str(p.get("delete") or "").split(",") if k.strip()]:
        vm.config.pop(key, None)
    for k, v in p.items():
        if k in reserved:
            continue
        if k == "sshkeys":  # Proxmox expects the keys percent-encoded (%20); '+' or a raw space is not that
            if " " in v or "+" in v or "\n" in v:
                raise ApiError(400, "Parameter verification failed.", {"sshkeys": "invalid urlencoded string"})
        if re.fullmatch(r"net\d+", k) and re.match(r"^(virtio|e1000)(,|$)", v):  # no MAC given: a new one
            model, rest = v.split(",", 1) if "," in v else (v, "")
            v = f"{model}={s._mac()}" + (f",{rest}" if rest else "")
        vm.config[k] = v


@route("PUT", "/nodes/{node}/qemu/{vmid}/config")
def _config_put(s, p, user):
    vm = _vm(s, p, modify=True)
    _apply_config(s, vm, p)
    return None


@route("POST", "/nodes/{node}/qemu/{vmid}/config")
def _config_post(s, p, user):
    vm = _vm(s, p, modify=True)
    return s.task(vm.node, "qmconfig", vm.vmid, user, lambda: _apply_config(s, vm, p))


@route("POST", "/nodes/{node}/qemu/{vmid}/clone")
def _clone(s, p, user):
    src = _vm(s, p)
    newid = int(p["newid"])
    target = p.get("target") or src.node
    if target not in s.nodes:
        raise ApiError(500, f"no such cluster node '{target}'")
    if newid in s.vms:
        raise ApiError(500, f"unable to create VM {newid}: config file already exists")
    if not src.template and not _bool(p.get("full", 0)) and src.status == "running":
        raise ApiError(500, "linked clone of a running VM is not possible")
    full = _bool(p.get("full", 0 if src.template else 1))
    storage = p.get("storage") or "local-lvm"
    if p.get("storage") and not full:
        raise ApiError(400, "Parameter verification failed.", {"storage": "option is only valid for full clone"})
    if (target, storage) not in s.storages:
        raise ApiError(500, f"storage '{storage}' does not exist")
    disk_gib = _size_gib(src.config.get("scsi0", ""))  # a full storage fails the task below, as in Proxmox
    cfg = {k: v for k, v in src.config.items() if k not in ("template", "lock")}
    cfg["name"] = p.get("name") or f"Copy-of-VM-{src.config.get('name')}"
    if p.get("description"):
        cfg["description"] = p["description"]
    cfg["net0"] = re.sub(r"virtio=[0-9A-F:]+", f"virtio={s._mac()}", cfg.get("net0", ""))
    disk = f"{storage}:vm-{newid}-disk-0,size={_fmt_gib(disk_gib)}"
    cfg["scsi0"] = disk
    cfg["ide0"] = f"{storage}:vm-{newid}-cloudinit,media=cdrom"
    vm = VM(newid, target, {**cfg, "lock": "clone"})
    s.vms[newid] = vm

    def effect():
        st_used = s._used(target, storage) + disk_gib
        if full and st_used > s.storages[(target, storage)]["total_gib"]:
            s._drop_vm(vm)
            raise ApiError(500, f"clone failed: storage '{storage}' full")
        s._add_volume(target, storage, f"{storage}:vm-{newid}-disk-0", disk_gib)
        vm.config.pop("lock", None)
    return s.task(src.node, "qmclone", newid, user, effect)


@route("PUT", "/nodes/{node}/qemu/{vmid}/resize")
def _resize(s, p, user):
    vm = _vm(s, p, modify=True)
    disk = p["disk"]
    if disk not in vm.config:
        raise ApiError(500, f"disk '{disk}' does not exist")
    current = _size_gib(vm.config[disk])
    m = re.fullmatch(r"(\+)?(\d+(?:\.\d+)?)([KMGT])?", p["size"])
    if not m:
        raise ApiError(400, "Parameter verification failed.", {"size": "value does not match the regex pattern"})
    n = float(m.group(2)) * {"K": 1 / 1024 ** 2, "M": 1 / 1024, "G": 1, "T": 1024, None: 1 / 1024 ** 3}[m.group(3)]
    new = current + n if m.group(1) else n
    if new < current:
        raise ApiError(500, "shrinking disks is not supported")
    storage = vm.config[disk].split(":", 1)[0]

    def effect():
        if s._used(vm.node, storage) + (new - current) > s.storages[(vm.node, storage)]["total_gib"]:
            raise ApiError(500, f"storage '{storage}' full")
        vm.config[disk] = re.sub(r"size=[^,]+", f"size={_fmt_gib(new)}", vm.config[disk])
        volid = vm.config[disk].split(",")[0]
        if volid in s.storages[(vm.node, storage)]["volumes"]:
            s.storages[(vm.node, storage)]["volumes"][volid]["size_gib"] = new
    return s.task(vm.node, "qmresize", vm.vmid, user, effect)


@route("GET", "/nodes/{node}/qemu/{vmid}/status/current")
def _status(s, p, user):
    vm = _vm(s, p)
    out = {"vmid": vm.vmid, "name": vm.config.get("name"), "status": "running" if vm.status == "paused"
           else vm.status, "qmpstatus": vm.status, "cpus": int(vm.config.get("cores", 1)),
           "maxmem": int(vm.config.get("memory", 512)) * 1024 ** 2}
    if vm.config.get("lock"):
        out["lock"] = vm.config["lock"]
    if vm.template:
        out["template"] = 1
    return out


def _power(action: str, ttype: str, new_state, needs=None):
    def handler(s, p, user):
        vm = _vm(s, p, modify=True)
        if vm.template:
            raise ApiError(500, "you can't start a vm if it's a template")
        if needs and vm.status not in needs:
            raise ApiError(500, f"VM {vm.vmid} not running")

        def effect():
            vm.status = new_state(vm) if callable(new_state) else new_state
        return s.task(vm.node, ttype, vm.vmid, user, effect)
    return handler


ROUTES[("POST", "/nodes/{node}/qemu/{vmid}/status/start")] = _power("start", "qmstart", "running")
ROUTES[("POST", "/nodes/{node}/qemu/{vmid}/status/stop")] = _power("stop", "qmstop", "stopped")
ROUTES[("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown")] = _power("shutdown", "qmshutdown", "stopped",
                                                                      needs=("running", "paused"))
ROUTES[("POST", "/nodes/{node}/qemu/{vmid}/status/reboot")] = _power("reboot", "qmreboot", "running",
                                                                    needs=("running",))
ROUTES[("POST", "/nodes/{node}/qemu/{vmid}/status/suspend")] = _power("suspend", "qmsuspend", "paused",
                                                                     needs=("running",))
ROUTES[("POST", "/nodes/{node}/qemu/{vmid}/status/resume")] = _power("resume", "qmresume", "running",
                                                                    needs=("paused", "running"))


@route("POST", "/nodes/{node}/qemu/{vmid}/migrate")
def _migrate(s, p, user):
    """``qm migrate``: the guest and its disks move to ``target`` in a ``qmigrate`` task of the source node. A running
    guest needs ``online`` (and ``with-local-disks`` for disks on local storage, which every stand-in storage is);
    ``targetstorage`` maps the disks to another storage of the target (one storage ID, or ``source:target``
    pairs); without it they keep their storage's name. The guest is locked (``migrate``) until the task ends."""
    vm = _vm(s, p, modify=True)
    target = p["target"]
    if target not in s.nodes:
        raise ApiError(500, f"no such cluster node '{target}'")
    if target == vm.node:
        raise ApiError(500, "target is local node.")
    if vm.template:
        raise ApiError(500, "you can't migrate a template this way")
    online = _bool(p.get("online", 0))
    if vm.status != "stopped" and not online:
        raise ApiError(500, "can't migrate running VM without --online")
    if vm.status != "stopped" and not _bool(p.get("with-local-disks", 0)):
        raise ApiError(500, "can't live migrate attached local disks without with-local-disks option")
    mapping = {}
    for pair in filter(None, (p.get("targetstorage") or "").split(",")):
        src, _, dst = pair.partition(":")
        if dst:
            mapping[src] = dst
        else:
            mapping["*"] = src
    disks = {}
    for key, value in vm.config.items():
        m = re.fullmatch(r"([a-z0-9-]+):((?:vm|base)-\d+-[a-z0-9-]+)(,.*)?", str(value))
        if m and re.fullmatch(r"(scsi|virtio|sata|ide|efidisk|tpmstate)\d+", key):
            storage = m.group(1)
            dst = mapping.get(storage, mapping.get("*", storage))
            if (target, dst) not in s.storages:
                raise ApiError(500, f"storage '{dst}' is not available on node '{target}'")
            disks[key] = (storage, dst, m.group(2), m.group(3) or "")
    source = vm.node
    vm.config["lock"] = "migrate"

    def effect():
        try:
            need = sum(s.storages[(source, st)]["volumes"].get(f"{st}:{name}", {}).get("size_gib", 0)
                       for st, _dst, name, _rest in disks.values())
            for dst in {d for _s, d, _n, _r in disks.values()}:
                if s._used(target, dst) + need > s.storages[(target, dst)]["total_gib"]:
                    raise ApiError(500, f"migration aborted: storage '{dst}' on node '{target}' is full")
            for key, (st, dst, name, rest) in disks.items():
                vol = s.storages[(source, st)]["volumes"].pop(f"{st}:{name}", None)
                if vol is not None:
                    s.storages[(target, dst)]["volumes"][f"{dst}:{name}"] = vol
                vm.config[key] = f"{dst}:{name}{rest}"
            vm.node = target
        finally:
            vm.config.pop("lock", None)
    return s.task(source, "qmigrate", vm.vmid, user, effect)


@route("DELETE", "/nodes/{node}/qemu/{vmid}")
def _destroy(s, p, user):
    vm = _vm(s, p, modify=True)
    if vm.status != "stopped":
        raise ApiError(500, f"VM {vm.vmid} is running - destroy failed")

    def effect():
        s._drop_vm(vm)
    return s.task(vm.node, "qmdestroy", vm.vmid, user, effect)


@route("GET", "/nodes/{node}/qemu/{vmid}/firewall/options")
def _fw_get(s, p, user):
    return dict(_vm(s, p).firewall)


@route("PUT", "/nodes/{node}/qemu/{vmid}/firewall/options")
def _fw_put(s, p, user):
    vm = _vm(s, p)
    for key in [k.strip() for k in str(p.get("delete") or "").split(",") if k.strip()]:
        vm.firewall.pop(key, None)
    for k, v in p.items():
        if k not in ("node", "vmid", "digest", "delete"):
            vm.firewall[k] = int(_bool(v)) if k in ("enable", "ipfilter", "dhcp", "macfilter", "ndp",
                                                    "radv") else v
    return None


@route("GET", "/nodes/{node}/qemu/{vmid}/firewall/ipset")
def _ipsets(s, p, user):
    return [{"name": n, "digest": "x"} for n in _vm(s, p).ipsets]


@route("POST", "/nodes/{node}/qemu/{vmid}/firewall/ipset")
def _ipset_create(s, p, user):
    vm = _vm(s, p)
    if p["name"] in vm.ipsets:
        raise ApiError(500, f"IPSet '{p['name']}' already exists")
    vm.ipsets[p["name"]] = {}
    return None


@route("DELETE", "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}")
def _ipset_delete(s, p, user):
    vm = _vm(s, p)
    if vm.ipsets.get(p["name"]) and not _bool(p.get("force", 0)):
        raise ApiError(500, "IPSet is not empty")
    vm.ipsets.pop(p["name"], None)
    return None


def _cidr(v: str) -> str:
    try:
        ipaddress.ip_network(v, strict=False)
    except ValueError:
        raise ApiError(400, "Parameter verification failed.", {"cidr": f"invalid IP address or CIDR '{v}'"})
    return v


@route("GET", "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}")
def _ipset_list(s, p, user):
    vm = _vm(s, p)
    if p["name"] not in vm.ipsets:
        raise ApiError(500, f"no such IPSet '{p['name']}'")
    return [{"cidr": c, **meta} for c, meta in vm.ipsets[p["name"]].items()]


@route("POST", "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}")
def _ipset_add(s, p, user):
    vm = _vm(s, p)
    if p["name"] not in vm.ipsets:
        raise ApiError(500, f"no such IPSet '{p['name']}'")
    cidr = _cidr(p["cidr"])
    if cidr in vm.ipsets[p["name"]]:
        raise ApiError(500, f"address '{cidr}' already exists")
    vm.ipsets[p["name"]][cidr] = {"comment": p.get("comment", ""), "nomatch": int(_bool(p.get("nomatch", 0)))}
    return None


@route("DELETE", "/nodes/{node}/qemu/{vmid}/firewall/ipset/{name}/{cidr}")
def _ipset_remove(s, p, user):
    vm = _vm(s, p)
    entries = vm.ipsets.get(p["name"])
    if entries is None:
        raise ApiError(500, f"no such IPSet '{p['name']}'")
    if p["cidr"] not in entries:
        raise ApiError(500, f"no such IP/Network '{p['cidr']}'")
    del entries[p["cidr"]]
    return None


@route("POST", "/nodes/{node}/qemu/{vmid}/vncproxy")
def _vncproxy(s, p, user):
    vm = _vm(s, p)
    if vm.status != "running":
        raise ApiError(500, f"VM {vm.vmid} not running")
    port = 5900 + (len(s.vnc_tickets) % 100)
    password = secrets.token_urlsafe(6)[:8]
    body = base64.b64encode(f"{user}:/vms/{vm.vmid}:{port}:{secrets.token_hex(8)}".encode()).decode()
    ticket = f"{password}:PVEVNC:{int(time.time()):08X}::{body}"
    upid = s.task(vm.node, "vncproxy", vm.vmid, user, delay=10)
    s.vnc_tickets[ticket] = {"user": user, "vmid": vm.vmid, "port": port, "password": password,
                             "expires": time.monotonic() + 10, "used": False}
    return {"port": str(port), "ticket": ticket, "password": password, "user": user, "upid": upid,
            "cert": "-----BEGIN CERTIFICATE-----\n...\n-----END CERTIFICATE-----\n"}


@route("GET", "/nodes/{node}/qemu/{vmid}/vncwebsocket")
def _vncwebsocket_plain(s, p, user):
    raise ApiError(400, "websocket upgrade required")


def _vncwebsocket(h: _Handler, s: ProxmoxStandin, p: dict):
    user = s.token_id
    with s.lock:
        vm = s.vms.get(int(p["vmid"]))
        ticket = s.vnc_tickets.get(p["vncticket"])
        ok = (vm is not None and vm.node == p["node"] and ticket is not None and not ticket["used"]
              and ticket["vmid"] == vm.vmid and ticket["port"] == int(p["port"]) and ticket["user"] == user
              and ticket["expires"] > time.monotonic())
        if ok:
            ticket["used"] = True
    if not ok:
        return h._send(401, message="permission denied - invalid PVE ticket")
    key = h.headers.get("Sec-WebSocket-Key", "")
    if h.headers.get("Sec-WebSocket-Version") != "13" or not key:
        return h._send(400, message="unsupported websocket-version")
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    h.send_response(101, "Switching Protocols")
    h.send_header("Upgrade", "websocket")
    h.send_header("Connection", "Upgrade")
    h.send_header("Sec-WebSocket-Accept", accept)
    if "binary" in (h.headers.get("Sec-WebSocket-Protocol") or ""):
        h.send_header("Sec-WebSocket-Protocol", "binary")
    h.end_headers()
    h.wfile.flush()
    h.close_connection = True
    session = {"vmid": vm.vmid, "authenticated": False, "client_init": False, "bytes_from_client": 0}
    s.vnc_sessions.append(session)
    ws = _ServerWs(h.connection)
    try:
        _rfb_server(ws, ticket["password"], f"VM {vm.vmid}", session)
    except (ConnectionError, OSError, ValueError):
        pass


class _ServerWs:
    """Minimal RFC 6455 server side: binary frames out, masked frames in."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _recv(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_message(self) -> bytes:
        data = b""
        while True:
            b1, b2 = self._recv(2)
            fin, opcode, masked, length = b1 & 0x80, b1 & 0x0F, b2 & 0x80, b2 & 0x7F
            if length == 126:
                length = struct.unpack(">H", self._recv(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self._recv(8))[0]
            if not masked:
                raise ValueError("unmasked client frame")
            mask = self._recv(4)
            payload = bytes(b ^ mask[i % 4] for i, b in enumerate(self._recv(length)))
            if opcode == 8:
                raise ConnectionError("close")
            if opcode == 9:
                self._send(10, payload)
                continue
            if opcode == 10:
                continue
            data += payload
            if fin:
                return data

    def _send(self, opcode: int, payload: bytes):
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([n])
        elif n < 65536:
            head += bytes([126]) + struct.pack(">H", n)
        else:
            head += bytes([127]) + struct.pack(">Q", n)
        self.sock.sendall(head + payload)

    def send(self, payload: bytes):
        self._send(2, payload)


class _RfbReader:
    def __init__(self, ws: _ServerWs, session: dict):
        self.ws, self.buf, self.session = ws, b"", session

    def read(self, n: int) -> bytes:
        while len(self.buf) < n:
            msg = self.ws.recv_message()
            self.session["bytes_from_client"] += len(msg)
            self.buf += msg
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def _rfb_server(ws: _ServerWs, password: str, name: str, session: dict):
    from hostbay.core.console_relay import vnc_auth_response

    r = _RfbReader(ws, session)
    ws.send(b"RFB 003.008\n")
    r.read(12)
    ws.send(bytes([1, 2]))  # one security type: VNC authentication
    if r.read(1)[0] != 2:
        ws.send(struct.pack(">I", 1) + struct.pack(">I", 19) + b"unsupported security")
        return
    challenge = secrets.token_bytes(16)
    ws.send(challenge)
    if r.read(16) != vnc_auth_response(password, challenge):
        msg = b"Authentication failed"
        ws.send(struct.pack(">I", 1) + struct.pack(">I", len(msg)) + msg)
        return
    ws.send(struct.pack(">I", 0))
    session["authenticated"] = True
    r.read(1)  # ClientInit (shared flag)
    session["client_init"] = True
    w, hgt = 640, 480
    pixel = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
    ws.send(struct.pack(">HH", w, hgt) + pixel + struct.pack(">I", len(name)) + name.encode())
    while True:  # answer framebuffer update requests with one black rectangle of the requested area
        kind = r.read(1)[0]
        if kind == 0:
            r.read(19)
        elif kind == 2:
            n = struct.unpack(">xH", r.read(3))[0]
            r.read(4 * n)
        elif kind == 3:
            _inc, x, y, rw, rh = struct.unpack(">BHHHH", r.read(9))
            rw, rh = min(rw, 16), min(rh, 16)
            ws.send(struct.pack(">BxH", 0, 1) + struct.pack(">HHHHi", x, y, rw, rh, 0) + b"\0" * (rw * rh * 4))
        elif kind == 4:
            r.read(7)
        elif kind == 5:
            r.read(5)
        elif kind == 6:
            n = struct.unpack(">3xI", r.read(7))[0]
            r.read(n)
        else:
            return


def main() -> None:  # pragma: no cover - run by scripts/demo
    import argparse
    import signal

    ap = argparse.ArgumentParser(description="Proxmox VE API stand-in on loopback (HTTPS)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--task-delay", type=float, default=0.5)
    ap.add_argument("--workdir", help="where the certificate is written")
    ap.add_argument("--info", help="write url, token and CA file as JSON to this file")
    args = ap.parse_args()
    s = ProxmoxStandin(task_delay=args.task_delay, workdir=Path(args.workdir) if args.workdir else None,
                       templates={9000: {"name": "debian-12-cloudinit", "disk_gib": 2}}).start(args.port)
    info = json.dumps({"url": s.url, "token_id": s.token_id, "token_secret": s.token_secret,
                       "ca_file": s.ca_file, "node": s.nodes[0], "template": 9000})
    if args.info:
        Path(args.info).write_text(info)
        os.chmod(args.info, 0o600)
    else:
        print(info, flush=True)
    parent = os.getppid()
    signal.signal(signal.SIGTERM, lambda *_: (s.stop(), os._exit(0)))
    while os.getppid() == parent:  # ends with the process that started it (the demo's panel)
        time.sleep(1)
    s.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
