"""The status page's poller (static/topup.js) run under Node with a minimal DOM, fetch and timer stand-in: it
updates the label and balance from the status endpoint and stops once the payment is final."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parents[2] / "web" / "static" / "topup.js"

HARNESS = r"""
const fs = require('fs');
const answers = JSON.parse(process.argv[3]);
const els = {};
function el(id, attrs) { els[id] = {id, attrs: Object.assign({}, attrs), textContent: '', hidden: false,
  getAttribute(k) { return this.attrs[k]; }, setAttribute(k, v) { this.attrs[k] = String(v); }}; return els[id]; }
el('topup-status', {'data-status-url': '/panel/topup/u/status', 'data-final': 'false', 'data-status': 'pending'});
el('topup-label'); el('topup-balance'); el('topup-wait');
const timers = []; const fetched = [];
global.document = { getElementById: id => els[id] || null };
global.setTimeout = (fn, ms) => { timers.push([fn, ms]); };
global.fetch = (url, opts) => { fetched.push([url, opts.credentials]); const a = answers.shift();
  return Promise.resolve({ ok: true, status: 200, json: () => Promise.resolve(a) }); };
eval(fs.readFileSync(process.argv[2], 'utf8'));
(async () => {
  const seen = [];
  while (timers.length) { const [fn, ms] = timers.shift(); fn(); await new Promise(r => setImmediate(r));
    await new Promise(r => setImmediate(r)); seen.push([ms, els['topup-label'].textContent]); }
  console.log(JSON.stringify({seen, fetched, final: els['topup-status'].attrs['data-final'],
    balance: els['topup-balance'].textContent, waitHidden: els['topup-wait'].hidden, left: answers.length}));
})();
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_poller_updates_and_stops_when_final(tmp_path):
    answers = [
        {"status": "pending", "label": "Waiting for your payment", "final": False, "balance": "$0.00"},
        {"status": "confirming", "label": "Payment seen", "final": False, "balance": "$0.00"},
        {"status": "confirming", "label": "Payment seen", "final": False, "balance": "$0.00"},
        {"status": "credited", "label": "Paid: added to your wallet", "final": True, "balance": "$25.00"},
        {"status": "credited", "label": "never asked", "final": True, "balance": "$25.00"},
    ]
    harness = tmp_path / "harness.js"
    harness.write_text(HARNESS)
    out = subprocess.run(["node", str(harness), str(JS), json.dumps(answers)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    labels = [label for _ms, label in res["seen"]]
    assert labels == ["Waiting for your payment", "Payment seen", "Payment seen", "Paid: added to your wallet"]
    assert res["final"] == "true" and res["balance"] == "$25.00" and res["waitHidden"] is True
    assert res["left"] == 1  # stopped polling after the final answer
    assert all(url == "/panel/topup/u/status" and cred == "same-origin" for url, cred in res["fetched"])
    delays = [ms for ms, _label in res["seen"]]
    assert delays[0] == 3000 and delays[3] > delays[2]  # backs off while nothing changes
