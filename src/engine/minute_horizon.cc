// The bound on the minute aggregates held in memory (docs/storage.md, "Memory").
//
// Each series holds its minutes from a horizon on: the start of the hour
// storage.memory_minutes_hours before the engine's clock (a whole hour, so every old range a
// read needs is a ragged edge of at most an hour at each end of a window). Older minutes stay
// in the store's `aggregates` and `uniques` records, which every commit writes whole; their
// hours and UTC days stay in memory. StoreMinutes reads them back for a series (one range scan
// of the customer's records of the meter, keeping the series' group; a point read for one
// minute). The horizon moves on here, on the checkpointer thread: the drops themselves run on
// the commit thread, the only mutator of the aggregates, as admin jobs of a few customers each.
#include <algorithm>
#include <memory>
#include <mutex>
#include <shared_mutex>
#include <utility>
#include <vector>

#include "engine/engine_impl.h"

namespace tally {

namespace engine {

namespace {

class StoreMinutes final : public OldMinutes {
 public:
  explicit StoreMinutes(const Engine::Impl& d) : d_(d) {}

  Result<bool> get(const SeriesKey& key, core::TimeUs minute_us,
                   core::AggState* out) const override {
    auto v = d_.store->get(store::Space::kAggregates,
                           aggregate_key(meter_key(key), key.customer, minute_us, group(key)));
    if (!v) {
      return v.error();
    }
    if (!v->has_value()) {
      return false;
    }
    core::AggState s;
    if (!decode_agg_state(**v, &s)) {
      return Status::corruption("an aggregate record cannot be decoded");
    }
    *out = s;
    return true;
  }

  Status for_each(
      const SeriesKey& key, core::TimeUs from, core::TimeUs to,
      const std::function<bool(core::TimeUs, const core::AggState&)>& f) const override {
    if (from >= to) {
      return Status();
    }
    const std::string_view meter = meter_key(key);
    const std::string_view g = group(key);
    Status bad;
    TALLY_TRY(d_.store->scan(
        store::Space::kAggregates, aggregate_key(meter, key.customer, from, ""),
        aggregate_key(meter, key.customer, to, ""), [&](std::string_view k, std::string_view v) {
          AggregateKey ak;
          if (!decode_aggregate_key(k, &ak)) {
            bad = Status::corruption("an aggregate record cannot be decoded");
            return false;
          }
          if (ak.group != g) {
            return true;
          }
          core::AggState s;
          if (!decode_agg_state(v, &s)) {
            bad = Status::corruption("an aggregate record cannot be decoded");
            return false;
          }
          return f(ak.minute_us, s);
        }));
    return bad;
  }

  Status uniques(const SeriesKey& key, core::TimeUs from, core::TimeUs to,
                 core::UniqueSet* out) const override {
    if (from >= to) {
      return Status();
    }
    const std::string_view meter = meter_key(key);
    const std::string_view g = group(key);
    Status bad;
    TALLY_TRY(d_.store->scan(
        store::Space::kUniques, unique_key(meter, key.customer, from, "", ""),
        unique_key(meter, key.customer, to, "", ""), [&](std::string_view k, std::string_view) {
          UniqueKey uk;
          if (!decode_unique_key(k, &uk)) {
            bad = Status::corruption("a distinct-value record cannot be decoded");
            return false;
          }
          if (uk.group == g) {
            out->emplace(uk.value);
          }
          return true;
        }));
    return bad;
  }

 private:
  std::string_view meter_key(const SeriesKey& key) const {
    return d_.catalog->meters[key.meter].spec.key;
  }

  // The group ids of a series were interned before it was made; callers hold state_mutex or are
  // the commit thread, so the table does not grow meanwhile.
  std::string_view group(const SeriesKey& key) const { return d_.group_texts[key.group]; }

  const Engine::Impl& d_;
};

// Customers whose series one admin job trims: small enough that a commit waits little.
constexpr std::size_t kForgetCustomersPerHold = 64;

}  // namespace

std::unique_ptr<OldMinutes> make_store_minutes(const Engine::Impl& d) {
  return std::make_unique<StoreMinutes>(d);
}

}  // namespace engine

core::TimeUs Engine::Impl::minute_horizon(core::TimeUs now) const {
  const std::uint32_t hours = config.storage.memory_minutes_hours;
  if (hours == 0) {
    return engine::Series::kHoldsAll;
  }
  return core::floor_to(now - static_cast<core::TimeUs>(hours) * core::kUsPerHour,
                        core::kUsPerHour);
}

Status Engine::Impl::forget_old_minutes() {
  const core::TimeUs horizon = minute_horizon(clock->now_us());
  std::vector<std::pair<std::uint32_t, std::uint32_t>> todo;  // (meter, customer number)
  {
    std::shared_lock lock(state_mutex);
    if (horizon <= minutes_from) {
      return Status();
    }
    for (std::uint32_t m = 0; m < meter_aggregates.size(); ++m) {
      for (const auto& [cnum, by_group] : meter_aggregates[m].series) {
        todo.emplace_back(m, cnum);
      }
    }
  }
  // The horizon first, so that series made from now on hold nothing older.
  TALLY_TRY(engine::run_admin(
      *this, [](store::WriteBatch&) { return Status(); },
      [this, horizon] { minutes_from = std::max(minutes_from, horizon); }));
  for (std::size_t i = 0; i < todo.size(); i += engine::kForgetCustomersPerHold) {
    if (checkpoint_abandon.load(std::memory_order_relaxed)) {
      return Status();  // stopping: the rest waits for the next open, which never holds them
    }
    const std::size_t end = std::min(todo.size(), i + engine::kForgetCustomersPerHold);
    TALLY_TRY(engine::run_admin(
        *this, [](store::WriteBatch&) { return Status(); },
        [this, &todo, i, end, horizon] {
          for (std::size_t j = i; j < end; ++j) {
            auto& series = meter_aggregates[todo[j].first].series;
            auto it = series.find(todo[j].second);
            if (it == series.end()) {
              continue;
            }
            for (auto& [gid, s] : it->second) {
              if (!s.bound()) {
                s.bind(old_minutes.get(), engine::SeriesKey{todo[j].first, todo[j].second, gid});
              }
              aggregates_live -= s.forget_minutes_before(horizon);
            }
          }
        }));
  }
  return Status();
}

}  // namespace tally
