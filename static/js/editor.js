/* Small behaviours of the admin's forms that htmx attributes cannot express. Loaded on
   every page and inert where nothing asks for it (no inline script: the CSP forbids it).

   - A form marked `data-unsaved-warning` warns before its unsaved changes are left: the
     browser's own dialog on closing or reloading the tab, and on in-app links and forms
     too (those are boosted by htmx, which the browser would not ask about: while changes
     are unsaved they load as plain navigations, so it does). Saving the form is no loss;
     a form re-rendered with errors comes back with `data-dirty` (its text is not saved).
   - The editor's media picker (`dialog[data-insert-into]`, filled by htmx) inserts the
     chosen file's Markdown (`data-insert-markdown`) at the cursor of the text. */
(function () {
  "use strict";

  var GUARDED = "form[data-unsaved-warning]";

  function unsaved() {
    return document.querySelector(GUARDED + "[data-dirty]");
  }

  function showState(form) {
    var state = form.querySelector("[data-unsaved-status]");
    if (state) {
      state.textContent = form.hasAttribute("data-dirty") ? "Unsaved changes" : "";
    }
  }

  function markDirty(event) {
    var form = event.target.form || (event.target.closest && event.target.closest(GUARDED));
    if (form && form.matches(GUARDED) && !form.hasAttribute("data-dirty")) {
      form.setAttribute("data-dirty", "");
      showState(form);
    }
  }

  document.addEventListener("input", markDirty);
  document.addEventListener("change", markDirty);

  window.addEventListener("beforeunload", function (event) {
    if (unsaved()) {
      event.preventDefault();
      event.returnValue = "";
    }
  });

  function sendsHtmxRequest(element) {
    return ["hx-get", "hx-post", "hx-put", "hx-patch", "hx-delete"].some(function (name) {
      return element.hasAttribute(name);
    });
  }

  // Capture phase: runs before htmx's boost handler on the link, which never sees the click.
  document.addEventListener("click", function (event) {
    if (!unsaved() || event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    var link = event.target.closest && event.target.closest("a[href]");
    if (!link || sendsHtmxRequest(link) || link.hasAttribute("download")) return;
    if ((link.getAttribute("target") || "_self") !== "_self") return;
    if (link.getAttribute("href").charAt(0) === "#") return;
    event.stopPropagation();
  }, true);

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches(GUARDED)) {
      form.removeAttribute("data-dirty");  // saving: nothing is lost
      showState(form);
      return;
    }
    if (unsaved() && form.getAttribute("method") !== "dialog" && !sendsHtmxRequest(form)) {
      event.stopPropagation();  // a plain submission, so the browser asks first
    }
  }, true);

  // The media picker -------------------------------------------------------------------

  document.addEventListener("htmx:afterSwap", function (event) {
    var picker = event.target.closest && event.target.closest("dialog[data-insert-into]");
    if (picker && !picker.open) {
      picker.showModal();
      var search = picker.querySelector("input[type=search]");
      if (search) search.focus();
    }
  });

  document.addEventListener("click", function (event) {
    var choice = event.target.closest && event.target.closest("[data-insert-markdown]");
    var picker = choice && choice.closest("dialog[data-insert-into]");
    if (!picker) return;
    var text = document.getElementById(picker.getAttribute("data-insert-into"));
    if (!text) return;
    var markdown = choice.getAttribute("data-insert-markdown");
    picker.close();
    text.focus();
    text.setRangeText(markdown, text.selectionStart, text.selectionEnd, "end");
    // As typing would: marks the form unsaved and refreshes the preview.
    text.dispatchEvent(new Event("input", { bubbles: true }));
  });
})();
