// The official Unkey clients (@unkey/ratelimit and @unkey/api, pinned in package-lock.json)
// against `tally serve`, with only their base URL changed to Tally's /unkey prefix: limits,
// weighted costs, multiLimit, the errors in Unkey's shape, and Tally's own API agreeing.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Ratelimit } from "@unkey/ratelimit";
import { Unkey } from "@unkey/api";
import { startTally, ADMIN_KEY } from "./tally.mjs";

let tally;
before(async () => { tally = await startTally(""); });
after(async () => { await tally.stop(); });

test("Ratelimit.limit counts exactly and answers like Unkey", async () => {
  const limiter = new Ratelimit({
    rootKey: ADMIN_KEY, namespace: "sms.sign_up", limit: 3, duration: "60s",
    baseUrl: tally.url + "/unkey", timeout: false,
  });
  const seen = [];
  for (let i = 0; i < 4; i++) {
    seen.push(await limiter.limit("user_1"));
  }
  assert.deepEqual(seen.map((r) => [r.success, r.remaining, r.limit]),
                   [[true, 2, 3], [true, 1, 3], [true, 0, 3], [false, 0, 3]]);
  assert.ok(seen[0].reset > Date.now() && seen[0].reset <= Date.now() + 60_000, `${seen[0].reset}`);
  // A weighted cost, and another identifier counting alone.
  const heavy = await limiter.limit("user_2", { cost: 2 });
  assert.equal(heavy.success, true);
  assert.equal(heavy.remaining, 1);
  const over = await limiter.limit("user_2", { cost: 2 });
  assert.equal(over.success, false);
  // Tally's own API sees the same window (a cost of 0 only asks).
  const own = await tally.api("POST", "/v1/ratelimit",
    { namespace: "sms.sign_up", identifier: "user_1", limit: 3, duration: 60000, cost: 0 });
  assert.equal(own.status, 200);
  assert.equal(own.body.used, 3);
  assert.equal(own.body.remaining, 0);
});

test("multiLimit is all or nothing", async () => {
  const unkey = new Unkey({ serverURL: tally.url + "/unkey", rootKey: ADMIN_KEY });
  const ok = await unkey.ratelimit.multiLimit([
    { namespace: "api", identifier: "a", limit: 5, duration: 60000 },
    { namespace: "api", identifier: "b", limit: 1, duration: 60000 },
  ]);
  assert.equal(ok.data.passed, true);
  assert.deepEqual(ok.data.limits.map((l) => [l.identifier, l.passed, l.remaining]),
                   [["a", true, 4], ["b", true, 0]]);
  assert.match(ok.meta.requestId, /^req_/);
  const denied = await unkey.ratelimit.multiLimit([
    { namespace: "api", identifier: "a", limit: 5, duration: 60000 },
    { namespace: "api", identifier: "b", limit: 1, duration: 60000 },
  ]);
  assert.equal(denied.data.passed, false);
  assert.deepEqual(denied.data.limits.map((l) => l.passed), [true, false]);
  const single = await unkey.ratelimit.limit({ namespace: "api", identifier: "a", limit: 5, duration: 60000, cost: 0 });
  assert.equal(single.data.remaining, 4, "the denied request counted nothing");
});

test("errors come in Unkey's shape", async () => {
  const wrong = new Unkey({ serverURL: tally.url + "/unkey", rootKey: "not-a-key" });
  await assert.rejects(
    wrong.ratelimit.limit({ namespace: "api", identifier: "x", limit: 1, duration: 60000 }),
    (e) => e.constructor.name === "UnauthorizedErrorResponse" && e.data$.error.status === 401);
  const unkey = new Unkey({ serverURL: tally.url + "/unkey", rootKey: ADMIN_KEY });
  await assert.rejects(
    unkey.ratelimit.limit({ namespace: "api", identifier: "x", limit: 1, duration: 5 }),
    (e) => e.constructor.name === "BadRequestErrorResponse" && /duration/.test(e.data$.error.detail));
  // A key without the check scope.
  const key = await tally.api("POST", "/v1/keys", { name: "reader", scopes: ["read"] });
  assert.equal(key.status, 201, JSON.stringify(key.body));
  const reader = new Unkey({ serverURL: tally.url + "/unkey", rootKey: key.body.key });
  await assert.rejects(
    reader.ratelimit.limit({ namespace: "api", identifier: "x", limit: 1, duration: 60000 }),
    (e) => e.constructor.name === "ForbiddenErrorResponse");
});
