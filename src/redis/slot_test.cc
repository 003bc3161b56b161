// Key slots against the Redis Cluster specification's test vector and hash-tag examples, and
// slots that a real Redis reports (CLUSTER KEYSLOT; cluster_client_test.cc checks many more
// against a live cluster).
#include "redis/slot.h"

#include <string>

#include <gtest/gtest.h>

namespace tally::redis {
namespace {

TEST(Crc16, SpecificationTestVector) {
  EXPECT_EQ(crc16("123456789"), 0x31C3);
  EXPECT_EQ(crc16(""), 0);
}

TEST(Crc16, IsBinarySafe) {
  std::string with_nul("a\0b", 3);
  EXPECT_NE(crc16(with_nul), crc16("a"));
  EXPECT_NE(crc16(with_nul), crc16("ab"));
  EXPECT_EQ(crc16(std::string("\xff\x00", 2)), crc16(std::string("\xff\x00", 2)));
}

TEST(KeySlot, KnownSlots) {
  // Slots as answered by `CLUSTER KEYSLOT` of Redis 7.
  EXPECT_EQ(key_slot("foo"), 12182);
  EXPECT_EQ(key_slot("bar"), 5061);
  EXPECT_EQ(key_slot("hello"), 866);
  EXPECT_EQ(key_slot(""), 0);
  EXPECT_EQ(key_slot("123456789"), 0x31C3 % kSlotCount);
}

TEST(KeySlot, HashTagsFollowTheSpecification) {
  // The tag alone is hashed.
  EXPECT_EQ(hashed_part("{user1000}.following"), "user1000");
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("user1000"));
  EXPECT_EQ(key_slot("{user1000}.following"), key_slot("{user1000}.followers"));
  // The first tag is empty: the whole key is hashed.
  EXPECT_EQ(hashed_part("foo{}{bar}"), "foo{}{bar}");
  EXPECT_NE(key_slot("foo{}{bar}"), key_slot("bar"));
  // From the first '{' to the first '}' after it.
  EXPECT_EQ(hashed_part("foo{{bar}}zap"), "{bar");
  EXPECT_EQ(key_slot("foo{{bar}}zap"), key_slot("{bar"));
  // Only the first tag counts.
  EXPECT_EQ(hashed_part("foo{bar}{zap}"), "bar");
  EXPECT_EQ(key_slot("foo{bar}{zap}"), key_slot("bar"));
}

TEST(KeySlot, UnclosedOrMisplacedBracesHashTheWholeKey) {
  EXPECT_EQ(hashed_part("foo{bar"), "foo{bar");
  EXPECT_EQ(hashed_part("foo}bar{"), "foo}bar{");
  EXPECT_EQ(hashed_part("{}"), "{}");
  EXPECT_EQ(hashed_part("}{x}"), "x");
  EXPECT_EQ(hashed_part("{a}"), "a");
}

TEST(KeySlot, AlwaysInRange) {
  for (int i = 0; i < 5000; ++i) {
    std::string key = "key:" + std::to_string(i);
    EXPECT_LT(key_slot(key), kSlotCount);
  }
}

}  // namespace
}  // namespace tally::redis
