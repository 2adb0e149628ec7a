/* visit-counter snippet: <script async src="https://COUNTER/count.js"></script>
   Counts this page once per load (data-page="id" overrides location.pathname), then shows
   its count in every element with a data-visit-count attribute. Each load sends its own
   idempotency key, so a beacon or fetch the browser sends again counts once. */
(function () {
  var me = document.currentScript;
  if (!me) return;
  var api = new URL(me.src).origin + "__API_PREFIX__/counter/visit/";
  // location.pathname is percent-encoded (/caf%C3%A9): decoded once here, so the page gets
  // the id a server sending that path gets, not a second one holding "%C3%A9".
  var path = location.pathname;
  try { path = decodeURIComponent(path); } catch (malformed) {}
  var page = me.getAttribute("data-page") || path;
  var key = window.crypto && crypto.randomUUID ? crypto.randomUUID()
    : Date.now().toString(36) + Math.random().toString(36).slice(2);
  var url = api + encodeURIComponent(page) + "?idempotency_key=" + key;
  function run() {
    var shown = document.querySelectorAll("[data-visit-count]");
    if (!shown.length) {
      if (navigator.sendBeacon && navigator.sendBeacon(url)) return;
      fetch(url, { method: "POST", keepalive: true }).catch(function () {});
      return;
    }
    fetch(url + "&return=count", { method: "POST", keepalive: true })
      .then(function (answer) { return answer.json(); })
      .then(function (body) {
        if (typeof body.visits !== "number") return;
        var text = new Intl.NumberFormat().format(body.visits);
        for (var i = 0; i < shown.length; i++) shown[i].textContent = text;
      })
      .catch(function () {});
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run);
  else run();
})();
