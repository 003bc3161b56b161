#include "core/pricing.h"

#include <random>

#include <gtest/gtest.h>

namespace tally::core {
namespace {

Decimal d(std::string_view text) {
  auto r = parse_decimal(text);
  EXPECT_TRUE(r.has_value()) << text;
  return r.has_value() ? *r : Decimal{};
}

std::string mul(std::string_view a, std::string_view b) {
  Decimal out;
  if (!multiply_half_even(d(a), d(b), &out)) {
    return "overflow";
  }
  return format_decimal(out);
}

std::string div(std::string_view a, std::string_view b) {
  Decimal out;
  if (!divide_decimal_half_even(d(a), d(b), &out)) {
    return "refused";
  }
  return format_decimal(out);
}

TEST(Multiply, ExactProducts) {
  EXPECT_EQ(mul("1000", "0.00001"), "0.01");
  EXPECT_EQ(mul("500", "0.00001"), "0.005");
  EXPECT_EQ(mul("0.015", "1000"), "15");
  EXPECT_EQ(mul("-3", "0.5"), "-1.5");
  EXPECT_EQ(mul("-3", "-0.5"), "1.5");
  EXPECT_EQ(mul("0", "123.456"), "0");
  EXPECT_EQ(mul("123456789012.345678901", "1"), "123456789012.345678901");
}

TEST(Multiply, RoundsHalfToEvenAtTheNinthDecimal) {
  // 0.000000001 x 0.5 = 0.0000000005: a tie, rounds to the even 0.
  EXPECT_EQ(mul("0.000000001", "0.5"), "0");
  // 0.000000003 x 0.5 = 0.0000000015: a tie, rounds to the even 0.000000002.
  EXPECT_EQ(mul("0.000000003", "0.5"), "0.000000002");
  // 0.000000001 x 0.6 = 0.0000000006: above the half, rounds up.
  EXPECT_EQ(mul("0.000000001", "0.6"), "0.000000001");
  EXPECT_EQ(mul("-0.000000003", "0.5"), "-0.000000002");
  EXPECT_EQ(mul("0.000000001", "0.4"), "0");
}

TEST(Multiply, RefusesResultsOutOfRange) {
  EXPECT_EQ(mul("10000000000000000000", "10000000000000"), "overflow");
  EXPECT_EQ(mul("100000000000000", "100000000000000"), "10000000000000000000000000000");  // 1e28
  EXPECT_EQ(mul("100000000000000", "100000000000001"), "overflow");
}

TEST(Multiply, AgreesWithWideArithmeticOnRandomInputs) {
  std::mt19937_64 rng(7);
  for (int i = 0; i < 20000; ++i) {
    // Magnitudes small enough that the plain product fits 128 bits.
    const auto a =
        static_cast<__int128>(static_cast<std::int64_t>(rng() >> 4)) * ((rng() & 1) != 0 ? 1 : -1);
    const auto b = static_cast<__int128>(static_cast<std::int64_t>(rng() >> 36));
    const __int128 p = a * b;
    const __int128 scale = Decimal::kScale;
    __int128 q = p / scale;
    __int128 r = p % scale;
    if (r < 0) {
      r = -r;
    }
    const bool neg = p < 0;
    const __int128 qa = neg ? -q : q;
    __int128 rounded = qa;
    if (r * 2 > scale || (r * 2 == scale && (qa & 1) != 0)) {
      ++rounded;
    }
    Decimal out;
    ASSERT_TRUE(multiply_half_even(Decimal{a}, Decimal{b}, &out));
    ASSERT_TRUE(out.units == (neg ? -rounded : rounded)) << i;
  }
}

TEST(Divide, RoundsHalfToEven) {
  EXPECT_EQ(div("1", "3"), "0.333333333");
  EXPECT_EQ(div("2", "3"), "0.666666667");
  EXPECT_EQ(div("15", "1000"), "0.015");
  EXPECT_EQ(div("-1", "8"), "-0.125");
  EXPECT_EQ(div("0.000000001", "2"), "0");            // 0.0000000005: tie to even 0
  EXPECT_EQ(div("0.000000003", "2"), "0.000000002");  // 0.0000000015: tie to even
  EXPECT_EQ(div("1", "0"), "refused");
}

PriceSpec tiered(PriceModel model) {
  PriceSpec p;
  p.model = model;
  // 0-1000 at 0.01, 1000-5000 at 0.008, above at 0.005; a flat fee of 2 entering tier 2.
  p.tiers = {PriceTier{false, d("1000"), d("0.01"), d("0")},
             PriceTier{false, d("5000"), d("0.008"), d("2")},
             PriceTier{true, Decimal{}, d("0.005"), d("0")}};
  return p;
}

TEST(Price, PerUnit) {
  PriceSpec p;
  p.unit_price = d("0.00001");
  p.credits_per_currency_unit = d("1000");
  const Decimal cost = incremental_cost(p, d("123456"), d("1000"));
  EXPECT_EQ(format_decimal(cost), "0.01");
  EXPECT_EQ(format_decimal(credits_for(p, cost)), "10");
  EXPECT_EQ(format_decimal(period_cost(p, d("1500"))), "0.015");
}

TEST(Price, GraduatedChargesEachUnitInItsTier) {
  const PriceSpec p = tiered(PriceModel::kGraduated);
  EXPECT_EQ(format_decimal(period_cost(p, d("0"))), "0");
  EXPECT_EQ(format_decimal(period_cost(p, d("1000"))), "10");
  // 1000 x 0.01 + 2 + 1000 x 0.008
  EXPECT_EQ(format_decimal(period_cost(p, d("2000"))), "20");
  // 10 + 2 + 32 + 1000 x 0.005
  EXPECT_EQ(format_decimal(period_cost(p, d("6000"))), "49");
  // An event crossing the boundary: 500 at 0.01, the fee, 500 at 0.008.
  EXPECT_EQ(format_decimal(incremental_cost(p, d("500"), d("1000"))), "11");
}

TEST(Price, VolumeChargesEveryUnitAtTheTierOfTheTotal) {
  const PriceSpec p = tiered(PriceModel::kVolume);
  EXPECT_EQ(format_decimal(period_cost(p, d("1000"))), "10");
  EXPECT_EQ(format_decimal(period_cost(p, d("1001"))), "10.008");  // 1001 x 0.008 + 2
  EXPECT_EQ(format_decimal(period_cost(p, d("6000"))), "30");
  // Crossing into a cheaper tier can make an event's cost negative: 5001 x 0.005 - 42.
  EXPECT_EQ(format_decimal(incremental_cost(p, d("5000"), d("1"))), "-16.995");
}

TEST(Price, PackageRoundsBlocksUp) {
  PriceSpec p;
  p.model = PriceModel::kPackage;
  p.package_size = d("100");
  p.package_price = d("5");
  EXPECT_EQ(format_decimal(period_cost(p, d("0"))), "0");
  EXPECT_EQ(format_decimal(period_cost(p, d("1"))), "5");
  EXPECT_EQ(format_decimal(period_cost(p, d("100"))), "5");
  EXPECT_EQ(format_decimal(period_cost(p, d("100.5"))), "10");
  EXPECT_EQ(format_decimal(incremental_cost(p, d("99"), d("1"))), "0");
  EXPECT_EQ(format_decimal(incremental_cost(p, d("100"), d("1"))), "5");
}

TEST(Price, FlatFeeOncePerPeriod) {
  PriceSpec p;
  p.model = PriceModel::kFlat;
  p.flat_fee = d("49");
  EXPECT_EQ(format_decimal(incremental_cost(p, d("0"), d("3"))), "49");
  EXPECT_EQ(format_decimal(incremental_cost(p, d("3"), d("3"))), "0");
}

TEST(Price, EventCostsAddUpToThePeriodCost) {
  std::mt19937_64 rng(11);
  for (PriceModel m : {PriceModel::kGraduated, PriceModel::kVolume}) {
    const PriceSpec p = tiered(m);
    Decimal used;
    Decimal sum;
    for (int i = 0; i < 500; ++i) {
      const Decimal amount = Decimal{static_cast<__int128>(rng() % 50'000'000'000ULL)};
      sum += incremental_cost(p, used, amount);
      used += amount;
    }
    EXPECT_EQ(sum, period_cost(p, used)) << to_string(m);
  }
}

// ---- versions ----------------------------------------------------------------------------------

PriceVersion version(std::int64_t from, std::int64_t created, const char* unit_price,
                     bool ended = false) {
  PriceVersion v;
  v.effective_from = from;
  v.created_us = created;
  v.ended = ended;
  v.spec.unit_price = d(unit_price);
  return v;
}

std::string price_at(const std::vector<PriceVersion>& vs, std::int64_t t,
                     std::int64_t known = INT64_MAX) {
  const PriceVersion* v = version_at(vs, t, known);
  return v == nullptr ? "none" : format_decimal(v->spec.unit_price);
}

TEST(PriceVersions, AnEventExactlyAtTheBoundaryTakesTheNewVersion) {
  const std::vector<PriceVersion> vs = {version(kSinceForever, 0, "1"), version(1000, 500, "2")};
  EXPECT_EQ(price_at(vs, -5), "1");
  EXPECT_EQ(price_at(vs, 999), "1");
  EXPECT_EQ(price_at(vs, 1000), "2");
  EXPECT_EQ(price_at(vs, 1001), "2");
}

TEST(PriceVersions, ALateEventIsPricedAsOfItsEventTime) {
  // The change was made (created) at 2000, effective at 2000; an event of time 1500 arriving at
  // 2500 is priced by the old version, one of time 2100 by the new.
  const std::vector<PriceVersion> vs = {version(kSinceForever, 0, "1"), version(2000, 2000, "3")};
  EXPECT_EQ(price_at(vs, 1500, 2500), "1");
  EXPECT_EQ(price_at(vs, 2100, 2500), "3");
}

TEST(PriceVersions, AVersionNotYetKnownDoesNotApply) {
  // Back-dated: effective from 1000 but created at 5000. What commits before 5000 charged used
  // the old version; after, the new one applies to events from 1000 on.
  const std::vector<PriceVersion> vs = {version(kSinceForever, 0, "1"), version(1000, 5000, "4")};
  EXPECT_EQ(price_at(vs, 2000, 4999), "1");
  EXPECT_EQ(price_at(vs, 2000, 5000), "4");
  EXPECT_EQ(price_at(vs, 999, 6000), "1");
}

TEST(PriceVersions, OfTwoAtTheSameInstantTheLaterCreatedWins) {
  const std::vector<PriceVersion> vs = {version(1000, 300, "7"), version(1000, 100, "5")};
  EXPECT_EQ(price_at(vs, 1000), "7");
  EXPECT_EQ(price_at(vs, 1000, 200), "5");
  EXPECT_EQ(price_at(vs, 999), "none") << "nothing is in effect before the first version";
}

TEST(PriceVersions, AnEndedPriceChargesNothingFromItsEndOn) {
  const std::vector<PriceVersion> vs = {version(kSinceForever, 0, "1"),
                                        version(3000, 3000, "0", true)};
  EXPECT_EQ(price_at(vs, 2999), "1");
  EXPECT_EQ(price_at(vs, 3000), "none");
  EXPECT_EQ(price_at(vs, 2999, 2000), "1");
}

TEST(PriceVersions, SameChargesIgnoresTheNameOnly) {
  PriceSpec a;
  a.meter = "x";
  a.unit_price = d("0.5");
  PriceSpec b = a;
  b.meter = "y";
  EXPECT_TRUE(same_charges(a, b));
  b.credits_per_currency_unit = d("2");
  EXPECT_FALSE(same_charges(a, b)) << "a new credit rate is a new version";
  b = a;
  b.tiers.push_back(PriceTier{true, Decimal{}, d("1"), Decimal{}});
  EXPECT_FALSE(same_charges(a, b));
}

}  // namespace
}  // namespace tally::core
