// Catalog::build: the engine's meters and prices from the configuration (see catalog.h).
#include "engine/catalog.h"

#include <algorithm>

#include "config/config.h"

namespace tally::engine {

namespace {

bool limitable(core::Aggregation a) {
  return a == core::Aggregation::kCount || a == core::Aggregation::kSum ||
         a == core::Aggregation::kLatest || a == core::Aggregation::kMax;
}

// One price per meter and match; its config entries are its versions. Keys and versions come
// from the store at open (load_prices); stored prices the config lost join there too.
void add_prices(Catalog& c, const config::Config& config) {
  c.prices_by_meter.resize(c.meters.size());
  for (std::size_t e = 0; e < config.prices.size(); ++e) {
    const core::PriceSpec& spec = config.prices[e].spec;
    std::vector<std::pair<std::string, std::string>> match = spec.match;
    std::sort(match.begin(), match.end());
    auto same = std::find_if(c.prices.begin(), c.prices.end(), [&](const PriceState& ps) {
      return ps.spec.meter == spec.meter && ps.spec.match == match;
    });
    if (same != c.prices.end()) {
      same->entries.push_back(e);
      continue;
    }
    PriceState ps;
    ps.spec.meter = spec.meter;
    ps.spec.match = std::move(match);
    if (const MeterDef* m = c.find(spec.meter); m != nullptr) {
      ps.meter = c.index_of(m);
      ps.event_type = m->spec.event_type;
    }
    ps.entries.push_back(e);
    c.prices_by_meter[ps.meter].push_back(static_cast<std::uint32_t>(c.prices.size()));
    c.prices.push_back(std::move(ps));
  }
}

// The meters whose values are numbers, and those that must not be negative (see catalog.h).
void add_value_meters(Catalog& c) {
  for (const MeterDef& m : c.meters) {
    if (!m.spec.value_property.empty() && m.spec.aggregation != core::Aggregation::kUniqueCount) {
      c.value_meters.push_back(m.spec);
    }
  }
  for (const core::MeterSpec& spec : c.value_meters) {
    c.nonnegative_for_customers.push_back(&spec);
    if (!spec.allow_negative) {
      c.nonnegative_for_admins.push_back(&spec);
    }
  }
}

// Hidden sum meters for the cost and credits of each priced meter (of the first `configured`),
// grouped like it. They are fed by pricing, not by events of their type, so by_type_ does not
// list them.
void add_hidden_meters(Catalog& c, std::uint32_t configured) {
  c.cost_meter.assign(configured, kNoMeter);
  c.credits_meter.assign(configured, kNoMeter);
  for (std::uint32_t i = 0; i < configured; ++i) {
    if (c.prices_by_meter[i].empty()) {
      continue;
    }
    for (const Measure measure : {Measure::kCost, Measure::kCredits}) {
      MeterDef hidden;
      hidden.hidden = true;
      hidden.spec.key = c.meters[i].spec.key + ":" + std::string(to_string(measure));
      hidden.spec.event_type = c.meters[i].spec.event_type;
      hidden.spec.aggregation = core::Aggregation::kSum;
      hidden.spec.value_property = to_string(measure);
      hidden.spec.group_by = c.meters[i].spec.group_by;
      (measure == Measure::kCost ? c.cost_meter : c.credits_meter)[i] =
          static_cast<std::uint32_t>(c.meters.size());
      c.meters.push_back(std::move(hidden));
    }
  }
}

}  // namespace

Catalog Catalog::build(const config::Config& config) {
  Catalog c;
  for (const auto& spec : config.meters) {
    c.meters.push_back(MeterDef{spec, false, limitable(spec.aggregation)});
  }
  const auto configured = static_cast<std::uint32_t>(c.meters.size());
  add_prices(c, config);
  for (std::uint32_t i = 0; i < configured; ++i) {
    const std::string& type = c.meters[i].spec.event_type;
    auto [it, added] = c.by_type_.try_emplace(type);
    if (added) {
      c.metered_types.push_back(type);
    }
    it->second.push_back(i);
  }
  add_value_meters(c);
  add_hidden_meters(c, configured);
  return c;
}

const MeterDef* Catalog::find(std::string_view key) const {
  for (const MeterDef& m : meters) {
    if (!m.hidden && m.spec.key == key) {
      return &m;
    }
  }
  return nullptr;
}

const std::vector<std::uint32_t>* Catalog::meters_of_type(std::string_view type) const {
  auto it = by_type_.find(type);
  return it == by_type_.end() ? nullptr : &it->second;
}

void Catalog::mark_merged_usage() {
  for (std::uint32_t i = 0; i < meters.size(); ++i) {
    MeterDef& m = meters[i];
    const core::Aggregation a = m.spec.aggregation;
    const std::vector<std::uint32_t>* fed = meters_of_type(m.spec.event_type);
    m.merges_check_usage = !m.hidden &&
                           (a == core::Aggregation::kCount || a == core::Aggregation::kSum) &&
                           prices_by_meter[i].empty() && fed != nullptr && fed->size() == 1;
  }
}

}  // namespace tally::engine
