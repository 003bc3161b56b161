// The scale-out mode's meter queries on one PostgreSQL shard: a meter's aggregates of every
// customer (or one), every group (or those a filter keeps), in any set of windows, aggregated in
// PostgreSQL and sent to the node as one row per (customer, group, window).
//
// The caller cuts the range into pieces (pieces_of): each piece is either whole UTC hours, read
// from aggregates_hour, or minutes, read from aggregates_minute, and belongs to one window (or,
// with a unit, to the window of each row's own bucket: minute windows, and hour windows in a zone
// whose offsets are whole hours). Pieces never overlap, so every stored minute is counted once,
// and a window whose bounds fall inside an hour (a +05:30 zone's days) is exact. Distinct values
// of unique_count meters are read per minute from aggregate_uniques over the same pieces, each
// value once per (customer, group, window).
//
// read_grouped() reads everything in one REPEATABLE READ READ ONLY snapshot, so its hour and
// minute rows agree under concurrent writes. Every value goes as a parameter (arrays as array
// literals); the SQL text is the program's own.
//
// Thread safety: uses only the given connection. REQUIRES: no transaction is open on it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "core/aggregate.h"
#include "core/meter.h"
#include "core/time.h"
#include "pg/connection.h"
#include "tally/status.h"

namespace tally::cluster {

// At most this many pieces in one read (bounds the parameters sent).
inline constexpr std::size_t kQueryPiecesMax = 100'000;

// A part [from_us, to_us) of a query's range and the window it counts in.
struct QueryPiece {
  core::TimeUs from_us = 0;  // whole minutes; whole hours when `hours`
  core::TimeUs to_us = 0;
  bool hours = false;  // read from aggregates_hour (else aggregates_minute)
  // The window of the piece's rows: `window_start_us`, or, when unit_us > 0, each row's own
  // bucket start rounded down to unit_us.
  core::TimeUs window_start_us = 0;
  core::TimeUs unit_us = 0;
};

// Appends to *out the pieces of [from_us, to_us) (whole minutes) for one window: its whole UTC
// hours as one hour piece, the minutes before and after them as minute pieces (all minutes when
// it holds no whole hour). Nothing for an empty range.
void pieces_of(core::TimeUs from_us, core::TimeUs to_us, core::TimeUs window_start_us,
               core::TimeUs unit_us, std::vector<QueryPiece>* out);

struct GroupedQuery {
  std::optional<std::string> customer;  // nullopt: every customer of the shard
  // In time order, none empty, none overlapping another (as pieces_of appends them).
  std::vector<QueryPiece> pieces;
  // Group-by property (an index into the meter's group_by) == value, all of them.
  std::vector<std::pair<std::size_t, std::string>> filters;
};

struct GroupedRow {
  std::string customer;
  std::string group_key;  // the meter's group_by values joined by U+001F
  core::TimeUs window_start_us = 0;
  core::AggState state;
};

struct GroupedUnique {
  std::string customer;
  std::string group_key;
  core::TimeUs window_start_us = 0;
  std::string value;
};

struct GroupedUsage {
  std::vector<GroupedRow> rows;        // with data only, in no particular order
  std::vector<GroupedUnique> uniques;  // unique_count meters: distinct values per row's key
};

// Reads `meter`'s usage over the pieces (see the header comment): one scan of the meter's rows
// in the pieces' span (of the customer's, when one is named), each row's piece found by a binary
// search of the pieces' starts. Errors: kInvalidArgument for pieces out of order, empty or
// overlapping, for more than kQueryPiecesMax pieces, or more than kUsageRowsMax rows or distinct
// values (details kQueryTooLargeDetails); the connection's errors.
Result<GroupedUsage> read_grouped(pg::Connection& conn, const core::MeterSpec& meter,
                                  const GroupedQuery& query);

}  // namespace tally::cluster
