// End-to-end tests of the read-side reports against a real `tally serve` process: usage history,
// the usage report, a customer's organization (kept across a restart), organization roll-ups,
// top customers, and meter statistics compared with a brute-force computation over the events
// the test sent; and every error a caller can cause on these routes.
#include <algorithm>
#include <map>
#include <optional>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "core/decimal.h"
#include "core/time.h"
#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

using core::TimeUs;

const std::string kConfig = R"(
[enforcement]
default_plan = "starter"

)" + std::string(kApiCallsMeterToml) +
                            R"(
[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"
group_by = ["model"]

[[meters]]
key = "users"
event_type = "api_call"
aggregation = "unique_count"
value = "$.user"

# Only the statistics test sends these, so statistics over every customer see its events only.
[[meters]]
key = "latency"
event_type = "request"
aggregation = "sum"
value = "$.ms"
group_by = ["region"]

[[meters]]
key = "latency_max"
event_type = "request"
aggregation = "max"
value = "$.ms"

[[plans]]
key = "starter"
features = ["chat", "search"]
limits = [
  { meter = "api_calls", period = "day", amount = 34 },
  { meter = "api_calls", period = "month", amount = "unlimited" },
]
)";

TimeUs at(const std::string& rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

// A JSON value as text: numbers as written, null as "null".
std::string text(simdjson::dom::element e) {
  return e.is_null() ? "null" : simdjson::minify(e);
}

std::string str(simdjson::dom::element e) {
  std::string_view v;
  return e.get_string().get(v) == simdjson::SUCCESS ? std::string(v) : "<not a string>";
}

// A decimal as JSON gives it back (through simdjson's number formatting).
std::string json_number(const std::string& decimal) {
  simdjson::dom::parser p;
  return simdjson::minify(p.parse(decimal).value());
}

class ReportsApiTest : public ApiTest {
 protected:
  static void SetUpTestSuite() { start_server(kConfig); }

  void customer(const std::string& body) {
    auto r = admin("POST", "/v1/customers", body);
    ASSERT_EQ(r.status, 201) << r.body;
  }

  void ingest(const std::string& events) {
    auto r = admin("POST", "/v1/events", "{\"events\":[" + events + "]}");
    ASSERT_EQ(r.status, 202) << r.body;
    ASSERT_EQ(Json(r.body).str("status"), "accepted") << r.body;
  }
};

// ---- organizations on customers ------------------------------------------------------------

TEST_F(ReportsApiTest, CustomerOrganizationIsSetChangedRemovedAndKeptAcrossARestart) {
  auto r = admin("POST", "/v1/customers", R"({"id":"org-c1","organization":"acme-group"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(Json(r.body).str("organization"), "acme-group");
  r = admin("POST", "/v1/customers", R"({"id":"org-c2"})");
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_TRUE(Json(r.body).is_null("organization"));

  r = admin("PATCH", "/v1/customers/org-c2", R"({"organization":"other"})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r.body).str("organization"), "other");
  r = admin("PATCH", "/v1/customers/org-c2", R"({"organization":null})");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_TRUE(Json(r.body).is_null("organization"));

  expect_error(admin("PATCH", "/v1/customers/org-c2", R"({"organization":""})"), 400,
               "VALIDATION_ERROR", "organization");
  expect_error(admin("PATCH", "/v1/customers/org-c2", R"({"organization":5})"), 400,
               "VALIDATION_ERROR", "'organization' must be a string");
  expect_error(admin("POST", "/v1/customers", R"({"id":"org-c3","organization":"a/b"})"), 400,
               "VALIDATION_ERROR", "organization must be");

  ASSERT_EQ(server_->stop(), 0);
  server_->start();
  client_ = server_->client();
  r = admin("GET", "/v1/customers/org-c1");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r.body).str("organization"), "acme-group");
  r = admin("GET", "/v1/customers/org-c2");
  EXPECT_TRUE(Json(r.body).is_null("organization")) << r.body;
}

// ---- history ----------------------------------------------------------------------------------

TEST_F(ReportsApiTest, HistoryIsZeroFilledPerWindowAndPerGroup) {
  customer(R"({"id":"hist"})");
  ingest(
      R"({"id":"h1","customer":"hist","type":"api_call","time":"2025-01-03T10:00:00Z","properties":{"service":"chat"}},
            {"id":"h2","customer":"hist","type":"api_call","time":"2025-01-03T11:00:00Z","properties":{"service":"tts"}},
            {"id":"h3","customer":"hist","type":"api_call","time":"2025-01-05T23:59:00Z","properties":{"service":"chat"}})");
  auto r = admin("GET",
                 "/v1/customers/hist/usage/history?meter=api_calls&window=day"
                 "&from=2025-01-01T00:00:00Z&to=2025-01-08T00:00:00Z&group_by=service");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("customer"), "hist");
  EXPECT_EQ(j.str("meter"), "api_calls");
  EXPECT_EQ(j.str("window"), "day");
  EXPECT_EQ(j.str("timezone"), "UTC");
  EXPECT_EQ(j.str("from"), "2025-01-01T00:00:00Z");
  auto data = j["data"].get_array().value();
  ASSERT_EQ(data.size(), 7u);
  const char* want[] = {"0", "0", "2", "0", "1", "0", "0"};
  for (std::size_t i = 0; i < 7; ++i) {
    EXPECT_EQ(text(data.at(i)["value"]), want[i]) << i;
  }
  EXPECT_EQ(str(data.at(2)["window_start"]), "2025-01-03T00:00:00Z");
  EXPECT_EQ(str(data.at(2)["window_end"]), "2025-01-04T00:00:00Z");
  auto groups = j["groups"].get_array().value();
  ASSERT_EQ(groups.size(), 2u);
  EXPECT_EQ(str(groups.at(0)["group"]["service"]), "chat");
  EXPECT_EQ(groups.at(0)["data"].get_array().size(), 7u);
  EXPECT_EQ(text(groups.at(0)["data"].at(4)["value"]), "1");
  EXPECT_EQ(str(groups.at(1)["group"]["service"]), "tts");
  EXPECT_EQ(text(groups.at(1)["data"].at(4)["value"]), "0");

  // In Asia/Tokyo (+09:00) the 23:59 UTC call falls on the 6th.
  r = admin("GET",
            "/v1/customers/hist/usage/history?meter=api_calls&window=day&tz=Asia/Tokyo"
            "&from=2025-01-05T00:00:00%2B09:00&to=2025-01-07T00:00:00%2B09:00");
  ASSERT_EQ(r.status, 200) << r.body;
  Json tokyo(r.body);
  EXPECT_EQ(text(tokyo["data"].at(0)["value"]), "0");
  EXPECT_EQ(text(tokyo["data"].at(1)["value"]), "1");

  // Defaults: day windows, the last 30, the current one included.
  r = admin("GET", "/v1/customers/hist/usage/history?meter=api_calls");
  ASSERT_EQ(r.status, 200) << r.body;
  Json d(r.body);
  auto all = d["data"].get_array().value();
  ASSERT_EQ(all.size(), 30u);
  const TimeUs now = static_cast<TimeUs>(std::time(nullptr)) * core::kUsPerSecond;
  EXPECT_LE(at(str(all.at(29)["window_start"])), now);
  EXPECT_GT(at(str(all.at(29)["window_end"])), now);
  EXPECT_FALSE(d.has("groups"));
}

TEST_F(ReportsApiTest, HistoryErrors) {
  customer(R"({"id":"hist-err"})");
  customer(R"({"id":"hist-other"})");
  const std::string base = "/v1/customers/hist-err/usage/history";
  expect_error(admin("GET", base), 400, "VALIDATION_ERROR", "'meter' is required");
  expect_error(admin("GET", base + "?meter=api_calls&colour=red"), 400, "VALIDATION_ERROR",
               "unknown query parameter 'colour'");
  expect_error(admin("GET", base + "?meter=api_calls&window=fortnight"), 400, "VALIDATION_ERROR");
  expect_error(admin("GET", base + "?meter=api_calls&from=2025-01-01T00:00:00Z"), 400,
               "VALIDATION_ERROR", "both 'from' and 'to'");
  expect_error(admin("GET", base + "?meter=api_calls&from=yesterday&to=2025-01-01T00:00:00Z"), 400,
               "VALIDATION_ERROR", "'from'");
  expect_error(
      admin("GET", base + "?meter=api_calls&from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z"),
      400, "VALIDATION_ERROR", "after");
  expect_error(
      admin("GET",
            base +
                "?meter=api_calls&window=minute&from=2024-01-01T00:00:00Z&to=2025-01-01T00:00:00Z"),
      400, "VALIDATION_ERROR", "more than 10000 minute windows");
  expect_error(admin("GET", base + "?meter=api_calls&group_by=model"), 400, "VALIDATION_ERROR",
               "not a group-by property");
  expect_error(admin("GET", base + "?meter=api_calls&tz=Mars/Base"), 400, "VALIDATION_ERROR");
  expect_error(admin("GET", base + "?meter=nope"), 404, "NOT_FOUND", "meter 'nope'");
  expect_error(admin("GET", "/v1/customers/nobody/usage/history?meter=api_calls"), 404, "NOT_FOUND",
               "customer 'nobody'");
  const std::string key = customer_key("hist-err");
  EXPECT_EQ(as(key, base + "?meter=api_calls").status, 200);
  expect_error(as(key, "/v1/customers/hist-other/usage/history?meter=api_calls"), 403, "FORBIDDEN");
}

// ---- the usage report -------------------------------------------------------------------------

TEST_F(ReportsApiTest, ReportHasPlanPeriodLimitsPercentagesWarningsAndBreakdown) {
  customer(R"({"id":"rep","name":"Report Inc.","organization":"rep-org"})");
  std::string events;
  for (int i = 0; i < 30; ++i) {  // now, so in the current day and month
    if (i > 0)
      events += ",";
    events += R"({"id":"r)" + std::to_string(i) +
              R"(","customer":"rep","type":"api_call","properties":{"service":")" +
              (i < 20   ? "chat"
               : i < 29 ? "search"
                        : "stt") +
              R"(","user":"u)" + std::to_string(i % 3) + "\"}}";
  }
  ingest(events);
  auto r = admin("GET", "/v1/customers/rep/report");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("customer"), "rep");
  EXPECT_EQ(j.str("name"), "Report Inc.");
  EXPECT_EQ(j.str("organization"), "rep-org");
  EXPECT_EQ(j.str("plan"), "starter");
  auto period = j["current_period"];
  EXPECT_EQ(str(period["customer"]), "rep");
  EXPECT_EQ(text(period["meters"].at(0)["value"]), "30");
  EXPECT_EQ(text(period["meters"].at(2)["value"]), "3");  // users
  auto limits = j["limits"].get_array().value();
  ASSERT_EQ(limits.size(), 2u);
  EXPECT_EQ(str(limits.at(0)["rule"]), "api_calls per day");
  EXPECT_EQ(text(limits.at(0)["used"]), "30");
  EXPECT_EQ(text(limits.at(0)["percent"]), "88.24");
  EXPECT_EQ(str(limits.at(1)["limit"]), "unlimited");
  EXPECT_EQ(text(j["usage_percentage"]["api_calls per day"]), "88.24");
  EXPECT_EQ(text(j["usage_percentage"]["api_calls per month"]), "null");
  auto warnings = j["warnings"].get_array().value();
  ASSERT_EQ(warnings.size(), 1u);
  EXPECT_EQ(str(warnings.at(0)), "api_calls per day at 88.24%");
  auto breakdown = j["breakdown"].get_array().value();
  ASSERT_EQ(breakdown.size(), 3u);  // api_calls by service, tokens by model, latency by region
  auto calls = breakdown.at(0);
  EXPECT_EQ(str(calls["meter"]), "api_calls");
  EXPECT_EQ(str(calls["property"]), "service");
  auto groups = calls["groups"].get_array().value();
  ASSERT_EQ(groups.size(), 3u);
  EXPECT_EQ(str(groups.at(0)["value"]), "chat");
  EXPECT_EQ(text(groups.at(0)["usage"]), "20");
  EXPECT_EQ(text(groups.at(0)["percent"]), "66.67");
  EXPECT_EQ(str(groups.at(1)["value"]), "search");
  EXPECT_EQ(text(groups.at(1)["percent"]), json_number("30.00"));
  EXPECT_EQ(str(groups.at(2)["value"]), "stt");
  EXPECT_EQ(text(groups.at(2)["percent"]), "3.33");
  EXPECT_EQ(breakdown.at(1)["groups"].get_array().size(), 0u);

  r = admin("GET", "/v1/customers/rep/report?group_by=region");
  ASSERT_EQ(r.status, 200) << r.body;
  Json by_region(r.body);
  ASSERT_EQ(by_region["breakdown"].get_array().size(), 1u);
  EXPECT_EQ(str(by_region["breakdown"].at(0)["meter"]), "latency");

  expect_error(admin("GET", "/v1/customers/rep/report?group_by=colour"), 400, "VALIDATION_ERROR",
               "not a group-by property of any meter");
  expect_error(admin("GET", "/v1/customers/rep/report?month=1"), 400, "VALIDATION_ERROR",
               "unknown query parameter 'month'");
  expect_error(admin("GET", "/v1/customers/nobody/report"), 404, "NOT_FOUND");
  customer(R"({"id":"rep-other"})");
  const std::string key = customer_key("rep-other");
  expect_error(as(key, "/v1/customers/rep/report"), 403, "FORBIDDEN");
  r = as(key, "/v1/customers/rep-other/report");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r.body)["warnings"].get_array().size(), 0u);
}

// ---- organizations and top customers ----------------------------------------------------------

TEST_F(ReportsApiTest, OrganizationUsageRollsUpItsCustomers) {
  customer(R"({"id":"o-1","organization":"org-x"})");
  customer(R"({"id":"o-2","organization":"org-x"})");
  customer(R"({"id":"o-3","organization":"org-y"})");
  ingest(
      R"({"id":"1","customer":"o-1","type":"api_call","time":"2025-01-10T10:00:00Z","properties":{"user":"shared"}},
            {"id":"2","customer":"o-2","type":"api_call","time":"2025-01-11T10:00:00Z","properties":{"user":"shared"}},
            {"id":"3","customer":"o-2","type":"api_call","time":"2025-01-12T10:00:00Z","properties":{"user":"own"}},
            {"id":"4","customer":"o-3","type":"api_call","time":"2025-01-12T10:00:00Z","properties":{"user":"x"}},
            {"id":"5","customer":"o-1","type":"tokens","time":"2025-01-12T10:00:00Z","properties":{"n":2.5}},
            {"id":"6","customer":"o-2","type":"tokens","time":"2025-02-12T10:00:00Z","properties":{"n":100}})");
  auto r = admin("GET",
                 "/v1/organizations/org-x/usage?from=2025-01-01T00:00:00Z&to=2025-02-01T00:00:00Z");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("organization"), "org-x");
  EXPECT_EQ(text(j["customers"]), R"(["o-1","o-2"])");
  std::map<std::string, std::string> v;
  for (auto m : j["meters"].get_array()) {
    v[str(m["meter"])] = text(m["value"]);
  }
  EXPECT_EQ(v["api_calls"], "3");
  EXPECT_EQ(v["tokens"], "2.5");
  EXPECT_EQ(v["users"], "2");  // distinct across the organization
  EXPECT_EQ(v["latency_max"], "null");
  auto by = j["by_customer"].get_array().value();
  ASSERT_EQ(by.size(), 2u);
  EXPECT_EQ(str(by.at(1)["customer"]), "o-2");
  EXPECT_EQ(text(by.at(1)["meters"].at(0)["value"]), "2");

  // Default range: the current month, in UTC.
  r = admin("GET", "/v1/organizations/org-x/usage");
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string from = Json(r.body).str("from");
  EXPECT_EQ(from.substr(8), "01T00:00:00Z") << from;

  expect_error(admin("GET", "/v1/organizations/org-none/usage"), 404, "NOT_FOUND",
               "organization 'org-none'");
  expect_error(admin("GET", "/v1/organizations/org-x/usage?from=2025-01-01T00:00:00Z"), 400,
               "VALIDATION_ERROR");
  expect_error(admin("GET", "/v1/organizations/org-x/usage?tz=Mars/Base"), 400, "VALIDATION_ERROR");
  expect_error(admin("GET", "/v1/organizations/org-x/usage?customer=o-1"), 400, "VALIDATION_ERROR",
               "unknown query parameter");
  expect_error(as(customer_key("o-1"), "/v1/organizations/org-x/usage"), 403, "FORBIDDEN", "admin");
}

TEST_F(ReportsApiTest, TopCustomersRanksByValue) {
  for (const char* id : {"top-a", "top-b", "top-c"}) {
    customer(std::string(R"({"id":")") + id + "\"}");
  }
  ingest(
      R"({"id":"1","customer":"top-a","type":"tokens","time":"2023-06-10T10:00:00Z","properties":{"n":5}},
            {"id":"2","customer":"top-b","type":"tokens","time":"2023-06-11T10:00:00Z","properties":{"n":50}},
            {"id":"3","customer":"top-c","type":"tokens","time":"2023-06-12T10:00:00Z","properties":{"n":7.25}},
            {"id":"4","customer":"top-a","type":"tokens","time":"2023-06-12T11:00:00Z","properties":{"n":1}})");
  auto r = admin(
      "GET",
      "/v1/admin/usage/top?meter=tokens&from=2023-06-01T00:00:00Z&to=2023-07-01T00:00:00Z&n=2");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("meter"), "tokens");
  EXPECT_TRUE(j.is_null("period"));
  auto list = j["customers"].get_array().value();
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(text(list.at(0)["rank"]), "1");
  EXPECT_EQ(str(list.at(0)["customer"]), "top-b");
  EXPECT_EQ(text(list.at(0)["value"]), "50");
  EXPECT_EQ(str(list.at(1)["customer"]), "top-c");
  EXPECT_EQ(text(list.at(1)["value"]), "7.25");

  r = admin("GET", "/v1/admin/usage/top?meter=tokens&period=day");
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(Json(r.body).str("period"), "day");

  expect_error(admin("GET", "/v1/admin/usage/top"), 400, "VALIDATION_ERROR", "'meter'");
  expect_error(admin("GET", "/v1/admin/usage/top?meter=tokens&n=0"), 400, "VALIDATION_ERROR",
               "'n'");
  expect_error(admin("GET", "/v1/admin/usage/top?meter=tokens&n=1001"), 400, "VALIDATION_ERROR");
  expect_error(admin("GET", "/v1/admin/usage/top?meter=tokens&period=year"), 400,
               "VALIDATION_ERROR", "period");
  expect_error(
      admin("GET",
            "/v1/admin/usage/"
            "top?meter=tokens&period=day&from=2023-06-01T00:00:00Z&to=2023-07-01T00:00:00Z"),
      400, "VALIDATION_ERROR", "not both");
  expect_error(admin("GET", "/v1/admin/usage/top?meter=tokens&limit=3"), 400, "VALIDATION_ERROR",
               "unknown query parameter 'limit'");
  expect_error(admin("GET", "/v1/admin/usage/top?meter=nope"), 404, "NOT_FOUND");
  expect_error(as(customer_key("top-a"), "/v1/admin/usage/top?meter=tokens"), 403, "FORBIDDEN");
}

// ---- statistics -------------------------------------------------------------------------------

struct Sent {
  std::string customer;
  std::string region;
  TimeUs time;
  core::Decimal ms;
};

// Nearest rank: the value at position ceil(p/100 * n), counting from 1.
std::string nearest_rank(const std::vector<core::Decimal>& sorted, int p) {
  const std::size_t n = sorted.size();
  std::size_t k = 1;
  while (k * 100 < static_cast<std::size_t>(p) * n)
    ++k;
  return core::format_decimal(sorted[k - 1]);
}

TEST_F(ReportsApiTest, StatsMatchABruteForceComputation) {
  for (const char* id : {"st-0", "st-1", "st-2"}) {
    customer(std::string(R"({"id":")") + id + "\"}");
  }
  std::mt19937_64 rng(77);
  std::vector<Sent> sent;
  const TimeUs base = at("2024-03-01T00:00:00Z");
  const char* regions[] = {"eu", "us", "ap"};
  for (int batch = 0; batch < 5; ++batch) {
    std::string events;
    for (int i = 0; i < 200; ++i) {
      Sent s;
      s.customer = "st-" + std::to_string(rng() % 3);
      s.region = regions[rng() % 3];
      s.time = base + static_cast<TimeUs>(rng() % (6 * 86400)) * core::kUsPerSecond;
      s.ms = core::divide_half_even(
          core::Decimal::from_int(static_cast<std::int64_t>(rng() % 4000)), 8);
      if (i > 0)
        events += ",";
      events += R"({"id":"s)" + std::to_string(batch * 1000 + i) + R"(","customer":")" +
                s.customer + R"(","type":"request","time":")" + core::format_rfc3339(s.time) +
                R"(","properties":{"region":")" + s.region + R"(","ms":)" +
                core::format_decimal(s.ms) + "}}";
      sent.push_back(s);
    }
    ingest(events);
  }

  struct Case {
    std::string meter, window, customer, region;
  };

  const Case cases[] = {{"latency", "hour", "", ""},
                        {"latency", "day", "st-1", ""},
                        {"latency", "hour", "", "eu"},
                        {"latency_max", "hour", "st-2", ""},
                        {"latency_max", "day", "", ""}};
  const TimeUs from = at("2024-03-01T03:00:00Z");
  const TimeUs to = at("2024-03-06T17:00:00Z");
  for (const Case& c : cases) {
    const std::string what = c.meter + "/" + c.window + "/" + c.customer + "/" + c.region;
    std::string target = "/v1/meters/" + c.meter + "/stats?window=" + c.window +
                         "&from=2024-03-01T03:00:00Z&to=2024-03-06T17:00:00Z&peaks=3";
    if (!c.customer.empty())
      target += "&customer=" + c.customer;
    if (!c.region.empty())
      target += "&filter%5Bregion%5D=" + c.region;
    auto r = admin("GET", target);
    ASSERT_EQ(r.status, 200) << what << ": " << r.body;
    Json j(r.body);

    // Brute force: the windows of the range and each one's value from the events sent.
    const TimeUs step = c.window == "hour" ? core::kUsPerHour : core::kUsPerDay;
    std::vector<TimeUs> starts;
    for (TimeUs t = from - from % step; t < to; t += step)
      starts.push_back(t);
    std::vector<std::optional<core::Decimal>> values(starts.size());
    for (std::size_t i = 0; i < starts.size(); ++i) {
      const TimeUs a = std::max(starts[i], from);
      const TimeUs b = std::min(starts[i] + step, to);
      for (const Sent& s : sent) {
        if (s.time < a || s.time >= b)
          continue;
        if (!c.customer.empty() && s.customer != c.customer)
          continue;
        if (!c.region.empty() && s.region != c.region)
          continue;
        if (c.meter == "latency") {
          values[i] = values[i].value_or(core::Decimal{}) + s.ms;
        } else if (!values[i] || s.ms > *values[i]) {
          values[i] = s.ms;
        }
      }
      if (c.meter == "latency" && !values[i])
        values[i] = core::Decimal{};  // zero-filled
    }
    std::vector<core::Decimal> sorted;
    core::Decimal sum;
    for (const auto& v : values) {
      if (v) {
        sorted.push_back(*v);
        sum += *v;
      }
    }
    std::sort(sorted.begin(), sorted.end());
    ASSERT_FALSE(sorted.empty()) << what;
    EXPECT_EQ(text(j["windows"]), std::to_string(starts.size())) << what;
    auto st = j["stats"];
    EXPECT_EQ(text(st["count"]), std::to_string(sorted.size())) << what;
    EXPECT_EQ(text(st["sum"]), json_number(core::format_decimal(sum))) << what;
    EXPECT_EQ(text(st["avg"]), json_number(core::format_decimal(core::divide_half_even(
                                   sum, static_cast<std::int64_t>(sorted.size())))))
        << what;
    EXPECT_EQ(text(st["min"]), json_number(core::format_decimal(sorted.front()))) << what;
    EXPECT_EQ(text(st["max"]), json_number(core::format_decimal(sorted.back()))) << what;
    EXPECT_EQ(text(st["median"]), json_number(nearest_rank(sorted, 50))) << what;
    EXPECT_EQ(text(st["p95"]), json_number(nearest_rank(sorted, 95))) << what;
    EXPECT_EQ(text(st["p99"]), json_number(nearest_rank(sorted, 99))) << what;

    auto wow = j["trends"]["window_over_window"].get_array().value();
    ASSERT_EQ(wow.size(), starts.size() - 1) << what;
    for (std::size_t i = 1; i < starts.size(); ++i) {
      auto p = wow.at(i - 1);
      EXPECT_EQ(at(str(p["window_start"])), starts[i]) << what;
      if (values[i] && values[i - 1]) {
        EXPECT_EQ(text(p["change"]), json_number(core::format_decimal(*values[i] - *values[i - 1])))
            << what << " " << i;
      } else {
        EXPECT_EQ(text(p["change"]), "null") << what;
      }
    }
    auto dod = j["trends"]["day_over_day"].get_array().value();
    EXPECT_EQ(dod.size(), 5u) << what;  // six days meet the range

    // Peaks: the three largest windows with events, earlier first among equals.
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < starts.size(); ++i) {
      bool any = false;
      for (const Sent& s : sent) {
        any = any ||
              (s.time >= std::max(starts[i], from) && s.time < std::min(starts[i] + step, to) &&
               (c.customer.empty() || s.customer == c.customer) &&
               (c.region.empty() || s.region == c.region));
      }
      if (any)
        order.push_back(i);
    }
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return *values[a] > *values[b]; });
    auto peaks = j["peaks"].get_array().value();
    ASSERT_EQ(peaks.size(), std::min<std::size_t>(3, order.size())) << what;
    for (std::size_t i = 0; i < peaks.size(); ++i) {
      EXPECT_EQ(at(str(peaks.at(i)["window_start"])), starts[order[i]]) << what;
      EXPECT_EQ(text(peaks.at(i)["value"]), json_number(core::format_decimal(*values[order[i]])))
          << what;
    }
  }
}

TEST_F(ReportsApiTest, StatsShapeScopingAndErrors) {
  customer(R"({"id":"st-err"})");
  customer(R"({"id":"st-err-other"})");
  ingest(
      R"({"id":"1","customer":"st-err","type":"request","time":"2022-05-02T10:00:00Z","properties":{"ms":10}},
            {"id":"2","customer":"st-err","type":"request","time":"2022-05-03T10:00:00Z","properties":{"ms":15}})");
  const std::string key = customer_key("st-err");
  // A customer key needs no customer parameter: it gets its own.
  auto r = as(
      key, "/v1/meters/latency/stats?window=day&from=2022-05-01T00:00:00Z&to=2022-05-04T00:00:00Z");
  ASSERT_EQ(r.status, 200) << r.body;
  Json j(r.body);
  EXPECT_EQ(j.str("customer"), "st-err");
  EXPECT_EQ(j.str("window"), "day");
  EXPECT_EQ(text(j["windows"]), "3");
  EXPECT_EQ(text(j["windows_with_data"]), "2");
  EXPECT_EQ(text(j["stats"]["count"]), "3");
  EXPECT_EQ(text(j["stats"]["median"]), "10");
  auto wow = j["trends"]["window_over_window"].get_array().value();
  ASSERT_EQ(wow.size(), 2u);
  EXPECT_EQ(text(wow.at(0)["change_percent"]), "null");  // from 0
  EXPECT_EQ(text(wow.at(1)["change"]), "5");
  EXPECT_EQ(text(wow.at(1)["change_percent"]), json_number("50.00"));
  EXPECT_EQ(text(j["peaks"].at(0)["value"]), "15");

  const std::string base = "/v1/meters/latency/stats?customer=st-err";
  expect_error(as(key, "/v1/meters/latency/stats?customer=st-err-other"), 403, "FORBIDDEN");
  expect_error(admin("GET", base + "&top=3"), 400, "VALIDATION_ERROR",
               "unknown query parameter 'top'");
  expect_error(admin("GET", base + "&window=year"), 400, "VALIDATION_ERROR");
  expect_error(admin("GET", base + "&to=2022-05-04T00:00:00Z"), 400, "VALIDATION_ERROR",
               "both 'from' and 'to'");
  expect_error(admin("GET", base + "&peaks=0"), 400, "VALIDATION_ERROR", "'peaks'");
  expect_error(admin("GET", base + "&peaks=101"), 400, "VALIDATION_ERROR", "'peaks'");
  expect_error(admin("GET", base + "&filter%5Bcolour%5D=red"), 400, "VALIDATION_ERROR",
               "not a group-by property");
  expect_error(
      admin("GET", base + "&window=hour&from=2020-01-01T00:00:00Z&to=2022-01-01T00:00:00Z"), 400,
      "VALIDATION_ERROR", "more than 10000 hour windows");
  expect_error(admin("GET", "/v1/meters/nope/stats"), 404, "NOT_FOUND", "meter 'nope'");
  expect_error(admin("GET", "/v1/meters/latency/stats?customer=nobody"), 404, "NOT_FOUND",
               "customer 'nobody'");
}

}  // namespace
}  // namespace tally::testing
