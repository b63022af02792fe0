"""hostbay.core: the domain (accounts, money, services, jobs) and the plugin contract."""
