// Recomputation of aggregates from raw events: used to rebuild a meter whose definition
// changed, and by `tally verify` to prove that every stored aggregate equals its events.
#include <map>
#include <set>

#include "engine/engine_impl.h"

namespace tally {
namespace engine {

Status recompute(const store::Store& store, const std::vector<core::MeterSpec>& meters,
                 const std::unordered_map<std::uint32_t, std::string>& customer_ids,
                 Recomputed* out, std::int64_t dedup_window_us, const RecomputeHook& on_event) {
  core::EventBatch scratch;
  core::MeterInput input;
  std::string group;
  // (customer, id) -> when its latest copy was received.
  std::map<std::pair<std::uint32_t, std::string>, core::TimeUs> seen;
  Status bad;
  Status s = store.scan(store::Space::kEvents, "", "", [&](std::string_view k, std::string_view v) {
    if (k.size() != 12) {
      out->problems.push_back("an event block key has the wrong length");
      return true;
    }
    const std::uint32_t cnum = read_be32(k);
    auto cit = customer_ids.find(cnum);
    if (cit == customer_ids.end()) {
      out->problems.push_back("events stored for customer number " + std::to_string(cnum) +
                              ", which has no customer record");
      return true;
    }
    const std::string& customer = cit->second;
    BlockHeader h;
    const bool ok = decode_event_block(v, &h, [&](const BlockEvent& be) {
      ++out->events;
      auto [sit, first] = seen.try_emplace({cnum, std::string(be.id)}, h.received_at_us);
      if (!first) {
        // The commit accepts a copy again once the earlier one is older than the window.
        const core::TimeUs apart = h.received_at_us > sit->second
                                       ? h.received_at_us - sit->second
                                       : sit->second - h.received_at_us;
        if (dedup_window_us <= 0 || apart <= dedup_window_us) {
          out->problems.push_back("event id '" + std::string(be.id) + "' of customer '" +
                                  customer + "' is stored twice");
        }
        sit->second = h.received_at_us;
      }
      scratch.clear();
      core::Event e;
      e.id = scratch.add_text(be.id);
      e.customer = scratch.add_text(customer);
      e.type = scratch.add_text(be.type);
      e.time_us = be.time_us;
      e.prop_begin = 0;
      e.prop_count = static_cast<std::uint32_t>(be.props.size());
      for (const auto& p : be.props) {
        scratch.props().push_back(core::Prop{scratch.add_text(p.key), scratch.add_text(p.text), p.kind});
      }
      scratch.events().push_back(e);
      if (on_event) {
        on_event(cnum, be, scratch);
      }
      for (const auto& m : meters) {
        if (m.event_type != be.type || !core::meter_accepts(m, scratch, scratch.events()[0], &input, &group)) {
          continue;
        }
        const core::TimeUs minute =
            be.time_us - (((be.time_us % core::kUsPerMinute) + core::kUsPerMinute) % core::kUsPerMinute);
        out->aggregates[aggregate_key(m.key, cnum, minute, group)].add(input.value, be.time_us,
                                                                       be.seq);
        if (m.aggregation == core::Aggregation::kUniqueCount) {
          out->uniques[unique_key(m.key, cnum, minute, group, input.unique)] = true;
        }
      }
    });
    if (!ok) {
      out->problems.push_back("an event block of customer '" + customer + "' cannot be decoded");
    }
    return true;
  });
  TALLY_TRY(s);
  return bad;
}

}  // namespace engine

Result<VerifyReport> Engine::verify() const {
  const Impl& d = *impl_;
  std::unordered_map<std::uint32_t, std::string> ids;
  std::vector<core::MeterSpec> specs;
  {
    std::shared_lock lock(d.state_mutex);
    for (const auto& [num, cs] : d.customers) {
      ids[num] = cs.record.id;
    }
  }
  std::set<std::string> meter_keys;
  for (const auto& m : d.meters) {
    if (!m.hidden) {
      specs.push_back(m.spec);  // hidden cost meters are recomputed by repricing, below
    }
    meter_keys.insert(m.spec.key);
  }
  // Every event priced again from scratch, in order, as its commit priced it.
  std::map<std::pair<std::uint32_t, std::string>, std::vector<Impl::PricedEvent>> priced;
  engine::LedgerWork repriced;
  repriced.from_scratch = true;
  std::unordered_map<std::uint32_t, std::pair<core::TimeZone, core::TimeUs>> periods;
  {
    std::shared_lock lock(d.state_mutex);
    for (const auto& [num, cs] : d.customers) {
      periods[num] = {cs.tz, cs.record.billing_anchor_us != 0 ? cs.record.billing_anchor_us
                                                              : cs.record.created_at_us};
    }
  }
  core::MeterInput input;
  std::string group;
  std::vector<std::pair<std::string_view, std::string_view>> props;
  std::map<std::string, core::AggState> hidden_aggregates;
  auto reprice = [&](std::uint32_t cnum, const engine::BlockEvent& be, const core::EventBatch& b) {
    core::Decimal credits;
    bool any = false;
    props.clear();
    for (const auto& p : be.props) {
      props.emplace_back(p.key, p.text);
    }
    const auto& [tz, anchor] = periods[cnum];
    for (std::uint32_t m = 0; m < d.prices_by_meter.size(); ++m) {
      if (d.prices_by_meter[m].empty() || d.meters[m].spec.event_type != be.type ||
          !core::meter_accepts(d.meters[m].spec, b, b.events()[0], &input, &group)) {
        continue;
      }
      core::Decimal cost;
      core::Decimal c;
      if (d.price_of(m, cnum, tz, anchor, be.time_us, input.value, props, &repriced, &cost, &c)) {
        credits += c;
        any = true;
        const core::TimeUs minute =
            be.time_us - (((be.time_us % core::kUsPerMinute) + core::kUsPerMinute) % core::kUsPerMinute);
        hidden_aggregates[engine::aggregate_key(d.meters[d.cost_meter[m]].spec.key, cnum, minute,
                                                group)]
            .add(cost, be.time_us, be.seq);
        hidden_aggregates[engine::aggregate_key(d.meters[d.credits_meter[m]].spec.key, cnum,
                                                minute, group)]
            .add(c, be.time_us, be.seq);
      }
    }
    if (any || be.priced) {
      priced[{cnum, std::string(be.id)}].push_back(Impl::PricedEvent{be.credits, credits});
    }
  };
  engine::Recomputed r;
  TALLY_TRY(engine::recompute(*d.store, specs, ids, &r,
                              d.config.storage.dedup_window_seconds * core::kUsPerSecond, reprice));
  for (auto& [k, st] : hidden_aggregates) {
    r.aggregates[k] = st;
  }
  VerifyReport report;
  report.events = r.events;
  report.differences = r.problems;

  auto describe = [&](std::string_view key) {
    engine::AggregateKey ak;
    if (!engine::decode_aggregate_key(key, &ak)) {
      return std::string("an undecodable key");
    }
    auto it = ids.find(ak.customer_num);
    return "meter '" + std::string(ak.meter) + "', customer '" +
           (it != ids.end() ? it->second : std::to_string(ak.customer_num)) + "', minute " +
           core::format_rfc3339(ak.minute_us);
  };

  std::set<std::string> stored_keys;
  Status s = d.store->scan(store::Space::kAggregates, "", "", [&](std::string_view k,
                                                                  std::string_view v) {
    engine::AggregateKey ak;
    if (!engine::decode_aggregate_key(k, &ak) || meter_keys.count(std::string(ak.meter)) == 0) {
      return true;  // a meter no longer configured
    }
    ++report.aggregates;
    stored_keys.emplace(k);
    core::AggState stored;
    if (!engine::decode_agg_state(v, &stored)) {
      report.differences.push_back(describe(k) + ": the stored aggregate cannot be decoded");
      return true;
    }
    auto it = r.aggregates.find(std::string(k));
    if (it == r.aggregates.end()) {
      report.differences.push_back(describe(k) + ": stored aggregate has no events");
    } else if (!(it->second == stored)) {
      report.differences.push_back(describe(k) + ": stored count " + std::to_string(stored.count) +
                                   " sum " + core::format_decimal(stored.sum) +
                                   ", recomputed count " + std::to_string(it->second.count) +
                                   " sum " + core::format_decimal(it->second.sum));
    }
    return true;
  });
  TALLY_TRY(s);
  for (const auto& [k, st] : r.aggregates) {
    if (stored_keys.count(k) == 0) {
      report.differences.push_back(describe(k) + ": events with no stored aggregate (count " +
                                   std::to_string(st.count) + ")");
    }
  }
  std::set<std::string> stored_uniques;
  s = d.store->scan(store::Space::kUniques, "", "", [&](std::string_view k, std::string_view) {
    engine::UniqueKey uk;
    if (!engine::decode_unique_key(k, &uk) || meter_keys.count(std::string(uk.meter)) == 0) {
      return true;
    }
    stored_uniques.emplace(k);
    if (r.uniques.count(std::string(k)) == 0) {
      report.differences.push_back("meter '" + std::string(uk.meter) +
                                   "': a stored distinct value has no event");
    }
    return true;
  });
  TALLY_TRY(s);
  for (const auto& [k, unused] : r.uniques) {
    if (stored_uniques.count(k) == 0) {
      report.differences.push_back("a distinct value of the events is not stored");
    }
  }
  d.verify_ledger(priced, ids, &report);
  return report;
}

}  // namespace tally
