// The run page: poll /admin/runs/<id>/progress every second until the run reaches a final
// state, and show its progress, state and the actions that apply, without a reload.
(function () {
  "use strict";
  var POLL_MS = 1000;
  var live = document.querySelector("[data-progress-url]");
  if (!live) return;
  var url = live.getAttribute("data-progress-url");
  var bar = document.getElementById("run-bar");
  var percent = document.getElementById("run-percent");
  var status = document.getElementById("run-status");
  var left = document.getElementById("run-left");
  var badge = document.getElementById("run-state");
  var error = document.getElementById("run-poll-error");

  function show(data) {
    bar.value = data.percent;
    bar.textContent = data.percent + "%";
    percent.textContent = data.percent + "%";
    status.textContent = data.message || "";
    left.textContent = data.seconds_left === null ? "" : "about " + Math.round(data.seconds_left) + " s left";
    badge.className = "badge " + data.state;
    badge.textContent = data.state;
    live.setAttribute("data-final", data.final ? "true" : "false");
    // Each action form lists the states it applies in.
    var forms = document.querySelectorAll("form[data-states]");
    for (var i = 0; i < forms.length; i++) {
      forms[i].hidden = forms[i].getAttribute("data-states").split(" ").indexOf(data.state) < 0;
    }
    error.textContent = "";
    return !data.final;
  }

  function poll() {
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (resp) {
        if (!resp.ok) throw new Error("progress check failed (HTTP " + resp.status + ")");
        return resp.json();
      })
      .then(function (data) {
        if (show(data)) setTimeout(poll, POLL_MS);
      })
      .catch(function (err) {
        error.textContent = err.message + "; trying again...";
        setTimeout(poll, POLL_MS * 2);
      });
  }

  if (live.getAttribute("data-final") !== "true") setTimeout(poll, POLL_MS);
})();
