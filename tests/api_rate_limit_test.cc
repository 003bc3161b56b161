// Tally's own API rate limit ([enforcement] api_rate_limit_per_minute) against a real server:
// per key, GCRA, answered 429 with the same headers as a check.
#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

constexpr const char* kConfig = R"(
[enforcement]
api_rate_limit_per_minute = 5

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[customers]]
id = "acme"
)";

TEST(ApiRateLimitTest, EachKeyGetsItsQuotaThen429WithHeaders) {
  TallyServer server(kConfig);
  auto client = server.client();
  // The admin key makes 5 requests (one of them creates a customer key), then is refused.
  auto created =
      client->request("POST", "/v1/keys", "{\"customer\":\"acme\"}", key_header(kAdminKey));
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string customer_key = Json(created.body).str("key");
  EXPECT_EQ(created.header("x-ratelimit-limit"), "5");
  EXPECT_EQ(created.header("x-ratelimit-remaining"), "4");
  for (int i = 0; i < 4; ++i) {
    auto r = client->request("GET", "/v1/meters", {}, key_header(kAdminKey));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("x-ratelimit-remaining"), std::to_string(3 - i));
    EXPECT_TRUE(r.has_header("ratelimit-policy"));
  }
  auto denied = client->request("GET", "/v1/meters", {}, key_header(kAdminKey));
  ASSERT_EQ(denied.status, 429) << denied.body;
  EXPECT_EQ(Json(denied.body).str("error"), "RATE_LIMITED");
  EXPECT_EQ(denied.header("x-ratelimit-limit"), "5");
  EXPECT_EQ(denied.header("x-ratelimit-remaining"), "0");
  ASSERT_TRUE(denied.has_header("retry-after"));
  // One unit drains every 12 s: the wait is at most that.
  const int retry = std::stoi(denied.header("retry-after"));
  EXPECT_GE(retry, 1);
  EXPECT_LE(retry, 12);
  EXPECT_EQ(denied.header("ratelimit-policy"), "\"api_requests-minute\";q=5;w=60");
  EXPECT_NE(denied.header("ratelimit").find("\"api_requests-minute\";r=0;t="), std::string::npos);

  // Another key has its own bucket.
  auto other = client->request("GET", "/v1/meters", {}, key_header(customer_key));
  EXPECT_EQ(other.status, 200) << other.body;
  EXPECT_EQ(other.header("x-ratelimit-remaining"), "4");
  // Unauthenticated routes are not limited.
  EXPECT_EQ(client->request("GET", "/health").status, 200);
}

TEST(ApiRateLimitTest, OffByDefault) {
  TallyServer server("[[meters]]\nkey = \"api_calls\"\nevent_type = \"api_call\"\n");
  auto client = server.client();
  for (int i = 0; i < 20; ++i) {
    auto r = client->request("GET", "/v1/meters", {}, key_header(kAdminKey));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_FALSE(r.has_header("x-ratelimit-limit"));
  }
}

}  // namespace
}  // namespace tally::testing
