"""Customer ISO pages: upload (streamed to the ISO folder with a size limit), list, delete; mount and eject on a
service page (the ``services/_iso.html`` partial posts here)."""

from __future__ import annotations

import io

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf.csrf import CSRFError, validate_csrf
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.formparser import parse_form_data
from wtforms import ValidationError

from hostbay.core import iso as iso_mod
from hostbay.core.db import db
from hostbay.core.errors import NotFound, UserError
from hostbay.web.common import own_service_or_404

from .extensions import csrf

bp = Blueprint("iso", __name__, url_prefix="/panel")

FORM_SLACK = 64 * 1024  # multipart headers and the CSRF field around the file


@bp.app_context_processor
def _iso_partial():
    def iso_panel(service):
        """What ``services/_iso.html`` shows: the approved images and the current mount."""
        if not current_user.is_authenticated or service.user_id != current_user.id:
            return None
        return {"isos": iso_mod.mountable_for(service), "mount": iso_mod.mount_of(service),
                "can_mount": "mount_iso" in service.actions_for(), "can_eject": "eject_iso" in service.actions_for()}
    return {"iso_panel": iso_panel, "format_bytes": iso_mod.format_bytes}


def _page(status: int = 200):
    return render_template("iso/list.html", isos=iso_mod.list_for(current_user.id),
                           quota=iso_mod.quota_for(current_user.id),
                           max_upload=current_app.config["HOSTBAY_ISO_MAX_BYTES"]), status


@bp.get("/isos")
@login_required
def index():
    return _page()


FIRST_FIELD_MAX = 4096  # the CSRF field must arrive within the first bytes of the body


class _Prefixed(io.RawIOBase):
    """The request body with the bytes already read for the CSRF check put back in front."""

    def __init__(self, head: bytes, rest):
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.head:
            n = min(len(buf), len(self.head))
            buf[:n], self.head = self.head[:n], self.head[n:]
            return n
        data = self.rest.read(len(buf))
        buf[:len(data)] = data
        return len(data)


def _first_field_token(environ) -> str | None:
    """Read the first multipart part (at most FIRST_FIELD_MAX bytes) and return its value if it is the
    ``csrf_token`` field; the bytes read are put back for the streaming parser."""
    from werkzeug.http import parse_options_header

    ctype, opts = parse_options_header(environ.get("CONTENT_TYPE", ""))
    boundary = opts.get("boundary", "").encode("latin-1")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    if ctype != "multipart/form-data" or not boundary or length <= 0:
        return None
    stream = environ["wsgi.input"]
    head = b""
    while len(head) < min(FIRST_FIELD_MAX, length):
        chunk = stream.read(min(FIRST_FIELD_MAX, length) - len(head))
        if not chunk:
            break
        head += chunk
    environ["wsgi.input"] = io.BufferedReader(_Prefixed(head, stream))
    delim = b"--" + boundary
    start = 2 if head.startswith(b"\r\n" + delim) else 0  # an empty preamble is allowed
    if not head.startswith(delim + b"\r\n", start):
        return None
    headers_end = head.find(b"\r\n\r\n", start)
    value_end = head.find(b"\r\n" + delim, headers_end + 4) if headers_end >= 0 else -1
    if value_end < 0:
        return None
    headers = head[start + len(delim) + 2:headers_end].decode("latin-1").lower()
    if 'name="csrf_token"' not in headers or "filename=" in headers:
        return None
    return head[headers_end + 4:value_end].decode("ascii", "replace")


def _csrf_first_field(view):
    """The upload body is parsed by a streaming parser inside the view, so the global CSRF check (which reads the
    whole form into memory) is skipped for it. The token is the form's first field (never in a URL, which would
    put it into access logs): it is read from the first bytes of the body and checked here, before the upload
    is parsed, as strictly as everywhere else."""
    from functools import wraps

    @wraps(view)
    def wrapper(*args, **kwargs):
        if current_app.config.get("WTF_CSRF_ENABLED", True):
            try:
                validate_csrf(_first_field_token(request.environ))
            except ValidationError as exc:
                raise CSRFError(str(exc)) from None
        return view(*args, **kwargs)
    return wrapper


@bp.post("/isos")
@csrf.exempt
@_csrf_first_field
@login_required
def upload():
    quota = iso_mod.quota_for(current_user.id)
    limit = iso_mod.max_upload_bytes(current_user.id)
    if quota.used_count >= quota.max_count:
        return _refuse(f"You can keep at most {quota.max_count} ISO images. Delete one to upload another.", 400)
    if limit <= 0:
        return _refuse("Your ISO storage is full. Delete an image to upload another.", 400)
    if request.content_length is not None and request.content_length > limit + FORM_SLACK:
        return _refuse(f"The ISO is larger than the {iso_mod.format_bytes(limit)} you may upload.", 413)
    holder: dict = {}

    def stream_factory(total_content_length, content_type, filename, content_length=None):
        if "incoming" in holder:
            raise UserError("Upload one ISO at a time.")
        holder["incoming"] = iso_mod.Incoming(limit)
        holder["filename"] = filename
        return holder["incoming"]

    try:
        _stream, form, files = parse_form_data(request.environ, stream_factory=stream_factory,
                                               max_content_length=limit + FORM_SLACK, max_form_parts=10,
                                               silent=False)
        incoming = holder.pop("incoming", None)
        if incoming is None or "iso" not in files:
            raise UserError("Choose an ISO file to upload.")
        image = iso_mod.admit_upload(current_user, incoming, holder.get("filename"))
        db.session.commit()
    except RequestEntityTooLarge:
        return _refuse(f"The ISO is larger than the {iso_mod.format_bytes(limit)} you may upload.", 413,
                       holder)
    except UserError as exc:
        return _refuse(str(exc), 413 if isinstance(exc, iso_mod.IsoTooLarge) else 400, holder)
    except BaseException:
        _discard(holder)
        db.session.rollback()
        raise
    flash(f"“{image.name}” uploaded. It can be mounted once our staff have approved it.", "info")
    return redirect(url_for("iso.index"), 303)


def _discard(holder: dict | None) -> None:
    if holder and holder.get("incoming") is not None:
        holder.pop("incoming").discard()


def _refuse(message: str, status: int, holder: dict | None = None):
    _discard(holder)
    db.session.rollback()
    flash(message, "error")
    return _page(status)


@bp.post("/isos/<uuid>/delete")
@login_required
def delete(uuid):
    try:
        image = iso_mod.get_own(current_user.id, uuid)
    except NotFound:
        abort(404)
    try:
        iso_mod.delete_iso(current_user, image)
        db.session.commit()
        flash(f"“{image.name}” deleted.", "info")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for("iso.index"), 303)


_service_or_404 = own_service_or_404


def _back(service):
    target = request.form.get("next") or ""
    if target.startswith("/panel/") and "//" not in target:
        return redirect(target, 303)
    return redirect(f"/panel/services/{service.uuid}", 303)


@bp.post("/services/<uuid>/iso/mount")
@login_required
def mount(uuid):
    service = _service_or_404(uuid)
    try:
        iso_mod.request_mount(service, request.form.get("iso", ""), actor=current_user)
        db.session.commit()
        flash("Mounting the ISO…", "info")
    except NotFound:
        db.session.rollback()
        abort(404)
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return _back(service)


@bp.post("/services/<uuid>/iso/eject")
@login_required
def eject(uuid):
    service = _service_or_404(uuid)
    try:
        iso_mod.request_eject(service, actor=current_user)
        db.session.commit()
        flash("Ejecting the ISO…", "info")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return _back(service)
