// The scale-out mode's meter queries on one shard (see pg_query.h). Every value reaches the
// server as a parameter; the SQL text below is the program's own.
#include "cluster/pg_query.h"

#include <algorithm>
#include <charconv>
#include <string_view>

#include "cluster/pg_customers.h"
#include "cluster/pg_events.h"
#include "common/assert.h"

namespace tally::cluster {
namespace {

// The pieces ($2..$6: from, to, hours, window start, unit, microseconds since the epoch; in
// order, the n-th piece numbered n) and the filters ($8, $9: 1-based field of group_key, value)
// as tables p and f; $7 the customer or NULL.
constexpr std::string_view kInputs =
    "WITH p AS (SELECT * FROM unnest($2::bigint[], $3::bigint[], $4::boolean[], $5::bigint[], "
    "$6::bigint[]) WITH ORDINALITY AS t(lo, hi, hours, ws, unit, n)), "
    "f AS (SELECT * FROM unnest($8::int[], $9::text[]) AS t(i, v)) ";

// The columns of a row of `table` (alias x) read through the piece p that holds its bucket, with
// its window as w, and the rows a query keeps: its meter, its customer (or all), within the
// pieces, its filters; `hours`: which pieces. The piece is found by a binary search of the
// pieces' starts (width_bucket), so one scan of the rows serves any number of pieces.
std::string read_through_pieces(std::string_view table, std::string_view columns,
                                std::string_view hours) {
  constexpr std::string_view kUs = "(extract(epoch FROM x.bucket_start) * 1000000)::bigint";
  std::string sql = "SELECT x.customer_id, x.group_key, CASE WHEN p.unit > 0 THEN (floor(";
  sql.append(kUs).append("::numeric / p.unit) * p.unit)::bigint ELSE p.ws END AS w");
  sql.append(columns).append(" FROM ").append(table).append(" x JOIN p ON p.n = width_bucket(");
  sql.append(kUs).append(", $2::bigint[]) AND ").append(kUs);
  sql.append(
      " < p.hi WHERE x.meter = $1 AND ($7::text IS NULL OR x.customer_id = $7::text) "
      "AND x.bucket_start >= timestamptz 'epoch' + ($2::bigint[])[1] * interval '1 microsecond' "
      "AND x.bucket_start < timestamptz 'epoch' + ($3::bigint[])[cardinality($3::bigint[])] * "
      "interval '1 microsecond' AND NOT EXISTS "
      "(SELECT 1 FROM f WHERE split_part(x.group_key, chr(31), f.i) <> f.v)");
  sql.append(hours);
  return sql;
}

// One row per (customer, group, window), combined as core::AggState::merge does: `latest` is
// the value of the greatest (latest_time, latest_seq). A table no piece reads is left out of
// the statement: a query over every customer scans the rows of each table it names.
std::string grouped_sql(bool hours, bool minutes) {
  constexpr std::string_view kState =
      ", x.count, x.sum, x.min, x.max, x.latest, x.latest_time, x.latest_seq";
  std::string sql(kInputs);
  sql.append(", r AS (");
  if (hours) {
    sql.append(read_through_pieces("aggregates_hour", kState, " AND p.hours"));
  }
  if (hours && minutes) {
    sql.append(" UNION ALL ");
  }
  if (minutes) {
    sql.append(read_through_pieces("aggregates_minute", kState, " AND NOT p.hours"));
  }
  sql.append(
      ") SELECT customer_id, group_key, w, sum(count)::bigint, sum(sum), min(min), max(max), "
      "(array_agg(latest ORDER BY latest_time DESC, latest_seq DESC))[1], "
      "(extract(epoch FROM max(latest_time)) * 1000000)::bigint, "
      "(array_agg(latest_seq ORDER BY latest_time DESC, latest_seq DESC))[1] "
      "FROM r GROUP BY customer_id, group_key, w LIMIT $10::bigint");
  return sql;
}

// Each distinct value once per (customer, group, window); the values are kept per minute, so
// hour pieces read their minutes.
std::string grouped_uniques_sql() {
  std::string sql(kInputs);
  sql.append("SELECT DISTINCT * FROM (");
  sql.append(read_through_pieces("aggregate_uniques", ", x.value", ""));
  sql.append(") AS u LIMIT $10::bigint");
  return sql;
}

Status too_large(std::string_view what, std::size_t max) {
  return Status::invalid_argument("the query reads more than " + std::to_string(max) + " " +
                                      std::string(what) + " on a shard; narrow the range",
                                  std::string(kQueryTooLargeDetails));
}

Result<core::TimeUs> window_of(const pg::Value& v) {
  if (!v) {
    return Status::internal("a NULL where a window start was expected");
  }
  core::TimeUs out = 0;
  const auto r = std::from_chars(v->data(), v->data() + v->size(), out);
  if (r.ec != std::errc() || r.ptr != v->data() + v->size()) {
    return Status::internal("'" + *v + "' is not a window start");
  }
  return out;
}

}  // namespace

void pieces_of(core::TimeUs from_us, core::TimeUs to_us, core::TimeUs window_start_us,
               core::TimeUs unit_us, std::vector<QueryPiece>* out) {
  if (to_us <= from_us) {
    return;
  }
  const core::TimeUs hours_from = core::ceil_to(from_us, core::kUsPerHour);
  const core::TimeUs hours_to = core::floor_to(to_us, core::kUsPerHour);
  if (hours_to <= hours_from) {
    out->push_back(QueryPiece{from_us, to_us, false, window_start_us, unit_us});
    return;
  }
  if (from_us < hours_from) {
    out->push_back(QueryPiece{from_us, hours_from, false, window_start_us, unit_us});
  }
  out->push_back(QueryPiece{hours_from, hours_to, true, window_start_us, unit_us});
  if (hours_to < to_us) {
    out->push_back(QueryPiece{hours_to, to_us, false, window_start_us, unit_us});
  }
}

Result<GroupedUsage> read_grouped(pg::Connection& conn, const core::MeterSpec& meter,
                                  const GroupedQuery& query) {
  GroupedUsage out;
  if (query.pieces.size() > kQueryPiecesMax) {
    return too_large("windows", kQueryPiecesMax);
  }
  if (query.pieces.empty()) {
    return out;
  }
  for (std::size_t i = 0; i < query.pieces.size(); ++i) {
    const QueryPiece& p = query.pieces[i];
    if (p.to_us <= p.from_us || (i > 0 && p.from_us < query.pieces[i - 1].to_us)) {
      return Status::invalid_argument("query pieces must be in time order, none empty");
    }
  }
  std::vector<std::string> from, to, hours, starts, units, fields, values;
  for (const QueryPiece& p : query.pieces) {
    from.push_back(std::to_string(p.from_us));
    to.push_back(std::to_string(p.to_us));
    hours.push_back(p.hours ? "t" : "f");
    starts.push_back(std::to_string(p.window_start_us));
    units.push_back(std::to_string(p.unit_us));
  }
  for (const auto& [index, value] : query.filters) {
    fields.push_back(std::to_string(index + 1));
    values.push_back(value);
  }
  const std::vector<pg::Value> params = {
      meter.key,
      text_array(from),
      text_array(to),
      text_array(hours),
      text_array(starts),
      text_array(units),
      query.customer ? pg::Value(*query.customer) : pg::Value(std::nullopt),
      text_array(fields),
      text_array(values),
      std::to_string(kUsageRowsMax + 1)};

  auto tx = pg::Transaction::begin(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  if (!tx) {
    return tx.error();
  }
  const bool any_hours = std::any_of(query.pieces.begin(), query.pieces.end(),
                                     [](const QueryPiece& p) { return p.hours; });
  const bool any_minutes = std::any_of(query.pieces.begin(), query.pieces.end(),
                                       [](const QueryPiece& p) { return !p.hours; });
  static const std::string kGrouped[3] = {grouped_sql(true, false), grouped_sql(false, true),
                                          grouped_sql(true, true)};
  auto rows = conn.exec(kGrouped[any_hours && any_minutes ? 2 : any_hours ? 0 : 1], params);
  if (!rows) {
    return rows.error();
  }
  if (rows->row_count() > kUsageRowsMax) {
    return too_large("rows", kUsageRowsMax);
  }
  out.rows.reserve(rows->row_count());
  for (const auto& row : rows->rows) {
    TALLY_ASSERT(row[0] && row[1], "aggregate rows name their customer and group");
    auto ws = window_of(row[2]);
    if (!ws) {
      return ws.error();
    }
    auto st = parse_agg_state(row, 3);
    if (!st) {
      return st.error();
    }
    out.rows.push_back(GroupedRow{*row[0], *row[1], *ws, *st});
  }
  if (meter.aggregation == core::Aggregation::kUniqueCount) {
    static const std::string kUniques = grouped_uniques_sql();
    auto uniques = conn.exec(kUniques, params);
    if (!uniques) {
      return uniques.error();
    }
    if (uniques->row_count() > kUsageRowsMax) {
      return too_large("distinct values", kUsageRowsMax);
    }
    out.uniques.reserve(uniques->row_count());
    for (const auto& row : uniques->rows) {
      TALLY_ASSERT(row[0] && row[1] && row[3], "distinct values are NOT NULL");
      auto ws = window_of(row[2]);
      if (!ws) {
        return ws.error();
      }
      out.uniques.push_back(GroupedUnique{*row[0], *row[1], *ws, *row[3]});
    }
  }
  TALLY_TRY(tx->commit());
  return out;
}

}  // namespace tally::cluster
