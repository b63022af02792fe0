"""Ledger throughput: idempotent credits and conditional debits, single connection."""

from __future__ import annotations

import os
import tempfile
import time


def _app():
    from hostbay.core.db import db
    from hostbay.web import create_app

    url = os.environ.get("HOSTBAY_BENCH_DATABASE_URL") or f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True, "HOSTBAY_JOBS": "manual",
                      "INSTANCE_PATH": tempfile.mkdtemp(), "SECRET_KEY": "bench"})
    with app.app_context():
        db.drop_all()
        db.create_all()
    return app, url.split(":")[0]


def ledger_posts():
    from hostbay.core import ledger
    from hostbay.core.accounts import create_user
    from hostbay.core.db import db

    app, backend = _app()
    n = 2000
    with app.app_context():
        user = create_user("bench@example.test", "bench-password-1")
        db.session.commit()
        t0 = time.perf_counter()
        for i in range(n):
            ledger.credit(user.id, 100, kind="topup", key=f"b:{i}", description="Bench")
            ledger.debit(user.id, 50, kind="order", key=f"d:{i}", description="Bench")
            db.session.commit()
        elapsed = time.perf_counter() - t0
        replay_t0 = time.perf_counter()
        for i in range(n):
            ledger.credit(user.id, 100, kind="topup", key=f"b:{i}", description="Bench")
        db.session.commit()
        replay = time.perf_counter() - replay_t0
        assert ledger.balance_cents(user.id) == ledger.ledger_sum_cents(user.id) == n * 50
    return [
        {"case": f"ledger credit+debit+commit ({backend})", "metric": "pairs/s", "value": round(n / elapsed),
         "unit": "1/s"},
        {"case": f"ledger replay of a known key ({backend})", "metric": "replays/s", "value": round(n / replay),
         "unit": "1/s"},
    ]


CASES = [ledger_posts]
