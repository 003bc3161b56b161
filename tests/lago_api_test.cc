// Lago's API under /lago against a real `tally serve`: every refusal in Lago's error shape
// ({"status", "error", "code", "error_details"}) with its status, and that it changed nothing
// (Tally's own API still shows what was there before). The official Lago client drives the
// successful paths in tests/clients/lago.test.mjs.
#include <string>

#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

// Unknown customers are not created by events here, so that refusal can be seen.
constexpr const char* kConfig = R"(
[server]
auto_create_customers = false

[credits]
currency = "EUR"
per_currency_unit = 100

[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"

[[prices]]
meter = "calls"
unit_price = "0.5"
currency = "EUR"
)";

Headers bearer(const std::string& key) {
  return {{"authorization", "Bearer " + key}, {"content-type", "application/json"}};
}

class LagoApiTest : public ::testing::Test {
 protected:
  LagoApiTest() : server_(kConfig), c_(server_.client()) {}

  void SetUp() override {
    ASSERT_EQ(post("/customers", R"({"customer":{"external_id":"acme","name":"Acme"}})").status,
              200);
    ASSERT_EQ(post("/customers", R"({"customer":{"external_id":"globex"}})").status, 200);
  }

  HttpResponse post(const std::string& path, const std::string& body,
                    const std::string& key = kAdminKey) {
    return c_->request("POST", "/lago/api/v1" + path, body, bearer(key));
  }

  HttpResponse get(const std::string& path, const std::string& key = kAdminKey) {
    return c_->request("GET", "/lago/api/v1" + path, {}, bearer(key));
  }

  // Tally's own view: events of a customer, and its wallet balance.
  std::size_t stored_events(const std::string& customer) {
    auto r = c_->request("GET", "/v1/events?customer=" + customer, {}, key_header(kAdminKey));
    EXPECT_EQ(r.status, 200) << r.body;
    return Json(r.body)["events"].get_array().value().size();
  }

  std::string balance(const std::string& customer) {
    auto r = c_->request("GET", "/v1/customers/" + customer + "/wallet", {}, key_header(kAdminKey));
    EXPECT_EQ(r.status, 200) << r.body;
    return simdjson::minify(Json(r.body)["balance"]);
  }

  std::string customer_key(const std::string& customer) {
    auto r = c_->request("POST", "/v1/keys", R"({"customer":")" + customer + R"("})",
                         key_header(kAdminKey));
    EXPECT_EQ(r.status, 201) << r.body;
    return Json(r.body).str("key");
  }

  // The body is Lago's error: status, error title, and code when given.
  static void expect_error(const HttpResponse& r, int status, const char* error,
                           const char* code = nullptr) {
    EXPECT_EQ(r.status, status) << r.body;
    const Json j(r.body);
    ASSERT_TRUE(j.ok()) << r.body;
    EXPECT_EQ(j.num("status"), status) << r.body;
    EXPECT_EQ(j.str("error"), error) << r.body;
    if (code != nullptr) {
      EXPECT_EQ(j.str("code"), code) << r.body;
    } else {
      EXPECT_FALSE(j.has("code")) << r.body;
    }
  }

  // error_details, minified.
  static std::string details(const HttpResponse& r) {
    return simdjson::minify(Json(r.body)["error_details"]);
  }

  TallyServer server_;
  std::unique_ptr<HttpClient> c_;
};

TEST_F(LagoApiTest, RefusalsOfKeysAndRoutesAreInLagosShape) {
  const std::string event =
      R"({"event":{"transaction_id":"t1","external_customer_id":"acme","code":"api_call"}})";
  auto none =
      c_->request("POST", "/lago/api/v1/events", event, {{"content-type", "application/json"}});
  expect_error(none, 401, "Unauthorized");
  expect_error(post("/events", event, "not-a-key"), 401, "Unauthorized");
  // A key without the ingest scope, and a customer key naming another customer.
  auto read_only = c_->request("POST", "/v1/keys", R"({"customer":"acme","scopes":["read"]})",
                               key_header(kAdminKey));
  ASSERT_EQ(read_only.status, 201);
  expect_error(post("/events", event, Json(read_only.body).str("key")), 403, "Forbidden",
               "forbidden");
  const std::string globex = customer_key("globex");
  expect_error(post("/events", event, globex), 403, "Forbidden", "forbidden");
  expect_error(get("/customers/acme/current_usage", globex), 403, "Forbidden", "forbidden");
  expect_error(get("/customers/acme", globex), 403, "Forbidden", "forbidden");
  expect_error(get("/wallets/wallet_acme", globex), 403, "Forbidden", "forbidden");
  expect_error(get("/wallets?external_customer_id=acme", globex), 403, "Forbidden", "forbidden");
  // Admin routes need an admin key.
  expect_error(post("/customers", R"({"customer":{"external_id":"x"}})", globex), 403, "Forbidden",
               "forbidden");
  expect_error(
      post(
          "/wallets",
          R"({"wallet":{"external_customer_id":"globex","rate_amount":"0.01","paid_credits":"5"}})",
          globex),
      403, "Forbidden", "forbidden");
  // Routes Tally does not answer, and methods a route does not take.
  expect_error(get("/plans"), 404, "Not Found", "route_not_found");
  expect_error(get("/events/t1"), 404, "Not Found", "route_not_found");
  auto del = c_->request("DELETE", "/lago/api/v1/customers/acme", {}, bearer(kAdminKey));
  expect_error(del, 405, "Method Not Allowed", "not_allowed");
  EXPECT_EQ(del.header("Allow"), "GET");
  // Nothing was stored, no customer made, no credit given.
  EXPECT_EQ(stored_events("acme"), 0u);
  EXPECT_EQ(c_->request("GET", "/v1/customers/x", {}, key_header(kAdminKey)).status, 404);
  EXPECT_EQ(balance("globex"), "0");
}

TEST_F(LagoApiTest, InvalidEventsAreRefusedAndStoreNothing) {
  auto malformed = post("/events", "{nope");
  EXPECT_EQ(malformed.status, 400);
  EXPECT_EQ(Json(malformed.body).num("status"), 400);
  EXPECT_EQ(Json(malformed.body).str("error").substr(0, 26), "BadRequest: malformed JSON");
  expect_error(post("/events", R"({"events":[]})"), 400,
               "BadRequest: param is missing or the value is empty: event");
  auto text = c_->request(
      "POST", "/lago/api/v1/events", "x",
      {{"authorization", std::string("Bearer ") + kAdminKey}, {"content-type", "text/plain"}});
  EXPECT_EQ(text.status, 415);
  EXPECT_EQ(Json(text.body).num("status"), 415);

  auto missing = post("/events", R"({"event":{"properties":{}}})");
  expect_error(missing, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(
      details(missing),
      R"({"transaction_id":["value_is_mandatory"],"code":["value_is_mandatory"],"base":["missing_external_identifier"]})");
  auto wrong = post(
      "/events",
      R"({"event":{"transaction_id":"t1","external_customer_id":"acme","code":"nothing","timestamp":"yesterday","properties":[1]}})");
  expect_error(wrong, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(
      details(wrong),
      R"({"code":["metric_not_found"],"timestamp":["invalid_format"],"properties":["invalid_type"]})");
  auto future = post(
      "/events",
      R"({"event":{"transaction_id":"t1","external_customer_id":"acme","code":"api_call","timestamp":32503680000}})");
  expect_error(future, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(details(future), R"({"timestamp":["too_far_in_the_future"]})");
  // A timestamp that is neither a string nor a number is no time either.
  for (const char* ts : {"true", "{}", "[]", "\"\""}) {
    auto odd =
        post("/events",
             std::string(R"({"event":{"transaction_id":"t1","external_customer_id":"acme",)") +
                 R"("code":"api_call","timestamp":)" + ts + "}}");
    expect_error(odd, 422, "Unprocessable Entity", "validation_errors");
    EXPECT_EQ(details(odd), R"({"timestamp":["invalid_format"]})") << ts;
  }
  // A customer that does not exist (auto-creation is off), and a subscription that names none.
  expect_error(
      post(
          "/events",
          R"({"event":{"transaction_id":"t1","external_customer_id":"nobody","code":"api_call"}})"),
      404, "Not Found", "customer_not_found");
  expect_error(
      post(
          "/events",
          R"({"event":{"transaction_id":"t1","external_subscription_id":"sub_1","code":"api_call"}})"),
      404, "Not Found", "subscription_not_found");
  EXPECT_EQ(stored_events("acme"), 0u);
  EXPECT_EQ(c_->request("GET", "/v1/customers/nobody", {}, key_header(kAdminKey)).status, 404);

  // The same transaction_id again: Lago's value_already_exist, and the first one counts once.
  const std::string once =
      R"({"event":{"transaction_id":"t1","external_customer_id":"acme","code":"api_call"}})";
  ASSERT_EQ(post("/events", once).status, 200);
  auto dup = post("/events", once);
  expect_error(dup, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(details(dup), R"({"transaction_id":["value_already_exist"]})");
  EXPECT_EQ(stored_events("acme"), 1u);
  EXPECT_EQ(balance("acme"), "-50");  // one call burned once: 0.5 EUR = 50 credits
}

TEST_F(LagoApiTest, ABatchWithOneFaultStoresNothingAndNamesEachByIndex) {
  ASSERT_EQ(
      post("/events",
           R"({"event":{"transaction_id":"old","external_customer_id":"acme","code":"api_call"}})")
          .status,
      200);
  auto r = post("/events/batch", R"({"events":[
    {"transaction_id":"a","external_customer_id":"acme","code":"api_call"},
    {"transaction_id":"old","external_customer_id":"acme","code":"api_call"},
    {"transaction_id":"b","external_customer_id":"nobody","code":"api_call"},
    {"transaction_id":"a","external_customer_id":"acme","code":"api_call"},
    {"transaction_id":"c","code":"api_call"},
    7
  ]})");
  expect_error(r, 422, "Unprocessable Entity", "validation_errors");
  // Problems found from the request alone come first; then what storing found.
  EXPECT_EQ(details(r),
            R"({"4":{"base":["missing_external_identifier"]},"5":{"event":["invalid_type"]}})");
  auto stored = post("/events/batch", R"({"events":[
    {"transaction_id":"a","external_customer_id":"acme","code":"api_call"},
    {"transaction_id":"old","external_customer_id":"acme","code":"api_call"},
    {"transaction_id":"b","external_customer_id":"nobody","code":"api_call"},
    {"transaction_id":"a","external_customer_id":"acme","code":"api_call"}
  ]})");
  expect_error(stored, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(
      details(stored),
      R"({"1":{"transaction_id":["value_already_exist"]},"2":{"external_customer_id":["customer_not_found"]},"3":{"transaction_id":["value_already_exist"]}})");
  EXPECT_EQ(stored_events("acme"), 1u);

  std::string many = R"({"events":[)";
  for (int i = 0; i < 101; ++i) {
    many += std::string(i == 0 ? "" : ",") + R"({"transaction_id":"m)" + std::to_string(i) +
            R"(","external_customer_id":"acme","code":"api_call"})";
  }
  many += "]}";
  auto too_many = post("/events/batch", many);
  expect_error(too_many, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(details(too_many), R"({"events":["too_many_events"]})");
  auto empty = post("/events/batch", R"({"events":[]})");
  EXPECT_EQ(details(empty), R"({"events":["no_events"]})");
  EXPECT_EQ(details(post("/events/batch", R"({})")), R"({"events":["no_events"]})");
  EXPECT_EQ(stored_events("acme"), 1u);
}

TEST_F(LagoApiTest, CustomerAndUsageRefusals) {
  auto no_id = post("/customers", R"({"customer":{"name":"x"}})");
  expect_error(no_id, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(details(no_id), R"({"external_id":["value_is_mandatory"]})");
  auto bad = post(
      "/customers",
      R"({"customer":{"external_id":"acme","name":"Renamed","timezone":"Mars/Olympus","currency":"USD"}})");
  expect_error(bad, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(details(bad),
            R"({"timezone":["invalid_timezone"],"currency":["currencies_does_not_match"]})");
  expect_error(post("/customers", R"({"external_id":"x"})"), 400,
               "BadRequest: param is missing or the value is empty: customer");
  // Acme kept its name.
  auto acme = get("/customers/acme");
  ASSERT_EQ(acme.status, 200) << acme.body;
  EXPECT_EQ(Json(acme.body)["customer"]["name"].get_string().value(), "Acme");
  EXPECT_EQ(Json(acme.body)["customer"]["currency"].get_string().value(), "EUR");
  expect_error(get("/customers/nobody"), 404, "Not Found", "customer_not_found");
  expect_error(get("/customers/nobody/current_usage"), 404, "Not Found", "customer_not_found");
}

TEST_F(LagoApiTest, WalletRefusalsChangeNoBalance) {
  auto nobody = post(
      "/wallets",
      R"({"wallet":{"external_customer_id":"nobody","rate_amount":"0.01","currency":"EUR","paid_credits":"10"}})");
  expect_error(nobody, 404, "Not Found", "customer_not_found");
  auto bad = post(
      "/wallets",
      R"({"wallet":{"external_customer_id":"acme","rate_amount":"1","currency":"USD","paid_credits":"-1","granted_credits":"x","expiration_at":"2030-01-01T00:00:00Z"}})");
  expect_error(bad, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(
      details(bad),
      R"({"rate_amount":["value_is_invalid"],"currency":["currencies_does_not_match"],"paid_credits":["value_is_invalid"],"granted_credits":["value_is_invalid"],"expiration_at":["not_supported"]})");
  auto no_rate =
      post("/wallets", R"({"wallet":{"external_customer_id":"acme","paid_credits":"10"}})");
  EXPECT_EQ(details(no_rate), R"({"rate_amount":["value_is_mandatory"]})");
  EXPECT_EQ(balance("acme"), "0");
  // Opened once: a second wallet is refused, and its credits are not given.
  const std::string create =
      R"({"wallet":{"external_customer_id":"acme","rate_amount":"0.01","currency":"EUR","paid_credits":"10"}})";
  ASSERT_EQ(post("/wallets", create).status, 200);
  auto again = post("/wallets", create);
  expect_error(again, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(details(again), R"({"customer":["wallet_already_exists"]})");
  EXPECT_EQ(balance("acme"), "10");
  // Top-ups: an unknown wallet, invalid and unsupported credits.
  expect_error(post("/wallet_transactions",
                    R"({"wallet_transaction":{"wallet_id":"wallet_nobody","paid_credits":"5"}})"),
               404, "Not Found", "wallet_not_found");
  expect_error(post("/wallet_transactions",
                    R"({"wallet_transaction":{"wallet_id":"acme","paid_credits":"5"}})"),
               404, "Not Found", "wallet_not_found");
  auto no_wallet = post("/wallet_transactions", R"({"wallet_transaction":{"paid_credits":"5"}})");
  EXPECT_EQ(details(no_wallet), R"({"wallet_id":["value_is_mandatory"]})");
  auto voided = post(
      "/wallet_transactions",
      R"({"wallet_transaction":{"wallet_id":"wallet_acme","paid_credits":"5","voided_credits":"1"}})");
  expect_error(voided, 422, "Unprocessable Entity", "validation_errors");
  EXPECT_EQ(details(voided), R"({"voided_credits":["not_supported"]})");
  auto negative =
      post("/wallet_transactions",
           R"({"wallet_transaction":{"wallet_id":"wallet_acme","granted_credits":"-5"}})");
  EXPECT_EQ(details(negative), R"({"granted_credits":["value_is_invalid"]})");
  EXPECT_EQ(balance("acme"), "10");
  expect_error(get("/wallets/wallet_nobody"), 404, "Not Found", "wallet_not_found");
  expect_error(get("/wallets/nothing"), 404, "Not Found", "wallet_not_found");
  expect_error(get("/wallets/wallet_nobody/wallet_transactions"), 404, "Not Found",
               "wallet_not_found");
  auto list = get("/wallets");
  EXPECT_EQ(details(list), R"({"external_customer_id":["value_is_mandatory"]})");
  expect_error(get("/wallets?external_customer_id=nobody"), 404, "Not Found", "customer_not_found");
  auto page = get("/wallets/wallet_acme/wallet_transactions?per_page=1000");
  EXPECT_EQ(details(page), R"({"per_page":["value_is_invalid"]})");
}

}  // namespace
}  // namespace tally::testing
