// Starts Swagger UI on the API viewer page (kept out of the page so the CSP needs no 'unsafe-inline').
(function () {
  var el = document.getElementById("swagger-ui");
  if (!el || typeof SwaggerUIBundle === "undefined") { return; }
  SwaggerUIBundle({ url: el.getAttribute("data-spec-url"), dom_id: "#swagger-ui", deepLinking: true });
})();
