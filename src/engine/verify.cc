// Recomputation of aggregates from raw events: used to rebuild a meter whose definition
// changed, and by `tally verify` to prove that every stored aggregate equals its events.
#include <map>
#include <set>

#include "engine/engine_impl.h"

namespace tally {
namespace engine {

void stored_event_batch(std::string_view customer, const BlockEvent& be, core::EventBatch* b) {
  b->clear();
  core::Event e;
  e.id = b->add_text(be.id);
  e.customer = b->add_text(customer);
  e.type = b->add_text(be.type);
  e.time_us = be.time_us;
  e.quantity = be.quantity;
  e.prop_begin = 0;
  e.prop_count = static_cast<std::uint32_t>(be.props.size());
  for (const auto& p : be.props) {
    b->props().push_back(core::Prop{b->add_text(p.key), b->add_text(p.text), p.kind});
  }
  b->events().push_back(e);
}

void add_event_aggregates(const std::vector<core::MeterSpec>& meters, std::uint32_t cnum,
                          const BlockEvent& be, const core::EventBatch& b,
                          std::map<std::string, core::AggState>* aggregates,
                          std::map<std::string, bool>* uniques) {
  core::MeterInput input;
  std::string group;
  for (const auto& m : meters) {
    if (m.event_type != be.type || !core::meter_accepts(m, b, b.events()[0], &input, &group)) {
      continue;
    }
    const core::TimeUs minute = core::floor_to(be.time_us, core::kUsPerMinute);
    (*aggregates)[aggregate_key(m.key, cnum, minute, group)].add(input.value, be.time_us, be.seq);
    if (m.aggregation == core::Aggregation::kUniqueCount) {
      (*uniques)[unique_key(m.key, cnum, minute, group, input.unique)] = true;
    }
  }
}

Status recompute(const store::Store& store, const std::vector<core::MeterSpec>& meters,
                 const std::unordered_map<std::uint32_t, std::string>& customer_ids,
                 Recomputed* out, std::int64_t dedup_window_us, const RecomputeHook& on_event) {
  core::EventBatch scratch;
  // (customer, id) -> when its latest copy was received.
  std::map<std::pair<std::uint32_t, std::string>, core::TimeUs> seen;
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
        const core::TimeUs apart = h.received_at_us > sit->second ? h.received_at_us - sit->second
                                                                  : sit->second - h.received_at_us;
        if (dedup_window_us <= 0 || apart <= dedup_window_us) {
          out->problems.push_back("event id '" + std::string(be.id) + "' of customer '" + customer +
                                  "' is stored twice");
        }
        sit->second = h.received_at_us;
      }
      stored_event_batch(customer, be, &scratch);
      if (on_event) {
        on_event(cnum, be, scratch);
      }
      add_event_aggregates(meters, cnum, be, scratch, &out->aggregates, &out->uniques);
    });
    if (!ok) {
      out->problems.push_back("an event block of customer '" + customer + "' cannot be decoded");
    }
    return true;
  });
  return s;
}

Repricer::Repricer(const Engine::Impl& d) : d_(d) {
  work_.from_scratch = true;
  std::shared_lock lock(d.state_mutex);
  for (const auto& [num, cs] : d.customers) {
    periods_[num] = {cs.tz, cs.record.billing_anchor_us != 0 ? cs.record.billing_anchor_us
                                                             : cs.record.created_at_us};
  }
}

Status Repricer::seed_from_archives() {
  std::unordered_map<std::string_view, std::uint32_t> index;
  for (std::uint32_t i = 0; i < d_.catalog->prices.size(); ++i) {
    index[d_.catalog->prices[i].key] = i;
  }
  const std::string begin(1, kArchivePriceTag);
  const std::string end(1, static_cast<char>(kArchivePriceTag + 1));
  return d_.store->scan(
      store::Space::kArchive, begin, end, [&](std::string_view k, std::string_view v) {
        std::string_view price;
        std::uint32_t cnum = 0;
        core::TimeUs start = 0;
        core::Decimal units;
        if (k.size() > 9 && decode_price_usage_key(k.substr(9), &price, &cnum, &start) &&
            decode_decimal(v, &units)) {
          if (auto it = index.find(price); it != index.end()) {
            work_.price_usage[{it->second, cnum, start}] += units;  // a price since removed: skip
          }
        }
        return true;
      });
}

bool Repricer::priced_by_removed_meter(std::string_view type) const {
  return std::any_of(
      d_.catalog->prices.begin(), d_.catalog->prices.end(),
      [&](const PriceState& ps) { return ps.meter == engine::kNoMeter && ps.event_type == type; });
}

bool Repricer::price(std::uint32_t cnum, const BlockEvent& be, const core::EventBatch& b,
                     std::map<std::string, core::AggState>* hidden, core::Decimal* credits,
                     LedgerWork* units, bool as_committed) {
  const core::TimeUs known_at = as_committed ? be.received_at_us : INT64_MAX;
  bool any = false;
  *credits = core::Decimal{};
  props_.clear();
  for (const auto& p : be.props) {
    props_.emplace_back(p.key, p.text);
  }
  const auto& [tz, anchor] = periods_[cnum];
  for (std::uint32_t m = 0; m < d_.catalog->prices_by_meter.size(); ++m) {
    if (d_.catalog->prices_by_meter[m].empty() ||
        d_.catalog->meters[m].spec.event_type != be.type ||
        !core::meter_accepts(d_.catalog->meters[m].spec, b, b.events()[0], &input_, &group_)) {
      continue;
    }
    core::Decimal cost;
    core::Decimal c;
    if (!d_.price_of(m, cnum, tz, anchor, be.time_us, input_.value, props_, &work_, &cost, &c,
                     known_at)) {
      continue;
    }
    *credits += c;
    any = true;
    if (units != nullptr) {
      // The same price matches again (matching depends on properties only), so this counts the
      // event's tiered units under the same key; its price there is not used.
      core::Decimal unused_cost;
      core::Decimal unused_credits;
      d_.price_of(m, cnum, tz, anchor, be.time_us, input_.value, props_, units, &unused_cost,
                  &unused_credits, known_at);
    }
    if (hidden != nullptr && d_.catalog->cost_meter[m] != engine::kNoMeter) {
      const core::TimeUs minute = core::floor_to(be.time_us, core::kUsPerMinute);
      (*hidden)[aggregate_key(d_.catalog->meters[d_.catalog->cost_meter[m]].spec.key, cnum, minute,
                              group_)]
          .add(cost, be.time_us, be.seq);
      (*hidden)[aggregate_key(d_.catalog->meters[d_.catalog->credits_meter[m]].spec.key, cnum,
                              minute, group_)]
          .add(c, be.time_us, be.seq);
    }
  }
  return any;
}

Status add_archive_baselines(
    const store::Store& store, const std::set<std::string>& meter_keys, Recomputed* r,
    std::map<std::pair<std::uint32_t, std::string>, std::vector<Engine::Impl::PricedEvent>>* priced,
    std::uint64_t* archived) {
  return store.scan(store::Space::kArchive, "", "", [&](std::string_view k, std::string_view v) {
    const char tag = k.empty() ? '\0' : k[0];
    if (tag == kArchivedEventTag) {
      ArchivedEventRecord rec;
      if (k.size() != 13 || !decode_archived_event(v, &rec)) {
        r->problems.push_back("an archived event record cannot be decoded");
        return true;
      }
      ++*archived;
      if (rec.priced) {
        // Its credits were checked against its prices before it was archived.
        (*priced)[{read_be32(k.substr(1)), rec.id}].push_back(
            Engine::Impl::PricedEvent{rec.credits, rec.credits});
      }
    } else if ((tag == kArchiveAggregateTag || tag == kArchiveUniqueTag) && k.size() > 9) {
      const std::string_view inner = k.substr(9);
      const std::string_view meter = inner.substr(0, inner.find('\0'));
      if (meter_keys.count(std::string(meter)) == 0) {
        return true;  // a meter no longer configured, like its stored aggregates
      }
      if (tag == kArchiveUniqueTag) {
        r->uniques[std::string(inner)] = true;
        return true;
      }
      core::AggState st;
      if (!decode_agg_state(v, &st)) {
        r->problems.push_back("an archived aggregate baseline cannot be decoded");
        return true;
      }
      r->aggregates[std::string(inner)].merge(st);
    }
    return true;
  });
}

}  // namespace engine

Result<VerifyReport> Engine::verify() const {
  const Impl& d = *impl_;
  std::lock_guard no_archive(d.archive_mutex);
  std::unordered_map<std::uint32_t, std::string> ids;
  std::vector<core::MeterSpec> specs;
  {
    std::shared_lock lock(d.state_mutex);
    for (const auto& [num, cs] : d.customers) {
      ids[num] = cs.record.id;
    }
  }
  std::set<std::string> meter_keys;
  for (const auto& m : d.catalog->meters) {
    if (!m.hidden) {
      specs.push_back(m.spec);  // hidden cost meters are recomputed by repricing, below
    }
    meter_keys.insert(m.spec.key);
  }
  // Every event priced again from scratch, in order, as its commit priced it (tiered prices
  // start from the units archived events counted).
  std::map<std::pair<std::uint32_t, std::string>, std::vector<Impl::PricedEvent>> priced;
  std::map<std::string, core::AggState> hidden_aggregates;
  engine::Repricer repricer(d);
  TALLY_TRY(repricer.seed_from_archives());
  // Re-rated events: (customer, seq) -> what their last re-rating charges; per customer, the
  // sum of those charges less the stored credits, which its re-rating adjustments must undo.
  std::map<std::pair<std::uint32_t, std::uint64_t>, core::Decimal> rerates;
  std::map<std::uint32_t, core::Decimal> rerate_differences;
  VerifyReport report;
  const std::string rerate_begin(engine::kRerateKeyPrefix);
  TALLY_TRY(
      d.store->scan(store::Space::kMeta, rerate_begin, engine::prefix_end(rerate_begin),
                    [&](std::string_view key, std::string_view value) {
                      core::Decimal credits;
                      core::TimeUs at = 0;
                      if (key.size() != rerate_begin.size() + 12 ||
                          !engine::decode_rerate(value, &credits, &at)) {
                        report.differences.push_back("a re-rating record cannot be decoded");
                        return true;
                      }
                      const std::string_view k = key.substr(rerate_begin.size());
                      rerates[{engine::read_be32(k), engine::read_be64(k.substr(4))}] = credits;
                      return true;
                    }));
  auto reprice = [&](std::uint32_t cnum, const engine::BlockEvent& be, const core::EventBatch& b) {
    core::Decimal credits;
    bool any = repricer.price(cnum, be, b, &hidden_aggregates, &credits, nullptr);
    if (!any && be.priced && repricer.priced_by_removed_meter(be.type)) {
      credits = be.credits;  // its meter is gone: what it was charged cannot be priced again
      any = true;
    }
    if (any || be.priced) {
      priced[{cnum, std::string(be.id)}].push_back(Impl::PricedEvent{be.credits, credits});
    }
    if (auto it = rerates.find({cnum, be.seq}); it != rerates.end()) {
      rerate_differences[cnum] += it->second - (be.priced ? be.credits : core::Decimal{});
      rerates.erase(it);
    }
  };
  engine::Recomputed r;
  TALLY_TRY(engine::recompute(*d.store, specs, ids, &r,
                              d.config.storage.dedup_window_seconds * core::kUsPerSecond, reprice));
  for (auto& [k, st] : hidden_aggregates) {
    r.aggregates[k] = st;
  }
  // Archived events are gone from the hot store; what they added stays in the aggregates and
  // the ledger, and was recorded when they left.
  std::uint64_t archived = 0;
  TALLY_TRY(engine::add_archive_baselines(*d.store, meter_keys, &r, &priced, &archived));
  // Re-rated events archived since: their stored credits are in their archived records.
  for (const auto& [k, credits] : rerates) {
    auto rec = d.store->get(store::Space::kArchive, engine::archived_event_key(k.first, k.second));
    engine::ArchivedEventRecord a;
    if (!rec || !rec->has_value() || !engine::decode_archived_event(**rec, &a)) {
      report.differences.push_back("a re-rating names event " + std::to_string(k.second) +
                                   " of customer number " + std::to_string(k.first) +
                                   ", which is not stored");
      continue;
    }
    rerate_differences[k.first] += credits - (a.priced ? a.credits : core::Decimal{});
  }
  report.events = r.events;
  report.archived_events = archived;
  report.differences.insert(report.differences.end(), r.problems.begin(), r.problems.end());

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
  Status s =
      d.store->scan(store::Space::kAggregates, "", "", [&](std::string_view k, std::string_view v) {
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
          report.differences.push_back(
              describe(k) + ": stored count " + std::to_string(stored.count) + " sum " +
              core::format_decimal(stored.sum) + ", recomputed count " +
              std::to_string(it->second.count) + " sum " + core::format_decimal(it->second.sum));
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
  d.verify_ledger(priced, ids, rerate_differences, &report);
  return report;
}

}  // namespace tally
