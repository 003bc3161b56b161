// The official OpenMeter client (@openmeter/sdk, pinned in package-lock.json) against `tally
// serve`, with only its base URL changed to Tally's /openmeter prefix: CloudEvents ingest
// (durable on 204, duplicates exact), meters, queries with windows, subjects, groupBy and
// filterGroupBy, errors as problem+json, and Tally's own API agreeing.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { OpenMeter } from "@openmeter/sdk";
import { startTally, ADMIN_KEY } from "./tally.mjs";

const CONFIG = `
[[meters]]
key = "tokens"
event_type = "prompt"
aggregation = "sum"
value = "$.tokens"
group_by = ["model"]

[[meters]]
key = "api_calls"
event_type = "request"
aggregation = "count"
`;

let tally;
let om;
before(async () => {
  tally = await startTally(CONFIG);
  om = new OpenMeter({ baseUrl: tally.url + "/openmeter", apiKey: ADMIN_KEY });
});
after(async () => { await tally.stop(); });

const prompt = (id, subject, model, tokens, time) => ({
  id, source: "chat-service", type: "prompt", subject, time: new Date(time),
  data: { tokens, model },
});

test("ingest is durable on 204 and duplicates are exact", async () => {
  await om.events.ingest([
    prompt("p1", "acme", "gpt-4", 100, "2025-01-17T10:00:00Z"),
    prompt("p2", "acme", "gpt-3.5", 50, "2025-01-17T11:00:00Z"),
    prompt("p3", "acme", "gpt-4", 25, "2025-01-18T09:00:00Z"),
    prompt("p4", "globex", "gpt-4", 7, "2025-01-17T12:00:00Z"),
  ]);
  // The same events again (a client retry), and one from another source with a reused id.
  await om.events.ingest(prompt("p1", "acme", "gpt-4", 100, "2025-01-17T10:00:00Z"));
  await om.events.ingest({ ...prompt("p1", "acme", "gpt-4", 1, "2025-01-17T10:30:00Z"), source: "batch-job" });
  // Right after the 204, without waiting: Tally's own API has them.
  const own = await tally.api("GET", "/v1/meters/tokens/query?customer=acme&from=2025-01-01T00:00:00Z&to=2025-02-01T00:00:00Z");
  assert.equal(own.status, 200);
  assert.equal(own.body.data[0].value, 176);
});

test("meters are listed in OpenMeter's shape", async () => {
  const meters = await om.meters.list();
  const tokens = meters.find((m) => m.slug === "tokens");
  assert.equal(tokens.aggregation, "SUM");
  assert.equal(tokens.eventType, "prompt");
  assert.equal(tokens.valueProperty, "$.tokens");
  assert.deepEqual(tokens.groupBy, { model: "$.model" });
  assert.equal((await om.meters.get("api_calls")).aggregation, "COUNT");
});

test("queries by window, subject and group", async () => {
  const daily = await om.meters.query("tokens", {
    from: new Date("2025-01-17T00:00:00Z"), to: new Date("2025-01-19T00:00:00Z"),
    windowSize: "DAY", subject: ["acme"], groupBy: ["model"],
  });
  const rows = daily.data.map((r) => [r.windowStart.toISOString(), r.subject, r.groupBy.model, r.value]);
  rows.sort();
  assert.deepEqual(rows, [
    ["2025-01-17T00:00:00.000Z", "acme", "gpt-3.5", 50],
    ["2025-01-17T00:00:00.000Z", "acme", "gpt-4", 101],
    ["2025-01-18T00:00:00.000Z", "acme", "gpt-4", 25],
  ]);
  // Over every subject: one total; per subject when grouped so; filtered by a group value.
  const all = await om.meters.query("tokens", { from: new Date("2025-01-01T00:00:00Z"), to: new Date("2025-02-01T00:00:00Z") });
  assert.equal(all.data.length, 1);
  assert.equal(all.data[0].value, 183);
  assert.equal(all.data[0].subject, null);
  const per = await om.meters.query("tokens", { from: new Date("2025-01-01T00:00:00Z"), to: new Date("2025-02-01T00:00:00Z"), groupBy: ["subject"] });
  assert.deepEqual(per.data.map((r) => [r.subject, r.value]).sort(), [["acme", 176], ["globex", 7]]);
  const gpt4 = await om.meters.query("tokens", { from: new Date("2025-01-01T00:00:00Z"), to: new Date("2025-02-01T00:00:00Z"), filterGroupBy: { model: "gpt-4" } });
  assert.equal(gpt4.data[0].value, 133);
});

test("errors are problem+json", async () => {
  const wrong = new OpenMeter({ baseUrl: tally.url + "/openmeter", apiKey: "nope" });
  await assert.rejects(wrong.meters.list(), (e) => e.status === 401 && e.title === "Unauthorized");
  await assert.rejects(om.meters.query("nothing", {}), (e) => e.status === 404);
  await assert.rejects(om.meters.query("tokens", { windowSize: "YEAR" }), (e) => e.status === 400);
  await assert.rejects(om.events.ingest({ id: "x", source: "s", type: "prompt", time: new Date() }),
                       (e) => e.status === 400 && /customer/.test(e.message));
  const raw = await fetch(tally.url + "/openmeter/api/v1/events", {
    method: "POST", body: "x",
    headers: { authorization: `Bearer ${ADMIN_KEY}`, "content-type": "text/plain" },
  });
  assert.equal(raw.status, 415);
  assert.equal(raw.headers.get("content-type"), "application/problem+json");
  assert.equal((await raw.json()).status, 415);
});
