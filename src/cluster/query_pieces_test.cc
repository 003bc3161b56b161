// cluster::pieces_of (pg_query.h): how a query's range is cut into hour and minute pieces. The
// reads over those pieces are tested against the embedded store by tests/cluster_engine_test.cc.
#include <vector>

#include <gtest/gtest.h>

#include "cluster/pg_query.h"

namespace tally::cluster {
namespace {

constexpr core::TimeUs kMin = core::kUsPerMinute;
constexpr core::TimeUs kHour = core::kUsPerHour;
constexpr core::TimeUs kT = 1'796'637'600'000'000;  // 2026-12-07T10:00:00Z, an hour start

TEST(QueryPiecesTest, WholeHoursFromHourRowsAndRaggedEndsFromMinutes) {
  std::vector<QueryPiece> p;
  pieces_of(kT + 17 * kMin, kT + 5 * kHour + 43 * kMin, kT, 0, &p);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0].from_us, kT + 17 * kMin);
  EXPECT_EQ(p[0].to_us, kT + kHour);
  EXPECT_FALSE(p[0].hours);
  EXPECT_EQ(p[1].from_us, kT + kHour);
  EXPECT_EQ(p[1].to_us, kT + 5 * kHour);
  EXPECT_TRUE(p[1].hours);
  EXPECT_EQ(p[2].from_us, kT + 5 * kHour);
  EXPECT_EQ(p[2].to_us, kT + 5 * kHour + 43 * kMin);
  EXPECT_FALSE(p[2].hours);
  for (const QueryPiece& piece : p) {
    EXPECT_EQ(piece.window_start_us, kT);
    EXPECT_EQ(piece.unit_us, 0);
  }
}

TEST(QueryPiecesTest, AlignedRangesHaveNoMinutePiecesAndShortOnesNoHours) {
  std::vector<QueryPiece> p;
  pieces_of(kT, kT + 24 * kHour, kT, 0, &p);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_TRUE(p[0].hours);
  // Inside one hour, or across an hour start without a whole hour: minutes only.
  p.clear();
  pieces_of(kT + 30 * kMin, kT + kHour + 29 * kMin, kT, kHour, &p);
  ASSERT_EQ(p.size(), 1u);
  EXPECT_FALSE(p[0].hours);
  EXPECT_EQ(p[0].unit_us, kHour);
  // An empty range adds nothing, and pieces append after those already there.
  pieces_of(kT, kT, kT, 0, &p);
  EXPECT_EQ(p.size(), 1u);
  pieces_of(kT + 2 * kHour, kT + 3 * kHour + kMin, kT + 2 * kHour, 0, &p);
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[2].from_us, kT + 3 * kHour);
}

}  // namespace
}  // namespace tally::cluster
