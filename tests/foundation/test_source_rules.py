"""Rules the code keeps, checked on its source: event hooks fire through the one after-commit mechanism, and core
reads its settings from the app config, which the config loader builds from the environment."""

from __future__ import annotations

import ast
from pathlib import Path

from hostbay.core.hookspecs import EVENT_HOOKS

ROOT = Path(__file__).resolve().parents[2]

# (path, function) pairs allowed to fire an event hook directly, each with its reason
DIRECT_NOTIFY_ALLOWED = {
    ("core/jobs.py", "_after_commit"): "the after-commit mechanism itself (jobs.notify_after_commit)",
    ("core/iso.py", "delete_iso"): "hostbay_iso_deleted is documented to fire inside the deleting transaction",
}

# modules under core/ allowed to read the process environment, each with its reason
ENVIRON_ALLOWED = {
    "core/config.py": "the config loader: where HOSTBAY_* environment variables become app config",
}


def _sources(*folders):
    for folder in folders:
        for p in sorted((ROOT / folder).rglob("*.py")):
            if "tests" in p.relative_to(ROOT).parts or "migrations" in p.parts:
                continue
            yield p.relative_to(ROOT).as_posix(), ast.parse(p.read_text(), filename=str(p))


def _functions(tree):
    """Each node with the name of the innermost enclosing function (or "<module>")."""
    def walk(node, fn):
        for child in ast.iter_child_nodes(node):
            inner = child.name if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else fn
            yield child, inner
            yield from walk(child, inner)
    yield from walk(tree, "<module>")


def _direct_event_calls(tree):
    """Calls of ``<registry>.notify(hook, ...)`` (a threading Condition's ``notify()`` takes no hook name) and of
    ``<...>.hook.<event hook>(...)``."""
    for node, fn in _functions(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        f = node.func
        if f.attr == "notify" and (node.args or node.keywords):
            yield node.lineno, fn
        elif (f.attr in EVENT_HOOKS or f.attr == "hostbay_iso_deleted") and isinstance(f.value, ast.Attribute) \
                and f.value.attr == "hook":
            yield node.lineno, fn


def test_events_fire_only_through_the_after_commit_mechanism():
    """Code that changes data announces it with ``jobs.notify_after_commit``, so an event of a transaction that
    rolls back is never fired; a direct ``notify(...)`` would fire it before (or without) the commit."""
    offenders, allowed_seen = [], set()
    for path, tree in _sources("core", "plugins", "web"):
        for line, fn in _direct_event_calls(tree):
            if (path, fn) in DIRECT_NOTIFY_ALLOWED:
                allowed_seen.add((path, fn))
            else:
                offenders.append(f"{path}:{line} ({fn})")
    assert offenders == []
    assert allowed_seen == set(DIRECT_NOTIFY_ALLOWED), "an allow-list entry no longer applies: remove it"


def test_the_scan_finds_a_direct_notify():
    """The scan's own counter-check: the forms it must catch, and a Condition's notify() it must not."""
    tree = ast.parse(
        "def handler(op):\n"
        "    db.session.commit()\n"
        "    _registry().notify('hostbay_service_suspended', service=svc, reason='unpaid')\n"
        "    current_app.extensions['hostbay'].hook.hostbay_service_terminated(service=svc)\n"
        "    self._wake.notify()\n")
    assert [fn for _line, fn in _direct_event_calls(tree)] == ["handler", "handler"]


def _environ_reads(tree):
    """``os.environ`` / ``os.getenv`` and the names imported from os for the same (``from os import environ``)."""
    for node, _fn in _functions(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb", "getenvb") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            yield node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module == "os" \
                and any(a.name in ("environ", "getenv", "environb", "getenvb") for a in node.names):
            yield node.lineno


def test_core_reads_settings_from_the_app_config_not_the_environment():
    """Settings reach core through the app config (``create_app`` loads it with ``config.load``), so tests and
    ``create_app(config)`` decide them; only the config loader reads the process environment."""
    offenders = [f"{path}:{line}" for path, tree in _sources("core") if path not in ENVIRON_ALLOWED
                 for line in _environ_reads(tree)]
    assert offenders == []
    assert all(list(_environ_reads(tree)) for path, tree in _sources("core") if path in ENVIRON_ALLOWED), \
        "an allow-list entry no longer reads the environment: remove it"


def test_the_environ_scan_finds_each_form():
    tree = ast.parse("import os\nfrom os import getenv\na = os.environ.get('X')\nb = os.getenv('Y')\n"
                     "c = request.environ\n")
    assert list(_environ_reads(tree)) == [2, 3, 4]
