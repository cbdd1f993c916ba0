// The seed's long-task demo: start runs, poll /status/<id> every 2 s until a final state.
(function () {
  "use strict";
  var POLL_MS = 2000;
  var ACTIVE = { PENDING: true, PROGRESS: true, RETRY: true };
  var token = document.querySelector('meta[name="csrf-token"]').content;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text) node.textContent = text;
    return node;
  }

  function addJobBlock() {
    var block = el("div", "job");
    var bar = el("div", "bar");
    bar.appendChild(el("div"));
    var line = el("div", "line");
    line.appendChild(el("span", "percent", "0%"));
    line.appendChild(el("span", "status", "..."));
    line.appendChild(el("span", "result"));
    block.appendChild(bar);
    block.appendChild(line);
    block.appendChild(el("div", "error"));
    document.getElementById("progress").appendChild(block);
    return block;
  }

  function show(block, data) {
    var total = data.total || 1;
    var percent = Math.max(0, Math.min(100, Math.round((data.current * 100) / total)));
    block.querySelector(".bar > div").style.width = percent + "%";
    block.querySelector(".percent").textContent = percent + "%";
    block.querySelector(".status").textContent = data.status || "";
    block.querySelector(".error").textContent = "";
    if (!ACTIVE[data.state]) {
      var text = "result" in data ? "Result: " + JSON.stringify(data.result) : "Result: " + data.state;
      block.querySelector(".result").textContent = text;
      if (data.state !== "SUCCESS") block.classList.add("failed");
      return false;
    }
    return true;
  }

  function poll(block, url) {
    fetch(url, { headers: { Accept: "application/json" } })
      .then(function (resp) {
        if (!resp.ok) throw new Error("status check failed (HTTP " + resp.status + ")");
        return resp.json();
      })
      .then(function (data) {
        if (show(block, data)) setTimeout(function () { poll(block, url); }, POLL_MS);
      })
      .catch(function (err) {
        block.querySelector(".error").textContent = err.message + "; retrying...";
        setTimeout(function () { poll(block, url); }, POLL_MS);
      });
  }

  function start() {
    var block = addJobBlock();
    fetch("/longtask", { method: "POST", headers: { "X-CSRFToken": token, Accept: "application/json" } })
      .then(function (resp) {
        if (resp.status !== 202) {
          return resp.json().catch(function () { return {}; }).then(function (body) {
            throw new Error(body.message || "could not start the task (HTTP " + resp.status + ")");
          });
        }
        poll(block, resp.headers.get("Location"));
      })
      .catch(function (err) {
        block.classList.add("failed");
        block.querySelector(".status").textContent = "";
        block.querySelector(".result").textContent = "Result: FAILURE";
        block.querySelector(".error").textContent = err.message;
      });
  }

  document.getElementById("start-bg-job").addEventListener("click", start);
})();
