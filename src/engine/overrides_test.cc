// Engine tests of overrides and resets (overrides.cc) on the in-memory store: each refusal of
// overrides by its message, naming the override at fault; a second reset of a meter replaces the
// first, a reset in the middle of a minute takes that minute's earlier usage of a sum meter off
// its counters while one on a minute's boundary takes nothing off, the other meters keep their
// counts, and the refusals' messages.
#include <string>

#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

#include "config/config.h"
#include "core/time.h"

namespace tally {
namespace {

constexpr const char* kConfig = R"(
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"

[[meters]]
key = "users"
event_type = "api_call"
aggregation = "unique_count"
value = "$.user"

[[plans]]
key = "basic"
limits = [
  { meter = "api_calls", period = "day", amount = 10 },
  { meter = "tokens", period = "day", amount = 100 },
  { meter = "tokens", period = "month", amount = 1000 },
]
)";

TimeUs at(const char* rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

class ResetTest : public ::testing::Test {
 protected:
  ResetTest() {
    EngineOptions o;
    o.in_memory = true;
    o.config_toml = kConfig;
    o.clock = &clock_;
    auto e = Engine::open(o);
    EXPECT_TRUE(e.has_value()) << e.error().message();
    engine_ = std::move(*e);
    Customer c;
    c.id = "acme";
    c.plan = "basic";
    EXPECT_TRUE(engine_->create_customer(c).has_value());
  }

  // The used amount of the customer's limit on `meter` over `period`, by a check of nothing.
  std::string used(const std::string& meter, const std::string& period) {
    auto report = engine_->limits_report("acme");
    EXPECT_TRUE(report.has_value());
    for (const auto& l : report ? report->limits : std::vector<LimitState>{}) {
      if (l.meter == meter && l.rule().find(period) != std::string::npos) {
        return l.used.text();
      }
    }
    return "none";
  }

  void consume(const std::string& meter, const std::string& amount) {
    CheckRequest r;
    r.customer = "acme";
    r.meter = meter;
    r.amount = amount;
    auto c = engine_->check(r);
    ASSERT_TRUE(c.has_value()) << c.error().message();
    ASSERT_TRUE(c->allowed) << c->message;
  }

  FakeClock clock_{at("2025-01-20T12:00:00Z")};
  std::unique_ptr<Engine> engine_;
};

TEST_F(ResetTest, AResetInAMinuteTakesThatMinutesUsageOffAndASecondReplacesTheFirst) {
  consume("tokens", "30");
  consume("api_calls", "4");
  clock_.set_us(at("2025-01-20T12:01:10Z"));
  consume("tokens", "20");
  clock_.set_us(at("2025-01-20T12:01:40Z"));
  auto r = engine_->reset_period("acme", "tokens", "key_ops");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ASSERT_EQ(r->resets.size(), 1u);
  EXPECT_EQ(r->resets[0].first, "tokens");
  EXPECT_EQ(r->resets[0].second, at("2025-01-20T12:01:40Z"));
  EXPECT_EQ(r->updated_at_us, at("2025-01-20T12:01:40Z"));
  EXPECT_EQ(used("tokens", "day"), "0");
  EXPECT_EQ(used("tokens", "month"), "0");
  EXPECT_EQ(used("api_calls", "day"), "4") << "another meter keeps its count";
  consume("tokens", "7");
  EXPECT_EQ(used("tokens", "day"), "7");

  // Again, on a minute's boundary: the same reset, moved.
  clock_.set_us(at("2025-01-20T12:03:00Z"));
  r = engine_->reset_period("acme", "tokens", "key_ops");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ASSERT_EQ(r->resets.size(), 1u);
  EXPECT_EQ(r->resets[0].second, at("2025-01-20T12:03:00Z"));
  EXPECT_EQ(engine_->get_customer("acme")->resets, r->resets);
  EXPECT_EQ(used("tokens", "day"), "0");
  consume("tokens", "5");
  EXPECT_EQ(used("tokens", "day"), "5");

  // A second meter's reset is listed beside the first.
  r = engine_->reset_period("acme", "api_calls", "key_ops");
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->resets.size(), 2u);
  EXPECT_EQ(r->resets[1].first, "api_calls");
  EXPECT_EQ(used("api_calls", "day"), "0");
  EXPECT_EQ(used("tokens", "day"), "5");
}

TEST_F(ResetTest, OverridesAreRefusedByNameAndChangeNothing) {
  const LimitOverride good{"api_calls", LimitPeriod::kDay, 0, "50", true};
  auto refusal = [&](const std::vector<LimitOverride>& overrides) {
    auto r = engine_->set_overrides("acme", overrides);
    EXPECT_FALSE(r.has_value());
    EXPECT_EQ(r ? StatusCode::kOk : r.error().code(), StatusCode::kInvalidArgument);
    return r ? std::string() : r.error().message();
  };
  EXPECT_EQ(refusal(std::vector<LimitOverride>(65, good)), "at most 64 overrides");
  EXPECT_EQ(refusal({good, {"nope", LimitPeriod::kDay, 0, "3", true}}),
            "overrides[1].meter: 'nope' is not a configured meter");
  EXPECT_EQ(refusal({{"users", LimitPeriod::kDay, 0, "3", true}}),
            "overrides[0].meter: limits apply to count, sum, latest and max meters");
  // (A period outside the set cannot be named here: the HTTP layer refuses its text.)
  for (const LimitOverride& bad : {LimitOverride{"tokens", LimitPeriod::kDay, 0, "lots", true},
                                   LimitOverride{"tokens", LimitPeriod::kTrial, 0, "5", true}}) {
    auto why = config::make_limit(bad.meter, bad.period, bad.days, bad.amount, bad.hard);
    ASSERT_FALSE(why.has_value()) << to_string(bad.period);
    EXPECT_EQ(refusal({good, good, bad}), "overrides[2]: " + why.error().message());
  }
  EXPECT_TRUE(engine_->get_customer("acme")->overrides.empty());
  auto ghost = engine_->set_overrides("ghost", {good});
  ASSERT_FALSE(ghost.has_value());
  EXPECT_EQ(ghost.error().message(), "customer 'ghost' does not exist");
  auto done = engine_->set_overrides("acme", std::vector<LimitOverride>(64, good));
  ASSERT_TRUE(done.has_value()) << done.error().message();
  EXPECT_EQ(done->overrides.size(), 64u);
}

TEST_F(ResetTest, RefusalsNameTheirFaultAndChangeNothing) {
  auto r = engine_->reset_period("ghost", "tokens", "k");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.error().message(), "customer 'ghost' does not exist");
  r = engine_->reset_period("acme", "nope", "k");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.error().message(), "'nope' is not a configured meter");
  EXPECT_TRUE(engine_->get_customer("acme")->resets.empty());
}

}  // namespace
}  // namespace tally
