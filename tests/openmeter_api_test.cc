// OpenMeter's meter queries under /openmeter against a real `tally serve`, byte for byte: the
// answer over all subjects (rows of one window and group merged by the meter's aggregation),
// per subject, per window, filtered by a group, what a customer key may ask, and every refusal
// as application/problem+json. The official OpenMeter client drives the common paths in
// tests/clients/openmeter.test.mjs.
#include <string>

#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

constexpr const char* kConfig = R"(
[[meters]]
key = "tokens"
event_type = "prompt"
aggregation = "sum"
value = "$.tokens"
group_by = ["model"]

[[meters]]
key = "peak"
event_type = "prompt"
aggregation = "max"
value = "$.tokens"

[[meters]]
key = "least"
event_type = "prompt"
aggregation = "min"
value = "$.tokens"

[[meters]]
key = "mean"
event_type = "prompt"
aggregation = "avg"
value = "$.tokens"
)";

constexpr const char* kQuery = "/openmeter/api/v1/meters/";
constexpr const char* kJanuary = "from=2025-01-01T00:00:00Z&to=2025-02-01T00:00:00Z";

class OpenMeterApiTest : public ApiTest {
 protected:
  static void SetUpTestSuite() {
    start_server(kConfig);
    auto c = server_->client();
    const std::string events =
        R"([)"
        R"({"specversion":"1.0","id":"p1","source":"chat","type":"prompt","subject":"acme",)"
        R"("time":"2025-01-17T10:00:00Z","data":{"tokens":100,"model":"gpt-4"}},)"
        R"({"specversion":"1.0","id":"p2","source":"chat","type":"prompt","subject":"acme",)"
        R"("time":"2025-01-17T11:00:00Z","data":{"tokens":50,"model":"gpt-3.5"}},)"
        R"({"specversion":"1.0","id":"p3","source":"chat","type":"prompt","subject":"acme",)"
        R"("time":"2025-01-18T09:00:00Z","data":{"tokens":25,"model":"gpt-4"}},)"
        R"({"specversion":"1.0","id":"p4","source":"chat","type":"prompt","subject":"globex",)"
        R"("time":"2025-01-17T12:00:00Z","data":{"tokens":7,"model":"gpt-4"}}])";
    auto r = c->request(
        "POST", "/openmeter/api/v1/events", events,
        {{"x-api-key", kAdminKey}, {"content-type", "application/cloudevents-batch+json"}});
    ASSERT_EQ(r.status, 204) << r.body;
  }

  // GET /openmeter/api/v1/meters/{meter}/query with `params` ("meter?params").
  HttpResponse query(const std::string& meter_and_params, const std::string& key = kAdminKey) {
    const std::size_t q = meter_and_params.find('?');
    const std::string meter = meter_and_params.substr(0, q);
    const std::string params = q == std::string::npos ? "" : meter_and_params.substr(q);
    return as(key, "GET", kQuery + meter + "/query" + params);
  }

  // An answer of 200 with exactly `body`.
  void expect_body(const std::string& meter_and_params, const std::string& body,
                   const std::string& key = kAdminKey) {
    auto r = query(meter_and_params, key);
    EXPECT_EQ(r.status, 200) << meter_and_params << ": " << r.body;
    EXPECT_EQ(r.body, body) << meter_and_params;
  }

  // A problem+json refusal with `status` and exactly `detail`.
  void expect_problem(const HttpResponse& r, int status, const std::string& detail) {
    EXPECT_EQ(r.status, status) << r.body;
    EXPECT_EQ(r.header("Content-Type"), "application/problem+json");
    Json j(r.body);
    EXPECT_EQ(j.str("type"), "about:blank") << r.body;
    EXPECT_EQ(j.num("status"), status) << r.body;
    EXPECT_EQ(j.str("detail"), detail) << r.body;
  }
};

TEST_F(OpenMeterApiTest, OverAllSubjectsRowsMergeByTheMetersAggregation) {
  const std::string head =
      R"({"from":"2025-01-01T00:00:00Z","to":"2025-02-01T00:00:00Z","data":[{"value":)";
  const std::string tail =
      R"(,"windowStart":"2025-01-01T00:00:00Z","windowEnd":"2025-02-01T00:00:00Z",)"
      R"("subject":null,"groupBy":{}}]})";
  expect_body(std::string("tokens?") + kJanuary, head + "182" + tail);
  expect_body(std::string("peak?") + kJanuary, head + "100" + tail);
  expect_body(std::string("least?") + kJanuary, head + "7" + tail);
  // Filtered by a group value, and asked by a client with its own id.
  expect_body(std::string("tokens?") + kJanuary + "&filterGroupBy[model]=gpt-4&clientId=c1",
              head + "132" + tail);
}

TEST_F(OpenMeterApiTest, PerSubjectPerWindowAndPerGroup) {
  expect_body(
      std::string("tokens?from=2025-01-17T00:00:00Z&to=2025-01-19T00:00:00Z&windowSize=DAY&") +
          "windowTimeZone=UTC&subject=acme&groupBy=model",
      R"({"from":"2025-01-17T00:00:00Z","to":"2025-01-19T00:00:00Z","windowSize":"DAY","data":[)"
      R"({"value":50,"windowStart":"2025-01-17T00:00:00Z","windowEnd":"2025-01-18T00:00:00Z",)"
      R"("subject":"acme","groupBy":{"model":"gpt-3.5"}},)"
      R"({"value":100,"windowStart":"2025-01-17T00:00:00Z","windowEnd":"2025-01-18T00:00:00Z",)"
      R"("subject":"acme","groupBy":{"model":"gpt-4"}},)"
      R"({"value":25,"windowStart":"2025-01-18T00:00:00Z","windowEnd":"2025-01-19T00:00:00Z",)"
      R"("subject":"acme","groupBy":{"model":"gpt-4"}}]})");
  // An average is answered per subject only.
  expect_body(std::string("mean?") + kJanuary + "&groupBy=subject",
              R"({"from":"2025-01-01T00:00:00Z","to":"2025-02-01T00:00:00Z","data":[)"
              R"({"value":58.333333333,"windowStart":"2025-01-01T00:00:00Z",)"
              R"("windowEnd":"2025-02-01T00:00:00Z","subject":"acme","groupBy":{}},)"
              R"({"value":7,"windowStart":"2025-01-01T00:00:00Z",)"
              R"("windowEnd":"2025-02-01T00:00:00Z","subject":"globex","groupBy":{}}]})");
  expect_problem(query(std::string("mean?") + kJanuary), 400,
                 "a AVG meter is answered per subject: add groupBy=subject or a subject");
}

TEST_F(OpenMeterApiTest, ACustomerKeySeesItsOwnSubjectOnly) {
  const std::string key = customer_key("globex");
  const std::string own =
      R"({"from":"2025-01-01T00:00:00Z","to":"2025-02-01T00:00:00Z","data":[{"value":7,)"
      R"("windowStart":"2025-01-01T00:00:00Z","windowEnd":"2025-02-01T00:00:00Z",)"
      R"("subject":"globex","groupBy":{}}]})";
  expect_body(std::string("tokens?") + kJanuary, own, key);
  expect_body(std::string("tokens?") + kJanuary + "&subject=globex", own, key);
  expect_problem(query(std::string("tokens?") + kJanuary + "&subject=globex&subject=acme", key),
                 403, "this key may query its own subject only");
}

TEST_F(OpenMeterApiTest, RefusalsAreProblems) {
  expect_problem(query("nothing"), 404, "meter not found: nothing");
  expect_problem(as(kAdminKey, "GET", "/openmeter/api/v1/meters/nothing"), 404,
                 "meter not found: nothing");
  expect_problem(query("tokens?windowSize=YEAR"), 400,
                 "windowSize must be MINUTE, HOUR, DAY or MONTH");
  expect_problem(query("tokens?colour=red"), 400,
                 "unsupported query parameter 'colour'; Tally answers from, to, windowSize, "
                 "windowTimeZone, subject, groupBy and filterGroupBy[key]");
  auto bad_from = query("tokens?from=yesterday");
  EXPECT_EQ(bad_from.status, 400) << bad_from.body;
  EXPECT_EQ(Json(bad_from.body).str("detail").rfind("from: ", 0), 0u) << bad_from.body;
  auto bad_to = query("tokens?to=2025-13-01T00:00:00Z");
  EXPECT_EQ(bad_to.status, 400) << bad_to.body;
  EXPECT_EQ(Json(bad_to.body).str("detail").rfind("to: ", 0), 0u) << bad_to.body;
}

}  // namespace
}  // namespace tally::testing
