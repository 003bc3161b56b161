// Exact decimal numbers: a signed 128-bit integer count of 1e-9 units.
//
// Meter values, sums and averages are Decimals, never binary floating point, so an aggregate
// is the same whatever order its events were added in, and `tally verify` can compare exactly.
// Nine fractional digits cover per-token prices; the range is about +-1.7e29.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <tally/decimal.h>
#include <tally/status.h>

namespace tally::core {

// The public type (include/tally/decimal.h), under the name the engine has always used.
using Decimal = ::tally::Decimal;

// Parses a JSON number or a decimal string ("12", "-0.5", "1.5e3", "2E-4"). Digits beyond the
// ninth fractional place are rounded half to even. Errors: kInvalidArgument when the text is
// not a number or its magnitude exceeds 1e28 (this also refuses JSON's stand-ins for
// infinities, such as 1e999).
Result<Decimal> parse_decimal(std::string_view text);

// As parse_decimal, but reports only whether the text was accepted, so a refusal builds no
// message: allocation-free on every path, for per-event use. *out is set only on success.
bool try_parse_decimal(std::string_view text, Decimal* out);

// Shortest exact text: "12", "-0.5", "0.000000001".
std::string format_decimal(Decimal d);
// The same text appended to `out`, without a temporary string (hot paths format several).
void append_decimal(std::string& out, Decimal d);

// a / n rounded half to even. REQUIRES: n != 0.
Decimal divide_half_even(Decimal a, std::int64_t n);

// a x b rounded half to even at 1e-9. False (and *out untouched) when the magnitude of the
// result would exceed 1e28, the range parse_decimal accepts.
bool multiply_half_even(Decimal a, Decimal b, Decimal* out);

// a / b rounded half to even at 1e-9. False when b is 0 or the result is out of range.
bool divide_decimal_half_even(Decimal a, Decimal b, Decimal* out);

}  // namespace tally::core
