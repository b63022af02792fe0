"""Shared test helpers; the fixtures themselves come from hostbay.testing (the plugin author kit)."""
