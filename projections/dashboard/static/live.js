// convoy dashboard: patches the fleet table from /events (server-sent
// events). Each "row" event carries a table row rendered and escaped by
// the server's template; nothing from the bus is turned into markup here.
(function () {
  "use strict";
  var rows = document.getElementById("fleet-rows");
  if (!rows || !window.EventSource) return;
  var badge = document.getElementById("live");
  badge.hidden = false;

  function count() {
    var n = { all: 0, upgrading: 0, queued: 0, failed: 0, offline: 0 };
    rows.querySelectorAll("tr[data-host]").forEach(function (tr) {
      n.all++;
      if (tr.dataset.state in n) n[tr.dataset.state]++;
      if (tr.dataset.worker === "offline" || tr.dataset.worker === "silent") n.offline++;
    });
    document.querySelectorAll("[data-count]").forEach(function (el) {
      el.textContent = String(n[el.dataset.count]);
    });
  }

  function place(tr) {
    var old = document.getElementById(tr.id);
    if (old) {
      old.classList.remove("flash");
      if (old.outerHTML === tr.outerHTML) return;
      old.replaceWith(tr);
    } else {
      var empty = document.getElementById("empty");
      if (empty) empty.remove();
      var next = null;
      rows.querySelectorAll("tr[data-host]").forEach(function (r) {
        if (!next && r.dataset.host > tr.dataset.host) next = r;
      });
      rows.insertBefore(tr, next);
    }
    tr.classList.add("flash");
  }

  var es = new EventSource("/events");
  es.addEventListener("row", function (ev) {
    var m = JSON.parse(ev.data);
    var t = document.createElement("template");
    t.innerHTML = m.html;
    var tr = t.content.querySelector("tr[data-host]");
    if (tr) place(tr);
    count();
  });
  es.onopen = function () { badge.textContent = "live"; badge.className = "live on"; };
  es.onerror = function () { badge.textContent = "reconnecting…"; badge.className = "live"; };
  count();
})();
