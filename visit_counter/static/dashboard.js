/* visit-counter dashboard (GET /dashboard): fills the server-rendered shell from the JSON API
   and keeps it live by polling every data-poll-ms (no reload, no library, no build step).
   Each poll reads the top pages, the totals and /status; a page's daily stats (its sparkline)
   are read again only when its count changed or a minute has passed. The analytics routes
   (totals, stats) may be missing from an older service: a 404 turns them off for this load and
   their places show a dash; the top list never depends on them. Text from the service (page
   ids, node names) only ever goes in through textContent. */
(function () {
  "use strict";
  const root = document.getElementById("dashboard");
  if (!root) return;
  const api = root.dataset.api + "/counter";
  const statusUrl = root.dataset.status;
  const popular = Number(root.dataset.popular);
  const pollMs = Number(root.dataset.pollMs);
  const limit = Number(root.dataset.topLimit);
  const days = Number(root.dataset.days);
  const STATS_MAX_AGE_MS = 60000;
  const DASH = "\u2014";
  const SVG = "http://www.w3.org/2000/svg"; // the namespace's name: never fetched

  // Counts for people, in the browser's language: grouped in full (1,234,567) in the list,
  // and in the totals too up to a million, then compact (12.3M) with the exact in the tooltip.
  const exact = new Intl.NumberFormat();
  const compact = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
  const COMPACT_FROM = 1e6;
  const clock = new Intl.DateTimeFormat(undefined, { timeStyle: "medium" });

  let analytics = true; // false once the totals or stats route answered 404
  let signedOut = false;
  let timer = null; // the next poll, while one is scheduled
  let polling = false; // a poll is under way
  const stats = new Map(); // page id -> {visits, daily, at}: the last stats read for it

  const $ = (id) => document.getElementById(id);

  class HttpError extends Error {
    constructor(status) {
      super("HTTP " + status);
      this.status = status;
    }
  }

  async function getJson(url) {
    const answer = await fetch(url, { cache: "no-store", headers: { Accept: "application/json" } });
    if (answer.status === 401) {
      signOut();
      throw new HttpError(401);
    }
    if (!answer.ok) throw new HttpError(answer.status);
    return answer.json();
  }

  function signOut() {
    if (signedOut) return;
    signedOut = true;
    const notice = $("notice");
    notice.textContent = "Your session has ended (logged out, or the token changed). ";
    const link = document.createElement("a");
    link.href = location.pathname;
    link.textContent = "Log in again";
    notice.append(link);
    notice.hidden = false;
  }

  function missing(error) {
    if (error instanceof HttpError && error.status === 404) analytics = false;
  }

  function showNumber(element, value) {
    element.dataset.value = value === null ? "" : String(value);
    element.textContent = value === null ? DASH
      : (value >= COMPACT_FROM ? compact : exact).format(value);
    element.title = value === null ? "" : exact.format(value);
  }

  function sparkline(daily, what) {
    const values = daily.map((day) => day.visits);
    const width = 100;
    const height = 24;
    const top = Math.max(1, ...values);
    const step = values.length > 1 ? width / (values.length - 1) : 0;
    const points = values.map((value, i) => {
      const y = height - 1 - (value / top) * (height - 2);
      return (i * step).toFixed(2) + "," + y.toFixed(2);
    });
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("role", "img");
    const total = values.reduce((sum, value) => sum + value, 0);
    const peak = daily[values.indexOf(Math.max(...values))];
    const label = what + ": " + exact.format(total) + " visits in " + values.length + " days" +
      (peak && peak.visits ? ", most on " + peak.date + " (" + exact.format(peak.visits) + ")" : "");
    svg.setAttribute("aria-label", label);
    const title = document.createElementNS(SVG, "title");
    title.textContent = label;
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("fill", "none");
    line.setAttribute("stroke", "currentColor");
    line.setAttribute("stroke-width", "1.5");
    line.setAttribute("vector-effect", "non-scaling-stroke");
    svg.append(title, line);
    return svg;
  }

  function noTrend() {
    const span = document.createElement("span");
    span.className = "muted";
    span.textContent = DASH;
    return span;
  }

  async function refreshStats(pages) {
    if (!analytics) return;
    const now = Date.now();
    const shown = new Set(pages.map((page) => page.page_id));
    for (const id of stats.keys()) if (!shown.has(id)) stats.delete(id); // left the top list
    const stale = pages.filter((page) => {
      const known = stats.get(page.page_id);
      return !known || known.visits !== page.visits || now - known.at > STATS_MAX_AGE_MS;
    });
    await Promise.all(stale.map(async (page) => {
      try {
        const body = await getJson(api + "/stats/" + encodeURIComponent(page.page_id) + "?days=" + days);
        stats.set(page.page_id, { visits: page.visits, daily: body.daily, at: Date.now() });
      } catch (error) {
        missing(error);
      }
    }));
  }

  function renderTop(pages) {
    const rows = pages.map((page) => {
      const row = document.createElement("tr");
      row.dataset.pageId = page.page_id;
      row.dataset.visits = String(page.visits);
      const name = document.createElement("td");
      name.className = "page";
      const id = document.createElement("span");
      id.className = "id";
      id.textContent = page.page_id;
      id.title = page.page_id;
      name.append(id);
      if (page.visits >= popular) {
        const badge = document.createElement("span");
        badge.className = "badge";
        badge.textContent = "Popular";
        badge.title = "at least " + exact.format(popular) + " visits";
        name.append(badge);
      }
      const count = document.createElement("td");
      count.className = "num";
      count.textContent = exact.format(page.visits);
      const trend = document.createElement("td");
      trend.className = "trend";
      const known = analytics && stats.get(page.page_id);
      trend.append(known ? sparkline(known.daily, page.page_id) : noTrend());
      row.append(name, count, trend);
      return row;
    });
    $("top-pages").tBodies[0].replaceChildren(...rows);
    $("top-empty").hidden = pages.length > 0;
  }

  async function pollTop() {
    const body = await getJson(api + "/top?limit=" + limit);
    await refreshStats(body.pages);
    renderTop(body.pages);
  }

  async function pollTotals() {
    if (!analytics) return;
    try {
      const body = await getJson(api + "/totals?days=" + days);
      showNumber($("total-pages"), body.pages);
      showNumber($("total-visits"), body.visits);
      showNumber($("total-unique"), body.unique_visitors);
      $("total-trend").replaceChildren(sparkline(body.daily, "All pages"));
    } catch (error) {
      missing(error);
      if (!analytics) {
        for (const id of ["total-pages", "total-visits", "total-unique"]) showNumber($(id), null);
      }
    }
  }

  async function pollStatus() {
    const body = await getJson(statusUrl);
    const word = $("service-status");
    word.textContent = body.status;
    word.dataset.status = body.status;
    const list = $("nodes");
    const redis = body.redis_status;
    if (!redis) {
      const item = document.createElement("li");
      item.className = "muted";
      item.textContent = "Node detail needs the admin token.";
      list.replaceChildren(item);
      return;
    }
    const down = redis.down_nodes || {};
    list.replaceChildren(...Object.entries(redis.node_status).map(([node, up]) => {
      const item = document.createElement("li");
      item.className = up ? "up" : "down";
      item.dataset.node = node;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = node;
      const state = document.createElement("span");
      state.className = "state";
      state.textContent = up ? "up" : "down";
      if (!up && down[node]) item.title = down[node];
      item.append(name, state);
      return item;
    }));
  }

  async function poll() {
    timer = null;
    if (signedOut || polling) return;
    if (document.hidden) return; // resumed by visibilitychange
    polling = true;
    const [top] = await Promise.allSettled([pollTop(), pollTotals(), pollStatus()]);
    polling = false;
    const updated = $("updated");
    if (top.status === "fulfilled") {
      updated.textContent = "Live \u00b7 updated " + clock.format(new Date());
      updated.classList.remove("stale");
    } else if (!signedOut) {
      updated.textContent = "Cannot read the counts now; retrying";
      updated.classList.add("stale");
    }
    if (!signedOut) timer = setTimeout(poll, pollMs);
  }

  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && timer === null && !polling) poll();
  });
  poll();
})();
