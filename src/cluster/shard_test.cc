#include "cluster/shard.h"

#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace tally::cluster {
namespace {

// The published FNV-1a 64-bit test vectors: the hash is part of a sharded cluster's layout.
TEST(ShardTest, Fnv1aMatchesThePublishedVectors) {
  EXPECT_EQ(fnv1a64(""), 0xcbf29ce484222325ULL);
  EXPECT_EQ(fnv1a64("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(fnv1a64("foobar"), 0x85944171f73967e8ULL);
}

TEST(ShardTest, OneShardHoldsEveryone) {
  EXPECT_EQ(shard_of("acme", 1), 0U);
  EXPECT_EQ(shard_of("", 1), 0U);
}

TEST(ShardTest, TwoShardsSplitCustomersStablyAndRoughlyEvenly) {
  // Pinned: a customer never moves between releases.
  EXPECT_EQ(shard_of("a", 2), 0xaf63dc4c8601ec8cULL % 2);
  EXPECT_EQ(shard_of("foobar", 3), 0x85944171f73967e8ULL % 3);
  std::vector<int> per(2);
  for (int i = 0; i < 1000; ++i) {
    ++per[shard_of("customer-" + std::to_string(i), 2)];
  }
  EXPECT_GT(per[0], 400);
  EXPECT_GT(per[1], 400);
}

}  // namespace
}  // namespace tally::cluster
