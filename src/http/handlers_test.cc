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

}  // namespace
}  // namespace tally::http
