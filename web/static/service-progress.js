// Live progress of a service's operations without a page reload. The page marks the container with
// data-progress-url; this polls it while an operation runs and rewrites the list and the state label. When the work
// is done, the page's other sections (actions, console, addresses, activity) are refreshed in place, so the
// customer sees what the server now allows without reloading.
(function () {
  "use strict";
  var delay = 2000;

  function render(list, ops) {
    while (list.firstChild) { list.removeChild(list.firstChild); }
    ops.slice(0, 3).forEach(function (op) {  // the latest few; older ones stay under "Older operations"
      var li = document.createElement("li");
      li.className = "op op-" + op.state;
      var title = document.createElement("strong");
      title.textContent = op.title;
      var bar = document.createElement("progress");
      bar.max = 100; bar.value = op.pct;
      bar.setAttribute("aria-label", op.title + " progress");
      var text = document.createElement("span");
      // a finished operation says what happened ("Stopped"), a running one how far it is ("40% Stopping")
      text.textContent = " " + (op.finished ? "" : op.pct + "% ") + op.text + (op.error ? " — " + op.error : "");
      li.appendChild(title); li.appendChild(document.createTextNode(" "));
      li.appendChild(bar); li.appendChild(text);
      list.appendChild(li);
    });
  }

  function refreshSections() {
    fetch(window.location.href, {credentials: "same-origin", headers: {"Accept": "text/html"}})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
        var main = document.getElementById("main");
        if (!fresh || !main) { return; }
        Array.prototype.forEach.call(fresh.querySelectorAll("script"), function (s) { s.remove(); });
        var focused = document.activeElement && document.activeElement.id;
        main.replaceChildren.apply(main, Array.prototype.slice.call(fresh.childNodes));
        if (focused && document.getElementById(focused)) { document.getElementById(focused).focus(); }
        start();
      })
      .catch(function () { /* the sections stay as they were; a reload shows them */ });
  }

  function start() {
    var box = document.querySelector("[data-progress-url]");
    if (!box || box.getAttribute("data-running") !== "1") { return; }
    var url = box.getAttribute("data-progress-url");
    var stateEl = document.querySelector("[data-service-state]");
    var list = box.querySelector("ul");

    function tick() {
      fetch(url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
        .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
        .then(function (data) {
          render(list, data.operations);
          if (stateEl) { stateEl.textContent = data.label; }
          var running = data.busy || data.operations.some(function (o) { return !o.finished; });
          if (running) { setTimeout(tick, delay); } else { refreshSections(); }
        })
        .catch(function () { setTimeout(tick, delay * 5); });
    }
    setTimeout(tick, delay);
  }
  start();
})();
