// Tests of the on-disk record decoders against damaged values: each must refuse them (false),
// never throw, crash or allocate by a count the value merely claims. The inputs are the ones
// tests/fuzz/codec_fuzz.cc found, and their neighbours.
#include "engine/codec.h"

#include <gtest/gtest.h>

namespace tally::engine {
namespace {

std::string varint(std::uint64_t v) {
  std::string out;
  put_varint(out, v);
  return out;
}

std::string decimal_bytes(std::int64_t units) {
  // 128-bit big-endian, as the codec stores a Decimal.
  std::string out;
  put_be64(out, units < 0 ? ~0ull : 0);
  put_be64(out, static_cast<std::uint64_t>(units));
  return out;
}

// A dedup record claiming 2^62 entries made decode_dedup_record reserve them before reading one:
// std::length_error, an uncaught exception at start-up.
TEST(CodecTest, DedupRecordWithAHugeCountIsRefused) {
  for (std::uint64_t n : {1ull << 62, 1ull << 40, 1ull << 20, 2ull}) {
    std::string value = "\x01";
    put_zigzag(value, 1737370800000000);
    value += varint(n);
    value += std::string(8, 'h') + varint(5) + varint(1);  // one entry, not n
    core::TimeUs at = 0;
    std::vector<DedupEntry> entries;
    EXPECT_FALSE(decode_dedup_record(value, &at, &entries)) << n;
  }
}

TEST(CodecTest, DedupRecordsRoundTrip) {
  const std::vector<DedupEntry> entries = {{0x1234, 100, 1}, {0xfeed, 101, 2}};
  const std::string value = encode_dedup_record(1737370800000000, entries);
  core::TimeUs at = 0;
  std::vector<DedupEntry> out;
  ASSERT_TRUE(decode_dedup_record(value, &at, &out));
  EXPECT_EQ(at, 1737370800000000);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].hash, 0xfeedu);
  EXPECT_EQ(out[1].seq, 101u);
  EXPECT_EQ(out[1].customer_num, 2u);
  EXPECT_FALSE(decode_dedup_record(value.substr(0, value.size() - 1), &at, &out));
}

// A wallet claiming up to the caps of grants (1,000,000) or holds (10,000,000) made the decoder
// build them all before reading one (hundreds of MB, a second under ASan, for a value of a few
// dozen bytes); it is refused as it was, now without building them.
TEST(CodecTest, WalletWithMoreGrantsOrHoldsThanBytesIsRefused) {
  std::string head = "\x01" + decimal_bytes(0) + decimal_bytes(0) + varint(0) + varint(0);
  WalletRecord w;
  EXPECT_FALSE(decode_wallet(head + varint(999'999), &w));
  EXPECT_FALSE(decode_wallet(head + varint(0) + varint(9'999'999), &w));
  EXPECT_FALSE(
      decode_wallet(head + varint(0) + varint(2) + varint(1) + "a" + decimal_bytes(1), &w));

  WalletRecord full;
  full.balance = core::Decimal::from_int(99);
  full.transactions = 2;
  full.last_txn_seq = 6;
  full.grants.push_back(
      {5, "top_up", core::Decimal::from_int(100), core::Decimal::from_int(99), 100, 0, 1});
  full.holds.emplace_back("res_1", core::Decimal::from_int(5));
  const std::string value = encode_wallet(full);
  ASSERT_TRUE(decode_wallet(value, &w));
  ASSERT_EQ(w.grants.size(), 1u);
  EXPECT_EQ(w.grants[0].type, "top_up");
  EXPECT_EQ(w.grants[0].remaining, core::Decimal::from_int(99));
  ASSERT_EQ(w.holds.size(), 1u);
  EXPECT_EQ(w.holds[0].first, "res_1");
  EXPECT_EQ(w.holds[0].second, core::Decimal::from_int(5));
}

}  // namespace
}  // namespace tally::engine
