// Meters: how events become numbers.
//
// A meter selects events by type and optional equality filters on properties, takes a value
// from one property (none for `count`), and aggregates per customer, window and group, where
// the group is the tuple of the values of the `group_by` properties (absent = "").
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tally/status.h>
#include <tally/types.h>

#include "core/decimal.h"
#include "core/event.h"

namespace tally::core {

// The public aggregation (include/tally/types.h), whose texts are tally::to_string and
// tally::parse_aggregation_name.
using Aggregation = tally::Aggregation;

// "count" | "sum" | "min" | "max" | "avg" | "latest" | "unique_count". Errors: kInvalidArgument
// naming the text.
Result<Aggregation> parse_aggregation(std::string_view name);
// The same as tally::to_string(a).
std::string_view aggregation_name(Aggregation a);

struct MeterSpec {
  std::string key;         // [a-z0-9_-]{1,64}, unique
  std::string event_type;  // events of this type feed the meter
  Aggregation aggregation = Aggregation::kCount;
  std::string value_property;  // property key ("input_tokens", "usage.input"); empty for count
  std::vector<std::string> group_by;
  std::vector<std::pair<std::string, std::string>> filter;  // property == value (as text)
  std::string unit;
  std::string description;
  // Whether the value may be below zero (corrections). Even then only an admin caller may send
  // one (core::ParseOptions::nonnegative); other meters refuse negative values at ingest, so
  // usage can never lower a limit's count or mint credits. Not part of the fingerprint: it
  // decides which events are accepted, not what accepted events add up to.
  bool allow_negative = false;

  // A stable text of everything that decides the meter's numbers; when it changes between
  // runs, the meter's aggregates are rebuilt from the stored events.
  std::string fingerprint() const;
};

// Parses a JSON path as accepted in config: "$.a.b", "a.b", "$['a']['b']" -> "a.b".
// Errors: kInvalidArgument.
Result<std::string> parse_value_path(std::string_view path);

// What one event contributes to one meter.
struct MeterInput {
  Decimal value;            // 1 for count; the property's number otherwise
  std::string_view unique;  // the property's text for unique_count
};

// Whether event e of batch b feeds meter m; when it does, fills `input` and `group` (the
// group-by values joined by '\x1f'). Returns false when the event's type or filter does not
// match, or when the value property is missing or not a number (for numeric aggregations).
bool meter_accepts(const MeterSpec& m, const EventBatch& b, const Event& e, MeterInput* input,
                   std::string* group);

}  // namespace tally::core
