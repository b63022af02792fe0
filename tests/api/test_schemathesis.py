"""schemathesis against the served document (/api/v1/openapi.json), in-process through WSGI, with a real token of
each kind (customer read, customer write, staff admin): no 5xx and no response that disagrees with the document
(status code, content type, headers, body schema). Examples are bounded (HOSTBAY_TEST_SCHEMATHESIS_EXAMPLES,
default 6 per operation and token) so CI stays within a few minutes."""

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (content_type_conformance, not_a_server_error, response_headers_conformance,
                                 response_schema_conformance, status_code_conformance)

from hostbay.core import credentials, ledger, tickets
from hostbay.core.db import db

from .conftest import bearer

EXAMPLES = int(os.environ.get("HOSTBAY_TEST_SCHEMATHESIS_EXAMPLES", "6"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
          response_schema_conformance]


@pytest.fixture
def api_schema(app, make_user, make_package, make_image, make_service):
    """The app with data (a customer with a service, a ticket and a wallet; staff) and its served document."""
    app.config["HOSTBAY_JOBS"] = "manual"
    customer = make_user(balance_cents=100000)
    staff = make_user(role="admin")
    pkg = make_package(monthly_cents=1000)
    make_image()
    svc = make_service(customer, pkg, hostname="fuzz.example.test")
    ticket = tickets.open_ticket(customer, "Hello", "Question", svc.uuid)
    ledger.credit(customer.id, 100, kind="bonus", key="fuzz-bonus", description="Bonus")
    tokens = {}
    for name, user, scope in (("customer-read", customer, "read"), ("customer-write", customer, "write"),
                              ("staff", staff, "write")):
        tokens[name] = credentials.create_api_token(user, name, scope=scope)[1]
    db.session.commit()
    app.config["HOSTBAY_TEST_TOKENS"] = tokens
    # real objects, so that generated requests also reach existing resources (not only 404s)
    app.config["HOSTBAY_TEST_REAL"] = {"service_uuid": svc.uuid, "ticket_uuid": ticket.uuid,
                                       "package_uuid": pkg.uuid, "customer_uuid": customer.uuid,
                                       "action": "restart"}
    return schemathesis.openapi.from_wsgi("/api/v1/openapi.json", app)


@pytest.mark.slow
def test_api_conforms_to_its_document(api_schema, app):
    from hypothesis import given

    ops = [r.ok() for r in api_schema.get_all_operations()]
    assert len(ops) >= 40, len(ops)
    calls = {"n": 0, "status": {}}
    for op in ops:
        @given(case=op.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            real = app.config["HOSTBAY_TEST_REAL"]
            variants = [dict(case.path_parameters or {})]
            if case.path_parameters and set(case.path_parameters) & set(real):
                variants.append({k: real.get(k, v) for k, v in case.path_parameters.items()})
            for params in variants:
                for kind, raw in app.config["HOSTBAY_TEST_TOKENS"].items():
                    case.path_parameters = params
                    case.headers = {**(case.headers or {}), **bearer(raw), "Idempotency-Key": f"fuzz-{kind}"}
                    resp = case.call_and_validate(checks=CHECKS)
                    calls["n"] += 1
                    calls["status"][resp.status_code] = calls["status"].get(resp.status_code, 0) + 1

        run()
    print(f"schemathesis: {len(ops)} operations, {calls['n']} calls, statuses {sorted(calls['status'].items())}")
    assert calls["n"] >= len(ops) * 3
