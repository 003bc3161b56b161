// The scale-out mode's pricing of events (see cluster_mode.h): what each event written costs,
// in money and in credits, computed by the embedded engine's own rules: per meter the event
// feeds (core::meter_accepts), the first of the meter's prices that matches its properties and
// has a version in effect at its time (engine::match_price), charged by core::incremental_cost
// and core::credits_for; the event's cost and credits are the sums over its meters, and each
// meter's part (cluster::MeterCharge) feeds that meter's hidden cost and credits meters, which
// cost and credits queries read (cluster_query.cc), as the embedded commit feeds them.
//
// The mode prices per_unit prices only (ClusterMode::open refuses the models that count units
// within the billing period), so an event's charge is a pure function of the event and the
// configuration: computed before the write's transaction, stored (events.cost, events.credits)
// for the events it inserts, and nothing for a duplicate, which it does not insert.
#include "engine/cluster_mode_impl.h"
#include "engine/price_match.h"

namespace tally::engine {

std::vector<std::optional<cluster::EventCharge>> ClusterMode::Impl::charges_of(
    const core::EventBatch& b, std::span<const std::uint32_t> indices) const {
  std::vector<std::optional<cluster::EventCharge>> out;
  if (catalog->prices.empty()) {
    return out;
  }
  out.resize(indices.size());
  core::MeterInput input;
  std::string group;
  std::vector<std::pair<std::string_view, std::string_view>> props;
  for (std::size_t k = 0; k < indices.size(); ++k) {
    const core::Event& e = b.events()[indices[k]];
    const std::vector<std::uint32_t>* fed = catalog->meters_of_type(b.text(e.type));
    if (fed == nullptr) {
      continue;
    }
    props.clear();
    for (std::uint32_t p = e.prop_begin; p < e.prop_begin + e.prop_count; ++p) {
      props.emplace_back(b.text(b.props()[p].key), b.text(b.props()[p].text));
    }
    for (std::uint32_t m : *fed) {
      if (catalog->prices_by_meter[m].empty() ||
          !core::meter_accepts(catalog->meters[m].spec, b, e, &input, &group)) {
        continue;
      }
      const std::optional<PriceMatch> price = match_price(*catalog, m, props, e.time_us);
      if (!price) {
        continue;
      }
      // Per-unit only (see above): no units of the period before this event matter.
      const core::Decimal cost =
          core::incremental_cost(price->version->spec, core::Decimal{}, input.value);
      cluster::EventCharge& charge = out[k] ? *out[k] : out[k].emplace();
      const core::Decimal credits = core::credits_for(price->version->spec, cost);
      charge.cost += cost;
      charge.credits += credits;
      charge.meters.push_back(cluster::MeterCharge{m, cost, credits});
    }
  }
  return out;
}

}  // namespace tally::engine
