// Tests for engine/packed_sums: every entry reads back exactly as a plain map of AggStates holds
// it, whatever the order of the updates (in time order, late into encoded segments, before
// everything), and whatever the values (integers, fractions, negatives, beyond 64 bits).
#include "engine/packed_sums.h"

#include <iterator>
#include <map>
#include <random>
#include <string>

#include <gtest/gtest.h>

namespace tally::engine {
namespace {

using core::AggState;
using core::kUsPerMinute;
using core::TimeUs;

const TimeUs kStart = 1'767'225'600 * core::kUsPerSecond;  // 2026-01-01T00:00:00Z

// Equal in every field, the ones no query reads included: what is packed comes back whole.
void expect_identical(const AggState& a, const AggState& b, const std::string& where) {
  EXPECT_EQ(a.count, b.count) << where;
  EXPECT_EQ(a.sum, b.sum) << where;
  EXPECT_EQ(a.min, b.min) << where;
  EXPECT_EQ(a.max, b.max) << where;
  EXPECT_EQ(a.latest, b.latest) << where;
  EXPECT_EQ(a.latest_time_us, b.latest_time_us) << where;
  EXPECT_EQ(a.latest_seq, b.latest_seq) << where;
}

// Every way of reading `p` agrees with `plain`.
void expect_same_entries(const PackedSums& p, const std::map<TimeUs, AggState>& plain, TimeUs from,
                         TimeUs to) {
  ASSERT_EQ(p.size(), plain.size());
  for (const auto& [start, st] : plain) {
    AggState got;
    ASSERT_TRUE(p.get(start, &got)) << start;
    expect_identical(got, st, "get " + std::to_string(start));
    if (plain.count(start + kUsPerMinute) == 0) {
      EXPECT_FALSE(p.get(start + kUsPerMinute, &got)) << "no entry at " << start + kUsPerMinute;
    }
  }
  auto it = plain.lower_bound(from);
  p.for_each(from, to, [&](TimeUs start, const AggState& st) {
    ASSERT_TRUE(it != plain.end() && it->first < to) << "an entry too many at " << start;
    EXPECT_EQ(start, it->first);
    expect_identical(st, it->second, "for_each " + std::to_string(start));
    ++it;
  });
  EXPECT_TRUE(it == plain.end() || it->first >= to) << "for_each missed " << it->first;
  auto first = plain.lower_bound(from);
  const std::optional<TimeUs> want = first != plain.end() && first->first < to
                                         ? std::optional<TimeUs>(first->first)
                                         : std::nullopt;
  EXPECT_EQ(p.first_in(from, to), want) << from << ".." << to;
}

// A random value: mostly small integers, some fractions, negatives and values past 2^63 units.
core::Decimal random_value(std::mt19937_64& rng) {
  switch (rng() % 6) {
    case 0:
      return core::Decimal{static_cast<__int128>(rng() % 1000) - 300};  // 1e-9 steps
    case 1:
      return core::Decimal{static_cast<__int128>(rng()) * 1'000'000'007};  // past 64 bits
    case 2:
      return core::Decimal{-static_cast<__int128>(rng() % 100'000) * 1'000'000};
    default:
      return core::Decimal::from_int(static_cast<std::int64_t>(rng() % 50));
  }
}

// Updates in random order over `minutes` minutes, checked against a plain map after each round.
void run_random(std::uint64_t seed, int minutes, int updates, bool in_order) {
  std::mt19937_64 rng(seed);
  PackedSums p;
  std::map<TimeUs, AggState> plain;
  std::uint64_t seq = rng() % 1000;
  for (int i = 0; i < updates; ++i) {
    const TimeUs m =
        kStart + (in_order ? i * minutes / updates + static_cast<int>(rng() % 3) - 1
                           : static_cast<int>(rng() % static_cast<std::uint64_t>(minutes))) *
                     kUsPerMinute;
    AggState delta;
    const int events = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < events; ++e) {
      // Sequences mostly grow, and sometimes jump back (a retried or reordered write).
      seq = rng() % 10 == 0 ? seq - rng() % 500 : seq + 1 + rng() % 2000;
      delta.add(random_value(rng), m + static_cast<TimeUs>(rng() % 60'000'000), seq);
    }
    const bool made = p.merge(m, delta);
    EXPECT_EQ(made, plain.count(m) == 0) << "update " << i;
    plain[m].merge(delta);
    if (i % 97 == 0 || i + 1 == updates) {
      expect_same_entries(p, plain, kStart - kUsPerMinute, kStart + minutes * kUsPerMinute);
      const TimeUs a =
          kStart + static_cast<TimeUs>(rng() % static_cast<std::uint64_t>(minutes)) * kUsPerMinute;
      const TimeUs b = a + static_cast<TimeUs>(rng() % 200) * kUsPerMinute;
      expect_same_entries(p, plain, a, b);
    }
  }
}

TEST(PackedSums, InTimeOrderReadsBackExactly) {
  run_random(1, 5'000, 4'000, true);
}

TEST(PackedSums, LateAndOutOfOrderUpdatesReadBackExactly) {
  for (std::uint64_t seed = 2; seed < 6; ++seed) {
    run_random(seed, 400, 3'000, false);  // dense: segments fill up, take late inserts, split
    run_random(seed + 100, 50'000, 1'500, false);  // sparse
  }
}

TEST(PackedSums, AnEntryBeforeEveryOtherAndEmptyStates) {
  PackedSums p;
  std::map<TimeUs, AggState> plain;
  for (int i = 0; i < 100; ++i) {
    AggState d;
    d.add(core::Decimal::from_int(i), kStart + (1000 - i) * kUsPerMinute, 5);
    const TimeUs m = kStart + (1000 - i) * kUsPerMinute;  // each before all the others
    EXPECT_TRUE(p.merge(m, d));
    plain[m].merge(d);
  }
  // A state with no events (count 0) is an entry too, as a map's default-made value is.
  EXPECT_TRUE(p.merge(kStart, AggState{}));
  plain[kStart];
  expect_same_entries(p, plain, kStart, kStart + 2000 * kUsPerMinute);
  EXPECT_EQ(p.first_in(kStart + 901 * kUsPerMinute, kStart + 902 * kUsPerMinute),
            kStart + 901 * kUsPerMinute);
  EXPECT_EQ(p.first_in(kStart + 1001 * kUsPerMinute, kStart + 3000 * kUsPerMinute), std::nullopt);
  // A miss leaves the output as it was (the commit merges into an empty state it did not reset).
  AggState untouched;
  untouched.add(core::Decimal::from_int(42), kStart, 7);
  AggState out = untouched;
  EXPECT_FALSE(p.get(kStart + 1 * kUsPerMinute, &out));  // among the packed entries
  expect_identical(out, untouched, "a miss among packed entries");
  EXPECT_FALSE(p.get(kStart + 5000 * kUsPerMinute, &out));  // after the plain ones
  expect_identical(out, untouched, "a miss after the plain entries");
}

TEST(PackedSums, ExtremeValuesSurviveTheEncoding) {
  PackedSums p;
  std::map<TimeUs, AggState> plain;
  const __int128 big = (static_cast<__int128>(1) << 120) + 12345;
  const core::Decimal values[] = {core::Decimal{big}, core::Decimal{-big},
                                  core::Decimal{1},   core::Decimal{-1},
                                  core::Decimal{0},   core::Decimal::from_int(1),
                                  core::Decimal{10},  core::Decimal{999'999'999}};
  int i = 0;
  for (const auto& v : values) {
    for (const auto& w : values) {
      AggState d;
      d.add(v, kStart + i * kUsPerMinute + 59'999'999, UINT64_MAX - static_cast<unsigned>(i));
      d.add(w, kStart + i * kUsPerMinute, static_cast<std::uint64_t>(i));
      const TimeUs m = kStart + i * kUsPerMinute;
      p.merge(m, d);
      plain[m].merge(d);
      ++i;
    }
  }
  expect_same_entries(p, plain, kStart, kStart + i * kUsPerMinute);
}

TEST(PackedSums, DroppingTheEntriesBeforeATimeKeepsTheRestExactly) {
  std::mt19937_64 rng(7);
  for (int round = 0; round < 20; ++round) {
    PackedSums p;
    std::map<TimeUs, AggState> plain;
    std::uint64_t seq = 1;
    for (int i = 0; i < 300; ++i) {
      const TimeUs m = kStart + static_cast<TimeUs>(rng() % 400) * kUsPerMinute;
      AggState delta;
      delta.add(random_value(rng), m + 1, seq++);
      p.merge(m, delta);
      plain[m].merge(delta);
    }
    // Before everything, inside a segment, on an entry, past the last: each drop is exact.
    for (TimeUs t :
         {kStart - kUsPerMinute, kStart + static_cast<TimeUs>(rng() % 200) * kUsPerMinute,
          plain.begin()->first + kUsPerMinute, std::prev(plain.end(), 2)->first,
          kStart + 500 * kUsPerMinute}) {
      const std::size_t before = plain.size();
      plain.erase(plain.begin(), plain.lower_bound(t));
      EXPECT_EQ(p.drop_before(t), before - plain.size()) << "round " << round;
      expect_same_entries(p, plain, kStart - kUsPerMinute, kStart + 500 * kUsPerMinute);
    }
    // What is left still takes updates, late ones included.
    AggState delta;
    delta.add(core::Decimal::from_int(3), kStart + 600 * kUsPerMinute, seq++);
    EXPECT_TRUE(p.merge(kStart + 600 * kUsPerMinute, delta));
    plain[kStart + 600 * kUsPerMinute].merge(delta);
    expect_same_entries(p, plain, kStart, kStart + 700 * kUsPerMinute);
  }
}

}  // namespace
}  // namespace tally::engine
