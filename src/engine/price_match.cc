// Which price charges a meter's value (see price_match.h).
#include "engine/price_match.h"

#include <algorithm>
#include <map>
#include <set>
#include <string>

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
  std::map<std::string, long> next_number;
  for (PriceState& ps : catalog.prices) {
    // Named as the embedded store names a new price line: its meter and its place among the
    // meter's prices, the same on every node of the same [[prices]] (price_usage rows name it).
    ps.key = ps.spec.meter + "#" + std::to_string(next_number[ps.spec.meter]++);
    std::set<core::TimeUs> from;
    for (std::size_t e : ps.entries) {
      const config::PriceConfig& pc = config.prices[e];
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
  // `tally verify` gives an event's stored charge, less its per_unit parts, to the one meter a
  // tiered price charged it for: two such meters of one event type could not be told apart.
  for (const std::string& type : catalog.metered_types) {
    const std::vector<std::uint32_t>* fed = catalog.meters_of_type(type);
    std::vector<std::string> tiered;
    for (std::uint32_t m : fed != nullptr ? *fed : std::vector<std::uint32_t>{}) {
      for (std::uint32_t p : catalog.prices_by_meter[m]) {
        const auto& versions = catalog.prices[p].versions;
        if (std::any_of(versions.begin(), versions.end(),
                        [](const auto& v) { return core::price_is_tiered(v.spec); })) {
          tiered.push_back(catalog.meters[m].spec.key);
          break;
        }
      }
    }
    if (tiered.size() > 1) {
      return Status::invalid_argument(
          "meters '" + tiered[0] + "' and '" + tiered[1] + "' of event type '" + type +
          "' both have a tiered price (graduated, volume, package or flat): in the cluster mode "
          "at most one meter of an event type may (docs/cluster.md)");
    }
  }
  return Status();
}

}  // namespace tally::engine
