// Aggregate state: what one meter knows about one customer, window and group.
//
// An AggState merges associatively and commutatively, so a minute bucket, an hour bucket, and
// a month assembled from hours and edge minutes all come out the same whatever order events
// arrived in. `latest` is decided by (event time, event sequence), both stored with the
// events, so a recomputation from the raw events gives the identical state.
// unique_count keeps its distinct values beside the state (see UniqueSet) so windows union
// instead of summing.
#pragma once

#include <cstdint>
#include <string>
#include <unordered_set>

#include "core/decimal.h"
#include "core/meter.h"
#include "core/time.h"

namespace tally::core {

struct AggState {
  std::int64_t count = 0;
  Decimal sum;
  Decimal min;
  Decimal max;
  Decimal latest;
  TimeUs latest_time_us = 0;
  std::uint64_t latest_seq = 0;

  bool empty() const { return count == 0; }

  void add(const Decimal& v, TimeUs time_us, std::uint64_t seq) {
    if (count == 0) {
      min = v;
      max = v;
      latest = v;
      latest_time_us = time_us;
      latest_seq = seq;
    } else {
      if (v < min) {
        min = v;
      }
      if (v > max) {
        max = v;
      }
      if (time_us > latest_time_us || (time_us == latest_time_us && seq > latest_seq)) {
        latest = v;
        latest_time_us = time_us;
        latest_seq = seq;
      }
    }
    ++count;
    sum += v;
  }

  void merge(const AggState& o) {
    if (o.count == 0) {
      return;
    }
    if (count == 0) {
      *this = o;
      return;
    }
    if (o.min < min) {
      min = o.min;
    }
    if (o.max > max) {
      max = o.max;
    }
    if (o.latest_time_us > latest_time_us ||
        (o.latest_time_us == latest_time_us && o.latest_seq > latest_seq)) {
      latest = o.latest;
      latest_time_us = o.latest_time_us;
      latest_seq = o.latest_seq;
    }
    count += o.count;
    sum += o.sum;
  }

  friend bool operator==(const AggState&, const AggState&) = default;
};

using UniqueSet = std::unordered_set<std::string>;

// The meter's number for a state: count, sum, min, max, avg (half-even), latest; for
// unique_count the size of `uniques`. Returns false when there is no value (no events, for
// min/max/avg/latest).
bool aggregate_value(Aggregation a, const AggState& s, const UniqueSet* uniques, Decimal* out);

}  // namespace tally::core
