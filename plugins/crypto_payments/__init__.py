"""Crypto wallet top-ups through BTCPay Server and hosted processors. The gateways arrive with the crypto payments
work."""
