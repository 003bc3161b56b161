// The scale-out mode's event and aggregate writes and usage reads in PostgreSQL (see
// pg_events.h). Every value reaches the server as a parameter or a COPY field; the SQL text
// below is the program's own (table names included), never built from values.
#include "cluster/pg_events.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <map>
#include <set>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <utility>

#include "common/assert.h"
#include "common/json_writer.h"
#include "core/decimal.h"

namespace tally::cluster {
namespace {

// ---- statements -------------------------------------------------------------------------------

// `count` sequence numbers of events.seq, in the order they were drawn (ascending). The
// sequence's name is looked up once (a MATERIALIZED CTE): written inside nextval() it was looked
// up again for every row, which cost seven times the draws themselves.
constexpr std::string_view kDrawSeqs =
    "WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('events', 'seq')::regclass AS id) "
    "SELECT nextval(s.id) FROM s, generate_series(1, $1::int)";

// The staging tables are created once per connection (ensure_staging), outside any
// transaction; their rows are deleted at every commit and vanish with a rollback, so each
// transaction starts with them empty. Creating and dropping them in every transaction (ON COMMIT
// DROP) cost catalog writes each time.
constexpr std::string_view kStageEvents =
    "CREATE TEMP TABLE IF NOT EXISTS tally_stage_events (seq bigint, customer_id text, "
    "event_id text, type text, time timestamptz, quantity bigint, properties_text text, "
    "cost numeric, credits numeric) ON COMMIT DELETE ROWS;";
constexpr std::string_view kCopyEvents =
    "COPY tally_stage_events (seq, customer_id, event_id, type, time, quantity, "
    "properties_text, cost, credits) FROM STDIN";
// Sorted by the dedup key, so two nodes inserting the same ids take their locks in one order.
constexpr std::string_view kInsertEvents =
    "INSERT INTO events (seq, customer_id, event_id, type, time, received_at, quantity, "
    "properties_text, cost, credits) OVERRIDING SYSTEM VALUE "
    "SELECT seq, customer_id, event_id, type, time, $1::timestamptz, quantity, properties_text, "
    "cost, credits "
    "FROM tally_stage_events ORDER BY customer_id, event_id "
    "ON CONFLICT ON CONSTRAINT events_dedup DO NOTHING RETURNING seq";

// Plain numeric here: the range of numeric(38, 9) is enforced where the rows land.
constexpr std::string_view kStageAggregates =
    "CREATE TEMP TABLE IF NOT EXISTS tally_stage_aggregates (hour boolean, meter text, "
    "customer_id text, group_key text, bucket_start timestamptz, count bigint, sum numeric, "
    "min numeric, max numeric, latest numeric, latest_time timestamptz, latest_seq bigint) "
    "ON COMMIT DELETE ROWS;";
constexpr std::string_view kCopyAggregates =
    "COPY tally_stage_aggregates (hour, meter, customer_id, group_key, bucket_start, count, sum, "
    "min, max, latest, latest_time, latest_seq) FROM STDIN";

// The upsert of one resolution (`table`: aggregates_minute or aggregates_hour; `rows`: which
// staged rows go there), combining as core::AggState::merge does. Every right-hand side of SET
// reads the row as it was, so the three latest columns move together.
std::string upsert_sql(std::string_view table, std::string_view rows) {
  constexpr std::string_view kNewer =
      "CASE WHEN (EXCLUDED.latest_time, EXCLUDED.latest_seq) > (a.latest_time, a.latest_seq) ";
  std::string sql = "INSERT INTO ";
  sql.append(table);
  sql.append(
      " AS a (meter, customer_id, group_key, bucket_start, count, sum, min, max, latest, "
      "latest_time, latest_seq) SELECT meter, customer_id, group_key, bucket_start, count, sum, "
      "min, max, latest, latest_time, latest_seq FROM tally_stage_aggregates WHERE ");
  sql.append(rows);
  sql.append(
      " ORDER BY meter, customer_id, group_key, bucket_start "
      "ON CONFLICT (meter, customer_id, group_key, bucket_start) DO UPDATE SET "
      "count = a.count + EXCLUDED.count, sum = a.sum + EXCLUDED.sum, "
      "min = LEAST(a.min, EXCLUDED.min), max = GREATEST(a.max, EXCLUDED.max), latest = ");
  sql.append(kNewer).append("THEN EXCLUDED.latest ELSE a.latest END, latest_time = ");
  sql.append(kNewer).append("THEN EXCLUDED.latest_time ELSE a.latest_time END, latest_seq = ");
  sql.append(kNewer).append("THEN EXCLUDED.latest_seq ELSE a.latest_seq END");
  return sql;
}

constexpr std::string_view kStageUniques =
    "CREATE TEMP TABLE IF NOT EXISTS tally_stage_uniques (meter text, customer_id text, "
    "group_key text, bucket_start timestamptz, value text) ON COMMIT DELETE ROWS;";
constexpr std::string_view kCopyUniques =
    "COPY tally_stage_uniques (meter, customer_id, group_key, bucket_start, value) FROM STDIN";
constexpr std::string_view kInsertUniques =
    "INSERT INTO aggregate_uniques (meter, customer_id, group_key, bucket_start, value) "
    "SELECT meter, customer_id, group_key, bucket_start, value FROM tally_stage_uniques "
    "ORDER BY meter, customer_id, group_key, bucket_start, value ON CONFLICT DO NOTHING";

// Noted on a pg::Connection once its staging tables exist.
constexpr std::string_view kStagingState = "cluster.pg_events staging tables";

// Creates the staging tables on `conn` unless this Connection has them already. REQUIRES: no
// transaction is open, so that they exist for good once this succeeds.
Status ensure_staging(pg::Connection& conn) {
  if (conn.has_session_state(kStagingState)) {
    return Status();
  }
  std::string sql(kStageEvents);
  sql.append(kStageAggregates).append(kStageUniques);
  TALLY_TRY(conn.exec_script(sql).status());
  conn.note_session_state(kStagingState);
  return Status();
}

// ---- encoding ---------------------------------------------------------------------------------

// Whether `s` is a JSON number (RFC 8259): -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
bool is_json_number(std::string_view s) {
  std::size_t i = 0;
  auto digits = [&] {
    const std::size_t start = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
      ++i;
    }
    return i > start;
  };
  if (i < s.size() && s[i] == '-') {
    ++i;
  }
  if (i < s.size() && s[i] == '0') {
    ++i;
  } else if (!digits()) {
    return false;
  }
  if (i < s.size() && s[i] == '.') {
    ++i;
    if (!digits()) {
      return false;
    }
  }
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '+' || s[i] == '-')) {
      ++i;
    }
    if (!digits()) {
      return false;
    }
  }
  return i == s.size();
}

// The event's properties as a JSON object. A number goes as its text, as sent; a number text
// that is not JSON (a batch built by hand) goes as a string rather than failing the batch.
std::string properties_json(const core::EventBatch& b, const core::Event& e) {
  common::JsonWriter w;
  w.begin_object();
  for (std::uint32_t i = e.prop_begin; i < e.prop_begin + e.prop_count; ++i) {
    const core::Prop& p = b.props()[i];
    const std::string_view text = b.text(p.text);
    w.key(b.text(p.key));
    switch (p.kind) {
      case core::PropKind::kNumber:
        if (is_json_number(text)) {
          w.raw(text);
        } else {
          w.value(text);
        }
        break;
      case core::PropKind::kBool:
        w.value(text == "true");
        break;
      case core::PropKind::kNull:
        w.null();
        break;
      case core::PropKind::kString:
        w.value(text);
        break;
    }
  }
  w.end_object();
  return w.take();
}

bool has_nul(std::string_view s) {
  return s.find('\0') != std::string_view::npos;
}

// Whether any text of event e holds a NUL byte (PostgreSQL text, and jsonb strings, cannot).
bool event_has_nul(const core::EventBatch& b, const core::Event& e) {
  if (has_nul(b.text(e.id)) || has_nul(b.text(e.customer)) || has_nul(b.text(e.type))) {
    return true;
  }
  for (std::uint32_t i = e.prop_begin; i < e.prop_begin + e.prop_count; ++i) {
    if (has_nul(b.text(b.props()[i].key)) || has_nul(b.text(b.props()[i].text))) {
      return true;
    }
  }
  return false;
}

std::string time_text(core::TimeUs t) {
  return core::format_rfc3339(t);
}

Result<std::int64_t> parse_int(const pg::Value& v) {
  std::int64_t out = 0;
  if (!v) {
    return Status::internal("a NULL where a number was expected");
  }
  const auto r = std::from_chars(v->data(), v->data() + v->size(), out);
  if (r.ec != std::errc() || r.ptr != v->data() + v->size()) {
    return Status::internal("'" + *v + "' is not an integer");
  }
  return out;
}

Result<core::Decimal> parse_numeric(const pg::Value& v) {
  if (!v) {
    return Status::internal("a NULL where a number was expected");
  }
  auto d = core::parse_decimal(*v);
  if (!d) {
    return Status::invalid_argument("a stored aggregate is outside the range Tally reads: " +
                                    d.error().message());
  }
  return *d;
}

// ---- the write --------------------------------------------------------------------------------

// An aggregate row's key: meter (its index in `meters`), customer, group, bucket start.
using AggKey = std::tuple<std::uint32_t, std::string_view, std::string, core::TimeUs>;
// A distinct value's key: as AggKey, with the value.
using UniqueKey =
    std::tuple<std::uint32_t, std::string_view, std::string, core::TimeUs, std::string_view>;

// One event that goes to the staging table: the first of its (customer, id) in the batch.
struct Staged {
  std::size_t pos;      // its place in `indices`
  std::uint32_t index;  // its index in the batch
};

class BatchWriter {
 public:
  BatchWriter(pg::Connection& conn, const core::EventBatch& batch,
              std::span<const std::uint32_t> indices, std::span<const core::MeterSpec> meters,
              core::TimeUs received_at_us, const EventWriteOptions& options)
      : conn_(conn),
        batch_(batch),
        indices_(indices),
        meters_(meters),
        received_at_(time_text(received_at_us)),
        options_(options) {}

  // Checks the input and builds what every attempt sends the same. Errors: kInvalidArgument,
  // kPayloadTooLarge (see write_events).
  Status prepare(EventWriteResult* result);
  // One run of the transaction; fills the rest of *result when it commits.
  Status attempt(EventWriteResult* result);

 private:
  Status insert_events(std::vector<std::int64_t>* seqs, std::vector<bool>* inserted);

  // Per entry of indices_: whether it was inserted (`inserted` is per staged event).
  std::vector<bool> inserted_at_positions(const std::vector<bool>& inserted) const {
    std::vector<bool> out(indices_.size(), false);
    for (std::size_t s = 0; s < staged_.size(); ++s) {
      out[staged_[s].pos] = inserted[s];
    }
    return out;
  }

  void aggregate(const std::vector<bool>& inserted, const std::vector<std::int64_t>& seqs);
  Status upsert_aggregates(EventWriteResult* result);

  pg::Connection& conn_;
  const core::EventBatch& batch_;
  const std::span<const std::uint32_t> indices_;
  const std::span<const core::MeterSpec> meters_;
  const std::string received_at_;
  const EventWriteOptions& options_;

  std::vector<Staged> staged_;
  std::vector<std::vector<pg::Value>> event_rows_;  // per staged event; column 0 is its seq
  std::map<AggKey, core::AggState> minutes_;
  std::set<UniqueKey> uniques_;
};

Status BatchWriter::prepare(EventWriteResult* result) {
  if (indices_.size() > kWriteEventsMax) {
    return Status::payload_too_large("a write of " + std::to_string(indices_.size()) +
                                     " events is over the bound of " +
                                     std::to_string(kWriteEventsMax));
  }
  if (!options_.charges.empty() && options_.charges.size() != indices_.size()) {
    return Status::invalid_argument("charges for " + std::to_string(options_.charges.size()) +
                                    " events, indices for " + std::to_string(indices_.size()));
  }
  result->outcomes.assign(indices_.size(), EventOutcome::kDuplicate);
  result->seqs.assign(indices_.size(), 0);
  std::unordered_map<std::string, std::size_t> first;  // customer NUL id -> staged position
  first.reserve(indices_.size());
  std::string key;
  for (std::size_t pos = 0; pos < indices_.size(); ++pos) {
    const std::uint32_t i = indices_[pos];
    if (i >= batch_.size()) {
      return Status::invalid_argument("event index " + std::to_string(i) +
                                      " is outside the batch of " + std::to_string(batch_.size()));
    }
    const core::Event& e = batch_.events()[i];
    if (event_has_nul(batch_, e)) {
      return Status::invalid_argument("event " + std::to_string(i) +
                                      " holds a NUL byte, which PostgreSQL text cannot store");
    }
    key.assign(batch_.text(e.customer));
    key.push_back('\0');  // no NUL inside either text (checked above): the pair is unambiguous
    key.append(batch_.text(e.id));
    if (!first.emplace(key, staged_.size()).second) {
      continue;  // a later copy in the same batch: a duplicate, the first one counts
    }
    staged_.push_back(Staged{pos, i});
    const std::optional<EventCharge>* charge =
        options_.charges.empty() ? nullptr : &options_.charges[pos];
    pg::Value cost;
    pg::Value credits;
    if (charge != nullptr && charge->has_value()) {
      cost = core::format_decimal((*charge)->cost);
      credits = core::format_decimal((*charge)->credits);
    }
    // As text only (schema version 10): the order and number texts sent, for listing and verify.
    event_rows_.push_back({std::nullopt, std::string(batch_.text(e.customer)),
                           std::string(batch_.text(e.id)), std::string(batch_.text(e.type)),
                           time_text(e.time_us), std::to_string(e.quantity),
                           properties_json(batch_, e), std::move(cost), std::move(credits)});
  }
  return Status();
}

Status BatchWriter::attempt(EventWriteResult* result) {
  TALLY_TRY(ensure_staging(conn_));
  auto tx = pg::Transaction::begin(conn_);
  if (!tx) {
    return tx.error();
  }
  std::vector<std::int64_t> seqs;
  std::vector<bool> inserted;
  TALLY_TRY(insert_events(&seqs, &inserted));
  if (options_.before_aggregates) {
    TALLY_TRY(options_.before_aggregates(conn_, inserted_at_positions(inserted)));
  }
  aggregate(inserted, seqs);
  EventWriteResult out = *result;
  TALLY_TRY(upsert_aggregates(&out));
  if (options_.in_transaction) {
    TALLY_TRY(options_.in_transaction(conn_, inserted_at_positions(inserted)));
  }
  TALLY_TRY(tx->commit());
  for (std::size_t s = 0; s < staged_.size(); ++s) {
    if (inserted[s]) {
      out.outcomes[staged_[s].pos] = EventOutcome::kInserted;
      out.seqs[staged_[s].pos] = seqs[s];
      ++out.inserted;
    }
  }
  out.duplicates = indices_.size() - out.inserted;
  *result = std::move(out);
  return Status();
}

// Draws a sequence number per staged event (ascending in batch order, as the embedded engine
// numbers a commit's events), stages the events and inserts those not stored yet.
Status BatchWriter::insert_events(std::vector<std::int64_t>* seqs, std::vector<bool>* inserted) {
  auto drawn = conn_.exec(kDrawSeqs, {std::to_string(staged_.size())});
  if (!drawn) {
    return drawn.error();
  }
  TALLY_ASSERT(drawn->row_count() == staged_.size(), "one sequence number per staged event");
  std::unordered_map<std::int64_t, std::size_t> staged_of_seq;
  staged_of_seq.reserve(staged_.size());
  for (std::size_t s = 0; s < staged_.size(); ++s) {
    auto seq = parse_int(drawn->at(s, 0));
    if (!seq) {
      return seq.error();
    }
    seqs->push_back(*seq);
  }
  // One session draws ascending numbers; sorting makes the batch order explicit all the same.
  std::sort(seqs->begin(), seqs->end());
  for (std::size_t s = 0; s < staged_.size(); ++s) {
    event_rows_[s][0] = std::to_string((*seqs)[s]);
    staged_of_seq.emplace((*seqs)[s], s);
  }
  TALLY_TRY(conn_.copy_from(kCopyEvents, event_rows_).status());
  auto returned = conn_.exec(kInsertEvents, {received_at_});
  if (!returned) {
    return returned.error();
  }
  inserted->assign(staged_.size(), false);
  for (const auto& row : returned->rows) {
    auto seq = parse_int(row[0]);
    if (!seq) {
      return seq.error();
    }
    auto it = staged_of_seq.find(*seq);
    TALLY_ASSERT(it != staged_of_seq.end() && !(*inserted)[it->second],
                 "events returns each staged event it inserted once");
    (*inserted)[it->second] = true;
  }
  return Status();
}

// What the inserted events add to each meter, per minute, in batch order (so (time, seq)
// decides `latest` as AggState::add does); distinct values per minute.
void BatchWriter::aggregate(const std::vector<bool>& inserted,
                            const std::vector<std::int64_t>& seqs) {
  minutes_.clear();
  uniques_.clear();
  core::MeterInput input;
  std::string group;
  for (std::size_t s = 0; s < staged_.size(); ++s) {
    if (!inserted[s]) {
      continue;
    }
    const core::Event& e = batch_.events()[staged_[s].index];
    const std::string_view customer = batch_.text(e.customer);
    const core::TimeUs minute = core::floor_to(e.time_us, core::kUsPerMinute);
    const std::optional<EventCharge>* charge =
        options_.charges.empty() ? nullptr : &options_.charges[staged_[s].pos];
    feed_meters(meters_, options_.charge_meters, batch_, e,
                charge != nullptr && charge->has_value() ? &**charge : nullptr, input, group,
                [&](std::uint32_t m, const std::string& g, const core::MeterInput& in) {
                  minutes_[AggKey{m, customer, g, minute}].add(in.value, e.time_us,
                                                               static_cast<std::uint64_t>(seqs[s]));
                  if (meters_[m].aggregation == core::Aggregation::kUniqueCount) {
                    uniques_.emplace(m, customer, g, minute, in.unique);
                  }
                });
  }
}

Status BatchWriter::upsert_aggregates(EventWriteResult* result) {
  if (minutes_.empty()) {
    return Status();
  }
  // An hour is the merge of its minutes, as the embedded engine rolls them up.
  std::map<AggKey, core::AggState> hours;
  for (const auto& [key, state] : minutes_) {
    const auto& [m, customer, group, minute] = key;
    hours[AggKey{m, customer, group, core::floor_to(minute, core::kUsPerHour)}].merge(state);
  }
  std::vector<std::vector<pg::Value>> rows;
  rows.reserve(minutes_.size() + hours.size());
  auto add_rows = [&](const std::map<AggKey, core::AggState>& states, bool hour) {
    for (const auto& [key, st] : states) {
      const auto& [m, customer, group, bucket] = key;
      rows.push_back({hour ? "t" : "f", meters_[m].key, std::string(customer), group,
                      time_text(bucket), std::to_string(st.count), core::format_decimal(st.sum),
                      core::format_decimal(st.min), core::format_decimal(st.max),
                      core::format_decimal(st.latest), time_text(st.latest_time_us),
                      std::to_string(st.latest_seq)});
    }
  };
  add_rows(minutes_, false);
  add_rows(hours, true);
  TALLY_TRY(conn_.copy_from(kCopyAggregates, rows).status());
  TALLY_TRY(conn_.exec(upsert_sql("aggregates_minute", "NOT hour")).status());
  TALLY_TRY(conn_.exec(upsert_sql("aggregates_hour", "hour")).status());
  result->minute_rows = minutes_.size();
  result->hour_rows = hours.size();
  if (!uniques_.empty()) {
    rows.clear();
    for (const auto& [m, customer, group, minute, value] : uniques_) {
      rows.push_back(
          {meters_[m].key, std::string(customer), group, time_text(minute), std::string(value)});
    }
    TALLY_TRY(conn_.copy_from(kCopyUniques, rows).status());
    TALLY_TRY(conn_.exec(kInsertUniques).status());
    result->unique_rows = uniques_.size();
  }
  return Status();
}

// ---- the read ---------------------------------------------------------------------------------

// Aggregate rows of a range: hours in [$4, $5) and minutes in [$6, $7) or [$8, $9).
constexpr std::string_view kReadAggregates =
    "SELECT (extract(epoch FROM bucket_start) * 1000000)::bigint, count, sum, min, max, latest, "
    "(extract(epoch FROM latest_time) * 1000000)::bigint, latest_seq FROM aggregates_hour "
    "WHERE meter = $1 AND customer_id = $2 AND ($3::text IS NULL OR group_key = $3::text) "
    "AND bucket_start >= $4::timestamptz AND bucket_start < $5::timestamptz "
    "UNION ALL "
    "SELECT (extract(epoch FROM bucket_start) * 1000000)::bigint, count, sum, min, max, latest, "
    "(extract(epoch FROM latest_time) * 1000000)::bigint, latest_seq FROM aggregates_minute "
    "WHERE meter = $1 AND customer_id = $2 AND ($3::text IS NULL OR group_key = $3::text) "
    "AND ((bucket_start >= $6::timestamptz AND bucket_start < $7::timestamptz) "
    "OR (bucket_start >= $8::timestamptz AND bucket_start < $9::timestamptz)) "
    "LIMIT $10::bigint";

// Distinct values of [$4, $5), with the minute they were seen in.
constexpr std::string_view kReadUniques =
    "SELECT (extract(epoch FROM bucket_start) * 1000000)::bigint, value FROM aggregate_uniques "
    "WHERE meter = $1 AND customer_id = $2 AND ($3::text IS NULL OR group_key = $3::text) "
    "AND bucket_start >= $4::timestamptz AND bucket_start < $5::timestamptz LIMIT $6::bigint";
// The same without the minutes, each value once.
constexpr std::string_view kReadDistinctUniques =
    "SELECT DISTINCT 0::bigint, value FROM aggregate_uniques "
    "WHERE meter = $1 AND customer_id = $2 AND ($3::text IS NULL OR group_key = $3::text) "
    "AND bucket_start >= $4::timestamptz AND bucket_start < $5::timestamptz LIMIT $6::bigint";

Status too_many_rows() {
  return Status::invalid_argument(
      "the usage read has more than " + std::to_string(kUsageRowsMax) + " rows; narrow the range",
      std::string(kQueryTooLargeDetails));
}

std::string value_text(core::Aggregation a, const core::AggState& st,
                       const core::UniqueSet& uniques) {
  core::Decimal v;
  return core::aggregate_value(a, st, &uniques, &v) ? core::format_decimal(v) : std::string();
}

core::TimeUs bucket_unit(UsageBuckets b) {
  switch (b) {
    case UsageBuckets::kMinute:
      return core::kUsPerMinute;
    case UsageBuckets::kHour:
      return core::kUsPerHour;
    case UsageBuckets::kDay:
      return core::kUsPerDay;
    case UsageBuckets::kNone:
      break;
  }
  return 0;
}

}  // namespace

ChargeMeters ChargeMeters::of(std::vector<std::uint32_t> cost, std::vector<std::uint32_t> credits,
                              std::size_t meters) {
  ChargeMeters out;
  out.charged.assign(meters, false);
  for (const std::vector<std::uint32_t>* map : {&cost, &credits}) {
    for (std::uint32_t m : *map) {
      if (m != kNoChargeMeter && m < meters) {
        out.charged[m] = true;
      }
    }
  }
  out.cost = std::move(cost);
  out.credits = std::move(credits);
  return out;
}

Result<core::AggState> parse_agg_state(const std::vector<pg::Value>& row, std::size_t first) {
  TALLY_ASSERT(row.size() >= first + 7, "an aggregate state is seven columns");
  auto count = parse_int(row[first]);
  auto sum = parse_numeric(row[first + 1]);
  auto min = parse_numeric(row[first + 2]);
  auto max = parse_numeric(row[first + 3]);
  auto latest = parse_numeric(row[first + 4]);
  auto latest_time = parse_int(row[first + 5]);
  auto latest_seq = parse_int(row[first + 6]);
  for (const Status& s : {count.status(), sum.status(), min.status(), max.status(), latest.status(),
                          latest_time.status(), latest_seq.status()}) {
    TALLY_TRY(s);
  }
  core::AggState st;
  st.count = *count;
  st.sum = *sum;
  st.min = *min;
  st.max = *max;
  st.latest = *latest;
  st.latest_time_us = *latest_time;
  st.latest_seq = static_cast<std::uint64_t>(*latest_seq);
  return st;
}

Result<EventWriteResult> write_events(pg::Connection& conn, const core::EventBatch& batch,
                                      std::span<const std::uint32_t> indices,
                                      std::span<const core::MeterSpec> meters,
                                      core::TimeUs received_at_us,
                                      const EventWriteOptions& options) {
  EventWriteResult result;
  BatchWriter writer(conn, batch, indices, meters, received_at_us, options);
  TALLY_TRY(writer.prepare(&result));
  if (indices.empty()) {
    return result;
  }
  const std::uint32_t attempts_max = std::max<std::uint32_t>(1, options.attempts_max);
  std::uint32_t delay_ms = options.retry_delay_ms;
  Status last;
  for (std::uint32_t attempt = 1; attempt <= attempts_max; ++attempt) {
    if (attempt > 1) {
      std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
      delay_ms *= 2;
    }
    result.attempts = attempt;
    last = writer.attempt(&result);
    if (last.ok()) {
      return result;
    }
    if (!pg::is_retryable(last)) {
      return last;
    }
  }
  return Status(StatusCode::kUnavailable,
                "writing events failed " + std::to_string(attempts_max) +
                    " times on a serialization failure or deadlock: " + last.message(),
                last.details_json());
}

Result<Usage> read_usage(pg::Connection& conn, const core::MeterSpec& meter,
                         const UsageQuery& query) {
  Usage out;
  out.from_us = core::floor_to(query.from_us, core::kUsPerMinute);
  out.to_us = core::ceil_to(query.to_us, core::kUsPerMinute);
  if (out.to_us <= out.from_us) {
    return Status::invalid_argument("'to' must be after 'from'");
  }
  const core::TimeUs unit = bucket_unit(query.buckets);
  // Whole hours from the hour rows, unless minute buckets are asked; minutes at the edges.
  core::TimeUs hours_from = core::ceil_to(out.from_us, core::kUsPerHour);
  core::TimeUs hours_to = core::floor_to(out.to_us, core::kUsPerHour);
  if (hours_to <= hours_from || query.buckets == UsageBuckets::kMinute) {
    hours_from = hours_to = out.from_us;  // no hours: every minute of the range
  }
  const pg::Value group = query.group_key ? pg::Value(*query.group_key) : pg::Value(std::nullopt);
  const std::string limit = std::to_string(kUsageRowsMax + 1);

  // One snapshot, so the hours and minutes read agree with each other under concurrent writes.
  auto tx = pg::Transaction::begin(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  if (!tx) {
    return tx.error();
  }
  const bool has_hours = hours_from < hours_to;
  auto rows =
      conn.exec(kReadAggregates,
                {meter.key, query.customer, group, time_text(hours_from), time_text(hours_to),
                 time_text(out.from_us), time_text(has_hours ? hours_from : out.to_us),
                 time_text(has_hours ? hours_to : out.to_us), time_text(out.to_us), limit});
  if (!rows) {
    return rows.error();
  }
  if (rows->row_count() > kUsageRowsMax) {
    return too_many_rows();
  }
  std::map<core::TimeUs, UsageBucket> buckets;
  for (const auto& row : rows->rows) {
    auto start = parse_int(row[0]);
    TALLY_TRY(start.status());
    auto st = parse_agg_state(row, 1);
    TALLY_TRY(st.status());
    out.state.merge(*st);
    if (unit != 0) {
      buckets[core::floor_to(*start, unit)].state.merge(*st);
    }
  }
  if (meter.aggregation == core::Aggregation::kUniqueCount) {
    auto values = conn.exec(
        unit != 0 ? kReadUniques : kReadDistinctUniques,
        {meter.key, query.customer, group, time_text(out.from_us), time_text(out.to_us), limit});
    if (!values) {
      return values.error();
    }
    if (values->row_count() > kUsageRowsMax) {
      return too_many_rows();
    }
    for (const auto& row : values->rows) {
      TALLY_ASSERT(row[1].has_value(), "aggregate_uniques.value is NOT NULL");
      out.uniques.insert(*row[1]);
      if (unit != 0) {
        auto start = parse_int(row[0]);
        if (!start) {
          return start.error();
        }
        buckets[core::floor_to(*start, unit)].uniques.insert(*row[1]);
      }
    }
  }
  TALLY_TRY(tx->commit());
  out.value = value_text(meter.aggregation, out.state, out.uniques);
  for (auto& [start, bucket] : buckets) {
    bucket.start_us = start;
    bucket.end_us = start + unit;
    bucket.value = value_text(meter.aggregation, bucket.state, bucket.uniques);
    out.buckets.push_back(std::move(bucket));
  }
  return out;
}

}  // namespace tally::cluster
