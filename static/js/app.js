/* TransferLab's only script besides htmx: progressive enhancements, every page works without it.

   Training form: the fine-tuning hint and placeholder follow the chosen base.

   Drag and drop: any <label class="dropzone"> (or element with that class) holding an
   <input type="file"> accepts files dropped on it and lists the chosen names in its
   .dropzone-files element. The form still posts the normal way.
*/
(function () {
  "use strict";

  function describe(zone, input) {
    var out = zone.querySelector(".dropzone-files");
    if (!out) return;
    var names = Array.prototype.map.call(input.files || [], function (f) { return f.name; });
    out.textContent = names.length === 0 ? "" :
      names.length === 1 ? names[0] : names.length + " files: " + names.slice(0, 5).join(", ") + (names.length > 5 ? ", …" : "");
  }

  function enhance(zone) {
    if (zone.dataset.enhanced) return;
    zone.dataset.enhanced = "1";
    var input = zone.querySelector('input[type="file"]');
    if (!input) return;
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("is-dragover");
      });
    });
    ["dragleave", "drop"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("is-dragover"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      input.files = event.dataTransfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    });
    input.addEventListener("change", function () { describe(zone, input); });
  }

  /* Training form: the fine-tuning hint follows the chosen base (its layer count and default layer). */
  function followBase(select) {
    if (select.dataset.enhanced) return;
    select.dataset.enhanced = "1";
    var form = select.form;
    var hint = form && form.querySelector("[data-fine-tune-hint]");
    var from = form && form.querySelector('input[name="fine_tune_from"]');
    function update() {
      var option = select.options[select.selectedIndex];
      if (!option) return;
      var layers = option.dataset.layers, start = option.dataset.defaultFrom;
      var name = option.textContent.split(" (")[0];
      if (hint) hint.textContent = layers ? name + " has " + layers + " layers without its head; fine-tuning starts at layer " + start + " unless you say otherwise." : "";
      if (from) { from.placeholder = start ? "default: " + start : ""; if (layers) from.max = layers - 1; }
    }
    select.addEventListener("change", update);
    update();
  }

  function enhanceAll(root) {
    (root || document).querySelectorAll(".dropzone").forEach(enhance);
    (root || document).querySelectorAll("select[data-fine-tune-hints]").forEach(followBase);
  }

  document.addEventListener("DOMContentLoaded", function () { enhanceAll(document); });
  document.addEventListener("htmx:load", function (event) { enhanceAll(event.target); });
})();
