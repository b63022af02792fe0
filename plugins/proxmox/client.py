"""The Proxmox VE API through proxmoxer: one place that authenticates, counts calls, polls tasks and maps errors.

- Authentication is an API token (``Authorization: PVEAPIToken=user@realm!name=secret``, proxmoxer's
  ``token_name``/``token_value``). TLS is verified against the system CAs, or ``ca_bundle``; ``verify_tls=false``
  turns verification off (proxmoxer passes ``verify_ssl`` to requests as ``verify``).
- Every call has the node's ``timeout`` (proxmoxer's default is 5 s); uploads get their own, larger timeout.
- Reads (GET) are retried on a lost connection; a write whose connection was lost is not repeated here (it may have
  happened) and raises a TransientDriverError, so the job is retried and the driver's idempotent steps resume.
- Task UPIDs are polled until ``status == "stopped"``, then ``exitstatus`` must be ``"OK"`` (proxmoxer's own
  ``blocking_status`` does not check it).
"""

from __future__ import annotations

import logging
import time
from typing import Any
from urllib.parse import quote, urlsplit

from hostbay.core.errors import FatalDriverError, TransientDriverError

TRANSIENT_MARKERS = ("can't lock file", "got timeout", "timeout", "temporarily", "try again",
                     "connection refused", "no quorum", "cluster not ready")
LOCK_RETRIES = 6
POLL_SECONDS = 0.05


class PveError(FatalDriverError):
    """A Proxmox API error that a retry will not cure."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class PveTransient(TransientDriverError):
    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def is_transient_text(text: str) -> bool:
    low = (text or "").lower()
    return any(m in low for m in TRANSIENT_MARKERS)


def split_token(token_id: str) -> tuple[str, str]:
    user, sep, name = (token_id or "").partition("!")
    if not sep or "@" not in user or not name:
        raise ValueError("must look like user@realm!tokenname")
    return user, name


def host_port(api_url: str) -> tuple[str, int]:
    parts = urlsplit(api_url)
    if parts.scheme != "https" or not parts.hostname:
        raise ValueError("must be an https:// URL such as https://pve1.example.net:8006")
    return parts.hostname, parts.port or 8006


class PveClient:
    """One API endpoint with one token. ``calls`` counts the requests made (benchmarks report it)."""

    def __init__(self, api_url: str, token_id: str, token_secret: str, verify, timeout: float):
        try:
            from proxmoxer import ProxmoxAPI  # noqa: F401
        except ImportError:  # pragma: no cover - proxmoxer is part of hostbay[proxmox]
            raise FatalDriverError("proxmoxer is not installed on this worker: install hostbay[proxmox]") from None
        self.api_url = api_url
        self.host, self.port = host_port(api_url)
        self.user, self.token_name = split_token(token_id)
        self.token_secret = token_secret
        self.verify = verify
        self.timeout = timeout
        self.calls = 0
        self._api = None
        # proxmoxer logs request bodies (SSH keys, cloud-init passwords) at INFO: never let them through
        logging.getLogger("proxmoxer").setLevel(max(logging.WARNING, logging.getLogger("proxmoxer").level))

    def _make(self, timeout: float):
        from proxmoxer import ProxmoxAPI

        host = f"[{self.host}]" if ":" in self.host else self.host
        return ProxmoxAPI(f"{host}:{self.port}", user=self.user, token_name=self.token_name,
                          token_value=self.token_secret, verify_ssl=self.verify, timeout=timeout, service="PVE")

    @property
    def api(self):
        if self._api is None:
            self._api = self._make(self.timeout)
        return self._api

    def auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"PVEAPIToken={self.user}!{self.token_name}={self.token_secret}"}

    # -- calls ----------------------------------------------------------------------------------------------
    def call(self, method: str, path: str, _api=None, **params) -> Any:
        """``method`` on ``path`` (relative to /api2/json). Errors become Pve{Error,Transient}."""
        import requests
        from proxmoxer.core import ResourceException

        resource = (_api or self.api)(path)
        attempts = 3 if method == "GET" else 1
        lock_tries = 0
        while True:
            self.calls += 1
            try:
                return getattr(resource, method.lower())(**params)
            except ResourceException as exc:
                text = f"{method} {path}: {exc}"
                if exc.status_code == 401:
                    raise PveError(f"{text} (the API token was refused)", 401) from None
                if exc.status_code == 403:
                    raise PveError(f"{text} (the API token lacks a privilege)", 403) from None
                if "can't lock file" in str(exc) and lock_tries < LOCK_RETRIES:
                    lock_tries += 1
                    time.sleep(min(2.0, 0.1 * 2 ** lock_tries))
                    continue
                if exc.status_code >= 500 and is_transient_text(str(exc)):
                    raise PveTransient(text, exc.status_code) from None
                raise PveError(text, exc.status_code) from None
            except requests.exceptions.Timeout as exc:
                raise PveTransient(f"{method} {path}: no answer within {self.timeout:g} s ({exc})") from None
            except requests.exceptions.SSLError as exc:
                raise PveError(f"{method} {path}: TLS verification failed ({exc})") from None
            except requests.exceptions.ConnectionError as exc:
                attempts -= 1
                if attempts > 0:
                    time.sleep(0.1)
                    continue
                raise PveTransient(f"{method} {path}: connection lost ({exc})") from None

    def get(self, path: str, **params):
        return self.call("GET", path, **params)

    def post(self, path: str, **params):
        return self.call("POST", path, **params)

    def put(self, path: str, **params):
        return self.call("PUT", path, **params)

    def delete(self, path: str, **params):
        return self.call("DELETE", path, **params)

    def upload(self, node: str, storage: str, local_path: str, filename: str, content: str = "iso",
               size: int = 0) -> str:
        """Stream ``local_path`` to ``storage`` (multipart; proxmoxer streams files above 10 MiB through
        requests-toolbelt) with a timeout that allows 1 MiB/s plus a minute; returns the task's UPID."""
        timeout = max(self.timeout, 60 + size / (1024 * 1024))
        api = self._make(timeout)

        import io

        raw = io.FileIO(local_path, "rb")
        raw.name = filename  # requests names the multipart file part after it: the name on the storage
        try:
            return self.call("POST", f"nodes/{node}/storage/{storage}/upload", _api=api, content=content,
                             filename=raw)
        finally:
            raw.close()

    # -- tasks ----------------------------------------------------------------------------------------------
    def wait(self, upid: str, what: str, deadline_s: float, transient_ok: bool = True) -> None:
        """Poll the task until it stops; raise when it failed or ran past ``deadline_s``."""
        if not isinstance(upid, str) or not upid.startswith("UPID:"):
            return  # a synchronous answer (some calls return null when done at once)
        node = upid.split(":")[1]
        deadline = time.monotonic() + deadline_s
        delay = POLL_SECONDS
        while True:
            time.sleep(delay)  # a task never ends the instant it starts; then every 50 ms (a cheap GET)
            delay = POLL_SECONDS
            status = self.get(f"nodes/{node}/tasks/{quote(upid, safe='')}/status")
            if status.get("status") == "stopped":
                exit_status = str(status.get("exitstatus") or "")
                if exit_status == "OK":
                    return
                text = f"{what} failed: {exit_status or 'no exit status'}"
                if is_transient_text(exit_status):
                    raise PveTransient(text)
                raise PveError(text)
            if time.monotonic() > deadline:
                raise PveTransient(f"{what} still running after {deadline_s:g} s (task {upid})")
