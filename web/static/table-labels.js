// On narrow screens every table in the page becomes stacked cards, each cell prefixed with its column's name
// (hostbay.css: td[data-label]::before). Cells whose template did not name the column get it from the header.
(function () {
  var each = function (list, fn) { Array.prototype.forEach.call(list, fn); };
  each(document.querySelectorAll("main table"), function (table) {
    var head = table.tHead && table.tHead.rows[0];
    if (!head) return;
    var names = [];
    each(head.cells, function (th) {
      for (var i = 0; i < (th.colSpan || 1); i++) names.push(th.textContent.trim());
    });
    each(table.tBodies, function (body) {
      each(body.rows, function (row) {
        var col = 0;
        each(row.cells, function (cell) {
          var name = names[col];
          if (name && !cell.getAttribute("data-label")) cell.setAttribute("data-label", name);
          col += cell.colSpan || 1;
        });
      });
    });
  });
})();
