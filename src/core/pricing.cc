#include "core/pricing.h"

#include <algorithm>

namespace tally::core {

namespace {

Decimal times(Decimal a, Decimal b) {
  Decimal out;
  // Prices and period totals are validated at configuration time; a product outside the
  // Decimal range saturates rather than wrapping.
  if (!multiply_half_even(a, b, &out)) {
    const __int128 max = static_cast<__int128>(10'000'000'000'000'000'000ULL) *
                         static_cast<__int128>(1'000'000'000'000'000'000LL);  // 1e28 in units
    out.units = (a.units < 0) != (b.units < 0) ? -max : max;
  }
  return out;
}

Decimal max0(Decimal d) {
  return d.units < 0 ? Decimal{} : d;
}

Decimal graduated(const PriceSpec& p, Decimal units) {
  Decimal cost;
  Decimal lower;
  for (const auto& t : p.tiers) {
    if (units <= lower) {
      break;
    }
    const Decimal upper = t.unbounded ? units : std::min(units, t.up_to);
    cost += times(max0(upper - lower), t.unit_price) + t.flat_fee;
    if (t.unbounded) {
      break;
    }
    lower = t.up_to;
  }
  return cost;
}

Decimal volume(const PriceSpec& p, Decimal units) {
  if (units.units <= 0 || p.tiers.empty()) {
    return Decimal{};
  }
  for (const auto& t : p.tiers) {
    if (t.unbounded || units <= t.up_to) {
      return times(units, t.unit_price) + t.flat_fee;
    }
  }
  const PriceTier& last = p.tiers.back();  // a configuration always ends unbounded
  return times(units, last.unit_price) + last.flat_fee;
}

Decimal packages(const PriceSpec& p, Decimal units) {
  if (units.units <= 0 || p.package_size.units <= 0) {
    return Decimal{};
  }
  __int128 n = units.units / p.package_size.units;
  if (units.units % p.package_size.units != 0) {
    ++n;
  }
  return times(Decimal{n * Decimal::kScale}, p.package_price);
}

}  // namespace

bool price_is_tiered(const PriceSpec& p) {
  return p.model != PriceModel::kPerUnit;
}

Decimal period_cost(const PriceSpec& p, Decimal units) {
  switch (p.model) {
    case PriceModel::kPerUnit:
      return times(units, p.unit_price);
    case PriceModel::kGraduated:
      return graduated(p, units);
    case PriceModel::kVolume:
      return volume(p, units);
    case PriceModel::kPackage:
      return packages(p, units);
    case PriceModel::kFlat:
      return units.units > 0 ? p.flat_fee : Decimal{};
  }
  return Decimal{};
}

Decimal incremental_cost(const PriceSpec& p, Decimal before, Decimal amount) {
  if (p.model == PriceModel::kPerUnit) {
    return times(amount, p.unit_price);  // exact per event, whatever came before
  }
  return period_cost(p, before + amount) - period_cost(p, before);
}

Decimal credits_for(const PriceSpec& p, Decimal cost) {
  return times(cost, p.credits_per_currency_unit);
}

bool same_charges(const PriceSpec& a, const PriceSpec& b) {
  auto same_tiers = [](const std::vector<PriceTier>& x, const std::vector<PriceTier>& y) {
    return std::equal(x.begin(), x.end(), y.begin(), y.end(),
                      [](const PriceTier& t, const PriceTier& u) {
                        return t.unbounded == u.unbounded && t.up_to == u.up_to &&
                               t.unit_price == u.unit_price && t.flat_fee == u.flat_fee;
                      });
  };
  return a.model == b.model && a.unit_price == b.unit_price && same_tiers(a.tiers, b.tiers) &&
         a.package_size == b.package_size && a.package_price == b.package_price &&
         a.flat_fee == b.flat_fee && a.currency == b.currency &&
         a.credits_per_currency_unit == b.credits_per_currency_unit;
}

const PriceVersion* version_at(std::span<const PriceVersion> versions, std::int64_t time_us,
                               std::int64_t known_at_us) {
  const PriceVersion* best = nullptr;
  for (const PriceVersion& v : versions) {
    if (v.created_us > known_at_us || v.effective_from > time_us) {
      continue;
    }
    if (best == nullptr || v.effective_from > best->effective_from ||
        (v.effective_from == best->effective_from && v.created_us >= best->created_us)) {
      best = &v;
    }
  }
  return best != nullptr && !best->ended ? best : nullptr;
}

}  // namespace tally::core
