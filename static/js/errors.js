/* When an htmx request fails, say so where the person is looking.

   htmx swaps only 2xx answers into the page, so a refused or failed button would seem to do
   nothing. TransferLab answers an htmx request's error with a one-line message marked
   [data-request-error] (webapp/htmx.py); other answers (a proxy's error page, an empty 405) get a
   sentence for their status, and no answer at all (network down, server stopped) says so. The
   message goes into #request-error (base.html), with a reload link when reloading is the fix.
   A session that ended never gets here: the server sends the whole page to log in (HX-Redirect).
*/
(function () {
  "use strict";

  var NETWORK = "TransferLab could not be reached. Check the network connection (or whether the server is running), then try again.";

  function byStatus(status) {
    if (status === 401 || status === 403) return "This page is out of date, or you are no longer logged in. Reload the page and try again.";
    if (status === 404) return "What this acts on is gone: it may have been deleted. Reload the page to see what is there now.";
    if (status === 413) return "What you sent is larger than this server accepts. Send fewer or smaller files at a time.";
    if (status >= 500) return "The server could not answer (error " + status + "). Try again in a moment; if it keeps happening, tell your administrator.";
    return "The server refused this request (error " + status + "). Reload the page and try again.";
  }

  function messageOf(xhr) {
    var type = xhr.getResponseHeader("Content-Type") || "";
    if (type.indexOf("text/html") === 0 && xhr.responseText) {
      var found = new DOMParser().parseFromString(xhr.responseText, "text/html").querySelector("[data-request-error]");
      if (found) return { text: found.textContent.replace(/\s+/g, " ").trim(), reload: found.hasAttribute("data-reload") };
    }
    return { text: byStatus(xhr.status), reload: xhr.status === 401 || xhr.status === 403 || xhr.status === 404 };
  }

  function hide() {
    var box = document.getElementById("request-error");
    if (!box) return;
    box.hidden = true;
    box.textContent = "";
    delete box.dataset.kind;
  }

  function show(text, reload, kind) {
    var box = document.getElementById("request-error");
    if (!box) return;
    if (!box.hidden && box.dataset.text === text) return; // a poll failing again: no new announcement
    box.textContent = "";
    box.dataset.kind = kind;
    box.dataset.text = text;
    var p = document.createElement("p");
    p.textContent = text;
    box.appendChild(p);
    if (reload) {
      var again = document.createElement("a");
      again.className = "button small";
      again.href = window.location.href;
      again.textContent = "Reload the page";
      box.appendChild(again);
    }
    var close = document.createElement("button");
    close.type = "button";
    close.className = "button small ghost";
    close.textContent = "Dismiss";
    close.addEventListener("click", hide);
    box.appendChild(close);
    box.hidden = false;
  }

  document.addEventListener("htmx:responseError", function (event) {
    var found = messageOf(event.detail.xhr);
    show(found.text, found.reload, "response");
  });
  document.addEventListener("htmx:sendError", function () { show(NETWORK, false, "network"); });
  document.addEventListener("htmx:afterRequest", function (event) {
    // An answer came after all: the network message no longer holds.
    var box = document.getElementById("request-error");
    var xhr = event.detail.xhr;
    if (box && box.dataset.kind === "network" && xhr && xhr.status > 0) hide();
  });
})();
