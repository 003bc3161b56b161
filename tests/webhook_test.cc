// Alerts and webhooks end to end: a real `tally serve` delivering to a real HTTP receiver on
// loopback that fails the first attempts. Proves the signatures, the retries, exactly one alert
// per threshold, GET /v1/alerts, and that the outbox survives a SIGKILL of Tally.
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "alert_test_util.h"
#include "common/crypto.h"
#include "json_test_util.h"
#include "support/http_receiver.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

constexpr const char* kSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

std::string config(const std::string& url) {
  return alerting_plan_toml() + R"(
[[webhooks]]
url = ")" +
         url + R"("
events = ["alert.triggered"]
secret = ")" +
         kSecret + R"("
retry_backoff = "1s"
retry_backoff_max = "2s"
timeout = "5s"
)";
}

std::size_t count_of(const Json& j) {
  auto arr = j["alerts"].get_array();
  return arr.error() ? 0 : arr.value_unsafe().size();
}

// Checks both signatures of a received delivery against the secret.
void expect_signed(const ReceivedRequest& r) {
  const std::string ts = r.header("tally-timestamp");
  ASSERT_FALSE(ts.empty());
  EXPECT_EQ(r.header("tally-signature"),
            "t=" + ts + ",v1=" + common::to_hex(common::hmac_sha256(kSecret, ts + "." + r.body)));
  std::string key;
  ASSERT_TRUE(common::base64_decode(std::string(kSecret).substr(6), &key));
  const std::string id = r.header("webhook-id");
  EXPECT_EQ(id, r.header("tally-delivery-id"));
  EXPECT_EQ(r.header("webhook-timestamp"), ts);
  EXPECT_EQ(r.header("webhook-signature"),
            "v1," + common::base64_encode(common::hmac_sha256(key, id + "." + ts + "." + r.body)));
  EXPECT_EQ(r.header("tally-event"), "alert.triggered");
  EXPECT_EQ(r.header("content-type"), "application/json");
  // A tampered body does not verify.
  EXPECT_NE(
      r.header("tally-signature"),
      "t=" + ts + ",v1=" + common::to_hex(common::hmac_sha256(kSecret, ts + "." + r.body + " ")));
}

TEST(Webhooks, ThresholdsFireOnceAndFailedDeliveriesAreRetriedSigned) {
  HttpReceiver receiver([](std::size_t n) { return n < 2 ? 500 : 200; });
  TallyServer server(config(receiver.url("/hook?source=tally")));
  ingest_calls(server, 96, 0);  // 96 of 100: over 50, 80 and 95 in one batch

  // 3 deliveries; the first two attempts fail and are retried: 5 requests.
  ASSERT_TRUE(receiver.wait_for(5, 20000)) << "received " << receiver.requests().size();
  const auto requests = receiver.requests();
  std::map<std::string, std::vector<const ReceivedRequest*>> by_id;
  for (const auto& r : requests) {
    EXPECT_EQ(r.method, "POST");
    EXPECT_EQ(r.target, "/hook?source=tally");
    expect_signed(r);
    by_id[r.header("tally-delivery-id")].push_back(&r);
  }
  ASSERT_EQ(by_id.size(), 3u);
  std::set<std::int64_t> thresholds;
  for (const auto& [id, attempts] : by_id) {
    EXPECT_EQ(attempts.back()->answered, 200);
    for (const auto* a : attempts) {
      EXPECT_EQ(a->body, attempts.front()->body) << "a retry sends the same body";
    }
    Json p(attempts.front()->body);
    ASSERT_TRUE(p.ok()) << attempts.front()->body;
    EXPECT_EQ(p.str("id"), id);
    EXPECT_EQ(p.str("type"), "alert.triggered");
    Json data(std::string(simdjson::minify(p["data"])));
    EXPECT_EQ(data.str("customer"), "acme");
    EXPECT_EQ(data.str("meter"), "api_calls");
    EXPECT_EQ(data.str("limit"), "api_calls per month");
    EXPECT_EQ(data.num("used"), 96);
    thresholds.insert(data.num("threshold_percent"));
  }
  EXPECT_EQ(thresholds, (std::set<std::int64_t>{50, 80, 95}));

  // The alerts, in order, each sent, with every attempt counted.
  const std::string body = poll_alerts(server, "?customer=acme", [](const Json& j) {
    std::size_t sent = 0;
    const simdjson::dom::array alerts = j["alerts"].get_array().value_unsafe();
    for (auto a : alerts) {
      sent += a["sent"].get_bool().value_unsafe() ? 1 : 0;
    }
    return sent == 3;
  });
  Json j(body);
  ASSERT_EQ(count_of(j), 3u) << body;
  std::vector<std::int64_t> order;
  std::uint64_t attempts = 0;
  const simdjson::dom::array alerts = j["alerts"].get_array().value_unsafe();
  for (auto a : alerts) {
    order.push_back(a["threshold_percent"].get_int64().value_unsafe());
    EXPECT_TRUE(a["sent"].get_bool().value_unsafe()) << body;
    EXPECT_EQ(std::string(a["status"].get_string().value_unsafe()), "sent");
    attempts += a["delivery_attempts"].get_uint64().value_unsafe();
  }
  EXPECT_EQ(order, (std::vector<std::int64_t>{50, 80, 95}));
  EXPECT_EQ(attempts, 5u);

  // More usage in the period fires nothing new, and nothing is sent again.
  ingest_calls(server, 3, 96);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  auto r = server.client()->request("GET", "/v1/alerts", "", key_header(kAdminKey));
  EXPECT_EQ(count_of(Json(r.body)), 3u) << r.body;
  EXPECT_EQ(receiver.requests().size(), 5u);

  // Filters and one alert.
  r = server.client()->request("GET", "/v1/alerts?level=critical&status=sent", "",
                               key_header(kAdminKey));
  ASSERT_EQ(r.status, 200) << r.body;
  Json critical(r.body);
  ASSERT_EQ(count_of(critical), 1u) << r.body;
  const std::string id(critical["alerts"].at(0)["id"].get_string().value_unsafe());
  r = server.client()->request("GET", "/v1/alerts/" + id, "", key_header(kAdminKey));
  ASSERT_EQ(r.status, 200) << r.body;
  Json one(r.body);
  EXPECT_EQ(one.num("threshold_percent"), 95);
  EXPECT_EQ(one.str("level"), "critical");
  r = server.client()->request("GET",
                               "/v1/alerts?from=2000-01-01T00:00:00Z&to=2000-01-02T00:00:00Z", "",
                               key_header(kAdminKey));
  EXPECT_EQ(count_of(Json(r.body)), 0u) << r.body;
}

TEST(Webhooks, AlertQueriesAnswerErrorsAsJson) {
  HttpReceiver receiver([](std::size_t) { return 200; });
  TallyServer server(config(receiver.url()));
  auto c = server.client();

  struct Case {
    std::string target;
    int status;
  } cases[] = {
      {"/v1/alerts?level=loud", 400},
      {"/v1/alerts?status=maybe", 400},
      {"/v1/alerts?colour=red", 400},
      {"/v1/alerts?from=yesterday", 400},
      {"/v1/alerts?limit=0", 400},
      {"/v1/alerts?cursor=x", 400},
      {"/v1/alerts?from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z", 400},
      {"/v1/alerts?customer=nobody", 404},
      {"/v1/alerts/alrt_12345", 404},
  };

  for (const auto& k : cases) {
    auto r = c->request("GET", k.target, "", key_header(kAdminKey));
    EXPECT_EQ(r.status, k.status) << k.target << ": " << r.body;
    Json j(r.body);
    EXPECT_TRUE(j.ok() && j.has("error")) << k.target << ": " << r.body;
  }
  auto r = c->request("GET", "/v1/alerts");
  EXPECT_EQ(r.status, 401) << r.body;
}

TEST(Webhooks, PendingDeliveriesSurviveASigkill) {
  // The receiver's port, free again: deliveries are refused until it comes back.
  std::uint16_t port = 0;
  {
    port = HttpReceiver([](std::size_t) { return 200; }).port();
  }
  const std::string url = "http://127.0.0.1:" + std::to_string(port) + "/hook";
  const std::string dir = make_temp_dir("tally-webhook-");
  {
    TallyServer server(config(url), dir);
    ingest_calls(server, 50, 0);
    // Wait until a failed attempt is on record, then kill.
    poll_alerts(server, "", [](const Json& j) {
      return count_of(j) == 1 &&
             j["alerts"].at(0)["delivery_attempts"].get_uint64().value_unsafe() >= 1;
    });
    server.kill_hard();
  }
  HttpReceiver receiver([](std::size_t) { return 200; }, port);
  {
    TallyServer server(config(url), dir);
    ASSERT_TRUE(receiver.wait_for(1, 20000));
    const std::string body = poll_alerts(server, "", [](const Json& j) {
      return count_of(j) == 1 && j["alerts"].at(0)["sent"].get_bool().value_unsafe();
    });
    Json j(body);
    ASSERT_EQ(count_of(j), 1u) << "the restart fired nothing twice: " << body;
    EXPECT_TRUE(j["alerts"].at(0)["sent"].get_bool().value_unsafe()) << body;
    EXPECT_EQ(j["alerts"].at(0)["threshold_percent"].get_int64().value_unsafe(), 50);
    const auto requests = receiver.requests();
    ASSERT_GE(requests.size(), 1u);
    expect_signed(requests[0]);
    EXPECT_EQ(requests[0].header("tally-delivery-id"),
              std::string(j["alerts"].at(0)["deliveries"].at(0)["id"].get_string().value_unsafe()));
  }
  remove_tree(dir);
}

}  // namespace
}  // namespace tally::testing
