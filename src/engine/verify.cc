// Recomputation of aggregates from raw events: used to rebuild a meter whose definition
// changed, and by `tally verify` to prove that every stored aggregate equals its events.
#include <algorithm>
#include <bit>
#include <map>
#include <memory_resource>
#include <optional>
#include <set>
#include <thread>
#include <unordered_map>

#include "common/assert.h"
#include "engine/cluster_mode.h"
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
  for_each_meter_fed(meters, be, b,
                     [&](const core::MeterSpec& m, core::TimeUs minute, const std::string& group,
                         const core::MeterInput& input) {
                       (*aggregates)[aggregate_key(m.key, cnum, minute, group)].add(
                           input.value, be.time_us, be.seq);
                       if (m.aggregation == core::Aggregation::kUniqueCount) {
                         (*uniques)[unique_key(m.key, cnum, minute, group, input.unique)] = true;
                       }
                     });
}

namespace {

// When each event id of one customer was last received: an open-addressing table of the ids'
// hashes and text, the text in an arena, all let go of at once when the next customer begins
// (a node and a string per id was a tenth of verify's time).
class ReceivedIds {
 public:
  ReceivedIds() { slots_.resize(kSlotsMin); }

  // When `id` was received before (nullopt the first time); it is now received `at`.
  std::optional<core::TimeUs> exchange(std::string_view id, core::TimeUs at) {
    if ((used_ + 1) * 2 > slots_.size()) {
      grow();
    }
    const std::uint64_t hash = std::hash<std::string_view>{}(id);
    std::size_t i = hash & (slots_.size() - 1);
    for (; slots_[i].id.data() != nullptr; i = (i + 1) & (slots_.size() - 1)) {
      if (slots_[i].hash == hash && slots_[i].id == id) {
        return std::exchange(slots_[i].at, at);
      }
    }
    char* text = static_cast<char*>(arena_.allocate(std::max<std::size_t>(id.size(), 1), 1));
    std::copy(id.begin(), id.end(), text);
    slots_[i] = Slot{hash, std::string_view(text, id.size()), at};
    ++used_;
    return std::nullopt;
  }

  // Forgets every id: a table about twice the size of the last customer's ids is kept.
  void clear() {
    slots_.assign(std::max(kSlotsMin, std::bit_ceil(used_ * 2)), Slot{});
    used_ = 0;
    arena_.release();
  }

 private:
  static constexpr std::size_t kSlotsMin = 1024;  // a power of two

  struct Slot {
    std::uint64_t hash = 0;
    std::string_view id;  // data() is null in an empty slot
    core::TimeUs at = 0;
  };

  void grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    for (const Slot& slot : old) {
      if (slot.id.data() != nullptr) {
        std::size_t i = slot.hash & (slots_.size() - 1);
        while (slots_[i].id.data() != nullptr) {
          i = (i + 1) & (slots_.size() - 1);
        }
        slots_[i] = slot;
      }
    }
  }

  std::vector<Slot> slots_;  // a power of two
  std::size_t used_ = 0;
  std::pmr::monotonic_buffer_resource arena_;
};

}  // namespace

Status recompute(const store::Store& store, const std::vector<core::MeterSpec>& meters,
                 const std::unordered_map<std::uint32_t, std::string>& customer_ids,
                 Recomputed* out, std::int64_t dedup_window_us, const RecomputeHook& on_event,
                 const CustomerDone& on_customer_done, CustomerRange customers) {
  core::EventBatch scratch;
  // The customer whose blocks are being read, and when the latest copy of each of its ids was
  // received (block keys begin with the customer number: a customer's blocks are together).
  std::optional<std::uint32_t> current;
  ReceivedIds seen;
  Status failed;
  auto customer_done = [&] {
    if (current.has_value() && on_customer_done) {
      failed = on_customer_done(*current, out);
    }
    current.reset();
    seen.clear();
    return failed.ok();
  };
  // Block keys are the customer number (be32) and a sequence (be64).
  std::string first_key;
  std::string end_key;
  put_be32(first_key, static_cast<std::uint32_t>(customers.first));
  if (customers.end < CustomerRange::kEnd) {
    put_be32(end_key, static_cast<std::uint32_t>(customers.end));
  }
  Status s = store.scan_once(
      store::Space::kEvents, first_key, end_key, [&](std::string_view k, std::string_view v) {
        if (k.size() != 12) {
          out->problems.push_back("an event block key has the wrong length");
          return true;
        }
        const std::uint32_t cnum = read_be32(k);
        if (current.has_value() && *current != cnum && !customer_done()) {
          return false;
        }
        auto cit = customer_ids.find(cnum);
        if (cit == customer_ids.end()) {
          out->problems.push_back("events stored for customer number " + std::to_string(cnum) +
                                  ", which has no customer record");
          return true;
        }
        current = cnum;
        const std::string& customer = cit->second;
        BlockHeader h;
        const bool ok = decode_event_block(v, &h, [&](const BlockEvent& be) {
          ++out->events;
          if (const auto before = seen.exchange(be.id, h.received_at_us)) {
            // The commit accepts a copy again once the earlier one is older than the window.
            const core::TimeUs apart = h.received_at_us > *before ? h.received_at_us - *before
                                                                  : *before - h.received_at_us;
            if (dedup_window_us <= 0 || apart <= dedup_window_us) {
              out->problems.push_back("event id '" + std::string(be.id) + "' of customer '" +
                                      customer + "' is stored twice");
            }
          }
          stored_event_batch(customer, be, &scratch);
          if (on_event) {
            on_event(cnum, be, scratch);
          }
          add_event_aggregates(meters, cnum, be, scratch, &out->aggregates, &out->uniques);
        });
        if (!ok) {
          out->problems.push_back("an event block of customer '" + customer +
                                  "' cannot be decoded");
        }
        return true;
      });
  TALLY_TRY(s);
  TALLY_TRY(failed);
  customer_done();
  return failed;
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
  return d_.store->scan_once(
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
  return store.scan_once(
      store::Space::kArchive, "", "", [&](std::string_view k, std::string_view v) {
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

namespace {

using PricedEvents =
    std::map<std::pair<std::uint32_t, std::string>, std::vector<Engine::Impl::PricedEvent>>;
using Ids = std::unordered_map<std::uint32_t, std::string>;

// The minute aggregates the events of a range of customer numbers give, as series: one per
// (meter, group, customer), numbers rather than the store's key text, each a vector of its
// minutes in time order. Events come in sequence order, which is mostly time order, so a
// minute is nearly always the series' last one or a new one after it; the stored aggregates
// of a meter come in (customer, minute, group) order, so each series is compared by walking it
// once. Neither side searches a large table: verify reads every stored event and every stored
// aggregate, and a hash table's cache miss (before it, key text allocated and compared) for
// each was most of its time.
class Recount {
 public:
  struct Counted {
    core::TimeUs minute_us = 0;
    core::AggState state;
    bool stored = false;  // its stored aggregate was seen
  };

  explicit Recount(const std::set<std::string>& meter_keys)
      : meters_(meter_keys.begin(), meter_keys.end()) {
    for (std::uint32_t i = 0; i < meters_.size(); ++i) {
      meter_numbers_.emplace(meters_[i], i);
    }
  }

  // The number of meter `key`, one of the meter keys compared.
  std::uint32_t meter_number(std::string_view key) const {
    auto it = meter_numbers_.find(key);
    TALLY_ASSERT(it != meter_numbers_.end(), "a recounted meter is one of the meters compared");
    return it->second;
  }

  // The state of (meter number, customer, minute, group), made empty when new.
  core::AggState& at(std::uint32_t meter, std::uint32_t customer, core::TimeUs minute_us,
                     std::string_view group) {
    Series& series = series_of(SeriesKey{meter, group_number(group), customer});
    std::vector<Counted>& minutes = series.minutes;
    // The newest minutes first: a late event is usually only a little late.
    const std::size_t look = std::min<std::size_t>(minutes.size(), 8);
    for (std::size_t i = minutes.size(); i > minutes.size() - look; --i) {
      if (minutes[i - 1].minute_us == minute_us) {
        return minutes[i - 1].state;
      }
      if (minutes[i - 1].minute_us < minute_us) {
        break;
      }
    }
    // A new minute, or an older one found later when the series is put in order (in_order).
    series.ordered = series.ordered && (minutes.empty() || minutes.back().minute_us < minute_us);
    minutes.push_back(Counted{minute_us, {}, false});
    return minutes.back().state;
  }

  // What the events gave (meter number, customer, minute, group), or null when nothing.
  // REQUIRES: for each series, calls in increasing minute order, after its last at().
  Counted* find(std::uint32_t meter, std::uint32_t customer, core::TimeUs minute_us,
                std::string_view group) {
    auto g = group_numbers_.find(group);
    if (g == group_numbers_.end()) {
      return nullptr;
    }
    auto it = series_index_.find(SeriesKey{meter, g->second, customer});
    if (it == series_index_.end()) {
      return nullptr;
    }
    Series& series = series_[it->second];
    in_order(series);
    while (series.cursor < series.minutes.size() &&
           series.minutes[series.cursor].minute_us < minute_us) {
      ++series.cursor;
    }
    if (series.cursor < series.minutes.size() &&
        series.minutes[series.cursor].minute_us == minute_us) {
      return &series.minutes[series.cursor];
    }
    return nullptr;
  }

  // Calls fn(meter, customer, minute, group, state) for each minute whose stored aggregate was
  // not seen.
  template <typename Fn>
  void for_each_unstored(Fn&& fn) {
    for (Series& series : series_) {
      in_order(series);
      for (const Counted& c : series.minutes) {
        if (!c.stored) {
          fn(meters_[series.key.meter], series.key.customer, c.minute_us, groups_[series.key.group],
             c.state);
        }
      }
    }
  }

  // Forgets every minute.
  void clear() {
    series_.clear();
    series_index_.clear();
  }

 private:
  struct SeriesKey {
    std::uint32_t meter = 0;
    std::uint32_t group = 0;
    std::uint32_t customer = 0;
    bool operator==(const SeriesKey&) const = default;
  };

  struct SeriesHash {
    std::size_t operator()(const SeriesKey& k) const {
      const std::uint64_t h =
          (static_cast<std::uint64_t>(k.customer) << 32 | k.group) * 0xC2B2AE3D27D4EB4Full ^
          k.meter * 0x9E3779B97F4A7C15ull;
      return static_cast<std::size_t>(h ^ (h >> 29));
    }
  };

  struct Series {
    SeriesKey key;
    std::vector<Counted> minutes;  // in time order when `ordered`
    bool ordered = true;
    std::size_t cursor = 0;  // where find() goes on
  };

  Series& series_of(const SeriesKey& key) {
    if (last_ < series_.size() && series_[last_].key == key) {
      return series_[last_];
    }
    auto [it, added] = series_index_.try_emplace(key, static_cast<std::uint32_t>(series_.size()));
    if (added) {
      series_.push_back(Series{key, {}, true, 0});
    }
    last_ = it->second;
    return series_[last_];
  }

  // Puts the series' minutes in time order, a minute counted in two places made one.
  static void in_order(Series& series) {
    if (series.ordered) {
      return;
    }
    std::vector<Counted>& m = series.minutes;
    std::stable_sort(m.begin(), m.end(),
                     [](const Counted& a, const Counted& b) { return a.minute_us < b.minute_us; });
    std::size_t out = 0;
    for (std::size_t i = 1; i < m.size(); ++i) {
      if (m[i].minute_us == m[out].minute_us) {
        m[out].state.merge(m[i].state);
      } else {
        m[++out] = std::move(m[i]);
      }
    }
    m.resize(m.empty() ? 0 : out + 1);
    series.ordered = true;
  }

  std::uint32_t group_number(std::string_view group) {
    auto it = group_numbers_.find(group);
    if (it != group_numbers_.end()) {
      return it->second;
    }
    const auto n = static_cast<std::uint32_t>(groups_.size());
    groups_.emplace_back(group);
    group_numbers_.emplace(groups_.back(), n);
    return n;
  }

  std::vector<std::string> meters_;
  StringMap meter_numbers_;
  std::vector<std::string> groups_;
  StringMap group_numbers_;
  std::vector<Series> series_;
  std::unordered_map<SeriesKey, std::uint32_t, SeriesHash> series_index_;
  std::size_t last_ = 0;  // the series at() found last
};

// Holds the stored aggregates and distinct values against a recomputation one range of
// customer numbers at a time, so that only one customer's recomputed records are in memory.
// The ranges come in customer number order and together cover every number: a stored record of
// a customer with no events falls in the range that ends at the next customer with events (or
// in the last range) and is named as having none.
class StoredComparison {
 public:
  // Compares the customer numbers of `customers`.
  StoredComparison(const store::Store& store, const std::set<std::string>& meter_keys,
                   const Recomputed& baselines, const Ids& ids, CustomerRange customers,
                   VerifyReport* report)
      : store_(store),
        meter_keys_(meter_keys),
        baselines_(baselines),
        ids_(ids),
        report_(report),
        recount_(meter_keys),
        next_(customers.first),
        end_(customers.end) {}

  // Where the events of the customer being read add their minute aggregates.
  Recount& recount() { return recount_; }

  // The numbers up to `cnum` not compared yet, with recount() and r->uniques holding what
  // their events give; empties both.
  Status through(std::uint32_t cnum, Recomputed* r) {
    TALLY_TRY(compare(next_, std::uint64_t{cnum} + 1, r));
    next_ = std::uint64_t{cnum} + 1;
    return Status();
  }

  // The numbers after the last customer with events.
  Status rest() {
    Recomputed none;
    return compare(next_, end_, &none);
  }

 private:
  static constexpr std::uint64_t kEnd = CustomerRange::kEnd;

  Status compare(std::uint64_t lo, std::uint64_t hi, Recomputed* r) {
    std::uint32_t meter_number = 0;
    for (const auto& meter : meter_keys_) {
      if (lo >= hi) {
        break;  // nothing after the last customer number
      }
      const auto [begin, end] = range(meter, lo, hi);
      add_baselines(begin, end, r);
      TALLY_TRY(compare_aggregates(meter_number++, begin, end));
      TALLY_TRY(compare_uniques(begin, end, r));
    }
    recount_.for_each_unstored([&](const std::string& meter, std::uint32_t customer,
                                   core::TimeUs minute_us, const std::string&,
                                   const core::AggState& st) {
      report_->differences.push_back(describe(meter, customer, minute_us) +
                                     ": events with no stored aggregate (count " +
                                     std::to_string(st.count) + ")");
    });
    recount_.clear();
    r->uniques.clear();
    return Status();
  }

  // The keys of meter `meter`'s records (aggregates and distinct values alike) of customer
  // numbers [lo, hi).
  static std::pair<std::string, std::string> range(const std::string& meter, std::uint64_t lo,
                                                   std::uint64_t hi) {
    std::string begin = meter + '\0';
    put_be32(begin, static_cast<std::uint32_t>(lo));
    std::string end = meter;
    if (hi == kEnd) {
      end += '\x01';
    } else {
      end += '\0';
      put_be32(end, static_cast<std::uint32_t>(hi));
    }
    return {std::move(begin), std::move(end)};
  }

  // Archived events' part of the records in [begin, end).
  void add_baselines(const std::string& begin, const std::string& end, Recomputed* r) {
    for (auto it = baselines_.aggregates.lower_bound(begin);
         it != baselines_.aggregates.end() && it->first < end; ++it) {
      AggregateKey ak;
      if (decode_aggregate_key(it->first, &ak)) {
        recount_.at(recount_.meter_number(ak.meter), ak.customer_num, ak.minute_us, ak.group)
            .merge(it->second);
      }
    }
    for (auto it = baselines_.uniques.lower_bound(begin);
         it != baselines_.uniques.end() && it->first < end; ++it) {
      r->uniques[it->first] = true;
    }
  }

  // The stored aggregates of meter number `meter` in [begin, end) against the recount.
  Status compare_aggregates(std::uint32_t meter, const std::string& begin, const std::string& end) {
    return store_.scan_once(
        store::Space::kAggregates, begin, end, [&](std::string_view k, std::string_view v) {
          AggregateKey ak;
          if (!decode_aggregate_key(k, &ak)) {
            return true;
          }
          ++report_->aggregates;
          Recount::Counted* counted = recount_.find(meter, ak.customer_num, ak.minute_us, ak.group);
          core::AggState stored;
          if (!decode_agg_state(v, &stored)) {
            report_->differences.push_back(describe(k) +
                                           ": the stored aggregate cannot be decoded");
          } else if (counted == nullptr) {
            report_->differences.push_back(describe(k) + ": stored aggregate has no events");
          } else if (!(counted->state == stored)) {
            report_->differences.push_back(
                describe(k) + ": stored count " + std::to_string(stored.count) + " sum " +
                core::format_decimal(stored.sum) + ", recomputed count " +
                std::to_string(counted->state.count) + " sum " +
                core::format_decimal(counted->state.sum));
          }
          if (counted != nullptr) {
            counted->stored = true;
          }
          return true;
        });
  }

  // The stored distinct values of [begin, end) against the recomputed ones, walked together:
  // both are in key order (the store's bytewise order is std::string's).
  Status compare_uniques(const std::string& begin, const std::string& end, Recomputed* r) {
    auto want = r->uniques.lower_bound(begin);
    const auto want_end = r->uniques.lower_bound(end);
    // Reports the recomputed keys below `below` (all that are left when it is empty) unstored.
    auto unstored = [&](std::string_view below) {
      for (; want != want_end && (below.empty() || std::string_view(want->first) < below); ++want) {
        report_->differences.push_back("a distinct value of the events is not stored");
      }
    };
    TALLY_TRY(store_.scan_once(
        store::Space::kUniques, begin, end, [&](std::string_view k, std::string_view) {
          UniqueKey uk;
          if (!decode_unique_key(k, &uk)) {
            return true;
          }
          unstored(k);
          if (want != want_end && std::string_view(want->first) == k) {
            ++want;
          } else {
            report_->differences.push_back("meter '" + std::string(uk.meter) +
                                           "': a stored distinct value has no event");
          }
          return true;
        }));
    unstored({});
    return Status();
  }

  std::string describe(std::string_view key) const {
    AggregateKey ak;
    if (!decode_aggregate_key(key, &ak)) {
      return "an undecodable key";
    }
    return describe(ak.meter, ak.customer_num, ak.minute_us);
  }

  std::string describe(std::string_view meter, std::uint32_t customer,
                       core::TimeUs minute_us) const {
    auto it = ids_.find(customer);
    return "meter '" + std::string(meter) + "', customer '" +
           (it != ids_.end() ? it->second : std::to_string(customer)) + "', minute " +
           core::format_rfc3339(minute_us);
  }

  const store::Store& store_;
  const std::set<std::string>& meter_keys_;
  const Recomputed& baselines_;
  const Ids& ids_;
  VerifyReport* report_;
  Recount recount_;
  std::uint64_t next_;  // the first customer number not compared yet
  std::uint64_t end_;
};

// Re-rated events: (customer, seq) -> what their last re-rating charges.
Status read_rerates(const store::Store& store,
                    std::map<std::pair<std::uint32_t, std::uint64_t>, core::Decimal>* rerates,
                    VerifyReport* report) {
  const std::string begin(kRerateKeyPrefix);
  return store.scan_once(
      store::Space::kMeta, begin, prefix_end(begin),
      [&](std::string_view key, std::string_view value) {
        core::Decimal credits;
        core::TimeUs at = 0;
        if (key.size() != begin.size() + 12 || !decode_rerate(value, &credits, &at)) {
          report->differences.push_back("a re-rating record cannot be decoded");
          return true;
        }
        const std::string_view k = key.substr(begin.size());
        (*rerates)[{read_be32(k), read_be64(k.substr(4))}] = credits;
        return true;
      });
}

// Re-rated events archived since their re-rating: their stored credits are in their archived
// records. Adds each one's charge beyond them to `differences` per customer.
void add_archived_rerates(
    const store::Store& store,
    const std::map<std::pair<std::uint32_t, std::uint64_t>, core::Decimal>& rerates,
    std::map<std::uint32_t, core::Decimal>* differences, VerifyReport* report) {
  for (const auto& [k, credits] : rerates) {
    auto rec = store.get(store::Space::kArchive, archived_event_key(k.first, k.second));
    ArchivedEventRecord a;
    if (!rec || !rec->has_value() || !decode_archived_event(**rec, &a)) {
      report->differences.push_back("a re-rating names event " + std::to_string(k.second) +
                                    " of customer number " + std::to_string(k.first) +
                                    ", which is not stored");
      continue;
    }
    (*differences)[k.first] += credits - (a.priced ? a.credits : core::Decimal{});
  }
}

using Rerates = std::map<std::pair<std::uint32_t, std::uint64_t>, core::Decimal>;

// What every part of a verification reads.
struct VerifyInputs {
  Ids ids;
  std::vector<core::MeterSpec> specs;  // the meters the events feed (not the hidden ones)
  std::set<std::string> meter_keys;    // every configured meter
  Recomputed baselines;                // archived events' part
  Rerates rerates;                     // re-rated events: what their last re-rating charges
  std::int64_t dedup_window_us = 0;
};

// Verifies the events, aggregates and distinct values of one range of customer numbers, and
// gathers what the ledger check needs of them. Parts share nothing they change, so two run on
// two threads.
class VerifyPart {
 public:
  VerifyPart(const Engine::Impl& d, const VerifyInputs& in, CustomerRange customers)
      : d_(d),
        in_(in),
        customers_(customers),
        repricer_(d),
        stored_(*d.store, in.meter_keys, in.baselines, in.ids, customers, &report) {
    for (const auto& spec : in.specs) {
      spec_meters_.push_back(stored_.recount().meter_number(spec.key));
    }
  }

  Status run() {
    // Every event priced again from scratch, in order, as its commit priced it (tiered prices
    // start from the units archived events counted).
    TALLY_TRY(repricer_.seed_from_archives());
    // The meters are fed in event(), after pricing, so recompute itself feeds none.
    TALLY_TRY(recompute(
        *d_.store, {}, in_.ids, &r_, in_.dedup_window_us,
        [&](std::uint32_t cnum, const BlockEvent& be, const core::EventBatch& b) {
          event(cnum, be, b);
        },
        [&](std::uint32_t cnum, Recomputed* r) { return customer_done(cnum, r); }, customers_));
    TALLY_TRY(stored_.rest());
    report.events = r_.events;
    report.differences.insert(report.differences.end(), r_.problems.begin(), r_.problems.end());
    return Status();
  }

  VerifyReport report;  // its events, aggregates and differences
  PricedEvents priced;  // (customer, id) -> each stored copy's credits and its prices'
  // Per customer, what its re-rated events are charged beyond their stored credits.
  std::map<std::uint32_t, core::Decimal> rerate_differences;
  std::set<Rerates::key_type> rerates_found;  // the re-rated events found in this part

 private:
  void event(std::uint32_t cnum, const BlockEvent& be, const core::EventBatch& b) {
    reprice(cnum, be, b);
    for_each_meter_fed(
        in_.specs, be, b,
        [&](const core::MeterSpec& m, core::TimeUs minute, const std::string& group,
            const core::MeterInput& input) {
          const std::uint32_t meter = spec_meters_[static_cast<std::size_t>(&m - in_.specs.data())];
          stored_.recount().at(meter, cnum, minute, group).add(input.value, be.time_us, be.seq);
          if (m.aggregation == core::Aggregation::kUniqueCount) {
            r_.uniques[unique_key(m.key, cnum, minute, group, input.unique)] = true;
          }
        });
  }

  void reprice(std::uint32_t cnum, const BlockEvent& be, const core::EventBatch& b) {
    core::Decimal credits;
    bool any = repricer_.price(cnum, be, b, &hidden_, &credits, nullptr);
    if (!any && be.priced && repricer_.priced_by_removed_meter(be.type)) {
      credits = be.credits;  // its meter is gone: what it was charged cannot be priced again
      any = true;
    }
    if (any || be.priced) {
      priced[{cnum, std::string(be.id)}].push_back(Engine::Impl::PricedEvent{be.credits, credits});
    }
    if (auto it = in_.rerates.find({cnum, be.seq}); it != in_.rerates.end()) {
      rerate_differences[cnum] += it->second - (be.priced ? be.credits : core::Decimal{});
      rerates_found.insert(it->first);
    }
  }

  // The customer's hidden cost meters join its recount, and its stored records are compared.
  Status customer_done(std::uint32_t cnum, Recomputed* r) {
    for (const auto& [k, st] : hidden_) {
      AggregateKey ak;
      if (decode_aggregate_key(k, &ak)) {
        Recount& recount = stored_.recount();
        recount.at(recount.meter_number(ak.meter), ak.customer_num, ak.minute_us, ak.group)
            .merge(st);
      }
    }
    hidden_.clear();
    return stored_.through(cnum, r);
  }

  const Engine::Impl& d_;
  const VerifyInputs& in_;
  CustomerRange customers_;
  Repricer repricer_;
  std::map<std::string, core::AggState> hidden_;  // the customer's cost meters, by store key
  Recomputed r_;
  StoredComparison stored_;
  std::vector<std::uint32_t> spec_meters_;  // in_.specs[i]'s number in the recount
};

// The customer numbers split in two ranges of about as many customers each (one range when
// there are fewer than two).
std::vector<CustomerRange> split_customers(const Ids& ids) {
  std::vector<std::uint32_t> nums;
  nums.reserve(ids.size());
  for (const auto& entry : ids) {
    nums.push_back(entry.first);
  }
  if (nums.size() < 2) {
    return {CustomerRange{}};
  }
  auto middle = nums.begin() + static_cast<std::ptrdiff_t>(nums.size() / 2);
  std::nth_element(nums.begin(), middle, nums.end());
  return {CustomerRange{0, *middle}, CustomerRange{*middle, CustomerRange::kEnd}};
}

// Verifies the ranges of split_customers(in.ids), the first on this thread, the other beside;
// *parts holds them, run.
Status run_parts(const Engine::Impl& d, const VerifyInputs& in,
                 std::vector<std::unique_ptr<VerifyPart>>* parts) {
  for (const auto& range : split_customers(in.ids)) {
    parts->push_back(std::make_unique<VerifyPart>(d, in, range));
  }
  std::vector<Status> ran(parts->size());
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < parts->size(); ++i) {
    threads.emplace_back([&, i] { ran[i] = (*parts)[i]->run(); });
  }
  ran[0] = (*parts)[0]->run();
  for (auto& t : threads) {
    t.join();
  }
  for (const Status& s : ran) {
    TALLY_TRY(s);
  }
  return Status();
}

// Adds what a part found to the whole: its counts and differences, its priced events, its
// re-rating sums; the re-rated events it found leave `rerates`.
void merge_part(const VerifyPart& part, VerifyReport* report, PricedEvents* priced,
                std::map<std::uint32_t, core::Decimal>* rerate_differences, Rerates* rerates) {
  report->events += part.report.events;
  report->aggregates += part.report.aggregates;
  report->differences.insert(report->differences.end(), part.report.differences.begin(),
                             part.report.differences.end());
  for (const auto& [k, copies] : part.priced) {
    auto& all = (*priced)[k];
    all.insert(all.end(), copies.begin(), copies.end());
  }
  for (const auto& [cnum, amount] : part.rerate_differences) {
    (*rerate_differences)[cnum] += amount;
  }
  for (const auto& k : part.rerates_found) {
    rerates->erase(k);
  }
}

}  // namespace
}  // namespace engine

Result<VerifyReport> Engine::verify() const {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->verify();
  }
  const Impl& d = *impl_;
  std::lock_guard no_archive(d.archive_mutex);
  engine::VerifyInputs in;
  {
    std::shared_lock lock(d.state_mutex);
    for (const auto& [num, cs] : d.customers) {
      in.ids[num] = cs.record.id;
    }
  }
  for (const auto& m : d.catalog->meters) {
    if (!m.hidden) {
      in.specs.push_back(m.spec);  // hidden cost meters are recomputed by repricing
    }
    in.meter_keys.insert(m.spec.key);
  }
  in.dedup_window_us = d.config.storage.dedup_window_seconds * core::kUsPerSecond;
  VerifyReport report;
  // Archived events are gone from the hot store; what they added stays in the aggregates and
  // the ledger, and was recorded when they left.
  engine::PricedEvents priced;
  TALLY_TRY(engine::add_archive_baselines(*d.store, in.meter_keys, &in.baselines, &priced,
                                          &report.archived_events));
  TALLY_TRY(engine::read_rerates(*d.store, &in.rerates, &report));

  // The customers in two ranges, verified side by side.
  std::vector<std::unique_ptr<engine::VerifyPart>> parts;
  TALLY_TRY(engine::run_parts(d, in, &parts));
  std::map<std::uint32_t, core::Decimal> rerate_differences;
  for (const auto& part : parts) {
    engine::merge_part(*part, &report, &priced, &rerate_differences, &in.rerates);
  }
  // Re-rated events no part found were archived since.
  engine::add_archived_rerates(*d.store, in.rerates, &rerate_differences, &report);
  report.differences.insert(report.differences.end(), in.baselines.problems.begin(),
                            in.baselines.problems.end());
  d.verify_ledger(priced, in.ids, rerate_differences, &report);
  return report;
}

}  // namespace tally
