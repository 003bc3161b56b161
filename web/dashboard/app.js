// Tally's dashboard: a small single-page application over Tally's own /v1 API.
//
// Signing in exchanges an API key for a session cookie (POST /dashboard/session); the key is
// dropped from the page at once and never stored. Every later request is a same-origin fetch
// that carries the HttpOnly cookie; writes add the session's CSRF token as X-CSRF-Token.
//
// Safety: every value that comes from the API is put on the page with textContent (the el()
// helper below makes text nodes only), never as HTML, and the Content-Security-Policy allows
// no inline script or style. Live: the page polls the cheap reads every second (see
// docs/dashboard.md for why polling rather than a stream).
"use strict";

(() => {
  const POLL_MS = 1000;
  const SLOW_POLL_MS = 5000;
  const HISTORY = { day: 7, week: 12, month: 12 };

  const state = {
    session: null,   // the body of /dashboard/session: key_id, customer, admin, scopes, csrf_token
    timers: [],
    countdowns: [],  // [element, reset time in ms]
    chart: null,
    customer: null,  // the customer on screen
    meters: [],
    generation: 0,   // bumps on every view change, so late answers of an old view are dropped
  };

  // ---- DOM helpers: text only -----------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  // el("td", {class: "num"}, "12", child): children are nodes or text (never HTML).
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) throw new Error("no inline handlers");
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children) {
      if (c === undefined || c === null) continue;
      node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return node;
  }

  function setText(id, text) {
    $(id).textContent = text === undefined || text === null ? "" : String(text);
  }

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  // ---- formatting ------------------------------------------------------------------------------

  // A percentage as the API writes it: two decimals (JSON drops trailing zeros).
  function percent(v) {
    return v === null || v === undefined ? "–" : Number(v).toFixed(2) + "%";
  }

  function number(v) {
    if (v === null || v === undefined || v === "") return "–";
    if (v === "unlimited") return "unlimited";
    const n = Number(v);
    if (!Number.isFinite(n)) return String(v);
    // Exact decimals from the API are shown as sent, grouped by thousands.
    const [int, frac] = String(v).split(".");
    const grouped = int.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return frac === undefined ? grouped : grouped + "." + frac;
  }

  function whenText(iso, tz) {
    const d = new Date(iso);
    try {
      return new Intl.DateTimeFormat(undefined, {
        timeZone: tz || undefined, year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit",
      }).format(d);
    } catch (e) {
      return d.toISOString();
    }
  }

  function windowLabel(iso, window, tz) {
    const opts = window === "month" ? { year: "numeric", month: "short" }
                                    : { month: "short", day: "numeric" };
    try {
      return new Intl.DateTimeFormat(undefined, { timeZone: tz || undefined, ...opts })
          .format(new Date(iso));
    } catch (e) {
      return iso.slice(0, 10);
    }
  }

  function countdownText(ms) {
    if (ms <= 0) return "resetting now";
    let s = Math.floor(ms / 1000);
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    const parts = [];
    if (d) parts.push(d + "d");
    if (d || h) parts.push(h + "h");
    if (d || h || m) parts.push(m + "m");
    parts.push(s + "s");
    return "resets in " + parts.join(" ");
  }

  // The level a limit is at: the highest alert threshold its usage reached (used / limit * 100
  // >= threshold, as the server's alerts decide), "ok" below all of them.
  function levelOf(limit, thresholds) {
    if (limit.limit === "unlimited") return "unlimited";
    const used = Number(limit.used);
    const cap = Number(limit.limit);
    let level = "ok";
    const list = thresholds && thresholds.length ? thresholds
        : [{ percent: 80, level: "warning" }, { percent: 100, level: "exceeded" }];
    for (const t of list) {
      if (cap > 0 ? used * 100 >= t.percent * cap : used > 0) level = t.level;
    }
    return level;
  }

  // ---- the API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || "HTTP " + status);
      this.status = status;
      this.code = body && body.error;
    }
  }

  async function call(method, path, body) {
    const headers = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    if (method !== "GET" && state.session) headers["x-csrf-token"] = state.session.csrf_token;
    const res = await fetch(path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch (e) { data = null; }
    }
    if (!res.ok) {
      if (res.status === 401 && state.session && !path.startsWith("/dashboard/")) {
        // The session expired (the browser may already have dropped its cookie), was ended,
        // or its key was revoked.
        signedOut("Your session has expired or was ended: please sign in again.");
      }
      throw new ApiError(res.status, data);
    }
    return data;
  }

  const enc = encodeURIComponent;

  // ---- session and routing ---------------------------------------------------------------------

  function stopTimers() {
    for (const t of state.timers) clearInterval(t);
    state.timers = [];
    state.countdowns = [];
    state.generation++;
  }

  function every(ms, fn) {
    const gen = state.generation;
    const t = setInterval(() => {
      if (gen !== state.generation || document.hidden) return;
      fn();
    }, ms);
    state.timers.push(t);
  }

  function hideViews() {
    for (const id of ["loading", "signin", "customer-view", "admin-view"]) show(id, false);
  }

  function signedOut(message) {
    stopTimers();
    state.session = null;
    hideViews();
    show("nav", false);
    show("signin", true);
    setText("signin-error", message || "");
    $("signin-key").focus();
  }

  function signedIn(session) {
    state.session = session;
    show("nav", true);
    show("nav-admin", session.admin);
    setText("who", session.admin ? "admin (" + session.key_id + ")"
                                 : "customer " + session.customer + " (" + session.key_id + ")");
    route();
  }

  function route() {
    if (!state.session) return;
    stopTimers();
    hideViews();
    const hash = location.hash || "";
    const m = hash.match(/^#\/customers\/(.+)$/);
    if (m) {
      let id;
      try { id = decodeURIComponent(m[1]); } catch (e) { id = m[1]; }
      customerView(id);
    } else if (state.session.admin) {
      adminView();
    } else {
      customerView(state.session.customer);
    }
  }

  async function signIn(event) {
    event.preventDefault();
    const input = $("signin-key");
    const key = input.value.trim();
    setText("signin-error", "");
    if (!key) {
      setText("signin-error", "Enter an API key.");
      return;
    }
    try {
      const res = await fetch("/dashboard/session", {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json" }, body: JSON.stringify({ key }),
      });
      const body = await res.json().catch(() => null);
      input.value = "";  // the key is not kept anywhere on the page
      if (!res.ok) {
        setText("signin-error", (body && body.message) || "Sign-in failed (HTTP " + res.status + ")");
        return;
      }
      signedIn(body);
    } catch (e) {
      setText("signin-error", "The server could not be reached.");
    }
  }

  async function signOut() {
    try { await call("DELETE", "/dashboard/session"); } catch (e) { /* ended anyway */ }
    signedOut("Signed out.");
  }

  // ---- customer view ---------------------------------------------------------------------------

  async function customerView(id) {
    state.customer = id;
    show("customer-view", true);
    show("customer-back", state.session.admin);
    setText("customer-title", id);
    setText("customer-meta", "");
    setText("customer-error", "");
    show("customer-body", false);
    const gen = state.generation;
    let customer;
    try {
      [customer, state.meters] = await Promise.all([
        call("GET", "/v1/customers/" + enc(id)),
        call("GET", "/v1/meters").then((b) => b.meters),
      ]);
    } catch (e) {
      if (gen !== state.generation) return;
      setText("customer-error", e.status === 403 ? "Not allowed: " + e.message
                                : e.status === 404 ? "No such customer: " + id : e.message);
      return;
    }
    if (gen !== state.generation) return;
    setText("customer-title", customer.name || customer.id);
    setText("customer-meta", [
      "id " + customer.id, "plan " + (customer.plan || "default"), customer.status,
      "time zone " + customer.timezone,
    ].join(" · "));
    $("customer-meta").dataset.tz = customer.timezone;
    show("customer-body", true);
    show("actions", state.session.admin);
    fillMeterChoices();
    if (state.session.admin) {
      $("act-reset-meter").replaceChildren(...state.meters.map((m) => el("option", { value: m.key }, m.key)));
      refreshActions();
    }
    await Promise.all([refreshLimits(), refreshDenials(), refreshWallet(), refreshAlerts(),
                       refreshHistory(), refreshBreakdown()]);
    every(POLL_MS, () => { refreshLimits(); refreshDenials(); refreshAlerts(); refreshWallet(); });
    every(SLOW_POLL_MS, () => { refreshHistory(); refreshBreakdown(); });
    every(1000, tickCountdowns);
  }

  function fillMeterChoices() {
    const meterSel = $("history-meter");
    const prev = meterSel.value;
    meterSel.replaceChildren(...state.meters.map((m) =>
      el("option", { value: m.key }, m.name ? m.name + " (" + m.key + ")" : m.key)));
    if (prev && state.meters.some((m) => m.key === prev)) meterSel.value = prev;
    const dims = [];
    for (const m of state.meters) {
      for (const g of m.group_by || []) if (!dims.includes(g)) dims.push(g);
    }
    const bySel = $("breakdown-by");
    const prevDim = bySel.value;
    bySel.replaceChildren(...dims.map((d) => el("option", { value: d }, d)));
    if (prevDim && dims.includes(prevDim)) bySel.value = prevDim;
    else if (dims.includes("service")) bySel.value = "service";
  }

  function tickCountdowns() {
    const now = Date.now();
    for (const [node, at] of state.countdowns) node.textContent = countdownText(at - now);
  }

  async function refreshLimits() {
    const gen = state.generation;
    let r;
    try {
      r = await call("GET", "/v1/customers/" + enc(state.customer) + "/limits");
    } catch (e) {
      if (gen === state.generation) setText("customer-error", e.message);
      return;
    }
    if (gen !== state.generation) return;
    const list = $("limits");
    state.countdowns = [];
    const items = r.limits.map((l) => {
      const level = levelOf(l, r.alert_thresholds);
      const unlimited = l.limit === "unlimited";
      const pct = unlimited ? null : Number(l.percent);
      const fill = el("div", { class: "fill" });
      fill.style.width = unlimited ? "0" : Math.min(100, Math.max(0, pct)) + "%";
      const bar = el("div", {
        class: "bar", role: "progressbar", "aria-label": l.rule,
        "aria-valuemin": 0, "aria-valuemax": unlimited ? undefined : l.limit,
        "aria-valuenow": l.used,
        "aria-valuetext": unlimited ? number(l.used) + " used, no limit"
                                    : number(l.used) + " of " + number(l.limit) + " (" + percent(l.percent) + ")",
      }, fill);
      const reset = el("span", { class: "countdown" });
      const resetAt = l.reset ? Date.parse(l.reset) : null;
      if (resetAt) {
        reset.textContent = countdownText(resetAt - Date.now());
        state.countdowns.push([reset, resetAt]);
      }
      const figures = unlimited
          ? el("span", { class: "limit-figures" },
               el("span", { class: "limit-used" }, number(l.used)), " used · ",
               el("span", { class: "limit-limit" }, "unlimited"))
          : el("span", { class: "limit-figures" },
               el("span", { class: "limit-used" }, number(l.used)), " / ",
               el("span", { class: "limit-limit" }, number(l.limit)), " · ",
               el("span", { class: "limit-percent" }, percent(l.percent)));
      return el("li", { class: "limit level-" + level, "data-rule": l.rule, "data-level": level },
        el("div", { class: "limit-head" },
          el("span", { class: "limit-rule" }, l.rule, l.hard ? "" : " (soft)"), figures),
        bar,
        el("div", { class: "limit-reset" }, reset,
           resetAt ? " · " + whenText(l.reset, $("customer-meta").dataset.tz) : "",
           level !== "ok" && level !== "unlimited" ? " · " : "",
           level !== "ok" && level !== "unlimited" ? el("span", { class: "badge level-" + level }, level) : ""));
    });
    list.replaceChildren(...items);
    show("limits-empty", items.length === 0);
    setText("updated-at", "Updated " + new Date().toLocaleTimeString());
  }

  // The rate-limit state: checks denied in the last hour, from the engine's per-minute counts.
  async function refreshDenials() {
    const gen = state.generation;
    let r;
    try {
      r = await call("GET", "/v1/customers/" + enc(state.customer) + "/denials");
    } catch (e) {
      return;  // shown by refreshLimits
    }
    if (gen !== state.generation) return;
    setText("rate-denied", String(r.denied_last_hour));
    $("rate-state").dataset.denied = String(r.denied_last_hour);
    $("rate-state").classList.toggle("level-exceeded", r.denied_last_hour > 0);
    let last = -1;
    r.per_minute.forEach((n, i) => { if (n > 0) last = i; });
    setText("rate-last", last < 0 ? "" : " · the last one " +
            (last === r.per_minute.length - 1 ? "this minute" : (r.per_minute.length - 1 - last) + " min ago"));
  }

  function chartColor() {
    return getComputedStyle(document.documentElement).getPropertyValue("--accent").trim() || "#2457c5";
  }

  async function refreshHistory() {
    const meter = $("history-meter").value;
    const window = $("history-window").value;
    if (!meter) return;
    const gen = state.generation;
    let h;
    try {
      h = await call("GET", "/v1/customers/" + enc(state.customer) + "/usage/history?meter=" +
                     enc(meter) + "&window=" + window + "&windows=" + HISTORY[window]);
    } catch (e) {
      if (gen === state.generation) setText("customer-error", e.message);
      return;
    }
    if (gen !== state.generation || $("history-meter").value !== meter ||
        $("history-window").value !== window) return;
    const labels = h.data.map((p) => windowLabel(p.window_start, window, h.timezone));
    const values = h.data.map((p) => (p.value === null ? null : Number(p.value)));
    setText("history-caption", h.meter + " per " + h.window + " (" + (h.unit || "units") +
            "), time zone " + h.timezone);
    $("history-table").tBodies[0].replaceChildren(...h.data.map((p, i) =>
      el("tr", { "data-window-start": p.window_start },
         el("td", {}, labels[i]), el("td", { class: "num" }, number(p.value)))));
    if (typeof Chart === "undefined") return;  // the chart library failed to load: table only
    if (!state.chart) {
      state.chart = new Chart($("history-chart"), {
        type: "bar",
        data: { labels, datasets: [{ label: h.meter, data: values, backgroundColor: chartColor() }] },
        options: {
          responsive: true, maintainAspectRatio: false, animation: false,
          plugins: { legend: { display: false } },
          scales: { y: { beginAtZero: true } },
        },
      });
    } else {
      state.chart.data.labels = labels;
      state.chart.data.datasets[0].data = values;
      state.chart.data.datasets[0].label = h.meter;
      state.chart.update();
    }
    $("history-chart").dataset.meter = h.meter;
    $("history-chart").dataset.window = h.window;
  }

  async function refreshBreakdown() {
    const by = $("breakdown-by").value;
    if (!by) {
      show("breakdown-empty", true);
      return;
    }
    const gen = state.generation;
    let r;
    try {
      r = await call("GET", "/v1/customers/" + enc(state.customer) + "/report?group_by=" + enc(by));
    } catch (e) {
      if (gen === state.generation) setText("customer-error", e.message);
      return;
    }
    if (gen !== state.generation || $("breakdown-by").value !== by) return;
    setText("breakdown-dim", by);
    const rows = [];
    for (const b of r.breakdown) {
      for (const g of b.groups) {
        rows.push(el("tr", { "data-meter": b.meter, "data-value": g.value },
          el("td", {}, b.meter), el("td", {}, g.value === "" ? "(none)" : g.value),
          el("td", { class: "num" }, number(g.usage)),
          el("td", { class: "num" }, percent(g.percent))));
      }
    }
    $("breakdown").tBodies[0].replaceChildren(...rows);
    show("breakdown-empty", rows.length === 0);
  }

  async function refreshWallet() {
    const gen = state.generation;
    const since = new Date(Date.now() - 30 * 86400e3).toISOString();
    let w;
    let t;
    try {
      [w, t] = await Promise.all([
        call("GET", "/v1/customers/" + enc(state.customer) + "/wallet"),
        call("GET", "/v1/customers/" + enc(state.customer) + "/wallet/transactions?limit=1000&from=" +
                    enc(since)),
      ]);
    } catch (e) {
      if (gen === state.generation && e.status !== 403) setText("customer-error", e.message);
      return;
    }
    if (gen !== state.generation) return;
    setText("wallet-balance", number(w.balance));
    setText("wallet-available", number(w.available));
    const recent = t.transactions.slice(-10).reverse();
    $("ledger").tBodies[0].replaceChildren(...recent.map((x) =>
      el("tr", { "data-id": x.id },
         el("td", {}, whenText(x.created_at)), el("td", {}, x.type),
         el("td", { class: "num" }, number(x.amount)),
         el("td", { class: "num" }, number(x.balance_after)))));
  }

  async function refreshAlerts() {
    const gen = state.generation;
    const since = new Date(Date.now() - 30 * 86400e3).toISOString();
    let a;
    try {
      a = await call("GET", "/v1/alerts?customer=" + enc(state.customer) + "&limit=1000&from=" +
                     enc(since));
    } catch (e) {
      if (gen === state.generation) setText("customer-error", e.message);
      return;
    }
    if (gen !== state.generation) return;
    const recent = a.alerts.slice(-20).reverse();
    $("alerts").replaceChildren(...recent.map((x) => el("li",
      { class: "level-" + x.level, "data-id": x.id, "data-level": x.level },
      el("span", { class: "badge level-" + x.level }, x.level), " ",
      x.kind === "limit"
          ? el("span", { class: "alert-text" }, x.limit + " reached " + x.threshold_percent + "% (" +
                                                 number(x.used) + " of " + number(x.limit_amount) + ")")
          : el("span", { class: "alert-text" }, "balance below " + number(x.threshold_amount) +
                                                 " (" + number(x.balance) + ")"),
      " ", el("span", { class: "muted small" }, whenText(x.created_at)),
      " ", el("span", { class: "badge" + (x.status === "failed" ? " bad" : x.status === "sent" ? " good" : "") },
              "webhook: " + x.status))));
    show("alerts-empty", recent.length === 0);
  }

  // ---- admin actions on a customer (through the same /v1 API, with the CSRF token) -------------

  async function act(what, fn) {
    setText("act-result", "");
    try {
      await fn();
      setText("act-result", what + ": done.");
    } catch (e) {
      setText("act-result", what + " failed: " + e.message);
    }
    refreshActions();
    refreshLimits();
    refreshWallet();
  }

  async function refreshActions() {
    if (!state.session.admin) return;
    const gen = state.generation;
    let c;
    let keys;
    try {
      [c, keys] = await Promise.all([call("GET", "/v1/customers/" + enc(state.customer)),
                                     call("GET", "/v1/keys")]);
    } catch (e) {
      return;
    }
    if (gen !== state.generation) return;
    setText("act-status-now", c.status);
    setText("act-status-button", c.status === "suspended" ? "Activate" : "Suspend");
    $("act-status-button").className = c.status === "suspended" ? "" : "danger";
    setText("customer-meta", [
      "id " + c.id, "plan " + (c.plan || "default"), c.status, "time zone " + c.timezone,
    ].join(" · "));
    const mine = keys.keys.filter((k) => k.customer === state.customer);
    $("act-keys").tBodies[0].replaceChildren(...mine.map((k) => {
      const revoke = el("button", { type: "button", class: "danger", "aria-label": "Revoke key " + k.id },
                        "Revoke");
      revoke.disabled = !!k.revoked_at;
      revoke.addEventListener("click", () => act("Revoke " + k.id,
        () => call("DELETE", "/v1/keys/" + enc(k.id))));
      return el("tr", { "data-id": k.id },
        el("td", {}, k.name || k.id), el("td", {}, k.prefix),
        el("td", { class: "hide-narrow" }, k.last_used_at ? whenText(k.last_used_at) : "never"),
        el("td", {}, k.revoked_at ? "revoked" : "active"), el("td", {}, revoke));
    }));
  }

  function setUpActions() {
    $("act-plan").addEventListener("submit", (e) => {
      e.preventDefault();
      const plan = $("act-plan-value").value.trim();
      act("Plan change", () => call("PATCH", "/v1/customers/" + enc(state.customer),
                                    { plan: plan === "" || plan === "default" ? null : plan }));
    });
    $("act-status").addEventListener("submit", (e) => {
      e.preventDefault();
      const to = $("act-status-now").textContent === "suspended" ? "active" : "suspended";
      act(to === "suspended" ? "Suspend" : "Activate",
          () => call("PATCH", "/v1/customers/" + enc(state.customer), { status: to }));
    });
    $("act-reset").addEventListener("submit", (e) => {
      e.preventDefault();
      act("Reset", () => call("POST", "/v1/customers/" + enc(state.customer) + "/reset",
                              { meter: $("act-reset-meter").value }));
    });
    $("act-credits").addEventListener("submit", (e) => {
      e.preventDefault();
      const amount = $("act-credits-amount").value.trim();
      act("Credits", async () => {
        await call("POST", "/v1/customers/" + enc(state.customer) + "/wallet/transactions",
                   { type: $("act-credits-type").value, amount, description: "dashboard" });
        $("act-credits-amount").value = "";
      });
    });
    $("act-key").addEventListener("submit", (e) => {
      e.preventDefault();
      setText("act-key-secret", "");
      act("New key", async () => {
        const k = await call("POST", "/v1/keys", { customer: state.customer, name: "dashboard" });
        setText("act-key-secret", "Shown once: " + k.key);
      });
    });
  }

  // ---- admin view: every customer, paged and sorted by the server --------------------------------

  const admin = { sort: "id", order: "asc", offset: 0, limit: 50, q: "", total: 0 };

  function adminView() {
    show("admin-view", true);
    setText("admin-error", "");
    refreshAdminList();
    refreshTop(true);
    refreshFeed();
    refreshOrgs();
    refreshAudit();
    refreshLive();
    every(SLOW_POLL_MS, () => {
      refreshAdminList(); refreshTop(false); refreshFeed(); refreshOrgs(); refreshAudit();
    });
    every(2000, refreshLive);
  }

  async function refreshAdminList() {
    const gen = state.generation;
    const qs = "sort=" + admin.sort + "&order=" + admin.order + "&offset=" + admin.offset +
               "&limit=" + admin.limit + (admin.q ? "&q=" + enc(admin.q) : "");
    let r;
    try {
      r = await call("GET", "/v1/admin/customers?" + qs);
    } catch (e) {
      if (gen === state.generation) setText("admin-error", e.message);
      return;
    }
    if (gen !== state.generation) return;
    admin.total = r.total;
    for (const th of $("admin-customers").tHead.rows[0].cells) {
      th.setAttribute("aria-sort", th.dataset.sort === admin.sort
          ? (admin.order === "asc" ? "ascending" : "descending") : "none");
    }
    $("admin-customers").tBodies[0].replaceChildren(...r.customers.map((c) => {
      const pct = c.max_limit_percent;
      return el("tr", { "data-id": c.id },
        el("td", {}, el("a", { href: "#/customers/" + enc(c.id) }, c.id)),
        el("td", { class: "hide-narrow" }, c.name),
        el("td", {}, c.plan === null ? "–" : c.plan),
        el("td", {}, el("span", { class: "badge" + (c.status === "suspended" ? " bad" : "") }, c.status)),
        el("td", { class: "num", title: c.max_limit_rule || "" }, percent(pct)));
    }));
    const last = Math.min(admin.offset + r.customers.length, r.total);
    setText("admin-count", r.total + (r.total === 1 ? " customer" : " customers"));
    setText("admin-page", r.total === 0 ? "none" : (admin.offset + 1) + "–" + last + " of " + r.total);
    $("admin-prev").disabled = admin.offset === 0;
    $("admin-next").disabled = last >= r.total;
  }

  async function refreshTop(fillChoices) {
    const gen = state.generation;
    if (fillChoices || $("top-meter").options.length === 0) {
      try {
        state.meters = (await call("GET", "/v1/meters")).meters;
      } catch (e) {
        return;
      }
      if (gen !== state.generation) return;
      const sel = $("top-meter");
      const prev = sel.value;
      sel.replaceChildren(...state.meters.map((m) => el("option", { value: m.key }, m.key)));
      if (prev) sel.value = prev;
    }
    const meter = $("top-meter").value;
    if (!meter) return;
    let r;
    try {
      r = await call("GET", "/v1/admin/usage/top?meter=" + enc(meter) + "&n=10");
    } catch (e) {
      if (gen === state.generation) setText("admin-error", e.message);
      return;
    }
    if (gen !== state.generation || $("top-meter").value !== meter) return;
    $("top-customers").tBodies[0].replaceChildren(...r.customers.map((c) =>
      el("tr", { "data-id": c.customer },
         el("td", {}, String(c.rank)),
         el("td", {}, el("a", { href: "#/customers/" + enc(c.customer) }, c.name || c.customer)),
         el("td", { class: "num" }, number(c.value)))));
  }

  async function refreshFeed() {
    const gen = state.generation;
    const since = new Date(Date.now() - 30 * 86400e3).toISOString();
    let a;
    try {
      a = await call("GET", "/v1/alerts?limit=1000&from=" + enc(since));
    } catch (e) {
      return;
    }
    if (gen !== state.generation) return;
    const recent = a.alerts.slice(-20).reverse();
    $("admin-alerts").replaceChildren(...recent.map((x) => el("li",
      { class: "level-" + x.level, "data-id": x.id },
      el("a", { href: "#/customers/" + enc(x.customer) }, x.customer), " ",
      el("span", { class: "badge level-" + x.level }, x.level), " ",
      x.kind === "limit" ? x.limit + " at " + x.threshold_percent + "%"
                         : "balance below " + number(x.threshold_amount),
      " ", el("span", { class: "badge" + (x.status === "failed" ? " bad" : x.status === "sent" ? " good" : "") },
              "webhook: " + x.status + (x.delivery_attempts ? " (" + x.delivery_attempts + " attempts)" : "")))));
    show("admin-alerts-empty", recent.length === 0);
  }

  // Organizations rolled up: members, the highest limit of any member, this month's totals.
  async function refreshOrgs() {
    const gen = state.generation;
    let r;
    try {
      r = await call("GET", "/v1/admin/organizations?limit=20");
    } catch (e) {
      return;
    }
    if (gen !== state.generation) return;
    $("admin-orgs").tBodies[0].replaceChildren(...r.organizations.map((o) =>
      el("tr", { "data-id": o.organization },
         el("td", {}, o.organization),
         el("td", { class: "num" }, String(o.customers) + (o.suspended ? " (" + o.suspended + " suspended)" : "")),
         el("td", { class: "num", title: o.max_limit_rule || "" }, percent(o.max_limit_percent),
            o.max_limit_customer ? el("span", { class: "muted small" }, " ",
              el("a", { href: "#/customers/" + enc(o.max_limit_customer) }, o.max_limit_customer)) : ""),
         el("td", { class: "hide-narrow" },
            o.meters.filter((m) => m.value !== null).map((m) => m.meter + " " + number(m.value)).join(" · ")))));
    show("admin-orgs-empty", r.organizations.length === 0);
  }

  // The audit log: what each key did, newest first.
  function auditDetails(a) {
    switch (a.action) {
      case "plan_change":
      case "status_change": return (a.from === null ? "none" : a.from) + " → " + (a.to === null ? "none" : a.to);
      case "wallet_transaction": return a.type + " " + number(a.amount) + " (" + a.transaction + ")";
      case "key_create": return a.key + (a.name ? " “" + a.name + "”" : "");
      case "key_revoke": return a.key;
      case "reset": return a.meter;
      case "customer_update": return (a.fields || []).join(", ");
      case "overrides": return a.count + " overrides";
      default: return "";
    }
  }

  async function refreshAudit() {
    const gen = state.generation;
    let r;
    try {
      r = await call("GET", "/v1/admin/audit?limit=20");
    } catch (e) {
      return;
    }
    if (gen !== state.generation) return;
    $("admin-audit").tBodies[0].replaceChildren(...r.entries.map((a) =>
      el("tr", { "data-action": a.action },
         el("td", {}, whenText(a.at)),
         el("td", {}, a.actor === null || a.actor === undefined ? "–" : a.actor),
         el("td", {}, a.action.replace("_", " ")),
         el("td", {}, a.customer ? el("a", { href: "#/customers/" + enc(a.customer) }, a.customer) : "–"),
         el("td", { class: "hide-narrow" }, auditDetails(a)))));
    show("admin-audit-empty", r.entries.length === 0);
  }

  // Rates and p99s over the server's last ~10 s, computed by the server from its own counters.
  function p99Text(part) {
    if (part.p99_ms === null) return "–";
    return (part.p99_beyond_last_bucket ? "> " : "≤ ") + Number(part.p99_ms.toPrecision(3)) + " ms";
  }

  async function refreshLive() {
    const gen = state.generation;
    let r;
    try {
      r = await call("GET", "/v1/admin/live");
    } catch (e) {
      return;
    }
    if (gen !== state.generation) return;
    const rate = (v) => (v === null ? "–" : String(Math.round(v * 10) / 10));
    setText("live-ingest", rate(r.ingest.events_per_second));
    setText("live-checks", rate(r.check.requests_per_second));
    setText("live-ingest-p99", p99Text(r.ingest));
    setText("live-check-p99", p99Text(r.check));
    setText("live-window", r.window_seconds === null ? "few" : String(Math.round(r.window_seconds)));
  }

  function setUpAdmin() {
    for (const th of $("admin-customers").tHead.rows[0].cells) {
      th.querySelector("button").addEventListener("click", () => {
        if (admin.sort === th.dataset.sort) admin.order = admin.order === "asc" ? "desc" : "asc";
        else { admin.sort = th.dataset.sort; admin.order = th.dataset.sort === "usage" ? "desc" : "asc"; }
        admin.offset = 0;
        refreshAdminList();
      });
    }
    let debounce = null;
    $("admin-search").addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => {
        admin.q = $("admin-search").value.trim();
        admin.offset = 0;
        refreshAdminList();
      }, 250);
    });
    $("admin-search-form").addEventListener("submit", (e) => e.preventDefault());
    $("admin-prev").addEventListener("click", () => {
      admin.offset = Math.max(0, admin.offset - admin.limit);
      refreshAdminList();
    });
    $("admin-next").addEventListener("click", () => {
      if (admin.offset + admin.limit < admin.total) admin.offset += admin.limit;
      refreshAdminList();
    });
    $("top-meter").addEventListener("change", () => refreshTop(false));
  }

  // ---- start -----------------------------------------------------------------------------------

  async function start() {
    $("signin-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", signOut);
    $("history-meter").addEventListener("change", refreshHistory);
    $("history-window").addEventListener("change", refreshHistory);
    $("breakdown-by").addEventListener("change", refreshBreakdown);
    window.addEventListener("hashchange", route);
    setUpActions();
    setUpAdmin();
    try {
      const res = await fetch("/dashboard/session", { credentials: "same-origin", cache: "no-store" });
      if (res.ok) {
        signedIn(await res.json());
        return;
      }
    } catch (e) { /* shown as signed out */ }
    signedOut("");
  }

  start();
})();
