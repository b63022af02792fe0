"""Fixtures for the payment tests: the providers' stand-in APIs on loopback and configured gateways."""

from __future__ import annotations

import pytest

from hostbay.plugins.crypto_payments.tests.crypto_standins import BTCPayStandIn, NOWPaymentsStandIn


@pytest.fixture(scope="session")
def btcpay_api():
    srv = BTCPayStandIn()
    yield srv
    srv.close()


@pytest.fixture(scope="session")
def np_api():
    srv = NOWPaymentsStandIn()
    yield srv
    srv.close()


@pytest.fixture
def gateways(app, db, btcpay_api, np_api, make_user):
    """Both gateways configured against the stand-ins and enabled (saved as staff would, through core)."""
    from hostbay.core import payments

    admin = make_user(role="admin")
    payments.save_gateway_config("btcpay", btcpay_api.settings(), True, admin)
    payments.save_gateway_config("nowpayments", np_api.settings(), True, admin)
    db.session.commit()
    return {"btcpay": btcpay_api, "nowpayments": np_api}


class Credits:
    """Counts hostbay_wallet_credited calls."""

    def __init__(self):
        self.calls = []

    from hostbay.core.hookspecs import hookimpl as _hookimpl

    @_hookimpl
    def hostbay_wallet_credited(self, user, entry):
        self.calls.append((user.id, entry.amount_cents, entry.idempotency_key))


@pytest.fixture
def credits(register_plugin):
    c = Credits()
    with register_plugin(c, name="credit-counter"):
        yield c
