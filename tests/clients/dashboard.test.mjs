// The dashboard (GET /dashboard/) in a real headless Chromium (Debian's, driven by the pinned
// playwright-core; no browser is downloaded) against a real `tally serve`: the numbers on the
// page equal the API's, the bars change colour at the plan's alert thresholds and follow new
// usage live, and every refusal holds: a wrong or revoked key, another customer's page, an
// expired session, a write without the CSRF token, and a customer name made of HTML.
// Screenshots of each view go to $TALLY_ARTIFACTS (ctest: build/test/artifacts/dashboard).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { startTally, ADMIN_KEY } from "./tally.mjs";

const CHROMIUM = process.env.TALLY_CHROMIUM || "/usr/bin/chromium";
const ARTIFACTS = process.env.TALLY_ARTIFACTS || join(process.cwd(), "artifacts", "dashboard");
const LIVE_MS = 2000;  // the promise: new usage on the page within 2 s

const CONFIG = `
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]
unit = "calls"

[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.input_tokens"
group_by = ["provider", "model"]
unit = "tokens"

[[plans]]
key = "starter"
name = "Starter"
alert_thresholds = [50, 80, 95]
limits = [
  { meter = "api_calls", period = "day", amount = 10 },
  { meter = "tokens_in", period = "month", amount = "unlimited" },
]

[[plans]]
key = "pro"
name = "Pro"
alert_thresholds = [50, 80, 95]
limits = [{ meter = "api_calls", period = "day", amount = 1000 }]

[credits]
currency = "USD"
per_currency_unit = 1000

[[prices]]
meter = "tokens_in"
unit_price = "0.001"
`;

let tally;
let browser;
let acmeKey;
let acmeKeyId;
let sent = 0;  // events sent so far, for unique ids

const HOUR = 3600e3;
const DAY = 24 * HOUR;

async function asCustomer(key, method, path, body) {
  const res = await fetch(tally.url + path, {
    method, headers: { "x-api-key": key, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

// n api_call events for acme at `at` (ms), with the given service.
async function calls(n, service, at = Date.now() - 60e3) {
  const events = [];
  for (let i = 0; i < n; i++) {
    events.push({ id: `e${++sent}`, customer: "acme", type: "api_call",
                  time: new Date(at).toISOString(), properties: { service } });
  }
  const r = await tally.api("POST", "/v1/events", { events });
  assert.equal(r.status, 202, JSON.stringify(r.body));
  assert.equal(r.body.accepted, n);
}

async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    // Chromium's sandbox cannot start as root; elsewhere it stays on.
    args: process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : [],
  });
}

// A fresh browser context (no cookies), its page watched for dialogs and page errors.
async function newPage(viewport = { width: 1280, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.dialogs = [];
  page.errors = [];
  page.on("dialog", async (d) => { page.dialogs.push(d.message()); await d.dismiss(); });
  page.on("pageerror", (e) => page.errors.push(String(e)));
  // Script errors and CSP violations; an answer refused on purpose (401, 403, 400) is logged by
  // Chromium as "Failed to load resource" and is not one.
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) page.errors.push(m.text());
  });
  return page;
}

async function signIn(page, key, base = tally.url) {
  await page.goto(base + "/dashboard/");
  await page.waitForSelector("#signin:not([hidden])");
  await page.fill("#signin-key", key);
  await page.click("#signin-form button[type=submit]");
}

// The README's screenshots are two of these: TALLY_UPDATE_DOCS=1 writes them to docs/img too.
const DOCS_IMAGES = { "customer-view-limit-reached": "dashboard-customer", "admin-view": "dashboard-admin" };

async function shot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, name + ".png"), fullPage: true });
  if (process.env.TALLY_UPDATE_DOCS === "1" && DOCS_IMAGES[name]) {
    const dir = new URL("../../docs/img/", import.meta.url).pathname;
    mkdirSync(dir, { recursive: true });
    await page.screenshot({ path: join(dir, DOCS_IMAGES[name] + ".png"), fullPage: true });
  }
}

// The limits shown on the page, by rule.
async function pageLimits(page) {
  return page.$$eval("#limits li", (items) => items.map((li) => ({
    rule: li.dataset.rule,
    level: li.dataset.level,
    used: li.querySelector(".limit-used")?.textContent,
    limit: li.querySelector(".limit-limit")?.textContent,
    percent: li.querySelector(".limit-percent")?.textContent ?? null,
    fill: getComputedStyle(li.querySelector(".fill")).backgroundColor,
    width: li.querySelector(".fill").style.width,
    countdown: li.querySelector(".countdown")?.textContent,
    valuenow: li.querySelector("[role=progressbar]").getAttribute("aria-valuenow"),
  })));
}

const cssVar = (page, name) => page.evaluate((n) => {
  const probe = document.createElement("div");
  probe.style.color = getComputedStyle(document.documentElement).getPropertyValue(n).trim();
  document.body.append(probe);
  const c = getComputedStyle(probe).color;
  probe.remove();
  return c;
}, name);

const groupNumber = (v) => {
  const [i, f] = String(v).split(".");
  const g = i.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return f === undefined ? g : g + "." + f;
};

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: bash scripts/setup.sh installs Debian's chromium`);
  tally = await startTally(CONFIG);
  browser = await launch();
  let r = await tally.api("POST", "/v1/customers",
                          { id: "acme", name: "Acme Inc.", timezone: "Europe/Berlin", plan: "starter" });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  r = await tally.api("POST", "/v1/customers", { id: "globex", name: "Globex", plan: "pro" });
  assert.equal(r.status, 201);
  r = await tally.api("POST", "/v1/keys", { customer: "acme", name: "acme dashboard" });
  assert.equal(r.status, 201);
  acmeKey = r.body.key;
  acmeKeyId = r.body.id;
  // Usage over the last days, 4 calls today (40 % of the daily 10: below every threshold).
  await calls(3, "chat");
  await calls(1, "search");
  await calls(3, "chat", Date.now() - 2 * DAY);
  await calls(2, "search", Date.now() - 5 * DAY);
  r = await tally.api("POST", "/v1/customers/acme/wallet/transactions", { type: "top_up", amount: 1000 });
  assert.equal(r.status, 201);
  r = await tally.api("POST", "/v1/events", { events: [
    { id: "t1", customer: "acme", type: "TOKEN_USAGE", properties: { provider: "OPENAI", model: "gpt-4o", input_tokens: 1500 } },
    { id: "t2", customer: "acme", type: "TOKEN_USAGE", properties: { provider: "ANTHROPIC", model: "claude", input_tokens: 500 } },
  ] });
  assert.equal(r.status, 202);
});

after(async () => {
  await browser?.close();
  await tally?.stop();
});

test("the page and its assets: CSP, no-cache page, hashed immutable assets", async () => {
  const page = await fetch(tally.url + "/dashboard/");
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type"), /^text\/html/);
  assert.equal(page.headers.get("cache-control"), "no-cache");
  const csp = page.headers.get("content-security-policy");
  assert.match(csp, /default-src 'self'/);
  assert.match(csp, /script-src 'self';/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  const html = await page.text();
  assert.doesNotMatch(html, /<script>|<style|\sstyle=|\son[a-z]+=/i, "no inline script, style or handler");
  const urls = [...html.matchAll(/(?:src|href)="(\/dashboard\/assets\/[^"]+)"/g)].map((m) => m[1]);
  assert.equal(urls.length, 3, html);
  for (const u of urls) {
    assert.match(u, /\.[0-9a-f]{16}\.(js|css)$/);
    const a = await fetch(tally.url + u);
    assert.equal(a.status, 200, u);
    assert.equal(a.headers.get("cache-control"), "public, max-age=31536000, immutable");
    assert.match(a.headers.get("content-type"), u.endsWith(".js") ? /^text\/javascript/ : /^text\/css/);
    assert.ok((await a.arrayBuffer()).byteLength > 100);
  }
  const chart = urls.find((u) => u.includes("chart"));
  assert.ok(chart, "Chart.js is embedded");
  const missing = await fetch(tally.url + "/dashboard/assets/app.0000000000000000.js");
  assert.equal(missing.status, 404);
  assert.equal((await missing.json()).error, "NOT_FOUND");
  const bare = await fetch(tally.url + "/dashboard", { redirect: "manual" });
  assert.equal(bare.status, 308);
  assert.equal(bare.headers.get("location"), "/dashboard/");
});

test("a wrong key is refused and opens no session", async () => {
  const page = await newPage();
  await signIn(page, "not-a-key-at-all");
  await page.waitForFunction(() => document.querySelector("#signin-error").textContent !== "");
  assert.equal(await page.textContent("#signin-error"), "Invalid or missing API key");
  assert.equal(await page.isVisible("#customer-view"), false);
  assert.deepEqual(await page.context().cookies(), []);
  // The session routes' own refusals.
  let r = await fetch(tally.url + "/dashboard/session", { method: "POST",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ key: 42 }) });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error, "VALIDATION_ERROR");
  r = await fetch(tally.url + "/dashboard/session", { method: "POST",
    headers: { "content-type": "text/plain" }, body: JSON.stringify({ key: acmeKey }) });
  assert.equal(r.status, 415, "a cross-site form cannot sign anyone in");
  r = await fetch(tally.url + "/dashboard/session", { method: "POST",
    headers: { "content-type": "application/json", origin: "http://evil.example" },
    body: JSON.stringify({ key: acmeKey }) });
  assert.equal(r.status, 403);
  assert.equal(r.headers.get("set-cookie"), null);
  r = await fetch(tally.url + "/dashboard/session");
  assert.equal(r.status, 401);
  // The cookie's attributes; behind a TLS proxy it is also Secure.
  r = await fetch(tally.url + "/dashboard/session", { method: "POST",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ key: acmeKey }) });
  assert.equal(r.status, 201);
  assert.match(r.headers.get("set-cookie"),
               /^tally_session=[0-9a-f]{64}; Path=\/; HttpOnly; SameSite=Strict; Max-Age=3600$/);
  const session = await r.json();
  assert.equal(session.customer, "acme");
  assert.equal(session.admin, false);
  assert.match(session.csrf_token, /^[0-9a-f]{64}$/);
  assert.equal(JSON.stringify(session).includes(acmeKey), false, "the key is never echoed");
  r = await fetch(tally.url + "/dashboard/session", { method: "POST",
    headers: { "content-type": "application/json", "x-forwarded-proto": "https" },
    body: JSON.stringify({ key: acmeKey }) });
  assert.match(r.headers.get("set-cookie"), /; Secure$/);
  // A key without the read scope cannot open the dashboard.
  const ingestOnly = await tally.api("POST", "/v1/keys", { customer: "acme", scopes: ["ingest"] });
  assert.equal(ingestOnly.status, 201, JSON.stringify(ingestOnly.body));
  r = await fetch(tally.url + "/dashboard/session", { method: "POST",
    headers: { "content-type": "application/json" }, body: JSON.stringify({ key: ingestOnly.body.key }) });
  assert.equal(r.status, 403);
  r = await fetch(tally.url + "/v1/customers/acme/limits", { headers: { cookie: "tally_session=" + "ab".repeat(32) } });
  assert.equal(r.status, 401, "an unknown session token is no credential");
  await page.context().close();
});

test("customer view: limits, bars and countdown equal the API's, and follow usage live", async () => {
  const page = await newPage();
  await signIn(page, acmeKey);
  await page.waitForSelector("#limits li");
  assert.equal(await page.textContent("#customer-title"), "Acme Inc.");
  // The key is gone from the page and the session cookie is out of the script's reach.
  assert.equal(await page.inputValue("#signin-key"), "");
  const cookies = await page.context().cookies();
  assert.equal(cookies.length, 1);
  assert.equal(cookies[0].name, "tally_session");
  assert.equal(cookies[0].httpOnly, true);
  assert.equal(cookies[0].sameSite, "Strict");
  assert.equal(await page.evaluate(() => document.cookie), "");
  assert.equal(await page.evaluate(() => localStorage.length + sessionStorage.length), 0);

  const colours = {
    ok: await cssVar(page, "--ok"), warning: await cssVar(page, "--warning"),
    critical: await cssVar(page, "--critical"), exceeded: await cssVar(page, "--exceeded"),
  };
  assert.equal(new Set(Object.values(colours)).size, 4);

  // The numbers on the page are the API's.
  const matchesApi = async () => {
    const api = await asCustomer(acmeKey, "GET", "/v1/customers/acme/limits");
    assert.equal(api.status, 200);
    const shown = await pageLimits(page);
    assert.deepEqual(shown.map((l) => l.rule), api.body.limits.map((l) => l.rule));
    for (const [i, l] of api.body.limits.entries()) {
      const s = shown[i];
      assert.equal(s.used, groupNumber(l.used), l.rule);
      assert.equal(s.valuenow, String(l.used));
      if (l.limit === "unlimited") {
        assert.equal(s.limit, "unlimited");
        assert.equal(s.percent, null);
        assert.equal(s.level, "unlimited");
      } else {
        assert.equal(s.limit, groupNumber(l.limit));
        assert.equal(s.percent, l.percent.toFixed(2) + "%");
        assert.equal(s.width, Math.min(100, l.percent) + "%");
      }
      // The reset countdown counts to the API's reset.
      const m = s.countdown.match(/^resets in (?:(\d+)d )?(?:(\d+)h )?(?:(\d+)m )?(\d+)s$/);
      assert.ok(m, s.countdown);
      const left = ((+m[1] || 0) * 86400 + (+m[2] || 0) * 3600 + (+m[3] || 0) * 60 + +m[4]) * 1000;
      assert.ok(Math.abs(Date.parse(l.reset) - Date.now() - left) < 3000, `${s.countdown} vs ${l.reset}`);
    }
    assert.deepEqual(api.body.alert_thresholds,
                     [{ percent: 50, level: "warning" }, { percent: 80, level: "warning" },
                      { percent: 95, level: "critical" }]);
    return shown;
  };
  const waitForUsed = (used) => page.waitForFunction(
    (u) => document.querySelector('#limits li[data-rule="api_calls per day"] .limit-used')?.textContent === u,
    String(used), { timeout: LIVE_MS + 500 });

  let shown = await matchesApi();
  let day = shown.find((l) => l.rule === "api_calls per day");
  assert.equal(day.used, "4");
  assert.equal(day.level, "ok");
  assert.equal(day.fill, colours.ok);
  assert.equal(shown.find((l) => l.rule === "tokens_in per month").used, "2,000");
  await shot(page, "customer-view");

  // The countdown ticks.
  const c1 = day.countdown;
  await page.waitForFunction((c) => document.querySelector(
    '#limits li[data-rule="api_calls per day"] .countdown').textContent !== c, c1, { timeout: 2500 });

  // Each threshold, reached by new usage, recolours the bar within 2 s (no reload).
  // 90 % is past 80 but short of 95: still "warning".
  for (const [add, used, level] of [[1, 5, "warning"], [3, 8, "warning"], [1, 9, "warning"], [1, 10, "critical"]]) {
    const t0 = Date.now();
    await calls(add, "chat");
    await waitForUsed(used);
    assert.ok(Date.now() - t0 <= LIVE_MS + 500);
    shown = await matchesApi();
    day = shown.find((l) => l.rule === "api_calls per day");
    assert.equal(day.level, level, `at ${used} of 10`);
    assert.equal(day.fill, colours[level]);
  }
  assert.equal(day.percent, "100.00%");

  // Alerts fired by that usage appear on the page (they are polled every second).
  const alerts = await asCustomer(acmeKey, "GET", "/v1/alerts?customer=acme");
  assert.deepEqual(alerts.body.alerts.map((a) => a.threshold_percent), [50, 80, 95]);
  await page.waitForFunction(() => document.querySelectorAll("#alerts li").length === 3,
                             null, { timeout: LIVE_MS + 500 });
  const shownAlerts = await page.$$eval("#alerts li", (l) => l.map((x) => [x.dataset.id, x.dataset.level]));
  assert.deepEqual(shownAlerts, alerts.body.alerts.reverse().map((a) => [a.id, a.level]));
  // The rate-limit state: none denied yet; a denied check shows within 2 s, as the API counts it.
  assert.equal((await asCustomer(acmeKey, "GET", "/v1/customers/acme/denials")).body.denied_last_hour, 0);
  await page.waitForFunction(() => document.getElementById("rate-denied").textContent === "0",
                             null, { timeout: LIVE_MS + 500 });
  for (let i = 0; i < 2; i++) {
    const denied = await asCustomer(acmeKey, "POST", "/v1/check", { customer: "acme", meter: "api_calls", amount: 1 });
    assert.equal(denied.status, 429, JSON.stringify(denied.body));
    assert.equal(denied.body.allowed, false);
  }
  const t429 = Date.now();
  const denials = await asCustomer(acmeKey, "GET", "/v1/customers/acme/denials");
  assert.equal(denials.status, 200);
  assert.equal(denials.body.denied_last_hour, 2);
  assert.equal(denials.body.per_minute.length, 60);
  assert.equal(denials.body.per_minute.at(-1), 2);
  await page.waitForFunction(() => document.getElementById("rate-denied").textContent === "2",
                             null, { timeout: LIVE_MS + 500 });
  assert.ok(Date.now() - t429 <= LIVE_MS + 500);
  assert.equal(await page.textContent("#rate-last"), " · the last one this minute");
  // Another customer's denials are not this customer's to read.
  assert.equal((await asCustomer(acmeKey, "GET", "/v1/customers/globex/denials")).status, 403);
  await page.waitForSelector("#history-table tbody tr", { state: "attached" });
  await shot(page, "customer-view-limit-reached");
  await page.context().close();
});

test("history chart: 7 daily points (and weekly, monthly) equal the API's series", async () => {
  const page = await newPage();
  await signIn(page, acmeKey);
  await page.waitForSelector("#history-table tbody tr", { state: "attached" });
  const chartPoints = () => page.evaluate(() => {
    const c = Chart.getChart(document.getElementById("history-chart"));
    return { labels: c.data.labels, values: c.data.datasets[0].data };
  });
  for (const [window, n] of [["day", 7], ["week", 12], ["month", 12]]) {
    await page.selectOption("#history-window", window);
    await page.waitForFunction((w) => document.getElementById("history-chart").dataset.window === w, window);
    await page.waitForFunction((k) => document.querySelectorAll("#history-table tbody tr").length === k, n);
    const api = await asCustomer(acmeKey, "GET",
      `/v1/customers/acme/usage/history?meter=api_calls&window=${window}&windows=${n}`);
    assert.equal(api.status, 200);
    assert.equal(api.body.timezone, "Europe/Berlin", "the customer's zone");
    assert.equal(api.body.data.length, n);
    const pts = await chartPoints();
    assert.deepEqual(pts.values, api.body.data.map((p) => Number(p.value)), window);
    const rows = await page.$$eval("#history-table tbody tr",
      (r) => r.map((x) => [x.dataset.windowStart, x.cells[1].textContent]));
    assert.deepEqual(rows, api.body.data.map((p) => [p.window_start, groupNumber(p.value)]));
    if (window === "day") {
      // 10 calls today, 3 two days ago, 2 five days ago: the known usage, in the right days.
      assert.equal(pts.values[6], 10);
      assert.equal(pts.values[4], 3);
      assert.equal(pts.values[1], 2);
      assert.equal(pts.values.reduce((a, b) => a + b, 0), 15);
      await shot(page, "customer-history-daily");
    }
  }
  await page.context().close();
});

test("breakdown and wallet equal the API's", async () => {
  const page = await newPage();
  await signIn(page, acmeKey);
  await page.waitForSelector("#breakdown tbody tr");
  for (const by of ["service", "provider"]) {
    await page.selectOption("#breakdown-by", by);
    await page.waitForFunction((b) => document.getElementById("breakdown-dim").textContent === b, by);
    const api = await asCustomer(acmeKey, "GET", `/v1/customers/acme/report?group_by=${by}`);
    assert.equal(api.status, 200);
    const expected = api.body.breakdown.flatMap((b) => b.groups.map((g) =>
      [b.meter, g.value, groupNumber(g.usage), g.percent === null ? "–" : g.percent.toFixed(2) + "%"]));
    assert.ok(expected.length >= 2, JSON.stringify(api.body.breakdown));
    const rows = await page.$$eval("#breakdown tbody tr",
      (r) => r.map((x) => [x.dataset.meter, x.dataset.value, x.cells[2].textContent, x.cells[3].textContent]));
    assert.deepEqual(rows, expected, by);
  }
  // The wallet: 1000 topped up, 2000 tokens at 0.001 USD = 2 USD = 2000 credits burned.
  const w = await asCustomer(acmeKey, "GET", "/v1/customers/acme/wallet");
  await page.waitForFunction(() => document.getElementById("wallet-balance").textContent !== "–");
  assert.equal(await page.textContent("#wallet-balance"), groupNumber(w.body.balance));
  assert.equal(w.body.balance, -1000);
  const t = await asCustomer(acmeKey, "GET", "/v1/customers/acme/wallet/transactions");
  const ledger = await page.$$eval("#ledger tbody tr", (r) => r.map((x) => [x.dataset.id, x.cells[2].textContent]));
  assert.deepEqual(ledger, t.body.transactions.slice(-10).reverse().map((x) => [x.id, groupNumber(x.amount)]));
  await shot(page, "customer-breakdown-wallet");
  await page.context().close();
});

test("a customer key cannot open another customer's page", async () => {
  const page = await newPage();
  await signIn(page, acmeKey);
  await page.waitForSelector("#limits li");
  await page.goto(tally.url + "/dashboard/#/customers/globex");
  await page.waitForFunction(() => document.getElementById("customer-error").textContent !== "");
  assert.equal(await page.textContent("#customer-error"), "Not allowed: this key may only read customer 'acme'");
  assert.equal(await page.isVisible("#customer-body"), false);
  assert.equal(await page.textContent("#customer-title"), "globex", "only the id from the URL");
  // The API refuses the cookie as it refuses the key.
  const status = await page.evaluate(async () => (await fetch("/v1/customers/globex/limits")).status);
  assert.equal(status, 403);
  await page.context().close();
});

test("writes with the session cookie need the CSRF token", async () => {
  const page = await newPage();
  await signIn(page, ADMIN_KEY);
  await page.waitForSelector("#admin-view:not([hidden])");
  const before = (await tally.api("GET", "/v1/customers/globex/wallet")).body.balance;
  const noToken = await page.evaluate(async () => {
    const r = await fetch("/v1/customers/globex/wallet/transactions", {
      method: "POST", headers: { "content-type": "application/json" },
      body: JSON.stringify({ type: "top_up", amount: 5 }) });
    return { status: r.status, body: await r.json() };
  });
  assert.equal(noToken.status, 403);
  assert.equal(noToken.body.error, "CSRF_TOKEN_INVALID");
  const wrong = await page.evaluate(async () => (await fetch("/v1/customers/globex/wallet/transactions", {
    method: "POST", headers: { "content-type": "application/json", "x-csrf-token": "0".repeat(64) },
    body: JSON.stringify({ type: "top_up", amount: 5 }) })).status);
  assert.equal(wrong, 403);
  assert.equal((await tally.api("GET", "/v1/customers/globex/wallet")).body.balance, before, "nothing changed");
  // With the session's token (as the page sends it) the same write goes through.
  const withToken = await page.evaluate(async () => {
    const s = await (await fetch("/dashboard/session")).json();
    const r = await fetch("/v1/customers/globex/wallet/transactions", {
      method: "POST", headers: { "content-type": "application/json", "x-csrf-token": s.csrf_token },
      body: JSON.stringify({ type: "top_up", amount: 5 }) });
    return r.status;
  });
  assert.equal(withToken, 201);
  assert.equal((await tally.api("GET", "/v1/customers/globex/wallet")).body.balance, before + 5);
  // Signing out needs it too.
  const out = await page.evaluate(async () => (await fetch("/dashboard/session", { method: "DELETE" })).status);
  assert.equal(out, 403);
  assert.equal(await page.evaluate(async () => (await fetch("/dashboard/session")).status), 200, "still signed in");
  await page.click("#sign-out");
  await page.waitForSelector("#signin:not([hidden])");
  assert.equal(await page.evaluate(async () => (await fetch("/v1/customers/globex")).status), 401);
  await page.context().close();
});

test("a customer named with HTML is shown as text", async () => {
  const name = "<img src=x onerror=alert(1)>";
  let r = await tally.api("POST", "/v1/customers", { id: "xss", name, plan: "starter" });
  assert.equal(r.status, 201);
  r = await tally.api("POST", "/v1/events", { events: [
    { id: "x1", customer: "xss", type: "api_call", properties: { service: "<b>svc</b>" } }] });
  assert.equal(r.status, 202);
  const page = await newPage();
  await signIn(page, ADMIN_KEY);
  await page.waitForSelector("#admin-view:not([hidden])");
  await page.goto(tally.url + "/dashboard/#/customers/xss");
  await page.waitForFunction((n) => document.getElementById("customer-title").textContent === n, name);
  await page.waitForSelector("#breakdown tbody tr");
  assert.equal(await page.$$eval("#breakdown tbody tr", (r) => r[0].cells[1].textContent), "<b>svc</b>");
  assert.equal(await page.$$eval("img", (i) => i.length), 0);
  assert.equal(await page.$$eval("main b", (i) => i.length), 0);
  await page.waitForTimeout(300);
  assert.deepEqual(page.dialogs, []);
  await shot(page, "customer-xss-name");
  await page.context().close();
});

test("revoking the key ends its sessions at once", async () => {
  let r = await tally.api("POST", "/v1/keys", { customer: "acme", name: "to revoke" });
  const key = r.body.key;
  const page = await newPage();
  await signIn(page, key);
  await page.waitForSelector("#limits li");
  r = await tally.api("DELETE", "/v1/keys/" + r.body.id);
  assert.equal(r.status, 200);
  await page.waitForSelector("#signin:not([hidden])", { timeout: LIVE_MS + 500 });
  assert.equal(await page.evaluate(async () => (await fetch("/v1/customers/acme/limits")).status), 401);
  // And the revoked key cannot sign in again.
  await signIn(page, key);
  await page.waitForFunction(() => document.querySelector("#signin-error").textContent !== "");
  assert.equal(await page.textContent("#signin-error"), "this API key has been revoked");
  await page.context().close();
});

test("an expired session is refused and the page asks to sign in again", async () => {
  const short = await startTally("[server]\ndashboard_session_seconds = 2\n" + CONFIG);
  try {
    let r = await short.api("POST", "/v1/customers", { id: "acme", name: "Acme", plan: "starter" });
    assert.equal(r.status, 201);
    r = await short.api("POST", "/v1/keys", { customer: "acme" });
    const page = await newPage();
    await signIn(page, r.body.key, short.url);
    await page.waitForSelector("#limits li");
    const cookie = (await page.context().cookies())[0];
    assert.ok(cookie.expires > Date.now() / 1000 && cookie.expires <= Date.now() / 1000 + 3, `${cookie.expires}`);
    await page.waitForSelector("#signin:not([hidden])", { timeout: 4000 });
    assert.match(await page.textContent("#signin-error"), /expired/);
    // The old token is refused by the API even when sent by hand.
    const res = await fetch(short.url + "/v1/customers/acme/limits",
                            { headers: { cookie: `tally_session=${cookie.value}` } });
    assert.equal(res.status, 401);
    assert.match((await res.json()).message, /expired/);
    await page.context().close();
  } finally {
    await short.stop();
  }
});

test("phone width: the customer view fits and is keyboard-reachable", async () => {
  const page = await newPage({ width: 390, height: 844 });
  await signIn(page, acmeKey);
  await page.waitForSelector("#limits li");
  await page.waitForSelector("#history-table tbody tr", { state: "attached" });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow}px wider than the screen`);
  // Every control has a label, and Tab reaches them.
  const unlabelled = await page.$$eval("select, input", (els) =>
    els.filter((e) => !(e.labels && e.labels.length) && !e.getAttribute("aria-label")).map((e) => e.id));
  assert.deepEqual(unlabelled, []);
  const reached = new Set();
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press("Tab");
    reached.add(await page.evaluate(() => document.activeElement.id || document.activeElement.tagName));
  }
  assert.ok(reached.has("history-meter") && reached.has("sign-out"), [...reached].join(","));
  await shot(page, "customer-view-phone");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("admin view: the list's order and paging equal the API's; a plan change takes effect", async () => {
  // 60 more customers, some with usage, so that the list has two pages and a usage order.
  for (let i = 0; i < 60; i++) {
    const id = `c-${String(i).padStart(3, "0")}`;
    // The first twenty belong to two organizations, for the roll-up.
    const organization = i < 10 ? "org-north" : i < 20 ? "org-south" : undefined;
    const r = await tally.api("POST", "/v1/customers", { id, name: `Customer ${59 - i}`, plan: "starter", organization });
    assert.equal(r.status, 201);
  }
  const events = [];
  for (let i = 0; i < 60; i += 7) {
    for (let k = 0; k < (i % 10); k++) {
      events.push({ id: `adm-${i}-${k}`, customer: `c-${String(i).padStart(3, "0")}`, type: "api_call",
                    properties: { service: "chat" } });
    }
  }
  assert.equal((await tally.api("POST", "/v1/events", { events })).status, 202);

  const page = await newPage();
  await signIn(page, ADMIN_KEY);
  await page.waitForSelector("#admin-customers tbody tr");
  const shownIds = () => page.$$eval("#admin-customers tbody tr", (r) => r.map((x) => x.dataset.id));
  const apiIds = async (qs) => {
    const r = await tally.api("GET", "/v1/admin/customers?" + qs);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  const waitRows = (ids) => page.waitForFunction((want) => JSON.stringify(
    [...document.querySelectorAll("#admin-customers tbody tr")].map((x) => x.dataset.id)) === want,
    JSON.stringify(ids), { timeout: 3000 });

  let api = await apiIds("sort=id&order=asc&offset=0&limit=50");
  assert.equal(api.total, 63, "acme, globex, xss and the 60");
  await waitRows(api.customers.map((c) => c.id));
  assert.equal(await page.textContent("#admin-page"), "1–50 of 63");

  // Live rates from the server's own counters: ingest and checks made now show up.
  const live = [];
  for (let i = 0; i < 20; i++) {
    live.push({ id: `live-${i}`, customer: "globex", type: "api_call", properties: { service: "chat" } });
  }
  assert.equal((await tally.api("POST", "/v1/events", { events: live })).status, 202);
  for (let i = 0; i < 5; i++) {
    const r = await tally.api("POST", "/v1/check", { customer: "globex", meter: "api_calls", amount: 1 });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  // The figures of one refresh: both rates up, and the p99s of the server's window, each the
  // bound of a bucket of its histogram at /metrics.
  const shown = await (await page.waitForFunction(() => {
    const t = (id) => document.getElementById(id).textContent;
    return Number(t("live-ingest")) > 0 && Number(t("live-checks")) > 0 && t("live-ingest-p99") !== "–" &&
      t("live-check-p99") !== "–" && [t("live-ingest-p99"), t("live-check-p99")];
  }, null, { timeout: 7000 })).jsonValue();
  const liveApi = await tally.api("GET", "/v1/admin/live");
  assert.equal(liveApi.status, 200);
  assert.ok(liveApi.body.ingest.events_accepted_total > 0);
  assert.ok(liveApi.body.check.requests_total >= 5);
  const metrics = await (await fetch(tally.url + "/metrics")).text();
  for (const [name, text] of [["tally_ingest_ack_duration_seconds", shown[0]], ["tally_check_duration_seconds", shown[1]]]) {
    const bounds = [...metrics.matchAll(new RegExp(name + '_bucket\\{le="([^"+]+)"\\}', "g"))]
        .map((m) => String(Number((Number(m[1]) * 1000).toPrecision(3))));
    assert.ok(bounds.length > 0, name);
    assert.match(text, /^≤ [\d.]+ ms$/);
    assert.ok(bounds.includes(text.slice(2, -3)), `${text} is one of ${name}'s bounds ${bounds}`);
  }
  assert.equal((await asCustomer(acmeKey, "GET", "/v1/admin/live")).status, 403);

  // Organizations rolled up: the page's rows are the API's, highest limit first.
  const orgs = await tally.api("GET", "/v1/admin/organizations?limit=20");
  assert.equal(orgs.status, 200);
  assert.deepEqual(orgs.body.organizations.map((o) => [o.organization, o.customers]),
                   [["org-north", 10], ["org-south", 10]], "c-007 (7 calls) is in org-north");
  assert.equal(orgs.body.organizations[0].max_limit_customer, "c-007");
  await page.waitForSelector("#admin-orgs tbody tr");
  const shownOrgs = await page.$$eval("#admin-orgs tbody tr", (r) => r.map((x) => [x.dataset.id, x.cells[1].textContent, x.cells[2].textContent]));
  assert.deepEqual(shownOrgs, orgs.body.organizations.map((o) => [o.organization, String(o.customers),
    (o.max_limit_percent === null ? "–" : o.max_limit_percent.toFixed(2) + "%") + (o.max_limit_customer ? " " + o.max_limit_customer : "")]));
  await shot(page, "admin-view");

  await page.click("#admin-next");
  api = await apiIds("sort=id&order=asc&offset=50&limit=50");
  assert.equal(api.customers.length, 13);
  await waitRows(api.customers.map((c) => c.id));
  assert.equal(await page.textContent("#admin-page"), "51–63 of 63");
  assert.equal(await page.isDisabled("#admin-next"), true);

  // Sorted by the highest limit percentage, largest first; the figures are the API's.
  await page.click('th[data-sort="usage"] button');
  api = await apiIds("sort=usage&order=desc&offset=0&limit=50");
  await waitRows(api.customers.map((c) => c.id));
  assert.equal(api.customers[0].id, "acme", "acme is at 100 % of its daily limit");
  assert.equal(await page.getAttribute('th[data-sort="usage"]', "aria-sort"), "descending");
  const pcts = await page.$$eval("#admin-customers tbody tr", (r) => r.map((x) => x.cells[4].textContent));
  assert.deepEqual(pcts, api.customers.map((c) => c.max_limit_percent === null ? "–" : c.max_limit_percent.toFixed(2) + "%"));
  const limits = await tally.api("GET", "/v1/customers/c-049/limits");
  const c049 = api.customers.find((c) => c.id === "c-049");
  assert.equal(c049.max_limit_percent, limits.body.limits[0].percent, "the same figure as its limits");

  // Search.
  await page.fill("#admin-search", "customer 5");
  api = await apiIds("sort=usage&order=desc&offset=0&limit=50&q=customer%205");
  assert.equal(api.total, 11, "Customer 5 and Customer 50 to 59");
  await waitRows(api.customers.map((c) => c.id));

  // Top customers of the month come from the API's ranking.
  const top = await tally.api("GET", "/v1/admin/usage/top?meter=api_calls&n=10");
  // (The list refreshes every 5 s: the usage just ingested for globex may take that long.)
  const topIds = JSON.stringify(top.body.customers.map((c) => c.customer));
  await page.waitForFunction((want) => JSON.stringify([...document.querySelectorAll(
    "#top-customers tbody tr")].map((x) => x.dataset.id)) === want, topIds, { timeout: 7000 });
  assert.equal(JSON.parse(topIds)[0], "globex", "25 calls just now");

  // A plan change from the customer's page: the API's customer and limits follow.
  await page.goto(tally.url + "/dashboard/#/customers/c-007");
  await page.waitForSelector("#actions:not([hidden])");
  await page.waitForSelector('#limits li[data-rule="api_calls per day"]');
  assert.equal(await page.textContent('#limits li[data-rule="api_calls per day"] .limit-limit'), "10");
  await page.fill("#act-plan-value", "pro");
  await page.click("#act-plan button[type=submit]");
  await page.waitForFunction(() => document.getElementById("act-result").textContent === "Plan change: done.");
  assert.equal((await tally.api("GET", "/v1/customers/c-007")).body.plan, "pro");
  await page.waitForFunction(() => document.querySelector(
    '#limits li[data-rule="api_calls per day"] .limit-limit')?.textContent === "1,000", null, { timeout: 3000 });
  // A plan that does not exist is refused with the API's message, and nothing changes.
  await page.fill("#act-plan-value", "no-such-plan");
  await page.click("#act-plan button[type=submit]");
  await page.waitForFunction(() => document.getElementById("act-result").textContent.startsWith("Plan change failed"));
  assert.equal((await tally.api("GET", "/v1/customers/c-007")).body.plan, "pro");
  // Credits and a key, through the same API.
  await page.fill("#act-credits-amount", "250");
  await page.click("#act-credits button[type=submit]");
  await page.waitForFunction(() => document.getElementById("act-result").textContent === "Credits: done.");
  assert.equal((await tally.api("GET", "/v1/customers/c-007/wallet")).body.balance, 250);
  await page.waitForFunction(() => document.getElementById("wallet-balance").textContent === "250");
  await page.click("#act-key button[type=submit]");
  await page.waitForFunction(() => document.getElementById("act-key-secret").textContent.startsWith("Shown once: "));
  const secret = (await page.textContent("#act-key-secret")).replace("Shown once: ", "");
  assert.equal((await asCustomer(secret, "GET", "/v1/customers/c-007")).status, 200, "the new key works");
  await shot(page, "admin-customer-actions");
  // Suspend, activate, reset and revoke the new key, then read the audit log on the admin view:
  // every action is there with the session's key and its time, newest first, as the API has it.
  const session = await page.evaluate(() => fetch("/dashboard/session").then((r) => r.json()));
  for (const label of ["Suspend", "Activate"]) {
    await page.waitForFunction((l) => document.getElementById("act-status-button").textContent === l, label);
    await page.click("#act-status-button");
    await page.waitForFunction((l) => document.getElementById("act-result").textContent === l + ": done.", label);
  }
  await page.click("#act-reset button[type=submit]");
  await page.waitForFunction(() => document.getElementById("act-result").textContent === "Reset: done.");
  const newKey = (await tally.api("GET", "/v1/keys")).body.keys.find((k) => k.customer === "c-007" && !k.revoked_at);
  await page.click(`#act-keys tr[data-id="${newKey.id}"] button`);
  await page.waitForFunction((id) => document.getElementById("act-result").textContent === `Revoke ${id}: done.`, newKey.id);
  assert.equal((await asCustomer(secret, "GET", "/v1/customers/c-007")).status, 401, "revoked");
  const audit = await tally.api("GET", "/v1/admin/audit?limit=20");
  assert.equal(audit.status, 200);
  assert.deepEqual(audit.body.entries.slice(0, 7).map((e) => e.action),
                   ["key_revoke", "reset", "status_change", "status_change", "key_create",
                    "wallet_transaction", "plan_change"], "the refused plan change left no record");
  for (const e of audit.body.entries.slice(0, 7)) {
    assert.equal(e.actor, session.key_id);
    assert.ok(Math.abs(Date.parse(e.at) - Date.now()) < 60e3, e.at);
  }
  assert.equal(audit.body.entries[0].key, newKey.id);
  assert.deepEqual([audit.body.entries[6].from, audit.body.entries[6].to], ["starter", "pro"]);
  await page.goto(tally.url + "/dashboard/#/admin");
  // Only the hash changes, so the table drawn on the earlier visit is still there until the view
  // has read the log again: wait for this log's rows, not for any row.
  await page.waitForFunction((n) => {
    const rows = document.querySelectorAll("#admin-audit tbody tr");
    return rows.length === n && rows[0].dataset.action === "key_revoke";
  }, audit.body.entries.length);
  const shownAudit = await page.$$eval("#admin-audit tbody tr", (r) => r.map((x) => [x.dataset.action, x.cells[1].textContent, x.cells[3].textContent]));
  assert.deepEqual(shownAudit, audit.body.entries.map((e) => [e.action, e.actor, e.customer ?? "–"]));
  assert.equal(await page.textContent('#admin-audit tbody tr[data-action="plan_change"] td:last-child'), "starter → pro");
  await shot(page, "admin-audit");
  assert.deepEqual(page.errors, []);
  await page.context().close();
});

test("the API the dashboard reads refuses bad parameters", async () => {
  for (const qs of ["sort=size", "order=up", "limit=0", "limit=1001", "offset=-1", "offset=x", "page=2"]) {
    const r = await tally.api("GET", "/v1/admin/customers?" + qs);
    assert.equal(r.status, 400, qs);
    assert.equal(r.body.error, "VALIDATION_ERROR", qs);
  }
  const customer = await asCustomer(acmeKey, "GET", "/v1/admin/customers");
  assert.equal(customer.status, 403);
  const far = await tally.api("GET", "/v1/admin/customers?offset=100000");
  assert.equal(far.status, 200);
  assert.deepEqual(far.body.customers, []);
  for (const qs of ["windows=0", "windows=10001",
                    "windows=7&from=2025-01-01T00:00:00Z&to=2025-01-08T00:00:00Z"]) {
    const r = await tally.api("GET", "/v1/customers/acme/usage/history?meter=api_calls&" + qs);
    assert.equal(r.status, 400, qs);
    assert.equal(r.body.error, "VALIDATION_ERROR", qs);
  }
});
