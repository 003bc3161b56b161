// Route handlers driven through Api::handle on an in-memory engine: for answers that would be
// slow or awkward to provoke through a real server (large data sets), with no sockets.
#include <future>

#include <gtest/gtest.h>

#include "core/time.h"
#include "http/api.h"

namespace tally::http {
namespace {

constexpr const char* kAdminKey = "handlers-test-admin-key-0123456789";

constexpr const char* kConfig = R"(
[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]
)";

class HandlersTest : public ::testing::Test {
 protected:
  void SetUp() override {
    EngineOptions o;
    o.in_memory = true;
    o.config_toml = kConfig;
    o.clock = &clock_;
    o.admin_key = kAdminKey;
    auto e = Engine::open(o);
    ASSERT_TRUE(e.has_value()) << e.error().message();
    engine_ = std::move(*e);
    api_ = std::make_unique<Api>(*engine_, ApiOptions{});
  }

  Response call(std::string method, std::string path,
                std::vector<std::pair<std::string, std::string>> query = {},
                std::string body = {}) {
    Request r;
    r.method = std::move(method);
    r.path = path;
    r.target = path;
    for (std::size_t i = 0; i < query.size(); ++i) {
      r.target += (i == 0 ? "?" : "&") + query[i].first + "=" + query[i].second;
    }
    r.query = std::move(query);
    r.headers = {{"x-api-key", kAdminKey}, {"content-type", "application/json"}};
    r.body = std::move(body);
    std::promise<Response> answered;
    auto f = answered.get_future();
    api_->handle(std::move(r), [&answered](Response resp) { answered.set_value(std::move(resp)); });
    return f.get();
  }

  FakeClock clock_{*core::parse_rfc3339("2025-01-20T12:00:00Z")};
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Api> api_;
};

TEST_F(HandlersTest, QueryOverTheRowCapIs400QueryTooLarge) {
  constexpr int kGroups = 100'001;  // one group (and so one row) more than a query may return
  for (int first = 0; first < kGroups; first += 10'000) {
    std::string body = "[";
    for (int i = first; i < std::min(first + 10'000, kGroups); ++i) {
      body += (i == first ? "" : ",");
      body +=
          R"({"id":"r)" + std::to_string(i) +
          R"(","customer":"c","type":"api_call","time":"2025-01-10T09:00:00Z","properties":{"service":"s)" +
          std::to_string(i) + "\"}}";
    }
    body += "]";
    auto r = engine_->ingest_json(std::move(body));
    ASSERT_TRUE(r.has_value()) << r.error().message();
  }
  const std::vector<std::pair<std::string, std::string>> range = {
      {"from", "2025-01-10T00:00:00Z"}, {"to", "2025-01-11T00:00:00Z"}, {"group_by", "service"}};
  for (const char* window : {"", "day"}) {
    auto q = range;
    if (*window != '\0') {
      q.emplace_back("window", window);
    }
    Response r = call("GET", "/v1/meters/calls/query", q);
    EXPECT_EQ(r.status, 400u) << window << ": " << r.body;
    EXPECT_NE(r.body.find(R"("error":"QUERY_TOO_LARGE")"), std::string::npos) << r.body;
    EXPECT_NE(r.body.find("narrow the range"), std::string::npos) << r.body;
    for (const auto& [name, value] : r.headers) {
      EXPECT_NE(name, "Retry-After") << "retrying the same query cannot help";
    }
  }
}

// The head stage decides on the method, path and headers alone: nothing of a refused request's
// body is needed, and a key is checked once.
Request head_of(std::string method, std::string path, std::string key) {
  Request r;
  r.method = std::move(method);
  r.target = path;
  r.path = std::move(path);
  if (!key.empty()) {
    r.headers = {{"x-api-key", std::move(key)}};
  }
  return r;
}

TEST_F(HandlersTest, AdmitRefusesOnTheHead) {
  Admission no_key = api_->admit(head_of("POST", "/v1/events", ""));
  ASSERT_TRUE(no_key.refusal.has_value());
  EXPECT_EQ(no_key.refusal->status, 401u);
  EXPECT_NE(no_key.refusal->body.find(R"("error":"UNAUTHORIZED")"), std::string::npos);

  Admission bad_key = api_->admit(head_of("POST", "/v1/events", "tk_not_a_key"));
  ASSERT_TRUE(bad_key.refusal.has_value());
  EXPECT_EQ(bad_key.refusal->status, 401u);

  Admission no_route = api_->admit(head_of("POST", "/v1/nowhere", ""));
  ASSERT_TRUE(no_route.refusal.has_value());
  EXPECT_EQ(no_route.refusal->status, 404u);

  Admission wrong_method = api_->admit(head_of("PUT", "/v1/events", ""));
  ASSERT_TRUE(wrong_method.refusal.has_value());
  EXPECT_EQ(wrong_method.refusal->status, 405u);

  ASSERT_TRUE(engine_->create_customer(Customer{.id = "acme"}).has_value());
  ASSERT_TRUE(engine_->create_customer(Customer{.id = "other"}).has_value());
  NewApiKeyRequest k;
  k.customer = "acme";
  auto key = engine_->create_key(k);
  ASSERT_TRUE(key.has_value()) << key.error().message();
  Admission admin_route = api_->admit(head_of("POST", "/v1/customers", key->secret));
  ASSERT_TRUE(admin_route.refusal.has_value());
  EXPECT_EQ(admin_route.refusal->status, 403u);
  Admission other_customer = api_->admit(head_of("GET", "/v1/customers/other/usage", key->secret));
  ASSERT_TRUE(other_customer.refusal.has_value()) << "the path names another customer";
  EXPECT_EQ(other_customer.refusal->status, 403u);
  EXPECT_NE(other_customer.refusal->body.find("may only read customer 'acme'"), std::string::npos);

  Admission own = api_->admit(head_of("POST", "/v1/events", key->secret));
  EXPECT_FALSE(own.refusal.has_value());
  EXPECT_TRUE(static_cast<bool>(own.handler));
  auto keys = engine_->list_keys();
  for (const auto& info : keys) {
    if (info.id == key->info.id) {
      EXPECT_EQ(info.total_requests, 3u) << "each admitted or refused head counts the key once";
    }
  }
}

TEST_F(HandlersTest, LongRequestsAreRefused503WhenTheWorkPoolCannotTakeThem) {
  EXPECT_EQ(call("GET", "/v1/events").status, 200u) << "runs on the work pool";
  api_->stop();
  Response r = call("GET", "/v1/events");
  EXPECT_EQ(r.status, 503u) << r.body;
  EXPECT_NE(r.body.find(R"("error":"SERVICE_UNAVAILABLE")"), std::string::npos) << r.body;
  bool retry_after = false;
  for (const auto& [name, value] : r.headers) {
    retry_after = retry_after || (name == "Retry-After" && value == "1");
  }
  EXPECT_TRUE(retry_after);
  EXPECT_EQ(call("GET", "/v1/meters").status, 200u) << "quick routes run inline still";
}

}  // namespace
}  // namespace tally::http
