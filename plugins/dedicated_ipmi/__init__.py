"""Dedicated servers from hardware inventory with IPMI power control (``hostbay[ipmi]``). Not implemented yet: this
plugin loads and contributes nothing."""
