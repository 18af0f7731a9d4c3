// Starts Swagger UI on /docs (a file, not an inline script: the page's policy allows only
// this server's own scripts). The document is /openapi.json of the same server.
"use strict";
window.ui = SwaggerUIBundle({
  url: new URL("openapi.json", document.baseURI).href,
  dom_id: "#swagger-ui",
  deepLinking: true,
  layout: "BaseLayout",
  presets: [SwaggerUIBundle.presets.apis],
  // No call to validator.swagger.io: the page talks to this server only.
  validatorUrl: null,
  // "Authorize" keeps the bearer token only for this tab.
  persistAuthorization: false,
  tryItOutEnabled: false,
});
