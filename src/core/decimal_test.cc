// Tests for core/decimal: JSON number parsing with half-even rounding at nine fraction digits,
// the 1e28 limit, shortest formatting, and half-even division.
#include "core/decimal.h"

#include <limits>
#include <string>

#include <gtest/gtest.h>

namespace tally::core {
namespace {

// The units of a number the test knows to be valid.
__int128 units(std::string_view text) {
  Result<Decimal> r = parse_decimal(text);
  EXPECT_TRUE(r.has_value()) << text << ": " << r.status().to_string();
  return r.has_value() ? r->units : 0;
}

void expect_refused(std::string_view text, std::string_view why) {
  Result<Decimal> r = parse_decimal(text);
  ASSERT_FALSE(r.has_value()) << text << " parsed as " << format_decimal(*r);
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << text;
  EXPECT_NE(r.error().message().find(why), std::string::npos)
      << text << ": \"" << r.error().message() << "\" lacks \"" << why << "\"";
  Decimal untouched{42};
  EXPECT_FALSE(try_parse_decimal(text, &untouched)) << text;
  EXPECT_EQ(untouched.units, 42) << text;
}

constexpr __int128 kE18 = 1'000'000'000'000'000'000;
constexpr __int128 kMaxUnits = kE18 * kE18 * 10;  // 1e28 * 1e9

// ---- parse_decimal ----

TEST(ParseDecimal, Integers) {
  EXPECT_EQ(units("0"), 0);
  EXPECT_EQ(units("12"), 12'000'000'000);
  EXPECT_EQ(units("-12"), -12'000'000'000);
  EXPECT_EQ(units("1234567890123"), static_cast<__int128>(1234567890123) * Decimal::kScale);
}

TEST(ParseDecimal, Fractions) {
  EXPECT_EQ(units("-0.5"), -500'000'000);
  EXPECT_EQ(units("0.000000001"), 1);
  EXPECT_EQ(units("0.00001"), 10'000);
  EXPECT_EQ(units("3.14159"), 3'141'590'000);
  EXPECT_EQ(units("1.000000000"), 1'000'000'000);
  EXPECT_EQ(units("0.123456789"), 123'456'789);
}

TEST(ParseDecimal, NegativeZeroIsZero) {
  EXPECT_EQ(units("-0"), 0);
  EXPECT_EQ(units("-0.0"), 0);
  EXPECT_EQ(units("-0e10"), 0);
}

TEST(ParseDecimal, Exponents) {
  EXPECT_EQ(units("1.5e3"), 1'500 * Decimal::kScale);
  EXPECT_EQ(units("2E-4"), 200'000);
  EXPECT_EQ(units("1E+2"), 100 * Decimal::kScale);
  EXPECT_EQ(units("1e0"), Decimal::kScale);
  EXPECT_EQ(units("-25e-1"), -2'500'000'000);
  EXPECT_EQ(units("0.001e3"), Decimal::kScale);
  EXPECT_EQ(units("1e-9"), 1);
  EXPECT_EQ(units("123456789e-18"), 0);  // 1.23e-10 rounds to zero
  EXPECT_EQ(units("1e-999"), 0);
  EXPECT_EQ(units("1e-99999999999999999999999"), 0);
  EXPECT_EQ(units("0e999999"), 0);
}

TEST(ParseDecimal, RoundsHalfToEvenAtTheNinthPlace) {
  EXPECT_EQ(units("0.0000000005"), 0);  // tie, 0 is even
  EXPECT_EQ(units("0.0000000015"), 2);  // tie, up to even
  EXPECT_EQ(units("0.0000000025"), 2);  // tie, down to even
  EXPECT_EQ(units("0.0000000035"), 4);
  EXPECT_EQ(units("0.00000000149"), 1);           // below half
  EXPECT_EQ(units("0.00000000151"), 2);           // above half
  EXPECT_EQ(units("0.00000000250000000001"), 3);  // just above a tie
  EXPECT_EQ(units("2.5e-9"), 2);
  EXPECT_EQ(units("3.5e-9"), 4);
}

TEST(ParseDecimal, RoundsNegativesSymmetrically) {
  EXPECT_EQ(units("-0.0000000015"), -2);
  EXPECT_EQ(units("-0.0000000025"), -2);
  EXPECT_EQ(units("-0.00000000251"), -3);
  EXPECT_EQ(units("-0.00000000049"), 0);
}

TEST(ParseDecimal, DigitsBeyondThirtyEightStillBreakTies) {
  // 0.1234567885 exactly is a tie that rounds to the even 123456788 ...
  EXPECT_EQ(units("0.12345678850000000000000000000000000000000000000"), 123'456'788);
  // ... but a non-zero digit far past the kept 38 makes it more than half.
  EXPECT_EQ(units("0.12345678850000000000000000000000000000000000001"), 123'456'789);
  EXPECT_EQ(units("0.12345678849999999999999999999999999999999999999"), 123'456'788);
}

TEST(ParseDecimal, LongIntegers) {
  EXPECT_EQ(units("9999999999999999999999999999"), kMaxUnits - Decimal::kScale);
  // 38+ significant digits whose tail is below the ninth place.
  EXPECT_EQ(units("1234567890123456789.0123456789012345678901234"),
            static_cast<__int128>(1234567890123456789) * Decimal::kScale + 12'345'679);
}

TEST(ParseDecimal, LimitIsInclusiveAt1e28) {
  EXPECT_EQ(units("1e28"), kMaxUnits);
  EXPECT_EQ(units("-1e28"), -kMaxUnits);
  EXPECT_EQ(units("10000000000000000000000000000"), kMaxUnits);
  EXPECT_EQ(units("10000000000000000000000000000.000000000"), kMaxUnits);
  EXPECT_EQ(units("10000000000000000000000000000.0000000000000000000000000"), kMaxUnits);
  EXPECT_EQ(units("0.1e29"), kMaxUnits);
}

TEST(ParseDecimal, RefusesMagnitudesAbove1e28) {
  expect_refused("1e29", "1e28");
  expect_refused("-1e29", "1e28");
  expect_refused("1e999", "1e28");
  expect_refused("-1e999", "1e28");
  expect_refused("1e99999999999999999999", "1e28");
  expect_refused("10000000000000000000000000001", "1e28");
  expect_refused("10000000000000000000000000000.0000000001", "1e28");
  expect_refused("10000000000000000000000000000.00000000000000000000000000001", "1e28");
  expect_refused("1.0000000001e28", "1e28");
  expect_refused("123456789012345678901234567890123456789012345678901234567890", "1e28");
}

TEST(ParseDecimal, RefusesNonJsonGrammar) {
  expect_refused("", "digit");
  expect_refused("-", "digit");
  expect_refused("+1", "digit");
  expect_refused("--1", "digit");
  expect_refused(".5", "digit");
  expect_refused("1.", "after '.'");
  expect_refused("01", "leading zero");
  expect_refused("-01", "leading zero");
  expect_refused("1e", "exponent");
  expect_refused("1e+", "exponent");
  expect_refused("1E-", "exponent");
  expect_refused("1.2.3", "unexpected");
  expect_refused(" 1", "digit");
  expect_refused("1 ", "unexpected");
  expect_refused("abc", "digit");
  expect_refused("NaN", "digit");
  expect_refused("Infinity", "digit");
  expect_refused("-Infinity", "digit");
  expect_refused("0x10", "unexpected");
  expect_refused("1_000", "unexpected");
  expect_refused("1,5", "unexpected");
  expect_refused("\"1\"", "digit");
}

TEST(ParseDecimal, ErrorQuotesAShortenedText) {
  const std::string text = "x" + std::string(1000, '1');
  Result<Decimal> r = parse_decimal(text);
  ASSERT_FALSE(r.has_value());
  EXPECT_LT(r.error().message().size(), 200u);
}

TEST(TryParseDecimal, MatchesParseDecimal) {
  for (std::string_view text : {"0", "-1.5", "2E-4", "0.0000000015", "1e28"}) {
    Decimal d;
    ASSERT_TRUE(try_parse_decimal(text, &d)) << text;
    EXPECT_EQ(d.units, units(text)) << text;
  }
}

// Whole numbers of up to 18 digits take a shorter way; every length around it reads the same.
TEST(ParseDecimal, WholeNumbersOfEveryLengthReadExactly) {
  std::string text;
  __int128 value = 0;
  for (int digits = 1; digits <= 28; ++digits) {
    const char next = static_cast<char>('1' + (digits * 7) % 9);
    text += next;
    value = value * 10 + (next - '0');
    for (const std::string& t : {text, "-" + text}) {
      Decimal d;
      ASSERT_TRUE(try_parse_decimal(t, &d)) << t;
      const __int128 want = (t[0] == '-' ? -value : value) * Decimal::kScale;
      EXPECT_TRUE(d.units == want) << t;
      EXPECT_EQ(format_decimal(d), t);
    }
  }
  Decimal d;
  ASSERT_TRUE(try_parse_decimal("0", &d));
  EXPECT_TRUE(d.units == 0);
  ASSERT_TRUE(try_parse_decimal("999999999999999999", &d));
  EXPECT_EQ(format_decimal(d), "999999999999999999");
  for (const char* refused : {"00", "01", "1a", "12345678901234567x", "+5", "5 "}) {
    EXPECT_FALSE(try_parse_decimal(refused, &d)) << refused;
  }
}

// ---- format_decimal ----

TEST(FormatDecimal, ShortestExactText) {
  EXPECT_EQ(format_decimal(Decimal{}), "0");
  EXPECT_EQ(format_decimal(Decimal::from_int(12)), "12");
  EXPECT_EQ(format_decimal(Decimal::from_int(-12)), "-12");
  EXPECT_EQ(format_decimal(Decimal{-500'000'000}), "-0.5");
  EXPECT_EQ(format_decimal(Decimal{1}), "0.000000001");
  EXPECT_EQ(format_decimal(Decimal{-1}), "-0.000000001");
  EXPECT_EQ(format_decimal(Decimal{1'230'000'000}), "1.23");
  EXPECT_EQ(format_decimal(Decimal{10'000'000'010}), "10.00000001");
  EXPECT_EQ(format_decimal(Decimal{kMaxUnits}), "10000000000000000000000000000");
}

TEST(FormatDecimal, Extremes) {
  EXPECT_EQ(format_decimal(Decimal{std::numeric_limits<__int128>::max()}),
            "170141183460469231731687303715.884105727");
  EXPECT_EQ(format_decimal(Decimal{std::numeric_limits<__int128>::min()}),
            "-170141183460469231731687303715.884105728");
}

TEST(FormatDecimal, RoundTripsThroughParse) {
  for (std::string_view text : {"0", "1", "-1", "0.5", "-0.000000001", "123456.789",
                                "9999999999999999999999999999.999999999", "-42.000000007"}) {
    EXPECT_EQ(format_decimal(Decimal{units(text)}), text);
  }
}

TEST(FormatDecimal, NormalisesParsedSpellings) {
  EXPECT_EQ(format_decimal(Decimal{units("1.50")}), "1.5");
  EXPECT_EQ(format_decimal(Decimal{units("1.5e3")}), "1500");
  EXPECT_EQ(format_decimal(Decimal{units("-0")}), "0");
  EXPECT_EQ(format_decimal(Decimal{units("25E-10")}), "0.000000002");
}

// ---- arithmetic ----

TEST(DecimalOps, FromIntAndOperators) {
  EXPECT_EQ(Decimal::from_int(3).units, 3 * Decimal::kScale);
  EXPECT_EQ(Decimal::from_int(2) + Decimal::from_int(3), Decimal::from_int(5));
  EXPECT_EQ(Decimal::from_int(2) - Decimal::from_int(3), Decimal::from_int(-1));
  EXPECT_LT(Decimal{-1}, Decimal{0});
  Decimal sum;
  sum += Decimal{units("0.1")};
  sum += Decimal{units("0.2")};
  EXPECT_EQ(sum, Decimal{units("0.3")});  // exact, unlike binary floating point
}

// ---- divide_half_even ----

TEST(DivideHalfEven, Exact) {
  EXPECT_EQ(divide_half_even(Decimal::from_int(9), 3), Decimal::from_int(3));
  EXPECT_EQ(divide_half_even(Decimal::from_int(-9), 3), Decimal::from_int(-3));
  EXPECT_EQ(divide_half_even(Decimal{}, 7), Decimal{});
  EXPECT_EQ(divide_half_even(Decimal{12345}, 1), Decimal{12345});
}

TEST(DivideHalfEven, TiesGoToEven) {
  EXPECT_EQ(divide_half_even(Decimal{5}, 2).units, 2);   // 2.5
  EXPECT_EQ(divide_half_even(Decimal{7}, 2).units, 4);   // 3.5
  EXPECT_EQ(divide_half_even(Decimal{1}, 2).units, 0);   // 0.5
  EXPECT_EQ(divide_half_even(Decimal{3}, 2).units, 2);   // 1.5
  EXPECT_EQ(divide_half_even(Decimal{10}, 4).units, 2);  // 2.5
  EXPECT_EQ(divide_half_even(Decimal{6}, 4).units, 2);   // 1.5
}

TEST(DivideHalfEven, NegativeTiesGoToEven) {
  EXPECT_EQ(divide_half_even(Decimal{-5}, 2).units, -2);
  EXPECT_EQ(divide_half_even(Decimal{-7}, 2).units, -4);
  EXPECT_EQ(divide_half_even(Decimal{5}, -2).units, -2);
  EXPECT_EQ(divide_half_even(Decimal{7}, -2).units, -4);
  EXPECT_EQ(divide_half_even(Decimal{-5}, -2).units, 2);
  EXPECT_EQ(divide_half_even(Decimal{-7}, -2).units, 4);
}

TEST(DivideHalfEven, NonTiesRoundToNearest) {
  EXPECT_EQ(divide_half_even(Decimal{1}, 3).units, 0);
  EXPECT_EQ(divide_half_even(Decimal{2}, 3).units, 1);
  EXPECT_EQ(divide_half_even(Decimal{-2}, 3).units, -1);
  EXPECT_EQ(divide_half_even(Decimal{-1}, 3).units, 0);
  EXPECT_EQ(divide_half_even(Decimal{26}, 10).units, 3);
  EXPECT_EQ(divide_half_even(Decimal{-26}, 10).units, -3);
  EXPECT_EQ(divide_half_even(Decimal{24}, 10).units, 2);
}

TEST(DivideHalfEven, AverageOfAmounts) {
  // (1 + 2) / 2 = 1.5 exactly; 10 / 3 = 3.333333333 at nine places; 2 / 3 rounds up.
  EXPECT_EQ(divide_half_even(Decimal::from_int(3), 2), Decimal{units("1.5")});
  EXPECT_EQ(divide_half_even(Decimal::from_int(10), 3), Decimal{units("3.333333333")});
  EXPECT_EQ(divide_half_even(Decimal::from_int(2), 3), Decimal{units("0.666666667")});
  EXPECT_EQ(divide_half_even(Decimal::from_int(-2), 3), Decimal{units("-0.666666667")});
}

TEST(DivideHalfEven, ExtremeOperands) {
  const std::int64_t min64 = std::numeric_limits<std::int64_t>::min();
  const std::int64_t max64 = std::numeric_limits<std::int64_t>::max();
  EXPECT_EQ(divide_half_even(Decimal{static_cast<__int128>(min64)}, min64).units, 1);
  const __int128 big = static_cast<__int128>(max64) * 1000;
  // max64 is odd, so max64 / 2 is just under half of it and max64 / 2 + 1 just over.
  EXPECT_EQ(divide_half_even(Decimal{big + max64 / 2}, max64).units, 1000);
  EXPECT_EQ(divide_half_even(Decimal{big + max64 / 2 + 1}, max64).units, 1001);
  EXPECT_EQ(divide_half_even(Decimal{-big - max64 / 2 - 1}, max64).units, -1001);
  EXPECT_EQ(divide_half_even(Decimal{-kMaxUnits}, -1).units, kMaxUnits);
  // Exactly half of min64's magnitude is a tie and goes to 0; one unit more goes to 1.
  EXPECT_EQ(divide_half_even(Decimal{static_cast<__int128>(min64 / 2)}, min64).units, 0);
  EXPECT_EQ(divide_half_even(Decimal{static_cast<__int128>(min64 / 2 - 1)}, min64).units, 1);
}

}  // namespace
}  // namespace tally::core
