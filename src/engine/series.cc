#include "engine/series.h"

#include <algorithm>
#include <limits>
#include <string>

#include "common/assert.h"
#include "engine/codec.h"

namespace tally::engine {

bool Series::add(core::TimeUs minute_us, const core::AggState& delta) {
  TALLY_DASSERT(core::floor_to(minute_us, core::kUsPerMinute) == minute_us,
                "a series is added to by whole minutes");
  const bool made = minute_us >= held_from_ && minutes_.merge(minute_us, delta);
  hours_.merge(core::floor_to(minute_us, core::kUsPerHour), delta);
  days_.merge(core::floor_to(minute_us, core::kUsPerDay), delta);
  return made;
}

void Series::add_unique(core::TimeUs minute_us, const std::string& value) {
  if (minute_us >= held_from_) {
    minute_uniques_[minute_us].insert(value);
  }
  hour_uniques_[core::floor_to(minute_us, core::kUsPerHour)].insert(value);
}

bool Series::has_unique(core::TimeUs minute_us, std::string_view value) const {
  auto it = minute_uniques_.find(minute_us);
  return it != minute_uniques_.end() && it->second.count(std::string(value)) != 0;
}

std::size_t Series::forget_minutes_before(core::TimeUs t) {
  TALLY_ASSERT(bound(), "a series forgets minutes only when it can read them again");
  if (t <= held_from_) {
    return 0;
  }
  held_from_ = t;
  minute_uniques_.erase(minute_uniques_.begin(), minute_uniques_.lower_bound(t));
  return minutes_.drop_before(t);
}

Result<bool> Series::minute(core::TimeUs minute_us, core::AggState* out) const {
  if (minute_us < held_from_) {
    return old_->get(key_, minute_us, out);
  }
  return minutes_.get(minute_us, out);
}

Result<std::optional<core::TimeUs>> Series::next_minute(core::TimeUs from, core::TimeUs to) const {
  if (from < held_from_) {
    // Only hours with data can hold one: one read of the store per such hour, from the first.
    const core::TimeUs old_end = std::min(to, held_from_);
    std::optional<core::TimeUs> found;
    Status read;
    hours_.for_each(core::floor_to(from, core::kUsPerHour), old_end,
                    [&](core::TimeUs hour, const core::AggState&) {
                      if (found || !read.ok()) {
                        return;
                      }
                      read = old_->for_each(key_, std::max(from, hour),
                                            std::min(old_end, hour + core::kUsPerHour),
                                            [&](core::TimeUs start, const core::AggState&) {
                                              found = start;
                                              return false;
                                            });
                    });
    TALLY_TRY(read);
    if (found || to <= held_from_) {
      return found;
    }
    from = held_from_;
  }
  return minutes_.first_in(from, to);
}

Status Series::combine_minutes(core::TimeUs x, core::TimeUs y, bool want_uniques,
                               core::AggState* state, core::UniqueSet* uniques) const {
  if (x >= y) {
    return Status();
  }
  const core::TimeUs split = std::clamp(held_from_, x, y);
  if (x < split) {
    TALLY_TRY(old_->for_each(key_, x, split, [state](core::TimeUs, const core::AggState& s) {
      state->merge(s);
      return true;
    }));
    if (want_uniques) {
      TALLY_TRY(old_->uniques(key_, x, split, uniques));
    }
  }
  if (split >= y) {
    return Status();
  }
  minutes_.for_each(split, y, [state](core::TimeUs, const core::AggState& s) { state->merge(s); });
  if (want_uniques) {
    for (auto it = minute_uniques_.lower_bound(split); it != minute_uniques_.end() && it->first < y;
         ++it) {
      uniques->insert(it->second.begin(), it->second.end());
    }
  }
  return Status();
}

Status Series::combine(core::TimeUs a, core::TimeUs b, bool want_uniques, core::AggState* state,
                       core::UniqueSet* uniques) const {
  if (a >= b) {
    return Status();
  }
  // Ranges at aligned edges are empty: they cost no search of the tree.
  auto merge = [&](const PackedSums& sums, const std::map<core::TimeUs, core::UniqueSet>* sets,
                   core::TimeUs x, core::TimeUs y) {
    if (x >= y) {
      return;
    }
    sums.for_each(x, y, [state](core::TimeUs, const core::AggState& s) { state->merge(s); });
    if (want_uniques && sets != nullptr) {
      for (auto it = sets->lower_bound(x); it != sets->end() && it->first < y; ++it) {
        uniques->insert(it->second.begin(), it->second.end());
      }
    }
  };
  auto hours = [&](core::TimeUs x, core::TimeUs y) -> Status {
    const core::TimeUs ha = core::ceil_to(x, core::kUsPerHour);
    const core::TimeUs hb = core::floor_to(y, core::kUsPerHour);
    if (ha >= hb) {
      return combine_minutes(x, y, want_uniques, state, uniques);
    }
    TALLY_TRY(combine_minutes(x, ha, want_uniques, state, uniques));
    merge(hours_, &hour_uniques_, ha, hb);
    return combine_minutes(hb, y, want_uniques, state, uniques);
  };
  // Distinct values are kept per hour at most: a day's set would repeat them all again.
  const core::TimeUs da = core::ceil_to(a, core::kUsPerDay);
  const core::TimeUs db = core::floor_to(b, core::kUsPerDay);
  if (want_uniques || da >= db) {
    return hours(a, b);
  }
  TALLY_TRY(hours(a, da));
  merge(days_, nullptr, da, db);
  return hours(db, b);
}

core::AggState& GroupTotals::entry(Sums& sums, Sums::iterator* near, core::TimeUs key) {
  auto it = *near;
  if (it != sums.end() && it->first < key) {
    ++it;
  }
  if (it == sums.end() || it->first != key) {
    // `it` is the right hint when the key falls between its predecessor and it.
    const bool after_prev = it == sums.begin() || std::prev(it)->first < key;
    const bool before_it = it == sums.end() || key < it->first;
    it = after_prev && before_it ? sums.emplace_hint(it, key, core::AggState{})
                                 : sums.try_emplace(key).first;
  }
  *near = it;
  return it->second;
}

namespace {

using UniqueSets = std::map<core::TimeUs, core::UniqueSet>;
using StateMap = std::map<core::TimeUs, core::AggState>;

void save_uniques(std::string& out, const UniqueSets& sets) {
  common::put_varint(out, sets.size());
  for (const auto& [start, set] : sets) {
    common::put_zigzag(out, start);
    common::put_varint(out, set.size());
    for (const auto& v : set) {
      common::put_bytes(out, v);
    }
  }
}

bool restore_uniques(common::Reader& in, UniqueSets* sets) {
  std::uint64_t n = 0;
  if (!in.get_varint(&n) || n > in.remaining()) {
    return false;
  }
  for (std::uint64_t i = 0; i < n; ++i) {
    core::TimeUs start = 0;
    std::uint64_t values = 0;
    if (!in.get_zigzag(&start) || !in.get_varint(&values) || values > in.remaining()) {
      return false;
    }
    core::UniqueSet& set = (*sets)[start];
    for (std::uint64_t j = 0; j < values; ++j) {
      std::string_view v;
      if (!in.get_bytes(&v)) {
        return false;
      }
      set.emplace(v);
    }
  }
  return true;
}

void save_states(std::string& out, const StateMap& states) {
  common::put_varint(out, states.size());
  for (const auto& [start, state] : states) {
    common::put_zigzag(out, start);
    common::put_bytes(out, encode_agg_state(state));
  }
}

bool restore_states(common::Reader& in, StateMap* states) {
  std::uint64_t n = 0;
  if (!in.get_varint(&n) || n > in.remaining()) {
    return false;
  }
  for (std::uint64_t i = 0; i < n; ++i) {
    core::TimeUs start = 0;
    std::string_view bytes;
    if (!in.get_zigzag(&start) || !in.get_bytes(&bytes) ||
        !decode_agg_state(bytes, &(*states)[start])) {
      return false;
    }
  }
  return true;
}

}  // namespace

void Series::save(std::string& out) const {
  common::put_zigzag(out, held_from_);
  minutes_.save(out);
  hours_.save(out);
  days_.save(out);
  save_uniques(out, minute_uniques_);
  save_uniques(out, hour_uniques_);
}

bool Series::restore(common::Reader& in) {
  return in.get_zigzag(&held_from_) && minutes_.restore(in) && hours_.restore(in) &&
         days_.restore(in) && restore_uniques(in, &minute_uniques_) &&
         restore_uniques(in, &hour_uniques_);
}

void GroupTotals::save(std::string& out) const {
  save_states(out, hours_);
  save_states(out, days_);
}

bool GroupTotals::restore(common::Reader& in) {
  return hours_.empty() && days_.empty() && restore_states(in, &hours_) &&
         restore_states(in, &days_);
}

void GroupTotals::add(core::TimeUs minute_us, const core::AggState& delta) {
  entry(hours_, &near_hour_, core::floor_to(minute_us, core::kUsPerHour)).merge(delta);
  entry(days_, &near_day_, core::floor_to(minute_us, core::kUsPerDay)).merge(delta);
}

void GroupTotals::add_series(const Series& series) {
  constexpr core::TimeUs kFirst = std::numeric_limits<core::TimeUs>::min();
  constexpr core::TimeUs kLast = std::numeric_limits<core::TimeUs>::max();
  series.for_each(core::kUsPerHour, kFirst, kLast, [this](core::TimeUs hour, const auto& state) {
    entry(hours_, &near_hour_, hour).merge(state);
  });
  series.for_each(core::kUsPerDay, kFirst, kLast, [this](core::TimeUs day, const auto& state) {
    entry(days_, &near_day_, day).merge(state);
  });
}

Result<std::vector<Span>> windows_of(core::TimeUs from, core::TimeUs to, core::Window w,
                                     const core::TimeZone& tz) {
  std::vector<Span> out;
  for (core::TimeUs ws = core::window_start(from, w, tz); ws < to;) {
    if (out.size() == kWindowsMax) {
      return Status::invalid_argument("the range has more than " + std::to_string(kWindowsMax) +
                                      " " + std::string(core::window_name(w)) +
                                      " windows; narrow it or use a larger window");
    }
    const core::TimeUs we = core::window_next(ws, w, tz);
    out.push_back(Span{ws, we});
    ws = we;
  }
  return out;
}

core::TimeUs common_unit(const std::vector<Span>& windows, core::TimeUs from, core::TimeUs to) {
  for (core::TimeUs unit : {core::kUsPerDay, core::kUsPerHour}) {
    bool aligned = from % unit == 0 && to % unit == 0;
    for (std::size_t i = 1; aligned && i < windows.size(); ++i) {
      aligned = windows[i].start % unit == 0;
    }
    if (aligned) {
      return unit;
    }
  }
  return 0;
}

}  // namespace tally::engine
