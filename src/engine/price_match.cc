// Which price charges a meter's value (see price_match.h).
#include "engine/price_match.h"

#include <algorithm>
#include <set>

#include "config/config.h"

namespace tally::engine {

std::optional<PriceMatch> match_price(
    const Catalog& catalog, std::uint32_t meter,
    std::span<const std::pair<std::string_view, std::string_view>> props, core::TimeUs time_us,
    core::TimeUs known_at_us) {
  if (meter >= catalog.prices_by_meter.size()) {
    return std::nullopt;
  }
  for (std::uint32_t index : catalog.prices_by_meter[meter]) {
    const auto& match = catalog.prices[index].spec.match;
    const bool matches = std::all_of(match.begin(), match.end(), [&](const auto& m) {
      return std::any_of(props.begin(), props.end(),
                         [&](const auto& p) { return p.first == m.first && p.second == m.second; });
    });
    if (!matches) {
      continue;
    }
    const core::PriceVersion* version =
        core::version_at(catalog.prices[index].versions, time_us, known_at_us);
    if (version != nullptr) {
      return PriceMatch{index, version};
    }
  }
  return std::nullopt;
}

Status add_config_versions(Catalog& catalog, const config::Config& config) {
  for (PriceState& ps : catalog.prices) {
    std::set<core::TimeUs> from;
    for (std::size_t e : ps.entries) {
      const config::PriceConfig& pc = config.prices[e];
      if (core::price_is_tiered(pc.spec)) {
        return Status::invalid_argument(
            "price of meter '" + ps.spec.meter + "' is " + std::string(to_string(pc.spec.model)) +
            ": a model that counts units within the billing period is not built in the cluster "
            "mode yet (per_unit is; docs/cluster.md)");
      }
      core::PriceVersion v;
      v.effective_from = pc.has_effective_from ? pc.effective_from_us : core::kSinceForever;
      v.created_us = 0;
      v.spec = pc.spec;
      v.spec.meter = ps.spec.meter;
      v.spec.match = ps.spec.match;
      if (!from.insert(v.effective_from).second) {
        return Status::invalid_argument(
            "price of meter '" + ps.spec.meter +
            "' has two [[prices]] entries in effect from the same instant; in the cluster mode "
            "each entry of a price needs its own effective_from (docs/cluster.md)");
      }
      ps.versions.push_back(std::move(v));
    }
    std::sort(ps.versions.begin(), ps.versions.end(),
              [](const auto& a, const auto& b) { return a.effective_from < b.effective_from; });
  }
  return Status();
}

}  // namespace tally::engine
