// The runs list: the confirmation of a bulk button names how many runs are ticked.
(function () {
  "use strict";
  var form = document.getElementById("bulk-selected");
  if (!form) return;
  form.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-confirm-verb]");
    if (!button) return;
    var n = form.querySelectorAll('input[type=checkbox][name="ids"]:checked').length;
    // admin.js asks with the form's data-confirm when the form submits, right after this.
    form.setAttribute("data-confirm", n === 0 ? "No runs are selected. Send anyway?" :
      button.getAttribute("data-confirm-verb") + " the " + n + " selected run" + (n === 1 ? "" : "s") + "?");
  });
})();
