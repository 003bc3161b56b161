// The aggregates of one meter for one customer and group (Series), and of one group over every
// customer (GroupTotals): the in-memory roll-up behind every query, report and limit counter.
//
// Minutes are what the store holds; hours and UTC days are sums of them kept here, so a range
// is combined from a few days, hours at its edges and minutes at theirs. The invariant, kept by
// add() alone: every hour and day entry is the merge of the minute entries inside it. Each
// resolution is a PackedSums (packed_sums.h): the newest entries plain, older ones encoded.
// Distinct values (unique_count meters) are kept per minute and per hour, never per day.
//
// Minutes before a series' horizon (minutes_held_from(), moved on by forget_minutes_before) are
// not held: their hours and days still are, and reads of those minutes (a range's ragged edges,
// a minute's state, the next minute with data) go to the OldMinutes the series was bound to, the
// store's records (engine/old_minutes.cc). So the methods that may read them return a Status.
#pragma once

#include <functional>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tally/status.h>

#include "core/aggregate.h"
#include "core/time.h"
#include "engine/packed_sums.h"

namespace tally::engine {

// Which series: the meter (as indexed in the catalog), the customer number and the group id.
struct SeriesKey {
  std::uint32_t meter = 0;
  std::uint32_t customer = 0;
  std::uint32_t group = 0;
};

// The minutes a series no longer holds, from where they are kept (the engine supplies it: the
// store's aggregate and distinct-value records). Safe to call from several threads at once.
class OldMinutes {
 public:
  virtual ~OldMinutes() = default;
  // The state of the minute starting at `minute_us` into *out; false, leaving *out as it was,
  // when it has none. Errors: the store's read error (kIOError), kCorruption.
  virtual Result<bool> get(const SeriesKey& key, core::TimeUs minute_us,
                           core::AggState* out) const = 0;
  // Calls f(start, state) for each minute with data starting in [from, to), in time order,
  // until f returns false. Errors: as get.
  virtual Status for_each(
      const SeriesKey& key, core::TimeUs from, core::TimeUs to,
      const std::function<bool(core::TimeUs, const core::AggState&)>& f) const = 0;
  // Adds the distinct values of the minutes in [from, to) to *out. Errors: as get.
  virtual Status uniques(const SeriesKey& key, core::TimeUs from, core::TimeUs to,
                         core::UniqueSet* out) const = 0;
};

class Series {
 public:
  static constexpr core::TimeUs kHoldsAll = std::numeric_limits<core::TimeUs>::min();

  // Where this series reads the minutes it does not hold, and which series it is there. Set
  // once, before any minute is forgotten; `old` outlives the series.
  void bind(const OldMinutes* old, SeriesKey key) {
    old_ = old;
    key_ = key;
  }

  bool bound() const { return old_ != nullptr; }

  // Drops from memory the minutes (and their distinct values) starting before t, and holds no
  // minute before t from now on: add() then updates only the hours and days of such a minute.
  // Returns how many minute entries were dropped. A t at or before the current horizon does
  // nothing. REQUIRES: bound().
  std::size_t forget_minutes_before(core::TimeUs t);

  // The start of the first minute held: kHoldsAll when nothing was ever forgotten.
  core::TimeUs minutes_held_from() const { return held_from_; }

  // Adds `delta` to the minute starting at `minute_us` (a minute boundary) and to its hour and
  // day (only to those before the horizon). Returns whether a minute held in memory was made.
  bool add(core::TimeUs minute_us, const core::AggState& delta);
  // Records a distinct value seen in the minute starting at `minute_us` (and its hour; only the
  // hour before the horizon).
  void add_unique(core::TimeUs minute_us, const std::string& value);
  // Whether the minute holds `value`; false for a minute before the horizon (the caller writes
  // its record again, which changes nothing).
  bool has_unique(core::TimeUs minute_us, std::string_view value) const;
  // The minute's state into *out; false, leaving *out as it was, when it has none. Before the
  // horizon, read from the OldMinutes. Errors: theirs.
  Result<bool> minute(core::TimeUs minute_us, core::AggState* out) const;

  // Accumulates the aggregates of [a, b) into `state` (and its distinct values into `uniques`
  // when `want_uniques`): whole days from the day sums, whole hours at their edges, minutes at
  // theirs (those before the horizon from the OldMinutes). a and b are minute boundaries.
  // Errors: the OldMinutes' (state and uniques then hold part of the range).
  Status combine(core::TimeUs a, core::TimeUs b, bool want_uniques, core::AggState* state,
                 core::UniqueSet* uniques) const;
  // Calls f(start, state) for each entry of `unit` (kUsPerMinute, kUsPerHour or kUsPerDay)
  // starting in [from, to), in time order (the state is a temporary). Minutes: only those held.
  template <typename F>
  void for_each(core::TimeUs unit, core::TimeUs from, core::TimeUs to, F&& f) const;
  // The first minute with data in [from, to), if any (before the horizon: found from the hours
  // with data, then read from the OldMinutes). Errors: theirs.
  Result<std::optional<core::TimeUs>> next_minute(core::TimeUs from, core::TimeUs to) const;

  // How many minutes are held in memory.
  std::size_t minutes() const { return minutes_.size(); }

  // Appends the whole series (its horizon included) to `out` (a checkpoint); restore() reads it
  // back into an empty one, false when the bytes do not hold one. The binding is not saved.
  void save(std::string& out) const;
  bool restore(common::Reader& in);

 private:
  const PackedSums& sums(core::TimeUs unit) const {
    return unit == core::kUsPerMinute ? minutes_ : unit == core::kUsPerHour ? hours_ : days_;
  }

  // The minutes of [x, y) into state (and uniques): those before the horizon from old_.
  Status combine_minutes(core::TimeUs x, core::TimeUs y, bool want_uniques, core::AggState* state,
                         core::UniqueSet* uniques) const;

  core::TimeUs held_from_ = kHoldsAll;
  const OldMinutes* old_ = nullptr;
  SeriesKey key_;

  PackedSums minutes_;
  PackedSums hours_;
  PackedSums days_;
  std::map<core::TimeUs, core::UniqueSet> minute_uniques_;
  std::map<core::TimeUs, core::UniqueSet> hour_uniques_;
};

// One calendar window [start, end) of a range (its first and last may reach outside it).
struct Span {
  core::TimeUs start = 0;
  core::TimeUs end = 0;
};

// At most this many windows in one answer (windows_of).
inline constexpr std::size_t kWindowsMax = 10'000;

// The calendar windows of kind `w` in zone `tz` that meet [from, to), in order. Errors:
// kInvalidArgument past kWindowsMax windows.
Result<std::vector<Span>> windows_of(core::TimeUs from, core::TimeUs to, core::Window w,
                                     const core::TimeZone& tz);

// The coarsest unit the series keep (kUsPerDay or kUsPerHour) on which every window bound inside
// [from, to), and from and to themselves, fall: for_each in that unit then fills the windows in
// one ordered walk. 0 when minutes are needed.
core::TimeUs common_unit(const std::vector<Span>& windows, core::TimeUs from, core::TimeUs to);

// The hour and UTC day sums of one group over every customer, for statistics of all customers.
// Plain maps: there are few entries (groups x hours), and a restart adds every customer's history
// in turn, so updates come in no overall time order, but in order within a customer: each map
// remembers where it last added, and an update there or at the next entry takes no search.
// Neither copied nor moved (those positions point into the object's own maps).
class GroupTotals {
 public:
  GroupTotals() = default;
  GroupTotals(const GroupTotals&) = delete;
  GroupTotals& operator=(const GroupTotals&) = delete;

  void add(core::TimeUs minute_us, const core::AggState& delta);
  // Adds every hour and day of `series`: the totals of a group are the sum of its series (a
  // checkpoint's totals are made again so after reloading some customers from the store).
  void add_series(const Series& series);
  // As Series::save and Series::restore.
  void save(std::string& out) const;
  bool restore(common::Reader& in);
  // As Series::for_each, for kUsPerHour or kUsPerDay.
  template <typename F>
  void for_each(core::TimeUs unit, core::TimeUs from, core::TimeUs to, F&& f) const;

 private:
  using Sums = std::map<core::TimeUs, core::AggState>;
  // The entry of `key` in `sums`, made when absent; *near is where the last one was.
  static core::AggState& entry(Sums& sums, Sums::iterator* near, core::TimeUs key);

  Sums hours_;
  Sums days_;
  Sums::iterator near_hour_ = hours_.end();
  Sums::iterator near_day_ = days_.end();
};

template <typename F>
void Series::for_each(core::TimeUs unit, core::TimeUs from, core::TimeUs to, F&& f) const {
  sums(unit).for_each(from, to, std::forward<F>(f));
}

template <typename F>
void GroupTotals::for_each(core::TimeUs unit, core::TimeUs from, core::TimeUs to, F&& f) const {
  const auto& s = unit == core::kUsPerDay ? days_ : hours_;
  for (auto it = s.lower_bound(from); it != s.end() && it->first < to; ++it) {
    f(it->first, it->second);
  }
}

}  // namespace tally::engine
