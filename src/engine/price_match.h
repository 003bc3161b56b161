// Which price charges a meter's value, shared by the embedded engine (Engine::Impl::price_of)
// and the scale-out mode (cluster_prices.cc), so both charge an event the same.
//
// A meter's prices are tried in catalog order; the first whose match the event's properties
// meet (every key present with the required text) and that has a version in effect at the
// event's time (core::version_at) charges it. A price without a version in effect then (not yet,
// or removed) leaves the event to the next price.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <utility>

#include "core/pricing.h"
#include "engine/catalog.h"

namespace tally::config {
struct Config;
}

namespace tally::engine {

struct PriceMatch {
  std::uint32_t index = 0;                      // into Catalog::prices
  const core::PriceVersion* version = nullptr;  // into that price's versions; never null
};

// The price of meter `meter` (a Catalog::meters index) that charges an event of `props` at
// `time_us`, among the versions created by `known_at_us`; nullopt when none does.
std::optional<PriceMatch> match_price(
    const Catalog& catalog, std::uint32_t meter,
    std::span<const std::pair<std::string_view, std::string_view>> props, core::TimeUs time_us,
    core::TimeUs known_at_us = INT64_MAX);

// The scale-out mode's price versions: it stores none, so each configured price's versions are
// its [[prices]] entries, each in effect from its effective_from (since forever without one),
// known always. Every node must run with the same [[prices]].
// Errors: kInvalidArgument naming the price for two entries of one price from the same instant,
// or naming the meters when two meters of one event type have tiered prices (models that count
// units within the billing period: `tally verify` could not split an event's charge over them).
Status add_config_versions(Catalog& catalog, const config::Config& config);

}  // namespace tally::engine
