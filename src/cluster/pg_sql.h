// What the cluster layer's SQL shares: times sent to PostgreSQL as microseconds since the epoch
// (a bigint parameter, turned into timestamptz by SQL) and read back the same way, which is
// exact both ways; bytea read back as hex.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "pg/connection.h"
#include "tally/types.h"

namespace tally::cluster {

// Microseconds since the epoch as a parameter; NULL for 0 with micros_or_null.
inline pg::Value micros(TimeUs us) {
  return std::to_string(us);
}

inline pg::Value micros_or_null(TimeUs us) {
  return us == 0 ? pg::Value() : micros(us);
}

// The bytes of a bytea read back as `encode(column, 'hex')`; nullopt when `hex` is not hex.
inline std::optional<std::string> bytes_of_hex(std::string_view hex) {
  const auto digit = [](char c) {
    if (c >= '0' && c <= '9') {
      return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
      return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
      return c - 'A' + 10;
    }
    return -1;
  };
  if (hex.size() % 2 != 0) {
    return std::nullopt;
  }
  std::string out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = digit(hex[i]);
    const int lo = digit(hex[i + 1]);
    if (hi < 0 || lo < 0) {
      return std::nullopt;
    }
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

}  // namespace tally::cluster

// The SQL of parameter $n (microseconds) as a timestamptz, and of a timestamptz column as
// microseconds.
#define TALLY_TS(n) "(timestamptz 'epoch' + $" #n "::bigint * interval '1 microsecond')"
#define TALLY_US(col) "(extract(epoch from " col ") * 1000000)::bigint"
