/* TransferLab's only script besides htmx: progressive enhancements, every page works without it.

   Training form: the fine-tuning hint and placeholder follow the chosen base.

   Drag and drop: any <label class="dropzone"> (or element with that class) holding an
   <input type="file"> accepts files dropped on it and lists the chosen names in its
   .dropzone-files element. The form still posts the normal way. An input with data-max-files
   says "too many" as soon as the files are chosen and disables the form's submit button until
   fewer are chosen (the server still checks).

   Copy buttons: <button data-copy="ID" hidden> copies the text of the element with that id. They
   stay hidden without this script; where the clipboard is refused, the text is selected instead.

   Disclosure rows: <a data-toggle-row="ID" href="..."> shows and hides the (hidden) element with
   that id; without this script the link leads to a page that shows the same content.
*/
(function () {
  "use strict";

  function describe(zone, input) {
    var out = zone.querySelector(".dropzone-files");
    if (!out) return;
    var names = Array.prototype.map.call(input.files || [], function (f) { return f.name; });
    var max = parseInt(input.dataset.maxFiles, 10);
    var tooMany = max > 0 && names.length > max;
    if (tooMany) {
      out.textContent = names.length + " files chosen: at most " + max + " can be classified at a time. " +
        "Choose " + max + " or fewer, and send the others afterwards.";
    } else {
      out.textContent = names.length === 0 ? "" :
        names.length === 1 ? names[0] : names.length + " files: " + names.slice(0, 5).join(", ") + (names.length > 5 ? ", …" : "");
    }
    out.classList.toggle("is-error", tooMany);
    if (!out.id) out.id = (input.id || "files") + "-chosen";
    if (input.form && max > 0) {
      input.form.querySelectorAll('button[type="submit"]').forEach(function (button) {
        button.disabled = tooMany;
        if (tooMany) button.setAttribute("aria-describedby", out.id);
        else button.removeAttribute("aria-describedby");
      });
    }
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

  /* Copy buttons: the clipboard when the browser allows it, else the text selected for Ctrl+C. */
  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
  }

  function copyButton(button) {
    if (button.dataset.enhanced) return;
    button.dataset.enhanced = "1";
    var label = button.textContent;
    var timer = null;
    function say(text) {
      button.textContent = text;
      clearTimeout(timer);
      timer = setTimeout(function () { button.textContent = label; }, 2500);
    }
    function selectInstead(target) {
      selectText(target);
      var copied = false;
      try { copied = document.execCommand("copy"); } catch (error) { copied = false; }
      say(copied ? "Copied" : "Selected: press Ctrl+C");
    }
    button.addEventListener("click", function () {
      var target = document.getElementById(button.dataset.copy);
      if (!target) return;
      var text = target.textContent.trim();
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(function () { say("Copied"); }, function () { selectInstead(target); });
      } else {
        selectInstead(target);
      }
    });
    button.hidden = false;
  }

  /* Disclosure rows: the link becomes a button that shows the row it controls. */
  function toggleRow(link) {
    if (link.dataset.enhanced) return;
    link.dataset.enhanced = "1";
    link.setAttribute("role", "button");
    link.setAttribute("aria-expanded", "false");
    link.addEventListener("click", function (event) {
      var row = document.getElementById(link.dataset.toggleRow);
      if (!row) return;
      event.preventDefault();
      row.hidden = !row.hidden;
      link.setAttribute("aria-expanded", row.hidden ? "false" : "true");
    });
    link.addEventListener("keydown", function (event) {
      if (event.key === " ") { event.preventDefault(); link.click(); }  /* a button answers Space too */
    });
  }

  function enhanceAll(root) {
    (root || document).querySelectorAll(".dropzone").forEach(enhance);
    (root || document).querySelectorAll("select[data-fine-tune-hints]").forEach(followBase);
    (root || document).querySelectorAll("button[data-copy]").forEach(copyButton);
    (root || document).querySelectorAll("a[data-toggle-row]").forEach(toggleRow);
  }

  document.addEventListener("DOMContentLoaded", function () { enhanceAll(document); });
  document.addEventListener("htmx:load", function (event) { enhanceAll(event.target); });
})();
