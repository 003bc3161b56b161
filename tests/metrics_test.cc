// GET /metrics end to end: a real `tally serve` under known traffic. Proves that the request
// counters (route pattern, method, status class) and the latency histograms of ingest, checks
// and queries count exactly what was done, that the histograms are well formed, and that
// Prometheus' own linter (`promtool check metrics`) accepts the whole page.
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "support/process.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

constexpr const char* kConfig = R"(
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[meters]]
key = "other_calls"
event_type = "other"
aggregation = "count"

[[plans]]
key = "starter"
limits = [{ meter = "api_calls", period = "day", amount = 3 }]

[[customers]]
id = "acme"
plan = "starter"
)";

// The samples of a metrics page: "name{labels}" (as written) -> value.
std::map<std::string, double> samples(const std::string& page) {
  std::map<std::string, double> out;
  std::size_t pos = 0;
  while (pos < page.size()) {
    std::size_t end = page.find('\n', pos);
    if (end == std::string::npos) {
      end = page.size();
    }
    const std::string line = page.substr(pos, end - pos);
    pos = end + 1;
    if (line.empty() || line[0] == '#') {
      continue;
    }
    const std::size_t space = line.rfind(' ');
    out[line.substr(0, space)] = std::stod(line.substr(space + 1));
  }
  return out;
}

double value(const std::map<std::string, double>& s, const std::string& name) {
  auto it = s.find(name);
  return it == s.end() ? 0 : it->second;
}

std::string requests(const std::string& route, const std::string& method, const std::string& code) {
  return "tally_http_requests_total{route=\"" + route + "\",method=\"" + method + "\",code=\"" +
         code + "\"}";
}

// The bucket counts of histogram `name`, in page order, and checks its shape: buckets
// cumulative, the last one +Inf and equal to _count.
std::vector<double> buckets(const std::string& page, const std::string& name) {
  std::vector<double> out;
  const std::string prefix = name + "_bucket{le=\"";
  std::size_t pos = 0;
  std::string last_le;
  while ((pos = page.find("\n" + prefix, pos)) != std::string::npos) {
    pos += 1 + prefix.size();
    const std::size_t quote = page.find('"', pos);
    last_le = page.substr(pos, quote - pos);
    const std::size_t space = page.find(' ', quote);
    out.push_back(std::stod(page.substr(space + 1, page.find('\n', space) - space - 1)));
  }
  EXPECT_EQ(last_le, "+Inf") << name;
  for (std::size_t i = 1; i < out.size(); ++i) {
    EXPECT_GE(out[i], out[i - 1]) << name << " bucket " << i << " is not cumulative";
  }
  const auto s = samples(page);
  EXPECT_FALSE(out.empty()) << name;
  if (!out.empty()) {
    EXPECT_EQ(out.back(), value(s, name + "_count")) << name;
  }
  return out;
}

TEST(Metrics, CountersAndHistogramsMoveExactlyWithTheTraffic) {
  TallyServer server(kConfig);
  auto c = server.client();
  const std::string before = c->request("GET", "/metrics").body;
  const auto s0 = samples(before);
  EXPECT_EQ(value(s0, "tally_check_duration_seconds_count"), 0) << before;
  EXPECT_EQ(value(s0, "tally_ingest_ack_duration_seconds_count"), 0) << before;
  EXPECT_EQ(value(s0, "tally_query_duration_seconds_count"), 0) << before;

  // 2 ingests acknowledged and 1 refused as malformed: 3 ingest answers.
  for (int i = 0; i < 2; ++i) {
    auto r =
        c->request("POST", "/v1/events",
                   R"({"id":"e)" + std::to_string(i) + R"(","customer":"acme","type":"other"})",
                   key_header(kAdminKey));
    ASSERT_EQ(r.status, 202) << r.body;
  }
  ASSERT_EQ(c->request("POST", "/v1/events", "{nope", key_header(kAdminKey)).status, 400);
  // 5 checks against a limit of 3 (3 allowed, 2 refused), 1 with a bad body, 1 without a key.
  const std::string check = R"({"customer":"acme","meter":"api_calls"})";
  for (int i = 0; i < 5; ++i) {
    auto r = c->request("POST", "/v1/check", check, key_header(kAdminKey));
    ASSERT_EQ(r.status, i < 3 ? 200 : 429) << i << ": " << r.body;
  }
  ASSERT_EQ(c->request("POST", "/v1/check", R"({"customer":"acme"})", key_header(kAdminKey)).status,
            400);
  ASSERT_EQ(c->request("POST", "/v1/check", check, {{"content-type", "application/json"}}).status,
            401);
  // 1 query, 1 request with no route, 1 with a route but not its method.
  ASSERT_EQ(c->request("GET", "/v1/meters/api_calls/query?customer=acme", "", key_header(kAdminKey))
                .status,
            200);
  ASSERT_EQ(c->request("GET", "/no/such/route").status, 404);
  ASSERT_EQ(c->request("DELETE", "/v1/check", "", key_header(kAdminKey)).status, 405);

  const std::string after = c->request("GET", "/metrics").body;
  const auto s1 = samples(after);
  // Every check the handler answered is one observation (the 401 never reached it).
  EXPECT_EQ(value(s1, "tally_check_duration_seconds_count"), 6) << after;
  EXPECT_EQ(value(s1, "tally_ingest_ack_duration_seconds_count"), 3) << after;
  EXPECT_EQ(value(s1, "tally_query_duration_seconds_count"), 1) << after;
  EXPECT_GT(value(s1, "tally_check_duration_seconds_sum"), 0) << after;
  for (const char* h : {"tally_check_duration_seconds", "tally_ingest_ack_duration_seconds",
                        "tally_query_duration_seconds", "tally_commit_duration_seconds",
                        "tally_ingest_batch_duration_seconds"}) {
    buckets(after, h);
  }
  const auto check_buckets = buckets(after, "tally_check_duration_seconds");
  ASSERT_EQ(check_buckets.size(), 21u) << "20 bounds and +Inf";
  EXPECT_EQ(check_buckets.back(), 6);

  EXPECT_EQ(value(s1, requests("/v1/check", "POST", "2xx")), 3) << after;
  EXPECT_EQ(value(s1, requests("/v1/check", "POST", "4xx")), 4) << after;  // 2x429, 400, 401
  EXPECT_EQ(value(s1, requests("/v1/events", "POST", "2xx")), 2) << after;
  EXPECT_EQ(value(s1, requests("/v1/events", "POST", "4xx")), 1) << after;
  EXPECT_EQ(value(s1, requests("/v1/meters/{}/query", "GET", "2xx")), 1) << after;
  EXPECT_EQ(value(s1, requests("unmatched", "GET", "4xx")), 1) << after;
  EXPECT_EQ(value(s1, requests("unmatched", "DELETE", "4xx")), 1) << after;
  EXPECT_EQ(value(s1, requests("/metrics", "GET", "2xx")), 1)
      << "the first page, counted once answered";
  // No raw path is a label: the query's customer and meter do not appear.
  EXPECT_EQ(after.find("route=\"/v1/meters/api_calls"), std::string::npos) << after;
  EXPECT_EQ(after.find("route=\"/no/such"), std::string::npos) << after;
  // Each answered ingest request is one ack observation, whatever its answer.
  EXPECT_EQ(value(s1, "tally_ingest_ack_duration_seconds_count"),
            value(s1, requests("/v1/events", "POST", "2xx")) +
                value(s1, requests("/v1/events", "POST", "4xx")));
  EXPECT_EQ(value(s1, "tally_bugs_total"), 0);
}

// promtool, from Debian's prometheus package (scripts/setup.sh installs it), or "".
std::string find_promtool() {
  for (const char* dir : {"/usr/bin", "/usr/local/bin", "/bin"}) {
    const std::string path = std::string(dir) + "/promtool";
    if (read_file(path).has_value()) {
      return path;
    }
  }
  return "";
}

TEST(Metrics, PromtoolAcceptsThePageWithoutLintWarnings) {
  const std::string promtool = find_promtool();
  if (promtool.empty()) {
    GTEST_SKIP() << "promtool is not installed (scripts/setup.sh installs Debian's prometheus)";
  }
  TallyServer server(kConfig);
  auto c = server.client();
  ASSERT_EQ(c->request("POST", "/v1/events", R"({"id":"e1","customer":"acme","type":"api_call"})",
                       key_header(kAdminKey))
                .status,
            202);
  ASSERT_EQ(c->request("POST", "/v1/events", "[", key_header(kAdminKey)).status, 400);
  const std::string check = R"({"customer":"acme","meter":"api_calls"})";
  for (int i = 0; i < 4; ++i) {
    c->request("POST", "/v1/check", check, key_header(kAdminKey));
  }
  ASSERT_EQ(c->request("POST", "/v1/check", check, key_header(kAdminKey)).status, 429);
  ASSERT_EQ(c->request("GET", "/v1/customers/acme/usage", "", key_header(kAdminKey)).status, 200);
  ASSERT_EQ(c->request("GET", "/v1/nothing").status, 404);
  const auto page = c->request("GET", "/metrics");
  ASSERT_EQ(page.status, 200);
  EXPECT_EQ(page.header("Content-Type"), "text/plain; version=0.0.4; charset=utf-8");
  const std::string file = server.dir() + "/metrics.txt";
  std::ofstream(file) << page.body;

  ProcessOptions o;
  o.executable = "/bin/sh";
  o.args = {"-c", "exec \"$0\" check metrics < \"$1\"", promtool, file};
  o.log_path = server.dir() + "/promtool.log";
  auto p = ChildProcess::start(o);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  const auto code = p->wait_exit(60000);
  const std::string said = read_file(o.log_path).value_or("");
  EXPECT_EQ(code, 0) << said << "\n" << page.body;
  EXPECT_EQ(said, "") << "promtool found problems:\n" << said;
}

}  // namespace
}  // namespace tally::testing
