// Tests for units.cc: addresses, byte sizes and durations as text, at their boundaries, with
// the messages a person sees in a config error.
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

#include "config/config.h"

namespace tally::config {
namespace {

struct ListenCase {
  std::string_view text;
  std::string_view host;
  std::uint16_t port;
};

TEST(UnitsTest, ParseListen) {
  const ListenCase cases[] = {
      {"127.0.0.1:8080", "127.0.0.1", 8080},
      {"[::1]:0", "::1", 0},
      {":9000", "0.0.0.0", 9000},
      {"localhost:65535", "localhost", 65535},
      {"my-host_1.example:1", "my-host_1.example", 1},
      {"[fe80::1%eth0]:80", "fe80::1%eth0", 80},
      {"host:00080", "host", 80},
  };
  for (const ListenCase& c : cases) {
    std::string host;
    std::uint16_t port = 1;
    ASSERT_TRUE(parse_listen(c.text, &host, &port).ok()) << c.text;
    EXPECT_EQ(host, c.host) << c.text;
    EXPECT_EQ(port, c.port) << c.text;
  }
}

TEST(UnitsTest, BadListenChangesNothing) {
  std::string host = "unchanged";
  std::uint16_t port = 1;
  for (std::string_view bad :
       {"", "8080", "host:", "host:port", "host:-1", "host:65536", "host:99999", "[::1]",
        "[::1]8080", "[]:80", "[::1:80", "::1:80", "bad host:80", "h/x:80", "host:080000"}) {
    Status s = parse_listen(bad, &host, &port);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(host, "unchanged");
  EXPECT_EQ(port, 1);
}

TEST(UnitsTest, ListenMessagesSayWhatIsWrong) {
  std::string host;
  std::uint16_t port = 0;
  EXPECT_EQ(parse_listen("::1:80", &host, &port).message(),
            "'::1:80': an IPv6 address needs brackets, as in \"[::1]:8080\"");
  EXPECT_EQ(parse_listen("[::1:80", &host, &port).message(),
            "'[::1:80': missing ']' after the IPv6 address");
  EXPECT_EQ(parse_listen("host:65536", &host, &port).message(),
            "'host:65536': the port must be 0..65535");
  EXPECT_EQ(parse_listen("8080", &host, &port).message(),
            "'8080': expected host:port, such as \"127.0.0.1:8080\"");
}

struct SizeCase {
  std::string_view text;
  std::uint64_t bytes;
};

TEST(UnitsTest, ParseByteSize) {
  const SizeCase cases[] = {
      {"0", 0},
      {"100", 100},
      {"7B", 7},
      {"512KiB", 512ull << 10},
      {"10MiB", 10ull << 20},
      {"64 mib", 64ull << 20},
      {" 1GiB ", 1ull << 30},
      {"3TiB", 3ull << 40},
      {"1KB", 1'000},
      {"2GB", 2'000'000'000},
      {"5tb", 5'000'000'000'000},
      {"18446744073709551615", std::numeric_limits<std::uint64_t>::max()},
      {"16777215TiB", 16777215ull << 40},
  };
  for (const SizeCase& c : cases) {
    std::uint64_t b = 1;
    ASSERT_TRUE(parse_byte_size(c.text, &b).ok()) << c.text;
    EXPECT_EQ(b, c.bytes) << c.text;
  }
}

TEST(UnitsTest, BadByteSizeChangesNothing) {
  std::uint64_t b = 42;
  for (std::string_view bad : {"", " ", "MiB", "10M", "-1KiB", "1.5GiB", "10 MiB x", "ten",
                               "16777216TiB", "18446744073709551616", "99999999999999999999999"}) {
    EXPECT_EQ(parse_byte_size(bad, &b).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(b, 42u);
  EXPECT_EQ(parse_byte_size("16777216TiB", &b).message(), "'16777216TiB' is too large");
  EXPECT_EQ(parse_byte_size("10M", &b).message(),
            "'10M' is not a size; use bytes or a whole number with a unit: B, KiB, MiB, GiB, "
            "TiB, KB, MB, GB, TB (e.g. \"64MiB\")");
}

struct DurationCase {
  std::string_view text;
  std::int64_t seconds;
};

TEST(UnitsTest, ParseDurationSeconds) {
  const DurationCase cases[] = {
      {"0", 0},
      {"600", 600},
      {"45s", 45},
      {"90m", 5'400},
      {"12h", 43'200},
      {"30d", 30 * 86'400},
      {"2w", 14 * 86'400},
      {"1h30m", 5'400},
      {"1w1d1h1m1s", 694'861},
      {" 5m ", 300},
      {"9223372036854775807", std::numeric_limits<std::int64_t>::max()},
      {"9223372036854775807s", std::numeric_limits<std::int64_t>::max()},
  };
  for (const DurationCase& c : cases) {
    std::int64_t s = -1;
    ASSERT_TRUE(parse_duration_seconds(c.text, &s).ok()) << c.text;
    EXPECT_EQ(s, c.seconds) << c.text;
  }
}

TEST(UnitsTest, BadDurationChangesNothing) {
  std::int64_t s = 42;
  for (std::string_view bad :
       {"", " ", "s", "5x", "5 d", "-5s", "1.5h", "h5", "5M", "5d3", "99999999999999999999s",
        "9223372036854775808", "9223372036854775807w", "9223372036854775807s1s"}) {
    EXPECT_EQ(parse_duration_seconds(bad, &s).code(), StatusCode::kInvalidArgument) << bad;
  }
  EXPECT_EQ(s, 42);
  EXPECT_EQ(parse_duration_seconds("9223372036854775808", &s).message(),
            "'9223372036854775808' is too large");
  EXPECT_EQ(parse_duration_seconds("5x", &s).message(),
            "'5x' is not a duration; use seconds or whole numbers with units s, m, h, d, w "
            "(e.g. \"30d\", \"12h\", \"1h30m\")");
}

}  // namespace
}  // namespace tally::config
