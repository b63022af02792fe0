"""Support tickets (customer and staff) and the contact page."""

import re

from hostbay.core import tickets as tk
from hostbay.core.activity import ActivityEntry
from hostbay.testing.pytest_plugin import login


def _ticket(db, **filters):
    db.session.expire_all()
    return db.session.scalar(db.select(tk.Ticket).filter_by(**filters))


def test_customer_and_staff_conversation(client, app, db, make_user, make_package, make_service, smtp_server):
    customer = make_user("cust@example.test")
    support = make_user("help@example.test", role="support")
    svc = make_service(customer, make_package())
    login(client, customer)
    page = client.get("/panel/tickets/new")
    assert svc.uuid.encode() in page.data  # the service is offered
    resp = client.post("/panel/tickets/new", data={"subject": "Server slow", "body": "Since this morning.",
                                                   "service": svc.uuid})
    assert resp.status_code == 302
    ticket = _ticket(db, user_id=customer.id)
    assert ticket.service_id == svc.id and ticket.status == tk.OPEN and len(ticket.messages) == 1
    assert resp.headers["Location"].endswith(f"/panel/tickets/{ticket.uuid}")
    assert b"Server slow" in client.get("/panel/tickets").data

    staff = app.test_client()
    login(staff, support)
    queue = staff.get("/staff/tickets/")
    assert queue.status_code == 200 and b"Server slow" in queue.data
    assert staff.post(f"/staff/tickets/{ticket.uuid}/reply", data={"body": "We moved you to a quieter host."}
                      ).status_code == 302
    ticket = _ticket(db, id=ticket.id)
    assert ticket.status == tk.ANSWERED and ticket.messages[-1].staff
    [mail] = smtp_server.to("cust@example.test")
    assert "quieter host" in smtp_server.body(mail) and f"/panel/tickets/{ticket.uuid}" in smtp_server.body(mail)

    page = client.get(f"/panel/tickets/{ticket.uuid}").data.decode()
    assert "We moved you to a quieter host." in page and "hostbay support" in page
    assert "help@example.test" not in page  # staff identities stay internal

    assert client.post(f"/panel/tickets/{ticket.uuid}/reply", data={"body": "Thanks, better now."}
                       ).status_code == 302
    assert _ticket(db, id=ticket.id).status == tk.OPEN
    assert client.post(f"/panel/tickets/{ticket.uuid}/close").status_code == 302
    assert _ticket(db, id=ticket.id).status == tk.CLOSED
    resp = client.post(f"/panel/tickets/{ticket.uuid}/reply", data={"body": "One more thing"})
    assert resp.status_code == 400 and b"closed" in resp.data
    events = db.session.scalars(db.select(ActivityEntry.message).filter_by(user_id=customer.id, event="ticket")).all()
    assert events == ["Support ticket opened: Server slow", "Support ticket closed: Server slow"]


def test_ticket_service_must_belong_to_the_customer(client, db, make_user, make_package, make_service):
    a, b = make_user(), make_user()
    other = make_service(b, make_package())
    login(client, a)
    resp = client.post("/panel/tickets/new", data={"subject": "Hi", "body": "x", "service": other.uuid})
    assert resp.status_code == 400 and b"Choose one of your services" in resp.data
    assert client.post("/panel/tickets/new", data={"subject": "", "body": "x"}).status_code == 400
    assert client.post("/panel/tickets/new", data={"subject": "Hi", "body": " "}).status_code == 400
    assert _ticket(db) is None
    assert client.post("/panel/tickets/new", data={"subject": "Hi", "body": "no service"}).status_code == 302
    assert _ticket(db, user_id=a.id).service_id is None


def test_staff_pages_need_the_tickets_permission(app, make_user):
    for role, expected in (("customer", 404), ("billing", 404), ("support", 200), ("admin", 200)):
        c = app.test_client()
        login(c, make_user(role=role))
        assert c.get("/staff/tickets/").status_code == expected, role
    anon = app.test_client()
    assert anon.get("/staff/tickets/").status_code == 404  # a staff URL is a 404 for anonymous visitors too


def _contact_form(client):
    page = client.get("/contact")
    assert page.status_code == 200
    return re.search(rb'name="form_token" value="([^"]+)"', page.data).group(1).decode()


VISITOR = {"name": "Vera Visitor", "email": "Vera@Example.test", "subject": "Do you have GPUs?",
           "body": "Looking for a GPU server."}


def test_contact_page_for_visitors(app, client, clock, db, make_user, smtp_server):
    token = _contact_form(client)
    clock.advance(seconds=10)
    resp = client.post("/contact", data=dict(VISITOR, form_token=token, website=""))
    assert resp.status_code == 200 and b"Thank you" in resp.data
    ticket = _ticket(db, source="contact")
    assert ticket.user_id is None and ticket.contact_email == "vera@example.test"
    assert ticket.contact_name == "Vera Visitor" and ticket.messages[0].body == "Looking for a GPU server."

    staff = app.test_client()
    login(staff, make_user(role="support"))
    page = staff.get(f"/staff/tickets/{ticket.uuid}").data.decode()
    assert "vera@example.test" in page and "visitor" in page
    staff.post(f"/staff/tickets/{ticket.uuid}/reply", data={"body": "Not yet, sorry.", "close": "1"})
    assert _ticket(db, id=ticket.id).status == tk.CLOSED
    [mail] = smtp_server.to("vera@example.test")
    assert "Not yet, sorry." in smtp_server.body(mail) and "/panel/tickets" not in smtp_server.body(mail)


def test_contact_page_refuses_bots(client, clock, db):
    token = _contact_form(client)
    # Posted at once: a person cannot have filled the form.
    resp = client.post("/contact", data=dict(VISITOR, form_token=token))
    assert resp.status_code == 400 and b"quick" in resp.data
    # Honeypot filled: looks accepted, nothing kept.
    clock.advance(seconds=10)
    resp = client.post("/contact", data=dict(VISITOR, form_token=token, website="http://spam.example"))
    assert resp.status_code == 200 and b"Thank you" in resp.data
    # No or forged token.
    assert client.post("/contact", data=VISITOR).status_code == 400
    assert client.post("/contact", data=dict(VISITOR, form_token=token[:-3] + "abc")).status_code == 400
    # A day-old form.
    clock.advance(days=1, seconds=1)
    assert client.post("/contact", data=dict(VISITOR, form_token=token)).status_code == 400
    assert _ticket(db) is None


def test_contact_page_attaches_logged_in_users(client, clock, db, make_user, make_package, make_service):
    user = make_user()
    svc = make_service(user, make_package())
    login(client, user)
    token = _contact_form(client)
    clock.advance(seconds=5)
    resp = client.post("/contact", data={"subject": "Billing question", "body": "Can I pay yearly?",
                                         "service": svc.uuid, "form_token": token})
    assert resp.status_code == 302
    ticket = _ticket(db, source="contact")
    assert ticket.user_id == user.id and ticket.service_id == svc.id and ticket.contact_email == user.email
    assert client.get(f"/panel/tickets/{ticket.uuid}").status_code == 200
