"""Staff pages of the dedicated-server inventory and the datacenter task queue.

``/staff/inventory/``: servers (filter by state and location), demand per dedicated package, add a server, CSV
import (row-level errors, nothing half-imported), a server's page (hardware, BMC with the password masked, state,
assignment by hand, a power action queued for the datacenter). ``/staff/datacenter/``: the task queue with
location and rack, requester, state and notes. Customers reach none of this; the panel shows them only
"Queued for datacenter handling" and outcomes (template global ``datacenter_view``).
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from hostbay.core import dctasks, dedicated, inventory, jobs
from hostbay.core.activity import audit
from hostbay.core.db import db
from hostbay.core.errors import HostbayError, UserError
from hostbay.core.inventory import HardwareServer
from hostbay.core.services import PENDING, PROVISIONING, Service

from .staff import staff_required

bp = Blueprint("staff_inventory", __name__)  # its menu entries are core's (hostbay.core.builtin.STAFF_MENU)

FIELDS_INT = ("cpu_cores", "ram_gib", "disk_count", "disk_size_gib", "nic_speed_mbit", "bmc_port")


@bp.app_template_global()
def datacenter_view(service):
    """Customer-safe view of a dedicated service's datacenter tasks (kind in plain words, outcome)."""
    if getattr(service, "kind", None) != "dedicated":
        return []
    return dctasks.customer_view(service)


@bp.app_template_global()
def inventory_server(service):
    """Staff pages: the inventory server of a dedicated service (or None)."""
    if getattr(service, "kind", None) != "dedicated":
        return None
    return inventory.server_of(service)


@bp.app_template_global()
def dedicated_stock(package) -> int:
    return inventory.stock(package)


def _server(uuid: str) -> HardwareServer:
    s = db.session.scalar(select(HardwareServer).filter_by(uuid=uuid))
    if s is None:
        abort(404)
    return s


@bp.get("/staff/inventory/")
@staff_required("services.inventory")
def index():
    q = select(HardwareServer)
    state = request.args.get("state") or ""
    if state in inventory.STATES:
        q = q.where(HardwareServer.state == state)
    location = request.args.get("location") or ""
    if location:
        q = q.where(HardwareServer.location == location)
    servers = db.session.scalars(q.order_by(HardwareServer.location, HardwareServer.rack,
                                            HardwareServer.rack_position, HardwareServer.name)).all()
    locations = db.session.scalars(select(HardwareServer.location).distinct().order_by(HardwareServer.location)).all()
    owners = {s.id: s for s in db.session.scalars(select(Service).where(
        Service.id.in_([x.service_id for x in servers if x.service_id] or [0])))}
    return render_template("staff/inventory/list.html", servers=servers, states=inventory.STATES, state=state,
                           location=location, locations=locations, demand=inventory.demand(), owners=owners,
                           labels=inventory.STATE_LABELS)


def _form_values(form) -> dict:
    vals = {k: (form.get(k) or "").strip() for k in ("name", "cpu_model", "disk_type", "location", "rack",
                                                       "rack_position", "bmc_host", "bmc_username",
                                                       "bmc_cipher_suite", "notes", "power_driver")}
    errors = []
    for k in FIELDS_INT:
        raw = (form.get(k) or "").strip()
        if not raw:
            vals[k] = {"disk_count": 1, "nic_speed_mbit": 1000, "bmc_port": 623}.get(k)
            if vals[k] is None:
                errors.append(f"{k.replace('_', ' ')} is required")
            continue
        try:
            vals[k] = int(raw)
            if vals[k] < 1:
                raise ValueError
        except ValueError:
            errors.append(f"{k.replace('_', ' ')} must be a whole number")
    for k in ("name", "cpu_model", "location"):
        if not vals[k]:
            errors.append(f"{k.replace('_', ' ')} is required")
    if vals["disk_type"] not in inventory.DISK_TYPES:
        vals["disk_type"] = "ssd"
    vals["auto_install"] = form.get("auto_install") == "1"
    vals["boot_efi"] = form.get("boot_efi") == "1"
    vals["power_driver"] = vals["power_driver"] or "ipmi"
    for k in ("bmc_host", "bmc_username", "bmc_cipher_suite"):
        vals[k] = vals[k] or None
    if errors:
        raise UserError("; ".join(errors) + ".")
    return vals


@bp.route("/staff/inventory/new", methods=["GET", "POST"])
@staff_required("services.inventory")
def new():
    if request.method == "POST":
        try:
            vals = _form_values(request.form)
            if db.session.scalar(select(HardwareServer.id).filter_by(name=vals["name"])):
                raise UserError("A server with this name exists already.")
            server = HardwareServer(**vals)
            server.set_bmc_password(request.form.get("bmc_password") or None)
            db.session.add(server)
            db.session.flush()
            audit("server.created", "server", server.uuid, actor=current_user,
                  after={"name": server.name, "location": server.location, "bmc_host": server.bmc_host})
            db.session.commit()
            flash(f"Server {server.name} added.", "info")
            return redirect(url_for(".detail", uuid=server.uuid))
        except UserError as exc:
            db.session.rollback()
            flash(str(exc), "error")
    return render_template("staff/inventory/new.html", form=request.form, disk_types=inventory.DISK_TYPES)


@bp.route("/staff/inventory/import", methods=["GET", "POST"])
@staff_required("services.inventory")
def import_csv():
    errors, created, text = [], [], ""
    if request.method == "POST":
        upload = request.files.get("file")
        text = upload.read().decode("utf-8", "replace") if upload and upload.filename else request.form.get("csv", "")
        try:
            created = inventory.import_csv(text, current_user)
            db.session.commit()
            flash(f"Imported {len(created)} servers.", "info")
        except inventory.ImportErrors as exc:
            db.session.rollback()
            errors = exc.errors
            flash(str(exc), "error")
    return render_template("staff/inventory/import.html", errors=errors, created=created,
                           columns=inventory.CSV_COLUMNS, required=inventory.REQUIRED_COLUMNS,
                           text=text if errors else ""), (400 if errors else 200)


@bp.get("/staff/inventory/<uuid>")
@staff_required("services.inventory")
def detail(uuid):
    server = _server(uuid)
    service = db.session.get(Service, server.service_id) if server.service_id else None
    waiting = db.session.scalars(select(Service).where(Service.kind == "dedicated",
                                                       Service.state.in_((PENDING, PROVISIONING)))
                                 .order_by(Service.created_at)).all()
    waiting = [s for s in waiting if inventory.server_of(s) is None or inventory.server_of(s).state == inventory.RESERVED]
    tasks = db.session.scalars(select(dctasks.DatacenterTask).where(dctasks.DatacenterTask.server_id == server.id)
                               .order_by(dctasks.DatacenterTask.created_at.desc()).limit(20)).all()
    return render_template("staff/inventory/detail.html", server=server, service=service, waiting=waiting,
                           tasks=tasks, next_states=sorted(inventory.STAFF_STATES.get(server.state, ())),
                           labels=inventory.STATE_LABELS, automated=dedicated.power_driver_for(server) is not None,
                           can_install=dedicated.can_automate_install(server))


@bp.post("/staff/inventory/<uuid>/state")
@staff_required("services.inventory")
def set_state(uuid):
    server = _server(uuid)
    to = request.form.get("state", "")
    if to not in inventory.STAFF_STATES.get(server.state, ()):
        flash("That state change is not possible from here.", "error")
        return redirect(url_for(".detail", uuid=uuid))
    before = server.state
    extra = {"service_id": None} if before == inventory.RESERVED else {}
    if before == inventory.RESERVED and server.service_id:
        svc = db.session.get(Service, server.service_id)
        if svc is not None and svc.state not in (PENDING, PROVISIONING):
            flash("The reserved server belongs to a running order.", "error")
            return redirect(url_for(".detail", uuid=uuid))
    if inventory.move(server, to, expect=before, **extra):
        audit("server.state", "server", server.uuid, actor=current_user, before={"state": before},
              after={"state": to}, detail=(request.form.get("reason") or "")[:200])
        db.session.commit()
        flash(f"{server.name} is now {inventory.STATE_LABELS[to].lower()}.", "info")
    else:
        db.session.rollback()
        flash("The server changed a moment ago; reload and try again.", "error")
    return redirect(url_for(".detail", uuid=uuid))


@bp.post("/staff/inventory/<uuid>/bmc")
@staff_required("services.inventory")
def set_bmc(uuid):
    server = _server(uuid)
    f = request.form
    host, user = (f.get("bmc_host") or "").strip() or None, (f.get("bmc_username") or "").strip() or None
    suite = (f.get("bmc_cipher_suite") or "").strip() or None
    try:
        port = int(f.get("bmc_port") or 623)
        if not 0 < port < 65536:
            raise ValueError
    except ValueError:
        flash("The BMC port must be a number from 1 to 65535.", "error")
        return redirect(url_for(".detail", uuid=uuid))
    if (host and not user) or (suite and not suite.isdigit()):
        flash("A BMC needs a user name; the cipher suite is a number (17 or 3).", "error")
        return redirect(url_for(".detail", uuid=uuid))
    before = {"bmc_host": server.bmc_host, "bmc_port": server.bmc_port, "bmc_username": server.bmc_username}
    server.bmc_host, server.bmc_port, server.bmc_username, server.bmc_cipher_suite = host, port, user, suite
    server.auto_install = f.get("auto_install") == "1" and bool(host)
    server.boot_efi = f.get("boot_efi") == "1"
    changed_pw = False
    if f.get("bmc_password"):
        server.set_bmc_password(f["bmc_password"])
        changed_pw = True
    elif f.get("clear_password") == "1":
        server.set_bmc_password(None)
        changed_pw = True
    audit("server.bmc", "server", server.uuid, actor=current_user, before=before,
          after={"bmc_host": host, "bmc_port": port, "bmc_username": user, "password_changed": changed_pw})
    db.session.commit()
    flash("BMC settings saved.", "info")
    return redirect(url_for(".detail", uuid=uuid))


@bp.post("/staff/inventory/<uuid>/assign")
@staff_required("services.inventory")
def assign(uuid):
    server = _server(uuid)
    svc = db.session.scalar(select(Service).filter_by(uuid=request.form.get("service", "")))
    if svc is None:
        flash("Choose a service.", "error")
        return redirect(url_for(".detail", uuid=uuid))
    try:
        inventory.assign_by_hand(svc, server, current_user)
        failed = db.session.scalar(select(jobs.Operation).where(jobs.Operation.service_id == svc.id,
                                                                jobs.Operation.kind == "service.provision",
                                                                jobs.Operation.state == jobs.FAILED))
        if failed is not None:
            jobs.retry(failed, actor=current_user)
        db.session.commit()
        flash(f"{server.name} is assigned to {svc.hostname}" + ("; its setup runs again." if failed else "."), "info")
    except (UserError, HostbayError) as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for(".detail", uuid=uuid))


@bp.post("/staff/inventory/<uuid>/task")
@staff_required("services.datacenter")
def new_task(uuid):
    server = _server(uuid)
    kind = request.form.get("kind", "")
    params = {}
    if kind == dctasks.POWER:
        action = request.form.get("action", "")
        if action not in ("on", "off", "cycle"):
            flash("Choose a power action.", "error")
            return redirect(url_for(".detail", uuid=uuid))
        params["action"] = action
    try:
        svc = db.session.get(Service, server.service_id) if server.service_id else None
        task = dctasks.create(kind, server, service=svc, params=params, requested_by=current_user,
                              notes=(request.form.get("notes") or "")[:2000])
        db.session.commit()
        flash(f"Task opened: {task.describe()}.", "info")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for(".detail", uuid=uuid))


# --------------------------------------------------------------------------------------------------------------
# Datacenter task queue
# --------------------------------------------------------------------------------------------------------------

def _task(uuid: str) -> dctasks.DatacenterTask:
    t = db.session.scalar(select(dctasks.DatacenterTask).filter_by(uuid=uuid))
    if t is None:
        abort(404)
    return t


@bp.get("/staff/datacenter/")
@staff_required("services.datacenter")
def tasks():
    state = request.args.get("state") or "active"
    location = request.args.get("location") or ""
    q = select(dctasks.DatacenterTask).join(HardwareServer, HardwareServer.id == dctasks.DatacenterTask.server_id)
    if state == "active":
        q = q.where(dctasks.DatacenterTask.state.in_((dctasks.OPEN, dctasks.IN_PROGRESS)))
    elif state in dctasks.STATES:
        q = q.where(dctasks.DatacenterTask.state == state)
    if location:
        q = q.where(HardwareServer.location == location)
    rows = db.session.scalars(q.order_by(dctasks.DatacenterTask.created_at.desc()).limit(200)).unique().all()
    locations = db.session.scalars(select(HardwareServer.location).distinct().order_by(HardwareServer.location)).all()
    return render_template("staff/inventory/tasks.html", tasks=rows, state=state, location=location,
                           locations=locations, states=dctasks.STATES)


@bp.get("/staff/datacenter/<uuid>")
@staff_required("services.datacenter")
def task(uuid):
    t = _task(uuid)
    svc = db.session.get(Service, t.service_id) if t.service_id else None
    return render_template("staff/inventory/task.html", task=t, service=svc)


@bp.post("/staff/datacenter/<uuid>/<step>")
@staff_required("services.datacenter")
def task_step(uuid, step):
    t = _task(uuid)
    notes = (request.form.get("notes") or "").strip()
    try:
        if step == "start":
            dctasks.start(t, current_user, notes)
        elif step == "note":
            dctasks.add_note(t, current_user, notes)
        elif step in ("done", "failed"):
            dctasks.finish(t, current_user, ok=step == "done", notes=notes)
        else:
            abort(404)
        db.session.commit()
        flash(f"Task {t.describe().lower()}: {t.state_label.lower()}.", "info")
    except UserError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    return redirect(url_for(".task", uuid=uuid))
