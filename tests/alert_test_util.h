// What the end-to-end alert tests share (webhook_test.cc, email_test.cc): the metered customer
// whose plan alerts, the ingest that crosses its thresholds and the wait for GET /v1/alerts.
#pragma once

#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {

// The api_calls meter and customer acme on plan starter: 100 calls a month, alerts at 50, 80
// and 95 %. `plan_extra` adds lines to the plan, `customer_extra` to the customer.
inline std::string alerting_plan_toml(const std::string& plan_extra = "",
                                      const std::string& customer_extra = "") {
  return R"(
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[plans]]
key = "starter"
limits = [{ meter = "api_calls", period = "month", amount = 100 }]
alert_thresholds = [50, 80, 95]
)" + plan_extra +
         R"(
[[customers]]
id = "acme"
plan = "starter"
)" + customer_extra;
}

// Ingests `n` api_call events for acme, with ids c<first> onwards.
inline void ingest_calls(TallyServer& server, int n, int first) {
  std::string body = "[";
  for (int i = 0; i < n; ++i) {
    body += (i ? "," : "") + std::string(R"({"event_id":"c)") + std::to_string(first + i) +
            R"(","customer_id":"acme","event_type":"api_call"})";
  }
  body += "]";
  auto r = server.client()->request("POST", "/v1/events", body, key_header(kAdminKey));
  ASSERT_EQ(r.status, 202) << r.body;
}

// GET /v1/alerts`query` until `done` holds for its answer (or 30 s pass); returns the last
// answer.
template <typename Done>
std::string poll_alerts(TallyServer& server, const std::string& query, Done done) {
  std::string body;
  for (int i = 0; i < 300; ++i) {
    auto r = server.client()->request("GET", "/v1/alerts" + query, "", key_header(kAdminKey));
    EXPECT_EQ(r.status, 200) << r.body;
    body = r.body;
    if (done(Json(body))) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  return body;
}

}  // namespace tally::testing
