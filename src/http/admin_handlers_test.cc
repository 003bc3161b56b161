// The operator's routes of handlers/admin.cc driven through Api::handle on an in-memory engine
// with a fake clock: a customer's denials of the last hour, the live rates and p99s (two samples
// ten fake seconds apart), the audit log with the acting key, organizations rolled up, and their
// refusals.
#include <future>

#include <gtest/gtest.h>
#include <simdjson.h>

#include "core/time.h"
#include "http/api.h"

namespace tally::http {
namespace {

constexpr const char* kAdminKey = "admin-handlers-test-key-0123456789";

constexpr const char* kConfig = R"(
[enforcement]
default_plan = "basic"

[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"

[[plans]]
key = "basic"
limits = [{ meter = "calls", period = "day", amount = 2 }]

[[plans]]
key = "pro"
limits = [{ meter = "calls", period = "day", amount = 100 }]
)";

class AdminHandlersTest : public ::testing::Test {
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

  Response call(std::string method, std::string target, std::string body = {},
                std::string key = kAdminKey) {
    Request r;
    r.method = std::move(method);
    r.target = target;
    r.path = target.substr(0, target.find('?'));
    if (auto q = target.find('?'); q != std::string::npos) {
      std::string rest = target.substr(q + 1);
      while (!rest.empty()) {
        auto amp = rest.find('&');
        std::string kv = rest.substr(0, amp);
        auto eq = kv.find('=');
        r.query.emplace_back(kv.substr(0, eq), eq == std::string::npos ? "" : kv.substr(eq + 1));
        rest = amp == std::string::npos ? "" : rest.substr(amp + 1);
      }
    }
    r.headers = {{"x-api-key", std::move(key)}, {"content-type", "application/json"}};
    r.body = std::move(body);
    std::promise<Response> answered;
    auto f = answered.get_future();
    api_->handle(std::move(r), [&answered](Response resp) { answered.set_value(std::move(resp)); });
    return f.get();
  }

  simdjson::dom::element json(const Response& r) {
    auto doc = parser_.parse(r.body);
    EXPECT_FALSE(doc.error()) << r.body;
    return doc.value();
  }

  FakeClock clock_{*core::parse_rfc3339("2025-01-20T12:00:00Z")};
  std::unique_ptr<Engine> engine_;
  std::unique_ptr<Api> api_;
  simdjson::dom::parser parser_;
};

// A status the API does not know is refused where the text arrives (the engine takes a
// CustomerStatus), with the message the engine gave before, and nothing changes.
TEST_F(AdminHandlersTest, AnUnknownCustomerStatusIsRefusedAndChangesNothing) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme"})").status, 201u);
  const char* kRefusal =
      R"({"error":"VALIDATION_ERROR","message":"status must be 'active' or 'suspended'"})";
  for (const char* body :
       {R"({"status":"closed"})", R"({"status":"Suspended"})", R"({"status":""})"}) {
    const Response r = call("PATCH", "/v1/customers/acme", body);
    EXPECT_EQ(r.status, 400u) << body;
    EXPECT_EQ(r.body, kRefusal) << body;
  }
  const Response created = call("POST", "/v1/customers", R"({"id":"beta","status":"closed"})");
  EXPECT_EQ(created.status, 400u);
  EXPECT_EQ(created.body, kRefusal);
  EXPECT_EQ(call("GET", "/v1/customers/beta").status, 404u);
  EXPECT_EQ(
      std::string_view(json(call("GET", "/v1/customers/acme"))["status"].get_string().value()),
      "active");
  ASSERT_EQ(call("PATCH", "/v1/customers/acme", R"({"status":"suspended"})").status, 200u);
  EXPECT_EQ(
      std::string_view(json(call("GET", "/v1/customers/acme"))["status"].get_string().value()),
      "suspended");
}

// The engine takes closed sets as enum values (a LedgerType, an AlertLevel, a Window, ...): a
// text outside its set is refused where it arrives, with the body the engine's refusal had
// before, and nothing changes.
TEST_F(AdminHandlersTest, UnknownClosedSetTextsAreRefusedWithTheirFormerBodies) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme"})").status, 201u);
  auto refusal = [](const std::string& message) {
    return R"({"error":"VALIDATION_ERROR","message":")" + message + R"("})";
  };
  const std::string kTypeRefusal =
      refusal("type must be one of grant, top_up, refund, adjustment (burns come from events)");
  for (const char* body : {R"({"type":"gift","amount":1})", R"({"type":"Top_up","amount":1})",
                           R"({"type":"burn","amount":1})", R"({"type":"expiry","amount":1})"}) {
    const Response r = call("POST", "/v1/customers/acme/wallet/transactions", body);
    EXPECT_EQ(r.status, 400u) << body;
    EXPECT_EQ(r.body, kTypeRefusal) << body;
  }
  const Response empty =
      call("POST", "/v1/customers/acme/wallet/transactions", R"({"type":"","amount":1})");
  EXPECT_EQ(empty.body, refusal("'type' and 'amount' are required"));
  EXPECT_EQ(json(call("GET", "/v1/customers/acme/wallet"))["transactions"].get_uint64().value(),
            0u);
  ASSERT_EQ(
      call("POST", "/v1/customers/acme/wallet/transactions", R"({"type":"top_up","amount":2})")
          .status,
      201u);

  const Response gift = call("GET", "/v1/customers/acme/wallet/transactions?type=gift");
  EXPECT_EQ(gift.status, 400u);
  EXPECT_EQ(gift.body, refusal("type 'gift' is not a transaction type"));
  EXPECT_EQ(json(call("GET", "/v1/customers/acme/wallet/transactions?type=top_up"))["transactions"]
                .get_array()
                .size(),
            1u);
  EXPECT_EQ(json(call("GET", "/v1/customers/acme/wallet/transactions?type=burn"))["transactions"]
                .get_array()
                .size(),
            0u);
  EXPECT_EQ(json(call("GET", "/v1/customers/acme/wallet/transactions?type="))["transactions"]
                .get_array()
                .size(),
            1u)
      << "an empty type is every type, as before";

  const Response loud = call("GET", "/v1/alerts?level=loud");
  EXPECT_EQ(loud.status, 400u);
  EXPECT_EQ(loud.body, refusal("level must be info, warning, critical or exceeded"));
  const Response maybe = call("GET", "/v1/alerts?status=maybe");
  EXPECT_EQ(maybe.status, 400u);
  EXPECT_EQ(maybe.body, refusal("status must be pending, sent, failed or none"));
  EXPECT_EQ(call("GET", "/v1/alerts?level=&status=").status, 200u);

  const std::string kWindowRefusal =
      refusal(R"(unknown window \"fortnight\"; expected minute, hour, day, week or month)");
  for (const char* target : {"/v1/meters/calls/query?window=fortnight&from=2025-01-20T00:00:00Z",
                             "/v1/customers/acme/usage/history?meter=calls&window=fortnight",
                             "/v1/meters/calls/stats?window=fortnight"}) {
    const Response r = call("GET", target);
    EXPECT_EQ(r.status, 400u) << target;
    EXPECT_EQ(r.body, kWindowRefusal) << target;
  }
  EXPECT_EQ(call("GET", "/v1/customers/acme/usage/history?meter=calls&window=").body,
            refusal(R"(unknown window \"\"; expected minute, hour, day, week or month)"));
  const Response total = call("GET", "/v1/meters/calls/query?window=&from=2025-01-20T00:00:00Z");
  ASSERT_EQ(total.status, 200u) << total.body;
  EXPECT_TRUE(json(total)["window"].is_null()) << "an empty window is one total row, as before";
  const Response days = call("GET", "/v1/meters/calls/query?window=day&from=2025-01-20T00:00:00Z");
  ASSERT_EQ(days.status, 200u) << days.body;
  EXPECT_EQ(std::string_view(json(days)["window"].get_string().value()), "day");
}

// A meter query's measure is a Measure in the engine: a text outside the set is refused where it
// arrives with the body the engine's refusal had before (after an unknown meter's 404, as
// before), and "" is units.
TEST_F(AdminHandlersTest, AnUnknownMeasureIsRefusedWithItsFormerBody) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme"})").status, 201u);
  auto refusal = [](const std::string& message) {
    return R"({"error":"VALIDATION_ERROR","message":")" + message + R"("})";
  };
  auto text = [this](const Response& r, const char* field) {
    return std::string(json(r)[field].get_string().value());
  };

  const std::string kQuery = "/v1/meters/calls/query?from=2025-01-20T00:00:00Z&measure=";
  for (const char* measure : {"euros", "Units", "unit"}) {
    const Response r = call("GET", kQuery + measure);
    EXPECT_EQ(r.status, 400u) << measure;
    EXPECT_EQ(r.body, refusal("measure must be units, cost or credits")) << measure;
  }
  const Response cost = call("GET", kQuery + "cost");
  EXPECT_EQ(cost.status, 400u);
  EXPECT_EQ(cost.body, refusal("meter 'calls' has no price, so no cost"));
  for (const char* measure : {"", "units"}) {
    const Response r = call("GET", kQuery + measure);
    ASSERT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(text(r, "measure"), "units") << "measure '" << measure << "'";
  }
  EXPECT_EQ(call("GET", "/v1/meters/ghost/query?measure=euros").body,
            R"({"error":"NOT_FOUND","message":"meter 'ghost' does not exist"})")
      << "an unknown meter is refused first, as before";
}

// The customer list's sort is a CustomerSort in the engine: a text outside the set, "" included,
// is refused where it arrives with the body the engine's refusal had before, after the refusals
// that came before it.
TEST_F(AdminHandlersTest, AnUnknownCustomerSortIsRefusedWithItsFormerBody) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme"})").status, 201u);
  auto refusal = [](const std::string& message) {
    return R"({"error":"VALIDATION_ERROR","message":")" + message + R"("})";
  };
  auto text = [this](const Response& r, const char* field) {
    return std::string(json(r)[field].get_string().value());
  };

  const std::string kSortRefusal = refusal("sort must be id, name, plan, status or usage");
  for (const char* sort : {"size", "", "Name", "id "}) {
    const Response r = call("GET", std::string("/v1/admin/customers?sort=") + sort);
    EXPECT_EQ(r.status, 400u) << sort;
    EXPECT_EQ(r.body, kSortRefusal) << "sort '" << sort << "'";
  }
  EXPECT_EQ(call("GET", "/v1/admin/customers?sort=size&order=up").body,
            refusal("order must be asc or desc"));
  EXPECT_EQ(call("GET", "/v1/admin/customers?sort=size&limit=0").body,
            refusal("query parameter 'limit' must be an integer 1..1000"));
  for (const char* sort : {"id", "name", "plan", "status", "usage"}) {
    const Response r = call("GET", std::string("/v1/admin/customers?order=desc&sort=") + sort);
    ASSERT_EQ(r.status, 200u) << r.body;
    EXPECT_EQ(text(r, "sort"), sort);
  }
  EXPECT_EQ(text(call("GET", "/v1/admin/customers"), "sort"), "id");
}

// The top customers' period is a Window in the engine: a text outside the set is refused where
// it arrives with the body the engine's refusal had before; none given is the month, a range
// none.
TEST_F(AdminHandlersTest, AnUnknownTopPeriodIsRefusedWithItsFormerBody) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme"})").status, 201u);
  auto refusal = [](const std::string& message) {
    return R"({"error":"VALIDATION_ERROR","message":")" + message + R"("})";
  };
  auto text = [this](const Response& r, const char* field) {
    return std::string(json(r)[field].get_string().value());
  };

  const std::string kPeriodRefusal = refusal("period must be minute, hour, day, week or month");
  for (const char* period : {"year", "Month", "billing_period"}) {
    const Response r = call("GET", std::string("/v1/admin/usage/top?meter=calls&period=") + period);
    EXPECT_EQ(r.status, 400u) << period;
    EXPECT_EQ(r.body, kPeriodRefusal) << period;
  }
  EXPECT_EQ(text(call("GET", "/v1/admin/usage/top?meter=calls&period=week"), "period"), "week");
  EXPECT_EQ(text(call("GET", "/v1/admin/usage/top?meter=calls&period="), "period"), "month");
  EXPECT_EQ(text(call("GET", "/v1/admin/usage/top?meter=calls"), "period"), "month");
  const Response range = call("GET",
                              "/v1/admin/usage/top?meter=calls&from=2025-01-01T00:00:00Z&to="
                              "2025-01-20T00:00:00Z");
  ASSERT_EQ(range.status, 200u) << range.body;
  EXPECT_TRUE(json(range)["period"].is_null());
  EXPECT_EQ(text(range, "aggregation"), "count");
}

// A limit override's period is a LimitPeriod in the engine: a text outside the set is refused
// where the override is read, with the message the engine gave before, and nothing changes.
TEST_F(AdminHandlersTest, AnUnknownOverridePeriodIsRefusedWithItsFormerBody) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme"})").status, 201u);
  auto refusal = [](const std::string& message) {
    return R"({"error":"VALIDATION_ERROR","message":")" + message + R"("})";
  };

  const std::string kOverrides = "/v1/customers/acme/overrides";
  for (const char* period : {"fortnight", "Day", "billing-period"}) {
    const Response r = call("PUT", kOverrides,
                            std::string(R"({"overrides":[{"meter":"calls","period":")") + period +
                                R"(","amount":5}]})");
    EXPECT_EQ(r.status, 400u) << period;
    EXPECT_EQ(r.body, refusal(std::string("overrides[0]: unknown period '") + period +
                              "' (expected second, minute, hour, day, week, month, "
                              "billing_period, trial or lifetime)"))
        << period;
  }
  EXPECT_EQ(
      call("PUT", kOverrides, R"({"overrides":[{"meter":"calls","period":"","amount":5}]})").body,
      refusal("overrides[0] needs 'meter', 'period' and 'amount'"));
  EXPECT_EQ(json(call("GET", "/v1/customers/acme"))["overrides"].get_array().size(), 0u)
      << "a refused override changes nothing";
  const Response set =
      call("PUT", kOverrides,
           R"({"overrides":[{"meter":"calls","period":"billing_period","amount":5}]})");
  ASSERT_EQ(set.status, 200u) << set.body;
  EXPECT_EQ(std::string_view(json(set)["overrides"].at(0)["period"].get_string().value()),
            "billing_period");
  const Response limits = call("GET", "/v1/customers/acme/limits");
  ASSERT_EQ(limits.status, 200u) << limits.body;
  EXPECT_NE(limits.body.find(R"("period":"billing_period","rule":"calls per billing_period")"),
            std::string::npos)
      << limits.body;
}

TEST_F(AdminHandlersTest, DenialsOfTheLastHour) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme"})").status, 201u);
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"other"})").status, 201u);
  auto none = call("GET", "/v1/customers/acme/denials");
  ASSERT_EQ(none.status, 200u) << none.body;
  EXPECT_EQ(json(none)["denied_last_hour"].get_uint64().value(), 0u);

  int denied = 0;
  for (int i = 0; i < 5; ++i) {
    auto r = call("POST", "/v1/check", R"({"customer":"acme","meter":"calls"})");
    ASSERT_TRUE(r.status == 200u || r.status == 429u) << r.body;
    denied += r.body.find(R"("allowed":false)") != std::string::npos ? 1 : 0;
  }
  ASSERT_EQ(denied, 3);
  clock_.advance_us(2 * core::kUsPerMinute);
  auto r = call("GET", "/v1/customers/acme/denials");
  ASSERT_EQ(r.status, 200u) << r.body;
  auto d = json(r);
  EXPECT_EQ(d["customer"].get_string().value(), "acme");
  EXPECT_EQ(d["denied_last_hour"].get_uint64().value(), 3u);
  EXPECT_EQ(d["to"].get_string().value(), "2025-01-20T12:03:00Z");
  EXPECT_EQ(d["from"].get_string().value(), "2025-01-20T11:03:00Z");
  auto minutes = d["per_minute"].get_array().value();
  ASSERT_EQ(minutes.size(), 60u);
  EXPECT_EQ(minutes.at(57).get_uint64().value(), 3u);  // 12:00, two minutes ago
  EXPECT_EQ(minutes.at(59).get_uint64().value(), 0u);

  // A customer key reads its own, not another's; unknown customers and parameters are refused.
  auto key = call("POST", "/v1/keys", R"({"customer":"other"})");
  ASSERT_EQ(key.status, 201u) << key.body;
  const std::string secret(json(key)["key"].get_string().value());
  auto own = call("GET", "/v1/customers/other/denials", {}, secret);
  EXPECT_EQ(own.status, 200u) << own.body;
  EXPECT_EQ(call("GET", "/v1/customers/acme/denials", {}, secret).status, 403u);
  auto ghost = call("GET", "/v1/customers/ghost/denials");
  EXPECT_EQ(ghost.status, 404u);
  EXPECT_NE(ghost.body.find(R"("error":"NOT_FOUND")"), std::string::npos) << ghost.body;
  auto bad = call("GET", "/v1/customers/acme/denials?x=1");
  EXPECT_EQ(bad.status, 400u);
  EXPECT_NE(bad.body.find("unknown query parameter 'x'"), std::string::npos) << bad.body;
}

TEST_F(AdminHandlersTest, LiveRatesAndP99sFromTheServersCounters) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme","plan":"pro"})").status, 201u);
  auto first = call("GET", "/v1/admin/live");
  ASSERT_EQ(first.status, 200u) << first.body;
  auto f = json(first);
  EXPECT_TRUE(f["window_seconds"].is_null()) << first.body;
  EXPECT_TRUE(f["ingest"]["events_per_second"].is_null());
  EXPECT_TRUE(f["check"]["p99_ms"].is_null());

  // 30 events in 3 requests and 5 checks, then ten seconds.
  for (int b = 0; b < 3; ++b) {
    std::string body = "[";
    for (int i = 0; i < 10; ++i) {
      body += std::string(i ? "," : "") + R"({"id":"e)" + std::to_string(b * 10 + i) +
              R"(","customer":"acme","type":"api_call","time":"2025-01-20T11:00:00Z"})";
    }
    body += "]";
    auto r = call("POST", "/v1/events", body);
    ASSERT_EQ(r.status, 202u) << r.body;
  }
  for (int i = 0; i < 5; ++i) {
    ASSERT_EQ(
        call("POST", "/v1/check", R"({"customer":"acme","meter":"calls","consume":false})").status,
        200u);
  }
  clock_.advance_us(10 * core::kUsPerSecond);
  auto second = call("GET", "/v1/admin/live");
  ASSERT_EQ(second.status, 200u) << second.body;
  auto s = json(second);
  EXPECT_EQ(s["window_seconds"].get_double().value(), 10.0) << second.body;
  EXPECT_EQ(s["from"].get_string().value(), "2025-01-20T12:00:00Z");
  EXPECT_EQ(s["at"].get_string().value(), "2025-01-20T12:00:10Z");
  EXPECT_EQ(s["ingest"]["events_per_second"].get_double().value(), 3.0);
  EXPECT_EQ(s["ingest"]["requests_per_second"].get_double().value(), 0.3);
  EXPECT_EQ(s["ingest"]["observations"].get_uint64().value(), 3u);
  EXPECT_GT(s["ingest"]["p99_ms"].get_double().value(), 0.0);
  EXPECT_EQ(s["ingest"]["events_accepted_total"].get_uint64().value(), 30u);
  EXPECT_EQ(s["check"]["requests_per_second"].get_double().value(), 0.5);
  EXPECT_EQ(s["check"]["observations"].get_uint64().value(), 5u);
  EXPECT_GT(s["check"]["p99_ms"].get_double().value(), 0.0);
  // The p99 is the bound of a bucket of the check histogram that /metrics shows.
  const double p99_seconds = s["check"]["p99_ms"].get_double().value() / 1000;
  bool bucket = false;
  for (auto b : api_->request_metrics().latency(LatencyKind::kCheck).bounds_ns) {
    bucket = bucket || static_cast<double>(b) / 1e9 == p99_seconds;
  }
  EXPECT_TRUE(bucket) << p99_seconds;

  // Ten quiet seconds later the window holds nothing new: rates 0, no p99.
  clock_.advance_us(10 * core::kUsPerSecond);
  auto quiet = json(call("GET", "/v1/admin/live"));
  EXPECT_EQ(quiet["ingest"]["events_per_second"].get_double().value(), 0.0);
  EXPECT_TRUE(quiet["check"]["p99_ms"].is_null());
  EXPECT_EQ(quiet["check"]["requests_total"].get_uint64().value(), 5u);

  // Only admins; no parameters.
  auto key = call("POST", "/v1/keys", R"({"customer":"acme"})");
  const std::string secret(json(key)["key"].get_string().value());
  EXPECT_EQ(call("GET", "/v1/admin/live", {}, secret).status, 403u);
  EXPECT_EQ(call("GET", "/v1/admin/live?window=5").status, 400u);
}

TEST(P99Test, FirstBucketHoldingNinetyNinePercent) {
  common::LatencyHistogram::Snapshot before{{1000, 2000, 4000}, {0, 0, 0, 0}, 0};
  common::LatencyHistogram::Snapshot now{{1000, 2000, 4000}, {98, 99, 100, 100}, 0};
  EXPECT_EQ(p99_between(now, before).le_ns, 2000u);
  now.cumulative = {99, 100, 100, 100};
  EXPECT_EQ(p99_between(now, before).le_ns, 1000u);
  now.cumulative = {0, 0, 0, 7};
  P99 over = p99_between(now, before);
  EXPECT_TRUE(over.beyond_last_bound);
  EXPECT_EQ(over.le_ns, 4000u);
  EXPECT_EQ(p99_between(before, before).observations, 0u);
}

TEST_F(AdminHandlersTest, AuditLogNamesTheActingKey) {
  // One action a second (records of one microsecond are ordered by how they were written, and
  // the reset's record, written by check.cc, has a key of its own shape: see audit.h).
  auto next = [this] {
    clock_.advance_us(core::kUsPerSecond);
  };
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme"})").status, 201u);
  ASSERT_EQ(call("PATCH", "/v1/customers/acme", R"({"plan":"pro"})").status, 200u);
  next();
  ASSERT_EQ(call("PATCH", "/v1/customers/acme", R"({"status":"suspended"})").status, 200u);
  next();
  ASSERT_EQ(
      call("POST", "/v1/customers/acme/wallet/transactions", R"({"type":"grant","amount":"10"})")
          .status,
      201u);
  next();
  auto key = call("POST", "/v1/keys", R"({"customer":"acme","name":"k"})");
  ASSERT_EQ(key.status, 201u);
  const std::string key_id(json(key)["id"].get_string().value());
  next();
  ASSERT_EQ(call("DELETE", "/v1/keys/" + key_id).status, 200u);
  next();
  ASSERT_EQ(call("POST", "/v1/customers/acme/reset", R"({"meter":"calls"})").status, 200u);
  next();
  // Refused: no record.
  EXPECT_EQ(call("PATCH", "/v1/customers/acme", R"({"plan":"gold"})").status, 400u);

  auto r = call("GET", "/v1/admin/audit?limit=10");
  ASSERT_EQ(r.status, 200u) << r.body;
  auto entries = json(r)["entries"].get_array().value();
  ASSERT_EQ(entries.size(), 6u) << r.body;
  // Newest first, each at its own second.
  const std::string_view actions[] = {
      "reset", "key_revoke", "key_create", "wallet_transaction", "status_change", "plan_change"};
  std::size_t i = 0;
  for (auto e : entries) {
    EXPECT_EQ(e["action"].get_string().value(), actions[i]) << r.body;
    EXPECT_EQ(e["actor"].get_string().value(), std::string_view("admin-env")) << r.body;
    EXPECT_EQ(e["customer"].get_string().value(), std::string_view("acme"));
    EXPECT_EQ(e["at"].get_string().value(), "2025-01-20T12:00:0" + std::to_string(5 - i) + "Z");
    ++i;
  }
  EXPECT_EQ(entries.at(1)["key"].get_string().value(), key_id);
  EXPECT_EQ(entries.at(5)["to"].get_string().value(), std::string_view("pro"));
  EXPECT_TRUE(entries.at(5)["from"].is_null());
  auto two = json(call("GET", "/v1/admin/audit?limit=2"))["entries"].get_array().value();
  EXPECT_EQ(two.size(), 2u);
  EXPECT_EQ(call("GET", "/v1/admin/audit?limit=0").status, 400u);
  EXPECT_EQ(call("GET", "/v1/admin/audit?limit=1001").status, 400u);
  EXPECT_EQ(call("GET", "/v1/admin/audit?customer=acme").status, 400u);
}

TEST_F(AdminHandlersTest, OrganizationsRolledUp) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"a1","organization":"org-a"})").status, 201u);
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"a2","organization":"org-a"})").status, 201u);
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"solo"})").status, 201u);
  ASSERT_EQ(call("POST", "/v1/check", R"({"customer":"a2","meter":"calls"})").status, 200u);
  engine_->flush();
  auto r = call("GET", "/v1/admin/organizations");
  ASSERT_EQ(r.status, 200u) << r.body;
  auto o = json(r);
  EXPECT_EQ(o["total"].get_uint64().value(), 1u);
  auto org = o["organizations"].at(0);
  EXPECT_EQ(org["organization"].get_string().value(), "org-a");
  EXPECT_EQ(org["customers"].get_uint64().value(), 2u);
  EXPECT_EQ(org["max_limit_percent"].get_double().value(), 50.0) << r.body;
  EXPECT_EQ(org["max_limit_customer"].get_string().value(), "a2");
  EXPECT_EQ(org["meters"].at(0)["value"].get_double().value(), 1.0) << r.body;
  EXPECT_EQ(call("GET", "/v1/admin/organizations?limit=101").status, 400u);
  EXPECT_EQ(call("GET", "/v1/admin/organizations?offset=x").status, 400u);
  EXPECT_EQ(call("GET", "/v1/admin/organizations?sort=id").status, 400u);
}

// Every field of a customer and of a new key is refused with a message that names it, the first
// field at fault decides, and a refusal changes nothing.
TEST_F(AdminHandlersTest, CustomerAndKeyFieldRefusalsNameTheFieldAndChangeNothing) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme","name":"Acme"})").status, 201u);
  const std::string before = call("GET", "/v1/customers/acme").body;
  auto refusal = [](const std::string& message) {
    return R"({"error":"VALIDATION_ERROR","message":")" + message + R"("})";
  };
  const std::pair<const char*, std::string> customer_refusals[] = {
      {R"({"name":1})", "'name' must be a string"},
      {R"({"email":[]})", "'email' must be a string"},
      {R"({"timezone":null})", "'timezone' must be a string"},
      {R"({"status":5})", "'status' must be a string"},
      {R"({"plan":3})", "'plan' must be a string"},
      {R"({"organization":1})", "'organization' must be a string"},
      {R"({"organization":""})", "'organization' must not be empty; send null to remove it"},
      {R"({"billing_anchor":1})", "'billing_anchor' must be a string"},
      {R"({"metadata":[1]})", "'metadata' must be an object"},
      {R"({"id":"other"})", "unknown field 'id'"},
      {R"({"colour":"red"})", "unknown field 'colour'"},
      {R"({"name":"Renamed","email":1})", "'email' must be a string"},
  };
  for (const auto& [body, message] : customer_refusals) {
    const Response r = call("PATCH", "/v1/customers/acme", body);
    EXPECT_EQ(r.status, 400u) << body;
    EXPECT_EQ(r.body, refusal(message)) << body;
  }
  for (const char* body : {R"({"trial_started_at":"soon"})", R"({"billing_anchor":"2025-13"})"}) {
    const Response r = call("PATCH", "/v1/customers/acme", body);
    EXPECT_EQ(r.status, 400u) << body;
    const std::string field = std::string(body).substr(2, std::string(body).find('"', 2) - 2);
    EXPECT_EQ(r.body.rfind(R"({"error":"VALIDATION_ERROR","message":"')" + field + "': ", 0), 0u)
        << r.body;
  }
  EXPECT_EQ(call("POST", "/v1/customers", R"({"id":7})").body, refusal("'id' must be a string"));
  EXPECT_EQ(call("GET", "/v1/customers/acme").body, before);
  // null removes a plan and an organization.
  const Response removed =
      call("PATCH", "/v1/customers/acme", R"({"plan":null,"organization":null})");
  EXPECT_EQ(removed.status, 200u) << removed.body;

  const std::string keys_before = call("GET", "/v1/keys").body;
  const std::pair<const char*, std::string> key_refusals[] = {
      {R"({"customer":1})", "'customer' must be a string"},
      {R"({"name":false})", "'name' must be a string"},
      {R"({"scopes":"read"})", "'scopes' must be an array of strings"},
      {R"({"scopes":[]})",
       "'scopes' must name at least one of ingest, check, read; leave it out for the default"},
      {R"({"scopes":["read",1]})", "'scopes' must be an array of strings"},
      {R"({"scopes":["write"]})", "unknown scope 'write'; scopes are ingest, check, read"},
      {R"({"customer":"acme","colour":1})", "unknown field 'colour'"},
  };
  for (const auto& [body, message] : key_refusals) {
    const Response r = call("POST", "/v1/keys", body);
    EXPECT_EQ(r.status, 400u) << body;
    EXPECT_EQ(r.body, refusal(message)) << body;
  }
  EXPECT_EQ(call("GET", "/v1/keys").body, keys_before);
  // A null customer is an admin key; scopes are combined.
  const Response admin_key = call("POST", "/v1/keys", R"({"customer":null,"name":"ops"})");
  ASSERT_EQ(admin_key.status, 201u) << admin_key.body;
  EXPECT_TRUE(json(admin_key)["customer"].is_null());
  EXPECT_EQ(std::string_view(json(admin_key)["name"].get_string().value()), "ops");
  const Response scoped =
      call("POST", "/v1/keys", R"({"customer":"acme","scopes":["read","check"]})");
  ASSERT_EQ(scoped.status, 201u) << scoped.body;
  EXPECT_EQ(simdjson::minify(json(scoped)["scopes"]), R"(["check","read"])");
}

// Every field of a wallet transaction is refused with a message that names it, and a refusal
// writes nothing to the ledger.
TEST_F(AdminHandlersTest, WalletTransactionFieldRefusalsWriteNothing) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme"})").status, 201u);
  auto refusal = [](const std::string& message) {
    return R"({"error":"VALIDATION_ERROR","message":")" + message + R"("})";
  };
  const std::string mistyped = "'; allowed: type, amount, description, priority, expires_at";
  const std::pair<const char*, std::string> refusals[] = {
      {R"({"type":"top_up","amount":1,"priority":-1})", "priority must be 0..1000000"},
      {R"({"type":"top_up","amount":1,"priority":1000001})", "priority must be 0..1000000"},
      {R"({"type":"top_up","amount":1,"priority":"high"})",
       "unknown or mistyped field 'priority" + mistyped},
      {R"({"type":"top_up","amount":true})", "unknown or mistyped field 'amount" + mistyped},
      {R"({"type":7,"amount":1})", "unknown or mistyped field 'type" + mistyped},
      {R"({"type":"top_up","amount":1,"description":1})",
       "unknown or mistyped field 'description" + mistyped},
      {R"({"type":"top_up","amount":1,"expires_at":5})",
       "unknown or mistyped field 'expires_at" + mistyped},
      {R"({"type":"top_up","amount":1,"colour":"red"})",
       "unknown or mistyped field 'colour" + mistyped},
      {R"({"amount":1})", "'type' and 'amount' are required"},
      {R"({"type":"top_up"})", "'type' and 'amount' are required"},
  };
  for (const auto& [body, message] : refusals) {
    const Response r = call("POST", "/v1/customers/acme/wallet/transactions", body);
    EXPECT_EQ(r.status, 400u) << body;
    EXPECT_EQ(r.body, refusal(message)) << body;
  }
  const Response late = call("POST", "/v1/customers/acme/wallet/transactions",
                             R"({"type":"grant","amount":1,"expires_at":"never"})");
  EXPECT_EQ(late.status, 400u);
  EXPECT_EQ(late.body.rfind(R"({"error":"VALIDATION_ERROR","message":"expires_at: )", 0), 0u)
      << late.body;
  const Response shape = call("POST", "/v1/customers/acme/wallet/transactions", "[1]");
  EXPECT_EQ(shape.status, 400u);
  EXPECT_NE(shape.body.find(R"(such as {\"type\": \"top_up\", \"amount\": 1000})"),
            std::string::npos)
      << shape.body;
  EXPECT_EQ(json(call("GET", "/v1/customers/acme/wallet"))["transactions"].get_uint64().value(),
            0u);
  // An amount as a number or as text, a description, a priority and an expiry (or none).
  for (const char* body : {R"({"type":"top_up","amount":2,"description":"paid"})",
                           R"({"type":"grant","amount":"1.5","priority":3,"expires_at":null})",
                           R"({"type":"grant","amount":1,"expires_at":"2025-03-01T00:00:00Z"})"}) {
    const Response r = call("POST", "/v1/customers/acme/wallet/transactions", body);
    EXPECT_EQ(r.status, 201u) << body << ": " << r.body;
  }
  EXPECT_EQ(simdjson::minify(json(call("GET", "/v1/customers/acme/wallet"))["balance"]), "4.5");
}

// The customers and organizations lists read their offsets alike: any 32-bit value, echoed, and
// the same refusal for anything else.
TEST_F(AdminHandlersTest, ListOffsetsAreReadAlike) {
  for (const char* id : {"a1", "a2", "a3"}) {
    ASSERT_EQ(call("POST", "/v1/customers", std::string(R"({"id":")") + id + R"("})").status, 201u);
  }
  const Response page = call("GET", "/v1/admin/customers?limit=1&offset=1");
  ASSERT_EQ(page.status, 200u) << page.body;
  EXPECT_EQ(json(page)["offset"].get_uint64().value(), 1u);
  EXPECT_EQ(json(page)["limit"].get_uint64().value(), 1u);
  EXPECT_EQ(json(page)["total"].get_uint64().value(), 3u);
  EXPECT_EQ(json(page)["customers"].get_array().size(), 1u);
  for (const char* route : {"/v1/admin/customers", "/v1/admin/organizations"}) {
    EXPECT_EQ(call("GET", std::string(route) + "?offset=4294967295").status, 200u) << route;
    for (const char* offset : {"x", "-1", "4294967296", "1.5", ""}) {
      const Response r = call("GET", std::string(route) + "?offset=" + offset);
      EXPECT_EQ(r.status, 400u) << route << " " << offset;
      EXPECT_EQ(r.body,
                R"({"error":"VALIDATION_ERROR","message":"query parameter 'offset' must be an )"
                R"(integer 0..4294967295"})")
          << route << " " << offset;
    }
  }
}

// Each refusal of PUT /v1/customers/{id}/overrides names the element at fault, and changes
// nothing.
TEST_F(AdminHandlersTest, AnOverrideBodyIsRefusedNamingTheElementAtFault) {
  ASSERT_EQ(call("POST", "/v1/customers", R"({"id":"acme"})").status, 201u);
  auto refusal = [](const std::string& message) {
    return R"({"error":"VALIDATION_ERROR","message":")" + message + R"("})";
  };
  const std::string kOverrides = "/v1/customers/acme/overrides";
  const std::string kGood = R"({"meter":"calls","period":"day","amount":5})";
  EXPECT_EQ(call("PUT", kOverrides, R"({"limits":[]})").body,
            refusal(R"(the body must be {\"overrides\": [ ... ]})"));
  EXPECT_EQ(call("PUT", kOverrides, "[" + kGood + ", 7]").body,
            refusal("overrides[1] must be an object"));
  EXPECT_EQ(call("PUT", kOverrides,
                 "[" + kGood + R"(, {"meter":"calls","period":"day","amount":5,"soft":true}])")
                .body,
            refusal("overrides[1]: unknown or mistyped field 'soft'"));
  EXPECT_EQ(
      call("PUT", kOverrides, R"([{"meter":"calls","period":"day","amount":5,"days":"x"}])").body,
      refusal("overrides[0]: unknown or mistyped field 'days'"));
  EXPECT_EQ(json(call("GET", "/v1/customers/acme"))["overrides"].get_array().size(), 0u)
      << "a refused body changes nothing";
  const Response bare = call("PUT", kOverrides, "[" + kGood + "]");
  ASSERT_EQ(bare.status, 200u) << bare.body;
  EXPECT_EQ(json(bare)["overrides"].get_array().size(), 1u);
}

}  // namespace
}  // namespace tally::http
