#include <gtest/gtest.h>

#include "engine/cluster_mode_impl.h"

namespace tally::engine {
namespace {

constexpr TimeUs kMinute = 1'796'637'600'000'000;  // 2026-12-07T10:00:00Z

MeterDef meter_of(const std::string& key, core::Aggregation a, bool merges) {
  MeterDef m;
  m.spec.key = key;
  m.spec.event_type = key;
  m.spec.aggregation = a;
  m.merges_check_usage = merges;
  return m;
}

PendingUsage usage(const MeterDef& m, const std::string& customer, std::int64_t amount, TimeUs at) {
  PendingUsage u;
  u.customer = customer;
  u.meter = &m;
  u.amount = core::Decimal::from_int(amount);
  u.at_us = at;
  return u;
}

TEST(ClusterUsageTest, ChecksOfOneCustomerMeterAndMinuteBecomeOneEvent) {
  const MeterDef calls = meter_of("calls", core::Aggregation::kCount, true);
  const MeterDef tokens = meter_of("tokens", core::Aggregation::kSum, true);
  const MeterDef shared = meter_of("shared", core::Aggregation::kCount, false);
  std::vector<PendingUsage> in;
  in.push_back(usage(calls, "a", 1, kMinute + 1));
  in.push_back(usage(tokens, "a", 5, kMinute + 2));
  in.push_back(usage(calls, "b", 1, kMinute + 3));
  in.push_back(usage(calls, "a", 2, kMinute + 4));
  in.push_back(usage(calls, "a", 1, kMinute + 60'000'000));  // the next minute
  in.push_back(usage(tokens, "a", 7, kMinute + 5));
  in.push_back(usage(shared, "a", 1, kMinute + 6));  // its event feeds another meter too
  in.push_back(usage(shared, "a", 1, kMinute + 7));
  PendingUsage with_id = usage(calls, "a", 1, kMinute + 8);
  with_id.event_id = "e1";  // consumes once by its id: its own event
  in.push_back(std::move(with_id));
  PendingUsage with_props = usage(calls, "a", 1, kMinute + 9);
  with_props.properties = {{"region", "eu"}};
  in.push_back(std::move(with_props));
  PendingUsage prepaid = usage(calls, "a", 1, kMinute + 10);
  prepaid.credits_in_flight = core::Decimal::from_int(3);
  in.push_back(std::move(prepaid));

  const std::vector<PendingUsage> out = merged_usage(std::move(in));
  ASSERT_EQ(out.size(), 9u);
  EXPECT_EQ(out[0].meter, &calls);  // a's calls of the minute: 1 + 2, dated at the first
  EXPECT_EQ(out[0].amount.text(), "3");
  EXPECT_EQ(out[0].at_us, kMinute + 1);
  EXPECT_EQ(out[1].meter, &tokens);  // a's tokens: 5 + 7
  EXPECT_EQ(out[1].amount.text(), "12");
  EXPECT_EQ(out[2].customer, "b");
  EXPECT_EQ(out[3].at_us, kMinute + 60'000'000);
  EXPECT_EQ(out[4].meter, &shared);
  EXPECT_EQ(out[5].meter, &shared);
  EXPECT_EQ(out[6].event_id, "e1");
  EXPECT_EQ(out[7].properties.size(), 1u);
  EXPECT_EQ(out[8].credits_in_flight.text(), "3");
}

TEST(ClusterUsageTest, AMergedCountStopsAtTheLargestQuantityOfAnEvent) {
  const MeterDef calls = meter_of("calls", core::Aggregation::kCount, true);
  std::vector<PendingUsage> in;
  for (int i = 0; i < 201; ++i) {
    in.push_back(usage(calls, "a", 10'000, kMinute + i));  // 2,010,000 in all
  }
  const std::vector<PendingUsage> out = merged_usage(std::move(in));
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].amount.text(), "1000000");
  EXPECT_EQ(out[1].amount.text(), "1000000");
  EXPECT_EQ(out[2].amount.text(), "10000");
}

}  // namespace
}  // namespace tally::engine
