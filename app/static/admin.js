// Shared behaviour of the admin pages (no inline scripts: the CSP forbids them).
(function () {
  "use strict";
  // <form data-confirm="Cancel 12 runs?"> asks before it submits.
  document.addEventListener("submit", function (event) {
    var message = event.target.getAttribute("data-confirm");
    if (message && !window.confirm(message)) event.preventDefault();
  });
  // <input type="checkbox" data-select-all> ticks every name="ids" box of its form.
  document.addEventListener("change", function (event) {
    var box = event.target;
    if (box.hasAttribute("data-select-all")) {
      var boxes = box.form.querySelectorAll('input[type=checkbox][name="ids"]');
      for (var i = 0; i < boxes.length; i++) boxes[i].checked = box.checked;
    }
    // <select data-autosubmit> / <input data-autosubmit> submit their form on change.
    if (box.hasAttribute("data-autosubmit") && box.form) box.form.submit();
  });
})();
