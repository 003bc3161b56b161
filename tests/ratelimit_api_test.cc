// Ad-hoc limits over HTTP against a real `tally serve`: POST /v1/ratelimit (200 and 429 with
// the rate-limit headers, several limits all or nothing, every error), and the refusals of the
// Unkey-compatible routes in Unkey's error shape. The official Unkey clients drive the same
// routes in tests/clients/unkey.test.mjs.
#include <regex>
#include <string>

#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

TEST(RatelimitApiTest, AdHocLimitsCountExactlyWithHeaders) {
  TallyServer server("");
  auto c = server.client();
  auto post = [&](const std::string& body, const std::string& key = kAdminKey) {
    return c->request("POST", "/v1/ratelimit", body, key_header(key));
  };
  const std::string one =
      R"({"namespace":"login","identifier":"10.0.0.1","limit":2,"duration":60000})";
  auto a = post(one);
  ASSERT_EQ(a.status, 200) << a.body;
  const Json aj(a.body);
  EXPECT_TRUE(aj["allowed"].get_bool().value());
  EXPECT_EQ(aj.num("remaining"), 1);
  EXPECT_EQ(aj.num("used"), 1);
  EXPECT_EQ(a.header("X-RateLimit-Remaining"), "1");
  EXPECT_EQ(a.header("X-RateLimit-Limit"), "2");
  ASSERT_EQ(post(one).status, 200);
  auto denied = post(one);
  EXPECT_EQ(denied.status, 429) << denied.body;
  EXPECT_FALSE(Json(denied.body)["allowed"].get_bool().value());
  ASSERT_FALSE(denied.header("Retry-After").empty());
  EXPECT_GE(std::stoi(denied.header("Retry-After")), 1);
  EXPECT_LE(std::stoi(denied.header("Retry-After")), 60);

  // Several at once: all or nothing.
  auto both =
      post(R"({"limits":[{"namespace":"login","identifier":"10.0.0.2","limit":5,"duration":60000},)"
           R"({"namespace":"login","identifier":"10.0.0.1","limit":2,"duration":60000}]})");
  EXPECT_EQ(both.status, 429) << both.body;
  const Json bj(both.body);
  EXPECT_TRUE(bj["results"].at(0)["allowed"].get_bool().value());
  EXPECT_EQ(bj["results"].at(0)["used"].get_int64().value(), 0) << "nothing counted";

  // Errors change nothing.
  EXPECT_EQ(post(R"({"namespace":"login","identifier":"x","limit":2})").status, 400);
  EXPECT_EQ(
      post(R"({"namespace":"login","identifier":"x","limit":2,"duration":60000,"extra":1})").status,
      400);
  EXPECT_EQ(post(R"({"namespace":"login","identifier":"x","limit":2,"duration":5})").status, 400);
  EXPECT_EQ(post(R"({"namespace":"login","identifier":"x","limit":-2,"duration":60000})").status,
            400);
  EXPECT_EQ(post(R"({"namespace":"","identifier":"x","limit":2,"duration":60000})").status, 400);
  EXPECT_EQ(post(R"({"limits":[]})").status, 400);
  EXPECT_EQ(post("nope").status, 400);
  EXPECT_EQ(c->request("POST", "/v1/ratelimit", one).status, 401);
  auto key =
      c->request("POST", "/v1/keys", R"({"name":"r","scopes":["read"]})", key_header(kAdminKey));
  ASSERT_EQ(key.status, 201) << key.body;
  EXPECT_EQ(post(one, Json(key.body).str("key")).status, 403);
  const Json after(
      post(R"({"namespace":"login","identifier":"x","limit":2,"duration":60000,"cost":0})").body);
  EXPECT_EQ(after.num("used"), 0);

  // The Unkey routes refuse in Unkey's shape.
  auto unauthorized = c->request("POST", "/unkey/v2/ratelimit.limit", one);
  EXPECT_EQ(unauthorized.status, 401);
  const Json uj(unauthorized.body);
  EXPECT_EQ(uj["error"]["status"].get_int64().value(), 401);
  EXPECT_EQ(uj["error"]["title"].get_string().value(), "Unauthorized");
  EXPECT_EQ(std::string(uj["meta"]["requestId"].get_string().value()).substr(0, 4), "req_");
  auto missing = c->request("POST", "/unkey/v2/ratelimit.nothing", one, key_header(kAdminKey));
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(Json(missing.body)["error"]["status"].get_int64().value(), 404);
  auto bad = c->request("POST", "/unkey/v2/ratelimit.limit", R"({"namespace":"a"})",
                        key_header(kAdminKey));
  EXPECT_EQ(bad.status, 400);
  EXPECT_EQ(Json(bad.body)["error"]["errors"].at(0)["location"].get_string().value(), "body");
}

// The answers in full, their two times masked: one limit, a batch, and a batch's refusal
// naming the limit at fault; and the headers of the limit that decides. (An hour's window, so
// that no window ends between the requests.)
TEST(RatelimitApiTest, AnswersAndHeadersInFull) {
  TallyServer server("");
  auto c = server.client();
  auto post = [&](const std::string& body) {
    return c->request("POST", "/v1/ratelimit", body, key_header(kAdminKey));
  };
  auto masked = [](const std::string& body) {
    static const std::regex kTime(R"("\d{4}-\d\d-\d\dT[0-9:.]+Z")");
    return std::regex_replace(body, kTime, "\"T\"");
  };
  auto one = post(R"({"namespace":"api","identifier":"u1","limit":3,"duration":3600000,"cost":2})");
  ASSERT_EQ(one.status, 200) << one.body;
  EXPECT_EQ(masked(one.body),
            R"({"allowed":true,"namespace":"api","identifier":"u1","limit":3,"cost":2,"used":2,)"
            R"("remaining":1,"window_start":"T","reset":"T"})");
  const std::string reset = one.header("X-RateLimit-Reset");
  ASSERT_FALSE(reset.empty());
  EXPECT_GE(std::stoi(reset), 1);
  EXPECT_LE(std::stoi(reset), 3600);
  EXPECT_EQ(one.header("X-RateLimit-Limit"), "3");
  EXPECT_EQ(one.header("X-RateLimit-Remaining"), "1");
  EXPECT_EQ(one.header("RateLimit-Policy"), "\"api\";q=3;w=3600");
  EXPECT_EQ(one.header("RateLimit"), "\"api\";r=1;t=" + reset);
  EXPECT_EQ(one.header("Retry-After"), "");

  // A batch whose second limit denies: nothing is counted, the headers are the second's.
  auto both =
      post(R"({"limits":[{"namespace":"api","identifier":"u2","limit":5,"duration":1000},)"
           R"({"namespace":"api","identifier":"u1","limit":3,"duration":3600000,"cost":2}]})");
  ASSERT_EQ(both.status, 429) << both.body;
  EXPECT_EQ(masked(both.body),
            R"({"allowed":false,"results":[)"
            R"({"allowed":true,"namespace":"api","identifier":"u2","limit":5,"cost":1,"used":0,)"
            R"("remaining":5,"window_start":"T","reset":"T"},)"
            R"({"allowed":false,"namespace":"api","identifier":"u1","limit":3,"cost":2,"used":2,)"
            R"("remaining":1,"window_start":"T","reset":"T"}]})");
  EXPECT_EQ(both.header("X-RateLimit-Limit"), "3");
  EXPECT_EQ(both.header("RateLimit-Policy"), "\"api\";q=3;w=3600");
  EXPECT_EQ(both.header("Retry-After"), both.header("X-RateLimit-Reset"));

  auto bad = post(R"({"limits":[{"namespace":"api","identifier":"u3","limit":1,"duration":1000},)"
                  R"({"namespace":"api"}]})");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(Json(bad.body).str("message"),
            "limits[1]: 'namespace', 'identifier', 'limit' and 'duration' are required");
  auto single = post(R"({"namespace":"api","identifier":"u3","limit":1,"duration":1000,"x":1})");
  EXPECT_EQ(single.status, 400) << single.body;
  EXPECT_EQ(Json(single.body).str("message"),
            "unknown or mistyped field 'x'; allowed: namespace, identifier (strings), limit, "
            "duration (milliseconds), cost (whole numbers)");
  EXPECT_EQ(Json(post(R"({"namespace":"api","identifier":"u3","limit":1,"duration":1000})").body)
                .num("used"),
            1)
      << "the refused requests counted nothing";
}

}  // namespace
}  // namespace tally::testing
