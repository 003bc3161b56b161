// What the configuration defines, as the engine looks it up: the meters (the configured ones,
// then the hidden cost and credits meter of each priced one), the prices with their versions,
// and which meters an event type feeds.
//
// Built once while the engine opens (Catalog::build from the config, then load_prices adds the
// stored versions and the prices the config no longer has) and never changed after: the engine
// holds it const, so any thread reads it without a lock. The mutable aggregates of each meter
// live beside it in Engine::Impl, indexed the same way.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "core/meter.h"
#include "core/pricing.h"
#include "engine/string_map.h"

namespace tally::config {
struct Config;
}

namespace tally::engine {

// No meter: a price whose meter left the configuration, or a meter without a price's hidden
// cost/credits meter.
inline constexpr std::uint32_t kNoMeter = ~std::uint32_t{0};

struct MeterDef {
  core::MeterSpec spec;
  // The cost or credits of a priced meter ("tokens_in:cost"): fed by the commit's pricing,
  // never by events directly; not listed and not checkable.
  bool hidden = false;
  // Some plan or override may limit it: count, sum, latest and max meters.
  bool limitable = false;
  // Consuming checks of it may share one usage event, their amounts summed (check.cc): a count
  // or sum meter without prices, the only meter of its event type, so the summed event feeds
  // exactly what the checks' own events would have. Set by mark_merged_usage.
  bool merges_check_usage = false;
};

// A price (one meter and match) with its versions (prices.cc). Configured prices come first,
// in config order, then prices the configuration no longer has, whose history is kept.
struct PriceState {
  core::PriceSpec spec;     // meter and match; the charges are the versions'
  std::string key;          // meter + '#' + a number: names it in stored versions and usage
  std::uint32_t meter = 0;  // kNoMeter when its meter is no longer configured
  std::string event_type;
  bool configured = true;
  std::vector<core::PriceVersion> versions;  // in stored order: effective_from, then created
  // The config entries of this price (Config::prices indexes), each a version.
  std::vector<std::size_t> entries;
};

class Catalog {
 public:
  // The meters and prices of `config`; prices get their keys and versions from load_prices.
  static Catalog build(const config::Config& config);

  Catalog() = default;
  Catalog(Catalog&&) = default;
  Catalog& operator=(Catalog&&) = default;
  // Not copied: value_meters' pointers point into this object.
  Catalog(const Catalog&) = delete;
  Catalog& operator=(const Catalog&) = delete;

  // A configured (not hidden) meter by key, or null.
  const MeterDef* find(std::string_view key) const;

  std::uint32_t index_of(const MeterDef* m) const {
    return static_cast<std::uint32_t>(m - meters.data());
  }

  // The meters that events of `type` feed, in config order; null when none.
  const std::vector<std::uint32_t>* meters_of_type(std::string_view type) const;
  // Sets MeterDef::merges_check_usage; once the prices are complete (after load_prices).
  void mark_merged_usage();

  std::vector<MeterDef> meters;
  std::vector<PriceState> prices;
  std::vector<std::vector<std::uint32_t>> prices_by_meter;  // meter -> price indexes, in order
  // Per configured meter: the index of its hidden cost / credits meter, or kNoMeter.
  std::vector<std::uint32_t> cost_meter;
  std::vector<std::uint32_t> credits_meter;
  std::vector<std::string> metered_types;  // the event types some meter counts
  // Meters whose value must not be negative (core::ParseOptions::nonnegative): for customer
  // keys every meter with a value, for admin callers those without allow_negative. The
  // pointers point into value_meters.
  std::vector<core::MeterSpec> value_meters;
  std::vector<const core::MeterSpec*> nonnegative_for_customers;
  std::vector<const core::MeterSpec*> nonnegative_for_admins;

 private:
  std::unordered_map<std::string, std::vector<std::uint32_t>, StringHash, std::equal_to<>> by_type_;
};

}  // namespace tally::engine
