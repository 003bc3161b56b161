// The aggregate states of one resolution of a series (its minutes, its hours or its days), keyed
// by their start, in about 10 to 20 bytes an entry where a tree node took 150.
//
// The few newest entries (kTailMax), the ones live ingest keeps updating, are plain AggStates.
// Older ones are encoded (the format is in packed_sums.cc) in segments of at most
// kSegmentEntries entries, segments and entries in time order. An update to an encoded entry (a
// late event) decodes its one segment, merges and encodes it again. Readers decode as they walk;
// nothing is cached, so const methods may run at the same time as each other, not with a writer.
#pragma once

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/coding.h"
#include "core/aggregate.h"
#include "core/time.h"

namespace tally::engine {

class PackedSums {
 public:
  // Plain entries kept at the newest end; the oldest of them is encoded when one more arrives.
  static constexpr std::size_t kTailMax = 4;
  // Entries a segment takes before the next one starts; an insertion into a full one splits it.
  static constexpr std::uint32_t kSegmentEntries = 32;

  // Merges `delta` into the entry starting at `start` (a minute boundary), making the entry when
  // there is none. Returns whether it was made.
  bool merge(core::TimeUs start, const core::AggState& delta);
  // The entry starting at `start` into *out; false, leaving *out as it was, when there is none.
  bool get(core::TimeUs start, core::AggState* out) const;
  // Calls f(start, state) for each entry starting in [from, to), in time order. The state is a
  // temporary: f copies what it keeps.
  template <typename F>
  void for_each(core::TimeUs from, core::TimeUs to, F&& f) const;
  // The start of the first entry in [from, to), if any.
  std::optional<core::TimeUs> first_in(core::TimeUs from, core::TimeUs to) const;
  // How many entries there are.
  std::size_t size() const;
  // Removes every entry starting before t (whole segments, and the one segment reaching t
  // encoded again). Returns how many were removed.
  std::size_t drop_before(core::TimeUs t);

  // Appends the whole of it to `out` (a checkpoint, checkpoint.cc); restore() reads that back
  // into an empty one, false when the bytes do not hold one.
  void save(std::string& out) const;
  bool restore(common::Reader& in);

 private:
  using Entry = std::pair<core::TimeUs, core::AggState>;

  struct Segment {
    core::TimeUs first = 0;      // start of its first entry
    core::TimeUs last = 0;       // start of its last entry
    std::uint64_t last_seq = 0;  // latest_seq of its last entry: the next is encoded against it
    std::uint32_t entries = 0;
    std::string bytes;
  };

  // Reads a segment's entries in order.
  class Cursor {
   public:
    explicit Cursor(const Segment& s)
        : p_(s.bytes.data()), end_(s.bytes.data() + s.bytes.size()), start_(s.first) {}

    // The next entry into *start and *state; false past the last.
    bool next(core::TimeUs* start, core::AggState* state);

   private:
    const char* p_;
    const char* end_;
    core::TimeUs start_;
    std::uint64_t seq_ = 0;
  };

  // The first entry of `v` (sorted by start) starting at or after t.
  template <typename V>
  static auto entry_at_or_after(V& v, core::TimeUs t) {
    return std::lower_bound(v.begin(), v.end(), t,
                            [](const Entry& e, core::TimeUs x) { return e.first < x; });
  }

  // Appends one entry (after every entry it holds) to a segment.
  static void append(Segment* s, core::TimeUs start, const core::AggState& state);
  // A segment holding `entries` (sorted, not empty).
  static Segment encode(const Entry* entries, std::size_t n);

  // The first segment whose last entry starts at or after t (segments_.end() if none).
  std::vector<Segment>::const_iterator segment_reaching(core::TimeUs t) const {
    return std::partition_point(segments_.begin(), segments_.end(),
                                [t](const Segment& s) { return s.last < t; });
  }

  // Whether `start` belongs in the segments (it is not after their last entry).
  bool in_segments(core::TimeUs start) const {
    return !segments_.empty() && start <= segments_.back().last;
  }

  void seal_oldest();
  bool merge_into_segment(core::TimeUs start, const core::AggState& delta);

  std::vector<Segment> segments_;
  std::vector<Entry> tail_;  // sorted; each starts after every entry of the segments
};

template <typename F>
void PackedSums::for_each(core::TimeUs from, core::TimeUs to, F&& f) const {
  if (from >= to) {
    return;
  }
  core::TimeUs start = 0;
  core::AggState state;
  for (auto it = segment_reaching(from); it != segments_.end() && it->first < to; ++it) {
    Cursor c(*it);
    while (c.next(&start, &state)) {
      if (start >= to) {
        return;
      }
      if (start >= from) {
        f(start, static_cast<const core::AggState&>(state));
      }
    }
  }
  for (auto t = entry_at_or_after(tail_, from); t != tail_.end() && t->first < to; ++t) {
    f(t->first, static_cast<const core::AggState&>(t->second));
  }
}

}  // namespace tally::engine
