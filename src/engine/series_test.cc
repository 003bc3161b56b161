// Tests for engine/series: the minute -> hour -> day roll-up and ranges combined from it.
#include "engine/series.h"

#include <random>
#include <set>
#include <vector>

#include <gtest/gtest.h>

namespace tally::engine {
namespace {

using core::AggState;
using core::kUsPerDay;
using core::kUsPerHour;
using core::kUsPerMinute;
using core::TimeUs;

const TimeUs kStart = 1'767'225'600 * core::kUsPerSecond;  // 2026-01-01T00:00:00Z

void expect_same(const AggState& a, const AggState& b, const std::string& where) {
  EXPECT_EQ(a.count, b.count) << where;
  EXPECT_EQ(a.sum, b.sum) << where;
  if (a.count > 0 && b.count > 0) {
    EXPECT_EQ(a.min, b.min) << where;
    EXPECT_EQ(a.max, b.max) << where;
    EXPECT_EQ(a.latest, b.latest) << where;
    EXPECT_EQ(a.latest_time_us, b.latest_time_us) << where;
  }
}

// A series over three days with usage at random minutes, and the same usage kept plainly.
struct Fixture {
  Series series;
  std::vector<std::pair<TimeUs, AggState>> added;  // minute, delta (a minute may repeat)
  std::vector<std::pair<TimeUs, std::string>> uniques;

  explicit Fixture(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_int_distribution<TimeUs> minute(0, 3 * 24 * 60 - 1);
    std::uniform_int_distribution<std::int64_t> value(-50, 1000);
    for (int i = 0; i < 600; ++i) {
      const TimeUs m = kStart + minute(rng) * kUsPerMinute;
      AggState d;
      d.add(core::Decimal::from_int(value(rng)), m + (i % 60) * core::kUsPerSecond,
            static_cast<std::uint64_t>(i + 1));
      series.add(m, d);
      added.emplace_back(m, d);
      const std::string u = "u" + std::to_string(rng() % 40);
      series.add_unique(m, u);
      uniques.emplace_back(m, u);
    }
  }

  AggState brute(TimeUs a, TimeUs b) const {
    AggState st;
    for (const auto& [m, d] : added) {
      if (m >= a && m < b) {
        st.merge(d);
      }
    }
    return st;
  }

  core::UniqueSet brute_uniques(TimeUs a, TimeUs b) const {
    core::UniqueSet set;
    for (const auto& [m, u] : uniques) {
      if (m >= a && m < b) {
        set.insert(u);
      }
    }
    return set;
  }
};

TEST(Series, HourAndDaySumsAreTheMergeOfTheirMinutes) {
  Fixture f(1);
  for (TimeUs unit : {kUsPerHour, kUsPerDay}) {
    int entries = 0;
    f.series.for_each(unit, kStart, kStart + 3 * kUsPerDay, [&](TimeUs start, const AggState& st) {
      ++entries;
      EXPECT_EQ(core::floor_to(start, unit), start);
      expect_same(st, f.brute(start, start + unit), "entry at " + std::to_string(start));
    });
    EXPECT_GT(entries, 0);
  }
  AggState minutes;
  f.series.for_each(kUsPerMinute, kStart, kStart + 3 * kUsPerDay,
                    [&](TimeUs, const AggState& st) { minutes.merge(st); });
  expect_same(minutes, f.brute(kStart, kStart + 3 * kUsPerDay), "all minutes");
}

TEST(Series, AnyRangeWithRaggedEdgesCombinesExactly) {
  Fixture f(2);
  std::mt19937_64 rng(3);
  std::uniform_int_distribution<TimeUs> minute(0, 3 * 24 * 60);
  for (int i = 0; i < 500; ++i) {
    TimeUs a = kStart + minute(rng) * kUsPerMinute;
    TimeUs b = kStart + minute(rng) * kUsPerMinute;
    if (a > b) {
      std::swap(a, b);
    }
    for (bool want_uniques : {false, true}) {
      AggState st;
      core::UniqueSet u;
      ASSERT_TRUE(f.series.combine(a, b, want_uniques, &st, &u).ok());
      const std::string where = "[" + std::to_string(a) + ", " + std::to_string(b) + ")";
      expect_same(st, f.brute(a, b), where);
      if (want_uniques) {
        EXPECT_EQ(u, f.brute_uniques(a, b)) << where;
      }
    }
  }
}

TEST(Series, DaysOfAPlusFiveThirtyZoneCombineExactly) {
  // Local midnights of +05:30 fall at 18:30 UTC: every range is ragged at both ends by half an
  // hour and takes whole UTC days in between.
  Fixture f(4);
  const TimeUs offset = 5 * kUsPerHour + 30 * kUsPerMinute;
  for (int d = 0; d < 3; ++d) {
    for (int len = 1; len <= 3 - d; ++len) {
      const TimeUs a = kStart + d * kUsPerDay - offset;
      const TimeUs b = a + len * kUsPerDay;
      AggState st;
      ASSERT_TRUE(f.series.combine(a, b, false, &st, nullptr).ok());
      expect_same(st, f.brute(a, b), "day " + std::to_string(d) + " x" + std::to_string(len));
    }
  }
}

TEST(Series, MinutesAndDistinctValuesAreFoundByTheirStart) {
  Series s;
  AggState d;
  d.add(core::Decimal::from_int(5), kStart + 90 * kUsPerMinute + 7, 1);
  EXPECT_TRUE(s.add(kStart + 90 * kUsPerMinute, d));
  EXPECT_FALSE(s.add(kStart + 90 * kUsPerMinute, d));  // the same minute again
  AggState got;
  ASSERT_TRUE(*s.minute(kStart + 90 * kUsPerMinute, &got));
  EXPECT_EQ(got.count, 2);
  EXPECT_FALSE(*s.minute(kStart + 91 * kUsPerMinute, &got));
  EXPECT_EQ(*s.next_minute(kStart, kStart + kUsPerDay), kStart + 90 * kUsPerMinute);
  EXPECT_EQ(*s.next_minute(kStart + 91 * kUsPerMinute, kStart + kUsPerDay), std::nullopt);
  EXPECT_EQ(*s.next_minute(kStart, kStart + 90 * kUsPerMinute), std::nullopt);
  s.add_unique(kStart + 90 * kUsPerMinute, "gpt-4");
  EXPECT_TRUE(s.has_unique(kStart + 90 * kUsPerMinute, "gpt-4"));
  EXPECT_FALSE(s.has_unique(kStart + 90 * kUsPerMinute, "gpt-5"));
  EXPECT_FALSE(s.has_unique(kStart + 91 * kUsPerMinute, "gpt-4"));
}

TEST(GroupTotals, HoldTheHourAndDaySumsOfEveryMinuteAdded) {
  Fixture f(5);
  GroupTotals t;
  for (const auto& [m, d] : f.added) {
    t.add(m, d);
  }
  for (TimeUs unit : {kUsPerHour, kUsPerDay}) {
    t.for_each(unit, kStart, kStart + 3 * kUsPerDay, [&](TimeUs start, const AggState& st) {
      expect_same(st, f.brute(start, start + unit), "totals at " + std::to_string(start));
    });
  }
}

TEST(GroupTotals, CustomerAfterCustomerInTimeOrderAsARestartAddsThem) {
  // A restart adds each customer's minutes in time order, one customer after another: each
  // customer starts again from the beginning of the totals.
  std::mt19937_64 rng(11);
  GroupTotals t;
  std::vector<std::pair<TimeUs, AggState>> added;
  for (int customer = 0; customer < 5; ++customer) {
    TimeUs m = kStart + static_cast<TimeUs>(rng() % 300) * kUsPerMinute;
    for (int i = 0; i < 200; ++i) {
      m += static_cast<TimeUs>(1 + rng() % 90) * kUsPerMinute;
      AggState d;
      d.add(core::Decimal::from_int(customer * 1000 + i), m, static_cast<std::uint64_t>(i));
      t.add(m, d);
      added.emplace_back(m, d);
    }
  }
  for (TimeUs unit : {kUsPerHour, kUsPerDay}) {
    std::size_t entries = 0;
    t.for_each(unit, kStart, kStart + 30 * kUsPerDay, [&](TimeUs start, const AggState& st) {
      AggState want;
      for (const auto& [m, d] : added) {
        if (m >= start && m < start + unit) {
          want.merge(d);
        }
      }
      expect_same(st, want, "totals at " + std::to_string(start));
      ++entries;
    });
    std::set<TimeUs> starts;
    for (const auto& [m, d] : added) {
      starts.insert(core::floor_to(m, unit));
    }
    EXPECT_EQ(entries, starts.size());
  }
}

TEST(GroupTotals, MadeAgainFromTheSeriesEqualTheTotalsOfEveryMinuteAdded) {
  // A checkpoint whose customers were partly reloaded makes its totals again from the series.
  Fixture a(21);
  Fixture b(22);
  GroupTotals added;
  GroupTotals rebuilt;
  for (const Fixture* f : {&a, &b}) {
    for (const auto& [m, d] : f->added) {
      added.add(m, d);
    }
    rebuilt.add_series(f->series);
  }
  std::set<TimeUs> minutes_of_a;
  for (const auto& [m, d] : a.added) {
    minutes_of_a.insert(m);
  }
  EXPECT_EQ(a.series.minutes(), minutes_of_a.size());
  for (TimeUs unit : {kUsPerHour, kUsPerDay}) {
    std::vector<std::pair<TimeUs, AggState>> want;
    added.for_each(unit, kStart, kStart + 3 * kUsPerDay,
                   [&](TimeUs start, const AggState& st) { want.emplace_back(start, st); });
    std::size_t i = 0;
    rebuilt.for_each(unit, kStart, kStart + 3 * kUsPerDay, [&](TimeUs start, const AggState& st) {
      ASSERT_LT(i, want.size());
      EXPECT_EQ(start, want[i].first);
      expect_same(st, want[i].second, "rebuilt totals at " + std::to_string(start));
      AggState brute = a.brute(start, start + unit);
      brute.merge(b.brute(start, start + unit));
      expect_same(st, brute, "brute force at " + std::to_string(start));
      ++i;
    });
    EXPECT_EQ(i, want.size());
    EXPECT_GT(i, 0u);
  }
}

}  // namespace
}  // namespace tally::engine
