// Live progress of a service's operations without a page reload. The page marks the container with
// data-progress-url; this polls it while an operation runs and rewrites the list and the state label.
(function () {
  "use strict";
  var box = document.querySelector("[data-progress-url]");
  if (!box) { return; }
  var url = box.getAttribute("data-progress-url");
  var stateEl = document.querySelector("[data-service-state]");
  var list = box.querySelector("ul");
  var delay = 2000;

  function render(ops) {
    while (list.firstChild) { list.removeChild(list.firstChild); }
    ops.forEach(function (op) {
      var li = document.createElement("li");
      li.className = "op op-" + op.state;
      var title = document.createElement("strong");
      title.textContent = op.title;
      var bar = document.createElement("progress");
      bar.max = 100; bar.value = op.pct;
      bar.setAttribute("aria-label", op.title + " progress");
      var text = document.createElement("span");
      text.textContent = " " + op.pct + "% " + op.text + (op.error ? " — " + op.error : "");
      li.appendChild(title); li.appendChild(document.createTextNode(" "));
      li.appendChild(bar); li.appendChild(text);
      list.appendChild(li);
    });
  }

  function tick() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) {
        render(data.operations);
        if (stateEl) { stateEl.textContent = data.label; }
        var running = data.busy || data.operations.some(function (o) { return !o.finished; });
        if (running) { setTimeout(tick, delay); }
      })
      .catch(function () { setTimeout(tick, delay * 5); });
  }
  if (box.getAttribute("data-running") === "1") { setTimeout(tick, delay); }
})();
