#include "engine/cluster_leases.h"

#include <gtest/gtest.h>

namespace tally::engine {
namespace {

constexpr core::TimeUs kT = 1'796'637'600'000'000;  // 2026-12-07T10:00:00Z

core::Decimal units(std::int64_t n) {
  return core::Decimal::from_int(n);
}

std::vector<core::LimitRule> day_rule(std::int64_t amount) {
  core::LimitRule rule;
  rule.meter = "api_calls";
  rule.period = core::PeriodKind::kDay;
  rule.amount = units(amount);
  return {rule};
}

// A lease of `left` of a day limit of 50 on which the take counted `counted`.
CheckLease lease_of(const std::string& customer, std::int64_t counted, std::int64_t left) {
  CheckLease lease;
  lease.customer = customer;
  lease.rules = day_rule(50);
  lease.left = units(left);
  lease.taken_us = kT;
  lease.until_us = kT + 1'000'000;
  lease.taken.verdict.allowed = true;
  lease.taken.consumed = true;
  core::LimitOutcome after;
  after.used = units(counted);
  after.remaining = units(50 - counted);
  after.headroom = units(50 - counted);
  lease.taken.after = {after};
  lease.taken.limits = {after};
  return lease;
}

TEST(CheckLeasesTest, AnAnswerCountsWhatWasUsedNotWhatTheLeaseHolds) {
  CheckLeases leases;
  // The take counted 30 (20 before it, 10 leased); the check that took it used 1.
  EXPECT_FALSE(leases.put("api_calls", lease_of("c", 30, 9)).has_value());
  cluster::RedisCheck answer;
  ASSERT_TRUE(leases.use("c", "api_calls", day_rule(50), units(2), kT + 10, &answer));
  ASSERT_EQ(answer.after.size(), 1u);
  EXPECT_EQ(answer.after[0].used.text(), "23");  // 20 + 1 + 2
  EXPECT_EQ(answer.after[0].remaining.text(), "27");
  EXPECT_EQ(answer.after[0].headroom.text(), "27");
  EXPECT_TRUE(answer.consumed);
}

TEST(CheckLeasesTest, ALeaseIsUsedOnlyWithinItsLifeItsRulesAndWhatItHolds) {
  CheckLeases leases;
  leases.put("api_calls", lease_of("c", 10, 3));
  cluster::RedisCheck answer;
  EXPECT_FALSE(leases.use("c", "other", day_rule(50), units(1), kT, &answer));
  EXPECT_FALSE(leases.use("d", "api_calls", day_rule(50), units(1), kT, &answer));
  EXPECT_FALSE(leases.use("c", "api_calls", day_rule(60), units(1), kT, &answer));  // new rules
  EXPECT_FALSE(leases.use("c", "api_calls", day_rule(50), units(4), kT, &answer));  // too much
  EXPECT_FALSE(leases.use("c", "api_calls", day_rule(50), units(1), kT - 1, &answer));
  EXPECT_FALSE(leases.use("c", "api_calls", day_rule(50), units(1), kT + 1'000'000, &answer));
  // Nothing failed above took anything: 3 uses of 1 fit, the fourth does not.
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(leases.use("c", "api_calls", day_rule(50), units(1), kT, &answer));
  }
  EXPECT_FALSE(leases.use("c", "api_calls", day_rule(50), units(1), kT, &answer));
}

TEST(CheckLeasesTest, EndedReplacedAndResetLeasesAreHandedBackOnce) {
  CheckLeases leases;
  leases.put("api_calls", lease_of("a", 10, 5));
  CheckLease later = lease_of("b", 10, 5);
  later.until_us = kT + 5'000'000;
  leases.put("api_calls", later);
  leases.put("tokens", lease_of("b", 10, 5));
  // A new lease of the same pair replaces the old one, which comes back to be given back.
  auto replaced = leases.put("tokens", lease_of("b", 20, 8));
  ASSERT_TRUE(replaced.has_value());
  EXPECT_EQ(replaced->left.text(), "5");
  EXPECT_EQ(leases.size(), 3u);
  // At kT + 1 s the leases of life 1 s have ended; b's api_calls lease lives on.
  auto ended = leases.take_expired(kT + 1'000'000);
  EXPECT_EQ(ended.size(), 2u);
  EXPECT_TRUE(leases.take_expired(kT + 1'000'000).empty());
  EXPECT_EQ(leases.size(), 1u);
  EXPECT_TRUE(leases.take_customer("a").empty());
  EXPECT_EQ(leases.take_customer("b").size(), 1u);
  EXPECT_TRUE(leases.take_all().empty());
}

TEST(CheckLeasesTest, APairCoolsUntilItsTime) {
  CheckLeases leases;
  EXPECT_FALSE(leases.cooling("c", "api_calls", kT));
  leases.cool("c", "api_calls", kT + 100);
  EXPECT_TRUE(leases.cooling("c", "api_calls", kT + 99));
  EXPECT_FALSE(leases.cooling("c", "other", kT + 99));
  EXPECT_FALSE(leases.cooling("c", "api_calls", kT + 100));
  leases.cool("c", "api_calls", kT + 200);
  leases.take_customer("c");  // a reset forgets it
  EXPECT_FALSE(leases.cooling("c", "api_calls", kT));
}

}  // namespace
}  // namespace tally::engine
