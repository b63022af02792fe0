"""A small JSON-over-HTTP helper shared by the gateways: timeouts on every call, provider errors mapped to
TransientDriverError (retry may cure) or FatalDriverError (it will not). Secrets never appear in messages."""

from __future__ import annotations

import json
import threading
from decimal import Decimal
from typing import Any

from hostbay.core.errors import FatalDriverError, TransientDriverError

_local = threading.local()


def _requests():
    try:
        import requests
    except ImportError as exc:  # the plugin loads without it; using a gateway needs it
        raise FatalDriverError("the 'requests' package is missing: pip install 'hostbay[crypto]'") from exc
    return requests


def session():
    """One pooled ``requests.Session`` per thread (sessions are not safe to share between threads)."""
    sess = getattr(_local, "session", None)
    if sess is None:
        sess = _local.session = _requests().Session()
    return sess


def call(provider: str, method: str, url: str, *, headers: dict[str, str], body: dict | None = None,
         timeout: float = 10.0, not_found_fatal: bool = True) -> Any:
    """Send one request; return the decoded JSON (numbers as Decimal)."""
    requests = _requests()
    data = None
    hdrs = dict(headers)
    if body is not None:
        data = dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    hdrs.setdefault("Accept", "application/json")
    try:
        resp = session().request(method, url, data=data, headers=hdrs, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransientDriverError(f"{provider}: {type(exc).__name__} talking to {method} {_path(url)}") from None
    except requests.RequestException as exc:
        raise FatalDriverError(f"{provider}: {type(exc).__name__} for {method} {_path(url)}") from None
    status = resp.status_code
    if status == 429 or status >= 500:
        raise TransientDriverError(f"{provider}: HTTP {status} for {method} {_path(url)}")
    if status >= 400:
        raise FatalDriverError(f"{provider}: HTTP {status} for {method} {_path(url)}: {_detail(resp)}")
    try:
        return json.loads(resp.content or b"null", parse_float=Decimal)
    except ValueError:
        raise TransientDriverError(f"{provider}: answer to {method} {_path(url)} is not JSON") from None


def probe(label: str, method: str, url: str, *, headers: dict[str, str], timeout: float = 10.0) -> tuple[int, Any]:
    """One request for a connection test: ``(HTTP status, decoded JSON or None)`` for any answer; a provider that
    does not answer raises TransientDriverError naming the server (scheme, host and port: never a secret)."""
    from urllib.parse import urlsplit

    requests = _requests()
    hdrs = {"Accept": "application/json", **headers}
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    try:
        resp = session().request(method, url, headers=hdrs, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransientDriverError(f"{label} at {origin} is not reachable ({type(exc).__name__}).") from None
    except requests.RequestException as exc:
        raise FatalDriverError(f"{label} at {origin} could not be asked ({type(exc).__name__}).") from None
    try:
        data = json.loads(resp.content or b"null", parse_float=Decimal)
    except ValueError:
        data = None
    return resp.status_code, data


def _path(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).path


def _detail(resp) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:200]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("detail") or data.get("title") or data)[:200]
    if isinstance(data, list) and data and isinstance(data[0], dict):  # Greenfield validation errors
        return "; ".join(f"{e.get('path')}: {e.get('message')}" for e in data[:5])[:200]
    return str(data)[:200]


class RawNumber(str):
    """A JSON number kept as the exact token it arrived as (no float rounding, no reformatting)."""


def dumps(obj, *, sort_keys: bool = False) -> str:
    """Compact JSON as JavaScript's ``JSON.stringify`` writes it: no spaces, non-ASCII kept, numbers written from
    their original token (``RawNumber``), ``Decimal`` or ``int`` - never through a float."""
    if isinstance(obj, RawNumber):
        return str(obj)
    if isinstance(obj, bool):
        return "true" if obj else "false"
    if obj is None:
        return "null"
    if isinstance(obj, int):
        return str(obj)
    if isinstance(obj, Decimal):
        text = format(obj, "f")
        return text
    if isinstance(obj, str):
        return json.dumps(obj, ensure_ascii=False)
    if isinstance(obj, dict):
        keys = sorted(obj) if sort_keys else list(obj)
        return "{" + ",".join(json.dumps(str(k), ensure_ascii=False) + ":" + dumps(obj[k], sort_keys=sort_keys)
                              for k in keys) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ",".join(dumps(v, sort_keys=sort_keys) for v in obj) + "]"
    raise TypeError(f"cannot encode {type(obj).__name__}")


def _no_constant(name):
    raise ValueError(f"invalid JSON constant {name}")


def loads_raw(raw: bytes | str):
    """Parse JSON keeping every number as its raw token (``RawNumber``)."""
    return json.loads(raw, parse_float=RawNumber, parse_int=RawNumber, parse_constant=_no_constant)
