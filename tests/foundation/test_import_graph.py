"""Modules with one reason to change: the areas that used to import each other in a circle no longer do (ipam ↔
network ↔ rdns, lifecycle ↔ notices), counting imports inside functions too."""

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"


def _imports(module: str) -> set[str]:
    tree = ast.parse((CORE / f"{module}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                out.add(node.module.split(".")[0])
            else:
                out.update(a.name for a in node.names)
    return out


def _reaches(start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        mod = todo.pop()
        if mod in seen or not (CORE / f"{mod}.py").exists():
            continue
        seen.add(mod)
        for dep in _imports(mod):
            if dep == goal:
                return True
            todo.append(dep)
    return False


def test_no_circle_between_ipam_network_and_rdns():
    for a, b in (("rdns", "ipam"), ("network", "ipam"), ("rdns", "network")):
        assert not _reaches(a, b), f"{a} imports {b} (directly or through another module)"


def test_no_circle_between_lifecycle_and_notices():
    assert not _reaches("notices", "lifecycle")


def test_core_builds_no_web_urls():
    """Core names pages (hostbay.core.links); the web layer builds their URLs."""
    offenders = [p.name for p in CORE.glob("*.py") if "/panel/" in p.read_text() and p.name != "links.py"]
    assert offenders == []


SWEEP_NAMES = {"renewal_sweep", "due_query", "_renewal_batch", "renewal_sweep_job", "retention_sweep",
               "retention_sweep_job", "renew_service", "retry_renewals", "queue_retry_renewals", "notices_job",
               "renewal_key"}
SWEEP_KINDS = {"lifecycle.renewal_sweep", "lifecycle.retention_sweep", "lifecycle.retry_renewals",
               "lifecycle.notices"}


def _defined(module: str) -> tuple[set[str], set[str]]:
    """Top-level function names of a core module and the job kinds its ``@jobs.handler`` decorators name."""
    tree = ast.parse((CORE / f"{module}.py").read_text())
    names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
    kinds = {d.args[0].value for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) for d in n.decorator_list
             if isinstance(d, ast.Call) and getattr(d.func, "attr", None) == "handler"
             and d.args and isinstance(d.args[0], ast.Constant)}
    return names, kinds


def test_lifecycle_holds_the_server_handlers_and_renewals_the_sweeps():
    """The lifecycle handlers and the renewal/retention sweeps change for different reasons: two modules, neither
    importing the other."""
    names, kinds = _defined("lifecycle")
    assert names & SWEEP_NAMES == set() and kinds & SWEEP_KINDS == set()
    assert {"provision", "reinstall", "suspend_job", "remove_job"} <= names
    names, kinds = _defined("renewals")
    assert SWEEP_NAMES <= names and kinds == SWEEP_KINDS
    assert not _reaches("lifecycle", "renewals") and not _reaches("renewals", "lifecycle")
    assert not _reaches("notices", "renewals")
