"""The wheel contains every module, template and static file of the tree."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPING = {"hostbay": "hostbay", "core": "hostbay/core", "web": "hostbay/web", "plugins": "hostbay/plugins"}
SKIP_PARTS = {"tests", "__pycache__", "vendor", "node_modules"}


def expected_files() -> set[str]:
    out = set()
    for src, dst in MAPPING.items():
        for path in (ROOT / src).rglob("*"):
            rel = path.relative_to(ROOT / src)
            if not path.is_file() or SKIP_PARTS & set(rel.parts) or path.suffix in (".pyc",) or path.name == ".keep":
                continue
            out.add(f"{dst}/{rel.as_posix()}")
    return out


@pytest.mark.slow
def test_wheel_contains_the_whole_tree(tmp_path):
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(tmp_path), str(ROOT)],
                   check=True, capture_output=True)
    (wheel,) = tmp_path.glob("hostbay-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    missing = sorted(expected_files() - names)
    assert not missing, f"missing from the wheel: {missing}"
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    for plugin in ("kvm", "proxmox", "dedicated_ipmi", "crypto_payments", "status"):
        assert f"{plugin} = hostbay.plugins.{plugin}" in text
