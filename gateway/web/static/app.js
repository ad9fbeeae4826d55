// edgegw technician's page: live values from the gateway's stream (server-sent events), no
// page reloads. The HTML comes rendered (and escaped) from the gateway; this only updates it.
"use strict";
(function () {
  // ages are counted on the gateway's clock, not the phone's
  var skew = 0;
  function setNow(now) { skew = now - Date.now() / 1000; }
  function ago(ts) {
    var s = Math.max(0, Math.round(Date.now() / 1000 + skew - ts));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.floor(s / 60) + " min ago";
    if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min ago";
    return Math.floor(s / 86400) + " d ago";
  }
  function tick() {
    document.querySelectorAll("[data-ts]").forEach(function (el) {
      el.textContent = ago(parseFloat(el.dataset.ts));
    });
  }
  function apply(t) {
    Object.keys(t).forEach(function (k) {
      var cell = t[k];
      document.querySelectorAll('[data-k="' + CSS.escape(k) + '"]').forEach(function (el) {
        if (cell[2] !== null && cell[2] !== undefined) {
          el.dataset.ts = cell[2];
        } else {
          el.textContent = cell[0];
        }
        if (cell[1]) el.dataset.s = cell[1]; else delete el.dataset.s;
      });
    });
  }
  function reload(id, url) {
    var el = document.getElementById(id);
    if (!el) return;
    fetch(url, {credentials: "same-origin"}).then(function (r) {
      if (r.ok) return r.text();
      throw new Error(r.status);
    }).then(function (html) { el.innerHTML = html; }).catch(function () {});
  }
  function live() {
    var conn = document.getElementById("conn");
    var es = new EventSource("/live");
    es.onopen = function () { conn.dataset.s = "live"; };
    es.onerror = function () { conn.dataset.s = "lost"; };
    es.onmessage = function (ev) {
      var m = JSON.parse(ev.data);
      if (m.logout) { es.close(); location.href = "/login"; return; }
      if (m.now) setNow(m.now);
      if (m.t) apply(m.t);
      if (m.html) Object.keys(m.html).forEach(function (id) {
        var el = document.getElementById(id);
        if (el) el.innerHTML = m.html[id];
      });
      if (m.prepend) Object.keys(m.prepend).forEach(function (id) {
        var el = document.getElementById(id);
        if (el) el.insertAdjacentHTML("afterbegin", m.prepend[id]);
      });
      if (m.reload && m.reload.indexOf("overrides") >= 0) reload("overrides", "/lighting/overrides");
      if (m.running !== undefined) document.querySelectorAll("#run-check,#run-lamp-test")
        .forEach(function (b) { b.disabled = m.running; });
      tick();
    };
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (document.body.dataset.now) setNow(parseFloat(document.body.dataset.now));
    tick();
    setInterval(tick, 1000);
    if (document.body.dataset.live) live();
    var p = document.getElementById("print");
    if (p) p.addEventListener("click", function () { window.print(); });
  });
})();
