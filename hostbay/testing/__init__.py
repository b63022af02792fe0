"""The plugin author kit: fake drivers, conformance suites and pytest fixtures (see docs/plugins.md).

The fixtures are registered as a pytest plugin (entry point ``pytest11``) when hostbay is installed:
``app``, ``client``, ``db``, ``registry``, ``register_plugin``, ``job_runner``, ``running_workers`` (real
``hostbay worker`` processes on Redis), ``clock``, ``make_user``, ...

Names are imported lazily so that the fake drivers (the ``fake`` plugin, used by the embedded demo) load on an
installation without pytest.
"""

from importlib import import_module

_EXPORTS = {
    "VirtDriverConformance": "conformance", "PowerDriverConformance": "conformance",
    "PaymentGatewayConformance": "conformance", "NetworkFilterConformance": "conformance",
    "DnsBackendConformance": "conformance",
    "FakeVirtDriver": "fakes", "FakePowerDriver": "fakes", "FakePaymentGateway": "fakes",
    "FakeNetworkFilter": "fakes", "FakeDns": "fakes",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
