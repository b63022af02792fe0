"""Crypto wallet top-ups: BTCPay Server (Greenfield API, self-hosted) and NOWPayments (hosted processor).

The gateways only speak to their providers; hostbay core (``hostbay.core.payments``) owns payment records,
deduplication, state mapping and the exactly-once wallet credit.
"""

from hostbay.core.hookspecs import hookimpl

from .btcpay import BTCPayGateway
from .nowpayments import NOWPaymentsGateway

__all__ = ["BTCPayGateway", "NOWPaymentsGateway"]


@hookimpl
def hostbay_payment_gateways():
    return [BTCPayGateway, NOWPaymentsGateway]
