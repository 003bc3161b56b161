// End-to-end tests of the HTTP API against a real `tally serve` process over real sockets.
#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

const std::string kConfig = R"(
[server]
body_bytes_max = 65536
batch_events_max = 50

[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.input_tokens"
group_by = ["provider", "model"]

)" + std::string(kApiCallsMeterToml) +
                            R"(
[[customers]]
id = "cust-test-001"
name = "Test Company"
)";

class HttpApiTest : public ApiTest {
 protected:
  static void SetUpTestSuite() { start_server(kConfig); }

  void ensure_customer(const std::string& id) {
    admin("POST", "/v1/customers", "{\"id\":\"" + id + "\"}");
  }
};

TEST_F(HttpApiTest, HealthReadyMetrics) {
  auto h = client_->request("GET", "/health");
  EXPECT_EQ(h.status, 200);
  Json hj(h.body);
  EXPECT_EQ(hj.str("status"), "ok");
  EXPECT_TRUE(hj.has("timestamp"));
  auto r = client_->request("GET", "/ready");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(Json(r.body).str("status"), "ready");
  auto m = client_->request("GET", "/metrics");
  EXPECT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("tally_events_accepted_total"), std::string::npos);
  EXPECT_NE(m.body.find("tally_http_requests_total{route=\"/health\",method=\"GET\",code=\"2xx\"}"),
            std::string::npos)
      << m.body;
  EXPECT_NE(m.body.find("tally_commit_duration_seconds_bucket"), std::string::npos);
  EXPECT_NE(m.header("Content-Type").find("text/plain"), std::string::npos);
}

TEST_F(HttpApiTest, MissingOrBadKeyIs401) {
  const std::string body =
      R"({"events":[{"event_id":"x1","customer_id":"cust-test-001","event_type":"TOKEN_USAGE"}]})";
  auto r =
      client_->request("POST", "/v1/events/ingest", body, {{"content-type", "application/json"}});
  EXPECT_EQ(r.status, 401);
  Json j(r.body);
  EXPECT_EQ(j.str("error"), "UNAUTHORIZED");
  EXPECT_EQ(j.str("message"), "Invalid or missing API key");
  EXPECT_EQ(client_->request("POST", "/v1/events", body, key_header("tk_wrong")).status, 401);
  EXPECT_EQ(client_->request("GET", "/v1/meters", {}, {{"authorization", "Bearer nope"}}).status,
            401);
  EXPECT_EQ(client_
                ->request("GET", "/v1/meters", {},
                          {{"authorization", std::string("Bearer ") + kAdminKey}})
                .status,
            200);
  // The scheme is case-insensitive (RFC 9110 11.1), here as in GET /v1/authorize.
  EXPECT_EQ(client_
                ->request("GET", "/v1/meters", {},
                          {{"authorization", std::string("BEARER ") + kAdminKey}})
                .status,
            200);
}

TEST_F(HttpApiTest, SeedWalkthroughIngest) {
  const std::string key = customer_key("cust-test-001");
  const std::string event =
      R"({"event_id":"550e8400-e29b-41d4-a716-446655440001","customer_id":"cust-test-001","event_type":"TOKEN_USAGE","feature_id":"ai-text-generation","provider":"OPENAI","model":"gpt-4-turbo","input_tokens":1000,"output_tokens":500,"timestamp":"2025-01-17T14:30:00Z")";
  auto r = client_->request("POST", "/v1/events/ingest", "{\"events\":[" + event + "}]}",
                            key_header(key));
  ASSERT_EQ(r.status, 202) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.num("accepted"), 1);
  EXPECT_EQ(j.num("rejected"), 0);
  EXPECT_EQ(j.num("duplicates"), 0);
  EXPECT_EQ(j.str("status"), "accepted");
  EXPECT_EQ(j.str("batch_id").rfind("batch_", 0), 0u);
  EXPECT_TRUE(j.has("processing_time_ms"));

  // The same event with an idempotency key is new once, then a duplicate.
  const std::string keyed = "{\"events\":[" + event + R"(,"idempotency_key":"test-duplicate-1"}]})";
  auto first = client_->request("POST", "/v1/events/ingest", keyed, key_header(key));
  EXPECT_EQ(Json(first.body).num("accepted"), 1) << first.body;
  auto second = client_->request("POST", "/v1/events/ingest", keyed, key_header(key));
  ASSERT_EQ(second.status, 202);
  Json dj(second.body);
  EXPECT_EQ(dj.num("duplicates"), 1);
  EXPECT_EQ(dj.num("accepted"), 0);
  EXPECT_EQ(dj.str("status"), "all_duplicates");
  EXPECT_TRUE(dj.is_null("batch_id"));
  EXPECT_EQ(dj.str("message"), "All events were duplicates");

  // Another customer's events: 403, nothing written.
  auto forbidden = client_->request(
      "POST", "/v1/events/ingest",
      R"({"events":[{"event_id":"550e8400-e29b-41d4-a716-446655440099","customer_id":"cust-wrong-999","event_type":"TOKEN_USAGE","timestamp":"2025-01-17T14:30:00Z"}]})",
      key_header(key));
  EXPECT_EQ(forbidden.status, 403);
  EXPECT_EQ(Json(forbidden.body).str("error"), "FORBIDDEN");
  EXPECT_EQ(admin("GET", "/v1/customers/cust-wrong-999").status, 404);

  // An invalid event schema: 400 VALIDATION_ERROR with details.
  auto invalid = client_->request(
      "POST", "/v1/events/ingest",
      R"({"events":[{"event_id":"not-a-uuid","customer_id":"cust-test-001","feature_id":"x","timestamp":"2025-01-17T14:30:00Z"}]})",
      key_header(key));
  EXPECT_EQ(invalid.status, 400);
  Json ij(invalid.body);
  EXPECT_EQ(ij.str("error"), "VALIDATION_ERROR");
  EXPECT_TRUE(ij.has("details"));
  EXPECT_EQ(ij.num("rejected"), 1);
  EXPECT_EQ(ij.str("status"), "rejected");

  // Usage shows the tokens: 1000 twice (the keyed copy is a distinct event).
  auto q = client_->request(
      "GET",
      "/v1/meters/tokens_in/query?from=2025-01-17T00:00:00Z&to=2025-01-18T00:00:00Z&group_by=model",
      {}, key_header(key));
  ASSERT_EQ(q.status, 200) << q.body;
  Json qj(q.body);
  auto rows = qj["data"].get_array();
  ASSERT_EQ(rows.size(), 1u);
  EXPECT_EQ(rows.at(0)["value"].get_int64().value(), 2000);
  EXPECT_EQ(std::string(rows.at(0)["group"]["model"].get_string().value()), "gpt-4-turbo");
  EXPECT_EQ(std::string(rows.at(0)["customer"].get_string().value()), "cust-test-001");
}

TEST_F(HttpApiTest, PartialBatchAndErrors) {
  auto r = admin("POST", "/v1/events", R"({"events":[
      {"id":"p1","customer":"partial","type":"api_call","properties":{"service":"chat"}},
      {"id":"p2","customer":"partial","type":"api_call","time":"not a time"},
      {"id":"p1","customer":"partial","type":"api_call"}]})");
  ASSERT_EQ(r.status, 202) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.num("accepted"), 1);
  EXPECT_EQ(j.num("rejected"), 1);
  EXPECT_EQ(j.num("duplicates"), 1);
  EXPECT_EQ(j.str("status"), "partial");
  auto errors = j["errors"].get_array();
  ASSERT_EQ(errors.size(), 1u);
  EXPECT_EQ(errors.at(0)["index"].get_int64().value(), 1);
  EXPECT_EQ(std::string(errors.at(0)["code"].get_string().value()), "INVALID_TIME");
  EXPECT_EQ(std::string(errors.at(0)["id"].get_string().value()), "p2");
}

TEST_F(HttpApiTest, BadRequestsGetClearErrors) {
  auto malformed = admin("POST", "/v1/events", "{\"events\": [");
  EXPECT_EQ(malformed.status, 400);
  EXPECT_EQ(Json(malformed.body).str("error"), "INVALID_JSON");
  auto text = client_->request("POST", "/v1/events", "{}",
                               {{"x-api-key", kAdminKey}, {"content-type", "text/plain"}});
  EXPECT_EQ(text.status, 415);
  EXPECT_EQ(Json(text.body).str("error"), "UNSUPPORTED_MEDIA_TYPE");
  auto big = admin("POST", "/v1/events", std::string(70000, ' '));
  EXPECT_EQ(big.status, 413);
  std::string many = "{\"events\":[";
  for (int i = 0; i < 51; ++i) {
    many += std::string(i ? "," : "") + "{\"id\":\"m" + std::to_string(i) +
            "\",\"customer\":\"c\",\"type\":\"api_call\"}";
  }
  many += "]}";
  auto too_many = admin("POST", "/v1/events", many);
  EXPECT_EQ(too_many.status, 413);
  EXPECT_EQ(Json(too_many.body).str("error"), "PAYLOAD_TOO_LARGE");
  auto wrong_method = admin("PUT", "/v1/events");
  EXPECT_EQ(wrong_method.status, 405);
  EXPECT_EQ(Json(wrong_method.body).str("error"), "METHOD_NOT_ALLOWED");
  EXPECT_FALSE(wrong_method.header("Allow").empty());
  auto missing = admin("GET", "/v1/nothing-here");
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(Json(missing.body).str("error"), "NOT_FOUND");
  EXPECT_EQ(admin("GET", "/v1/meters/nope/query").status, 404);
  EXPECT_EQ(admin("GET", "/v1/meters/api_calls/query?from=yesterday").status, 400);
  EXPECT_EQ(admin("GET", "/v1/meters/api_calls/query?window=fortnight").status, 400);
  EXPECT_EQ(admin("GET", "/v1/meters/api_calls/query?group_by=color").status, 400);
  EXPECT_EQ(admin("GET", "/v1/meters/api_calls/query?tz=Mars/Olympus").status, 400);
  EXPECT_EQ(admin("GET", "/v1/events?limit=0").status, 400);
}

TEST_F(HttpApiTest, CustomersAndTenantIsolation) {
  auto created = admin(
      "POST", "/v1/customers",
      R"({"id":"acme","name":"Acme","email":"ops@acme.test","timezone":"Europe/Berlin","metadata":{"tier":"gold"}})");
  ASSERT_EQ(created.status, 201) << created.body;
  Json cj(created.body);
  EXPECT_EQ(cj.str("timezone"), "Europe/Berlin");
  EXPECT_EQ(cj.str("status"), "active");
  EXPECT_EQ(admin("POST", "/v1/customers", R"({"id":"acme"})").status, 409);
  EXPECT_EQ(admin("POST", "/v1/customers", R"({"id":"bad","timezone":"Nowhere/City"})").status,
            400);
  EXPECT_EQ(admin("POST", "/v1/customers", R"({"id":"bad","colour":"red"})").status, 400);
  EXPECT_EQ(admin("POST", "/v1/customers", R"({"name":"no id"})").status, 400);
  EXPECT_EQ(admin("PATCH", "/v1/customers/ghost", R"({"name":"x"})").status, 404);

  ensure_customer("other");
  const std::string key = customer_key("acme");
  EXPECT_EQ(client_->request("GET", "/v1/customers/acme/usage", {}, key_header(key)).status, 200);
  EXPECT_EQ(client_->request("GET", "/v1/customers/other/usage", {}, key_header(key)).status, 403);
  EXPECT_EQ(client_->request("GET", "/v1/events?customer=other", {}, key_header(key)).status, 403);
  EXPECT_EQ(client_->request("GET", "/v1/customers", {}, key_header(key)).status, 403);
  EXPECT_EQ(client_->request("POST", "/v1/keys", "{}", key_header(key)).status, 403);
  auto q =
      client_->request("GET", "/v1/meters/api_calls/query?customer=other", {}, key_header(key));
  EXPECT_EQ(q.status, 403);

  // A customer key's events default to its customer.
  auto ing = client_->request(
      "POST", "/v1/events",
      R"({"events":[{"id":"a1","type":"api_call","properties":{"service":"chat"}}]})",
      key_header(key));
  ASSERT_EQ(ing.status, 202) << ing.body;
  auto events = client_->request("GET", "/v1/events", {}, key_header(key));
  ASSERT_EQ(events.status, 200);
  Json ej(events.body);
  auto list = ej["events"].get_array();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_EQ(std::string(list.at(0)["customer"].get_string().value()), "acme");
  EXPECT_EQ(std::string(list.at(0)["properties"]["service"].get_string().value()), "chat");

  // Suspension: events still accepted from an admin and flagged; the customer's key gets 403.
  EXPECT_EQ(admin("PATCH", "/v1/customers/acme", R"({"status":"suspended"})").status, 200);
  EXPECT_EQ(client_->request("GET", "/v1/meters", {}, key_header(key)).status, 403);
  auto flagged = admin("POST", "/v1/events", R"({"id":"s1","customer":"acme","type":"api_call"})");
  EXPECT_EQ(flagged.status, 202);
  auto listing = admin("GET", "/v1/events?customer=acme");
  EXPECT_NE(listing.body.find("\"flagged\":true"), std::string::npos) << listing.body;
  EXPECT_EQ(admin("PATCH", "/v1/customers/acme", R"({"status":"active"})").status, 200);
  EXPECT_EQ(client_->request("GET", "/v1/meters", {}, key_header(key)).status, 200);
}

TEST_F(HttpApiTest, KeysAreShownOnceCountedAndRevocable) {
  auto created =
      admin("POST", "/v1/keys", R"({"name":"ci","scopes":["read"],"customer":"cust-test-001"})");
  ASSERT_EQ(created.status, 201) << created.body;
  Json j(created.body);
  const std::string secret = j.str("key");
  const std::string id = j.str("id");
  EXPECT_EQ(secret.rfind(j.str("prefix"), 0), 0u);
  EXPECT_EQ(admin("POST", "/v1/keys", R"({"scopes":["fly"]})").status, 400);
  EXPECT_EQ(admin("POST", "/v1/keys", R"({"customer":"ghost"})").status, 404);
  // Read-only key: ingest is refused.
  EXPECT_EQ(
      client_->request("POST", "/v1/events", R"({"id":"r","type":"api_call"})", key_header(secret))
          .status,
      403);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(client_->request("GET", "/v1/meters", {}, key_header(secret)).status, 200);
  }
  auto listed = admin("GET", "/v1/keys");
  ASSERT_EQ(listed.status, 200);
  EXPECT_EQ(listed.body.find(secret), std::string::npos) << "a listing must never show secrets";
  Json lj(listed.body);
  bool found = false;
  for (auto k : lj["keys"].get_array()) {
    if (std::string(k["id"].get_string().value()) == id) {
      found = true;
      EXPECT_EQ(k["total_requests"].get_int64().value(), 4);
      EXPECT_FALSE(k["last_used_at"].is_null());
    }
  }
  EXPECT_TRUE(found);
  EXPECT_EQ(admin("DELETE", "/v1/keys/" + id).status, 200);
  EXPECT_EQ(client_->request("GET", "/v1/meters", {}, key_header(secret)).status, 401);
  EXPECT_EQ(admin("DELETE", "/v1/keys/key_missing").status, 404);
}

TEST_F(HttpApiTest, MetersQueryAndUsage) {
  ensure_customer("meter-co");
  auto r = admin("POST", "/v1/events", R"([
      {"id":"q1","customer":"meter-co","type":"api_call","time":"2025-02-03T10:00:00Z","properties":{"service":"chat"}},
      {"id":"q2","customer":"meter-co","type":"api_call","time":"2025-02-03T11:00:00Z","properties":{"service":"tts"}},
      {"id":"q3","customer":"meter-co","type":"api_call","time":"2025-02-04T10:00:00Z","properties":{"service":"chat"}}])");
  ASSERT_EQ(r.status, 202) << r.body;
  auto meters = admin("GET", "/v1/meters");
  ASSERT_EQ(meters.status, 200);
  EXPECT_NE(meters.body.find("\"key\":\"tokens_in\""), std::string::npos);
  EXPECT_NE(meters.body.find("\"value\":\"$.input_tokens\""), std::string::npos);
  auto q = admin("GET",
                 "/v1/meters/api_calls/"
                 "query?customer=meter-co&from=2025-02-01T00:00:00Z&to=2025-03-01T00:00:00Z&window="
                 "day&filter[service]=chat");
  ASSERT_EQ(q.status, 200) << q.body;
  Json qj(q.body);
  EXPECT_EQ(qj.str("window"), "day");
  auto rows = qj["data"].get_array();
  ASSERT_EQ(rows.size(), 2u);
  EXPECT_EQ(std::string(rows.at(0)["window_start"].get_string().value()), "2025-02-03T00:00:00Z");
  EXPECT_EQ(std::string(rows.at(0)["window_end"].get_string().value()), "2025-02-04T00:00:00Z");
  EXPECT_EQ(rows.at(0)["value"].get_int64().value(), 1);
  auto usage = admin(
      "GET", "/v1/customers/meter-co/usage?from=2025-02-01T00:00:00Z&to=2025-03-01T00:00:00Z");
  ASSERT_EQ(usage.status, 200) << usage.body;
  EXPECT_NE(usage.body.find(
                "{\"meter\":\"api_calls\",\"aggregation\":\"count\",\"unit\":\"\",\"value\":3}"),
            std::string::npos)
      << usage.body;
  EXPECT_EQ(admin("GET", "/v1/customers/meter-co/usage?from=2025-02-01T00:00:00Z").status, 400);
  EXPECT_EQ(admin("GET", "/v1/customers/ghost/usage").status, 404);
}

TEST_F(HttpApiTest, OnlyOneJsonDocumentPerIngestBody) {
  const std::string two_docs = R"({"id":"nd1","customer":"ndjson-co","type":"api_call"})"
                               "\n"
                               R"({"id":"nd2","customer":"ndjson-co","type":"api_call"})"
                               "\n";
  auto r = admin("POST", "/v1/events", two_docs);
  EXPECT_EQ(r.status, 400) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("error"), "INVALID_JSON");
  EXPECT_NE(j.str("message").find("content after the JSON document"), std::string::npos) << r.body;
  auto garbage = admin("POST", "/v1/events", R"({"events":[]} garbage)");
  EXPECT_EQ(garbage.status, 400) << garbage.body;
  EXPECT_EQ(Json(garbage.body).str("error"), "INVALID_JSON");
  auto ndjson =
      client_->request("POST", "/v1/events", two_docs,
                       {{"x-api-key", kAdminKey}, {"content-type", "application/x-ndjson"}});
  EXPECT_EQ(ndjson.status, 415) << ndjson.body;
  EXPECT_EQ(Json(ndjson.body).str("error"), "UNSUPPORTED_MEDIA_TYPE");
  EXPECT_EQ(admin("GET", "/v1/customers/ndjson-co").status, 404);  // nothing was stored
}

TEST_F(HttpApiTest, KeyWithoutCustomerHonoursItsScopes) {
  auto created = admin("POST", "/v1/keys", R"({"name":"loader","scopes":["ingest"]})");
  ASSERT_EQ(created.status, 201) << created.body;
  Json j(created.body);
  EXPECT_TRUE(j.is_null("customer"));
  auto scopes = j["scopes"].get_array();
  ASSERT_EQ(scopes.size(), 1u);
  EXPECT_EQ(std::string(scopes.at(0).get_string().value()), "ingest");
  const std::string key = j.str("key");
  EXPECT_EQ(
      client_
          ->request("POST", "/v1/events",
                    R"({"id":"sc1","customer":"scoped-co","type":"api_call"})", key_header(key))
          .status,
      202);
  EXPECT_EQ(client_->request("GET", "/v1/events", {}, key_header(key)).status, 403);
  EXPECT_EQ(client_->request("GET", "/v1/customers", {}, key_header(key)).status, 403);
  EXPECT_EQ(client_->request("POST", "/v1/keys", "{}", key_header(key)).status, 403);

  for (const char* body : {R"({"scopes":[]})", R"({"customer":"cust-test-001","scopes":[]})",
                           R"({"scopes":["ingest","fly"]})"}) {
    auto bad = admin("POST", "/v1/keys", body);
    EXPECT_EQ(bad.status, 400) << body << ": " << bad.body;
    EXPECT_EQ(Json(bad.body).str("error"), "VALIDATION_ERROR") << body;
  }
}

TEST_F(HttpApiTest, NothingNewIsNotCalledAllDuplicates) {
  ASSERT_EQ(
      admin("POST", "/v1/events", R"({"id":"nn1","customer":"nothing-new","type":"api_call"})")
          .status,
      202);
  auto r = admin("POST", "/v1/events", R"([{"id":"nn1","customer":"nothing-new","type":"api_call"},
                                           {"id":"nn2","customer":"nothing-new","type":"api_call","time":"never"}])");
  ASSERT_EQ(r.status, 202) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("status"), "partial");
  EXPECT_EQ(j.num("accepted"), 0);
  EXPECT_NE(j.str("message"), "All events were duplicates");
}

TEST_F(HttpApiTest, EventListingRefusesUnknownParameters) {
  auto r = admin("GET", "/v1/events?custmer=acme");
  EXPECT_EQ(r.status, 400) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("error"), "VALIDATION_ERROR");
  EXPECT_NE(j.str("message").find("custmer"), std::string::npos) << r.body;
  EXPECT_NE(j.str("message").find("customer, type, from, to, limit, cursor"), std::string::npos)
      << r.body;
  EXPECT_EQ(admin("GET", "/v1/events?limit=5&type=api_call").status, 200);
}

TEST_F(HttpApiTest, MetricsCountBugs) {
  auto m = client_->request("GET", "/metrics");
  ASSERT_EQ(m.status, 200);
  EXPECT_NE(m.body.find("# TYPE tally_bugs_total counter\ntally_bugs_total 0\n"), std::string::npos)
      << m.body;
}

}  // namespace
}  // namespace tally::testing
