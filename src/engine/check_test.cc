// Engine tests of checks (check.cc): plans and limits enforced in memory, on the in-memory store
// and on RocksDB in a temp dir. Exactly N allowed under 32 threads (also across a restart),
// unlimited and soft limits, features, suspension, plan changes, overrides, resets, reservations,
// idempotent event ids, all-or-nothing batches, ingest counting against limits, gauges, the trial
// window, and `verify` after checks. Time comes from a fake clock.
#include <atomic>
#include <filesystem>
#include <limits>
#include <thread>

#include <gtest/gtest.h>

#include <tally/engine.h>

#include "core/decimal.h"
#include "core/time.h"
#include "engine/engine_impl.h"

namespace tally {
namespace {

constexpr const char* kConfig = R"(
[enforcement]
default_plan = "basic"
reservation_ttl = "60s"

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]

[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"

[[meters]]
key = "patients"
event_type = "patients_gauge"
aggregation = "latest"
value = "$.count"

[[meters]]
key = "users"
event_type = "api_call"
aggregation = "unique_count"
value = "$.user"

[[plans]]
key = "basic"
features = ["chat"]
limits = [
  { meter = "api_calls", period = "day", amount = 1000 },
  { meter = "tokens", period = "month", amount = 5000 },
  { meter = "patients", period = "lifetime", amount = 500 },
]

[[plans]]
key = "pro"
features = ["chat", "tts"]
limits = [
  { meter = "api_calls", period = "day", amount = 2000 },
  { meter = "tokens", period = "month", amount = "unlimited" },
]

[[plans]]
key = "unlimited"
features = ["chat"]
limits = [{ meter = "api_calls", period = "month", amount = -1 }]

[[plans]]
key = "soft"
limits = [{ meter = "api_calls", period = "day", amount = 5, hard = false }]

[[plans]]
key = "rated"
limits = [
  { meter = "api_calls", period = "minute", amount = 10 },
  { meter = "api_calls", period = "day", amount = 100 },
  { meter = "tokens", period = "second", amount = 100 },
]

[[plans]]
key = "trial"
limits = [
  { meter = "api_calls", period = "trial", days = 7, amount = 700 },
  { meter = "api_calls", period = "day", amount = 100 },
]

[[plans]]
key = "billing"
limits = [{ meter = "api_calls", period = "billing_period", amount = 3 }]

[[plans]]
key = "none"
)";

TimeUs at(const char* rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

CheckRequest req(const std::string& customer, const std::string& meter,
                 const std::string& amount = "1", Consume consume = Consume::kYes) {
  CheckRequest r;
  r.customer = customer;
  r.meter = meter;
  r.amount = amount;
  r.consume = consume;
  return r;
}

class CheckTest : public ::testing::Test {
 protected:
  std::unique_ptr<Engine> open_memory(const std::string& config = kConfig) {
    EngineOptions o;
    o.in_memory = true;
    o.config_toml = config;
    o.clock = &clock_;
    auto e = Engine::open(o);
    EXPECT_TRUE(e.has_value()) << e.error().message();
    return e ? std::move(*e) : nullptr;
  }

  static void add_customer(Engine& e, const std::string& id, const std::string& plan = "",
                           const std::string& tz = "UTC", TimeUs trial_start = 0,
                           TimeUs anchor = 0) {
    Customer c;
    c.id = id;
    c.plan = plan;
    c.timezone = tz;
    c.trial_started_at_us = trial_start;
    c.billing_anchor_us = anchor;
    auto r = e.create_customer(c);
    ASSERT_TRUE(r.has_value()) << r.error().message();
  }

  static CheckResult check(Engine& e, const CheckRequest& r) {
    auto out = e.check(r);
    EXPECT_TRUE(out.has_value()) << out.error().message();
    return out ? *out : CheckResult{};
  }

  // How many of n single checks are allowed.
  static int allowed_of(Engine& e, const CheckRequest& r, int n) {
    int allowed = 0;
    for (int i = 0; i < n; ++i) {
      allowed += check(e, r).allowed ? 1 : 0;
    }
    return allowed;
  }

  static std::string total(Engine& e, const std::string& meter, const std::string& customer,
                           TimeUs from = 0, TimeUs to = 0) {
    e.flush();
    MeterQuery q;
    q.meter = meter;
    q.customer = customer;
    q.from_us = from;
    q.to_us = to == 0 ? at("2030-01-01T00:00:00Z") : to;
    auto r = e.query(q);
    EXPECT_TRUE(r.has_value()) << r.error().message();
    if (!r || r->rows.empty()) {
      return "none";
    }
    return r->rows[0].value;
  }

  static void expect_verified(Engine& e) {
    e.flush();
    auto v = e.verify();
    ASSERT_TRUE(v.has_value()) << v.error().message();
    EXPECT_TRUE(v->ok()) << v->differences.front();
  }

  FakeClock clock_{at("2025-01-20T12:00:00Z")};
};

// ---- concurrency: exactly N --------------------------------------------------------------------

// 32 threads race `per_thread` single checks each; returns how many were allowed.
int race(Engine& e, const std::string& customer, int per_thread) {
  std::atomic<int> allowed{0};
  std::atomic<int> errors{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 32; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < per_thread; ++i) {
        CheckRequest r = req(customer, "api_calls");
        r.properties = {{"service", t % 2 == 0 ? "chat" : "search"}};
        auto out = e.check(r);
        if (!out) {
          ++errors;
        } else if (out->allowed) {
          ++allowed;
        }
      }
    });
  }
  for (auto& th : threads) {
    th.join();
  }
  EXPECT_EQ(errors.load(), 0);
  return allowed.load();
}

TEST_F(CheckTest, ThirtyTwoThreadsGetExactlyTheLimit) {
  auto e = open_memory();
  add_customer(*e, "acme");
  EXPECT_EQ(race(*e, "acme", 100), 1000);
  EXPECT_EQ(total(*e, "api_calls", "acme"), "1000");
  EXPECT_FALSE(check(*e, req("acme", "api_calls")).allowed);
  expect_verified(*e);
}

TEST_F(CheckTest, ThirtyTwoThreadsWithIngestAndAskingChecksInterleaved) {
  // Ingest of the same meter and non-consuming checks run alongside; the limit still holds:
  // whatever ingest adds counts, and checks never push the total past the limit.
  auto e = open_memory();
  add_customer(*e, "acme");
  std::atomic<bool> stop{false};
  std::thread ingester([&] {
    for (int i = 0; i < 200; ++i) {
      auto r = e->ingest_json(R"({"id":"ing-)" + std::to_string(i) +
                              R"(","customer":"acme","type":"api_call"})");
      EXPECT_TRUE(r.has_value());
    }
  });
  std::thread asker([&] {
    for (int i = 0; i < 2000 && !stop.load(); ++i) {
      EXPECT_TRUE(e->check(req("acme", "api_calls", "1", Consume::kNo)).has_value());
    }
  });
  const int allowed = race(*e, "acme", 100);
  stop = true;
  ingester.join();
  asker.join();
  const std::string used = total(*e, "api_calls", "acme");
  // Ingest is accounting, not a check: it may go past the limit, but checks stop at it.
  EXPECT_LE(allowed, 1000);
  EXPECT_GE(std::stoi(used), 1000);
  EXPECT_EQ(std::stoi(used), allowed + 200);
  expect_verified(*e);
}

class CheckDiskTest : public CheckTest {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tally-check-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }

  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Engine> open_disk(const std::string& config = kConfig) {
    EngineOptions o;
    o.data_dir = dir_;
    o.config_toml = config;
    o.clock = &clock_;
    auto e = Engine::open(o);
    EXPECT_TRUE(e.has_value()) << e.error().message();
    return e ? std::move(*e) : nullptr;
  }

  std::string dir_;
};

TEST_F(CheckDiskTest, ExactlyTheLimitAcrossARestart) {
  int first = 0;
  {
    auto e = open_disk();
    ASSERT_TRUE(e);
    add_customer(*e, "acme");
    first = race(*e, "acme", 20);  // 640 attempts, all under the limit
    EXPECT_EQ(first, 640);
  }  // destroyed with consumption possibly still queued: the destructor commits it
  auto e = open_disk();
  ASSERT_TRUE(e);
  clock_.advance_us(core::kUsPerSecond);
  const int second = race(*e, "acme", 100);
  EXPECT_EQ(first + second, 1000);
  EXPECT_EQ(total(*e, "api_calls", "acme"), "1000");
  EXPECT_FALSE(check(*e, req("acme", "api_calls")).allowed);
  expect_verified(*e);
}

TEST_F(CheckDiskTest, RestartWhileOverTheLimitStaysDenied) {
  {
    auto e = open_disk();
    ASSERT_TRUE(e);
    add_customer(*e, "acme");
    EXPECT_EQ(race(*e, "acme", 40), 1000);  // 1280 attempts
  }
  auto e = open_disk();
  ASSERT_TRUE(e);
  EXPECT_EQ(race(*e, "acme", 10), 0);
  EXPECT_EQ(total(*e, "api_calls", "acme"), "1000");
  // The next day starts over.
  clock_.set_us(at("2025-01-21T00:00:00Z"));
  EXPECT_EQ(race(*e, "acme", 40), 1000);
  expect_verified(*e);
}

TEST_F(CheckDiskTest, SyncDurabilityAnswersAfterTheCommit) {
  const std::string config = std::string(kConfig) + "\n";
  std::string sync = config;
  sync.replace(sync.find("[enforcement]"), 13, "[enforcement]\ncheck_durability = \"sync\"");
  auto e = open_disk(sync);
  ASSERT_TRUE(e);
  add_customer(*e, "acme");
  EXPECT_EQ(race(*e, "acme", 40), 1000);
  // No flush: every allowed check is already committed and queryable.
  MeterQuery q;
  q.meter = "api_calls";
  q.customer = "acme";
  q.to_us = at("2030-01-01T00:00:00Z");
  auto r = e->query(q);
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->rows.size(), 1u);
  EXPECT_EQ(r->rows[0].value, "1000");
}

// ---- plans ----------------------------------------------------------------------------------

TEST_F(CheckTest, AllowedAnswerDescribesTheMostRestrictiveLimit) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic", "America/New_York");
  CheckRequest r = req("acme", "api_calls");
  r.feature = "chat";
  CheckResult c = check(*e, r);
  ASSERT_TRUE(c.allowed);
  EXPECT_EQ(denial_name(c.reason), "");
  EXPECT_EQ(c.plan, "basic");
  EXPECT_EQ(c.meter, "api_calls");
  EXPECT_EQ(c.amount.text(), "1");
  EXPECT_FALSE(c.overage);
  ASSERT_TRUE(c.has_rule);
  EXPECT_EQ(c.rule.period, LimitPeriod::kDay);
  EXPECT_EQ(c.rule.rule(), "api_calls per day");
  EXPECT_EQ(c.rule.used.text(), "1");  // after this check
  EXPECT_EQ(c.rule.limit.text(), "1000");
  EXPECT_EQ(c.rule.remaining.text(), "999");
  EXPECT_EQ(c.rule.percent(), "0.10");
  // The customer's day: New York midnight to midnight.
  EXPECT_EQ(core::format_rfc3339(c.rule.window_start_us), "2025-01-20T05:00:00Z");
  EXPECT_EQ(core::format_rfc3339(c.rule.reset_us), "2025-01-21T05:00:00Z");
  ASSERT_EQ(c.limits.size(), 1u);
}

TEST_F(CheckTest, DayLimitResetsAtMidnightInTheCustomersZone) {
  auto e = open_memory();
  add_customer(*e, "ny", "soft", "America/New_York");
  ASSERT_TRUE(e->set_overrides("ny", {{"api_calls", LimitPeriod::kDay, 0, "3", true}}).has_value());
  clock_.set_us(at("2025-03-10T03:59:00Z"));  // 23:59 EDT on the DST change day
  EXPECT_EQ(allowed_of(*e, req("ny", "api_calls"), 5), 3);
  CheckResult denied = check(*e, req("ny", "api_calls"));
  EXPECT_EQ(denial_name(denied.reason), "limit_exceeded");
  EXPECT_EQ(denied.retry_after_us, 60 * core::kUsPerSecond);  // until local midnight
  EXPECT_EQ(core::format_rfc3339(denied.rule.window_start_us), "2025-03-09T05:00:00Z");  // 23 h day
  clock_.set_us(at("2025-03-10T04:00:00Z"));  // local midnight
  EXPECT_EQ(allowed_of(*e, req("ny", "api_calls"), 5), 3);
  EXPECT_EQ(total(*e, "api_calls", "ny"), "6");
}

TEST_F(CheckTest, BillingPeriodAnchoredOnThe31st) {
  auto e = open_memory();
  add_customer(*e, "b", "billing", "UTC", 0, at("2024-01-31T09:00:00Z"));
  clock_.set_us(at("2024-02-28T23:00:00Z"));
  EXPECT_EQ(allowed_of(*e, req("b", "api_calls"), 5), 3);
  CheckResult c = check(*e, req("b", "api_calls"));
  EXPECT_EQ(core::format_rfc3339(c.rule.window_start_us), "2024-01-31T00:00:00Z");
  EXPECT_EQ(core::format_rfc3339(c.rule.reset_us), "2024-02-29T00:00:00Z");
  clock_.set_us(at("2024-02-29T00:00:00Z"));
  EXPECT_EQ(allowed_of(*e, req("b", "api_calls"), 5), 3);
  clock_.set_us(at("2024-03-30T23:59:59Z"));
  EXPECT_EQ(allowed_of(*e, req("b", "api_calls"), 5), 0);
  clock_.set_us(at("2024-03-31T00:00:00Z"));
  EXPECT_EQ(allowed_of(*e, req("b", "api_calls"), 5), 3);
  c = check(*e, req("b", "api_calls"));
  EXPECT_EQ(core::format_rfc3339(c.rule.reset_us), "2024-04-30T00:00:00Z");
}

TEST_F(CheckTest, UnlimitedTierIsAlwaysAllowed) {
  auto e = open_memory();
  add_customer(*e, "big", "unlimited");
  EXPECT_EQ(allowed_of(*e, req("big", "api_calls", "1000"), 20), 20);
  CheckResult c = check(*e, req("big", "api_calls"));
  EXPECT_TRUE(c.allowed);
  EXPECT_FALSE(c.has_rule);
  EXPECT_FALSE(c.overage);
  ASSERT_EQ(c.limits.size(), 1u);
  EXPECT_TRUE(c.limits[0].unlimited);
  EXPECT_EQ(c.limits[0].limit, Decimal{}) << "an unlimited rule has no limit";
  EXPECT_EQ(total(*e, "api_calls", "big"), "20001");
  // A meter the plan does not limit at all is allowed too, with no rule.
  CheckResult tokens = check(*e, req("big", "tokens", "123456789"));
  EXPECT_TRUE(tokens.allowed);
  EXPECT_FALSE(tokens.has_rule);
  EXPECT_TRUE(tokens.limits.empty());
}

TEST_F(CheckTest, SoftLimitAllowsWithOverage) {
  auto e = open_memory();
  add_customer(*e, "s", "soft");
  for (int i = 1; i <= 7; ++i) {
    CheckResult c = check(*e, req("s", "api_calls"));
    EXPECT_TRUE(c.allowed) << i;
    EXPECT_EQ(c.overage, i > 5) << i;
    EXPECT_EQ(denial_name(c.reason), "") << i;
  }
  EXPECT_EQ(total(*e, "api_calls", "s"), "7");
  auto report = e->limits_report("s");
  ASSERT_TRUE(report.has_value());
  ASSERT_EQ(report->limits.size(), 1u);
  EXPECT_EQ(report->limits[0].used.text(), "7");
  EXPECT_EQ(report->limits[0].remaining.text(), "0");
  EXPECT_EQ(report->limits[0].percent(), "140.00");
}

TEST_F(CheckTest, FeatureNotInPlan) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  CheckRequest r = req("acme", "api_calls");
  r.feature = "tts";
  CheckResult c = check(*e, r);
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(denial_name(c.reason), "feature_not_enabled");
  EXPECT_NE(c.message.find("tts"), std::string::npos) << c.message;
  EXPECT_EQ(total(*e, "api_calls", "acme"), "none");
  r.feature = "chat";
  EXPECT_TRUE(check(*e, r).allowed);
  // The pro plan has tts.
  CustomerPatch p;
  p.plan = "pro";
  ASSERT_TRUE(e->update_customer("acme", p).has_value());
  r.feature = "tts";
  EXPECT_TRUE(check(*e, r).allowed);
}

TEST_F(CheckTest, SuspendedCustomerIsDenied) {
  auto e = open_memory();
  add_customer(*e, "acme");
  CustomerPatch p;
  p.status = CustomerStatus::kSuspended;
  ASSERT_TRUE(e->update_customer("acme", p).has_value());
  CheckResult c = check(*e, req("acme", "api_calls"));
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(denial_name(c.reason), "customer_suspended");
  EXPECT_FALSE(check(*e, req("acme", "api_calls", "1", Consume::kNo)).allowed);
  EXPECT_FALSE(check(*e, req("acme", "api_calls", "1", Consume::kReserve)).allowed);
  EXPECT_EQ(total(*e, "api_calls", "acme"), "none");
  p.status = CustomerStatus::kActive;
  ASSERT_TRUE(e->update_customer("acme", p).has_value());
  EXPECT_TRUE(check(*e, req("acme", "api_calls")).allowed);
}

TEST_F(CheckTest, PlanChangeTakesEffectOnTheNextCheck) {
  auto e = open_memory();
  add_customer(*e, "acme");  // the default plan: basic, 1000 a day
  EXPECT_EQ(allowed_of(*e, req("acme", "api_calls", "100"), 10), 10);
  EXPECT_FALSE(check(*e, req("acme", "api_calls")).allowed);
  CustomerPatch p;
  p.plan = "pro";
  ASSERT_TRUE(e->update_customer("acme", p).has_value());
  CheckResult c = check(*e, req("acme", "api_calls"));
  EXPECT_TRUE(c.allowed);
  EXPECT_EQ(c.plan, "pro");
  EXPECT_EQ(c.rule.limit.text(), "2000");
  EXPECT_EQ(c.rule.used.text(), "1001");  // usage carries over: only the rules changed
  p.plan = "basic";
  ASSERT_TRUE(e->update_customer("acme", p).has_value());
  c = check(*e, req("acme", "api_calls"));
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(c.plan, "basic");
  EXPECT_EQ(c.rule.used.text(), "1001");
  p.plan = "none";  // a plan without limits
  ASSERT_TRUE(e->update_customer("acme", p).has_value());
  EXPECT_TRUE(check(*e, req("acme", "api_calls")).allowed);
}

TEST_F(CheckTest, OverridesReplaceAPlanLimit) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  auto o = e->set_overrides("acme", {{"api_calls", LimitPeriod::kDay, 0, "3", true},
                                     {"api_calls", LimitPeriod::kHour, 0, "50", true}});
  ASSERT_TRUE(o.has_value()) << o.error().message();
  EXPECT_EQ(o->overrides.size(), 2u);
  EXPECT_EQ(allowed_of(*e, req("acme", "api_calls"), 5), 3);
  CheckResult c = check(*e, req("acme", "api_calls"));
  EXPECT_EQ(denial_name(c.reason), "limit_exceeded");
  EXPECT_EQ(c.rule.limit.text(), "3");
  ASSERT_EQ(c.limits.size(), 2u);  // the day limit replaced, the hour limit added
  EXPECT_EQ(c.limits[0].period, LimitPeriod::kDay);
  EXPECT_EQ(c.limits[1].period, LimitPeriod::kHour);
  // Unlimited override: the day no longer limits, the hour rate still does.
  ASSERT_TRUE(e->set_overrides("acme", {{"api_calls", LimitPeriod::kDay, 0, "unlimited", true},
                                        {"api_calls", LimitPeriod::kHour, 0, "50", true}})
                  .has_value());
  EXPECT_EQ(allowed_of(*e, req("acme", "api_calls"), 60), 47);
  // [] removes them: back to the plan's 1000 a day.
  ASSERT_TRUE(e->set_overrides("acme", {}).has_value());
  c = check(*e, req("acme", "api_calls"));
  EXPECT_TRUE(c.allowed);
  EXPECT_EQ(c.rule.limit.text(), "1000");
  EXPECT_EQ(c.rule.used.text(), "51");
}

TEST_F(CheckTest, OverrideValidation) {
  auto e = open_memory();
  add_customer(*e, "acme");
  auto bad = [&](LimitOverride o) {
    auto r = e->set_overrides("acme", {o});
    EXPECT_FALSE(r.has_value());
    return r ? StatusCode::kOk : r.error().code();
  };
  EXPECT_EQ(bad({"nope", LimitPeriod::kDay, 0, "3", true}), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad({"users", LimitPeriod::kDay, 0, "3", true}),
            StatusCode::kInvalidArgument);  // unique_count
  EXPECT_EQ(bad({"api_calls", LimitPeriod::kDay, 0, "lots", true}), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad({"api_calls", LimitPeriod::kDay, 0, "-5", true}), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad({"api_calls", LimitPeriod::kTrial, 0, "5", true}),
            StatusCode::kInvalidArgument);  // no days
  // Bounded as in the config (a trial's end, start + days * a day, must not overflow).
  EXPECT_EQ(bad({"api_calls", LimitPeriod::kTrial, 3'651, "5", true}),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(
      bad({"api_calls", LimitPeriod::kTrial, std::numeric_limits<std::int64_t>::max(), "5", true}),
      StatusCode::kInvalidArgument);
  ASSERT_TRUE(
      e->set_overrides("acme", {{"api_calls", LimitPeriod::kTrial, 3'650, "5", true}}).has_value());
  ASSERT_TRUE(e->set_overrides("acme", {}).has_value());
  EXPECT_EQ(bad({"api_calls", LimitPeriod::kDay, 3, "5", true}), StatusCode::kInvalidArgument);
  auto r = e->set_overrides("ghost", {});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kNotFound);
  EXPECT_TRUE(e->get_customer("acme")->overrides.empty());
}

TEST_F(CheckTest, ResetStartsThePeriodOverAndIsAudited) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  ASSERT_TRUE(
      e->set_overrides("acme", {{"api_calls", LimitPeriod::kDay, 0, "5", true}}).has_value());
  clock_.set_us(at("2025-01-20T12:00:10Z"));
  EXPECT_EQ(allowed_of(*e, req("acme", "api_calls"), 8), 5);
  // In the same minute as the consumption, which may still be on its way to disk: the reset
  // must still start from zero.
  clock_.set_us(at("2025-01-20T12:00:30Z"));
  auto r = e->reset_period("acme", "api_calls", "key_admin1");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ASSERT_EQ(r->resets.size(), 1u);
  EXPECT_EQ(r->resets[0].first, "api_calls");
  CheckResult c = check(*e, req("acme", "api_calls"));
  EXPECT_TRUE(c.allowed) << c.message;
  EXPECT_EQ(c.rule.used.text(), "1");
  EXPECT_EQ(core::format_rfc3339(c.rule.window_start_us), "2025-01-20T12:00:30Z");
  EXPECT_EQ(allowed_of(*e, req("acme", "api_calls"), 8), 4);
  // History is kept: queries still see all 10.
  EXPECT_EQ(total(*e, "api_calls", "acme"), "10");
  // The next minute, after the counters are rebuilt (an override change drops them), the
  // reset still holds.
  clock_.set_us(at("2025-01-20T12:05:00Z"));
  ASSERT_TRUE(
      e->set_overrides("acme", {{"api_calls", LimitPeriod::kDay, 0, "5", true}}).has_value());
  EXPECT_EQ(allowed_of(*e, req("acme", "api_calls"), 3), 0);
  // The next day counts from its own start.
  clock_.set_us(at("2025-01-21T00:00:00Z"));
  EXPECT_EQ(allowed_of(*e, req("acme", "api_calls"), 8), 5);
  const auto audit = *e->audit_log(10);
  bool found = false;
  for (const auto& a : audit) {
    if (a.find("\"action\":\"reset\"") != std::string::npos) {
      found = true;
      EXPECT_NE(a.find("\"customer\":\"acme\""), std::string::npos) << a;
      EXPECT_NE(a.find("\"meter\":\"api_calls\""), std::string::npos) << a;
      EXPECT_NE(a.find("\"actor\":\"key_admin1\""), std::string::npos) << a;
      EXPECT_NE(a.find("2025-01-20T12:00:30Z"), std::string::npos) << a;
    }
  }
  EXPECT_TRUE(found) << "no reset in the audit log";
  // Errors.
  EXPECT_EQ(e->reset_period("ghost", "api_calls", "k").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->reset_period("acme", "nope", "k").error().code(), StatusCode::kInvalidArgument);
  expect_verified(*e);
}

TEST_F(CheckDiskTest, ResetSurvivesARestart) {
  {
    auto e = open_disk();
    ASSERT_TRUE(e);
    add_customer(*e, "acme", "basic");
    ASSERT_TRUE(
        e->set_overrides("acme", {{"api_calls", LimitPeriod::kDay, 0, "5", true}}).has_value());
    EXPECT_EQ(allowed_of(*e, req("acme", "api_calls"), 8), 5);
    clock_.advance_us(2 * core::kUsPerMinute);
    ASSERT_TRUE(e->reset_period("acme", "api_calls", "admin").has_value());
    EXPECT_EQ(allowed_of(*e, req("acme", "api_calls"), 2), 2);
  }
  auto e = open_disk();
  ASSERT_TRUE(e);
  EXPECT_EQ(allowed_of(*e, req("acme", "api_calls"), 8), 3);
  EXPECT_EQ(total(*e, "api_calls", "acme"), "10");
}

TEST_F(CheckDiskTest, RateLimitHoldsAcrossARestart) {
  {
    auto e = open_disk();
    ASSERT_TRUE(e);
    add_customer(*e, "r", "rated");  // 10 a minute
    EXPECT_EQ(allowed_of(*e, req("r", "api_calls"), 15), 10);
  }
  auto e = open_disk();
  ASSERT_TRUE(e);
  // The bucket restarts full of the last minute's usage: no fresh burst after a restart.
  EXPECT_EQ(allowed_of(*e, req("r", "api_calls"), 5), 0);
  clock_.advance_us(2 * core::kUsPerMinute);
  EXPECT_EQ(allowed_of(*e, req("r", "api_calls"), 15), 10);
  EXPECT_EQ(total(*e, "api_calls", "r"), "20");
}

// ---- reservations -----------------------------------------------------------------------------

TEST_F(CheckTest, ReservationHoldsQuotaAndCommitRecordsTheActualAmount) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");  // tokens: 5000 a month
  CheckResult held = check(*e, req("acme", "tokens", "4000", Consume::kReserve));
  ASSERT_TRUE(held.allowed);
  ASSERT_FALSE(held.reservation_id.empty());
  EXPECT_EQ(held.reservation_expires_us, clock_.now_us() + 60 * core::kUsPerSecond);
  EXPECT_EQ(held.rule.used.text(), "4000");
  // Others are denied what the hold takes.
  CheckResult other = check(*e, req("acme", "tokens", "1001"));
  EXPECT_FALSE(other.allowed);
  EXPECT_EQ(denial_name(other.reason), "limit_exceeded");
  EXPECT_TRUE(check(*e, req("acme", "tokens", "1000", Consume::kNo)).allowed);
  // Nothing is recorded by the hold itself.
  EXPECT_EQ(total(*e, "tokens", "acme"), "none");
  // Commit with the smaller actual amount: only that is recorded, the rest is freed.
  auto committed = e->commit_reservation(held.reservation_id, "1500");
  ASSERT_TRUE(committed.has_value()) << committed.error().message();
  EXPECT_TRUE(committed->allowed);
  EXPECT_EQ(committed->amount.text(), "1500");
  EXPECT_EQ(committed->rule.used.text(), "1500");
  EXPECT_EQ(total(*e, "tokens", "acme"), "1500");
  EXPECT_TRUE(check(*e, req("acme", "tokens", "3500")).allowed);
  EXPECT_EQ(total(*e, "tokens", "acme"), "5000");
  // Committed once: a second commit or a release is 404.
  EXPECT_EQ(e->commit_reservation(held.reservation_id, "").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->release_reservation(held.reservation_id).code(), StatusCode::kNotFound);
  expect_verified(*e);
}

TEST_F(CheckTest, ReservationCommitWithoutAmountAndWithZero) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  CheckResult a = check(*e, req("acme", "tokens", "30", Consume::kReserve));
  ASSERT_TRUE(a.allowed);
  ASSERT_TRUE(e->commit_reservation(a.reservation_id, "").has_value());
  EXPECT_EQ(total(*e, "tokens", "acme"), "30");
  CheckResult b = check(*e, req("acme", "tokens", "30", Consume::kReserve));
  ASSERT_TRUE(e->commit_reservation(b.reservation_id, "0").has_value());
  EXPECT_EQ(total(*e, "tokens", "acme"), "30");
  CheckResult c = check(*e, req("acme", "tokens", "30", Consume::kReserve));
  EXPECT_EQ(e->commit_reservation(c.reservation_id, "-1").error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(e->commit_reservation(c.reservation_id, "x").error().code(),
            StatusCode::kInvalidArgument);
  // A failed commit leaves the reservation in place.
  EXPECT_TRUE(e->release_reservation(c.reservation_id).ok());
  // A count meter takes whole amounts only.
  CheckResult d = check(*e, req("acme", "api_calls", "3", Consume::kReserve));
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(e->commit_reservation(d.reservation_id, "1.5").error().code(),
            StatusCode::kInvalidArgument);
  ASSERT_TRUE(e->commit_reservation(d.reservation_id, "2").has_value());
  EXPECT_EQ(total(*e, "api_calls", "acme"), "2");
}

TEST_F(CheckTest, ReleaseFreesTheHold) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  CheckResult held = check(*e, req("acme", "tokens", "5000", Consume::kReserve));
  ASSERT_TRUE(held.allowed);
  EXPECT_FALSE(check(*e, req("acme", "tokens", "1")).allowed);
  EXPECT_TRUE(e->release_reservation(held.reservation_id).ok());
  EXPECT_TRUE(check(*e, req("acme", "tokens", "5000")).allowed);
  EXPECT_EQ(total(*e, "tokens", "acme"), "5000");
  EXPECT_EQ(e->release_reservation(held.reservation_id).code(), StatusCode::kNotFound);
  EXPECT_EQ(e->release_reservation("res_unknown").code(), StatusCode::kNotFound);
}

TEST_F(CheckTest, ExpiredReservationsFreeThemselves) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  CheckRequest r = req("acme", "tokens", "4900", Consume::kReserve);
  r.reservation_ttl_seconds = 10;
  CheckResult held = check(*e, r);
  ASSERT_TRUE(held.allowed);
  EXPECT_EQ(held.reservation_expires_us, clock_.now_us() + 10 * core::kUsPerSecond);
  CheckResult defaulted = check(*e, req("acme", "tokens", "50", Consume::kReserve));
  ASSERT_TRUE(defaulted.allowed);  // the configured 60 s
  EXPECT_FALSE(check(*e, req("acme", "tokens", "100")).allowed);
  clock_.advance_us(10 * core::kUsPerSecond - 1);
  EXPECT_FALSE(check(*e, req("acme", "tokens", "100")).allowed);
  clock_.advance_us(1);
  EXPECT_TRUE(check(*e, req("acme", "tokens", "100")).allowed);
  EXPECT_EQ(e->commit_reservation(held.reservation_id, "").error().code(), StatusCode::kNotFound);
  // The limits report sees the hold go too.
  clock_.advance_us(60 * core::kUsPerSecond);
  auto report = e->limits_report("acme");
  ASSERT_TRUE(report.has_value());
  for (const auto& l : report->limits) {
    if (l.meter == "tokens") {
      EXPECT_EQ(l.used.text(), "100");
    }
  }
  EXPECT_EQ(e->release_reservation(defaulted.reservation_id).code(), StatusCode::kNotFound);
  // TTL bounds.
  r.reservation_ttl_seconds = 7 * 86400 + 1;
  EXPECT_EQ(e->check(r).error().code(), StatusCode::kInvalidArgument);
}

TEST_F(CheckTest, ReservationOnARateLimitFreesTheRateToo) {
  auto e = open_memory();
  add_customer(*e, "r", "rated");  // tokens: 100 a second
  // Commit with less: the bucket holds only the actual amount.
  CheckResult held = check(*e, req("r", "tokens", "80", Consume::kReserve));
  ASSERT_TRUE(held.allowed);
  EXPECT_FALSE(check(*e, req("r", "tokens", "50", Consume::kNo)).allowed);
  ASSERT_TRUE(e->commit_reservation(held.reservation_id, "10").has_value());
  CheckResult c = check(*e, req("r", "tokens", "90", Consume::kNo));
  EXPECT_TRUE(c.allowed) << c.message;
  EXPECT_EQ(c.rule.used.text(), "10");
  // Release: the bucket gives the hold back.
  held = check(*e, req("r", "tokens", "90", Consume::kReserve));
  ASSERT_TRUE(held.allowed);
  EXPECT_TRUE(e->release_reservation(held.reservation_id).ok());
  EXPECT_TRUE(check(*e, req("r", "tokens", "90", Consume::kNo)).allowed);
  // Expiry, after part of the hold drained: only what is left of it is given back.
  CheckRequest r = req("r", "tokens", "90", Consume::kReserve);
  r.reservation_ttl_seconds = 1;
  ASSERT_TRUE(check(*e, r).allowed);
  clock_.advance_us(core::kUsPerSecond);
  c = check(*e, req("r", "tokens", "100", Consume::kNo));
  EXPECT_TRUE(c.allowed) << c.message;
  EXPECT_EQ(c.rule.used.text(), "0");
  // A hold older than the rate period has drained: releasing it gives back nothing.
  clock_.advance_us(core::kUsPerSecond);
  CheckRequest long_hold = req("r", "tokens", "60", Consume::kReserve);
  CheckResult lh = check(*e, long_hold);
  ASSERT_TRUE(lh.allowed);
  clock_.advance_us(2 * core::kUsPerSecond);
  ASSERT_TRUE(check(*e, req("r", "tokens", "70")).allowed);
  EXPECT_TRUE(e->release_reservation(lh.reservation_id).ok());
  c = check(*e, req("r", "tokens", "31", Consume::kNo));
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(c.rule.used.text(), "70");
}

TEST_F(CheckTest, ReservationIdsAreNotGuessable) {
  auto e = open_memory();
  add_customer(*e, "a", "basic");
  add_customer(*e, "b", "basic");
  CheckResult first = check(*e, req("a", "tokens", "10", Consume::kReserve));
  CheckResult second = check(*e, req("b", "tokens", "10", Consume::kReserve));
  ASSERT_TRUE(first.allowed && second.allowed);
  // Knowing one id must not reveal the next: ids share no long common prefix with a counter
  // at its end.
  const std::string& x = first.reservation_id;
  const std::string& y = second.reservation_id;
  std::size_t common = 0;
  while (common < x.size() && common < y.size() && x[common] == y[common]) {
    ++common;
  }
  EXPECT_GE(x.size() - common, 16u) << x << " vs " << y;
}

// ---- idempotency and batches
// ---------------------------------------------------------------------

TEST_F(CheckTest, SameEventIdConsumesOnce) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  CheckRequest r = req("acme", "api_calls");
  r.event_id = "req-1";
  CheckResult first = check(*e, r);
  EXPECT_TRUE(first.allowed);
  EXPECT_FALSE(first.replayed);
  CheckResult again = check(*e, r);
  EXPECT_TRUE(again.allowed);
  EXPECT_TRUE(again.replayed);
  EXPECT_EQ(again.rule.used.text(), "1");
  e->flush();
  EXPECT_TRUE(check(*e, r).replayed);  // also after the commit
  EXPECT_EQ(total(*e, "api_calls", "acme"), "1");
  // The same id used on another meter names the same stored event: it is not consumed twice
  // (it would be dropped as a duplicate at commit), and the answer says so.
  CheckRequest tokens = req("acme", "tokens", "10");
  tokens.event_id = "req-1";
  CheckResult t = check(*e, tokens);
  EXPECT_TRUE(t.replayed);
  EXPECT_EQ(total(*e, "tokens", "acme"), "none");
  // A denied check with an id did not consume it: the retry is a fresh check.
  ASSERT_TRUE(
      e->set_overrides("acme", {{"api_calls", LimitPeriod::kDay, 0, "1", true}}).has_value());
  CheckRequest d = req("acme", "api_calls");
  d.event_id = "req-2";
  EXPECT_FALSE(check(*e, d).allowed);
  ASSERT_TRUE(e->set_overrides("acme", {}).has_value());
  CheckResult retried = check(*e, d);
  EXPECT_TRUE(retried.allowed);
  EXPECT_FALSE(retried.replayed);
  EXPECT_EQ(total(*e, "api_calls", "acme"), "2");
  // The stored event carries the id.
  EventListQuery q;
  q.customer = "acme";
  auto page = e->list_events(q);
  ASSERT_TRUE(page.has_value());
  std::vector<std::string> ids;
  for (const auto& ev : page->events)
    ids.push_back(ev.id);
  EXPECT_NE(std::find(ids.begin(), ids.end(), "req-1"), ids.end());
  EXPECT_NE(std::find(ids.begin(), ids.end(), "req-2"), ids.end());
}

TEST_F(CheckTest, BatchIsAllOrNothing) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  // tokens: 5000 a month; ask for more than is left in the second check.
  std::vector<CheckRequest> batch = {req("acme", "api_calls", "2"), req("acme", "tokens", "5001")};
  batch[0].event_id = "batch-1";
  auto r = e->check_batch(batch);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ASSERT_EQ(r->size(), 2u);
  EXPECT_FALSE((*r)[0].allowed);
  EXPECT_EQ(denial_name((*r)[0].reason), "batch_denied");
  EXPECT_FALSE((*r)[1].allowed);
  EXPECT_EQ(denial_name((*r)[1].reason), "limit_exceeded");
  EXPECT_EQ(total(*e, "api_calls", "acme"), "none");
  EXPECT_EQ(total(*e, "tokens", "acme"), "none");
  // Nothing held in memory either: the full limits are still there.
  EXPECT_TRUE(check(*e, req("acme", "tokens", "5000", Consume::kNo)).allowed);
  auto report = e->limits_report("acme");
  ASSERT_TRUE(report.has_value());
  for (const auto& l : report->limits) {
    EXPECT_EQ(l.used.text(), "0") << l.rule();
  }
  // The id of the undone check was not consumed: a retry consumes.
  batch[1].amount = "5000";
  r = e->check_batch(batch);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE((*r)[0].allowed);
  EXPECT_FALSE((*r)[0].replayed);
  EXPECT_TRUE((*r)[1].allowed);
  EXPECT_EQ(total(*e, "api_calls", "acme"), "2");
  EXPECT_EQ(total(*e, "tokens", "acme"), "5000");
  // A reservation in a denied batch is not kept.
  std::vector<CheckRequest> with_hold = {req("acme", "api_calls", "5", Consume::kReserve),
                                         req("acme", "tokens", "1")};
  r = e->check_batch(with_hold);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE((*r)[0].reservation_id.empty());
  EXPECT_EQ(check(*e, req("acme", "api_calls", "1", Consume::kNo)).rule.used.text(), "2");
  // Checks in one batch add up: two halves of the same quota.
  add_customer(*e, "b", "basic");
  r = e->check_batch({req("b", "tokens", "3000"), req("b", "tokens", "3000")});
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE((*r)[0].allowed);
  EXPECT_FALSE((*r)[1].allowed);
  EXPECT_EQ(denial_name((*r)[1].reason), "limit_exceeded");
  EXPECT_EQ(total(*e, "tokens", "b"), "none");
  expect_verified(*e);
}

TEST_F(CheckTest, BatchErrors) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  EXPECT_EQ(e->check_batch({}).error().code(), StatusCode::kInvalidArgument);
  std::vector<CheckRequest> many(101, req("acme", "api_calls"));
  EXPECT_EQ(e->check_batch(many).error().code(), StatusCode::kInvalidArgument);
  many.resize(100);
  auto r = e->check_batch(many);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->size(), 100u);
  // One unknown customer fails the whole batch before anything is evaluated.
  auto bad = e->check_batch({req("acme", "api_calls"), req("ghost", "api_calls")});
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(total(*e, "api_calls", "acme"), "100");
}

// ---- ingest, gauges, rates, trial
// ------------------------------------------------------------------

TEST_F(CheckTest, IngestedEventsCountAgainstTheLimit) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  // Before the limit's counter exists, and after.
  ASSERT_EQ(
      e->ingest_json(R"({"id":"i1","customer":"acme","type":"tokens","properties":{"n":4000}})")
          ->accepted,
      1u);
  EXPECT_FALSE(check(*e, req("acme", "tokens", "1001", Consume::kNo)).allowed);
  ASSERT_EQ(
      e->ingest_json(R"({"id":"i2","customer":"acme","type":"tokens","properties":{"n":990}})")
          ->accepted,
      1u);
  CheckResult c = check(*e, req("acme", "tokens", "11"));
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(c.rule.used.text(), "4990");
  EXPECT_TRUE(check(*e, req("acme", "tokens", "10")).allowed);
  // A duplicate ingest adds nothing.
  ASSERT_EQ(
      e->ingest_json(R"({"id":"i2","customer":"acme","type":"tokens","properties":{"n":990}})")
          ->duplicates,
      1u);
  EXPECT_EQ(check(*e, req("acme", "tokens", "1", Consume::kNo)).rule.used.text(), "5000");
  // Events of last month do not count this month.
  ASSERT_EQ(
      e->ingest_json(
           R"({"id":"old","customer":"acme","type":"tokens","time":"2024-12-31T23:59:00Z","properties":{"n":7}})")
          ->accepted,
      1u);
  EXPECT_EQ(check(*e, req("acme", "tokens", "1", Consume::kNo)).rule.used.text(), "5000");
  EXPECT_EQ(total(*e, "tokens", "acme"), "5007");
}

TEST_F(CheckTest, GaugeLimitComparesTheReportedValue) {
  auto e = open_memory();
  add_customer(*e, "clinic", "basic");  // patients: at most 500, lifetime
  ASSERT_EQ(
      e->ingest_json(
           R"({"id":"g1","customer":"clinic","type":"patients_gauge","time":"2025-01-20T11:00:00Z","properties":{"count":499}})")
          ->accepted,
      1u);
  CheckResult c = check(*e, req("clinic", "patients", "1", Consume::kNo));
  EXPECT_TRUE(c.allowed);
  EXPECT_EQ(c.rule.used.text(), "499");
  EXPECT_EQ(c.rule.period, LimitPeriod::kLifetime);
  EXPECT_EQ(c.rule.reset_us, 0);
  EXPECT_FALSE(check(*e, req("clinic", "patients", "2", Consume::kNo)).allowed);
  // Asking consumes nothing.
  EXPECT_TRUE(check(*e, req("clinic", "patients", "1", Consume::kNo)).allowed);
  ASSERT_EQ(
      e->ingest_json(
           R"({"id":"g2","customer":"clinic","type":"patients_gauge","time":"2025-01-20T11:30:00Z","properties":{"count":500}})")
          ->accepted,
      1u);
  c = check(*e, req("clinic", "patients", "1", Consume::kNo));
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(c.rule.used.text(), "500");
  EXPECT_EQ(c.retry_after_us, 0);  // a lifetime limit has no reset
  // A lower report replaces it (latest, not a sum).
  ASSERT_EQ(
      e->ingest_json(
           R"({"id":"g3","customer":"clinic","type":"patients_gauge","time":"2025-01-20T11:45:00Z","properties":{"count":120}})")
          ->accepted,
      1u);
  c = check(*e, req("clinic", "patients", "1", Consume::kNo));
  EXPECT_TRUE(c.allowed);
  EXPECT_EQ(c.rule.used.text(), "120");
  // A consuming check adds to the gauge and reports the new level.
  c = check(*e, req("clinic", "patients", "5"));
  EXPECT_TRUE(c.allowed);
  EXPECT_EQ(c.rule.used.text(), "125");
  EXPECT_EQ(total(*e, "patients", "clinic"), "125");
  expect_verified(*e);
}

TEST_F(CheckTest, CountAmountAboveOneCountsOnceAgainstARate) {
  auto e = open_memory();
  add_customer(*e, "r", "rated");  // 10 a minute, 100 a day
  CheckResult a = check(*e, req("r", "api_calls", "5"));
  ASSERT_TRUE(a.allowed);
  e->flush();  // the five events commit; the bucket must not count them again
  CheckResult b = check(*e, req("r", "api_calls", "5"));
  EXPECT_TRUE(b.allowed) << b.message;
  EXPECT_FALSE(check(*e, req("r", "api_calls", "1")).allowed);
  EXPECT_EQ(total(*e, "api_calls", "r"), "10");
}

TEST_F(CheckTest, RateLimitAdmitsTheBurstThenDrains) {
  auto e = open_memory();
  add_customer(*e, "r", "rated");
  clock_.set_us(at("2025-01-20T12:00:59.990Z"));
  EXPECT_EQ(allowed_of(*e, req("r", "api_calls"), 20), 10);
  CheckResult c = check(*e, req("r", "api_calls"));
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(denial_name(c.reason), "limit_exceeded");
  EXPECT_EQ(c.rule.period, LimitPeriod::kMinute);
  EXPECT_EQ(c.retry_after_us, 6 * core::kUsPerSecond);  // one unit drains every 6 s
  // The next minute begins: no fresh burst.
  clock_.set_us(at("2025-01-20T12:01:00Z"));
  EXPECT_EQ(allowed_of(*e, req("r", "api_calls"), 20), 0);
  clock_.set_us(at("2025-01-20T12:01:05.990Z"));
  EXPECT_EQ(allowed_of(*e, req("r", "api_calls"), 20), 1);
  // A second-rate limit on tokens.
  EXPECT_TRUE(check(*e, req("r", "tokens", "100")).allowed);
  CheckResult t = check(*e, req("r", "tokens", "50"));
  EXPECT_FALSE(t.allowed);
  EXPECT_EQ(t.retry_after_us, 500'000);
  clock_.advance_us(500'000);
  EXPECT_TRUE(check(*e, req("r", "tokens", "50")).allowed);
}

TEST_F(CheckTest, MostRestrictiveDenialIsTheOneThatFreesLast) {
  auto e = open_memory();
  add_customer(*e, "r", "rated");
  // Use up the day (100) over time so the minute rate is not the blocker.
  for (int i = 0; i < 100; ++i) {
    ASSERT_TRUE(check(*e, req("r", "api_calls")).allowed) << i;
    clock_.advance_us(7 * core::kUsPerSecond);
  }
  CheckResult c = check(*e, req("r", "api_calls"));
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(c.rule.period, LimitPeriod::kDay);
  EXPECT_EQ(c.rule.used.text(), "100");
  EXPECT_EQ(c.rule.remaining.text(), "0");
  EXPECT_EQ(c.retry_after_us, c.rule.reset_us - clock_.now_us());
  ASSERT_EQ(c.limits.size(), 2u);
}

TEST_F(CheckTest, TrialWindow) {
  auto e = open_memory();
  const TimeUs start = at("2025-01-18T09:00:00Z");
  add_customer(*e, "t", "trial", "UTC", start);
  CheckResult c = check(*e, req("t", "api_calls"));
  EXPECT_TRUE(c.allowed);
  ASSERT_EQ(c.limits.size(), 2u);
  EXPECT_EQ(c.limits[0].period, LimitPeriod::kTrial);
  EXPECT_EQ(c.limits[0].reset_us, start + 7 * core::kUsPerDay);
  clock_.set_us(start + 7 * core::kUsPerDay - 1);
  EXPECT_TRUE(check(*e, req("t", "api_calls")).allowed);
  clock_.set_us(start + 7 * core::kUsPerDay);
  c = check(*e, req("t", "api_calls"));
  EXPECT_FALSE(c.allowed);
  EXPECT_EQ(denial_name(c.reason), "trial_expired");
  EXPECT_EQ(c.rule.period, LimitPeriod::kTrial);
  EXPECT_EQ(c.rule.reset_us, 0);
  EXPECT_EQ(total(*e, "api_calls", "t"), "2");
  // The trial total caps it too: 700 over the 7 days, 100 a day.
  add_customer(*e, "t2", "trial", "UTC", at("2025-02-01T00:00:00Z"));
  int allowed = 0;
  for (int day = 0; day < 9; ++day) {
    clock_.set_us(at("2025-02-01T12:00:00Z") + day * core::kUsPerDay);
    allowed += allowed_of(*e, req("t2", "api_calls", "50"), 3);
  }
  EXPECT_EQ(allowed, 14);  // 2 a day for 7 days
  // Moving the trial start (a PATCH) reopens the window.
  CustomerPatch p;
  p.trial_started_at_us = clock_.now_us();
  ASSERT_TRUE(e->update_customer("t2", p).has_value());
  EXPECT_TRUE(check(*e, req("t2", "api_calls")).allowed);
}

TEST_F(CheckTest, LimitsReportAndWarnings) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  EXPECT_TRUE(check(*e, req("acme", "api_calls", "850")).allowed);  // 85 %
  EXPECT_TRUE(check(*e, req("acme", "tokens", "4000")).allowed);    // 80 %: not above
  auto r = e->limits_report("acme");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->plan, "basic");
  EXPECT_EQ(r->features, std::vector<std::string>{"chat"});
  ASSERT_EQ(r->limits.size(), 3u);
  EXPECT_EQ(r->limits[0].used.text(), "850");
  EXPECT_EQ(r->limits[0].percent(), "85.00");
  EXPECT_EQ(r->limits[1].percent(), "80.00");
  EXPECT_EQ(r->limits[2].used.text(), "0");  // patients, nothing reported
  ASSERT_EQ(r->warnings.size(), 1u);
  EXPECT_EQ(r->warnings[0], "api_calls per day at 85.00%");
  EXPECT_EQ(e->limits_report("ghost").error().code(), StatusCode::kNotFound);
}

// ---- errors ------------------------------------------------------------------------------------

TEST_F(CheckTest, InvalidRequests) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  auto code = [&](const CheckRequest& r) {
    auto out = e->check(r);
    return out ? StatusCode::kOk : out.error().code();
  };
  EXPECT_EQ(code(req("ghost", "api_calls")), StatusCode::kNotFound);
  EXPECT_EQ(code(req("acme", "nope")), StatusCode::kNotFound);
  EXPECT_EQ(code(req("acme", "users")), StatusCode::kInvalidArgument);  // unique_count
  EXPECT_EQ(code(req("acme", "api_calls", "0")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(req("acme", "api_calls", "-1")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(req("acme", "api_calls", "abc")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(req("acme", "api_calls", "")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(req("acme", "api_calls", "1.5")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(req("acme", "api_calls", "10001")), StatusCode::kInvalidArgument);
  EXPECT_EQ(code(req("acme", "api_calls", "1.5", Consume::kNo)), StatusCode::kOk);
  EXPECT_EQ(code(req("acme", "tokens", "1.5")), StatusCode::kOk);
  CheckRequest long_id = req("acme", "api_calls");
  long_id.event_id = std::string(121, 'x');
  EXPECT_EQ(code(long_id), StatusCode::kInvalidArgument);
  CheckRequest props = req("acme", "api_calls");
  for (int i = 0; i < 65; ++i)
    props.properties.emplace_back("p" + std::to_string(i), "v");
  EXPECT_EQ(code(props), StatusCode::kInvalidArgument);
  EXPECT_EQ(total(*e, "tokens", "acme"), "1.5");
  EXPECT_EQ(total(*e, "api_calls", "acme"), "none");
}

TEST_F(CheckTest, CheckEventsCarryPropertiesAndVerify) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");
  CheckRequest r = req("acme", "api_calls", "3");
  r.properties = {{"service", "tts"}, {"user", "u1"}};
  ASSERT_TRUE(check(*e, r).allowed);
  MeterQuery q;
  q.meter = "api_calls";
  q.customer = "acme";
  q.to_us = at("2030-01-01T00:00:00Z");
  q.group_by = {"service"};
  e->flush();
  auto rows = e->query(q);
  ASSERT_TRUE(rows.has_value());
  ASSERT_EQ(rows->rows.size(), 1u);
  EXPECT_EQ(rows->rows[0].value, "3");
  ASSERT_EQ(rows->rows[0].group.size(), 1u);
  EXPECT_EQ(rows->rows[0].group[0].second, "tts");
  EXPECT_EQ(total(*e, "users", "acme"), "1");
  expect_verified(*e);
}

core::Decimal dec(const char* text) {
  return *core::parse_decimal(text);
}

TEST(PercentTextTest, TwoDecimalsHalfEven) {
  EXPECT_EQ(core::percent_text(dec("0"), dec("34")), "0.00");
  EXPECT_EQ(core::percent_text(dec("1"), dec("3")), "33.33");
  EXPECT_EQ(core::percent_text(dec("2"), dec("3")), "66.67");
  EXPECT_EQ(core::percent_text(dec("34"), dec("34")), "100.00");
  EXPECT_EQ(core::percent_text(dec("0.5"), dec("1000")), "0.05");
  EXPECT_EQ(core::percent_text(dec("1"), dec("20000")), "0.00");  // 0.005: half to even
  EXPECT_EQ(core::percent_text(dec("3"), dec("20000")), "0.02");  // 0.015: half to even
  EXPECT_EQ(core::percent_text(dec("5"), dec("0")), "100.00");
  EXPECT_EQ(core::percent_text(dec("0"), dec("0")), "0.00");
}

// Found by tests/fuzz/check_body_fuzz.cc: a reservation committed with an amount of 3.5e24 on a
// limit of 100,000 answered "percent": -4666051220526992198.25 (the quotient was cut to 64 bits;
// larger usage overflowed the 128-bit product first).
TEST(PercentTextTest, HugeUsageIsExact) {
  EXPECT_EQ(core::percent_text(dec("3555555555005416469690252"), dec("100000")),
            "3555555555005416469690.25");
  EXPECT_EQ(core::percent_text(dec("10000000000000000000000000000"), dec("0.000000001")),
            "1000000000000000000000000000000000000000.00");
  EXPECT_EQ(core::percent_text(dec("10000000000000000000000000000"),
                               dec("10000000000000000000000000000")),
            "100.00");
  EXPECT_EQ(core::percent_text(dec("-3"), dec("20000")), "-0.02");
  EXPECT_EQ(core::percent_text(dec("-1"), dec("20000")), "0.00");
}

}  // namespace
}  // namespace tally

namespace tally {
namespace {

// ---- hardening (issue #16) ---------------------------------------------------------------------

constexpr const char* kDailyTen = R"(
[enforcement]
default_plan = "ten"

[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"

[[plans]]
key = "ten"
limits = [{ meter = "tokens", period = "day", amount = 10 }]

[[plans]]
key = "eleven"
limits = [{ meter = "tokens", period = "day", amount = 11 }]
)";

// Defect 10: consume 6 (X) then 4 (Y) of a daily 10; one more unit ingested makes 11 of 10;
// retrying X must answer the original decision, not a denial.
void expect_retry_answers_the_original_decision(Engine& e) {
  CheckRequest x = req("acme", "tokens", "6");
  x.event_id = "X";
  CheckRequest y = req("acme", "tokens", "4");
  y.event_id = "Y";
  auto first = e.check(x);
  ASSERT_TRUE(first.has_value());
  EXPECT_TRUE(first->allowed);
  ASSERT_TRUE(e.check(y).has_value());
  auto replayed = e.check(x);
  ASSERT_TRUE(replayed.has_value());
  EXPECT_TRUE(replayed->allowed);
  EXPECT_TRUE(replayed->replayed);
  ASSERT_TRUE(
      e.ingest_json(R"({"id":"one-more","customer":"acme","type":"tokens","properties":{"n":1}})")
          .has_value());
  e.flush();
  auto after = e.check(x);
  ASSERT_TRUE(after.has_value());
  EXPECT_TRUE(after->allowed) << denial_name(after->reason);
  EXPECT_TRUE(after->replayed);
  EXPECT_EQ(after->rule.used.text(), "11") << "the answer shows today's usage, and nothing more";
  // A fresh check is denied, as it should be.
  auto fresh = e.check(req("acme", "tokens", "1"));
  ASSERT_TRUE(fresh.has_value());
  EXPECT_FALSE(fresh->allowed);
}

TEST_F(CheckTest, ARetriedCheckAnswersItsOriginalDecisionWhateverTheUsageNow) {
  auto e = open_memory(kDailyTen);
  add_customer(*e, "acme");
  expect_retry_answers_the_original_decision(*e);
  EXPECT_EQ(total(*e, "tokens", "acme"), "11");
  // Suspending the customer does not turn an answered retry into a denial either.
  CustomerPatch p;
  p.status = CustomerStatus::kSuspended;
  ASSERT_TRUE(e->update_customer("acme", p).has_value());
  CheckRequest x = req("acme", "tokens", "6");
  x.event_id = "X";
  auto r = e->check(x);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->allowed);
  EXPECT_TRUE(r->replayed);
  EXPECT_EQ(total(*e, "tokens", "acme"), "11");
}

TEST_F(CheckDiskTest, ARetriedCheckIsRememberedAcrossARestart) {
  {
    auto e = open_disk(kDailyTen);
    ASSERT_TRUE(e);
    add_customer(*e, "acme");
    expect_retry_answers_the_original_decision(*e);
  }
  auto e = open_disk(kDailyTen);
  ASSERT_TRUE(e);
  CheckRequest y = req("acme", "tokens", "4");
  y.event_id = "Y";
  auto r = e->check(y);
  ASSERT_TRUE(r.has_value());
  EXPECT_TRUE(r->allowed) << denial_name(r->reason);
  EXPECT_TRUE(r->replayed);
  EXPECT_EQ(total(*e, "tokens", "acme"), "11");
  expect_verified(*e);
}

// Defect 1: what one request may store is bounded by its size. A consumption of N on a count
// meter is one event carrying N, not N events.
TEST_F(CheckTest, ACountOfNIsOneEventCarryingN) {
  auto e = open_memory();
  add_customer(*e, "big", "unlimited");
  std::vector<CheckRequest> batch;
  for (int i = 0; i < 100; ++i) {
    CheckRequest r = req("big", "api_calls", "10000");
    r.event_id = "bulk-" + std::to_string(i);
    batch.push_back(r);
  }
  auto r = e->check_batch(batch);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  for (const auto& one : *r) {
    EXPECT_TRUE(one.allowed);
  }
  EXPECT_EQ(total(*e, "api_calls", "big"), "1000000");
  EventListQuery q;
  q.customer = "big";
  q.limit = 1000;
  auto page = e->list_events(q);
  ASSERT_TRUE(page.has_value());
  ASSERT_EQ(page->events.size(), 100u);
  for (const auto& ev : page->events) {
    EXPECT_EQ(ev.quantity, 10'000u) << ev.id;
  }
  EXPECT_EQ(e->stats().events_accepted, 100u);
  expect_verified(*e);
}

// Defect 8: a reservation id is no credential across customers.
TEST_F(CheckTest, ReservationsAreScopedToTheirCustomer) {
  auto e = open_memory(kDailyTen);
  add_customer(*e, "a");
  add_customer(*e, "b");
  CheckRequest r = req("b", "tokens", "5", Consume::kReserve);
  auto held = e->check(r);
  ASSERT_TRUE(held.has_value());
  ASSERT_FALSE(held->reservation_id.empty());
  auto stolen = e->commit_reservation(held->reservation_id, "5", "a");
  ASSERT_FALSE(stolen.has_value());
  EXPECT_EQ(stolen.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->release_reservation(held->reservation_id, "a").code(), StatusCode::kNotFound);
  // Nothing changed: b's own key (and an admin, with no restriction) can still settle it.
  auto own = e->commit_reservation(held->reservation_id, "3", "b");
  ASSERT_TRUE(own.has_value()) << own.error().message();
  EXPECT_EQ(total(*e, "tokens", "b"), "3");
  EXPECT_EQ(total(*e, "tokens", "a"), "none");
}

// Defect 6: a plan removed from the config fails closed.
TEST_F(CheckDiskTest, ARemovedPlanStopsTheEngineUnlessTheConfigSaysWhereItsCustomersGo) {
  {
    auto e = open_disk(kDailyTen);
    ASSERT_TRUE(e);
    add_customer(*e, "a", "eleven");
    add_customer(*e, "b", "eleven");
    add_customer(*e, "c", "ten");
  }
  std::string without_eleven = kDailyTen;
  without_eleven.resize(without_eleven.find("[[plans]]\nkey = \"eleven\""));
  {
    EngineOptions o;
    o.data_dir = dir_;
    o.config_toml = without_eleven;
    o.clock = &clock_;
    auto e = Engine::open(o);
    ASSERT_FALSE(e.has_value()) << "customers of a removed plan would be unlimited";
    EXPECT_EQ(e.error().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(e.error().message().find("plan 'eleven' is used by 2 customers"), std::string::npos)
        << e.error().message();
    EXPECT_NE(e.error().message().find("replaced_plans"), std::string::npos);
    // Read-only tools (verify, export) still open the data directory.
    o.read_only = true;
    EXPECT_TRUE(Engine::open(o).has_value());
  }
  std::string config = without_eleven;
  config.replace(config.find("default_plan = \"ten\""), 0,
                 "replaced_plans = { eleven = \"ten\" }\n");
  auto e = open_disk(config);
  ASSERT_TRUE(e);
  for (int i = 0; i < 10; ++i) {
    ASSERT_TRUE(check(*e, req("a", "tokens", "1")).allowed);
  }
  const CheckResult denied = check(*e, req("a", "tokens", "1"));
  EXPECT_FALSE(denied.allowed) << "the customer of the removed plan has the new plan's limit";
  EXPECT_EQ(denied.plan, "ten");
  // And the customer can still be changed, e.g. suspended.
  CustomerPatch p;
  p.status = CustomerStatus::kSuspended;
  EXPECT_TRUE(e->update_customer("b", p).has_value());
}

}  // namespace
}  // namespace tally
