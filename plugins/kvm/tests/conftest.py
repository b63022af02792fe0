"""Fixtures for the KVM plugin tests; helpers and naming rules are in kvm_testhost.py."""

from __future__ import annotations

import contextlib
import shutil
import subprocess

import pytest

from kvm_testhost import (BASE, TEMPLATE, TEMPLATE_SIZE, URI, KvmHost, _make_iso, kernel_can_shape,
                          libvirt_unavailable_reason, remove_leftovers)


@pytest.fixture(scope="session")
def kvm_host():
    reason = libvirt_unavailable_reason()
    if reason:
        pytest.skip(reason)
    remove_leftovers(URI, BASE, pools=False)
    templates, disks, isos = BASE / "templates", BASE / "disks", BASE / "isos"
    try:
        for d in (BASE.parent, BASE, templates, isos):
            d.mkdir(exist_ok=True)
            d.chmod(0o755)  # QEMU runs as its own user and must reach the template and the ISO
    except PermissionError as exc:
        pytest.skip(f"cannot prepare {BASE} ({exc}): run as root or set HOSTBAY_TEST_KVM_DIR")
    template = templates / TEMPLATE
    if not template.exists():
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(template), str(TEMPLATE_SIZE)], check=True)
    _make_iso(isos / "hbtest-install.iso")
    host = KvmHost(URI, templates, disks, isos, kernel_can_shape())
    yield host
    remove_leftovers(URI, BASE, pools=True)
    shutil.rmtree(BASE, ignore_errors=True)
    with contextlib.suppress(OSError):
        BASE.parent.rmdir()  # only when empty
