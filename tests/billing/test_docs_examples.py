"""Every worked example in docs/billing.md is checked here: the formula, and the same change made through the
billing engine against a real wallet."""

import re
from datetime import datetime
from pathlib import Path

import pytest

from hostbay.core import billing, ledger, services
from hostbay.core.catalog import add_cycle
from hostbay.core.money import prorata_cents, to_cents

DOC = Path(__file__).resolve().parents[2] / "docs" / "billing.md"


def _examples():
    rows = []
    in_table = False
    for line in DOC.read_text().splitlines():
        if line.startswith("| example |"):
            in_table = True
            continue
        if in_table:
            if not line.startswith("|"):
                break
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set(cells[0]) <= {"-"}:
                continue
            rows.append(cells)
    return rows


def _when(text):
    return datetime.strptime(text, "%Y-%m-%d %H:%M")


def _money(text):
    neg = text.startswith("-")
    cents = to_cents(text.lstrip("-").lstrip("$"))
    return -cents if neg else cents


EXAMPLES = _examples()


def test_the_doc_has_the_required_examples():
    names = " ".join(r[0] for r in EXAMPLES)
    assert len(EXAMPLES) >= 4
    assert "upgrade at half the cycle" in names and "downgrade credit" in names and "leap day" in names
    row = next(r for r in EXAMPLES if "half the cycle" in r[0])
    assert (row[5], row[6], row[7]) == ("$10.00", "$20.00", "$5.00")
    leap = next(r for r in EXAMPLES if "leap day" in r[0])
    start, end = _when(leap[2]), _when(leap[4])
    assert (end - start).days == 366 and leap[1] == "annual"


@pytest.mark.parametrize("row", EXAMPLES, ids=[r[0] for r in EXAMPLES])
def test_example_formula(row):
    _, cycle, start, at, renews, old, new, amount = row
    assert add_cycle(_when(start), cycle) == _when(renews)
    assert prorata_cents(_money(old), _money(new), _when(at), _when(start), _when(renews)) == _money(amount)


@pytest.mark.parametrize("row", EXAMPLES, ids=[r[0] for r in EXAMPLES])
def test_example_through_the_engine(row, make_user, make_package, make_image, clock, finish_job):
    name, cycle, start, at, renews, old, new, amount = row
    months = {"monthly": 1, "quarterly": 3, "semiannual": 6, "annual": 12}[cycle]
    user = make_user(balance_cents=100000)
    current = make_package(disk_gib=20)
    target = make_package(disk_gib=20)
    current.prices[[p.cycle for p in current.prices].index(cycle)].price_cents = _money(old)
    target.prices[[p.cycle for p in target.prices].index(cycle)].price_cents = _money(new)
    clock.set(_when(start))
    svc = finish_job(billing.place_order(user, current, cycle, "example.test", make_image(), key=name))
    assert svc.renews_at == _when(renews) and months
    paid = ledger.balance_cents(user.id)
    clock.set(_when(at))
    assert billing.quote_change(svc, target).amount_cents == _money(amount)
    billing.change_package(svc, target, user, key="change")
    assert ledger.balance_cents(user.id) == paid - _money(amount)
    assert svc.state == services.RESIZING and svc.renews_at == _when(renews) and svc.price_cents == _money(new)


def test_rows_five_and_six_net_to_zero():
    up = next(r for r in EXAMPLES if "half a cent" in r[0])
    down = next(r for r in EXAMPLES if "reverse downgrade" in r[0])
    assert _money(up[7]) + _money(down[7]) == 0
    assert re.match(r"^\$\d", up[7]) and down[7].startswith("-$")
