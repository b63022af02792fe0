"""hostbay: an open-source, plugin-based hosting framework."""

__version__ = "0.1.0"
