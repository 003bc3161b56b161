#include "common/histogram.h"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace tally::common {
namespace {

constexpr std::uint64_t kBounds[] = {1'000, 10'000, 1'000'000'000};

TEST(LatencyHistogramTest, BucketsAreCumulativeAndTheCountIsTheInfBucket) {
  LatencyHistogram h(kBounds);
  EXPECT_EQ(h.snapshot().count(), 0u);
  h.record_ns(1'000);          // on a bound: that bucket (le is inclusive)
  h.record_ns(1'001);          // just above: the next
  h.record_ns(500);            // below the first
  h.record_ns(2'000'000'000);  // past the last: +Inf only
  const auto s = h.snapshot();
  EXPECT_EQ(s.bounds_ns, (std::vector<std::uint64_t>{1'000, 10'000, 1'000'000'000}));
  EXPECT_EQ(s.cumulative, (std::vector<std::uint64_t>{2, 3, 3, 4}));
  EXPECT_EQ(s.count(), 4u);
  EXPECT_EQ(s.sum_ns, 1'000u + 1'001u + 500u + 2'000'000'000u);
}

TEST(LatencyHistogramTest, ThreadsRecordingTogetherLoseNothing) {
  LatencyHistogram h(kBounds);
  std::vector<std::thread> threads;
  for (int t = 0; t < 12; ++t) {  // more threads than shards: some share one
    threads.emplace_back([&h, t] {
      for (int i = 0; i < 10'000; ++i) {
        h.record_ns(static_cast<std::uint64_t>(t % 3 == 0 ? 5'000 : 50'000));
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  const auto s = h.snapshot();
  EXPECT_EQ(s.count(), 120'000u);
  EXPECT_EQ(s.cumulative[0], 0u);
  EXPECT_EQ(s.cumulative[1], 40'000u);  // t = 0, 3, 6, 9
  EXPECT_EQ(s.cumulative[2], 120'000u);
  EXPECT_EQ(s.sum_ns, 40'000u * 5'000u + 80'000u * 50'000u);
}

TEST(LatencyHistogramTest, SecondsAreExactDecimals) {
  EXPECT_EQ(seconds_text(0), "0");
  EXPECT_EQ(seconds_text(5'000), "0.000005");
  EXPECT_EQ(seconds_text(2'500'000'000), "2.5");
  EXPECT_EQ(seconds_text(10'000'000'000), "10");
  EXPECT_EQ(seconds_text(1'000'000'001), "1.000000001");
}

TEST(LatencyHistogramTest, PrometheusText) {
  LatencyHistogram h(kBounds);
  h.record_ns(1'500);
  std::string out;
  append_histogram(out, "x_duration_seconds", "What x takes.", h.snapshot());
  EXPECT_EQ(out,
            "# HELP x_duration_seconds What x takes.\n"
            "# TYPE x_duration_seconds histogram\n"
            "x_duration_seconds_bucket{le=\"0.000001\"} 0\n"
            "x_duration_seconds_bucket{le=\"0.00001\"} 1\n"
            "x_duration_seconds_bucket{le=\"1\"} 1\n"
            "x_duration_seconds_bucket{le=\"+Inf\"} 1\n"
            "x_duration_seconds_sum 0.0000015\n"
            "x_duration_seconds_count 1\n");
}

}  // namespace
}  // namespace tally::common
