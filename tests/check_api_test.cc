// End-to-end tests of the check API against a real `tally serve` process: /v1/check and its
// rate-limit headers, 429 / 403 bodies, every error path, batches, reservations, the limits
// report, overrides and resets; and a SIGKILL test proving that no acknowledged consumption
// older than the commit bound is lost.
#include <atomic>
#include <chrono>
#include <ctime>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "core/time.h"
#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

const std::string kConfig = R"(
[server]
accept_unmetered_events = true  # the tests' barrier events

[enforcement]
default_plan = "starter"
reservation_ttl = "60s"

)" + std::string(kApiCallsMeterToml) +
                            R"(
[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"

[[meters]]
key = "users"
event_type = "api_call"
aggregation = "unique_count"
value = "$.user"

[[plans]]
key = "starter"
features = ["chat", "search"]
limits = [
  { meter = "api_calls", period = "day", amount = 34 },
  { meter = "api_calls", period = "month", amount = 1000 },
  { meter = "api_calls", period = "minute", amount = 60 },
]

[[plans]]
key = "enterprise"
features = ["chat", "search", "tts"]
limits = [{ meter = "api_calls", period = "month", amount = "unlimited" }]

[[plans]]
key = "metered"
features = ["chat"]
limits = [
  { meter = "api_calls", period = "lifetime", amount = 5 },
  { meter = "tokens", period = "lifetime", amount = 1000 },
]
)";

std::int64_t now_seconds() {
  return static_cast<std::int64_t>(std::time(nullptr));
}

class CheckApiTest : public ApiTest {
 protected:
  static void SetUpTestSuite() { start_server(kConfig); }

  void customer(const std::string& id, const std::string& plan) {
    auto r = admin("POST", "/v1/customers", R"({"id":")" + id + R"(","plan":")" + plan + "\"}");
    ASSERT_EQ(r.status, 201) << r.body;
  }

  HttpResponse check(const std::string& body) { return admin("POST", "/v1/check", body); }

  HttpResponse check_one(const std::string& customer, const std::string& meter = "api_calls",
                         const std::string& extra = "") {
    return check(R"({"customer":")" + customer + R"(","meter":")" + meter + "\"" + extra + "}");
  }

  // The all-time total of a meter for a customer, as a query answers it ("none" without rows).
  // A check's consumption joins the commit queue after its answer; an ingest is answered only
  // once committed, and commits take the queue in order, so one ingest first is a barrier:
  // every consumption answered before it is then in the total.
  std::string usage(const std::string& customer, const std::string& meter) {
    static std::atomic<int> barrier{0};
    auto r = admin("POST", "/v1/events",
                   R"({"id":"barrier-)" + std::to_string(barrier++) +
                       R"(","customer":"barrier","type":"barrier"})");
    EXPECT_EQ(r.status, 202) << r.body;
    return usage_now(customer, meter);
  }

  std::string usage_now(const std::string& customer, const std::string& meter) {
    auto q = admin("GET", "/v1/meters/" + meter + "/query?customer=" + customer +
                              "&from=2000-01-01T00:00:00Z&to=2100-01-01T00:00:00Z");
    EXPECT_EQ(q.status, 200) << q.body;
    Json j(q.body);
    auto rows = j["data"].get_array();
    if (rows.error() != simdjson::SUCCESS || rows.size() == 0) {
      return "none";
    }
    return simdjson::minify(rows.at(0)["value"]);
  }
};

std::int64_t epoch_of(const std::string& rfc3339) {
  auto t = core::parse_rfc3339(rfc3339);
  EXPECT_TRUE(t.has_value()) << rfc3339;
  return t ? *t / core::kUsPerSecond : 0;
}

// ---- allowed, 429, 403 --------------------------------------------------------------------------

TEST_F(CheckApiTest, AllowedAnswerWithRateLimitHeaders) {
  customer("h-allowed", "starter");
  auto r = check_one("h-allowed", "api_calls",
                     R"(,"amount":1,"feature":"chat","properties":{"service":"chat"})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  EXPECT_TRUE(j["allowed"].get_bool().value());
  EXPECT_FALSE(j.has("error"));
  EXPECT_EQ(j.str("message"), "Allowed.");
  EXPECT_EQ(j.str("tier"), "starter");
  EXPECT_EQ(j.str("meter"), "api_calls");
  // The most restrictive limit: the day's 34 (33 left) beats the month (999) and minute (59).
  EXPECT_EQ(j.num("used"), 1);
  EXPECT_EQ(j.num("limit"), 34);
  EXPECT_EQ(j.num("remaining"), 33);
  EXPECT_EQ(j.str("period"), "day");
  EXPECT_EQ(j.str("rule"), "api_calls per day");
  EXPECT_FALSE(j["overage"].get_bool().value());
  EXPECT_EQ(j["limits"].get_array().size(), 3u);

  EXPECT_EQ(r.header("X-RateLimit-Limit"), "34");
  EXPECT_EQ(r.header("X-RateLimit-Remaining"), "33");
  const std::int64_t reset = std::stoll(r.header("X-RateLimit-Reset"));
  EXPECT_EQ(reset, epoch_of(j.str("reset")));
  EXPECT_EQ(reset % 86400, 0) << "a UTC day ends at midnight";
  EXPECT_GT(reset, now_seconds() - 2);
  EXPECT_LE(reset, now_seconds() + 86400 + 2);
  EXPECT_FALSE(r.has_header("Retry-After"));
  const std::string policy = r.header("RateLimit-Policy");
  EXPECT_NE(policy.find("\"api_calls-day\";q=34;w=86400"), std::string::npos) << policy;
  EXPECT_NE(policy.find("\"api_calls-month\";q=1000;w="), std::string::npos) << policy;
  EXPECT_NE(policy.find("\"api_calls-minute\";q=60;w=60"), std::string::npos) << policy;
  const std::string current = r.header("RateLimit");
  const std::string prefix = "\"api_calls-day\";r=33;t=";
  ASSERT_EQ(current.rfind(prefix, 0), 0u) << current;
  const std::int64_t t = std::stoll(current.substr(prefix.size()));
  EXPECT_GE(t, 1);
  EXPECT_LE(t, 86400);
  EXPECT_LE(std::abs(now_seconds() + t - reset), 2) << current;
}

TEST_F(CheckApiTest, LimitExceededIs429WithRetryAfterAndTheBodyOf001) {
  customer("h-429", "starter");
  for (int i = 0; i < 34; ++i) {
    auto r = check_one("h-429");
    ASSERT_EQ(r.status, 200) << i << ": " << r.body;
    EXPECT_EQ(r.header("X-RateLimit-Remaining"), std::to_string(33 - i));
  }
  auto r = check_one("h-429");
  ASSERT_EQ(r.status, 429) << r.body;
  Json j(r.body);
  EXPECT_FALSE(j["allowed"].get_bool().value());
  EXPECT_EQ(j.str("error"), "Rate Limit Exceeded");
  EXPECT_EQ(j.str("reason"), "limit_exceeded");
  EXPECT_NE(j.str("message").find("34"), std::string::npos) << j.str("message");
  EXPECT_EQ(j.str("tier"), "starter");
  EXPECT_EQ(j.str("meter"), "api_calls");
  EXPECT_EQ(j.num("used"), 34);
  EXPECT_EQ(j.num("limit"), 34);
  EXPECT_EQ(j.num("remaining"), 0);
  EXPECT_EQ(j.str("period"), "day");
  EXPECT_EQ(j.str("rule"), "api_calls per day");
  const std::int64_t reset = epoch_of(j.str("reset"));
  EXPECT_EQ(r.header("X-RateLimit-Limit"), "34");
  EXPECT_EQ(r.header("X-RateLimit-Remaining"), "0");
  EXPECT_EQ(r.header("X-RateLimit-Reset"), std::to_string(reset));
  ASSERT_TRUE(r.has_header("Retry-After"));
  const std::int64_t retry = std::stoll(r.header("Retry-After"));
  EXPECT_GE(retry, 1);
  EXPECT_LE(std::abs(now_seconds() + retry - reset), 2) << "retry at the end of the day";
  EXPECT_EQ(r.header("RateLimit").rfind("\"api_calls-day\";r=0;t=", 0), 0u)
      << r.header("RateLimit");
  // Nothing consumed by the denial.
  EXPECT_EQ(usage("h-429", "api_calls"), "34");
  // Asking (consume false) is denied the same way and answers the same headers.
  auto ask = check_one("h-429", "api_calls", R"(,"consume":false)");
  EXPECT_EQ(ask.status, 429);
  EXPECT_TRUE(ask.has_header("Retry-After"));
}

TEST_F(CheckApiTest, MissingFeatureAndSuspendedCustomerAre403) {
  customer("h-403", "starter");
  auto r = check_one("h-403", "api_calls", R"(,"feature":"tts")");
  ASSERT_EQ(r.status, 403) << r.body;
  Json j(r.body);
  EXPECT_FALSE(j["allowed"].get_bool().value());
  EXPECT_EQ(j.str("error"), "Feature Not Available");
  EXPECT_EQ(j.str("reason"), "feature_not_enabled");
  EXPECT_EQ(j.str("tier"), "starter");
  EXPECT_FALSE(r.has_header("Retry-After"));
  EXPECT_TRUE(r.has_header("X-RateLimit-Limit"));
  EXPECT_EQ(usage("h-403", "api_calls"), "none");

  const std::string key = customer_key("h-403");
  ASSERT_EQ(admin("PATCH", "/v1/customers/h-403", R"({"status":"suspended"})").status, 200);
  r = check_one("h-403");
  ASSERT_EQ(r.status, 403) << r.body;
  Json s(r.body);
  EXPECT_EQ(s.str("error"), "Customer Suspended");
  EXPECT_EQ(s.str("reason"), "customer_suspended");
  // The suspended customer's own key is refused before the check.
  auto own = as(key, "POST", "/v1/check", R"({"customer":"h-403","meter":"api_calls"})");
  EXPECT_EQ(own.status, 403) << own.body;
  EXPECT_EQ(Json(own.body).str("error"), "FORBIDDEN");
  ASSERT_EQ(admin("PATCH", "/v1/customers/h-403", R"({"status":"active"})").status, 200);
  EXPECT_EQ(check_one("h-403").status, 200);
}

TEST_F(CheckApiTest, UnlimitedTierSaysUnlimited) {
  customer("h-unl", "enterprise");
  for (int i = 0; i < 5; ++i) {
    auto r = check_one("h-unl", "api_calls", R"(,"amount":1000,"feature":"tts")");
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("X-RateLimit-Limit"), "unlimited");
    EXPECT_EQ(r.header("X-RateLimit-Remaining"), "unlimited");
    EXPECT_FALSE(r.has_header("X-RateLimit-Reset"));
    Json j(r.body);
    EXPECT_EQ(j.str("limit"), "unlimited");
    EXPECT_EQ(j.str("remaining"), "unlimited");
    EXPECT_TRUE(j.is_null("used"));
    EXPECT_EQ(j.str("tier"), "enterprise");
  }
  EXPECT_EQ(usage("h-unl", "api_calls"), "5000");
}

TEST_F(CheckApiTest, SameEventIdConsumesOnce) {
  customer("h-idem", "metered");
  auto a = check_one("h-idem", "api_calls", R"(,"event_id":"req-42")");
  ASSERT_EQ(a.status, 200) << a.body;
  EXPECT_FALSE(Json(a.body).has("replayed"));
  auto b = check_one("h-idem", "api_calls", R"(,"idempotency_key":"req-42")");
  ASSERT_EQ(b.status, 200) << b.body;
  EXPECT_TRUE(Json(b.body)["replayed"].get_bool().value());
  EXPECT_EQ(Json(b.body).num("used"), 1);
  EXPECT_EQ(usage("h-idem", "api_calls"), "1");
}

// ---- errors -------------------------------------------------------------------------------------

TEST_F(CheckApiTest, ErrorPaths) {
  customer("h-err", "starter");
  customer("h-err-other", "starter");
  auto expect_error = [&](const HttpResponse& r, int status, const std::string& error,
                          const std::string& fragment = "") {
    EXPECT_EQ(r.status, status) << r.body;
    Json j(r.body);
    EXPECT_EQ(j.str("error"), error) << r.body;
    if (!fragment.empty()) {
      EXPECT_NE(j.str("message").find(fragment), std::string::npos) << r.body;
    }
  };
  expect_error(check(R"({"customer":"h-err","meter":)"), 400, "INVALID_JSON");
  expect_error(check(R"({"meter":"api_calls"})"), 400, "VALIDATION_ERROR",
               "'customer' is required");
  expect_error(check(R"({"customer":"h-err"})"), 400, "VALIDATION_ERROR", "'meter' is required");
  expect_error(check_one("h-err", "api_calls", R"(,"amount":"abc")"), 400, "VALIDATION_ERROR");
  expect_error(check_one("h-err", "api_calls", R"(,"amount":0)"), 400, "VALIDATION_ERROR");
  expect_error(check_one("h-err", "api_calls", R"(,"amount":-3)"), 400, "VALIDATION_ERROR");
  expect_error(check_one("h-err", "api_calls", R"(,"amount":true)"), 400, "VALIDATION_ERROR");
  expect_error(check_one("h-err", "api_calls", R"(,"amount":1.5)"), 400, "VALIDATION_ERROR");
  expect_error(check_one("h-err", "api_calls", R"(,"consume":"later")"), 400, "VALIDATION_ERROR");
  expect_error(check_one("h-err", "api_calls", R"(,"colour":"red")"), 400, "VALIDATION_ERROR",
               "unknown field 'colour'");
  expect_error(check_one("h-err", "api_calls", R"(,"properties":{"a":{"b":1}})"), 400,
               "VALIDATION_ERROR");
  expect_error(check_one("h-err", "users"), 400, "VALIDATION_ERROR");  // unique_count
  // Each field's refusal names the field and what it takes, and the first field at fault wins.
  const std::pair<std::string, std::string> field_errors[] = {
      {R"({"customer":1,"meter":"api_calls"})", "'customer' must be a string"},
      {R"({"customer_id":[],"meter":"api_calls"})", "'customer' must be a string"},
      {R"({"customer":"h-err","meter":2})", "'meter' must be a string"},
      {R"({"customer":"h-err","meter":""})", "'meter' is required"},
      {R"({"customer":"","meter":"api_calls"})",
       "'customer' is required (a customer key supplies its own)"},
      {R"({"customer":"h-err","meter":"api_calls","amount":true})", "'amount' must be a number"},
      {R"({"customer":"h-err","meter":"api_calls","consume":"later"})",
       "'consume' must be true, false or \"reserve\""},
      {R"({"customer":"h-err","meter":"api_calls","consume":1})",
       "'consume' must be true, false or \"reserve\""},
      {R"({"customer":"h-err","meter":"api_calls","feature":1})", "'feature' must be a string"},
      {R"({"customer":"h-err","meter":"api_calls","event_id":""})",
       "'event_id' must be a non-empty string"},
      {R"({"customer":"h-err","meter":"api_calls","idempotency_key":3})",
       "'event_id' must be a non-empty string"},
      {R"({"customer":"h-err","meter":"api_calls","ttl_seconds":0})",
       "'ttl_seconds' must be an integer 1..604800"},
      {R"({"customer":"h-err","meter":"api_calls","ttl_seconds":604801})",
       "'ttl_seconds' must be an integer 1..604800"},
      {R"({"customer":"h-err","meter":"api_calls","properties":[1]})",
       "'properties' must be an object"},
      {R"({"customer":"h-err","meter":"api_calls","properties":{"ok":1,"a":{"b":1}}})",
       "property 'a' must be a string, number or boolean"},
      {R"({"meter":7,"customer":true})", "'meter' must be a string"},
  };
  for (const auto& [body, message] : field_errors) {
    auto r = check(body);
    EXPECT_EQ(r.status, 400) << body;
    EXPECT_EQ(Json(r.body).str("error"), "VALIDATION_ERROR") << body;
    EXPECT_EQ(Json(r.body).str("message"), message) << body;
  }
  expect_error(check(R"([1,2])"), 400, "VALIDATION_ERROR");
  expect_error(check_one("ghost"), 404, "NOT_FOUND");
  expect_error(check_one("h-err", "nope"), 404, "NOT_FOUND");
  // No key, a wrong key.
  auto r = client_->request("POST", "/v1/check", R"({"customer":"h-err","meter":"api_calls"})",
                            {{"content-type", "application/json"}});
  expect_error(r, 401, "UNAUTHORIZED");
  expect_error(as("tk_wrong", "POST", "/v1/check", R"({"customer":"h-err","meter":"api_calls"})"),
               401, "UNAUTHORIZED");
  // A customer key checks only its own customer, and may leave the customer out.
  const std::string key = customer_key("h-err");
  expect_error(as(key, "POST", "/v1/check", R"({"customer":"h-err-other","meter":"api_calls"})"),
               403, "FORBIDDEN");
  auto own = as(key, "POST", "/v1/check", R"({"meter":"api_calls"})");
  EXPECT_EQ(own.status, 200) << own.body;
  EXPECT_EQ(as(key, "POST", "/v1/check", R"({"customer":"h-err","meter":"api_calls"})").status,
            200);
  auto own_batch = as(key, "POST", "/v1/check/batch", R"({"checks":[{"meter":"api_calls"}]})");
  EXPECT_EQ(own_batch.status, 200) << own_batch.body;
  expect_error(
      as(key, "POST", "/v1/check/batch",
         R"({"checks":[{"meter":"api_calls"},{"customer":"h-err-other","meter":"api_calls"}]})"),
      403, "FORBIDDEN");
  EXPECT_EQ(usage("h-err", "api_calls"), "3");
  EXPECT_EQ(usage("h-err-other", "api_calls"), "none");
  // A key without the check scope.
  auto k = admin("POST", "/v1/keys", R"({"customer":"h-err","scopes":["read"]})");
  ASSERT_EQ(k.status, 201) << k.body;
  expect_error(as(Json(k.body).str("key"), "POST", "/v1/check", R"({"meter":"api_calls"})"), 403,
               "FORBIDDEN");
  // Content type, method.
  r = client_->request("POST", "/v1/check", R"({"customer":"h-err","meter":"api_calls"})",
                       {{"x-api-key", kAdminKey}, {"content-type", "text/plain"}});
  expect_error(r, 415, "UNSUPPORTED_MEDIA_TYPE");
  r = admin("GET", "/v1/check");
  expect_error(r, 405, "METHOD_NOT_ALLOWED");
  EXPECT_EQ(r.header("Allow"), "POST");
  EXPECT_EQ(admin("GET", "/v1/check/batch").status, 405);
  EXPECT_EQ(admin("GET", "/v1/reservations/x/commit").status, 405);
  EXPECT_EQ(admin("POST", "/v1/customers/h-err/limits").status, 405);
  EXPECT_EQ(usage("h-err", "api_calls"), "3");
}

// ---- batches ------------------------------------------------------------------------------------

TEST_F(CheckApiTest, BatchAllOrNothing) {
  customer("h-batch", "metered");  // api_calls: 5, tokens: 1000, lifetime
  auto ok = admin(
      "POST", "/v1/check/batch",
      R"({"checks":[{"customer":"h-batch","meter":"api_calls"},{"customer":"h-batch","meter":"tokens","amount":400}]})");
  ASSERT_EQ(ok.status, 200) << ok.body;
  Json oj(ok.body);
  EXPECT_TRUE(oj["allowed"].get_bool().value());
  ASSERT_EQ(oj["results"].get_array().size(), 2u);
  EXPECT_EQ(ok.header("X-RateLimit-Limit"), "5");  // the first check's
  EXPECT_EQ(ok.header("X-RateLimit-Remaining"), "4");

  // The second is denied: neither consumes; the status is the denial's.
  auto denied = admin(
      "POST", "/v1/check/batch",
      R"({"checks":[{"customer":"h-batch","meter":"api_calls"},{"customer":"h-batch","meter":"tokens","amount":601}]})");
  ASSERT_EQ(denied.status, 429) << denied.body;
  Json dj(denied.body);
  EXPECT_FALSE(dj["allowed"].get_bool().value());
  auto results = dj["results"].get_array();
  ASSERT_EQ(results.size(), 2u);
  EXPECT_FALSE(results.at(0)["allowed"].get_bool().value());
  EXPECT_EQ(std::string(results.at(0)["reason"].get_string().value()), "batch_denied");
  EXPECT_EQ(std::string(results.at(0)["error"].get_string().value()), "Denied");
  EXPECT_EQ(std::string(results.at(1)["reason"].get_string().value()), "limit_exceeded");
  EXPECT_EQ(std::string(results.at(1)["error"].get_string().value()), "Rate Limit Exceeded");
  EXPECT_EQ(denied.header("X-RateLimit-Limit"), "1000");  // the denied check's limit
  EXPECT_EQ(denied.header("X-RateLimit-Remaining"), "600");
  EXPECT_EQ(usage("h-batch", "api_calls"), "1");
  EXPECT_EQ(usage("h-batch", "tokens"), "400");

  // The first denial decides the status: a feature denial (403) before a limit (429).
  auto first = admin(
      "POST", "/v1/check/batch",
      R"({"checks":[{"customer":"h-batch","meter":"api_calls"},{"customer":"h-batch","meter":"api_calls","feature":"tts"},{"customer":"h-batch","meter":"tokens","amount":601}]})");
  EXPECT_EQ(first.status, 403) << first.body;
  EXPECT_EQ(usage("h-batch", "api_calls"), "1");

  // Shape errors.
  auto message_of = [&](const std::string& body) {
    auto r = admin("POST", "/v1/check/batch", body);
    EXPECT_EQ(r.status, 400) << body;
    return Json(r.body).str("message");
  };
  EXPECT_EQ(message_of(R"({"checks":[]})"), "a batch holds 1 to 100 checks");
  EXPECT_EQ(message_of(R"({"checks":{}})"), "the body must be {\"checks\": [ ... ]}");
  EXPECT_EQ(message_of(R"({"checks":[{"customer":"h-batch","meter":"api_calls"},7]})"),
            "checks[1]: a check must be a JSON object");
  EXPECT_EQ(message_of(R"({"checks":[{"customer":"h-batch","meter":"api_calls","amount":true}]})"),
            "checks[0]: 'amount' must be a number");
  EXPECT_EQ(
      admin("POST", "/v1/check/batch", R"([{"customer":"h-batch","meter":"api_calls"}])").status,
      400);
  auto extra = admin("POST", "/v1/check/batch",
                     R"({"checks":[{"customer":"h-batch","meter":"api_calls"}],"x":1})");
  EXPECT_EQ(extra.status, 400);
  EXPECT_NE(Json(extra.body).str("message").find("unknown field 'x'"), std::string::npos)
      << extra.body;
  auto bad =
      admin("POST", "/v1/check/batch",
            R"({"checks":[{"customer":"h-batch","meter":"api_calls"},{"customer":"h-batch"}]})");
  EXPECT_EQ(bad.status, 400);
  EXPECT_NE(Json(bad.body).str("message").find("checks[1]"), std::string::npos) << bad.body;
  std::string many = "{\"checks\":[";
  for (int i = 0; i < 101; ++i) {
    many += std::string(i ? "," : "") +
            R"({"customer":"h-batch","meter":"tokens","amount":1,"consume":false})";
  }
  many += "]}";
  EXPECT_EQ(message_of(many), "a batch holds 1 to 100 checks");
  // 100 is the most a batch holds.
  const std::string hundred =
      many.substr(0, many.rfind(",{")) + "]}";  // the same checks, one fewer
  auto full = admin("POST", "/v1/check/batch", hundred);
  EXPECT_EQ(full.status, 200) << full.body;
  Json full_json(full.body);
  EXPECT_EQ(full_json["results"].get_array().size(), 100u) << full.body;
  EXPECT_EQ(
      admin("POST", "/v1/check/batch", R"({"checks":[{"customer":"ghost","meter":"api_calls"}]})")
          .status,
      404);
  EXPECT_EQ(
      admin("POST", "/v1/check/batch", R"({"checks":[{"customer":"h-batch","meter":"api_calls"})")
          .status,
      400);
  EXPECT_EQ(usage("h-batch", "api_calls"), "1");
}

// ---- reservations -------------------------------------------------------------------------------

TEST_F(CheckApiTest, ReservationsCommitAndRelease) {
  customer("h-res", "metered");  // tokens: 1000, lifetime
  auto held = check_one("h-res", "tokens", R"(,"amount":900,"consume":"reserve","ttl_seconds":30)");
  ASSERT_EQ(held.status, 200) << held.body;
  Json hj(held.body);
  const std::string id = hj.str("reservation_id");
  ASSERT_EQ(id.rfind("res_", 0), 0u) << held.body;
  EXPECT_LE(std::abs(epoch_of(hj.str("expires_at")) - (now_seconds() + 30)), 2);
  EXPECT_EQ(check_one("h-res", "tokens", R"(,"amount":101)").status, 429);
  EXPECT_EQ(usage("h-res", "tokens"), "none");
  // Commit less than held: that is recorded, the rest freed.
  auto c = admin("POST", "/v1/reservations/" + id + "/commit", R"({"amount":250})");
  ASSERT_EQ(c.status, 200) << c.body;
  Json cj(c.body);
  EXPECT_TRUE(cj["allowed"].get_bool().value());
  EXPECT_EQ(cj.str("reservation_id"), id);
  EXPECT_EQ(cj.num("used"), 250);
  EXPECT_EQ(c.header("X-RateLimit-Remaining"), "750");
  EXPECT_EQ(usage("h-res", "tokens"), "250");
  EXPECT_EQ(admin("POST", "/v1/reservations/" + id + "/commit").status, 404);
  EXPECT_EQ(admin("POST", "/v1/reservations/" + id + "/release").status, 404);
  // Release frees it all.
  auto again = check_one("h-res", "tokens", R"(,"amount":750,"consume":"reserve")");
  ASSERT_EQ(again.status, 200) << again.body;
  const std::string id2 = Json(again.body).str("reservation_id");
  EXPECT_EQ(check_one("h-res", "tokens", R"(,"amount":1,"consume":false)").status, 429);
  auto rel = admin("POST", "/v1/reservations/" + id2 + "/release");
  ASSERT_EQ(rel.status, 200) << rel.body;
  EXPECT_TRUE(Json(rel.body)["released"].get_bool().value());
  EXPECT_EQ(Json(rel.body).str("reservation_id"), id2);
  EXPECT_EQ(check_one("h-res", "tokens", R"(,"amount":750,"consume":false)").status, 200);
  // Commit without a body records the reserved amount; bad bodies are 400 and keep it.
  auto third = check_one("h-res", "tokens", R"(,"amount":50,"consume":"reserve")");
  const std::string id3 = Json(third.body).str("reservation_id");
  EXPECT_EQ(admin("POST", "/v1/reservations/" + id3 + "/commit", R"({"amount":"x"})").status, 400);
  EXPECT_EQ(admin("POST", "/v1/reservations/" + id3 + "/commit", R"({"amt":1})").status, 400);
  EXPECT_EQ(admin("POST", "/v1/reservations/" + id3 + "/commit", R"({"amount":-1})").status, 400);
  EXPECT_EQ(admin("POST", "/v1/reservations/" + id3 + "/commit").status, 200);
  EXPECT_EQ(usage("h-res", "tokens"), "300");
  EXPECT_EQ(admin("POST", "/v1/reservations/res_nope/commit").status, 404);
  EXPECT_EQ(admin("POST", "/v1/reservations/res_nope/release").status, 404);
  EXPECT_EQ(check_one("h-res", "tokens", R"(,"consume":"reserve","ttl_seconds":0)").status, 400);
}

// ---- limits report, overrides, reset ----------------------------------------------------------

TEST_F(CheckApiTest, LimitsReportWarnsAbove80Percent) {
  customer("h-lim", "metered");
  customer("h-lim-other", "metered");
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(check_one("h-lim").status, 200);
  }
  ASSERT_EQ(check_one("h-lim", "tokens", R"(,"amount":800)").status, 200);  // exactly 80 %
  auto r = admin("GET", "/v1/customers/h-lim/limits");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("customer"), "h-lim");
  EXPECT_EQ(j.str("plan"), "metered");
  EXPECT_EQ(j["features"].get_array().size(), 1u);
  auto limits = j["limits"].get_array();
  ASSERT_EQ(limits.size(), 2u);
  EXPECT_EQ(std::string(limits.at(0)["period"].get_string().value()), "lifetime");
  EXPECT_EQ(limits.at(0)["used"].get_int64().value(), 5);
  EXPECT_EQ(limits.at(0)["remaining"].get_int64().value(), 0);
  EXPECT_EQ(limits.at(0)["percent"].get_double().value(), 100.0);
  EXPECT_TRUE(limits.at(0)["reset"].is_null());
  EXPECT_EQ(limits.at(1)["percent"].get_double().value(), 80.0);
  EXPECT_NE(r.body.find("\"percent\":100.00,"), std::string::npos) << "two decimals: " << r.body;
  auto warnings = j["warnings"].get_array();
  ASSERT_EQ(warnings.size(), 1u) << r.body;
  EXPECT_EQ(std::string(warnings.at(0).get_string().value()), "api_calls (lifetime) at 100.00%");
  // A customer key reads its own, not another's.
  const std::string key = customer_key("h-lim");
  EXPECT_EQ(as(key, "GET", "/v1/customers/h-lim/limits").status, 200);
  EXPECT_EQ(as(key, "GET", "/v1/customers/h-lim-other/limits").status, 403);
  EXPECT_EQ(admin("GET", "/v1/customers/ghost/limits").status, 404);
}

TEST_F(CheckApiTest, OverridesValidateAndApply) {
  customer("h-ovr", "metered");
  auto put = [&](const std::string& body) {
    return admin("PUT", "/v1/customers/h-ovr/overrides", body);
  };
  auto r = put(R"({"overrides":[{"meter":"api_calls","period":"lifetime","amount":2}]})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r.body)["overrides"].get_array().size(), 1u) << r.body;
  EXPECT_EQ(check_one("h-ovr").status, 200);
  EXPECT_EQ(check_one("h-ovr").status, 200);
  auto denied = check_one("h-ovr");
  EXPECT_EQ(denied.status, 429);
  EXPECT_EQ(denied.header("X-RateLimit-Limit"), "2");
  ASSERT_EQ(put(R"([{"meter":"api_calls","period":"lifetime","amount":"unlimited"}])").status, 200);
  auto unl = check_one("h-ovr");
  EXPECT_EQ(unl.status, 200);
  EXPECT_EQ(unl.header("X-RateLimit-Limit"), "unlimited");
  for (const char* bad :
       {R"("x")", R"({"overrides":{}})", R"({"other":[]})", R"([1])",
        R"([{"meter":"api_calls","period":"day"}])", R"([{"meter":"api_calls","amount":3}])",
        R"([{"meter":"nope","period":"day","amount":3}])",
        R"([{"meter":"users","period":"day","amount":3}])",
        R"([{"meter":"api_calls","period":"fortnight","amount":3}])",
        R"([{"meter":"api_calls","period":"day","amount":"lots"}])",
        R"([{"meter":"api_calls","period":"trial","amount":3}])",
        R"([{"meter":"api_calls","period":"day","amount":3,"hard":"yes"}])",
        R"([{"meter":"api_calls","period":"day","amount":3,"colour":1}])"}) {
    auto b = put(bad);
    EXPECT_EQ(b.status, 400) << bad << ": " << b.body;
    EXPECT_EQ(Json(b.body).str("error"), "VALIDATION_ERROR") << bad;
  }
  EXPECT_EQ(put("{").status, 400);
  EXPECT_EQ(admin("PUT", "/v1/customers/ghost/overrides", "[]").status, 404);
  const std::string key = customer_key("h-ovr");
  EXPECT_EQ(as(key, "PUT", "/v1/customers/h-ovr/overrides", "[]").status, 403);
  // The failed attempts changed nothing.
  EXPECT_EQ(check_one("h-ovr").header("X-RateLimit-Limit"), "unlimited");
}

TEST_F(CheckApiTest, ResetIsAdminOnly) {
  customer("h-reset", "metered");
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(check_one("h-reset").status, 200);
  }
  EXPECT_EQ(check_one("h-reset").status, 429);
  const std::string key = customer_key("h-reset");
  EXPECT_EQ(as(key, "POST", "/v1/customers/h-reset/reset", R"({"meter":"api_calls"})").status, 403);
  EXPECT_EQ(check_one("h-reset").status, 429);
  auto r = admin("POST", "/v1/customers/h-reset/reset", R"({"meter":"api_calls"})");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  EXPECT_TRUE(j["reset"].get_bool().value());
  EXPECT_EQ(j.str("meter"), "api_calls");
  auto after = check_one("h-reset");
  EXPECT_EQ(after.status, 200) << after.body;
  EXPECT_EQ(Json(after.body).num("used"), 1);
  EXPECT_EQ(usage("h-reset", "api_calls"), "6");  // history kept
  EXPECT_EQ(admin("POST", "/v1/customers/h-reset/reset", R"({})").status, 400);
  EXPECT_EQ(admin("POST", "/v1/customers/h-reset/reset", R"({"meter":"nope"})").status, 400);
  EXPECT_EQ(admin("POST", "/v1/customers/h-reset/reset", R"({"meter":"api_calls","x":1})").status,
            400);
  EXPECT_EQ(admin("POST", "/v1/customers/ghost/reset", R"({"meter":"api_calls"})").status, 404);
}

// ---- durability of checks
// -------------------------------------------------------------------------

constexpr const char* kCrashConfig = R"(
[enforcement]
check_durability = "async"
default_plan = "big"

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[plans]]
key = "big"
limits = [{ meter = "api_calls", period = "lifetime", amount = 100000000 }]
)";

// Every consumption acknowledged more than the bound before a SIGKILL is on disk afterwards.
//
// An async check is answered before its event is durable: its event joins the next group
// commit, behind the one in flight (docs/operations.md, "Durability of checks"). So what a
// crash can lose is what was answered during the last commit or two: a few milliseconds on a
// quiet disk, but as long as an fsync stalls on a busy one (stalls of 100-500 ms were seen here
// with the rest of the suite running). The bound asserted is therefore: every consumption
// acknowledged at least 50 ms before the kill, and followed by two completed commits (the
// second one necessarily took it), is stored. A monitor thread reads tally_commits_total from
// /metrics to know the commits. Also: what survives of each client's sequential checks is a
// prefix (no hole), and the limit counter after the restart equals what is stored.
TEST(CheckCrashTest, NoAcknowledgedConsumptionOlderThanTheBoundIsLost) {
  using Clock = std::chrono::steady_clock;
  constexpr auto kBound = std::chrono::milliseconds(50);
  const std::string dir = make_temp_dir("tally-check-crash-");
  constexpr int kClients = 4;

  struct Answer {
    std::string id;
    Clock::time_point at;
  };

  struct Poll {
    Clock::time_point sent, received;
    std::int64_t commits;
  };

  std::vector<std::vector<Answer>> answers(kClients);
  std::vector<Poll> polls;
  Clock::time_point killed_at;
  {
    TallyServer server(kCrashConfig, dir);
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int t = 0; t < kClients; ++t) {
      clients.emplace_back([&, t] {
        HttpClient c("127.0.0.1", server.port(), 5000);
        const std::string customer = "crash-" + std::to_string(t);
        ASSERT_EQ(c.request("POST", "/v1/customers", R"({"id":")" + customer + "\"}",
                            key_header(kAdminKey))
                      .status,
                  201);
        for (int n = 0; !stop.load() && n < 1000000; ++n) {
          const std::string id = "c" + std::to_string(t) + "-" + std::to_string(n);
          auto r = c.request(
              "POST", "/v1/check",
              R"({"customer":")" + customer + R"(","meter":"api_calls","event_id":")" + id + "\"}",
              key_header(kAdminKey));
          if (r.status == 0) {
            break;  // the server is gone
          }
          ASSERT_EQ(r.status, 200) << r.body;
          answers[t].push_back({id, Clock::now()});
        }
      });
    }
    std::thread monitor([&] {
      HttpClient c("127.0.0.1", server.port(), 5000);
      const std::string name = "\ntally_commits_total ";
      while (!stop.load()) {
        const auto sent = Clock::now();
        auto r = c.request("GET", "/metrics");
        const auto received = Clock::now();
        const auto pos = r.body.find(name);
        if (r.status != 200 || pos == std::string::npos) {
          break;
        }
        polls.push_back({sent, received, std::stoll(r.body.substr(pos + name.size()))});
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    killed_at = Clock::now();
    server.kill_hard();  // SIGKILL by pid
    stop = true;
    for (auto& th : clients)
      th.join();
    monitor.join();
  }
  ASSERT_GT(polls.size(), 10u);
  // Commits known complete before the kill: the last poll answered before it.
  std::int64_t commits_before_kill = 0;
  for (const auto& p : polls) {
    if (p.received <= killed_at) {
      commits_before_kill = std::max(commits_before_kill, p.commits);
    }
  }
  // At most this many commits had completed when a check was answered at `at`: the count read
  // by the first poll sent after it (or the final count when none was).
  auto commits_at_most = [&](Clock::time_point at) {
    for (const auto& p : polls) {
      if (p.sent >= at) {
        return p.commits;
      }
    }
    return commits_before_kill;
  };

  const std::string killed_log = read_file(dir + "/server.log").value_or("");
  std::size_t required_total = 0;
  std::size_t answered_total = 0;
  std::size_t old_total = 0;
  TallyServer server(kCrashConfig, dir);
  auto c = server.client();
  for (int t = 0; t < kClients; ++t) {
    const std::string customer = "crash-" + std::to_string(t);
    std::set<std::string> stored;
    std::string cursor;
    for (int page = 0; page < 10000; ++page) {
      std::string target = "/v1/events?limit=1000&customer=" + customer;
      if (!cursor.empty())
        target += "&cursor=" + cursor;
      auto r = c->request("GET", target, {}, key_header(kAdminKey));
      ASSERT_EQ(r.status, 200) << r.body;
      Json j(r.body);
      for (auto e : j["events"].get_array()) {
        stored.insert(std::string(e["id"].get_string().value()));
      }
      if (j.is_null("next_cursor"))
        break;
      cursor = j.str("next_cursor");
    }
    std::size_t required = 0;
    std::size_t old = 0;
    std::size_t prefix = 0;  // acknowledged checks stored, counted while they are a prefix
    bool in_prefix = true;
    std::vector<std::string> lost;
    std::vector<std::string> holes;
    for (const auto& a : answers[t]) {
      const bool is_stored = stored.count(a.id) != 0;
      if (is_stored && !in_prefix) {
        holes.push_back(a.id);
      }
      in_prefix = in_prefix && is_stored;
      prefix += in_prefix ? 1 : 0;
      const bool old_enough = a.at + kBound <= killed_at;
      old += old_enough ? 1 : 0;
      if (old_enough && commits_before_kill - commits_at_most(a.at) >= 2) {
        ++required;
        if (!is_stored) {
          lost.push_back(
              a.id + " (" +
              std::to_string(
                  std::chrono::duration_cast<std::chrono::milliseconds>(killed_at - a.at).count()) +
              " ms before the kill)");
        }
      }
    }
    std::string lost_text;
    for (std::size_t i = 0; i < lost.size() && i < 10; ++i) {
      lost_text += " " + lost[i];
    }
    EXPECT_TRUE(lost.empty()) << lost.size() << " of " << required << " consumptions of "
                              << customer
                              << " acknowledged before two commits were lost:" << lost_text
                              << "; stored " << stored.size() << ", answered " << answers[t].size()
                              << "\nthe killed server's log:\n"
                              << killed_log;
    EXPECT_TRUE(holes.empty()) << holes.size() << " acknowledged checks of " << customer
                               << " are stored after an earlier one was lost, e.g. "
                               << holes.front();
    // What is stored beyond the acknowledged prefix: at most the one check in flight.
    EXPECT_LE(stored.size(), prefix + 1) << customer;
    required_total += required;
    answered_total += answers[t].size();
    old_total += old;
    // The limit's counter after the restart agrees with what is stored.
    auto q = c->request("POST", "/v1/check",
                        R"({"customer":")" + customer + R"(","meter":"api_calls","consume":false})",
                        key_header(kAdminKey));
    ASSERT_EQ(q.status, 200) << q.body;
    EXPECT_EQ(Json(q.body).num("used"), static_cast<std::int64_t>(stored.size()));
    EXPECT_LE(required, stored.size());
  }
  EXPECT_GT(required_total, 100u) << "too few checks were acknowledged before the kill";
  std::printf(
      "checks answered: %zu, older than %lld ms at the kill: %zu, of which followed by two "
      "commits (so required on disk): %zu; commits before the kill: %lld\n",
      answered_total, static_cast<long long>(kBound.count()), old_total, required_total,
      static_cast<long long>(commits_before_kill));
  EXPECT_EQ(server.stop(), 0) << server.log();
  std::string out;
  EXPECT_EQ(
      run_tally({"verify", "--config", dir + "/tally.toml", "--data", dir + "/data"}, &out, dir), 0)
      << out;
  remove_tree(dir);
}

}  // namespace
}  // namespace tally::testing

namespace tally::testing {
namespace {

// ---- hardening (issue #16), over HTTP as an adversarial customer would try it -------------------

TEST_F(CheckApiTest, ACustomerKeyCannotUseAnotherCustomersReservation) {
  customer("res-a", "metered");
  customer("res-b", "metered");
  const std::string key_a = customer_key("res-a");
  const std::string key_b = customer_key("res-b");
  auto held = as(key_b, "POST", "/v1/check",
                 R"({"customer":"res-b","meter":"tokens","amount":100,"consume":"reserve"})");
  ASSERT_EQ(held.status, 200) << held.body;
  const std::string id = Json(held.body).str("reservation_id");
  ASSERT_FALSE(id.empty());
  auto stolen = as(key_a, "POST", "/v1/reservations/" + id + "/commit", R"({"amount":500})");
  EXPECT_EQ(stolen.status, 404) << stolen.body;
  EXPECT_EQ(Json(stolen.body).str("error"), "NOT_FOUND");
  auto released = as(key_a, "POST", "/v1/reservations/" + id + "/release");
  EXPECT_EQ(released.status, 404) << released.body;
  EXPECT_EQ(usage("res-b", "tokens"), "none");
  auto own = as(key_b, "POST", "/v1/reservations/" + id + "/commit", R"({"amount":40})");
  EXPECT_EQ(own.status, 200) << own.body;
  EXPECT_EQ(usage("res-b", "tokens"), "40");
  EXPECT_EQ(usage("res-a", "tokens"), "none");
}

TEST_F(CheckApiTest, NegativeUsageFromACustomerKeyIsRefusedAndChangesNothing) {
  customer("neg-cust", "metered");
  const std::string key = customer_key("neg-cust");
  auto r = as(key, "POST", "/v1/events",
              R"({"id":"neg-1","type":"tokens","properties":{"n":-1000000000}})");
  EXPECT_EQ(r.status, 400) << r.body;  // nothing valid in the batch
  EXPECT_NE(r.body.find("NEGATIVE_VALUE"), std::string::npos) << r.body;
  EXPECT_EQ(usage("neg-cust", "tokens"), "none");
  auto c = as(key, "POST", "/v1/check",
              R"({"customer":"neg-cust","meter":"tokens","amount":1001,"consume":false})");
  EXPECT_EQ(c.status, 429) << "the lifetime limit of 1000 still counts from zero: " << c.body;
}

TEST_F(CheckApiTest, IngestCannotCreateCustomersTheApiRefuses) {
  for (const char* id : {R"(nul\u0000id)", R"(evil\r\nX-Injected: yes)"}) {
    auto r =
        admin("POST", "/v1/events",
              std::string(R"({"id":"bad-id-1","customer":")") + id + R"(","type":"api_call"})");
    EXPECT_EQ(r.status, 400) << id << ": " << r.body;
    EXPECT_NE(r.body.find("INVALID_VALUE"), std::string::npos) << r.body;
  }
  auto list = admin("GET", "/v1/customers?limit=1000");
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.body.find("X-Injected"), std::string::npos) << "no such customer was created";
  EXPECT_EQ(list.body.find("nul\\u0000id"), std::string::npos);
}

TEST_F(CheckApiTest, ARetryWithAKnownEventIdAnswersTheOriginalDecision) {
  customer("retry-cust", "metered");
  // metered: tokens lifetime 1000. Consume 600 (X), then 400 (Y), then ingest 1 more.
  auto x = check(R"({"customer":"retry-cust","meter":"tokens","amount":600,"event_id":"X"})");
  ASSERT_EQ(x.status, 200) << x.body;
  ASSERT_EQ(
      check(R"({"customer":"retry-cust","meter":"tokens","amount":400,"event_id":"Y"})").status,
      200);
  auto more =
      admin("POST", "/v1/events",
            R"({"id":"one-more","customer":"retry-cust","type":"tokens","properties":{"n":1}})");
  ASSERT_EQ(more.status, 202) << more.body;
  auto again = check(R"({"customer":"retry-cust","meter":"tokens","amount":600,"event_id":"X"})");
  EXPECT_EQ(again.status, 200) << again.body;
  EXPECT_NE(again.body.find("\"replayed\":true"), std::string::npos) << again.body;
  EXPECT_EQ(usage("retry-cust", "tokens"), "1001");
}

}  // namespace
}  // namespace tally::testing
