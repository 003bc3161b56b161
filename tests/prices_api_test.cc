// Price versions and re-rating against a real `tally serve`: GET /v1/prices across a restart
// with a back-dated price change, POST /v1/customers/{id}/reprice (dry run, the adjustment, a
// second run changing nothing, every error), then `tally reprice --dry-run` and `tally verify`
// on the stopped server's directory.
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

std::string config(const std::string& extra) {
  return R"(
[credits]
per_currency_unit = 100        # 1 credit = 0.01 USD

[[meters]]
key = "calls"
event_type = "call"
aggregation = "count"

[[prices]]
meter = "calls"
unit_price = "0.01"
)" + extra;
}

constexpr const char* kBackDated = R"(
[[prices]]
meter = "calls"
unit_price = "0.03"
effective_from = "2025-01-15T00:00:00Z"
)";

std::string raw(simdjson::dom::element e) {
  return simdjson::minify(e);
}

TEST(PricesApiTest, VersionsAcrossARestartAndRerating) {
  TallyServer server(config(""));
  auto c = server.client();
  auto admin = [&](const std::string& method, const std::string& target,
                   const std::string& body = {}) {
    return c->request(method, target, body, key_header(kAdminKey));
  };
  ASSERT_EQ(admin("POST", "/v1/customers", R"({"id":"p","billing_anchor":"2025-01-01T00:00:00Z"})")
                .status,
            201);
  auto key = admin("POST", "/v1/keys", R"({"customer":"p"})");
  ASSERT_EQ(key.status, 201) << key.body;
  const std::string customer_key = Json(key.body).str("key");
  ASSERT_EQ(
      admin("POST", "/v1/events",
            R"({"events":[{"id":"a","customer":"p","type":"call","time":"2025-01-20T10:00:00Z"}]})")
          .status,
      202);

  // Any key may read the prices: one price, one version since forever.
  auto listed = c->request("GET", "/v1/prices", "", key_header(customer_key));
  ASSERT_EQ(listed.status, 200) << listed.body;
  const Json one(listed.body);
  ASSERT_EQ(one["prices"].get_array().size(), 1u);
  auto price = one["prices"].at(0);
  EXPECT_EQ(price["id"].get_string().value(), "calls#0");
  EXPECT_TRUE(price["configured"].get_bool().value());
  ASSERT_EQ(price["versions"].get_array().size(), 1u);
  EXPECT_TRUE(price["versions"].at(0)["effective_from"].is_null());
  EXPECT_EQ(raw(price["versions"].at(0)["unit_price"]), "0.01");
  EXPECT_TRUE(price["versions"].at(0)["in_effect"].get_bool().value());
  EXPECT_EQ(c->request("GET", "/v1/prices?x=1", "", key_header(customer_key)).status, 400);
  EXPECT_EQ(c->request("GET", "/v1/prices").status, 401);

  // A back-dated change: from 15 January a call costs 0.03.
  ASSERT_EQ(server.stop(), 0);
  std::ofstream(server.dir() + "/tally.toml") << config(kBackDated);
  server.start();
  c = server.client();
  const Json two(admin("GET", "/v1/prices").body);
  auto versions = two["prices"].at(0)["versions"];
  ASSERT_EQ(versions.get_array().size(), 2u);
  EXPECT_EQ(versions.at(1)["effective_from"].get_string().value(), "2025-01-15T00:00:00Z");
  EXPECT_EQ(raw(versions.at(1)["unit_price"]), "0.03");
  EXPECT_TRUE(versions.at(1)["in_effect"].get_bool().value());
  // A late event of 21 January is priced by the new version; "a" keeps its charge.
  ASSERT_EQ(
      admin("POST", "/v1/events",
            R"({"events":[{"id":"b","customer":"p","type":"call","time":"2025-01-21T10:00:00Z"}]})")
          .status,
      202);
  const Json wallet(admin("GET", "/v1/customers/p/wallet").body);
  EXPECT_EQ(raw(wallet["balance"]), "-4");

  const std::string range = R"("from":"2025-01-01T00:00:00Z","to":"2025-02-01T00:00:00Z")";
  auto dry = admin("POST", "/v1/customers/p/reprice", "{" + range + R"(,"dry_run":true})");
  ASSERT_EQ(dry.status, 200) << dry.body;
  const Json dry_json(dry.body);
  EXPECT_TRUE(dry_json["dry_run"].get_bool().value());
  EXPECT_EQ(dry_json.num("events"), 2);
  EXPECT_EQ(dry_json.num("changed"), 1);
  ASSERT_EQ(dry_json["periods"].get_array().size(), 1u);
  EXPECT_EQ(raw(dry_json["periods"].at(0)["difference"]), "2");
  EXPECT_TRUE(dry_json["periods"].at(0)["transaction_id"].is_null());
  const Json unchanged(admin("GET", "/v1/customers/p/wallet").body);
  EXPECT_EQ(raw(unchanged["balance"]), "-4");

  auto done = admin("POST", "/v1/customers/p/reprice", "{" + range + "}");
  ASSERT_EQ(done.status, 200) << done.body;
  const Json done_json(done.body);
  ASSERT_EQ(done_json["periods"].get_array().size(), 1u);
  EXPECT_EQ(done_json["periods"].at(0)["period_start"].get_string().value(),
            "2025-01-01T00:00:00Z");
  const std::string txn(done_json["periods"].at(0)["transaction_id"].get_string().value());
  const Json after(admin("GET", "/v1/customers/p/wallet").body);
  EXPECT_EQ(raw(after["balance"]), "-6");
  const Json adjustments(admin("GET", "/v1/customers/p/wallet/transactions?type=adjustment").body);
  ASSERT_EQ(adjustments["transactions"].get_array().size(), 1u);
  auto t = adjustments["transactions"].at(0);
  EXPECT_EQ(t["id"].get_string().value(), txn);
  EXPECT_EQ(raw(t["amount"]), "-2");
  EXPECT_EQ(t["period_start"].get_string().value(), "2025-01-01T00:00:00Z");
  EXPECT_EQ(t["period_end"].get_string().value(), "2025-02-01T00:00:00Z");
  const Json again(admin("POST", "/v1/customers/p/reprice", "{" + range + "}").body);
  EXPECT_EQ(again["periods"].get_array().size(), 0u) << "a second run changes nothing";

  // Errors: clear, and nothing changes.
  EXPECT_EQ(admin("POST", "/v1/customers/p/reprice", R"({"from":"2025-01-01T00:00:00Z"})").status,
            400);
  EXPECT_EQ(admin("POST", "/v1/customers/p/reprice", "{" + range + R"(,"x":1})").status, 400);
  EXPECT_EQ(admin("POST", "/v1/customers/p/reprice",
                  R"({"from":"2025-02-01T00:00:00Z","to":"2025-01-01T00:00:00Z"})")
                .status,
            400);
  EXPECT_EQ(admin("POST", "/v1/customers/p/reprice", R"({"from":"yesterday","to":"today"})").status,
            400);
  EXPECT_EQ(admin("POST", "/v1/customers/p/reprice", "not json").status, 400);
  EXPECT_EQ(admin("POST", "/v1/customers/nobody/reprice", "{" + range + "}").status, 404);
  EXPECT_EQ(
      c->request("POST", "/v1/customers/p/reprice", "{" + range + "}", key_header(customer_key))
          .status,
      403);
  const Json still(admin("GET", "/v1/customers/p/wallet").body);
  EXPECT_EQ(raw(still["balance"]), "-6");

  ASSERT_EQ(server.stop(), 0);
  const std::vector<std::string> data = {"--config", server.dir() + "/tally.toml", "--data",
                                         server.dir() + "/data"};
  std::string out;
  std::vector<std::string> args = {
      "reprice", "--customer",           "p",        "--from", "2025-01-01T00:00:00Z",
      "--to",    "2025-02-01T00:00:00Z", "--dry-run"};
  args.insert(args.end(), data.begin(), data.end());
  EXPECT_EQ(run_tally(args, &out, server.dir()), 0) << out;
  EXPECT_NE(out.find("\"periods\":[]"), std::string::npos) << out;
  args = {"verify"};
  args.insert(args.end(), data.begin(), data.end());
  EXPECT_EQ(run_tally(args, &out, server.dir()), 0) << out;
}

}  // namespace
}  // namespace tally::testing
