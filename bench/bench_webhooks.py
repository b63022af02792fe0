"""Webhook throughput for the bench runner (``python bench/run.py webhooks``); the cases live in webhooks.py."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from webhooks import CASES  # noqa: E402,F401
