// Prices, wallets and the ledger against a real `tally serve`: the seed walkthrough of
// 003_*.txt sections 2 to 6 end to end (keys, ingest answers, prices from config, burns with
// balance_before/after, the reduced balance), then grants, expiry order, refunds, adjustments,
// the negative-balance policy, restarts and every error path of the wallet routes.
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

constexpr const char* kConfig = R"(
[credits]
per_currency_unit = 1000        # 1 credit = 0.001 USD

[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.input_tokens"

[[meters]]
key = "tokens_out"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.output_tokens"

[[meters]]
key = "images"
event_type = "image"
aggregation = "count"

[[meters]]
key = "logins"
event_type = "login"
aggregation = "count"

[[prices]]
meter = "tokens_in"
match = { provider = "OPENAI", model = "gpt-4-turbo" }
unit_price = "0.00001"
currency = "USD"

[[prices]]
meter = "tokens_out"
match = { provider = "OPENAI", model = "gpt-4-turbo" }
unit_price = "0.00001"

[[prices]]
meter = "tokens_in"
match = { provider = "ANTHROPIC", model = "claude-3-sonnet" }
unit_price = "0.000003"

[[prices]]
meter = "tokens_out"
match = { provider = "ANTHROPIC", model = "claude-3-sonnet" }
unit_price = "0.000015"

[[prices]]
meter = "images"
model = "package"
package_size = 10
package_price = "0.5"

[[plans]]
key = "payg"
prepaid = true
)";

std::string token_event(const std::string& id, const std::string& customer,
                        const std::string& provider, const std::string& model, int in, int out,
                        const std::string& time) {
  return R"({"event_id":")" + id + R"(","customer_id":")" + customer +
         R"(","event_type":"TOKEN_USAGE","feature_id":"ai-text-generation","provider":")" +
         provider + R"(","model":")" + model + R"(","input_tokens":)" + std::to_string(in) +
         R"(,"output_tokens":)" + std::to_string(out) + R"(,"timestamp":")" + time + R"("})";
}

std::string raw(simdjson::dom::element e) {
  return simdjson::minify(e);
}

class WalletApiTest : public ApiTest {
 protected:
  static void SetUpTestSuite() { start_server(kConfig); }

  void create_customer(const std::string& id) {
    auto r = admin("POST", "/v1/customers", R"({"id":")" + id + R"("})");
    ASSERT_EQ(r.status, 201) << r.body;
  }

  HttpResponse txn(const std::string& customer, const std::string& body) {
    return admin("POST", "/v1/customers/" + customer + "/wallet/transactions", body);
  }

  std::string balance(const std::string& customer) {
    auto r = admin("GET", "/v1/customers/" + customer + "/wallet");
    EXPECT_EQ(r.status, 200) << r.body;
    return raw(Json(r.body)["balance"]);
  }
};

TEST_F(WalletApiTest, SeedWalkthroughEndToEnd) {
  // 2: a customer with a hashed key and 1,000,000 credits.
  create_customer("cust-test-001");
  const std::string key = customer_key("cust-test-001");
  auto grant = txn("cust-test-001", R"({"type":"top_up","amount":1000000,"description":"seed"})");
  ASSERT_EQ(grant.status, 201) << grant.body;
  EXPECT_EQ(raw(Json(grant.body)["balance_after"]), "1000000");

  const std::string first = token_event("550e8400-e29b-41d4-a716-446655440001", "cust-test-001",
                                        "OPENAI", "gpt-4-turbo", 1000, 500, "2025-01-17T14:30:00Z");
  // 4.1: no key.
  auto no_key = client_->request("POST", "/v1/events/ingest", R"({"events":[)" + first + "]}",
                                 {{"content-type", "application/json"}});
  EXPECT_EQ(no_key.status, 401) << no_key.body;
  EXPECT_EQ(Json(no_key.body).str("error"), "UNAUTHORIZED");

  // 4.2: accepted.
  auto ok = client_->request("POST", "/v1/events/ingest", R"({"events":[)" + first + "]}",
                             key_header(key));
  ASSERT_EQ(ok.status, 202) << ok.body;
  Json a(ok.body);
  EXPECT_EQ(a.num("accepted"), 1);
  EXPECT_EQ(a.num("rejected"), 0);
  EXPECT_EQ(a.num("duplicates"), 0);
  EXPECT_FALSE(a.is_null("batch_id"));
  EXPECT_EQ(a.str("status"), "accepted");
  EXPECT_TRUE(a.has("processing_time_ms"));

  // 4.3: the same event again is a duplicate and burns nothing.
  auto dup = client_->request("POST", "/v1/events/ingest", R"({"events":[)" + first + "]}",
                              key_header(key));
  ASSERT_EQ(dup.status, 202) << dup.body;
  EXPECT_EQ(Json(dup.body).num("duplicates"), 1);
  EXPECT_EQ(Json(dup.body).str("status"), "all_duplicates");
  EXPECT_TRUE(Json(dup.body).is_null("batch_id"));

  // 4.4: a batch of three.
  auto batch = client_->request(
      "POST", "/v1/events/ingest",
      R"({"events":[)" +
          token_event("550e8400-e29b-41d4-a716-446655440002", "cust-test-001", "OPENAI",
                      "gpt-4-turbo", 2000, 1000, "2025-01-17T14:31:00Z") +
          "," +
          token_event("550e8400-e29b-41d4-a716-446655440003", "cust-test-001", "ANTHROPIC",
                      "claude-3-sonnet", 500, 200, "2025-01-17T14:32:00Z") +
          "," +
          token_event("550e8400-e29b-41d4-a716-446655440004", "cust-test-001", "OPENAI",
                      "gpt-4-turbo", 3000, 1500, "2025-01-17T14:33:00Z") +
          "]}",
      key_header(key));
  ASSERT_EQ(batch.status, 202) << batch.body;
  EXPECT_EQ(Json(batch.body).num("accepted"), 3);

  // 6.1: another customer's events: 403, nothing stored or burned.
  auto other =
      client_->request("POST", "/v1/events/ingest",
                       R"({"events":[)" +
                           token_event("550e8400-e29b-41d4-a716-446655440099", "cust-wrong-999",
                                       "OPENAI", "gpt-4-turbo", 1000, 500, "2025-01-17T14:30:00Z") +
                           "]}",
                       key_header(key));
  EXPECT_EQ(other.status, 403) << other.body;
  EXPECT_EQ(Json(other.body).str("error"), "FORBIDDEN");

  // 6.2: an invalid event: 400 VALIDATION_ERROR with details.
  auto invalid = client_->request(
      "POST", "/v1/events/ingest",
      R"({"events":[{"event_id":"not-a-uuid","customer_id":"cust-test-001","event_type":"INVALID_TYPE","feature_id":"ai-text-generation","timestamp":"2025-01-17T14:30:00Z"}]})",
      key_header(key));
  EXPECT_EQ(invalid.status, 400) << invalid.body;
  EXPECT_EQ(Json(invalid.body).str("error"), "VALIDATION_ERROR");
  EXPECT_TRUE(Json(invalid.body).has("details")) << invalid.body;

  // 5.2: stored events carry credits and cost_usd.
  auto events = client_->request("GET", "/v1/events?customer=cust-test-001", {}, key_header(key));
  ASSERT_EQ(events.status, 200) << events.body;
  Json ev(events.body);
  std::vector<std::pair<std::string, std::string>> priced;  // credits, cost_usd per event
  for (auto e : ev["events"].get_array()) {
    priced.emplace_back(raw(e["credits"]), raw(e["cost_usd"]));
  }
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"15", "0.015"}, {"30", "0.03"}, {"4.5", "0.0045"}, {"45", "0.045"}};
  EXPECT_EQ(priced, expected) << events.body;

  // The burns, in order, with balance_before and balance_after.
  auto burns = client_->request("GET", "/v1/customers/cust-test-001/wallet/transactions?type=burn",
                                {}, key_header(key));
  ASSERT_EQ(burns.status, 200) << burns.body;
  std::vector<std::string> rows;
  const Json burn_list(burns.body);
  for (auto t : burn_list["transactions"].get_array()) {
    rows.push_back(raw(t["amount"]) + " " + raw(t["balance_before"]) + " " +
                   raw(t["balance_after"]) + " " + std::string(t["event_id"].get_string().value()));
  }
  const std::vector<std::string> expected_burns = {
      "-15 1000000 999985 550e8400-e29b-41d4-a716-446655440001",
      "-30 999985 999955 550e8400-e29b-41d4-a716-446655440002",
      "-4.5 999955 999950.5 550e8400-e29b-41d4-a716-446655440003",
      "-45 999950.5 999905.5 550e8400-e29b-41d4-a716-446655440004"};
  EXPECT_EQ(rows, expected_burns) << burns.body;

  // Usage queries give cost and credits beside units.
  const std::string range =
      "customer=cust-test-001&from=2025-01-17T00:00:00Z&to=2025-01-18T00:00:00Z";
  auto value_of = [&](const std::string& target) {
    auto r = client_->request("GET", target, {}, key_header(key));
    EXPECT_EQ(r.status, 200) << target << " -> " << r.body;
    Json j(r.body);
    EXPECT_EQ(j.str("meter"), target.substr(11, target.find('/', 11) - 11)) << r.body;
    return raw(j["data"].at(0)["value"]);
  };
  EXPECT_EQ(value_of("/v1/meters/tokens_in/query?" + range), "6500");
  EXPECT_EQ(value_of("/v1/meters/tokens_in/query?" + range + "&measure=units"), "6500");
  EXPECT_EQ(value_of("/v1/meters/tokens_in/query?" + range + "&measure=cost"), "0.0615");
  auto measured = client_->request("GET", "/v1/meters/tokens_in/query?" + range + "&measure=cost",
                                   {}, key_header(key));
  EXPECT_EQ(Json(measured.body).str("measure"), "cost") << measured.body;
  EXPECT_EQ(value_of("/v1/meters/tokens_in/query?" + range + "&measure=credits"), "61.5");
  EXPECT_EQ(value_of("/v1/meters/tokens_out/query?" + range + "&measure=credits"), "33");
  auto bad_measure = client_->request(
      "GET", "/v1/meters/tokens_in/query?" + range + "&measure=euros", {}, key_header(key));
  EXPECT_EQ(bad_measure.status, 400) << bad_measure.body;
  auto unpriced = client_->request("GET", "/v1/meters/logins/query?" + range + "&measure=cost", {},
                                   key_header(key));
  EXPECT_EQ(unpriced.status, 400) << unpriced.body;
  auto usage = client_->request(
      "GET", "/v1/customers/cust-test-001/usage?from=2025-01-17T00:00:00Z&to=2025-01-18T00:00:00Z",
      {}, key_header(key));
  ASSERT_EQ(usage.status, 200) << usage.body;
  bool seen = false;
  const Json usage_json(usage.body);
  for (auto m : usage_json["meters"].get_array()) {
    if (std::string_view(m["meter"].get_string().value()) == "tokens_in") {
      EXPECT_EQ(raw(m["value"]), "6500");
      EXPECT_EQ(raw(m["cost"]), "0.0615");
      EXPECT_EQ(raw(m["credits"]), "61.5");
      seen = true;
    }
  }
  EXPECT_TRUE(seen) << usage.body;

  // The reduced balance, also after a restart.
  EXPECT_EQ(balance("cust-test-001"), "999905.5");
  server_->stop();
  server_->start();
  client_ = server_->client();
  EXPECT_EQ(balance("cust-test-001"), "999905.5");
  auto all = admin("GET", "/v1/customers/cust-test-001/wallet/transactions");
  EXPECT_EQ(Json(all.body)["transactions"].get_array().size(), 5u) << all.body;
}

TEST_F(WalletApiTest, PromotionalCreditsBurnBeforePaidAndDebtIsPaidFirst) {
  create_customer("cust-promo");
  ASSERT_EQ(txn("cust-promo", R"({"type":"top_up","amount":"1"})").status, 201);
  ASSERT_EQ(
      txn("cust-promo", R"({"type":"grant","amount":"0.5","expires_at":"2099-01-01T00:00:00Z"})")
          .status,
      201);
  // 10 images = one package of 0.5 USD = 500 credits: more than the wallet holds.
  std::string body = R"({"events":[)";
  for (int i = 0; i < 10; ++i) {
    body += std::string(i == 0 ? "" : ",") + R"({"id":"img-)" + std::to_string(i) +
            R"(","customer":"cust-promo","type":"image"})";
  }
  body += "]}";
  auto r = admin("POST", "/v1/events", body);
  ASSERT_EQ(r.status, 202) << r.body;
  // The first image opens the package (500 credits); the other nine cost nothing.
  auto w = admin("GET", "/v1/customers/cust-promo/wallet");
  Json j(w.body);
  EXPECT_EQ(raw(j["balance"]), "-498.5") << w.body;
  EXPECT_TRUE(j["exhausted"].get_bool().value());
  EXPECT_EQ(j["grants"].get_array().size(), 0u) << w.body;  // both used up, promo first
  // A top-up pays the debt first.
  auto t = txn("cust-promo", R"({"type":"top_up","amount":1000})");
  ASSERT_EQ(t.status, 201) << t.body;
  EXPECT_EQ(raw(Json(t.body)["balance_before"]), "-498.5");
  EXPECT_EQ(raw(Json(t.body)["balance_after"]), "501.5");
  auto w2 = admin("GET", "/v1/customers/cust-promo/wallet");
  Json j2(w2.body);
  ASSERT_EQ(j2["grants"].get_array().size(), 1u) << w2.body;
  EXPECT_EQ(raw(j2["grants"].at(0)["remaining"]), "501.5");
  EXPECT_FALSE(j2["exhausted"].get_bool().value());
  // Refunds and signed adjustments.
  EXPECT_EQ(txn("cust-promo", R"({"type":"refund","amount":"8.5"})").status, 201);
  auto adj =
      txn("cust-promo", R"({"type":"adjustment","amount":"-10","description":"correction"})");
  ASSERT_EQ(adj.status, 201) << adj.body;
  EXPECT_EQ(raw(Json(adj.body)["balance_after"]), "500");
  EXPECT_EQ(balance("cust-promo"), "500");
}

TEST_F(WalletApiTest, ErrorsAnswerClearlyAndChangeNothing) {
  create_customer("cust-err");
  const std::string key = customer_key("cust-err");
  ASSERT_EQ(txn("cust-err", R"({"type":"top_up","amount":10})").status, 201);

  struct Case {
    std::string body;
    int status;
  };

  const std::vector<Case> cases = {
      {R"({"type":"burn","amount":1})", 400},
      {R"({"type":"gift","amount":1})", 400},
      {R"({"type":"top_up","amount":0})", 400},
      {R"({"type":"top_up","amount":-5})", 400},
      {R"({"type":"adjustment","amount":0})", 400},
      {R"({"type":"top_up","amount":"ten"})", 400},
      {R"({"type":"top_up"})", 400},
      {R"({"amount":5})", 400},
      {R"({"type":"top_up","amount":5,"colour":"red"})", 400},
      {R"({"type":"top_up","amount":5,"expires_at":"2001-01-01T00:00:00Z"})", 400},
      {R"({"type":"refund","amount":5,"expires_at":"2099-01-01T00:00:00Z"})", 400},
      {R"({"type":"top_up","amount":5,"expires_at":"tomorrow"})", 400},
      {R"({"type":"grant","amount":5,"priority":-3})", 400},
      {R"([1,2])", 400},
      {R"({"type":)", 400},
  };
  for (const auto& c : cases) {
    auto r = txn("cust-err", c.body);
    EXPECT_EQ(r.status, c.status) << c.body << " -> " << r.body;
    EXPECT_TRUE(Json(r.body).has("error")) << r.body;
  }
  EXPECT_EQ(balance("cust-err"), "10");
  EXPECT_EQ(txn("ghost", R"({"type":"top_up","amount":1})").status, 404);
  EXPECT_EQ(admin("GET", "/v1/customers/ghost/wallet").status, 404);
  EXPECT_EQ(admin("GET", "/v1/customers/ghost/wallet/transactions").status, 404);
  // A customer key reads its own wallet, never another's, and cannot grant itself credits.
  EXPECT_EQ(client_->request("GET", "/v1/customers/cust-err/wallet", {}, key_header(key)).status,
            200);
  EXPECT_EQ(client_->request("GET", "/v1/customers/cust-promo/wallet", {}, key_header(key)).status,
            403);
  EXPECT_EQ(client_
                ->request("POST", "/v1/customers/cust-err/wallet/transactions",
                          R"({"type":"top_up","amount":1})", key_header(key))
                .status,
            403);
  EXPECT_EQ(client_->request("GET", "/v1/customers/cust-err/wallet").status, 401);
  // Listing errors.
  EXPECT_EQ(admin("GET", "/v1/customers/cust-err/wallet/transactions?type=gift").status, 400);
  EXPECT_EQ(admin("GET", "/v1/customers/cust-err/wallet/transactions?cursor=x").status, 400);
  EXPECT_EQ(admin("GET", "/v1/customers/cust-err/wallet/transactions?limit=0").status, 400);
  EXPECT_EQ(admin("GET", "/v1/customers/cust-err/wallet/transactions?colour=1").status, 400);
  EXPECT_EQ(admin("GET", "/v1/customers/cust-err/wallet/transactions?from=yesterday").status, 400);
  EXPECT_EQ(balance("cust-err"), "10");
}

TEST_F(WalletApiTest, TransactionsPageByCursorAndFilterByType) {
  create_customer("cust-page");
  for (int i = 1; i <= 5; ++i) {
    ASSERT_EQ(txn("cust-page", R"({"type":"top_up","amount":)" + std::to_string(i) + "}").status,
              201);
  }
  ASSERT_EQ(txn("cust-page", R"({"type":"grant","amount":100})").status, 201);
  std::vector<std::string> amounts;
  std::string cursor;
  for (int page = 0; page < 10; ++page) {
    auto r = admin("GET", "/v1/customers/cust-page/wallet/transactions?limit=2" +
                              (cursor.empty() ? "" : "&cursor=" + cursor));
    ASSERT_EQ(r.status, 200) << r.body;
    Json j(r.body);
    for (auto t : j["transactions"].get_array()) {
      amounts.push_back(raw(t["amount"]));
    }
    if (j.is_null("next_cursor")) {
      break;
    }
    cursor = j.str("next_cursor");
  }
  EXPECT_EQ(amounts, (std::vector<std::string>{"1", "2", "3", "4", "5", "100"}));
  auto grants = admin("GET", "/v1/customers/cust-page/wallet/transactions?type=grant");
  ASSERT_EQ(Json(grants.body)["transactions"].get_array().size(), 1u) << grants.body;
  EXPECT_EQ(raw(Json(grants.body)["transactions"].at(0)["priority"]), "0");
}

TEST_F(WalletApiTest, PrepaidChecksNeedCreditsAnd402WhenShort) {
  auto c = admin("POST", "/v1/customers", R"({"id":"cust-prepaid","plan":"payg"})");
  ASSERT_EQ(c.status, 201) << c.body;
  const std::string check = R"({"customer":"cust-prepaid","meter":"tokens_in","amount":1000,)"
                            R"("properties":{"provider":"OPENAI","model":"gpt-4-turbo"}})";
  // No credits at all: denied.
  auto empty = admin("POST", "/v1/check", check);
  EXPECT_EQ(empty.status, 402) << empty.body;
  EXPECT_EQ(Json(empty.body).str("error"), "Insufficient Credits");
  EXPECT_FALSE(Json(empty.body)["allowed"].get_bool().value());
  ASSERT_EQ(txn("cust-prepaid", R"({"type":"top_up","amount":15})").status, 201);
  // 1,000 tokens at 0.00001 USD = 10 credits: allowed, and counted at once.
  auto first = admin("POST", "/v1/check", check);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(raw(Json(first.body)["credits_required"]), "10");
  EXPECT_EQ(raw(Json(first.body)["credits_available"]), "15");
  // Only 5 left (whether or not the first check's event is burned yet): denied, nothing taken.
  auto second = admin("POST", "/v1/check", check);
  EXPECT_EQ(second.status, 402) << second.body;
  EXPECT_EQ(Json(second.body).str("reason"), "insufficient_credits");
  EXPECT_EQ(raw(Json(second.body)["credits_available"]), "5");
  // A cheaper request still fits.
  auto small =
      admin("POST", "/v1/check",
            R"({"customer":"cust-prepaid","meter":"tokens_in","amount":500,)"
            R"("consume":false,"properties":{"provider":"OPENAI","model":"gpt-4-turbo"}})");
  EXPECT_EQ(small.status, 200) << small.body;
  // The first check's event is burned: 10 credits, once.
  auto burns = admin("GET", "/v1/customers/cust-prepaid/wallet/transactions?type=burn");
  for (int i = 0; i < 100 && Json(burns.body)["transactions"].get_array().size() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    burns = admin("GET", "/v1/customers/cust-prepaid/wallet/transactions?type=burn");
  }
  ASSERT_EQ(Json(burns.body)["transactions"].get_array().size(), 1u) << burns.body;
  EXPECT_EQ(raw(Json(burns.body)["transactions"].at(0)["amount"]), "-10");
  EXPECT_EQ(balance("cust-prepaid"), "5");
}

TEST_F(WalletApiTest, VerifyProvesTheLedgerAfterTheWalkthrough) {
  create_customer("cust-verify");
  ASSERT_EQ(txn("cust-verify", R"({"type":"grant","amount":50})").status, 201);
  auto r = admin("POST", "/v1/events",
                 R"({"events":[)" +
                     token_event("v-1", "cust-verify", "OPENAI", "gpt-4-turbo", 100, 100,
                                 "2025-01-17T14:30:00Z") +
                     "]}");
  ASSERT_EQ(r.status, 202) << r.body;
  std::string out;
  const int code = run_tally(
      {"verify", "--config", server_->dir() + "/tally.toml", "--data", server_->dir() + "/data"},
      &out, server_->dir());
  EXPECT_EQ(code, 0) << out;
  EXPECT_NE(out.find("transactions"), std::string::npos) << out;
}

// A reservation's hold is a ledger entry: it survives SIGKILL, and its commit after the restart
// burns the actual credits and releases the rest; verify proves available = balance - holds.
TEST(WalletHoldsTest, HoldsSurviveSigkillAndSettleAfterTheRestart) {
  TallyServer server(kConfig);
  auto c = server.client();
  auto admin = [&](const std::string& method, const std::string& target,
                   const std::string& body = {}) {
    return c->request(method, target, body, key_header(kAdminKey));
  };
  ASSERT_EQ(admin("POST", "/v1/customers", R"({"id":"h","plan":"payg"})").status, 201);
  ASSERT_EQ(
      admin("POST", "/v1/customers/h/wallet/transactions", R"({"type":"top_up","amount":100})")
          .status,
      201);
  // 2,000 tokens at 0.00001 USD x 1000 credits: 20 credits held.
  const std::string reserve =
      R"({"customer":"h","meter":"tokens_in","amount":2000,"consume":"reserve",)"
      R"("properties":{"provider":"OPENAI","model":"gpt-4-turbo"}})";
  auto held = admin("POST", "/v1/check", reserve);
  ASSERT_EQ(held.status, 200) << held.body;
  const std::string id = Json(held.body).str("reservation_id");
  auto second = admin("POST", "/v1/check", reserve);
  ASSERT_EQ(second.status, 200) << second.body;
  const std::string id2 = Json(second.body).str("reservation_id");
  const Json before(admin("GET", "/v1/customers/h/wallet").body);
  EXPECT_EQ(raw(before["balance"]), "100");
  EXPECT_EQ(raw(before["held"]), "40");
  EXPECT_EQ(raw(before["available"]), "60");

  server.kill_hard();  // SIGKILL by pid: the holds were acknowledged, so they are on disk
  server.start();
  c = server.client();
  const Json restarted(admin("GET", "/v1/customers/h/wallet").body);
  EXPECT_EQ(raw(restarted["balance"]), "100");
  EXPECT_EQ(raw(restarted["held"]), "40");
  EXPECT_EQ(raw(restarted["available"]), "60");
  const Json holds = Json(admin("GET", "/v1/customers/h/wallet/transactions?type=hold").body);
  ASSERT_EQ(holds["transactions"].get_array().size(), 2u);
  EXPECT_EQ(raw(holds["transactions"].at(0)["held"]), "20");
  EXPECT_EQ(raw(holds["transactions"].at(0)["amount"]), "0");
  EXPECT_EQ(holds["transactions"].at(0)["reservation_id"].get_string().value(), id);

  auto committed = admin("POST", "/v1/reservations/" + id + "/commit", R"({"amount":500})");
  ASSERT_EQ(committed.status, 200) << committed.body;
  ASSERT_EQ(admin("POST", "/v1/reservations/" + id2 + "/release").status, 200);
  EXPECT_EQ(admin("POST", "/v1/reservations/" + id + "/commit").status, 404);
  const Json settled(admin("GET", "/v1/customers/h/wallet").body);
  EXPECT_EQ(raw(settled["balance"]), "95");  // 500 tokens: 5 credits
  EXPECT_EQ(raw(settled["held"]), "0");
  EXPECT_EQ(raw(settled["available"]), "95");
  const Json all = Json(admin("GET", "/v1/customers/h/wallet/transactions").body);
  std::vector<std::string> seen;
  for (auto t : all["transactions"].get_array()) {
    std::string line(t["type"].get_string().value());
    if (auto h = t["held"]; !h.error()) {
      line += " " + raw(h.value());
    } else {
      line += " " + raw(t["amount"]);
    }
    seen.push_back(line);
  }
  EXPECT_EQ(seen, (std::vector<std::string>{"top_up 100", "hold 20", "hold 20", "burn -5",
                                            "release 15", "release 20"}));

  server.kill_hard();
  server.start();
  c = server.client();
  EXPECT_EQ(admin("POST", "/v1/reservations/" + id + "/commit").status, 404);
  EXPECT_EQ(admin("POST", "/v1/reservations/" + id2 + "/release").status, 404);
  EXPECT_EQ(raw(Json(admin("GET", "/v1/customers/h/wallet").body)["available"]), "95");
  EXPECT_EQ(server.stop(), 0);
  std::string out;
  const int code = run_tally(
      {"verify", "--config", server.dir() + "/tally.toml", "--data", server.dir() + "/data"}, &out,
      server.dir());
  EXPECT_EQ(code, 0) << out;
}

}  // namespace
}  // namespace tally::testing
