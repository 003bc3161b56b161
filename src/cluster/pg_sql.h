// What the cluster layer's SQL shares: times sent to PostgreSQL as microseconds since the epoch
// (a bigint parameter, turned into timestamptz by SQL) and read back the same way, which is
// exact both ways.
#pragma once

#include <string>

#include "pg/connection.h"
#include "tally/types.h"

namespace tally::cluster {

// Microseconds since the epoch as a parameter; NULL for 0 with micros_or_null.
inline pg::Value micros(TimeUs us) {
  return std::to_string(us);
}

inline pg::Value micros_or_null(TimeUs us) {
  return us == 0 ? pg::Value() : micros(us);
}

}  // namespace tally::cluster

// The SQL of parameter $n (microseconds) as a timestamptz, and of a timestamptz column as
// microseconds.
#define TALLY_TS(n) "(timestamptz 'epoch' + $" #n "::bigint * interval '1 microsecond')"
#define TALLY_US(col) "(extract(epoch from " col ") * 1000000)::bigint"
