// Exact decimals: parsing JSON number text, formatting, and half-even division (see decimal.h).
//
// parse_decimal runs for every numeric meter value on the ingest path, so it scans the text once
// and allocates nothing unless it fails. It keeps up to 38 significant digits exactly in an
// unsigned 128-bit integer (10^38 - 1 fits), remembers whether any digit beyond those was
// non-zero, and scales the kept digits to units of 1e-9 in one step, rounding half to even.
// Since accepted magnitudes are at most 1e28, 38 kept digits always reach the 1e-9 place, so
// the remembered "sticky" digits only ever decide a rounding tie.
#include "core/decimal.h"

#include <cstddef>

#include "core/quote.h"

namespace tally::core {
namespace {

using U128 = unsigned __int128;

constexpr int kDigitsKeptMax = 38;
constexpr std::int64_t kExponentAbsMax = 100'000;  // saturates "1e999999999999" safely
// 1e28 in units of 1e-9.
constexpr U128 kUnitsAbsMax = static_cast<U128>(10'000'000'000'000'000'000ULL) *
                              static_cast<U128>(1'000'000'000'000'000'000ULL);

constexpr U128 pow10_u128(int n) {
  U128 p = 1;
  for (int i = 0; i < n; ++i) {
    p *= 10;
  }
  return p;
}

Status decimal_error(std::string_view text, std::string_view what) {
  return quoted_error("invalid number", text, what);
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

// A number's text, read left to right.
struct NumberText {
  std::string_view text;
  std::size_t pos = 0;

  bool at_end() const { return pos >= text.size(); }

  bool at_digit() const { return pos < text.size() && is_digit(text[pos]); }

  // Steps over `c` when it comes next; returns whether it did.
  bool skip(char c) {
    if (pos < text.size() && text[pos] == c) {
      ++pos;
      return true;
    }
    return false;
  }

  char next() { return text[pos++]; }
};

// The digits read so far: value = mantissa * 10^exponent, before the sticky digits.
struct Digits {
  U128 mantissa = 0;
  int kept = 0;               // significant digits in mantissa
  std::int64_t exponent = 0;  // of the kept digits' last place
  bool sticky = false;        // a non-zero digit was dropped after the kept ones

  void take(char c, bool in_fraction) {
    const int d = c - '0';
    if (mantissa == 0 && d == 0) {
      // A leading zero: it only moves the decimal point.
      if (in_fraction) {
        --exponent;
      }
      return;
    }
    if (kept < kDigitsKeptMax) {
      mantissa = mantissa * 10 + static_cast<U128>(d);
      ++kept;
      if (in_fraction) {
        --exponent;
      }
    } else {
      if (!in_fraction) {
        ++exponent;
      }
      sticky = sticky || d != 0;
    }
  }
};

constexpr const char* kTooLarge = "magnitude exceeds 1e28";

// Integer part: "0" or a non-zero digit followed by digits (JSON has no leading zeros).
const char* read_integer(NumberText& in, Digits& digits) {
  if (!in.at_digit()) {
    return "expected a digit";
  }
  if (in.skip('0')) {
    return in.at_digit() ? "leading zeros are not allowed" : nullptr;
  }
  while (in.at_digit()) {
    digits.take(in.next(), false);
  }
  return nullptr;
}

// An optional fraction: '.' and at least one digit.
const char* read_fraction(NumberText& in, Digits& digits) {
  if (!in.skip('.')) {
    return nullptr;
  }
  if (!in.at_digit()) {
    return "expected a digit after '.'";
  }
  while (in.at_digit()) {
    digits.take(in.next(), true);
  }
  return nullptr;
}

// An optional exponent: 'e' or 'E', a sign or none, and at least one digit (saturating).
const char* read_exponent(NumberText& in, Digits& digits) {
  if (!in.skip('e') && !in.skip('E')) {
    return nullptr;
  }
  const bool negative = in.skip('-');
  if (!negative) {
    in.skip('+');
  }
  if (!in.at_digit()) {
    return "expected a digit in the exponent";
  }
  std::int64_t e = 0;
  while (in.at_digit()) {
    const char c = in.next();
    if (e < kExponentAbsMax) {
      e = e * 10 + (c - '0');
    }
  }
  digits.exponent += negative ? -e : e;
  return nullptr;
}

// *units = mantissa * 10^shift, for shift >= 0 and a mantissa >= 1: exact, or over the limit.
const char* scale_up(const Digits& digits, std::int64_t shift, U128* units) {
  // mantissa >= 1, so a shift this large is far beyond the limit.
  if (shift > kDigitsKeptMax) {
    return kTooLarge;
  }
  const U128 scale = pow10_u128(static_cast<int>(shift));
  if (digits.mantissa > kUnitsAbsMax / scale) {
    return kTooLarge;
  }
  *units = digits.mantissa * scale;
  // Dropped digits only exist when 38 digits were kept; then a shift >= 0 means the value
  // is at least 1e28, so any non-zero dropped digit puts it over the limit.
  if (digits.sticky || *units > kUnitsAbsMax) {
    return kTooLarge;
  }
  return nullptr;
}

// *units = mantissa / 10^-shift, for shift < 0, rounded half to even.
const char* scale_down(const Digits& digits, std::int64_t shift, U128* units) {
  if (-shift > kDigitsKeptMax) {
    // mantissa < 10^38 <= divisor / 10, so the value is below half a unit: it rounds to 0.
    *units = 0;
    return nullptr;
  }
  const U128 divisor = pow10_u128(static_cast<int>(-shift));
  *units = digits.mantissa / divisor;
  const U128 remainder = digits.mantissa % divisor;
  const U128 twice = remainder * 2;  // < 2 * 10^38, fits
  const bool round_up =
      twice > divisor || (twice == divisor && (digits.sticky || (*units & 1) != 0));
  if (*units > kUnitsAbsMax || (*units == kUnitsAbsMax && (remainder != 0 || digits.sticky))) {
    return kTooLarge;
  }
  if (round_up) {
    ++*units;
  }
  return nullptr;
}

// A whole number of 1 to 18 digits without a leading zero (most amounts, counts and token
// numbers): read without the general parser's 128-bit scaling. False for any other text,
// which the general parser reads (or refuses) as before.
bool parse_small_whole(std::string_view text, Decimal* out) {
  constexpr std::size_t kDigitsMax = 18;  // below 2^63, and far below the 1e28 limit
  if (text.empty() || text.size() > kDigitsMax || (text[0] == '0' && text.size() > 1)) {
    return false;
  }
  std::int64_t v = 0;
  for (const char ch : text) {
    if (ch < '0' || ch > '9') {
      return false;
    }
    v = v * 10 + (ch - '0');
  }
  *out = Decimal::from_int(v);
  return true;
}

// Parses `text` into *out; returns nullptr on success, else why the text was refused (a static
// string, so refusing allocates nothing either).
const char* parse_impl(std::string_view text, Decimal* out) {
  if (parse_small_whole(text, out)) {
    return nullptr;
  }
  NumberText in{text};
  const bool negative = in.skip('-');
  Digits digits;
  const char* why = read_integer(in, digits);
  why = why != nullptr ? why : read_fraction(in, digits);
  why = why != nullptr ? why : read_exponent(in, digits);
  if (why != nullptr) {
    return why;
  }
  if (!in.at_end()) {
    return "unexpected character";
  }
  if (digits.mantissa == 0) {
    *out = Decimal{};  // all digits zero ("0", "-0.000e5")
    return nullptr;
  }
  // units = mantissa * 10^(exponent + 9), rounded half to even.
  const std::int64_t shift = digits.exponent + Decimal::kFractionDigits;
  U128 units = 0;
  why = shift >= 0 ? scale_up(digits, shift, &units) : scale_down(digits, shift, &units);
  if (why != nullptr) {
    return why;
  }
  const auto value = static_cast<__int128>(units);
  *out = Decimal{negative ? -value : value};
  return nullptr;
}

}  // namespace

Result<Decimal> parse_decimal(std::string_view text) {
  Decimal d;
  if (const char* why = parse_impl(text, &d); why != nullptr) {
    return decimal_error(text, why);
  }
  return d;
}

bool try_parse_decimal(std::string_view text, Decimal* out) {
  return parse_impl(text, out) == nullptr;
}

void append_decimal(std::string& out, Decimal d) {
  const bool negative = d.units < 0;
  // Negating in unsigned arithmetic is defined for the most negative value too.
  const U128 magnitude =
      negative ? U128{0} - static_cast<U128>(d.units) : static_cast<U128>(d.units);
  constexpr auto kScale64 = static_cast<std::uint64_t>(Decimal::kScale);
  // Most values have a whole part below 2^64: one division splits off the fraction and the
  // digits are made with 64-bit arithmetic; only larger ones divide in 128 bits.
  U128 whole = 0;
  std::uint32_t fraction = 0;
  if ((magnitude >> 64) == 0) {
    const auto m = static_cast<std::uint64_t>(magnitude);
    whole = m / kScale64;
    fraction = static_cast<std::uint32_t>(m % kScale64);
  } else {
    whole = magnitude / kScale64;
    fraction = static_cast<std::uint32_t>(magnitude - whole * kScale64);
  }

  // 40 digits cover 2^128; plus sign, point and nine fraction digits.
  char buf[64];
  char* end = buf + sizeof(buf);
  char* p = end;
  if (fraction != 0) {
    int digits = Decimal::kFractionDigits;
    while (fraction % 10 == 0) {
      fraction /= 10;
      --digits;
    }
    for (int i = 0; i < digits; ++i) {
      *--p = static_cast<char>('0' + fraction % 10);
      fraction /= 10;
    }
    *--p = '.';
  }
  if ((whole >> 64) == 0) {
    auto w = static_cast<std::uint64_t>(whole);
    do {
      *--p = static_cast<char>('0' + w % 10);
      w /= 10;
    } while (w != 0);
  } else {
    do {
      *--p = static_cast<char>('0' + static_cast<int>(whole % 10));
      whole /= 10;
    } while (whole != 0);
  }
  if (negative) {
    *--p = '-';
  }
  out.append(p, static_cast<std::size_t>(end - p));
}

std::string format_decimal(Decimal d) {
  std::string out;
  append_decimal(out, d);
  return out;
}

Decimal divide_half_even(Decimal a, std::int64_t n) {
  // Work on magnitudes so the rounding rule does not depend on C++'s truncating division.
  const bool negative = (a.units < 0) != (n < 0);
  const U128 dividend =
      a.units < 0 ? U128{0} - static_cast<U128>(a.units) : static_cast<U128>(a.units);
  const U128 divisor =
      n < 0 ? U128{0} - static_cast<U128>(static_cast<__int128>(n)) : static_cast<U128>(n);
  U128 quotient = dividend / divisor;
  const U128 remainder = dividend % divisor;
  const U128 twice = remainder * 2;  // remainder < 2^63, so no overflow
  if (twice > divisor || (twice == divisor && (quotient & 1) != 0)) {
    ++quotient;
  }
  const auto q = static_cast<__int128>(quotient);
  return Decimal{negative ? -q : q};
}

}  // namespace tally::core

namespace tally::core {

namespace {
U128 magnitude(__int128 v) {
  return v < 0 ? U128{0} - static_cast<U128>(v) : static_cast<U128>(v);
}

// q rounded half to even from a remainder r of divisor d.
U128 round_half_even(U128 q, U128 r, U128 d) {
  const U128 twice = r * 2;
  return (twice > d || (twice == d && (q & 1) != 0)) ? q + 1 : q;
}
}  // namespace

bool multiply_half_even(Decimal a, Decimal b, Decimal* out) {
  constexpr U128 kScaleU = static_cast<U128>(Decimal::kScale);
  const bool negative = (a.units < 0) != (b.units < 0);
  const U128 x = magnitude(a.units);
  const U128 y = magnitude(b.units);
  // x * y / 1e9 = x * yq + xq * yr + xr * yr / 1e9, with x = xq * 1e9 + xr, y = yq * 1e9 + yr.
  const U128 xq = x / kScaleU;
  const U128 xr = x % kScaleU;
  const U128 yq = y / kScaleU;
  const U128 yr = y % kScaleU;
  if (yq != 0 && x > kUnitsAbsMax / yq) {
    return false;
  }
  const U128 low = xr * yr;  // < 1e18
  U128 total = x * yq + xq * yr + round_half_even(low / kScaleU, low % kScaleU, kScaleU);
  if (total > kUnitsAbsMax) {
    return false;
  }
  const auto t = static_cast<__int128>(total);
  out->units = negative ? -t : t;
  return true;
}

bool divide_decimal_half_even(Decimal a, Decimal b, Decimal* out) {
  if (b.units == 0) {
    return false;
  }
  constexpr U128 kScaleU = static_cast<U128>(Decimal::kScale);
  const bool negative = (a.units < 0) != (b.units < 0);
  const U128 x = magnitude(a.units);
  const U128 y = magnitude(b.units);
  // (x / y) * 1e9 in units: long division, one 1e9 step, to stay inside 128 bits.
  const U128 q1 = x / y;
  const U128 r1 = x % y;
  if (q1 > kUnitsAbsMax / kScaleU) {
    return false;
  }
  // r1 < y <= 1e37; r1 * 1e9 may overflow, so do it digit group by digit group.
  U128 frac = 0;
  U128 r = r1;
  for (int i = 0; i < 9; ++i) {
    r *= 10;  // r < y <= ~1.7e38 / 10 for every Decimal in range
    frac = frac * 10 + r / y;
    r %= y;
  }
  U128 total = round_half_even(q1 * kScaleU + frac, r, y);
  if (total > kUnitsAbsMax) {
    return false;
  }
  const auto t = static_cast<__int128>(total);
  out->units = negative ? -t : t;
  return true;
}

}  // namespace tally::core

namespace tally {

std::string Decimal::text() const {
  return core::format_decimal(*this);
}

}  // namespace tally
