"""Dedicated servers over IPMI (``hostbay[ipmi]``): the ``ipmi`` power driver (ipmitool, RMCP+ lanplus).

The hardware inventory, matching, the datacenter task queue and the dedicated lifecycle are core
(``hostbay.core.inventory``, ``hostbay.core.dctasks``, ``hostbay.core.dedicated``); this plugin drives the BMCs.
See docs/dedicated.md.
"""

from hostbay.core.hookspecs import hookimpl

from .ipmitool import IpmiPowerDriver


@hookimpl
def hostbay_power_drivers():
    return [IpmiPowerDriver]
