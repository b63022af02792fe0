// Latency graphs of the public status page: uPlot (served by hostbay itself), data from /status/api/latency/.
(function () {
  "use strict";

  function draw(fig, range) {
    var box = fig.querySelector(".chart");
    var empty = fig.querySelector(".chart-empty");
    fetch(fig.dataset.latencyUrl + "?range=" + encodeURIComponent(range), {credentials: "omit"})
      .then(function (r) { return r.json(); })
      .then(function (d) {
        box.textContent = "";
        var has = d.latency_ms.some(function (v) { return v !== null; });
        empty.hidden = has;
        fig.dataset.points = String(d.t.length);
        if (!has || typeof uPlot === "undefined") { fig.dataset.drawn = "0"; return; }
        var opts = {
          width: Math.max(280, box.clientWidth || 600), height: 160,
          tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },  // the page speaks UTC
          scales: {x: {time: true}, y: {range: function (u, min, max) { return [0, Math.max(1, max * 1.15)]; }}},
          legend: {show: false},
          series: [{}, {label: "latency (ms)", stroke: "#2563eb", width: 2, fill: "rgba(37,99,235,0.12)",
                        spanGaps: false, points: {show: d.t.length < 100}}],
          axes: [{}, {size: 50}]
        };
        new uPlot(opts, [d.t, d.latency_ms], box);
        fig.dataset.drawn = "1";
      })
      .catch(function () { empty.hidden = false; fig.dataset.drawn = "0"; });
  }

  document.querySelectorAll("figure.graph[data-latency-url]").forEach(function (fig) {
    fig.querySelectorAll("button[data-range]").forEach(function (btn) {
      btn.addEventListener("click", function () {
        fig.querySelectorAll("button[data-range]").forEach(function (b) {
          b.setAttribute("aria-pressed", b === btn ? "true" : "false");
        });
        draw(fig, btn.dataset.range);
      });
    });
    draw(fig, "24h");
  });
})();
