#include "core/aggregate.h"

namespace tally::core {

bool aggregate_value(Aggregation a, const AggState& s, const UniqueSet* uniques, Decimal* out) {
  switch (a) {
    case Aggregation::kCount:
      // The sum of the events' quantities (core::Event::quantity): 1 per ingested event, N for
      // a check's one event carrying N. Equal to `count` when every quantity is 1.
      *out = s.sum;
      return true;
    case Aggregation::kSum:
      *out = s.sum;
      return true;
    case Aggregation::kUniqueCount:
      *out = Decimal::from_int(uniques == nullptr ? 0 : static_cast<std::int64_t>(uniques->size()));
      return true;
    case Aggregation::kMin:
      *out = s.min;
      return s.count > 0;
    case Aggregation::kMax:
      *out = s.max;
      return s.count > 0;
    case Aggregation::kAvg:
      if (s.count == 0) {
        return false;
      }
      *out = divide_half_even(s.sum, s.count);
      return true;
    case Aggregation::kLatest:
      *out = s.latest;
      return s.count > 0;
  }
  return false;
}

}  // namespace tally::core
