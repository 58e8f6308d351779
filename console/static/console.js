// Niceties of the Keyhole console; every page works without them.
// A button with data-copy="ID" copies the text of the element ID to the clipboard.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button[data-copy]").forEach(function (b) {
    var src = document.getElementById(b.dataset.copy);
    if (!src || !navigator.clipboard) {
      return;
    }
    b.hidden = false;
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(src.textContent.trim()).then(function () {
        b.textContent = "Copied";
      }, function () {
        b.textContent = "Copy failed: select the text";
      });
    });
  });
});
