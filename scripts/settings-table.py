"""Rewrites the settings table of docs/operations.md from hostbay.core.config.SETTINGS (run after adding one)."""

import re
from pathlib import Path

from hostbay.core.config import SETTINGS

doc = Path(__file__).resolve().parent.parent / "docs" / "operations.md"
rows = ["| variable | default | meaning |", "|---|---|---|"]
rows += [f"| `{k}` | {('`' + d + '`') if d else '—'} | {desc} |" for k, (d, desc) in SETTINGS.items()]
text = doc.read_text()
text = re.sub(r"\| variable \| default \| meaning \|\n(?:\|.*\|\n)+", "\n".join(rows) + "\n", text, count=1)
doc.write_text(text)
