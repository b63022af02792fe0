"""Every customer route whose URL names an owned object (``<uuid>``, ``<service_uuid>``, ``<payment_uuid>``, ...)
is a 404 for another customer; every staff route is a 404 for customers and for staff without its permission.
Routes are enumerated from app.url_map, so routes added later are covered."""

from werkzeug.routing import Rule

from hostbay.core import payments
from hostbay.core.accounts import DEFAULT_ROLE_PERMISSIONS, NAMED_PERMISSIONS
from hostbay.core.staff_roles import StaffRole
from hostbay.core.db import db as database
from hostbay.testing.pytest_plugin import login

PUBLIC_ARGS = {"package_uuid"}  # the catalogue is public: any customer may open any package's order page
METHODS = ("GET", "POST")
EVERY_METHOD = ("GET", "POST", "PUT", "PATCH", "DELETE")


def _owned_rules(app) -> list[Rule]:
    return [r for r in app.url_map.iter_rules() if r.rule.startswith("/panel/")
            and any(a.endswith("uuid") and a not in PUBLIC_ARGS for a in r.arguments)]


def test_every_owned_uuid_route_is_404_for_another_customer(app, make_user, make_package, make_service,
                                                            url_for_rule):
    a, b = make_user(), make_user()
    svc = make_service(a, make_package(), hostname="a-private.example.test")
    pay = payments.Payment(user_id=a.id, gateway="fake", amount_cents=1000, provider_ref="inv-a")
    database.session.add(pay)
    database.session.commit()
    rules = _owned_rules(app)
    names = {r.rule for r in rules}
    assert {"/panel/services/<service_uuid>/change-package", "/panel/topup/<payment_uuid>",
            "/panel/topup/<payment_uuid>/status"} <= names, names
    client = app.test_client()
    login(client, b)
    for rule in rules:
        values = {arg: (pay.uuid if "payment" in arg else svc.uuid) for arg in rule.arguments if arg.endswith("uuid")}
        for method in METHODS:
            if method not in rule.methods:
                continue
            resp = client.open(url_for_rule(rule, values), method=method, data={"package": "x", "key": "k"})
            assert resp.status_code == 404, (method, rule.rule, resp.status_code)
            assert b"a-private.example.test" not in resp.data
    owner = app.test_client()
    login(owner, a)  # the 404s come from ownership: the owner reaches the same pages
    assert owner.get(f"/panel/topup/{pay.uuid}/status").status_code == 200
    assert owner.get(f"/panel/services/{svc.uuid}/change-package").status_code == 200


# The area of each staff URL prefix (accounts.AREAS): every staff route declares one named permission of its
# area (``area.action``; the built-in roles hold accounts.DEFAULT_ROLE_PERMISSIONS, the seed of their rows); None:
# any staff.
AREA_PERMISSION = {"/staff/billing/": "money", "/staff/payments/": "money", "/staff/payments/gateways": "plugins",
                   "/staff/services/": "services",
                   "/staff/tickets/": "tickets", "/staff/isos/": "approvals", "/staff/network/rdns": "approvals",
                   "/staff/network/": "network", "/staff/nodes/": "plugins", "/staff/accounts/": "customers",
                   "/staff/status/": "status", "/staff/inventory/": "services",
                   "/staff/datacenter/": "services", "/staff/customers/": "customers",
                   "/staff/operations/": "services", "/staff/catalogue/": "catalogue", "/staff/audit/": "audit",
                   "/staff/team/": "staff", "/staff/plugins/": "plugins",
                   "/staff/images/": "plugins", "/staff/branding": "plugins", "/staff/help": "plugins"}
# Custom roles hold exactly their permissions: one from before the named permissions (whole areas), one built in
# the role editor from two named permissions.
CUSTOM_ROLES = {"helpdesk": {"tickets", "customers"}, "powerdesk": {"services.view", "services.power"}}


def _area(rule: str):
    if rule == "/staff/":
        return None
    for prefix, area in sorted(AREA_PERMISSION.items(), key=lambda kv: -len(kv[0])):  # longest prefix first
        if rule.startswith(prefix):
            return area
    raise AssertionError(f"staff route {rule} is in no known area: add it to AREA_PERMISSION")


def _holds(role: str, perm: str) -> bool:
    """The rule, restated: admin holds everything, a built-in role its default permissions, a custom role
    its named permissions and the whole of an area it names."""
    if role == "admin":
        return True
    if role in CUSTOM_ROLES:
        return perm in CUSTOM_ROLES[role] or perm.split(".")[0] in CUSTOM_ROLES[role]
    return perm in DEFAULT_ROLE_PERMISSIONS[role]


def test_staff_routes_need_staff_with_the_permission(app, make_user, url_for_rule):
    for name, perms in CUSTOM_ROLES.items():
        database.session.add(StaffRole(name=name, permissions=sorted(perms)))
    database.session.commit()
    roles = (*DEFAULT_ROLE_PERMISSIONS, *CUSTOM_ROLES)
    users = {"customer": make_user()} | {role: make_user(role=role) for role in roles}
    clients = {"anonymous": app.test_client()}
    for role, user in users.items():
        clients[role] = app.test_client()
        login(clients[role], user)
    checked, seen = 0, set()
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/staff/"):
            continue
        area = _area(rule.rule)
        perm = getattr(app.view_functions[rule.endpoint], "hostbay_permission", None)
        if area is None:
            assert perm is None, rule.rule
        else:
            assert perm in NAMED_PERMISSIONS, f"{rule.rule} checks {perm!r}, not one named permission"
            assert perm.split(".")[0] == area, f"{rule.rule} checks {perm}, outside its area {area}"
            seen.add(perm)
        allowed = set(roles) if perm is None else {r for r in roles if _holds(r, perm)}
        url = url_for_rule(rule)
        for method in EVERY_METHOD:
            if method not in rule.methods:
                continue
            for role, client in clients.items():
                status = client.open(url, method=method, data={"note": "x", "amount": "1"}).status_code
                if role not in allowed:
                    assert status == 404, (role, method, rule.rule, status)
                    checked += 1
                elif method == "GET" and not rule.arguments:
                    assert status == 200, (role, rule.rule, status)
    assert checked > 50
    assert {"services.force", "services.move", "services.operations", "staff.roles"} <= seen


def test_each_service_action_checks_its_own_permission(app, make_user, make_package, make_service):
    """The staff service page's routes: powerdesk (services.view + services.power) reaches the page and the power
    actions, and gets a 404 on every other action, every force action and the move."""
    from hostbay.core import force
    from hostbay.core.actions import STAFF_ACTIONS, staff_permission

    database.session.add(StaffRole(name="powerdesk", permissions=sorted(CUSTOM_ROLES["powerdesk"])))
    database.session.commit()
    svc = make_service(make_user(), make_package(), hostname="perm.example.test")
    member = make_user(role="powerdesk")
    client = app.test_client()
    login(client, member)
    assert client.get(f"/staff/services/{svc.uuid}").status_code == 200
    for action, _ in STAFF_ACTIONS:
        status = client.post(f"/staff/services/{svc.uuid}/action/{action}").status_code
        assert (status == 404) == (staff_permission(action) != "services.power"), (action, status)
    for action in force.NAMES:
        assert client.post(f"/staff/services/{svc.uuid}/force/{action}",
                           data={"confirm_hostname": svc.hostname}).status_code == 404, action
    assert client.post(f"/staff/services/{svc.uuid}/move", data={"confirm_hostname": svc.hostname}
                       ).status_code == 404
    page = client.get(f"/staff/services/{svc.uuid}").get_data(as_text=True)
    assert "Force actions" not in page and "Move to another node" not in page
