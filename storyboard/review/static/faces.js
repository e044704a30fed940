// The face detailer's boxes over a panel's picture (templates/_render.html): each box's place, in
// percent of the picture, comes in data attributes; the page's CSP forbids inline style attributes,
// so the style is set here, on load and after each htmx swap.
"use strict";
(function () {
  function place(root) {
    root.querySelectorAll(".face-box").forEach(function (box) {
      box.style.left = box.dataset.left + "%";
      box.style.top = box.dataset.top + "%";
      box.style.width = box.dataset.width + "%";
      box.style.height = box.dataset.height + "%";
    });
  }
  document.addEventListener("DOMContentLoaded", function () { place(document); });
  document.addEventListener("htmx:load", function (e) { place(e.target); });
})();
