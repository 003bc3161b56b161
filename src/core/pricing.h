// Prices: what usage costs, in a currency and in credits. Pure arithmetic on Decimals.
//
// A price applies to one meter, optionally narrowed to events whose properties have given
// values. Its model turns the units used within one billing period into a cost:
//   per_unit    units x unit_price
//   graduated   each unit at the price of the tier it falls in (the first 1,000 at a, the next
//               at b, ...), plus the flat fee of every tier entered
//   volume      every unit at the price of the tier the period's total falls in, plus that
//               tier's flat fee
//   package     ceil(units / package_size) x package_price
//   flat        flat_fee once per billing period, charged with the period's first units
// An event is charged the difference it makes to its period's cost (incremental_cost), so the
// costs of a period's events always add up to the period's cost. Under volume pricing crossing
// into a cheaper tier can make that difference negative: the event carries a negative cost.
//
// Costs are exact Decimals (1e-9 of a currency unit); a multiplication rounds half to even at
// the ninth decimal. Credits are cost x credits per currency unit x (1 + markup), rounded the
// same way.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include <tally/types.h>

#include "core/decimal.h"

namespace tally::core {

// The public price model (include/tally/types.h), whose texts are tally::to_string and
// tally::parse_price_model.
using PriceModel = tally::PriceModel;

struct PriceTier {
  bool unbounded = false;  // the last tier: no upper bound
  Decimal up_to;           // this tier covers units in (previous up_to, up_to]
  Decimal unit_price;
  Decimal flat_fee;  // charged once when the period's usage enters the tier
};

struct PriceSpec {
  std::string meter;
  std::vector<std::pair<std::string, std::string>> match;  // property key -> required text
  PriceModel model = PriceModel::kPerUnit;
  Decimal unit_price;            // per_unit
  std::vector<PriceTier> tiers;  // graduated, volume: ascending; the last unbounded
  Decimal package_size;          // package: > 0
  Decimal package_price;         // package
  Decimal flat_fee;              // flat
  std::string currency = "USD";
  Decimal credits_per_currency_unit;  // credits per 1 of `currency`, markup included
};

// What `units` (>= 0) used within one billing period cost in total.
Decimal period_cost(const PriceSpec& p, Decimal units);

// What `amount` more units cost after `before` units of the same billing period:
// period_cost(before + amount) - period_cost(before). Negative amounts (corrections) give the
// difference the other way.
Decimal incremental_cost(const PriceSpec& p, Decimal before, Decimal amount);

// cost x credits_per_currency_unit, half to even at 1e-9.
Decimal credits_for(const PriceSpec& p, Decimal cost);

// Whether a price's model counts units within the billing period (everything but per_unit).
bool price_is_tiered(const PriceSpec& p);

// Whether two specs charge the same (everything but the meter and match, which name the price).
bool same_charges(const PriceSpec& a, const PriceSpec& b);

// ---- versions ---------------------------------------------------------------------------------
// A price changes by versions: each takes effect at `effective_from` (event time) and is known
// from `created_us` (when the server first ran with it). An event is priced by the version in
// effect at its event time among those known when it is priced, so a late event is priced as
// of its time, and a version added later (a change back-dated with effective_from) does not
// alter what earlier commits charged: re-rating applies it (tally reprice).
inline constexpr std::int64_t kSinceForever = INT64_MIN;  // effective_from of a first version

struct PriceVersion {
  std::int64_t effective_from = kSinceForever;  // microseconds since the epoch
  std::int64_t created_us = 0;
  bool ended = false;  // the price was removed: nothing is charged from effective_from on
  PriceSpec spec;
};

// The version in effect at `time_us` among `versions` created at or before `known_at_us`: the
// one with the latest effective_from <= time_us (of two with the same, the later created).
// Null when there is none, or when it is an ended one.
const PriceVersion* version_at(std::span<const PriceVersion> versions, std::int64_t time_us,
                               std::int64_t known_at_us = INT64_MAX);

}  // namespace tally::core
