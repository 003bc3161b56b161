// What a meter query means, shared by both modes' answers (query.cc for the embedded store,
// cluster_query.cc for the scale-out mode), so that they resolve, refuse and print alike.
#pragma once

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "core/aggregate.h"
#include "core/meter.h"
#include "core/time.h"
#include "tally/status.h"
#include "tally/types.h"

namespace tally::engine {

class Catalog;
struct MeterDef;

// The meter whose aggregates a query reads: q.meter, or for the cost or credits measure that
// meter's hidden cost or credits meter (catalog.h). Errors: kNotFound for a meter that does not
// exist; kInvalidArgument for cost or credits of a meter without a price.
Result<const MeterDef*> query_meter(const Catalog& catalog, const MeterQuery& q);

// The zone of a query's windows: q.timezone when given, else the zone of the one customer asked
// (`customer_tz`; null when every customer is), else UTC. Errors: kInvalidArgument for a zone
// that does not exist.
Result<core::TimeZone> query_zone(const MeterQuery& q, const core::TimeZone* customer_tz);

// At most this many rows in one query's answer.
inline constexpr std::size_t kQueryRowsMax = 100'000;

// The group-by properties `q` projects (*projection: indexes into spec.group_by, in q.group_by's
// order) and filters by (*filters: index, value). Errors: kInvalidArgument naming a property
// that is not one of the meter's group-by properties.
Status resolve_query_groups(const core::MeterSpec& spec, const MeterQuery& q,
                            std::vector<std::size_t>* projection,
                            std::vector<std::pair<std::size_t, std::string>>* filters);

// The refusal of an answer of more than kQueryRowsMax rows (with a window or without one).
Status query_too_large(bool windowed);

// A row's value: core::aggregate_value as decimal text, "" when there is none.
std::string query_value_text(core::Aggregation a, const core::AggState& s,
                             const core::UniqueSet* uniques);

}  // namespace tally::engine
