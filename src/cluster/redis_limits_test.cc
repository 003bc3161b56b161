// RedisLimits against real servers: one Redis Cluster (3 primaries + 3 replicas, started once
// for the whole binary by tests/support/redis_cluster.h) and one single non-cluster Redis. The
// tests run in the order written; the failover test kills a primary, so it comes last among
// the cluster tests.
//
// The tests' clock is injected (now_us); it starts on 2030-01-01 so that the keys' expiries,
// which Redis measures by its own clock, are all in the future.
#include "cluster/redis_limits.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "core/decimal.h"
#include "redis/slot.h"
#include "support/redis_cluster.h"

namespace tally::cluster {
namespace {

using core::kUsPerHour;
using core::kUsPerMinute;
using core::kUsPerSecond;
using core::PeriodKind;
using redis::ClusterClient;
using redis::ClusterOptions;
using testing::RedisServers;

constexpr core::TimeUs kBase = 1'893'456'000'000'000;  // 2030-01-01T00:00:00Z
constexpr core::TimeUs kUsPerDay = 24 * kUsPerHour;

core::Decimal dec(std::int64_t v) {
  return core::Decimal::from_int(v);
}

core::Decimal from_text(const char* text) {
  Result<core::Decimal> d = core::parse_decimal(text);
  EXPECT_TRUE(d.has_value()) << text;
  return d ? *d : core::Decimal{};
}

core::LimitRule rule(const char* meter, PeriodKind period, core::Decimal amount, bool hard = true) {
  core::LimitRule r;
  r.meter = meter;
  r.period = period;
  r.amount = amount;
  r.hard = hard;
  return r;
}

// Units of kUnitsPerOne as a Decimal.
core::Decimal from_units(std::int64_t units) {
  return core::Decimal{static_cast<__int128>(units) * (core::Decimal::kScale / kUnitsPerOne)};
}

std::uint16_t port_of(const std::string& endpoint) {
  return static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
}

std::unique_ptr<ClusterClient> connect_to(const std::string& seed, ClusterOptions options = {}) {
  options.seeds = {seed};
  auto client = ClusterClient::connect(options);
  EXPECT_TRUE(client.has_value()) << client.error().to_string();
  return client ? std::move(*client) : nullptr;
}

// The text a GET of `key` answers ("" for none).
std::string get(ClusterClient& client, const std::string& key) {
  Result<redis::Reply> r = client.command({"GET", key});
  EXPECT_TRUE(r.has_value()) << r.error().to_string();
  return r && r->is_text() ? r->str : std::string();
}

std::string units_text(std::int64_t value) {
  return std::to_string(value * kUnitsPerOne);
}

class ClusterLimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = testing::redis_programs_missing();
    if (!skip_reason_.empty()) {
      return;
    }
    auto started = RedisServers::start_cluster(3, 1);
    if (!started) {
      start_error_ = started.error().to_string();
      return;
    }
    cluster_ = std::move(*started);
  }

  static void TearDownTestSuite() { cluster_.reset(); }

  void SetUp() override {
    if (!skip_reason_.empty()) {
      GTEST_SKIP() << skip_reason_;
    }
    ASSERT_TRUE(cluster_) << "the cluster did not start: " << start_error_;
    client_ = connect_to(cluster_->endpoints().back());
    ASSERT_TRUE(client_);
  }

  static inline std::unique_ptr<RedisServers> cluster_;
  static inline std::string skip_reason_;
  static inline std::string start_error_;
  std::unique_ptr<ClusterClient> client_;
  core::PeriodContext ctx_;  // UTC
};

TEST_F(ClusterLimitsTest, LoadsTheLibraryOnEveryPrimary) {
  RedisLimits limits(*client_);
  ASSERT_TRUE(limits.load().ok());
  EXPECT_EQ(limits.stats().loads, 1u);
  ASSERT_EQ(client_->primaries().size(), 3u);
  for (const std::string& primary : client_->primaries()) {
    auto listed = client_->command_at(primary, {"FUNCTION", "LIST", "LIBRARYNAME", "tally_limits"});
    ASSERT_TRUE(listed.has_value()) << listed.error().to_string();
    ASSERT_TRUE(listed->is_array());
    EXPECT_EQ(listed->elements.size(), 1u) << primary;
  }
}

// 3 nodes x 8 threads, each thread with its own client, against one customer's day limit of
// 1000: together they admit exactly 1000.
TEST_F(ClusterLimitsTest, NodesTogetherAdmitExactlyTheHardLimit) {
  constexpr int kNodes = 3;
  constexpr int kThreads = 8;
  constexpr std::int64_t kLimit = 1000;
  const std::vector<core::LimitRule> rules = {rule("api_calls", PeriodKind::kDay, dec(kLimit))};
  const std::vector<std::string> endpoints = cluster_->endpoints();
  std::atomic<int> admitted{0};
  std::atomic<int> denied{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int node = 0; node < kNodes; ++node) {
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, node] {
        auto client = connect_to(endpoints[static_cast<std::size_t>(node)]);
        if (!client) {
          failed++;
          return;
        }
        RedisLimits limits(*client);
        // Each node's clock a little apart, all within the same day.
        const core::TimeUs start = kBase + 9 * kUsPerHour + node * 1000;
        for (int i = 0; i < 2 * kLimit; ++i) {
          auto r = limits.check("acme-day", rules, core::PeriodContext{}, dec(1), start + i, true);
          if (!r) {
            ADD_FAILURE() << r.error().to_string();
            failed++;
            continue;
          }
          if (!r->verdict.allowed) {
            EXPECT_FALSE(r->consumed);
            denied++;
            return;
          }
          EXPECT_TRUE(r->consumed);
          admitted++;
        }
      });
    }
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(admitted.load(), kLimit);
  EXPECT_EQ(denied.load(), kNodes * kThreads);
  EXPECT_EQ(get(*client_, window_key("acme-day", rules[0], kBase)), units_text(kLimit));
}

TEST_F(ClusterLimitsTest, MinuteRateAdmitsABurstOfTheLimitThenDrainsAtTheRate) {
  RedisLimits limits(*client_);
  const std::vector<core::LimitRule> rules = {rule("tokens", PeriodKind::kMinute, dec(10))};
  const core::TimeUs t0 = kBase + kUsPerHour;
  auto check = [&](core::TimeUs now, std::int64_t amount = 1) {
    auto r = limits.check("burst-co", rules, ctx_, dec(amount), now, true);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r ? *r : RedisCheck{};
  };
  for (int i = 1; i <= 10; ++i) {
    RedisCheck r = check(t0);
    ASSERT_TRUE(r.verdict.allowed) << i;
    EXPECT_EQ(r.after[0].used, dec(i));
  }
  RedisCheck denied = check(t0);
  EXPECT_FALSE(denied.verdict.allowed);
  EXPECT_FALSE(denied.consumed);
  EXPECT_EQ(denied.limits[0].used, dec(10));
  EXPECT_EQ(denied.limits[0].remaining, dec(0));
  EXPECT_EQ(denied.verdict.retry_after_us, 6 * kUsPerSecond);  // one unit drains in 60 s / 10
  EXPECT_EQ(denied.limits[0].reset_us, t0 + kUsPerMinute);

  // One unit drains in exactly 6 s: not a microsecond earlier. The level is reported rounded up
  // to 1e-9 (9.000000167 for 9.0000001666...), so retry_after may be a microsecond late, never
  // early.
  RedisCheck early = check(t0 + 6 * kUsPerSecond - 1);
  EXPECT_FALSE(early.verdict.allowed);
  EXPECT_GE(early.verdict.retry_after_us, 1);
  EXPECT_LE(early.verdict.retry_after_us, 2);
  EXPECT_TRUE(check(t0 + 6 * kUsPerSecond).verdict.allowed);
  EXPECT_FALSE(check(t0 + 6 * kUsPerSecond).verdict.allowed);

  // 30 s later, five more units have drained.
  const core::TimeUs t1 = t0 + 36 * kUsPerSecond;
  EXPECT_TRUE(check(t1, 5).verdict.allowed);
  EXPECT_FALSE(check(t1, 1).verdict.allowed);
  // A node whose clock is behind drains nothing: the bucket does not move back in time.
  RedisCheck behind = check(t0);
  EXPECT_FALSE(behind.verdict.allowed);
  EXPECT_EQ(behind.limits[0].used, dec(10));
  // A full minute later it is empty again and takes a whole burst.
  const core::TimeUs t2 = t1 + kUsPerMinute;
  EXPECT_TRUE(check(t2, 10).verdict.allowed);
  EXPECT_FALSE(check(t2, 1).verdict.allowed);
}

TEST_F(ClusterLimitsTest, AHardLimitThatDeniesConsumesNothingAnywhere) {
  RedisLimits limits(*client_);
  const char* customer = "two-limits";
  const std::vector<core::LimitRule> rules = {
      rule("calls", PeriodKind::kDay, dec(100)),
      rule("calls", PeriodKind::kMinute, dec(1000)),
      rule("calls", PeriodKind::kMonth, dec(50), /*hard=*/false),
  };
  const core::TimeUs now = kBase + 2 * kUsPerHour;
  const std::string day_key = window_key(customer, rules[0], kBase);
  const std::string month_key = window_key(customer, rules[2], kBase);
  const std::string rate = rate_key(customer, rules[1]);

  auto first = limits.check(customer, rules, ctx_, dec(95), now, true);
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  EXPECT_TRUE(first->verdict.allowed);
  EXPECT_TRUE(first->verdict.overage);  // past the soft month limit
  EXPECT_TRUE(first->consumed);

  auto denied = limits.check(customer, rules, ctx_, dec(10), now, true);
  ASSERT_TRUE(denied.has_value()) << denied.error().to_string();
  EXPECT_FALSE(denied->verdict.allowed);
  EXPECT_FALSE(denied->consumed);
  EXPECT_FALSE(denied->limits[0].fits);
  EXPECT_TRUE(denied->limits[1].fits);
  EXPECT_FALSE(denied->limits[2].fits);
  EXPECT_EQ(denied->verdict.top, 0);
  EXPECT_EQ(denied->verdict.retry_after_us, kBase + kUsPerDay - now);
  // Neither the rate bucket nor the other window took the 10.
  EXPECT_EQ(get(*client_, day_key), units_text(95));
  EXPECT_EQ(get(*client_, month_key), units_text(95));
  auto level = client_->command({"HGET", rate, "l"});
  ASSERT_TRUE(level.has_value() && level->is_text());
  EXPECT_EQ(level->str, units_text(95));

  // Exactly what is left fits; asking (amount 0) changes nothing.
  auto rest = limits.check(customer, rules, ctx_, dec(5), now, true);
  ASSERT_TRUE(rest.has_value());
  EXPECT_TRUE(rest->verdict.allowed);
  EXPECT_EQ(rest->after[0].remaining, dec(0));
  auto ask = limits.check(customer, rules, ctx_, dec(0), now, true);
  ASSERT_TRUE(ask.has_value());
  EXPECT_TRUE(ask->verdict.allowed);
  EXPECT_FALSE(ask->consumed);
  EXPECT_EQ(get(*client_, day_key), units_text(100));

  // A hard trial limit outside its window denies with no counter, and nothing is consumed.
  core::PeriodContext late = ctx_;
  late.trial_start_us = kBase - 30 * kUsPerDay;
  core::LimitRule trial = rule("calls", PeriodKind::kTrial, dec(1000));
  trial.days = 14;
  const std::vector<core::LimitRule> with_trial = {rules[2], trial};
  auto over = limits.check(customer, with_trial, late, dec(1), now, true);
  ASSERT_TRUE(over.has_value()) << over.error().to_string();
  EXPECT_FALSE(over->verdict.allowed);
  EXPECT_TRUE(over->verdict.trial_over);
  EXPECT_FALSE(over->consumed);
  EXPECT_EQ(get(*client_, month_key), units_text(100));
}

TEST_F(ClusterLimitsTest, ANewWindowStartsAtZero) {
  RedisLimits limits(*client_);
  const std::vector<core::LimitRule> rules = {rule("jobs", PeriodKind::kDay, dec(5))};
  const core::TimeUs now = kBase + kUsPerHour;
  for (int i = 0; i < 5; ++i) {
    auto r = limits.check("windows-co", rules, ctx_, dec(1), now, true);
    ASSERT_TRUE(r.has_value() && r->verdict.allowed);
  }
  auto full = limits.check("windows-co", rules, ctx_, dec(1), now, true);
  ASSERT_TRUE(full.has_value());
  EXPECT_FALSE(full->verdict.allowed);
  EXPECT_EQ(full->verdict.retry_after_us, 23 * kUsPerHour);

  auto next = limits.check("windows-co", rules, ctx_, dec(1), kBase + kUsPerDay, true);
  ASSERT_TRUE(next.has_value());
  EXPECT_TRUE(next->verdict.allowed);
  EXPECT_EQ(next->limits[0].used, dec(0));
  EXPECT_EQ(next->limits[0].window_start_us, kBase + kUsPerDay);
  EXPECT_EQ(next->limits[0].reset_us, kBase + 2 * kUsPerDay);
  // The first day's counter expires at the day's end plus the margin.
  auto expiry = client_->command({"PEXPIRETIME", window_key("windows-co", rules[0], kBase)});
  ASSERT_TRUE(expiry.has_value() && expiry->is_integer());
  EXPECT_EQ(expiry->integer, (kBase + kUsPerDay) / 1000 + RedisLimitsOptions{}.expiry_margin_ms);
}

TEST_F(ClusterLimitsTest, SeedSetsOnlyAMissingCounterAndReleaseGivesBack) {
  RedisLimits limits(*client_);
  const core::LimitRule day = rule("seeded", PeriodKind::kDay, dec(100));
  const core::TimeUs now = kBase + 5 * kUsPerHour;
  auto seeded = limits.seed("seed-co", day, ctx_, dec(40), now);
  ASSERT_TRUE(seeded.has_value()) << seeded.error().to_string();
  EXPECT_TRUE(*seeded);
  auto again = limits.seed("seed-co", day, ctx_, dec(70), now);
  ASSERT_TRUE(again.has_value());
  EXPECT_FALSE(*again);  // left as it was

  auto ask = limits.check("seed-co", {day}, ctx_, dec(0), now, false);
  ASSERT_TRUE(ask.has_value());
  EXPECT_EQ(ask->limits[0].used, dec(40));
  auto rest = limits.check("seed-co", {day}, ctx_, dec(60), now, true);
  ASSERT_TRUE(rest.has_value() && rest->verdict.allowed);
  auto full = limits.check("seed-co", {day}, ctx_, dec(1), now, true);
  ASSERT_TRUE(full.has_value());
  EXPECT_FALSE(full->verdict.allowed);
  // The seeded counter keeps the expiry the seed gave it (the window's end plus the margin)
  // through the checks that consumed on it.
  auto expiry = client_->command({"PEXPIRETIME", window_key("seed-co", day, kBase)});
  ASSERT_TRUE(expiry.has_value() && expiry->is_integer());
  EXPECT_EQ(expiry->integer, (kBase + kUsPerDay) / 1000 + RedisLimitsOptions{}.expiry_margin_ms);

  auto released = limits.release("seed-co", day, ctx_, from_text("25.5"), now);
  ASSERT_TRUE(released.has_value()) << released.error().to_string();
  EXPECT_EQ(*released, 74'500'000);
  auto refit = limits.check("seed-co", {day}, ctx_, from_text("25.5"), now, true);
  ASSERT_TRUE(refit.has_value() && refit->verdict.allowed);
  auto all = limits.release("seed-co", day, ctx_, dec(1000), now);
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(*all, 0);  // never below zero
  auto missing = limits.release("seed-co", day, ctx_, dec(1), now + 3 * kUsPerDay);
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(*missing, -1);

  auto rate =
      limits.seed("seed-co", rule("seeded", PeriodKind::kMinute, dec(5)), ctx_, dec(1), now);
  ASSERT_FALSE(rate.has_value());
  EXPECT_EQ(rate.error().code(), StatusCode::kInvalidArgument);
}

// take_back undoes a consumption on every counter it consumed on: the day window (shared by
// two rules, taken back once) and the minute bucket, which then admits what it admitted before.
TEST_F(ClusterLimitsTest, TakeBackGivesAConsumptionBackToEveryCounter) {
  RedisLimits limits(*client_);
  const std::vector<core::LimitRule> rules = {rule("undo", PeriodKind::kDay, dec(10)),
                                              rule("undo", PeriodKind::kDay, dec(50), false),
                                              rule("undo", PeriodKind::kMinute, dec(4))};
  const core::TimeUs now = kBase + 3 * kUsPerHour;
  for (int i = 0; i < 3; ++i) {
    auto r = limits.check("undo-co", rules, ctx_, dec(1), now, true);
    ASSERT_TRUE(r.has_value() && r->verdict.allowed) << i;
  }
  // The minute bucket holds 3 of 4, the day 3 of 10: a check of 2 is denied by the bucket.
  auto two = limits.check("undo-co", rules, ctx_, dec(2), now, false);
  ASSERT_TRUE(two.has_value());
  EXPECT_FALSE(two->verdict.allowed);

  auto given = limits.take_back("undo-co", rules, ctx_, dec(1), now);
  ASSERT_TRUE(given.has_value()) << given.error().to_string();
  EXPECT_EQ(*given, 2);  // the day counter (once) and the bucket
  EXPECT_EQ(get(*client_, window_key("undo-co", rules[0], kBase)), units_text(2));
  auto after = limits.check("undo-co", rules, ctx_, dec(2), now, true);
  ASSERT_TRUE(after.has_value());
  EXPECT_TRUE(after->verdict.allowed);
  EXPECT_EQ(after->after[0].used, dec(4));

  // Never below zero; counters that are gone stay gone.
  auto all = limits.take_back("undo-co", rules, ctx_, dec(100), now);
  ASSERT_TRUE(all.has_value());
  EXPECT_EQ(get(*client_, window_key("undo-co", rules[0], kBase)), "0");
  auto later = limits.take_back("undo-co", rules, ctx_, dec(1), now + 2 * kUsPerDay);
  ASSERT_TRUE(later.has_value());
  EXPECT_EQ(*later, 1);  // only the bucket: the later day's window has no counter
  EXPECT_EQ(get(*client_, window_key("undo-co", rules[0], kBase + 2 * kUsPerDay)), "");
}

TEST_F(ClusterLimitsTest, TheFunctionIsLoadedAgainAfterFunctionFlush) {
  auto flushed = client_->command_on_all_primaries({"FUNCTION", "FLUSH"});
  ASSERT_TRUE(flushed.has_value() && flushed->is_text()) << flushed.error().to_string();
  for (const std::string& primary : client_->primaries()) {
    auto listed = client_->command_at(primary, {"FUNCTION", "LIST"});
    ASSERT_TRUE(listed.has_value() && listed->is_array());
    EXPECT_TRUE(listed->elements.empty()) << primary;
  }
  RedisLimits limits(*client_);
  const std::vector<core::LimitRule> rules = {rule("after-flush", PeriodKind::kDay, dec(3))};
  auto r = limits.check("flush-co", rules, ctx_, dec(1), kBase, true);
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_TRUE(r->verdict.allowed);
  EXPECT_EQ(limits.stats().reloads, 1u);
  EXPECT_EQ(limits.stats().loads, 1u);
  EXPECT_EQ(get(*client_, window_key("flush-co", rules[0], kBase)), units_text(1));
  for (const std::string& primary : client_->primaries()) {
    auto listed = client_->command_at(primary, {"FUNCTION", "LIST", "LIBRARYNAME", "tally_limits"});
    ASSERT_TRUE(listed.has_value() && listed->is_array());
    EXPECT_EQ(listed->elements.size(), 1u) << primary;
  }
  // Loaded: the next call needs no reload.
  ASSERT_TRUE(limits.check("flush-co", rules, ctx_, dec(1), kBase, true).has_value());
  EXPECT_EQ(limits.stats().reloads, 1u);
}

TEST_F(ClusterLimitsTest, ValuesOutOfBoundsAreRefusedBeforeAnythingIsSent) {
  RedisLimits limits(*client_);
  const std::uint64_t sent = client_->stats().commands;
  const std::vector<core::LimitRule> fine = {rule("bounds", PeriodKind::kDay, dec(10))};
  auto finer = limits.check("bounds-co", fine, ctx_, from_text("0.0000001"), kBase, true);
  ASSERT_FALSE(finer.has_value());
  EXPECT_EQ(finer.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(finer.error().message().find("finer than 0.000001"), std::string::npos);

  const std::vector<core::LimitRule> huge = {
      rule("bounds", PeriodKind::kMinute, dec(2'000'000'000))};
  auto large = limits.check("bounds-co", huge, ctx_, dec(1), kBase, true);
  ASSERT_FALSE(large.has_value());
  EXPECT_NE(large.error().message().find("the limit of bounds per minute 2000000000 is above"),
            std::string::npos)
      << large.error().message();
  auto negative = limits.check("bounds-co", {rule("bounds", PeriodKind::kDay, dec(-1))}, ctx_,
                               dec(1), kBase, true);
  ASSERT_FALSE(negative.has_value());
  EXPECT_EQ(negative.error().code(), StatusCode::kInvalidArgument);
  auto seed = limits.seed("bounds-co", fine[0], ctx_, dec(5'000'000'000), kBase);
  ASSERT_FALSE(seed.has_value());
  EXPECT_EQ(seed.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->stats().commands, sent) << "nothing may be sent for refused values";

  // A counter is never taken past 2^52 units, not even by a soft limit: refused, nothing taken.
  const std::vector<core::LimitRule> soft = {
      rule("bounds", PeriodKind::kDay, dec(10), /*hard=*/false)};
  auto full = limits.seed("bounds-co", soft[0], ctx_, from_units(kCounterUnitsMax), kBase);
  ASSERT_TRUE(full.has_value() && *full) << full.status().to_string();
  auto past = limits.check("bounds-co", soft, ctx_, dec(1), kBase, true);
  ASSERT_FALSE(past.has_value());
  EXPECT_EQ(past.error().code(), StatusCode::kUnprocessable);
  EXPECT_NE(past.error().message().find("would exceed 2^52 units"), std::string::npos)
      << past.error().message();
  EXPECT_EQ(get(*client_, window_key("bounds-co", soft[0], kBase)),
            std::to_string(kCounterUnitsMax));
}

// A primary killed while 3 nodes x 4 threads consume one customer's day limit: the checks
// answer again once its replica has taken over, and the nodes still never admit more than the
// limit. Consuming checks wait for the replica (wait_replicas 1), so a consumption the dead
// primary had not replicated is one the caller was told "may have run", never an admission.
TEST_F(ClusterLimitsTest, AKilledPrimaryFailsOverAndTheLimitHolds) {
  constexpr int kNodes = 3;
  constexpr int kThreads = 4;
  constexpr int kLimit = 1000;
  const char* customer = "failover-co";
  const std::vector<core::LimitRule> rules = {rule("calls", PeriodKind::kDay, dec(kLimit))};
  const std::string key = window_key(customer, rules[0], kBase);
  const std::string old_primary = client_->primary_for_slot(redis::key_slot(key));
  ASSERT_FALSE(old_primary.empty());
  std::vector<std::string> seeds;
  for (const std::string& e : cluster_->endpoints()) {
    if (e != old_primary) {
      seeds.push_back(e);
    }
  }

  std::atomic<int> admitted{0};
  std::atomic<int> admitted_after_kill{0};
  std::atomic<int> maybe{0};            // failures that may have consumed
  std::atomic<int> not_run{0};          // failures that certainly did not
  std::atomic<int> finished{0};         // threads that met the limit's denial
  std::atomic<std::uint64_t> waits{0};  // WAITs for the replica after consuming
  std::atomic<bool> killed{false};
  std::vector<std::thread> threads;
  for (int node = 0; node < kNodes; ++node) {
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, node] {
        ClusterOptions options;
        options.command_timeout_ms = 500;
        options.retries_max = 2;
        options.retry_delay_ms = 20;
        auto client = connect_to(seeds[static_cast<std::size_t>(node) % seeds.size()], options);
        if (!client) {
          return;
        }
        RedisLimitsOptions limits_options;
        limits_options.wait_replicas = 1;
        limits_options.wait_timeout_ms = 200;
        RedisLimits limits(*client, limits_options);
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
        core::TimeUs now = kBase + 12 * kUsPerHour;
        while (std::chrono::steady_clock::now() < deadline) {
          now += 1000;
          auto r = limits.check(customer, rules, core::PeriodContext{}, dec(1), now, true);
          if (!r) {
            EXPECT_EQ(r.error().code(), StatusCode::kUnavailable) << r.error().to_string();
            (may_have_run(r.error()) ? maybe : not_run)++;
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
            continue;
          }
          if (!r->verdict.allowed) {
            finished++;
            waits += limits.stats().waits;
            return;
          }
          admitted++;
          if (killed.load()) {
            admitted_after_kill++;
          }
          std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
      });
    }
  }
  while (admitted.load() < 300 && finished.load() == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  const int before_kill = admitted.load();
  ASSERT_TRUE(cluster_->kill_node(port_of(old_primary)));
  killed = true;
  const auto killed_at = std::chrono::steady_clock::now();
  for (auto& t : threads) {
    t.join();
  }
  const auto took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - killed_at)
                           .count();
  std::printf(
      "failover: %d admitted before the kill, %d after; %d failures that may have run, %d that "
      "did not; all threads met the limit %lld ms after the kill\n",
      before_kill, admitted_after_kill.load(), maybe.load(), not_run.load(),
      static_cast<long long>(took_ms));
  EXPECT_EQ(finished.load(), kNodes * kThreads) << "every thread ends on the limit's denial";
  EXPECT_GT(admitted_after_kill.load(), 0) << "checks must resume on the promoted replica";
  EXPECT_GE(waits.load(), static_cast<std::uint64_t>(before_kill))
      << "every consumption before the kill waited for the replica";
  EXPECT_LE(admitted.load(), kLimit);
  EXPECT_GE(admitted.load() + maybe.load(), kLimit)
      << "what the counter holds was admitted or reported as possibly consumed";
  auto after = connect_to(seeds.front());
  ASSERT_TRUE(after);
  EXPECT_NE(after->primary_for_slot(redis::key_slot(key)), old_primary);
  EXPECT_EQ(get(*after, key), units_text(kLimit));
}

// A single Redis without cluster support.
class StandaloneLimitsTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = testing::redis_programs_missing();
    if (!skip_reason_.empty()) {
      return;
    }
    auto started = RedisServers::start_standalone();
    if (!started) {
      start_error_ = started.error().to_string();
      return;
    }
    server_ = std::move(*started);
  }

  static void TearDownTestSuite() { server_.reset(); }

  void SetUp() override {
    if (!skip_reason_.empty()) {
      GTEST_SKIP() << skip_reason_;
    }
    ASSERT_TRUE(server_) << "the server did not start: " << start_error_;
    client_ = connect_to(server_->endpoints().front());
    ASSERT_TRUE(client_);
  }

  static inline std::unique_ptr<RedisServers> server_;
  static inline std::string skip_reason_;
  static inline std::string start_error_;
  std::unique_ptr<ClusterClient> client_;
  core::PeriodContext ctx_;
};

// Limits of 0 admit only asking; an unlimited window is counted and never denies; an unlimited
// rate has no bucket.
TEST_F(StandaloneLimitsTest, ZeroAndUnlimitedLimits) {
  RedisLimits limits(*client_);
  core::LimitRule unlimited_day = rule("edge", PeriodKind::kDay, core::Decimal{});
  unlimited_day.unlimited = true;
  core::LimitRule unlimited_minute = rule("edge", PeriodKind::kMinute, core::Decimal{});
  unlimited_minute.unlimited = true;
  const std::vector<core::LimitRule> open = {unlimited_day, unlimited_minute};
  for (int i = 1; i <= 3; ++i) {
    auto r = limits.check("edge-co", open, ctx_, dec(1000), kBase, true);
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    EXPECT_TRUE(r->verdict.allowed);
    EXPECT_EQ(r->verdict.top, -1);                      // every limit unlimited
    EXPECT_EQ(r->limits[0].used, dec(1000 * (i - 1)));  // as core reports an unlimited window
  }
  EXPECT_EQ(get(*client_, window_key("edge-co", unlimited_day, kBase)), units_text(3000));
  auto bucket = client_->command({"EXISTS", rate_key("edge-co", unlimited_minute)});
  ASSERT_TRUE(bucket.has_value() && bucket->is_integer());
  EXPECT_EQ(bucket->integer, 0);

  const std::vector<core::LimitRule> zero = {rule("zero", PeriodKind::kDay, core::Decimal{}),
                                             rule("zero", PeriodKind::kMinute, core::Decimal{})};
  auto one = limits.check("edge-co", zero, ctx_, from_units(1), kBase, true);
  ASSERT_TRUE(one.has_value()) << one.error().to_string();
  EXPECT_FALSE(one->verdict.allowed);
  EXPECT_FALSE(one->limits[0].fits);
  EXPECT_FALSE(one->limits[1].fits);
  auto ask = limits.check("edge-co", zero, ctx_, core::Decimal{}, kBase, true);
  ASSERT_TRUE(ask.has_value()) << ask.error().to_string();
  EXPECT_TRUE(ask->verdict.allowed);
  EXPECT_FALSE(ask->consumed);
}

// An ideal GCRA bucket in exact integers: the fill times the period, in units x us.
struct ExactBucket {
  __int128 fill = 0;
  core::TimeUs at_us = 0;

  __int128 drained(std::int64_t limit, core::TimeUs now) const {
    const __int128 d = static_cast<__int128>(limit) * std::max<core::TimeUs>(0, now - at_us);
    return fill > d ? fill - d : 0;
  }
};

// The function's GCRA on a random sequence equals an exact model of the ideal bucket, decision
// and level (rounded up to 1e-9), every time; and core::rate_evaluate's decision, except where
// its rounding (down to 1e-9 at each consumption) leaves it within the documented bound.
TEST_F(StandaloneLimitsTest, GcraMatchesTheExactBucketAndCoreWithinItsRounding) {
  RedisLimits limits(*client_);

  struct Case {
    const char* limit;
    PeriodKind period;
  };

  const Case cases[] = {{"7", PeriodKind::kMinute},
                        {"2.5", PeriodKind::kSecond},
                        {"1000000", PeriodKind::kHour},
                        {"0.000003", PeriodKind::kMinute}};
  const char* const amounts[] = {"0", "0.5", "1", "2", "3", "0.000001", "7", "0.333333"};
  std::mt19937_64 rng(20301);
  int mismatches = 0;
  int steps = 0;
  int c = 0;
  for (const Case& k : cases) {
    const core::LimitRule r = rule("gcra", k.period, from_text(k.limit));
    const std::vector<core::LimitRule> rules = {r};
    const std::string customer = "gcra-" + std::to_string(c++);
    const core::TimeUs period = core::rate_period_us(k.period);
    const std::int64_t limit_units = *to_units(r.amount, "limit");
    ExactBucket exact;
    core::RateState core_state;
    std::int64_t rounded = 0;  // core's consumptions since its level was last exact
    core::TimeUs now = kBase;
    for (int i = 0; i < 1500; ++i) {
      now += static_cast<core::TimeUs>(rng() % static_cast<std::uint64_t>(period / 4));
      // Amounts scaled to the limit, so buckets fill and deny often.
      core::Decimal amount = from_text(amounts[rng() % std::size(amounts)]);
      if (limit_units < 1000) {
        amount = from_units(static_cast<std::int64_t>(rng() % 3));
      } else if (limit_units > 100'000'000) {
        amount = core::Decimal{amount.units * 100'000};
      }
      const std::int64_t amount_units = *to_units(amount, "amount");
      auto got = limits.check(customer, rules, ctx_, amount, now, true);
      ASSERT_TRUE(got.has_value()) << got.error().to_string();
      ++steps;

      const __int128 fill = exact.drained(limit_units, now);
      const bool fits = fill + static_cast<__int128>(amount_units) * period <=
                        static_cast<__int128>(limit_units) * period;
      // The level in 1e-9 units, rounded up.
      const __int128 level9 = (fill * 1000 + period - 1) / period;
      ASSERT_EQ(got->verdict.allowed, fits) << "step " << i << " of " << customer;
      ASSERT_EQ(got->limits[0].used.units, level9) << "step " << i << " of " << customer;
      ASSERT_EQ(got->consumed, fits && amount_units > 0);
      if (fits && amount_units > 0) {
        exact.fill = fill + static_cast<__int128>(amount_units) * period;
        exact.at_us = std::max(exact.at_us, now);
      }

      const core::Decimal core_level = core::rate_level(core_state, r.amount, period, now);
      const core::RateDecision d = core::rate_evaluate(core_state, r.amount, period, amount, now);
      if (core_level.units == 0) {
        rounded = 0;
      }
      // core's level is never below the ideal one, and above it by at most its roundings.
      EXPECT_GE(core_level.units, level9);
      EXPECT_LE(core_level.units - level9, rounded) << "step " << i << " of " << customer;
      if (d.allowed != fits) {
        ++mismatches;
        EXPECT_TRUE(fits) << "core may deny where the ideal bucket admits, never the reverse";
        EXPECT_LE((core_level + amount - r.amount).units, rounded);
        // Continue from the ideal bucket's state, rounded up as the function reports it.
        core_state = core::RateState{got->consumed ? got->after[0].used : got->limits[0].used, now};
        rounded = 1;
      } else if (d.allowed && amount_units > 0) {
        core_state = core::RateState{d.level_after, now};
        ++rounded;
      }
    }
  }
  std::printf("gcra: %d checks, %d where core's rounding denied what the ideal bucket admitted\n",
              steps, mismatches);
}

// The function takes limit * r + f (r the part of a period elapsed, f the bucket's remainder)
// with one double division when it is below 2^53 and in base-2^16 digits otherwise: levels and
// decisions equal the exact model on both sides of the switch, at consecutive microseconds.
TEST_F(StandaloneLimitsTest, GcraIsExactOnBothSidesOf2To53) {
  RedisLimits limits(*client_);
  // 2.502001 per hour: limit * r passes 2^53 about 298 us before a whole hour has elapsed; an
  // odd limit makes some of those sums odd, which a double past 2^53 cannot hold.
  const core::LimitRule r = rule("switch", PeriodKind::kHour, from_text("2.502001"));
  const std::vector<core::LimitRule> rules = {r};
  const std::int64_t limit_units = 2'502'001;
  const core::TimeUs period = kUsPerHour;
  // Two consumptions a non-whole number of periods apart leave a remainder f > 0; the second
  // fills the bucket as far as whole units go, so that it still holds something after nearly
  // an hour of draining.
  ExactBucket exact;
  const core::TimeUs t1 = kBase + 1'234'567;
  for (core::TimeUs at : {kBase, t1}) {
    const __int128 fill = exact.drained(limit_units, at);
    const auto units = at == kBase
                           ? std::int64_t{1'000'000}
                           : static_cast<std::int64_t>(
                                 (static_cast<__int128>(limit_units) * period - fill) / period);
    auto got = limits.check("switch-co", rules, ctx_, from_units(units), at, true);
    ASSERT_TRUE(got.has_value()) << got.error().to_string();
    ASSERT_TRUE(got->consumed);
    exact.fill = fill + static_cast<__int128>(units) * period;
    exact.at_us = at;
  }
  auto h = client_->command({"HGET", rate_key("switch-co", r), "f"});
  ASSERT_TRUE(h.has_value() && h->is_text());
  const std::int64_t f = std::stoll(h->str);
  ASSERT_GT(f, 0);
  constexpr __int128 kTwo53 = __int128{1} << 53;
  const auto first = static_cast<std::int64_t>((kTwo53 - f) / limit_units);  // last r below
  int below = 0;
  int above = 0;
  for (std::int64_t e = first - 3; e <= first + 3; ++e) {
    ASSERT_LT(e, period);
    const __int128 x = static_cast<__int128>(limit_units) * e + f;
    (x < kTwo53 ? below : above) += 1;
    const core::TimeUs now = t1 + e;
    // The function's own answer, (level, f) with fill = level * period - f, to the microsecond.
    auto raw = client_->command({"FCALL", "tally_check", "1", rate_key("switch-co", r),
                                 std::to_string(now), "0", "0", "0", "0", "r",
                                 std::to_string(limit_units), "1", "0", std::to_string(period)});
    ASSERT_TRUE(raw.has_value() && raw->is_array() && raw->elements.size() == 5);
    EXPECT_EQ(static_cast<__int128>(raw->elements[3].integer) * period - raw->elements[4].integer,
              exact.drained(limit_units, now))
        << "elapsed " << e;
    for (std::int64_t units : {std::int64_t{0}, std::int64_t{1}, limit_units / 1000}) {
      auto got = limits.check("switch-co", rules, ctx_, from_units(units), now, false);
      ASSERT_TRUE(got.has_value()) << got.error().to_string();
      const __int128 fill = exact.drained(limit_units, now);
      ASSERT_GT(fill, 0);
      const __int128 level9 = (fill * 1000 + period - 1) / period;
      EXPECT_EQ(got->limits[0].used.units, level9) << "elapsed " << e;
      EXPECT_EQ(got->verdict.allowed, fill + static_cast<__int128>(units) * period <=
                                          static_cast<__int128>(limit_units) * period)
          << "elapsed " << e << ", amount " << units;
    }
  }
  EXPECT_GT(below, 0);
  EXPECT_GT(above, 0);
}

// A check sent to a server that is busy: no answer within the timeout, so the call fails saying
// the check may have run; and it did run (the server answered it later).
TEST_F(StandaloneLimitsTest, ACheckWithoutAnAnswerMayHaveRun) {
  RedisLimits warm(*client_);
  ASSERT_TRUE(warm.load().ok());
  ClusterOptions options;
  options.command_timeout_ms = 200;
  auto client = connect_to(server_->endpoints().front(), options);
  ASSERT_TRUE(client);
  std::thread busy([] {
    auto other = connect_to(server_->endpoints().front());
    ASSERT_TRUE(other);
    const char* slow =
        "local t = redis.call('TIME')\n"
        "local start = t[1] * 1000000 + t[2]\n"
        "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 600000\n"
        "return 1\n";
    auto r = other->command({"EVAL", slow, "0"});
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  RedisLimits limits(*client);
  const core::LimitRule day = rule("slow", PeriodKind::kDay, dec(10));
  auto r = limits.check("slow-co", {day}, ctx_, dec(1), kBase, true);
  busy.join();
  ASSERT_FALSE(r.has_value());
  EXPECT_TRUE(may_have_run(r.error())) << r.error().to_string();
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(get(*client_, window_key("slow-co", day, kBase)), units_text(1));
}

// A Redis over its maxmemory refuses the function before it runs: a clear error, not a
// denial, and nothing consumed.
TEST_F(StandaloneLimitsTest, AnOutOfMemoryRedisIsResourceExhausted) {
  RedisLimits limits(*client_);
  ASSERT_TRUE(limits.load().ok());
  const core::LimitRule day = rule("oom", PeriodKind::kDay, dec(10));
  auto set = client_->command({"CONFIG", "SET", "maxmemory", "1"});
  ASSERT_TRUE(set.has_value() && set->is_text()) << set.error().to_string();
  auto r = limits.check("oom-co", {day}, ctx_, dec(1), kBase, true);
  auto reset = client_->command({"CONFIG", "SET", "maxmemory", "0"});
  ASSERT_TRUE(reset.has_value() && reset->is_text());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kResourceExhausted) << r.error().to_string();
  EXPECT_FALSE(may_have_run(r.error()));
  EXPECT_EQ(get(*client_, window_key("oom-co", day, kBase)), "");
  auto after = limits.check("oom-co", {day}, ctx_, dec(1), kBase, true);
  ASSERT_TRUE(after.has_value()) << after.error().to_string();
  EXPECT_TRUE(after->verdict.allowed);
}

TEST_F(StandaloneLimitsTest, ChecksPerSecondOfOneThread) {
  RedisLimits limits(*client_);
  const std::vector<core::LimitRule> rules = {
      rule("speed", PeriodKind::kDay, dec(1'000'000'000)),
      rule("speed", PeriodKind::kMinute, dec(1'000'000'000))};
  constexpr int kChecks = 5000;
  ASSERT_TRUE(limits.check("speed-co", rules, ctx_, dec(1), kBase, true).has_value());
  auto reset = client_->command({"CONFIG", "RESETSTAT"});
  ASSERT_TRUE(reset.has_value() && reset->is_text());
  const auto start = std::chrono::steady_clock::now();
  int allowed = 0;
  for (int i = 0; i < kChecks; ++i) {
    auto r = limits.check("speed-co", rules, ctx_, dec(1), kBase + i, true);
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    allowed += r->verdict.allowed ? 1 : 0;
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(allowed, kChecks);
  std::printf(
      "one thread: %.0f consuming checks/s of two limits (%d in %.3f s; this build's "
      "sanitizers included)\n",
      kChecks / seconds, kChecks, seconds);
  // The function's own time inside Redis (INFO commandstats), without the round trip.
  auto stats = client_->command({"INFO", "commandstats"});
  ASSERT_TRUE(stats.has_value() && stats->is_text());
  const std::string field = "cmdstat_fcall:";
  const std::size_t at = stats->str.find(field);
  ASSERT_NE(at, std::string::npos) << stats->str;
  const std::size_t usec = stats->str.find("usec_per_call=", at);
  ASSERT_NE(usec, std::string::npos);
  std::printf("tally_check inside Redis: %.2f us per call (INFO commandstats)\n",
              std::atof(stats->str.c_str() + usec + 14));
}

}  // namespace
}  // namespace tally::cluster
