"""KVM virtualization through libvirt (``hostbay[kvm]``): the ``kvm`` VirtDriver and its nwfilter NetworkFilter.

libvirt-python is imported only when the driver talks to a host, so this plugin loads and lists its drivers on a
machine without it; using the driver there fails with a FatalDriverError that says what to install.
"""

from hostbay.core.hookspecs import hookimpl

from .driver import KvmDriver
from .netfilter import KvmNetworkFilter

__all__ = ["KvmDriver", "KvmNetworkFilter"]


@hookimpl
def hostbay_virt_drivers():
    return [KvmDriver]


@hookimpl
def hostbay_network_filters():
    return [KvmNetworkFilter]
