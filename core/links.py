"""Links in what core writes (notices, payment return and webhook URLs). Core does not build web URLs: it names
the page (``"topup"``, ``"service"``, ``"payment"``, ``"webhook"``) and the web layer, which owns the routes,
installs the builder (``install(app, builder)`` in ``create_app``). Without a web layer (a bare worker in a test)
the builder falls back to no link at all rather than a guessed path."""

from __future__ import annotations

from typing import Callable

from flask import current_app

Builder = Callable[..., str]


def install(app, builder: Builder) -> None:
    app.extensions["hostbay.links"] = builder


def url(page: str, **params) -> str:
    """The absolute URL (on ``HOSTBAY_BASE_URL``) of ``page`` with ``params``."""
    builder = current_app.extensions.get("hostbay.links")
    if builder is None:
        raise LookupError("no web layer installed a link builder")
    return builder(page, **params)
