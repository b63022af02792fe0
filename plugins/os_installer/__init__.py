"""A simple OS installer for dedicated servers: it takes ``hostbay_dedicated_install_requested`` and serves a
per-install answer file (a Debian preseed with the service's hostname and SSH keys) at a secret, single-use URL.

For each install it writes ``<instance>/pxe/<server name>.ipxe``, a boot script that the operator's PXE/iPXE
server hands to that machine; it boots the image's installer with ``url=<answer URL>``. The URL carries a random
256-bit token (only its SHA-256 is stored), works once, and expires after 24 hours. The customer never sees it.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, abort, current_app

from hostbay.core.hookspecs import hookimpl

NAME = "os_installer"
bp = Blueprint("os_installer", __name__, url_prefix="/install")


def answer_file(payload: dict) -> str:
    keys = payload.get("ssh_keys") or []
    lines = [
        "# hostbay automated install",
        "d-i debian-installer/locale string en_US.UTF-8",
        "d-i keyboard-configuration/xkb-keymap select us",
        "d-i netcfg/choose_interface select auto",
        f"d-i netcfg/get_hostname string {payload.get('hostname', 'server').split('.')[0]}",
        f"d-i netcfg/get_domain string {'.'.join(payload.get('hostname', '').split('.')[1:]) or 'localdomain'}",
        "d-i passwd/root-login boolean false",
        "d-i passwd/make-user boolean true",
        "d-i passwd/user-fullname string Administrator",
        "d-i passwd/username string admin",
        "d-i passwd/user-password-crypted password !",
        "d-i partman-auto/method string regular",
        "d-i partman-auto/choose_recipe select atomic",
        "d-i partman/confirm boolean true",
        "d-i partman/confirm_nooverwrite boolean true",
        "d-i pkgsel/include string openssh-server",
        "d-i grub-installer/bootdev string default",
        "d-i finish-install/reboot_in_progress note",
    ]
    keys_cmd = " ; ".join(f"echo '{k.strip()}' >> /target/home/admin/.ssh/authorized_keys" for k in keys
                          if "'" not in k)
    lines.append("d-i preseed/late_command string mkdir -p /target/home/admin/.ssh"
                 + (f" ; {keys_cmd}" if keys_cmd else "")
                 + " ; in-target chown -R admin:admin /home/admin/.ssh ; chmod 700 /target/home/admin/.ssh")
    return "\n".join(lines) + "\n"


def _pxe_dir() -> Path:
    d = Path(current_app.config.get("INSTANCE_PATH") or "instance") / "pxe"
    d.mkdir(parents=True, exist_ok=True)
    return d


@hookimpl
def hostbay_dedicated_install_requested(service, server, image, ssh_keys):
    from hostbay.core.dedicated import new_install_request

    payload = {"hostname": service.hostname, "image": getattr(image, "name", None),
               "image_source": getattr(image, "source", None), "ssh_keys": list(ssh_keys or [])}
    req, token = new_install_request(service, server, NAME, payload)
    url = f"{current_app.config.get('HOSTBAY_BASE_URL', 'http://127.0.0.1:5000').rstrip('/')}/install/{token}"
    script = _pxe_dir() / f"{server.name}.ipxe"
    tmp = script.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("#!ipxe\n# hostbay install " + req.uuid + "\n"
                 + f"kernel {payload['image_source'] or 'debian-installer/amd64/linux'} auto=true priority=critical "
                 + f"url={url}\ninitrd {(payload['image_source'] or 'debian-installer/amd64') + '/initrd.gz'}\nboot\n")
    os.replace(tmp, script)
    return {"installer": NAME, "request": req.uuid}


@bp.get("/<token>")
def answer(token):
    from hostbay.core.db import db
    from hostbay.core.dedicated import redeem_install_request

    req = redeem_install_request(token)
    if req is None:
        db.session.rollback()
        abort(404)
    db.session.commit()
    return answer_file(req.payload), 200, {"Content-Type": "text/plain; charset=utf-8", "Cache-Control": "no-store"}


@hookimpl
def hostbay_blueprints():
    return [bp]
