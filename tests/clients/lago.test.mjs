// The official Lago client (lago-javascript-client, pinned in package-lock.json) against `tally
// serve`, with only its base URL changed to Tally's /lago prefix: customers, events one by one
// and in batches (durable on 200, a duplicate transaction_id refused as Lago refuses it, a batch
// with one fault storing nothing), current usage priced from Tally's prices, and wallets (create,
// balance, top-ups), with Tally's own API agreeing on every number.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Client, getLagoError } from "lago-javascript-client";
import { startTally, ADMIN_KEY } from "./tally.mjs";

const CONFIG = `
[credits]
currency = "USD"
per_currency_unit = 100

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[meters]]
key = "tokens"
event_type = "llm"
aggregation = "sum"
value = "$.tokens"

[[prices]]
meter = "api_calls"
unit_price = "0.02"

[[prices]]
meter = "tokens"
unit_price = "0.001"
`;

let tally;
let lago;
before(async () => {
  tally = await startTally(CONFIG);
  lago = Client(ADMIN_KEY, { baseUrl: tally.url + "/lago/api/v1" });
});
after(async () => { await tally.stop(); });

// The Lago error body of a rejected call (the client throws the response).
async function lagoError(promise) {
  try {
    await promise;
  } catch (e) {
    return await getLagoError(e);
  }
  assert.fail("the call succeeded");
}

const nowSeconds = () => Math.floor(Date.now() / 1000);

test("a customer is created (and updated) by external_id", async () => {
  const { data } = await lago.customers.createCustomer({
    customer: { external_id: "acme", name: "Acme", email: "billing@acme.test", currency: "USD",
                metadata: [{ key: "tier", value: "gold", display_in_invoice: false }] },
  });
  assert.equal(data.customer.external_id, "acme");
  assert.equal(data.customer.lago_id, "acme");
  assert.equal(data.customer.currency, "USD");
  const again = await lago.customers.createCustomer({ customer: { external_id: "acme", name: "Acme Corp" } });
  assert.equal(again.data.customer.name, "Acme Corp");
  assert.equal(again.data.customer.email, "billing@acme.test");
  const found = await lago.customers.findCustomer("acme");
  assert.deepEqual(found.data.customer.metadata.map((m) => [m.key, m.value]), [["tier", "gold"]]);
  const own = await tally.api("GET", "/v1/customers/acme");
  assert.equal(own.body.name, "Acme Corp");
  assert.deepEqual(own.body.metadata, { tier: "gold" });
});

test("a wallet opens with paid and granted credits", async () => {
  const { data } = await lago.wallets.createWallet({
    wallet: { external_customer_id: "acme", rate_amount: "0.01", currency: "USD", name: "Prepaid",
              paid_credits: "1000", granted_credits: "500" },
  });
  assert.equal(data.wallet.lago_id, "wallet_acme");
  assert.equal(data.wallet.external_customer_id, "acme");
  assert.equal(data.wallet.status, "active");
  assert.equal(data.wallet.rate_amount, "0.01");
  assert.equal(data.wallet.credits_balance, "1500");
  assert.equal(data.wallet.balance_cents, 1500);  // 1500 credits at 100 per dollar: $15
  const own = await tally.api("GET", "/v1/customers/acme/wallet");
  assert.equal(own.body.balance, 1500);
  assert.deepEqual(own.body.grants.map((g) => [g.type, g.amount]).sort(), [["grant", 500], ["top_up", 1000]]);
});

test("events are stored once, one by one and in batches", async () => {
  const one = await lago.events.createEvent({
    event: { transaction_id: "e1", external_customer_id: "acme", code: "api_call",
             timestamp: nowSeconds(), properties: { path: "/v1/search" } },
  });
  assert.equal(one.data.event.transaction_id, "e1");
  assert.equal(one.data.event.lago_customer_id, "acme");
  assert.equal(one.data.event.code, "api_call");
  assert.deepEqual(one.data.event.properties, { path: "/v1/search" });

  const atMs = Date.now();
  const batch = await lago.events.createBatchEvents({
    events: [
      { transaction_id: "e2", external_customer_id: "acme", code: "api_call" },
      { transaction_id: "e3", external_customer_id: "acme", code: "llm", timestamp: (atMs / 1000).toFixed(3),
        properties: { tokens: 1500, model: "gpt-4" } },
      // A subscription id alone: the customer's one subscription has the customer's id.
      { transaction_id: "e4", external_subscription_id: "acme", code: "llm", timestamp: nowSeconds(),
        properties: { tokens: 500, model: "gpt-4" } },
    ],
  });
  assert.deepEqual(batch.data.events.map((e) => e.transaction_id), ["e2", "e3", "e4"]);
  assert.equal(new Date(batch.data.events[1].timestamp).getTime(), atMs);

  // The same transaction_id again: Lago's answer, and it counts once.
  const dup = await lagoError(lago.events.createEvent({
    event: { transaction_id: "e1", external_customer_id: "acme", code: "api_call" },
  }));
  assert.equal(dup.status, 422);
  assert.equal(dup.code, "validation_errors");
  assert.deepEqual(dup.error_details, { transaction_id: ["value_already_exist"] });

  // A batch with one fault stores nothing, and names the fault by its index.
  const partly = await lagoError(lago.events.createBatchEvents({
    events: [
      { transaction_id: "e5", external_customer_id: "acme", code: "api_call" },
      { transaction_id: "e2", external_customer_id: "acme", code: "api_call" },
      { transaction_id: "e6", external_customer_id: "acme", code: "no_such_metric" },
    ],
  }));
  assert.equal(partly.status, 422);
  assert.deepEqual(partly.error_details, { 2: { code: ["metric_not_found"] } });
  const stored = await lagoError(lago.events.createBatchEvents({
    events: [
      { transaction_id: "e5", external_customer_id: "acme", code: "api_call" },
      { transaction_id: "e2", external_customer_id: "acme", code: "api_call" },
    ],
  }));
  assert.deepEqual(stored.error_details, { 1: { transaction_id: ["value_already_exist"] } });

  // Right after the 200s: Tally's own API has exactly the four events.
  const own = await tally.api("GET", "/v1/events?customer=acme");
  assert.deepEqual(own.body.events.map((e) => e.id).sort(), ["e1", "e2", "e3", "e4"]);
});

test("current usage is priced from Tally's prices and agrees with Tally's usage", async () => {
  const { data } = await lago.customers.findCustomerCurrentUsage("acme", { external_subscription_id: "acme" });
  const u = data.customer_usage;
  assert.equal(u.currency, "USD");
  const byCode = Object.fromEntries(u.charges_usage.map((c) => [c.billable_metric.code, c]));
  assert.equal(byCode.api_call.units, "2");
  assert.equal(byCode.api_call.amount_cents, 4);  // 2 calls at $0.02
  assert.equal(byCode.api_call.billable_metric.aggregation_type, "count_agg");
  assert.equal(byCode.llm.units, "2000");
  assert.equal(byCode.llm.amount_cents, 200);  // 2000 tokens at $0.001
  assert.equal(byCode.llm.billable_metric.aggregation_type, "sum_agg");
  assert.equal(byCode.llm.charge.charge_model, "standard");
  assert.equal(u.amount_cents, 204);
  assert.equal(u.taxes_amount_cents, 0);
  assert.equal(u.total_amount_cents, 204);

  // Tally's own usage over the same billing period.
  const from = new Date(u.from_datetime);
  const to = new Date(new Date(u.to_datetime).getTime() + 1000);
  assert.ok(from.getTime() <= Date.now() && Date.now() < to.getTime());
  const own = await tally.api("GET", `/v1/customers/acme/usage?from=${from.toISOString()}&to=${to.toISOString()}`);
  assert.equal(own.status, 200);
  const meters = Object.fromEntries(own.body.meters.map((m) => [m.meter, m]));
  assert.equal(meters.api_calls.value, 2);
  assert.equal(meters.tokens.value, 2000);
  assert.equal(Math.round(meters.api_calls.cost * 100), byCode.api_call.amount_cents);
  assert.equal(Math.round(meters.tokens.cost * 100), byCode.llm.amount_cents);
});

test("the wallet balance shows the usage burned, and top-ups add to it", async () => {
  // 1500 credits less 4 (two calls) and 200 (2000 tokens).
  const wallet = (await lago.wallets.findWallet("wallet_acme")).data.wallet;
  assert.equal(wallet.credits_balance, "1296");
  assert.equal(wallet.balance_cents, 1296);
  assert.equal(wallet.credits_ongoing_balance, "1296");
  assert.equal((await tally.api("GET", "/v1/customers/acme/wallet")).body.balance, 1296);

  const { data } = await lago.walletTransactions.createWalletTransaction({
    wallet_transaction: { wallet_id: "wallet_acme", paid_credits: "100", granted_credits: "50" },
  });
  const txns = data.wallet_transactions;
  assert.deepEqual(txns.map((t) => [t.transaction_status, t.transaction_type, t.credit_amount, t.amount]),
                   [["purchased", "inbound", "100", "1"], ["granted", "inbound", "50", "0.5"]]);
  assert.ok(txns.every((t) => t.status === "settled" && t.lago_wallet_id === "wallet_acme"));

  const listed = (await lago.wallets.findAllWallets({ external_customer_id: "acme" })).data;
  assert.equal(listed.wallets.length, 1);
  assert.equal(listed.wallets[0].credits_balance, "1446");
  assert.equal(listed.wallets[0].balance_cents, 1446);
  const own = await tally.api("GET", "/v1/customers/acme/wallet");
  assert.equal(own.body.balance, 1446);

  // The credit side of the ledger: the wallet's opening and the top-up; the top-up's ids are
  // Tally's transaction ids.
  const history = (await lago.wallets.findAllWalletTransactions("wallet_acme", { per_page: 3 })).data;
  assert.equal(history.meta.total_count, 4);
  assert.equal(history.meta.total_pages, 2);
  assert.equal(history.wallet_transactions.length, 3);
  const ledger = await tally.api("GET", "/v1/customers/acme/wallet/transactions?type=top_up");
  assert.deepEqual(ledger.body.transactions.map((t) => t.id).slice(-1), [txns[0].lago_id]);
});

test("errors come in Lago's shape", async () => {
  const stranger = Client("not-a-key", { baseUrl: tally.url + "/lago/api/v1" });
  assert.deepEqual(await lagoError(stranger.customers.findCustomer("acme")), { status: 401, error: "Unauthorized" });
  assert.deepEqual(await lagoError(lago.customers.findCustomer("nobody")),
                   { status: 404, error: "Not Found", code: "customer_not_found" });
  assert.deepEqual(await lagoError(lago.wallets.findWallet("wallet_nobody")),
                   { status: 404, error: "Not Found", code: "wallet_not_found" });
  const twice = await lagoError(lago.wallets.createWallet({
    wallet: { external_customer_id: "acme", rate_amount: "0.01", currency: "USD", paid_credits: "1" },
  }));
  assert.deepEqual(twice.error_details, { customer: ["wallet_already_exists"] });
  // What Tally does not answer: Lago's 404.
  assert.equal((await lagoError(lago.plans.findAllPlans())).code, "route_not_found");
  assert.equal((await tally.api("GET", "/v1/customers/acme/wallet")).body.balance, 1446);
});
