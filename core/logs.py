"""Logging: plain text (default) or JSON lines (``HOSTBAY_LOG_FORMAT=json``), each record carrying the request id,
operation id, service UUID and user UUID where known, and no secret.

Context travels in :mod:`contextvars`, so it follows the request or the job that set it (threads in the in-process
job mode each have their own). Two defences keep secrets out, applied when a record is created (a log record
factory, so every handler gets the redacted record) and again in hostbay's handler (exception text):

- values registered with :func:`register_secret` (every driver setting of type ``secret`` when a driver is built,
  and anything else a module knows to be secret) are replaced by ``[redacted]`` wherever they appear in a record,
  including its arguments and exception text;
- ``key=value`` and ``"key": "value"`` pairs whose key names a credential (password, secret, token, api_key,
  authorization, …) have their value replaced, for secrets nobody registered.

Values read from sealed columns (core/sealed.py) are, besides, strings whose ``repr`` is ``'[redacted]'``, so a
row or a dict holding them never prints them.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import threading
import uuid
from datetime import datetime, timezone

CONTEXT_FIELDS = ("request_id", "operation_id", "service_uuid", "user_uuid")
_context: dict[str, contextvars.ContextVar] = {f: contextvars.ContextVar(f"hostbay_{f}", default=None)
                                               for f in CONTEXT_FIELDS}

REDACTED = "[redacted]"
_MIN_SECRET_LEN = 6  # shorter values would redact ordinary words
_secrets: set[str] = set()
_secrets_lock = threading.Lock()
_secret_re: re.Pattern | None = None

_SENSITIVE_KEY = r"(?:password|passwd|secret|token|api[_-]?key|apikey|authorization|x-api-key|signature|sig|cookie)"
_PAIR_RE = re.compile(
    r"""(?ix)
    (?P<key>[\w.-]*""" + _SENSITIVE_KEY + r"""[\w.-]*)
    (?P<sep>\s*[=:]\s*|["']\s*:\s*["']?)
    (?P<value>(?:bearer\s+|token\s+|sha\d+=)?[^\s,;&"'}\]]+)""")

REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def register_secret(value) -> None:
    """Never log ``value``: it is replaced by ``[redacted]`` in every record from now on."""
    global _secret_re
    if not isinstance(value, str) or len(value) < _MIN_SECRET_LEN:
        return
    with _secrets_lock:
        if value in _secrets:
            return
        _secrets.add(value)
        # longest first, so a secret that contains another is redacted whole
        _secret_re = re.compile("|".join(re.escape(s) for s in sorted(_secrets, key=len, reverse=True)))


def redact(text: str) -> str:
    """``text`` with every registered secret and every credential-looking ``key=value`` value removed."""
    if not text:
        return text
    pattern = _secret_re
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    return _PAIR_RE.sub(lambda m: f"{m.group('key')}{m.group('sep')}{REDACTED}"
                        if m.group("value") != REDACTED else m.group(0), text)


def get(field: str):
    return _context[field].get()


def bind(**values) -> list:
    """Set context fields (request_id=…, service_uuid=…); returns tokens for :func:`unbind`."""
    return [(_context[k], _context[k].set(None if v is None else str(v))) for k, v in values.items()]


def unbind(tokens: list) -> None:
    for var, token in reversed(tokens):
        with contextlib.suppress(ValueError):  # set in another context: nothing to undo here
            var.reset(token)


@contextlib.contextmanager
def bound(**values):
    tokens = bind(**values)
    try:
        yield
    finally:
        unbind(tokens)


def new_request_id(incoming: str | None = None) -> str:
    """The incoming ``X-Request-ID`` when it is a sane token, else a fresh one."""
    if incoming and REQUEST_ID_RE.match(incoming):
        return incoming
    return uuid.uuid4().hex


class ContextFilter(logging.Filter):
    """Adds the context fields to every record and removes secrets from its message and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        for f in CONTEXT_FIELDS:
            if not hasattr(record, f):
                setattr(record, f, _context[f].get())
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not lose the record
            message = str(record.msg)
        record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
            record.exc_info = None  # formatters use the redacted text, never the live exception
        return True


class TextFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record):
        line = super().format(record)
        extra = " ".join(f"{f}={getattr(record, f)}" for f in CONTEXT_FIELDS if getattr(record, f, None))
        return f"{line} [{extra}]" if extra else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, logger, message, context fields, exception."""

    def format(self, record):
        out = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname, "logger": record.name, "message": record.getMessage()}
        for f in CONTEXT_FIELDS:
            v = getattr(record, f, None)
            if v:
                out[f] = v
        if record.exc_text:
            out["exception"] = record.exc_text
        elif record.exc_info:
            out["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False)


_HANDLER_MARK = "_hostbay_handler"


class _Handler(logging.StreamHandler):
    """A stream handler that, unless given a stream, writes to whatever ``sys.stderr`` is at the time of each
    record (test runners and daemonisers replace it after start-up)."""

    def __init__(self, stream=None):
        self._own_stream = stream
        super().__init__(stream)

    @property
    def stream(self):
        import sys

        return self._own_stream if self._own_stream is not None else sys.stderr

    @stream.setter
    def stream(self, value):
        self._own_stream = value


def _install_record_factory() -> None:
    """Redact every record when it is created, whatever logger creates it (SQLAlchemy's DEBUG row log, urllib3,
    websockets, a plugin's own logger): no handler — hostbay's, an error tracker's, pytest's — ever receives a
    registered secret or a credential pair. A record that needed no redaction keeps its message and arguments."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, _HANDLER_MARK, False):
        return

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's to report
            return record
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return record

    setattr(factory, _HANDLER_MARK, True)
    logging.setLogRecordFactory(factory)


def configure(level: str = "INFO", fmt: str = "text", stream=None) -> logging.Handler:
    """Install hostbay's handler on the root logger (once; called again it only updates level and format) and the
    record factory that redacts every record."""
    _install_record_factory()
    root = logging.getLogger()
    handler = next((h for h in root.handlers if getattr(h, _HANDLER_MARK, False)), None)
    if handler is None:
        handler = _Handler(stream)
        setattr(handler, _HANDLER_MARK, True)
        handler.addFilter(ContextFilter())
        root.addHandler(handler)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.setLevel(level)
    return handler
