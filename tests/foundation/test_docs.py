"""Documentation that must stay in step with the code."""

import inspect
import re
from pathlib import Path

from hostbay.core import config, hookspecs

ROOT = Path(__file__).resolve().parents[2]


def _specs():
    return {name: fn for name, fn in vars(hookspecs).items()
            if name.startswith("hostbay_") and callable(fn) and hasattr(fn, "hostbay_spec")}


def test_hookspecs_found():
    assert len(_specs()) >= 15


def test_every_hook_documented_with_exact_signature():
    text = (ROOT / "docs" / "plugins.md").read_text()
    headings = set(re.findall(r"^### `(hostbay_\w+\(.*?\))`$", text, re.M))
    missing = []
    for name, fn in _specs().items():
        sig = f"{name}({', '.join(inspect.signature(fn).parameters)})"
        if sig not in headings:
            missing.append(sig)
    assert not missing, f"undocumented or changed hooks in docs/plugins.md: {missing}"
    documented = {h.split("(")[0] for h in headings}
    assert documented <= set(_specs()), f"docs/plugins.md documents hooks that do not exist: {documented - set(_specs())}"


def test_every_setting_documented():
    text = (ROOT / "docs" / "operations.md").read_text()
    missing = [name for name in config.SETTINGS if f"`{name}`" not in text]
    assert not missing, f"settings missing from docs/operations.md: {missing}"


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test" in readme and "scripts/test" in ci
    assert "bash scripts/demo" in readme
