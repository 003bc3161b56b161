// Exact decimal numbers of Tally's public API: a signed 128-bit integer count of 1e-9 units.
//
// Meter values, limits and credits are Decimals, never binary floating point, so a sum is the
// same whatever order its parts were added in. text() gives the shortest exact text ("12",
// "-0.5", "0.000000001"); the engine parses and formats them in src/core/decimal.h.
#pragma once

#include <cstdint>
#include <string>

namespace tally {

struct Decimal {
  static constexpr std::int64_t kScale = 1'000'000'000;  // units per 1
  static constexpr int kFractionDigits = 9;

  __int128 units = 0;  // value * kScale

  static constexpr Decimal from_int(std::int64_t v) {
    return Decimal{static_cast<__int128>(v) * kScale};
  }

  // The shortest exact text: "12", "-0.5", "0.000000001".
  std::string text() const;

  friend bool operator==(const Decimal&, const Decimal&) = default;

  friend auto operator<=>(const Decimal& a, const Decimal& b) { return a.units <=> b.units; }

  Decimal& operator+=(const Decimal& o) {
    units += o.units;
    return *this;
  }

  friend Decimal operator+(Decimal a, const Decimal& b) { return a += b; }

  friend Decimal operator-(const Decimal& a, const Decimal& b) {
    return Decimal{a.units - b.units};
  }
};

}  // namespace tally
