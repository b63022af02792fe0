"""The customer panel: dashboard (every live service, wallet balance, notices, links) and the activity log.

The dashboard runs a fixed number of SQL queries whatever the number of services: one for the services with their
packages, their main addresses in the same query (``ipam.main_address_of``), one for the balance; plugins add notices
through ``hostbay_dashboard_notices``.
"""

from __future__ import annotations

import logging

from flask import Blueprint, abort, current_app, render_template, request
from flask_login import current_user, login_required
from markupsafe import Markup, escape
from sqlalchemy import func, select

from hostbay.core import ipam, ledger
from hostbay.core.activity import ActivityEntry
from hostbay.core.catalog import CYCLE_LABELS, Package
from hostbay.core.db import db
from hostbay.core.money import format_cents
from hostbay.core.services import HIDDEN_FROM_CUSTOMER, STATE_LABELS, Service

bp = Blueprint("panel", __name__, url_prefix="/panel")
log = logging.getLogger(__name__)

ACTIVITY_PAGE_SIZE = 50
NOTICE_LEVELS = ("info", "warning", "danger")

# Pages other parts of the panel provide; a link shows only when its page exists in this installation.
QUICK_LINKS = [
    ("Order a server", "/panel/order"),
    ("Add funds", "/panel/topup"),
    ("Billing", "/panel/billing"),
    ("ISO images", "/panel/isos"),
    ("Support tickets", "/panel/tickets"),
    ("Account and security", "/panel/account/"),
    ("Activity log", "/panel/activity"),
]

STATUS_TONE = {"active": "ok", "suspended": "bad", "pending": "busy", "provisioning": "busy",
               "rebuilding": "busy", "reinstalling": "busy", "resizing": "busy"}


def quick_links() -> list[tuple[str, str]]:
    cached = current_app.extensions.get("hostbay.panel_links")
    if cached is None:
        paths = {r.rule for r in current_app.url_map.iter_rules()}
        cached = [(label, path) for label, path in QUICK_LINKS if path in paths]
        current_app.extensions["hostbay.panel_links"] = cached
    return cached


def service_page_exists() -> bool:
    cached = current_app.extensions.get("hostbay.panel_service_page")
    if cached is None:
        cached = any(r.rule.startswith("/panel/services/<") and r.rule.count("/") == 3
                     for r in current_app.url_map.iter_rules())
        current_app.extensions["hostbay.panel_service_page"] = cached
    return cached


def dashboard_services(user_id: int) -> list:
    """Every live service of a customer as light rows (one query, whatever their number)."""
    stmt = (select(Service.id, Service.uuid, Service.hostname, Service.kind, Service.state, Service.cycle,
                   Service.renews_at, Service.price_cents, Service.cancel_at_period_end,
                   Package.name.label("package_name"), ipam.main_address_of(Service.id).label("main_ip"))
            .join(Package, Package.id == Service.package_id)
            .where(Service.user_id == user_id, Service.state.not_in(HIDDEN_FROM_CUSTOMER))
            .order_by(Service.created_at, Service.id))
    return db.session.execute(stmt).all()


def dashboard_notices(user) -> list[dict]:
    """Notices from plugins (incident banners, reminders). A failing plugin costs its notice, not the page."""
    notices: list[dict] = []
    # through pluggy's hook caller (order, wrappers); a raising plugin is logged and skipped by the registry's shim
    for part in current_app.extensions["hostbay"].hook.hostbay_dashboard_notices(user=user):
        if not isinstance(part, (list, tuple)):
            continue
        for n in part:
            if not isinstance(n, dict) or not n.get("title"):
                continue
            level = n.get("level") if n.get("level") in NOTICE_LEVELS else "info"
            url = n.get("url") if isinstance(n.get("url"), str) and n["url"].startswith(("/", "https://")) else None
            services = [str(u) for u in n.get("services") or () if isinstance(u, str)]
            notices.append({"title": str(n["title"]), "text": str(n.get("text") or ""), "level": level, "url": url,
                            "services": services})
    order = {"danger": 0, "warning": 1, "info": 2}
    notices.sort(key=lambda n: order[n["level"]])
    return notices


# One table row per service. The dashboard renders it in Python, not in a Jinja loop: with 500 services the loop's
# per-expression overhead was most of the page's time. Every variable part is escaped.
ROW_HTML = ('<tr><th scope="row" data-label="Server">{server} <span class="kind">{kind}</span></th>'
            '<td data-label="Status">{status}</td><td data-label="Main IP">{ip}</td>'
            '<td data-label="Package">{package}</td>'
            '<td data-label="Renews"><time datetime="{day}">{renews}</time></td><td data-label="Price">{price}</td></tr>\n')
NO_IP = '<span class="muted">—</span>'


def dashboard_rows(services, link: bool = True) -> Markup:
    """The <tr> rows of the service table (see ``ROW_HTML``); repeated pieces (status badges, prices, dates,
    package names) are formatted once per distinct value."""
    badges, prices, days, packages = {}, {}, {}, {}
    out = []
    for (sid, uuid, hostname, kind, state, cycle, renews_at, price_cents, ending, package, ip) in services:
        status = badges.get(state)
        if status is None:
            status = badges[state] = (f'<span class="status status-{STATUS_TONE.get(state, "none")}">'
                                      f'{escape(STATE_LABELS.get(state, state))}</span>')
        price = prices.get((price_cents, cycle))
        if price is None:
            price = prices[(price_cents, cycle)] = escape(
                f"{format_cents(price_cents)} / {CYCLE_LABELS.get(cycle, cycle).lower()}")
        day = days.get(renews_at)
        if day is None:
            day = days[renews_at] = renews_at.date().isoformat()
        pkg = packages.get(package)
        if pkg is None:
            pkg = packages[package] = escape(package)
        host = escape(hostname)
        out.append(ROW_HTML.format(
            server=f'<a href="/panel/services/{escape(uuid)}">{host}</a>' if link else host,
            kind="Dedicated" if kind == "dedicated" else "VPS", status=status,
            ip=f"<code>{escape(ip)}</code>" if ip else NO_IP, package=pkg,
            day=day, renews=("Ends " + day) if ending else day, price=price))
    return Markup("".join(out))


@bp.get("/")
@login_required
def dashboard():
    services = dashboard_services(current_user.id)
    rows = dashboard_rows(services, link=service_page_exists())
    return render_template("panel/dashboard.html", rows=rows, count=len(services),
                           balance=ledger.balance_cents(current_user.id),
                           notices=dashboard_notices(current_user), links=quick_links())


@bp.get("/activity")
@login_required
def activity():
    page = request.args.get("page", "1")
    if not page.isdigit() or int(page) < 1:
        abort(404)
    page = int(page)
    total = db.session.scalar(select(func.count(ActivityEntry.id)).where(ActivityEntry.user_id == current_user.id))
    rows = db.session.execute(
        select(ActivityEntry.created_at, ActivityEntry.event, ActivityEntry.message, Service.uuid, Service.hostname)
        .outerjoin(Service, Service.id == ActivityEntry.service_id)
        .where(ActivityEntry.user_id == current_user.id)
        .order_by(ActivityEntry.created_at.desc(), ActivityEntry.id.desc())
        .limit(ACTIVITY_PAGE_SIZE).offset((page - 1) * ACTIVITY_PAGE_SIZE)).all()
    if page > 1 and not rows:
        abort(404)
    pages = max(1, -(-total // ACTIVITY_PAGE_SIZE))
    return render_template("panel/activity.html", rows=rows, page=page, pages=pages, total=total)
