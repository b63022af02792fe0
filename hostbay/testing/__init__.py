"""The plugin author kit: fake drivers, conformance suites and pytest fixtures (see docs/plugins.md).

The fixtures are registered as a pytest plugin (entry point ``pytest11``) when hostbay is installed:
``app``, ``client``, ``db``, ``registry``, ``register_plugin``, ``job_runner``, ``clock``, ``make_user``.
"""

from .conformance import (DnsBackendConformance, NetworkFilterConformance, PaymentGatewayConformance,  # noqa: F401
                          PowerDriverConformance, VirtDriverConformance)
from .fakes import FakeDns, FakeNetworkFilter, FakePaymentGateway, FakePowerDriver, FakeVirtDriver  # noqa: F401
