// The pure parts of redis_limits.h: the bounds of the integer scale and the keys of a customer
// (their hash tag is always the whole id). Its tests against real Redis servers are in
// redis_limits_test.cc (tally_cluster_redis_tests).
#include <string>

#include <gtest/gtest.h>

#include "cluster/redis_limits.h"
#include "core/decimal.h"
#include "redis/slot.h"

namespace tally::cluster {
namespace {

core::Decimal dec(const char* text) {
  Result<core::Decimal> d = core::parse_decimal(text);
  EXPECT_TRUE(d.has_value()) << text;
  return d ? *d : core::Decimal{};
}

TEST(LimitUnitsTest, WholeAndMillionthsAreExact) {
  EXPECT_EQ(*to_units(dec("0"), "x"), 0);
  EXPECT_EQ(*to_units(dec("1"), "x"), 1'000'000);
  EXPECT_EQ(*to_units(dec("0.000001"), "x"), 1);
  EXPECT_EQ(*to_units(dec("2.5"), "x"), 2'500'000);
  // The largest value: 2^50 units.
  EXPECT_EQ(*to_units(dec("1125899906.842624"), "x"), kValueUnitsMax);
}

TEST(LimitUnitsTest, OutOfBoundsValuesAreRefusedNamingThem) {
  Result<std::int64_t> fine = to_units(dec("0.0000001"), "the amount");
  ASSERT_FALSE(fine.has_value());
  EXPECT_EQ(fine.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(fine.error().message().find("the amount 0.0000001 is finer than 0.000001"),
            std::string::npos)
      << fine.error().message();

  Result<std::int64_t> large = to_units(dec("1125899906.842625"), "the limit");
  ASSERT_FALSE(large.has_value());
  EXPECT_NE(large.error().message().find("is above 1125899906.842624"), std::string::npos)
      << large.error().message();

  Result<std::int64_t> negative = to_units(dec("-1"), "the amount");
  ASSERT_FALSE(negative.has_value());
  EXPECT_NE(negative.error().message().find("must not be negative"), std::string::npos);

  // A counter may hold up to 2^52 units (seeds).
  EXPECT_EQ(*to_units(dec("4503599627.370496"), "x", kCounterUnitsMax), kCounterUnitsMax);
  EXPECT_FALSE(to_units(dec("4503599627.370497"), "x", kCounterUnitsMax).has_value());
}

TEST(LimitKeysTest, APlainIdIsItsOwnTag) {
  EXPECT_EQ(customer_key_prefix("acme"), "{tally:c:acme}:");
  core::LimitRule day{.meter = "api_calls", .period = core::PeriodKind::kDay};
  EXPECT_EQ(window_key("acme", day, 1893456000000000),
            "{tally:c:acme}:w:api_calls:day:1893456000000000");
  core::LimitRule minute{.meter = "api_calls", .period = core::PeriodKind::kMinute};
  minute.amount = dec("7.5");
  EXPECT_EQ(rate_key("acme", minute), "{tally:c:acme}:r:api_calls:minute:7.5");
}

TEST(LimitKeysTest, IdsWithBracesOrATildeAreWrittenInHex) {
  EXPECT_EQ(customer_key_prefix("a}b"), "{tally:c:~617d62}:");
  EXPECT_EQ(customer_key_prefix("{x"), "{tally:c:~7b78}:");
  EXPECT_EQ(customer_key_prefix("~61"), "{tally:c:~7e3631}:");
  // So "~61" and "a" (hex 61) never share keys.
  EXPECT_NE(customer_key_prefix("~61"), customer_key_prefix("a"));
}

TEST(LimitKeysTest, EveryKeyOfACustomerHashesByTheWholeId) {
  core::LimitRule day{.meter = "m}{x", .period = core::PeriodKind::kDay};
  core::LimitRule hour{.meter = "m", .period = core::PeriodKind::kHour};
  hour.amount = dec("10");
  for (const std::string id : {"acme", "a}b", "{x}", "}", "~", "", "with space:colon"}) {
    const std::uint16_t slot = redis::key_slot(customer_key_prefix(id));
    EXPECT_EQ(redis::key_slot(window_key(id, day, 0)), slot) << id;
    EXPECT_EQ(redis::key_slot(rate_key(id, hour)), slot) << id;
  }
  // The tag (the bytes between the first '{' and the next '}') is the whole id, so "a}b" does
  // not share the tag of "a", as it would if its brace were kept.
  auto tag = [](const std::string& key) {
    const std::size_t open = key.find('{');
    return key.substr(open + 1, key.find('}', open) - open - 1);
  };
  EXPECT_EQ(tag(customer_key_prefix("a")), "tally:c:a");
  EXPECT_EQ(tag(customer_key_prefix("a}b")), "tally:c:~617d62");
  EXPECT_EQ(tag(window_key("}", day, 0)), "tally:c:~7d");
}

TEST(LimitKeysTest, AnAdHocWindowIsKeyedByItsWholeNamespaceAndIdentifier) {
  EXPECT_EQ(adhoc_key("sms", "u1", 60'000, 120'000'000), "{tally:a:sms\nu1}:60000:120000000");
  // A brace in either is written in hex, so the tag is always the whole pair.
  EXPECT_EQ(adhoc_key("a", "}", 1'000, 0), "{tally:a:~610a7d}:1000:0");
  EXPECT_EQ(adhoc_key("~", "x", 1'000, 0), "{tally:a:~7e0a78}:1000:0");
  // Pairs that would read alike joined otherwise get keys of their own.
  EXPECT_NE(adhoc_key("a:b", "c", 1'000, 0), adhoc_key("a", "b:c", 1'000, 0));
  EXPECT_NE(adhoc_key("a", "b", 1'000, 0), adhoc_key("a", "b", 2'000, 0));
  EXPECT_NE(adhoc_key("a", "b", 1'000, 0), adhoc_key("a", "b", 1'000, 1'000'000));
  // Every window of one pair in one slot; the slot of a customer's keys is another tag's.
  EXPECT_EQ(redis::key_slot(adhoc_key("login", "10.0.0.1", 1'000, 0)),
            redis::key_slot(adhoc_key("login", "10.0.0.1", 60'000, 5'000'000)));
  EXPECT_NE(adhoc_key("x", "y", 1'000, 0).substr(0, 9), customer_key_prefix("x").substr(0, 9));
}

}  // namespace
}  // namespace tally::cluster
