"""Staff administration pages: customers (search, detail, lock, read-only "view as customer"), failed and stuck
operations (retry, bulk retry, abandon), the catalogue (packages, OS images) and the audit trail (readable
differences, filters, CSV). Every view checks one named permission (accounts.NAMED_PERMISSIONS); the queries and changes
are core.admin's, which the REST API uses too."""

from __future__ import annotations

from datetime import datetime, timedelta

from flask import Blueprint, Response, abort, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from hostbay.core import admin, jobs, ledger
from hostbay.core.accounts import User
from hostbay.core.activity import AuditEntry
from hostbay.core.catalog import CYCLES, Image, Node, Package
from hostbay.core.db import db
from hostbay.core.errors import FieldErrorCollector, FieldErrors, HostbayError, UserError
from hostbay.core.money import to_cents
from hostbay.core.services import Service

from .staff import staff_required

bp = Blueprint("staff_admin", __name__, url_prefix="/staff")

AUDIT_PAGE = 100


def _customer(user_uuid: str) -> User:
    user = db.session.scalar(select(User).filter_by(uuid=user_uuid, role="customer"))
    return user or abort(404)


# --- customers ---------------------------------------------------------------------------------------------------

@bp.get("/customers/")
@staff_required("customers.view")
def customers():
    q = request.args.get("q", "")
    return render_template("staff/admin/customers.html", q=q, customers=admin.search_customers(q))


@bp.get("/customers/<user_uuid>")
@staff_required("customers.view")
def customer(user_uuid):
    from hostbay.core.tickets import Ticket

    user = _customer(user_uuid)
    services = db.session.scalars(select(Service).where(Service.user_id == user.id)
                                  .order_by(Service.created_at.desc())).all()
    tickets = db.session.scalars(select(Ticket).where(Ticket.user_id == user.id)
                                 .order_by(Ticket.created_at.desc()).limit(20)).all()
    entries = db.session.scalars(ledger.entries_for(user.id).limit(50)).all()
    return render_template("staff/admin/customer.html", user=user, services=services, tickets=tickets,
                           balance=ledger.balance_cents(user.id), entries=entries,
                           activity=admin.customer_activity(user.id))


@bp.get("/customers/<user_uuid>/view-as")
@staff_required("customers.view_as")
def view_as(user_uuid):
    """The customer's dashboard as they see it, read-only: no forms, no links into their pages."""
    from .panel import dashboard_notices, dashboard_rows, dashboard_services

    user = _customer(user_uuid)
    admin.record_view_as(user, current_user)
    db.session.commit()
    services = dashboard_services(user.id)
    return render_template("staff/admin/view_as.html", user=user, rows=dashboard_rows(services, link=False),
                           count=len(services), balance=ledger.balance_cents(user.id),
                           notices=dashboard_notices(user))


# --- failed and stuck work ---------------------------------------------------------------------------------------

def _operation(op_id: str) -> jobs.Operation:
    return db.session.get(jobs.Operation, op_id) or abort(404)


@bp.get("/operations/")
@staff_required("services.operations")
def operations():
    failed = db.session.scalars(admin.failed_operations().limit(200)).all()
    stuck = db.session.scalars(admin.stuck_operations().limit(200)).all()
    ids = {o.service_id for o in failed + stuck if o.service_id}
    svcs = {s.id: s for s in db.session.scalars(select(Service).where(Service.id.in_(ids)))} if ids else {}
    return render_template("staff/admin/operations.html", failed=failed, stuck=stuck, services=svcs,
                           stale_minutes=round(jobs.stale_seconds() / 60, 1))


@bp.post("/operations/retry")
@staff_required("services.operations")
def retry_bulk():
    done, skipped = admin.retry_many(request.form.getlist("op"), current_user)
    db.session.commit()
    flash(f"{done} operation{'s' if done != 1 else ''} queued again"
          + (f"; {skipped} skipped (no longer failed)." if skipped else "."), "info" if done else "error")
    return redirect(url_for(".operations"))


@bp.post("/operations/<op_id>/retry")
@staff_required("services.operations")
def retry(op_id):
    op = _operation(op_id)
    try:
        jobs.retry(op, actor=current_user)
    except HostbayError:
        flash("Only failed operations can be retried.", "error")
        return redirect(url_for(".operations"))
    db.session.commit()
    flash(f"{op.kind} is queued again.", "info")
    return redirect(url_for(".operations"))


@bp.route("/operations/<op_id>/abandon", methods=["GET", "POST"])
@staff_required("services.operations")
def abandon(op_id):
    op = _operation(op_id)
    if request.method == "GET":
        return render_template("staff/admin/abandon.html", op=op, left=admin.left_behind(op))
    if request.form.get("confirm") != "yes":
        flash("Tick the box to confirm you abandon it.", "error")
        return redirect(url_for(".abandon", op_id=op.id))
    try:
        admin.abandon(op, current_user, reason=request.form.get("reason") or "")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for(".operations"))
    db.session.commit()
    flash(f"{op.kind} is abandoned; what it left behind is in the audit trail.", "info")
    return redirect(url_for(".operations"))


# --- catalogue ---------------------------------------------------------------------------------------------------

def _drivers(kind: str) -> list[str]:
    found = current_app.extensions["hostbay"].drivers.get("virt" if kind == "vps" else "power", {})
    return sorted(found)


def _form_int(name: str, label: str, errors: FieldErrorCollector, minimum: int = 0) -> int | None:
    """The whole number in form field ``name`` (blank: 0); a bad one is filed in ``errors`` and gives None."""
    raw = (request.form.get(name) or "").strip() or "0"
    try:
        value = int(raw)
    except ValueError:
        errors.add(name, f"{label} must be a whole number.")
        return None
    if value < minimum:
        errors.add(name, f"{label} must be at least {minimum}.")
        return None
    return value


def _pools():
    from hostbay.core.ipam import IpPool

    return db.session.scalars(select(IpPool).order_by(IpPool.version, IpPool.name)).all()


# the domain's name of a field where the form's differs
_PACKAGE_FORM_FIELD = {"iso_quota_bytes": "iso_quota_mib"}


def _package_form(pkg: Package | None, errors: FieldErrorCollector) -> tuple[dict, dict]:
    """The package form's values and prices; every unreadable field is filed in ``errors`` (and left out), so the
    domain's own checks (admin.save_package) still run on the rest."""
    kind = pkg.kind if pkg else request.form.get("kind", "vps")
    if kind not in ("vps", "dedicated"):
        errors.add("kind", "A package is a VPS or a dedicated server.")
        kind = "vps"
    driver = request.form.get("driver") or (pkg.driver if pkg else "")
    if driver not in _drivers(kind) and not (pkg and driver == pkg.driver):
        errors.add("driver", f"Choose a {'virtualization' if kind == 'vps' else 'power'} driver.")
    values = {"slug": (request.form.get("slug") or "").strip().lower(), "name": (request.form.get("name") or "").strip(),
              "kind": kind, "driver": driver, "description": (request.form.get("description") or "").strip(),
              "vcpus": _form_int("vcpus", "vCPUs", errors), "memory_mib": _form_int("memory_mib", "Memory", errors),
              "disk_gib": _form_int("disk_gib", "Disk", errors),
              "ipv4_count": _form_int("ipv4_count", "IPv4 addresses", errors),
              "ipv6": bool(request.form.get("ipv6")),
              "port_speed_mbit": _form_int("port_speed_mbit", "Port speed", errors, 1),
              "sort": _form_int("sort", "Display order", errors), "visible": bool(request.form.get("visible")),
              "retired": bool(request.form.get("retired"))}
    quota = (request.form.get("traffic_quota_gib") or "").strip()
    values["traffic_quota_gib"] = _form_int("traffic_quota_gib", "Traffic quota", errors, 1) if quota else None
    # included addresses per pool: one field pool_<id> per pool (blank or 0: none from that pool)
    per_pool = {}
    for key in request.form:
        if key.startswith("pool_"):
            raw = (request.form.get(key) or "").strip()
            if raw:
                per_pool[key[len("pool_"):]] = raw
    values["pool_addresses"] = per_pool  # checked (whole number >= 0, the pool exists) by admin.save_package
    count = (request.form.get("iso_quota_count") or "").strip()
    values["iso_quota_count"] = _form_int("iso_quota_count", "ISO images", errors) if count else None
    size = (request.form.get("iso_quota_mib") or "").strip()
    mib = _form_int("iso_quota_mib", "ISO space", errors) if size else None
    values["iso_quota_bytes"] = mib * 1024 * 1024 if mib is not None else None
    prices = {}
    for cycle in CYCLES:
        raw = (request.form.get(f"price_{cycle}") or "").strip()
        if raw:
            try:
                prices[cycle] = to_cents(raw)
            except (ValueError, ArithmeticError, TypeError, HostbayError):
                errors.add(f"price_{cycle}", f"The {cycle} price must be an amount in dollars, e.g. 12.50.")
    bad = set(errors.errors)
    values = {k: v for k, v in values.items() if k not in bad and not (v is None and k in (
        "vcpus", "memory_mib", "disk_gib", "ipv4_count", "port_speed_mbit", "sort"))}
    return values, prices


def _save_package(pkg: Package | None, **kwargs):
    """Validate the whole form and save it: (package, services told) or a FieldErrors with every bad field."""
    errors = FieldErrorCollector()
    values, prices = _package_form(pkg, errors)
    try:  # the domain's checks run on what could be read, so every bad field is reported at once
        if not errors:
            return admin.save_package(pkg, values, prices, current_user, **kwargs)
        admin.check_package(pkg, values, prices)
    except FieldErrors as exc:
        for name, message in exc.errors.items():
            errors.add(_PACKAGE_FORM_FIELD.get(name, name), message)
    except UserError as exc:
        errors.merge(exc)
    db.session.rollback()
    raise FieldErrors(errors.errors)


def _package_page(template: str, pkg: Package | None, errors: dict | None = None, **context):
    return render_template(template, pkg=pkg, cycles=list(CYCLES), pools=_pools(),
                           drivers={"vps": _drivers("vps"), "dedicated": _drivers("dedicated")},
                           errors=errors or {}, form=request.form if errors else None, **context), \
        (422 if errors else 200)


@bp.route("/catalogue/packages/", methods=["GET", "POST"])
@staff_required("catalogue.packages")
def packages():
    errors = None
    if request.method == "POST":
        try:
            pkg, _ = _save_package(None)
            db.session.commit()
        except FieldErrors as exc:
            errors = exc.errors
        else:
            flash(f"Package {pkg.name} was created.", "info")
            return redirect(url_for(".package", package_uuid=pkg.uuid))
    pkgs = db.session.scalars(select(Package).order_by(Package.kind, Package.sort, Package.name)).all()
    return _package_page("staff/admin/packages.html", None, errors, packages=pkgs)


@bp.route("/catalogue/packages/<package_uuid>", methods=["GET", "POST"])
@staff_required("catalogue.packages")
def package(package_uuid):
    pkg = db.session.scalar(select(Package).filter_by(uuid=package_uuid)) or abort(404)
    errors = None
    if request.method == "POST":
        try:
            _, told = _save_package(pkg, apply_to_existing=request.form.get("apply_existing") == "1")
            db.session.commit()
        except FieldErrors as exc:
            errors = exc.errors
        else:
            flash(f"{pkg.name} was saved" + (f"; {told} existing service{'s' if told != 1 else ''} renew at the new "
                                             "price and their customers were told." if told else "; existing "
                                             "services keep their price."), "info")
            return redirect(url_for(".package", package_uuid=pkg.uuid))
    count = db.session.scalar(select(db.func.count(Service.id)).where(Service.package_id == pkg.id))
    return _package_page("staff/admin/package.html", pkg, errors, service_count=count)


def _image_form(img: Image | None, errors: FieldErrorCollector) -> dict:
    driver = request.form.get("driver") or (img.driver if img else "")
    if driver not in _drivers("vps") and not (img and driver == img.driver):
        errors.add("driver", "Choose the virtualization driver the image is for.")
    values = {"driver": driver, "slug": (request.form.get("slug") or "").strip().lower(),
              "name": (request.form.get("name") or "").strip(), "source": (request.form.get("source") or "").strip(),
              "os_family": (request.form.get("os_family") or "linux").strip()[:32],
              "min_disk_gib": _form_int("min_disk_gib", "Minimum disk", errors, 1),
              "enabled": bool(request.form.get("enabled"))}
    if values["min_disk_gib"] is None:
        del values["min_disk_gib"]
    return values


def _save_image(img: Image | None) -> Image:
    errors = FieldErrorCollector()
    values = _image_form(img, errors)
    with errors.check():
        if not errors:
            return admin.save_image(img, values, current_user)
        admin.check_image(img, values)
    db.session.rollback()
    raise FieldErrors(errors.errors)


@bp.route("/catalogue/images/", methods=["GET", "POST"])
@staff_required("catalogue.images")
def images():
    errors = None
    if request.method == "POST":
        try:
            img = _save_image(None)
            db.session.commit()
        except FieldErrors as exc:
            errors = exc.errors
        else:
            flash(f"Image {img.name} was added for {img.driver}.", "info")
            return redirect(url_for(".images"))
    imgs = db.session.scalars(select(Image).order_by(Image.driver, Image.name)).all()
    return render_template("staff/admin/images.html", images=imgs, drivers=_drivers("vps"), errors=errors or {},
                           form=request.form if errors else None), 422 if errors else 200


@bp.route("/catalogue/images/<image_uuid>", methods=["GET", "POST"])
@staff_required("catalogue.images")
def image(image_uuid):
    img = db.session.scalar(select(Image).filter_by(uuid=image_uuid)) or abort(404)
    errors = None
    if request.method == "POST":
        try:
            _save_image(img)
            db.session.commit()
        except FieldErrors as exc:
            errors = exc.errors
        else:
            flash(f"{img.name} was saved.", "info")
            return redirect(url_for(".image", image_uuid=img.uuid))
    return render_template("staff/admin/image.html", img=img, drivers=_drivers("vps"), errors=errors or {},
                           form=request.form if errors else None), 422 if errors else 200


# --- audit trail -------------------------------------------------------------------------------------------------

def _day(name: str) -> datetime | None:
    raw = (request.args.get(name) or "").strip()
    if not raw:
        return None
    try:
        return datetime.strptime(raw, "%Y-%m-%d")
    except ValueError:
        abort(400)


def _audit_filters() -> dict:
    until = _day("until")
    return {"actor": request.args.get("actor", ""), "customer": request.args.get("customer", ""),
            "service": request.args.get("service", ""), "kind": request.args.get("kind", ""),
            "since": _day("since"), "until": until + timedelta(days=1) if until else None}


@bp.get("/audit/")
@staff_required("audit.view")
def audit():
    page = request.args.get("page", "1")
    page = int(page) if page.isdigit() and int(page) > 0 else 1
    q = admin.audit_query(**_audit_filters())
    entries = db.session.scalars(q.limit(AUDIT_PAGE + 1).offset((page - 1) * AUDIT_PAGE)).all()
    more = len(entries) > AUDIT_PAGE
    entries = entries[:AUDIT_PAGE]
    return render_template("staff/admin/audit.html", entries=entries, emails=admin.actor_emails(entries),
                           diff=admin.readable_diff, args=request.args, page=page, more=more,
                           filters={k: v for k, v in request.args.items() if k != "page" and v})


@bp.get("/audit/export.csv")
@staff_required("audit.view")
def audit_csv():
    entries = db.session.scalars(admin.audit_query(**_audit_filters()).limit(50000)).all()
    return Response(admin.audit_csv(entries), mimetype="text/csv",
                    headers={"Content-Disposition": "attachment; filename=hostbay-audit.csv"})


# --- nodes: placement --------------------------------------------------------------------------------------------

@bp.post("/nodes/<int:node_id>/placement")
@staff_required("plugins.nodes")
def node_placement(node_id):
    node = db.session.get(Node, node_id) or abort(404)
    what = request.form.get("set")
    if what not in ("enable", "disable", "drain", "undrain"):
        abort(400)
    admin.set_node_placement(node, current_user, enabled={"enable": True, "disable": False}.get(what),
                             draining={"drain": True, "undrain": False}.get(what))
    db.session.commit()
    flash({"enable": f"{node.name} takes new services again.", "disable": f"{node.name} is out of placement.",
           "drain": f"{node.name} is draining: no new services; the ones on it keep running.",
           "undrain": f"{node.name} takes new services again."}[what], "info")
    return redirect(url_for("staff_nodes.edit", node_id=node.id))


# --- staff accounts and roles ------------------------------------------------------------------------------------

def _staff_member(user_uuid: str) -> User:
    """A staff member the current user may alter: not oneself, and (core.staff_roles.can_manage) not an admin unless
    one is an admin, nor anyone whose role holds a permission one lacks. Anything else is a 404."""
    from hostbay.core import staff_roles

    user = db.session.scalar(select(User).filter_by(uuid=user_uuid))
    if user is None or not user.is_staff or user.id == current_user.id \
            or not staff_roles.can_manage(current_user, user):
        abort(404)
    return user


_NOT_GRANTABLE = "You can only give a role whose permissions you hold yourself; only an admin can make an admin."


@bp.get("/team/")
@staff_required("staff.accounts")
def team():
    from hostbay.core import staff_roles

    roles = staff_roles.all_roles()
    names = [r["name"] for r in roles]
    members = db.session.scalars(select(User).where(User.role.in_(names)).order_by(User.email)).all()
    grantable = [r["name"] for r in roles if staff_roles.can_grant(current_user, r["name"])]
    groups = [{**g, "permissions": [p for p in g["permissions"] if current_user.can(p["name"])]}
              for g in staff_roles.permission_groups()]
    # the role editor: custom roles and support/billing (not admin), when one holds every permission they list
    editable = {r["name"] for r in roles if r["editable"] and current_user.can("staff.roles")
                and staff_roles.holds_all(current_user, r["permissions"])}
    editing = next((r for r in roles if r["name"] == request.args.get("edit") and r["name"] in editable), None)
    if editing is not None:
        editing = {**editing, "granted": staff_roles.role_grants(editing["name"]) or frozenset()}
    return render_template("staff/admin/team.html", members=members, roles=roles, grantable=grantable,
                           manageable={m.id for m in members if staff_roles.can_manage(current_user, m)},
                           groups=[g for g in groups if g["permissions"]], editable=editable, editing=editing)


@bp.post("/team/invite")
@staff_required("staff.accounts")
def invite():
    import secrets

    from hostbay.core import branding, credentials, staff_roles
    from hostbay.core.accounts import create_user
    from hostbay.core.activity import audit as audit_entry
    from hostbay.core.mailer import send_mail

    role = request.form.get("role", "")
    try:
        if role not in staff_roles.staff_role_names():
            raise UserError("Choose a staff role.")
        if not staff_roles.can_grant(current_user, role):
            raise UserError(_NOT_GRANTABLE)
        user = create_user(request.form.get("email", ""), secrets.token_urlsafe(24), role=role,
                           name=(request.form.get("name") or "").strip()[:120])
        audit_entry("staff.invite", "user", user.uuid, actor=current_user, after={"email": user.email, "role": role})
        db.session.commit()
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for(".team"))
    link = f"{current_app.config['HOSTBAY_BASE_URL']}/password-reset/{credentials.make_reset_token(user)}"
    try:
        brand = branding.current().name
        sent = send_mail(user.email, f"Your {brand} staff account",
                         f"An account with the role {role} was made for you on the {brand} panel. "
                         f"Choose your password here: {link}\n"
                         "After that, set up two-factor authentication when the panel asks.")
    except OSError:
        current_app.logger.exception("staff invitation mail could not be sent")
        sent = False
    if sent:
        flash(f"{user.email} was invited as {role}; the invitation with a link to choose a password was sent.",
              "info")
    else:
        flash(f"{user.email} was created as {role}, but the invitation mail could not be sent; they can use "
              "“Forgot password” on the login page.", "error")
    return redirect(url_for(".team"))


@bp.post("/team/<user_uuid>/role")
@staff_required("staff.accounts")
def set_role(user_uuid):
    from hostbay.core import sessions, staff_roles
    from hostbay.core.activity import audit as audit_entry

    user = _staff_member(user_uuid)
    role = request.form.get("role", "")
    if role not in staff_roles.staff_role_names():
        flash("Choose a staff role.", "error")
        return redirect(url_for(".team"))
    if not staff_roles.can_grant(current_user, role):
        flash(_NOT_GRANTABLE, "error")
        return redirect(url_for(".team"))
    before = user.role
    user.role = role
    sessions.end_all_sessions(user)  # permissions changed: sign in again
    audit_entry("staff.role", "user", user.uuid, actor=current_user, before={"role": before}, after={"role": role})
    db.session.commit()
    flash(f"{user.email} is now {role}.", "info")
    return redirect(url_for(".team"))


@bp.post("/team/<user_uuid>/reset-2fa")
@staff_required("staff.accounts")
def reset_two_factor(user_uuid):
    from hostbay.core import credentials, sessions
    from hostbay.core.activity import audit as audit_entry

    user = _staff_member(user_uuid)
    had = bool(user.totp_secret)
    credentials.disable_two_factor(user)
    sessions.end_all_sessions(user)
    audit_entry("staff.reset_2fa", "user", user.uuid, actor=current_user, before={"two_factor": had},
                after={"two_factor": False})
    db.session.commit()
    flash(f"Two-factor authentication of {user.email} was reset; they set it up again at their next login.", "info")
    return redirect(url_for(".team"))


@bp.post("/team/roles")
@staff_required("staff.roles")
def save_role():
    from hostbay.core import staff_roles

    try:
        role = staff_roles.save_role(request.form.get("name", ""), request.form.get("label", ""),
                                     request.form.getlist("permission"), current_user)
        db.session.commit()
        flash(f"Role {role.name} was saved.", "info")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for(".team"))


@bp.post("/team/roles/<name>/delete")
@staff_required("staff.roles")
def delete_role(name):
    from hostbay.core import staff_roles

    try:
        staff_roles.delete_role(name, current_user)
        db.session.commit()
        flash(f"Role {name} was deleted.", "info")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for(".team"))


# --- plugins and settings ----------------------------------------------------------------------------------------

@bp.get("/plugins/")
@staff_required("plugins.view")
def plugins():
    ext = current_app.extensions["hostbay"]
    drivers = {kind: sorted((name, getattr(cls, "label", name), len(getattr(cls, "settings", ()) or ()))
                            for name, cls in found.items()) for kind, found in sorted(ext.drivers.items())}
    return render_template("staff/admin/plugins.html", plugins=ext.plugins, drivers=drivers)
