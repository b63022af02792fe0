"""The staff node pages share one settings macro: the add page has one form per driver with unique field ids, and
the edit page shows its sections once (its title is the node's name only)."""

from __future__ import annotations

import re
from collections import Counter

from hostbay.testing.pytest_plugin import login


def test_add_and_edit_forms_share_the_settings_fields(app, client, make_user, make_node, db):
    admin = make_user(role="admin")
    node = make_node(name="sim-9", driver="fake")
    db.session.commit()
    login(client, admin)
    index = client.get("/staff/nodes/").get_data(as_text=True)
    ids = Counter(re.findall(r'\sid="([^"]+)"', index))
    assert ids and max(ids.values()) == 1, [i for i, n in ids.items() if n > 1]
    for label_for in re.findall(r'<label for="([^"]+)"', index):
        assert label_for in ids  # every label names its own field
    page = client.get(f"/staff/nodes/{node.id}").get_data(as_text=True)
    assert re.search(r"<title>\s*sim-9 · Nodes · Staff · hostbay\s*</title>", page)
    assert page.count("<h2>Capacity and use</h2>") == 1 and page.count("<h2>Services on this node</h2>") == 1
    assert "Save and test the connection" in page
