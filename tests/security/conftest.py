"""Helpers for security tests: building a URL for any rule of the app's url_map."""

from __future__ import annotations

import uuid as uuid_mod

import pytest

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


def rule_url(app, rule, values: dict | None = None) -> str:
    """A URL for ``rule`` with placeholder values for its arguments (``values`` wins)."""
    from werkzeug.routing import IntegerConverter, UUIDConverter

    args = {}
    for name in rule.arguments:
        conv = rule._converters.get(name)
        if values and name in values:
            args[name] = values[name]
        elif isinstance(conv, IntegerConverter):
            args[name] = 1
        elif isinstance(conv, UUIDConverter) or "uuid" in name:
            args[name] = str(uuid_mod.uuid4())
        else:
            args[name] = "x"
    with app.test_request_context():
        return app.url_map.bind("localhost").build(rule.endpoint, args, method=None, force_external=False)


@pytest.fixture
def url_for_rule(app):
    return lambda rule, values=None: rule_url(app, rule, values)
