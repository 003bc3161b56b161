// The scale-out mode's pricing of events (see cluster_mode.h): what each event written costs,
// in money and in credits, computed by the embedded engine's own rules: per meter the event
// feeds (core::meter_accepts), the first of the meter's prices that matches its properties and
// has a version in effect at its time (engine::match_price), charged by core::incremental_cost
// and core::credits_for; the event's cost and credits are the sums over its meters, and each
// meter's part (cluster::MeterCharge) feeds that meter's hidden cost and credits meters, which
// cost and credits queries read (cluster_query.cc), as the embedded commit feeds them.
//
// A per_unit price's charge is a pure function of the event and the configuration: computed
// before the write's transaction (charges_of). A tiered price's (graduated, volume, package,
// flat: core::price_is_tiered) depends on the units its customer's billing period counted
// before the event, as the embedded engine's price_usage: it is priced inside the write's
// transaction, after the events are inserted (write_events' before_aggregates), with the rows
// of the periods it touches (customer, price, period start: cluster/pg_prices.h) locked, so
// writers on every node charging one period take turns and each counts what the ones before it
// committed. Only inserted events are charged: a duplicate, on any node, counts no units and is
// charged nothing. The events' rows then get their full cost and credits.
//
// What equals the embedded store: each period's total charge (and so each customer's, and the
// credits burned), whatever order the events arrive in across nodes, for a period priced by one
// version of the price, because an event is charged the difference it makes to its period's
// cost (core::incremental_cost): the charges of a period add up to the cost of its units. How
// that total splits over the events (and so over the minutes of the cost and credits meters)
// follows the order the writes committed in, as on the embedded store it follows the order of
// arrival: the same events arriving in the same order are charged the same, one by one. A
// period whose price changes version within it is charged by each event's version on the units
// before it, as on the embedded store, and there the total does depend on the order.
#include "engine/cluster_mode_impl.h"
#include "engine/price_match.h"

namespace tally::engine {

std::vector<std::optional<cluster::EventCharge>> ClusterMode::Impl::charges_of(
    const core::EventBatch& b, std::span<const std::uint32_t> indices,
    std::vector<TieredPart>* tiered) const {
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
      if (core::price_is_tiered(price->version->spec)) {
        tiered->push_back(TieredPart{k, m, price->index, price->version, input.value});
        continue;
      }
      const core::Decimal cost =
          core::incremental_cost(price->version->spec, core::Decimal{}, input.value);
      const core::Decimal credits = core::credits_for(price->version->spec, cost);
      cluster::EventCharge& charge = out[k] ? *out[k] : out[k].emplace();
      charge.cost += cost;
      charge.credits += credits;
      charge.meters.push_back(cluster::MeterCharge{m, cost, credits});
    }
  }
  return out;
}

Status ClusterMode::Impl::prepare_write(const core::EventBatch& b,
                                        std::span<const std::uint32_t> indices,
                                        const std::map<std::string, Customer>* customers,
                                        WriteCharges* wc, cluster::EventWriteOptions* options) {
  wc->base = charges_of(b, indices, &wc->tiered);
  wc->charges = wc->base;
  for (const TieredPart& part : wc->tiered) {
    std::string id(b.text(b.events()[indices[part.pos]].customer));
    if (wc->periods.count(id) != 0) {
      continue;
    }
    if (customers != nullptr) {
      if (const auto known = customers->find(id); known != customers->end()) {
        wc->periods.emplace(id, period_context_of(known->second));
        continue;
      }
    }
    auto c = find_check_customer(id);
    if (!c) {
      return c.error();
    }
    wc->periods.emplace(std::move(id), period_context_of(*c));
  }
  options->charges = wc->charges;
  options->charge_meters = &charge_meters;
  if (!wc->tiered.empty()) {
    options->before_aggregates = [this, &b, indices, wc](pg::Connection& conn,
                                                         const std::vector<bool>& inserted) {
      return charge_tiered(conn, b, indices, *wc, inserted);
    };
  }
  if (!wc->charges.empty()) {
    options->in_transaction = [this, &b, indices, wc](pg::Connection& conn,
                                                      const std::vector<bool>& inserted) {
      return burn_credits(conn, b, indices, wc->charges, inserted);
    };
  }
  return Status();
}

std::vector<std::optional<cluster::EventCharge>> ClusterMode::Impl::charges_to_verify(
    const core::EventBatch& b, std::span<const std::uint32_t> indices,
    std::span<const std::optional<cluster::EventCharge>> stored) const {
  std::vector<TieredPart> tiered;
  std::vector<std::optional<cluster::EventCharge>> out = charges_of(b, indices, &tiered);
  // At most one tiered part per event (add_config_versions refuses two tiered meters of one
  // event type): what its row holds beyond the per_unit parts.
  for (const TieredPart& part : tiered) {
    if (!stored[part.pos]) {
      continue;  // charged nothing: verify then finds its per_unit parts missing, if any
    }
    cluster::EventCharge& charge = out[part.pos] ? *out[part.pos] : out[part.pos].emplace();
    const cluster::MeterCharge rest{part.meter, stored[part.pos]->cost - charge.cost,
                                    stored[part.pos]->credits - charge.credits};
    charge.cost += rest.cost;
    charge.credits += rest.credits;
    charge.meters.push_back(rest);
  }
  return out;
}

Status ClusterMode::Impl::charge_tiered(pg::Connection& conn, const core::EventBatch& b,
                                        std::span<const std::uint32_t> indices, WriteCharges& wc,
                                        const std::vector<bool>& inserted) {
  // Every run of the transaction starts from the per_unit charges (a run that rolled back
  // added nothing). Assigned in place: write_events views these entries.
  std::copy(wc.base.begin(), wc.base.end(), wc.charges.begin());
  std::vector<cluster::PeriodKey> part_keys(wc.tiered.size());
  std::map<cluster::PeriodKey, core::Decimal> units;
  for (std::size_t i = 0; i < wc.tiered.size(); ++i) {
    const TieredPart& part = wc.tiered[i];
    if (!inserted[part.pos]) {
      continue;
    }
    const core::Event& e = b.events()[indices[part.pos]];
    const std::string customer(b.text(e.customer));
    const core::PeriodContext& pc = wc.periods.at(customer);
    core::TimeUs start = 0;
    core::TimeUs end = 0;
    core::billing_period_span(e.time_us, pc.billing_anchor_us, pc.tz, &start, &end);
    part_keys[i] = cluster::PeriodKey{customer, catalog->prices[part.price].key, start};
    units.emplace(part_keys[i], core::Decimal{});
  }
  if (units.empty()) {
    return Status();
  }
  std::vector<cluster::PeriodKey> keys;
  for (const auto& [key, u] : units) {
    keys.push_back(key);
  }
  auto locked = cluster::lock_price_usage(conn, keys);
  if (!locked) {
    return locked.error();
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    units[keys[i]] = (*locked)[i];
  }
  // In event order, then meter order, as the embedded commit prices them.
  std::vector<bool> changed(indices.size(), false);
  for (std::size_t i = 0; i < wc.tiered.size(); ++i) {
    const TieredPart& part = wc.tiered[i];
    if (!inserted[part.pos]) {
      continue;
    }
    core::Decimal& before = units[part_keys[i]];
    const core::Decimal cost = core::incremental_cost(part.version->spec, before, part.units);
    const core::Decimal credits = core::credits_for(part.version->spec, cost);
    before += part.units;
    cluster::EventCharge& charge =
        wc.charges[part.pos] ? *wc.charges[part.pos] : wc.charges[part.pos].emplace();
    charge.cost += cost;
    charge.credits += credits;
    charge.meters.push_back(cluster::MeterCharge{part.meter, cost, credits});
    changed[part.pos] = true;
  }
  std::vector<core::Decimal> now_units;
  for (const cluster::PeriodKey& key : keys) {
    now_units.push_back(units[key]);
  }
  TALLY_TRY(cluster::store_price_usage(conn, keys, now_units));
  std::vector<cluster::ChargedEvent> events;
  for (std::size_t k = 0; k < indices.size(); ++k) {
    if (changed[k]) {
      const core::Event& e = b.events()[indices[k]];
      events.push_back(cluster::ChargedEvent{std::string(b.text(e.customer)),
                                             std::string(b.text(e.id)), wc.charges[k]->cost,
                                             wc.charges[k]->credits});
    }
  }
  return cluster::set_event_charges(conn, events);
}

}  // namespace tally::engine
