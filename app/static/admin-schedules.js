// The schedule form: show the fields of the chosen timing, and a live preview of the next
// fire times from GET /admin/schedules/preview while the timing is typed.
(function () {
  "use strict";
  var DEBOUNCE_MS = 250;
  var TIMING_FIELD = { interval: "every", crontab: "cron", clocked: "at" };
  var form = document.getElementById("schedule-form");
  if (!form) return;
  var kind = form.elements.kind;
  var description = document.getElementById("preview-description");
  var list = document.getElementById("preview-next");
  var timer = null;
  var sequence = 0;  // answers that arrive after a newer request started are dropped

  function showKindFields() {
    var rows = form.querySelectorAll("[data-kind]");
    for (var i = 0; i < rows.length; i++) {
      rows[i].hidden = rows[i].getAttribute("data-kind") !== kind.value;
    }
  }

  function query() {
    var params = new URLSearchParams();
    var field = TIMING_FIELD[kind.value];
    if (field) params.set(field, form.elements[field].value);
    ["tz", "start_at", "end_at"].forEach(function (name) {
      if (form.elements[name].value) params.set(name, form.elements[name].value);
    });
    return params.toString();
  }

  function show(data) {
    list.textContent = "";
    description.textContent = data.ok ? data.description : data.error;
    description.classList.toggle("error-text", !data.ok);
    if (!data.ok) return;
    var times = data.next_text || data.next;
    if (!times.length) {
      var none = document.createElement("li");
      none.textContent = "no fire left";
      list.appendChild(none);
    }
    times.forEach(function (text, i) {
      var item = document.createElement("li");
      var time = document.createElement("time");
      time.setAttribute("datetime", data.next[i]);
      time.textContent = text;
      item.appendChild(time);
      list.appendChild(item);
    });
  }

  function refresh() {
    var mine = ++sequence;
    fetch(form.getAttribute("data-preview-url") + "?" + query(), {
      headers: { Accept: "application/json" }, credentials: "same-origin"
    }).then(function (response) {
      if (!response.ok) throw new Error("HTTP " + response.status);
      return response.json();
    }).then(function (data) {
      if (mine === sequence) show(data);
    }).catch(function () {
      if (mine === sequence) show({ ok: false, error: "The preview is not available right now." });
    });
  }

  function schedule() {
    window.clearTimeout(timer);
    timer = window.setTimeout(refresh, DEBOUNCE_MS);
  }

  form.addEventListener("input", function (event) {
    if (event.target.hasAttribute("data-preview")) schedule();
  });
  kind.addEventListener("change", function () {
    showKindFields();
    schedule();
  });
  showKindFields();
  refresh();
})();
