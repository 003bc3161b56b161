// docs/openapi.json against a real `tally serve`: a realistic flow through Tally's own API
// (customers, keys, ingest, checks allowed and denied, reservations, ad-hoc limits, queries,
// usage, wallets, prices, reports, exports, alerts, archiving) and its errors (400, 401, 402,
// 403, 404, 409, 413, 415, 422, 429), each answer checked against the document by
// OpenApiChecker (tests/clients/openapi.mjs): its status is listed for the route, its body
// matches the schema for that status. The last test requires that every operation of the
// document was answered with a 2xx at least once, so no route goes untested.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { startTally, ADMIN_KEY } from "./tally.mjs";
import { OpenApiChecker } from "./openapi.mjs";

const document = JSON.parse(readFileSync(new URL("../../docs/openapi.json", import.meta.url), "utf8"));
const checker = new OpenApiChecker(document);

const CONFIG = `
[server]
batch_events_max = 20

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]
unit = "calls"

[[meters]]
key = "tokens"
event_type = "llm"
aggregation = "sum"
value = "$.tokens"
group_by = ["model"]
unit = "tokens"

[[meters]]
key = "users"
event_type = "api_call"
aggregation = "unique_count"
value = "$.user"

[enforcement]
default_plan = "starter"

[[plans]]
key = "starter"
features = ["chat"]
alert_thresholds = [50, 100]
limits = [
  { meter = "api_calls", period = "day", amount = 4 },
  { meter = "tokens", period = "month", amount = 100000 },
]

[[plans]]
key = "prepaid"
prepaid = true
limits = [{ meter = "tokens", period = "month", amount = "unlimited" }]

[credits]
per_currency_unit = 1000

[[prices]]
meter = "tokens"
unit_price = "0.001"

[[routes]]
path = "/api/*"
meter = "api_calls"
`;

// A second server for what needs other settings: customers are not created by ingest (422),
// and every key may make few requests a minute (429 RATE_LIMITED).
const STRICT_CONFIG = `
[server]
auto_create_customers = false

[enforcement]
api_rate_limit_per_minute = 3

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
`;

let tally;
let strict;
before(async () => {
  [tally, strict] = await Promise.all([startTally(CONFIG), startTally(STRICT_CONFIG)]);
});
after(async () => {
  await Promise.all([tally?.stop(), strict?.stop()]);
});

// One request, checked against the document. `body` is sent as JSON unless it is a string.
async function call(method, path, { key = ADMIN_KEY, body, type = "application/json", headers = {}, server = tally } = {}) {
  const h = { ...headers };
  if (key) h["x-api-key"] = key;
  let requestBody;
  if (body !== undefined) {
    requestBody = typeof body === "string" ? body : JSON.stringify(body);
    h["content-type"] = type;
  }
  const response = await fetch(server.url + path, { method, headers: h, body: requestBody });
  const text = method === "HEAD" ? "" : await response.text();
  checker.check({ method, path, requestBody, requestType: type, response, text });
  const media = (response.headers.get("content-type") ?? "").split(";")[0].trim();
  const parsed = media === "application/json" && text !== "" ? JSON.parse(text) : text;
  return { status: response.status, body: parsed, headers: response.headers };
}

const now = () => new Date(Date.now() - 60_000).toISOString();
const ids = {};

test("GET /openapi.json serves docs/openapi.json without a key", async () => {
  const r = await call("GET", "/openapi.json", { key: null });
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, document);
  assert.equal((await call("HEAD", "/openapi.json", { key: null })).status, 200);
});

test("operations routes", async () => {
  assert.equal((await call("GET", "/health", { key: null })).status, 200);
  assert.equal((await call("GET", "/ready", { key: null })).status, 200);
  const metrics = await call("GET", "/metrics", { key: null });
  assert.equal(metrics.status, 200);
  assert.match(metrics.body, /tally_events_accepted_total/);
});

test("customers and keys, with their errors", async () => {
  let r = await call("POST", "/v1/customers", { body: { id: "acme", name: "Acme", timezone: "UTC", metadata: { tier: "gold" } } });
  assert.equal(r.status, 201);
  assert.equal((await call("POST", "/v1/customers", { body: { id: "acme" } })).status, 409);
  assert.equal((await call("POST", "/v1/customers", { body: "{not json" })).status, 400);
  assert.equal((await call("POST", "/v1/customers", { body: { id: "x", colour: "red" } })).status, 400);
  assert.equal((await call("POST", "/v1/customers", { body: "id=x", type: "text/plain" })).status, 415);
  assert.equal((await call("POST", "/v1/customers", { key: null, body: { id: "x" } })).status, 401);
  assert.equal((await call("GET", "/v1/customers", { key: "tk_unknown" })).status, 401);
  assert.equal((await call("POST", "/v1/customers", { body: { id: "globex", organization: "acme-group" } })).status, 201);
  assert.equal((await call("POST", "/v1/customers", { body: { id: "prepaid-co", plan: "prepaid" } })).status, 201);

  r = await call("PATCH", "/v1/customers/acme", { body: { organization: "acme-group", email: "billing@acme.example" } });
  assert.equal(r.status, 200);
  assert.equal(r.body.organization, "acme-group");
  assert.equal((await call("PATCH", "/v1/customers/ghost", { body: { name: "Ghost" } })).status, 404);
  assert.equal((await call("GET", "/v1/customers")).status, 200);
  assert.equal((await call("HEAD", "/v1/customers")).status, 200);
  assert.equal((await call("GET", "/v1/customers/acme")).status, 200);
  assert.equal((await call("GET", "/v1/customers/ghost")).status, 404);

  r = await call("POST", "/v1/keys", { body: { customer: "acme", name: "acme backend" } });
  assert.equal(r.status, 201);
  ids.acmeKey = r.body.key;
  r = await call("POST", "/v1/keys", { body: { customer: "acme", scopes: ["read"] } });
  assert.equal(r.status, 201);
  ids.readKey = r.body.key;
  r = await call("POST", "/v1/keys", { body: { customer: "globex" } });
  ids.throwaway = r.body;
  assert.equal((await call("POST", "/v1/keys", { body: { customer: "ghost" } })).status, 404);
  assert.equal((await call("POST", "/v1/keys", { body: { scopes: [] } })).status, 400);
  assert.equal((await call("GET", "/v1/keys")).status, 200);
  assert.equal((await call("DELETE", `/v1/keys/${ids.throwaway.id}`)).status, 200);
  assert.equal((await call("GET", "/v1/customers/globex", { key: ids.throwaway.key })).status, 401);
  assert.equal((await call("DELETE", "/v1/keys/key_0000000000000000")).status, 404);

  // A customer key: its own customer only, no admin routes; a read key cannot check.
  assert.equal((await call("GET", "/v1/customers/acme", { key: ids.acmeKey })).status, 200);
  assert.equal((await call("GET", "/v1/customers/globex", { key: ids.acmeKey })).status, 403);
  assert.equal((await call("GET", "/v1/customers", { key: ids.acmeKey })).status, 403);
  assert.equal((await call("POST", "/v1/check", { key: ids.readKey, body: { meter: "api_calls" } })).status, 403);
});

test("ingest: accepted, duplicates, partial, rejected, and refused requests", async () => {
  let r = await call("POST", "/v1/events", { body: { events: [
    { id: "e1", customer: "acme", type: "api_call", time: now(), properties: { service: "chat", user: "u1" } },
    { id: "e2", customer: "acme", type: "llm", time: now(), properties: { model: "gpt-4", tokens: 1200 } },
    { id: "e3", customer: "globex", type: "llm", time: now(), properties: { model: "small", tokens: 30 } },
    { id: "old-1", customer: "acme", type: "api_call", time: "2024-06-01T10:00:00Z", properties: { service: "search", user: "u2" } },
  ] } });
  assert.equal(r.status, 202);
  assert.equal(r.body.accepted, 4);
  r = await call("POST", "/v1/events/ingest", {
    type: "application/cloudevents-batch+json",
    body: JSON.stringify([{ specversion: "1.0", id: "ce-1", source: "svc", type: "llm", subject: "acme", time: now(), data: { model: "gpt-4", tokens: 300 } }]),
  });
  assert.equal(r.status, 202);
  r = await call("POST", "/v1/events/ingest", { body: { event_id: "flat-1", customer_id: "acme", event_type: "llm", model: "small", tokens: 5 } });
  assert.equal(r.status, 202);
  r = await call("POST", "/v1/events", { body: [{ id: "e1", customer: "acme", type: "api_call" }] });
  assert.equal(r.body.status, "all_duplicates");
  r = await call("POST", "/v1/events", { body: [{ id: "e4", customer: "acme", type: "llm", properties: { model: "small", tokens: 7 } },
                                              { id: "e5", customer: "acme", type: "llm", time: "yesterday" }] });
  assert.equal(r.status, 202);
  assert.equal(r.body.status, "partial");
  r = await call("POST", "/v1/events", { body: [{ customer: "acme", type: "llm" }] });
  assert.equal(r.status, 400);
  assert.equal(r.body.status, "rejected");
  assert.equal((await call("POST", "/v1/events", { body: "[{\"id\": " })).status, 400);
  const many = Array.from({ length: 21 }, (_, i) => ({ id: `big-${i}`, customer: "acme", type: "llm", properties: { tokens: 1 } }));
  assert.equal((await call("POST", "/v1/events", { body: many })).status, 413);
  assert.equal((await call("POST", "/v1/events", { body: "id,customer", type: "text/csv" })).status, 415);
  r = await call("POST", "/v1/events", { key: ids.acmeKey, body: [{ id: "x1", customer: "globex", type: "llm", properties: { tokens: 1 } }] });
  assert.equal(r.status, 403);
  r = await call("POST", "/v1/events", { key: ids.acmeKey, body: [{ id: "own-1", type: "api_call", time: now(), properties: { service: "search", user: "u3" } }] });
  assert.equal(r.status, 202);

  r = await call("GET", "/v1/events?customer=acme&limit=2");
  assert.equal(r.status, 200);
  assert.equal(r.body.events.length, 2);
  assert.equal((await call("GET", `/v1/events?customer=acme&limit=2&cursor=${encodeURIComponent(r.body.next_cursor)}`)).status, 200);
  assert.equal((await call("GET", "/v1/events?type=llm&from=2025-01-01T00:00:00Z")).status, 200);
  assert.equal((await call("GET", "/v1/events?colour=red")).status, 400);
  assert.equal((await call("GET", "/v1/events?customer=globex", { key: ids.acmeKey })).status, 403);
  assert.equal((await call("GET", "/v1/events?customer=ghost")).status, 404);
});

test("meters, queries and usage", async () => {
  assert.equal((await call("GET", "/v1/meters", { key: ids.readKey })).status, 200);
  let r = await call("GET", "/v1/meters/tokens/query?window=day&group_by=model&filter%5Bmodel%5D=gpt-4&tz=Europe/Berlin");
  assert.equal(r.status, 200);
  assert.ok(r.body.data.length > 0);
  assert.equal((await call("GET", "/v1/meters/tokens/query?customer=acme&measure=cost")).status, 200);
  assert.equal((await call("GET", "/v1/meters/tokens/query?window=fortnight")).status, 400);
  assert.equal((await call("GET", "/v1/meters/nope/query")).status, 404);
  assert.equal((await call("GET", "/v1/meters/api_calls/stats?customer=acme&window=day&peaks=3")).status, 200);
  assert.equal((await call("GET", "/v1/meters/api_calls/stats?peaks=0")).status, 400);
  assert.equal((await call("GET", "/v1/customers/acme/usage", { key: ids.acmeKey })).status, 200);
  assert.equal((await call("GET", "/v1/customers/acme/usage?from=2025-01-01T00:00:00Z")).status, 400);
  assert.equal((await call("GET", "/v1/customers/ghost/usage")).status, 404);
});

test("checks: allowed, replayed, denied (429, 403, 402), batches, and errors", async () => {
  let r = await call("POST", "/v1/check", { key: ids.acmeKey, body: { customer: "acme", meter: "api_calls", feature: "chat", event_id: "req-1" } });
  assert.equal(r.status, 200);
  assert.equal(r.body.allowed, true);
  r = await call("POST", "/v1/check", { key: ids.acmeKey, body: { customer: "acme", meter: "api_calls", event_id: "req-1" } });
  assert.equal(r.body.replayed, true);
  assert.equal((await call("POST", "/v1/check", { body: { customer: "acme", meter: "api_calls", consume: false } })).status, 200);
  let denied;
  for (let i = 0; i < 10 && !denied; i++) {
    r = await call("POST", "/v1/check", { body: { customer: "acme", meter: "api_calls", properties: { service: "chat" } } });
    if (r.status === 429) denied = r;
  }
  assert.ok(denied, "the day's limit of 4 never denied");
  assert.equal(denied.body.reason, "limit_exceeded");
  assert.ok(Number(denied.headers.get("retry-after")) >= 1);
  r = await call("POST", "/v1/check", { body: { customer: "acme", meter: "tokens", amount: 10, feature: "tts" } });
  assert.equal(r.status, 403);
  assert.equal(r.body.reason, "feature_not_enabled");
  r = await call("POST", "/v1/check", { body: { customer: "prepaid-co", meter: "tokens", amount: 50 } });
  assert.equal(r.status, 402);
  assert.equal(r.body.reason, "insufficient_credits");
  assert.equal((await call("POST", "/v1/check", { key: ids.acmeKey, body: { customer: "globex", meter: "tokens" } })).status, 403);
  assert.equal((await call("POST", "/v1/check", { body: { customer: "acme", meter: "nope" } })).status, 404);
  assert.equal((await call("POST", "/v1/check", { body: { customer: "acme", meter: "tokens", amount: -1 } })).status, 400);
  assert.equal((await call("POST", "/v1/check", { body: { customer: "acme", meter: "tokens", colour: "red" } })).status, 400);

  r = await call("POST", "/v1/check/batch", { body: { checks: [{ customer: "acme", meter: "tokens", amount: 10 },
                                                                 { customer: "globex", meter: "tokens", amount: 20 }] } });
  assert.equal(r.status, 200);
  assert.equal(r.body.results.length, 2);
  r = await call("POST", "/v1/check/batch", { body: { checks: [{ customer: "acme", meter: "tokens", amount: 1 },
                                                                 { customer: "acme", meter: "api_calls" }] } });
  assert.equal(r.status, 429);
  assert.equal(r.body.results[0].reason, "batch_denied");
  assert.equal((await call("POST", "/v1/check/batch", { body: { checks: [] } })).status, 400);
});

test("reservations", async () => {
  let r = await call("POST", "/v1/check", { key: ids.acmeKey, body: { meter: "tokens", amount: 100, consume: "reserve", ttl_seconds: 60 } });
  assert.equal(r.status, 200);
  const reserved = r.body.reservation_id;
  assert.ok(reserved);
  assert.equal((await call("POST", `/v1/reservations/${reserved}/commit`, { body: { amount: "oops" } })).status, 400);
  r = await call("POST", `/v1/reservations/${reserved}/commit`, { key: ids.acmeKey, body: { amount: 80 } });
  assert.equal(r.status, 200);
  assert.equal(r.body.reservation_id, reserved);
  assert.equal((await call("POST", `/v1/reservations/${reserved}/commit`)).status, 404);
  r = await call("POST", "/v1/check", { body: { customer: "acme", meter: "tokens", amount: 5, consume: "reserve" } });
  assert.equal((await call("POST", `/v1/reservations/${r.body.reservation_id}/release`)).status, 200);
  assert.equal((await call("POST", `/v1/reservations/${r.body.reservation_id}/release`)).status, 404);
});

test("ad-hoc limits", async () => {
  const limit = { namespace: "login", identifier: "10.0.0.1", limit: 1, duration: 60000 };
  assert.equal((await call("POST", "/v1/ratelimit", { body: limit })).status, 200);
  assert.equal((await call("POST", "/v1/ratelimit", { body: limit })).status, 429);
  let r = await call("POST", "/v1/ratelimit", { body: { limits: [{ ...limit, identifier: "10.0.0.2" }, { ...limit, identifier: "10.0.0.3", limit: 5 }] } });
  assert.equal(r.status, 200);
  assert.equal(r.body.results.length, 2);
  assert.equal((await call("POST", "/v1/ratelimit", { body: { ...limit, duration: 5 } })).status, 400);
});

test("limits, overrides, reset and nginx authorize", async () => {
  assert.equal((await call("GET", "/v1/customers/acme/limits", { key: ids.readKey })).status, 200);
  let r = await call("PUT", "/v1/customers/acme/overrides", { body: { overrides: [{ meter: "tokens", period: "month", amount: "unlimited" }] } });
  assert.equal(r.status, 200);
  assert.equal(r.body.overrides[0].amount, "unlimited");
  assert.equal((await call("PUT", "/v1/customers/acme/overrides", { body: [{ meter: "tokens", period: "fortnight", amount: 5 }] })).status, 400);
  assert.equal((await call("PUT", "/v1/customers/ghost/overrides", { body: [] })).status, 404);
  assert.equal((await call("POST", "/v1/customers/acme/reset", { body: { meter: "api_calls" } })).status, 200);
  assert.equal((await call("POST", "/v1/customers/acme/reset", { body: { meter: "nope" } })).status, 400);
  assert.equal((await call("POST", "/v1/customers/ghost/reset", { body: { meter: "api_calls" } })).status, 404);

  r = await call("GET", "/v1/authorize", { key: null, headers: { "x-original-uri": "/api/chat", "x-api-key": ids.acmeKey } });
  assert.equal(r.status, 200);
  assert.equal(r.headers.get("x-tally-reason"), "allowed");
  r = await call("GET", "/v1/authorize", { key: null, headers: { "x-original-uri": "/elsewhere", "x-api-key": ids.acmeKey } });
  assert.equal(r.body.metered, false);
  r = await call("GET", "/v1/authorize", { key: null, headers: { "x-original-uri": "/api/chat", "x-api-key": ADMIN_KEY } });
  assert.equal(r.body.admin, true);
  r = await call("GET", "/v1/authorize", { key: null, headers: { "x-original-uri": "/api/chat" } });
  assert.equal(r.status, 403);
  assert.equal(r.headers.get("x-tally-status"), "401");
});

test("wallets and prices", async () => {
  let r = await call("POST", "/v1/customers/prepaid-co/wallet/transactions", { body: { type: "top_up", amount: 1000, description: "initial credits" } });
  assert.equal(r.status, 201);
  r = await call("POST", "/v1/customers/acme/wallet/transactions", { body: { type: "grant", amount: "250.5", priority: 0, expires_at: "2999-01-01T00:00:00Z" } });
  assert.equal(r.status, 201);
  assert.equal((await call("POST", "/v1/customers/acme/wallet/transactions", { body: { type: "burn", amount: 5 } })).status, 400);
  assert.equal((await call("POST", "/v1/customers/ghost/wallet/transactions", { body: { type: "grant", amount: 5 } })).status, 404);
  assert.equal((await call("POST", "/v1/check", { body: { customer: "prepaid-co", meter: "tokens", amount: 50 } })).status, 200);
  assert.equal((await call("GET", "/v1/customers/acme/wallet", { key: ids.acmeKey })).status, 200);
  assert.equal((await call("GET", "/v1/customers/ghost/wallet")).status, 404);
  assert.equal((await call("GET", "/v1/customers/acme/wallet/transactions?limit=2")).status, 200);
  assert.equal((await call("GET", "/v1/customers/acme/wallet/transactions?type=burn")).status, 200);
  assert.equal((await call("GET", "/v1/customers/acme/wallet/transactions?colour=red")).status, 400);

  assert.equal((await call("GET", "/v1/prices", { key: ids.readKey })).status, 200);
  assert.equal((await call("GET", "/v1/prices?all=1")).status, 400);
  r = await call("POST", "/v1/customers/acme/reprice", { body: { from: "2025-01-01T00:00:00Z", to: "2099-01-01T00:00:00Z", dry_run: true } });
  assert.equal(r.status, 200);
  assert.equal((await call("POST", "/v1/customers/acme/reprice", { body: { from: "2025-01-01T00:00:00Z" } })).status, 400);
});

test("reports and exports", async () => {
  let r = await call("GET", "/v1/customers/acme/usage/history?meter=tokens&window=day&group_by=model", { key: ids.acmeKey });
  assert.equal(r.status, 200);
  assert.equal(r.body.data.length, 30);
  assert.equal((await call("GET", "/v1/customers/acme/usage/history?window=day")).status, 400);
  assert.equal((await call("GET", "/v1/customers/acme/report")).status, 200);
  assert.equal((await call("GET", "/v1/customers/acme/report?group_by=colour")).status, 400);
  r = await call("GET", "/v1/organizations/acme-group/usage");
  assert.equal(r.status, 200);
  assert.deepEqual(r.body.customers, ["acme", "globex"]);
  assert.equal((await call("GET", "/v1/organizations/nobody/usage")).status, 404);
  assert.equal((await call("GET", "/v1/organizations/acme-group/usage", { key: ids.acmeKey })).status, 403);
  assert.equal((await call("GET", "/v1/admin/usage/top?meter=tokens&n=5")).status, 200);
  assert.equal((await call("GET", "/v1/admin/usage/top?meter=tokens&n=0")).status, 400);
  assert.equal((await call("GET", "/v1/admin/usage/top?meter=nope")).status, 404);
  r = await call("GET", "/v1/admin/customers?q=ac&sort=usage&order=desc&limit=2&offset=0");
  assert.equal(r.status, 200);
  assert.ok(r.body.customers.some((c) => c.id === "acme"));
  assert.equal((await call("GET", "/v1/admin/customers?order=up")).status, 400);
  assert.equal((await call("GET", "/v1/admin/customers?limit=0")).status, 400);
  r = await call("GET", "/v1/admin/organizations?limit=10");
  assert.equal(r.status, 200);
  assert.ok(r.body.organizations.some((o) => o.organization === "acme-group" && o.customers === 2));
  assert.equal((await call("GET", "/v1/admin/organizations?limit=101")).status, 400);
  assert.equal((await call("GET", "/v1/admin/organizations", { key: ids.acmeKey })).status, 403);
  assert.equal((await call("GET", "/v1/admin/live")).status, 200);
  r = await call("GET", "/v1/admin/live");
  assert.equal(r.status, 200);
  assert.ok(r.body.window_seconds > 0);
  assert.equal((await call("GET", "/v1/admin/live?window=1")).status, 400);
  r = await call("GET", "/v1/admin/audit?limit=50");
  assert.equal(r.status, 200);
  assert.ok(r.body.entries.some((e) => e.action === "key_create"));
  assert.equal((await call("GET", "/v1/admin/audit?limit=0")).status, 400);
  r = await call("GET", "/v1/customers/acme/denials", { key: ids.acmeKey });
  assert.equal(r.status, 200);
  assert.ok(r.body.denied_last_hour >= 1, "the day's limit denied checks");
  assert.equal((await call("GET", "/v1/customers/nobody/denials")).status, 404);
  assert.equal((await call("GET", "/v1/customers/acme/denials?x=1")).status, 400);
  assert.equal((await call("GET", "/v1/customers/acme/usage/history?meter=tokens&window=week&windows=4")).status, 200);

  for (const format of ["csv", "json", "jsonl", "xlsx"]) {
    assert.equal((await call("GET", `/v1/export?format=${format}&customer=acme`)).status, 200, format);
  }
  r = await call("GET", "/v1/export?format=json&kind=aggregates&meter=tokens&window=day&group_by=model");
  assert.equal(r.status, 200);
  assert.ok(r.body.length > 0);
  assert.equal((await call("GET", "/v1/export?format=pdf")).status, 400);
  assert.equal((await call("GET", "/v1/export?kind=aggregates&meter=nope")).status, 404);
});

test("alerts and archiving", async () => {
  let r = await call("GET", "/v1/alerts?customer=acme", { key: ids.readKey });
  assert.equal(r.status, 200);
  assert.ok(r.body.alerts.length >= 2, "the day's limit crossed 50 % and 100 %");
  assert.equal((await call("GET", `/v1/alerts/${r.body.alerts[0].id}`)).status, 200);
  assert.equal((await call("GET", "/v1/alerts/alrt_999999")).status, 404);
  assert.equal((await call("GET", "/v1/alerts?level=loud")).status, 400);

  r = await call("POST", "/v1/admin/archive", { body: { before: "2025-01-01T00:00:00Z" } });
  assert.equal(r.status, 200);
  assert.equal(r.body.events, 1);
  assert.equal((await call("POST", "/v1/admin/archive", { body: { older_than: "soon" } })).status, 400);
  assert.equal((await call("POST", "/v1/admin/archive", { key: ids.acmeKey, body: {} })).status, 403);
});

test("unknown customers (422) and the API rate limit (429) on a stricter server", async () => {
  let r = await call("POST", "/v1/events", { server: strict, body: [{ id: "s1", customer: "ghost", type: "api_call" }] });
  assert.equal(r.status, 422);
  assert.equal(r.body.error, "UNKNOWN_CUSTOMER");
  let limited;
  for (let i = 0; i < 10 && !limited; i++) {
    r = await call("GET", "/v1/meters", { server: strict });
    if (r.status === 429) limited = r;
  }
  assert.ok(limited, "3 requests a minute were never refused");
  assert.equal(limited.body.error, "RATE_LIMITED");
});

test("every operation of the document was answered with a 2xx", () => {
  assert.deepEqual(checker.unexercised(), []);
});
