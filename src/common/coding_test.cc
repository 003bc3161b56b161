// Tests for coding.h, shaped like LevelDB's util/coding_test.cc: every width round-trips at its
// boundaries, the bytes are the documented ones (docs/storage.md), and short or overlong input
// is refused rather than misread.
#include "common/coding.h"

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace tally::common {
namespace {

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out += kDigits[b >> 4];
    out += kDigits[b & 0xF];
  }
  return out;
}

TEST(Coding, Fixed32) {
  std::string s;
  for (std::uint32_t v = 0; v < 100'000; ++v) {
    put_be32(s, v);
  }
  Reader r(s);
  for (std::uint32_t v = 0; v < 100'000; ++v) {
    std::uint32_t actual = 1;
    ASSERT_TRUE(r.get_be32(&actual));
    ASSERT_EQ(actual, v);
  }
  EXPECT_TRUE(r.done());
}

TEST(Coding, Fixed64) {
  std::string s;
  std::vector<std::uint64_t> values;
  for (int power = 0; power <= 63; ++power) {
    const std::uint64_t v = std::uint64_t{1} << power;
    values.insert(values.end(), {v - 1, v, v + 1});
  }
  values.push_back(std::numeric_limits<std::uint64_t>::max());
  for (std::uint64_t v : values) {
    put_be64(s, v);
  }
  Reader r(s);
  for (std::uint64_t v : values) {
    std::uint64_t actual = 0;
    ASSERT_TRUE(r.get_be64(&actual));
    ASSERT_EQ(actual, v);
  }
  EXPECT_TRUE(r.done());
}

// Big-endian, so that keys sort as their numbers do.
TEST(Coding, FixedIsBigEndianAndSortsLikeNumbers) {
  std::string s;
  put_be32(s, 0x04030201);
  EXPECT_EQ(hex(s), "04030201");
  EXPECT_EQ(read_be32(s), 0x04030201u);
  s.clear();
  put_be64(s, 0x0807060504030201);
  EXPECT_EQ(hex(s), "0807060504030201");
  EXPECT_EQ(read_be64(s), 0x0807060504030201u);

  std::string a;
  std::string b;
  put_be64(a, 255);
  put_be64(b, 256);
  EXPECT_LT(a, b);
}

TEST(Coding, Varint64) {
  std::vector<std::uint64_t> values = {0, 100, ~std::uint64_t{0}, ~std::uint64_t{0} - 1};
  for (int power = 0; power <= 63; ++power) {
    const std::uint64_t v = std::uint64_t{1} << power;
    values.insert(values.end(), {v - 1, v, v + 1});
  }
  std::string s;
  for (std::uint64_t v : values) {
    put_varint(s, v);
  }
  Reader r(s);
  for (std::uint64_t v : values) {
    std::uint64_t actual = 0;
    ASSERT_TRUE(r.get_varint(&actual));
    ASSERT_EQ(actual, v);
  }
  EXPECT_TRUE(r.done());
}

// Each 7 bits takes one byte: the lengths at the boundaries, and LEB128's bytes.
TEST(Coding, VarintLengthsAndBytes) {
  struct Case {
    std::uint64_t value;
    const char* hex;
  };

  const Case cases[] = {
      {0, "00"},
      {1, "01"},
      {127, "7f"},
      {128, "8001"},
      {300, "ac02"},
      {16'383, "ff7f"},
      {16'384, "808001"},
      {(std::uint64_t{1} << 63) - 1, "ffffffffffffffff7f"},
      {std::uint64_t{1} << 63, "80808080808080808001"},
      {~std::uint64_t{0}, "ffffffffffffffffff01"},
  };
  for (const Case& c : cases) {
    std::string s;
    put_varint(s, c.value);
    EXPECT_EQ(hex(s), c.hex) << c.value;
  }
}

TEST(Coding, Zigzag) {
  struct Case {
    std::int64_t value;
    const char* hex;
  };

  const Case cases[] = {
      {0, "00"},
      {-1, "01"},
      {1, "02"},
      {-2, "03"},
      {63, "7e"},
      {-64, "7f"},
      {64, "8001"},
      {std::numeric_limits<std::int64_t>::max(), "feffffffffffffffff01"},
      {std::numeric_limits<std::int64_t>::min(), "ffffffffffffffffff01"},
  };
  std::string all;
  for (const Case& c : cases) {
    std::string s;
    put_zigzag(s, c.value);
    EXPECT_EQ(hex(s), c.hex) << c.value;
    all += s;
  }
  Reader r(all);
  for (const Case& c : cases) {
    std::int64_t actual = 0;
    ASSERT_TRUE(r.get_zigzag(&actual));
    EXPECT_EQ(actual, c.value);
  }
  EXPECT_TRUE(r.done());
}

TEST(Coding, Varint64Overflow) {
  // Eleven bytes: more than any 64-bit value needs.
  std::uint64_t v = 7;
  EXPECT_FALSE(Reader("\x81\x82\x83\x84\x85\x86\x87\x88\x89\x8a\x11").get_varint(&v));
  // Ten bytes whose last holds more than bit 63.
  EXPECT_FALSE(Reader("\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02").get_varint(&v));
  EXPECT_FALSE(Reader("\x80\x80\x80\x80\x80\x80\x80\x80\x80\x7f").get_varint(&v));
  EXPECT_EQ(v, 7u);
  // Ten bytes ending in 1: exactly the top bit.
  ASSERT_TRUE(Reader("\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01").get_varint(&v));
  EXPECT_EQ(v, std::uint64_t{1} << 63);
}

TEST(Coding, Varint64Truncation) {
  const std::uint64_t large = (std::uint64_t{1} << 63) + 100;
  std::string s;
  put_varint(s, large);
  std::uint64_t v = 0;
  for (std::size_t len = 0; len < s.size(); ++len) {
    EXPECT_FALSE(Reader(std::string_view(s).substr(0, len)).get_varint(&v)) << len;
  }
  ASSERT_TRUE(Reader(s).get_varint(&v));
  EXPECT_EQ(v, large);
}

TEST(Coding, FixedTruncation) {
  std::string s;
  put_be64(s, 42);
  for (std::size_t len = 0; len < 8; ++len) {
    const std::string_view part = std::string_view(s).substr(0, len);
    std::uint64_t v64 = 0;
    EXPECT_FALSE(Reader(part).get_be64(&v64)) << len;
    std::uint32_t v32 = 0;
    EXPECT_EQ(Reader(part).get_be32(&v32), len >= 4) << len;
  }
  std::uint8_t u8 = 0;
  EXPECT_FALSE(Reader("").get_u8(&u8));
}

TEST(Coding, Bytes) {
  const std::string values[] = {"", "foo", "bar", std::string(200, 'x'), std::string("a\0b", 3)};
  std::string s;
  for (const std::string& v : values) {
    put_bytes(s, v);
  }
  EXPECT_EQ(hex(s.substr(0, 4)), "0003666f");
  Reader r(s);
  for (const std::string& v : values) {
    std::string_view actual;
    ASSERT_TRUE(r.get_bytes(&actual));
    EXPECT_EQ(actual, v);
  }
  EXPECT_TRUE(r.done());
}

TEST(Coding, BytesLongerThanTheInputAreRefused) {
  std::string s;
  put_bytes(s, "hello");
  std::string_view out;
  for (std::size_t len = 0; len < s.size(); ++len) {
    EXPECT_FALSE(Reader(std::string_view(s).substr(0, len)).get_bytes(&out)) << len;
  }
  // A length near 2^64 must not wrap around the bounds check.
  std::string huge;
  put_varint(huge, ~std::uint64_t{0});
  huge += "abc";
  EXPECT_FALSE(Reader(huge).get_bytes(&out));
}

TEST(Coding, Raw) {
  Reader r("abcdef");
  std::string_view out;
  ASSERT_TRUE(r.get_raw(2, &out));
  EXPECT_EQ(out, "ab");
  EXPECT_EQ(r.remaining(), 4u);
  EXPECT_FALSE(r.get_raw(5, &out));
  ASSERT_TRUE(r.get_raw(4, &out));
  EXPECT_EQ(out, "cdef");
  EXPECT_TRUE(r.done());
}

TEST(Coding, Int128) {
  const __int128 one = 1;
  const __int128 max = static_cast<__int128>(~static_cast<unsigned __int128>(0) >> 1);
  const __int128 min = -max - 1;
  const __int128 values[] = {0, 1, -1, (one << 64) - 1, one << 64, -(one << 64), max, min};
  std::string s;
  for (__int128 v : values) {
    put_i128(s, v);
  }
  EXPECT_EQ(s.size(), 16 * std::size(values));
  EXPECT_EQ(hex(s.substr(16, 16)), "00000000000000000000000000000001");
  EXPECT_EQ(hex(s.substr(32, 16)), "ffffffffffffffffffffffffffffffff");
  Reader r(s);
  for (__int128 v : values) {
    __int128 actual = 0;
    ASSERT_TRUE(get_i128(r, &actual));
    EXPECT_TRUE(actual == v);
  }
  EXPECT_TRUE(r.done());

  std::string one_bytes;
  put_i128(one_bytes, 1);
  __int128 v = 5;
  EXPECT_FALSE(Reader(std::string_view(one_bytes).substr(0, 15)).get_i128(&v));
  EXPECT_FALSE(Reader(std::string_view(one_bytes).substr(0, 8)).get_i128(&v));
}

}  // namespace
}  // namespace tally::common
