// Live status of a top-up: polls the status endpoint until the payment reaches a final state.
(function () {
  "use strict";
  var box = document.getElementById("topup-status");
  if (!box || box.getAttribute("data-final") === "true") { return; }
  var url = box.getAttribute("data-status-url");
  var label = document.getElementById("topup-label");
  var balance = document.getElementById("topup-balance");
  var wait = document.getElementById("topup-wait");
  var checkout = document.getElementById("topup-checkout");
  var delay = 3000;
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
      .then(function (data) {
        var changed = box.getAttribute("data-status") !== data.status;
        label.textContent = data.label;
        balance.textContent = data.balance;
        box.setAttribute("data-status", data.status);
        if (data.final) {
          box.setAttribute("data-final", "true");
          if (wait) { wait.hidden = true; }
          if (checkout) { checkout.hidden = true; }  // nothing is left to pay
          return;
        }
        if (checkout && data.status !== "pending") { checkout.hidden = true; }
        // confirmations take minutes: ask less often while nothing changes
        delay = changed ? 3000 : Math.min(Math.round(delay * 1.3), 30000);
        setTimeout(poll, delay);
      })
      .catch(function () { delay = Math.min(delay * 2, 60000); setTimeout(poll, delay); });
  }
  setTimeout(poll, delay);
}());
