// `tally verify` on one PostgreSQL shard (see pg_verify.h).
#include "cluster/pg_verify.h"

#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <utility>

#include "common/json_writer.h"
#include "core/aggregate.h"
#include "core/decimal.h"
#include "core/event_parse.h"
#include "core/time.h"

namespace tally::cluster {
namespace {

// Events read per FETCH.
constexpr int kChunk = 10'000;

constexpr std::string_view kEventsCursor =
    "DECLARE tally_verify NO SCROLL CURSOR FOR SELECT seq, customer_id, event_id, type, "
    "(extract(epoch FROM time) * 1000000)::bigint, quantity, "
    "coalesce(properties_text, properties::text), cost, credits "
    "FROM events ORDER BY seq";

constexpr std::string_view kStoredAggregates =
    "SELECT meter, customer_id, group_key, (extract(epoch FROM bucket_start) * 1000000)::bigint, "
    "count, sum, min, max, latest, (extract(epoch FROM latest_time) * 1000000)::bigint, "
    "latest_seq FROM ";

// meter key, customer, group, bucket start.
using Key = std::tuple<std::string, std::string, std::string, TimeUs>;
using States = std::map<Key, core::AggState>;
using Uniques = std::set<std::tuple<std::string, std::string, std::string, TimeUs, std::string>>;

core::Decimal to_decimal(const pg::Value& v) {
  core::Decimal out;
  if (v) {
    core::try_parse_decimal(*v, &out);
  }
  return out;
}

// The rows of one FETCH as an ingest body, parsed by core's own parser, so that each event
// reaches the meters with the same properties it was written with (their text as written; the
// jsonb's text for rows written before schema version 10).
Status parse_rows(const pg::QueryResult& rows, core::ParsedEvents* parsed) {
  std::string body = "[";
  for (std::size_t i = 0; i < rows.row_count(); ++i) {
    const auto& row = rows.rows[i];
    body += i == 0 ? "{\"id\":" : ",{\"id\":";
    common::append_json_string(body, row[2].value_or(""));
    body += ",\"customer_id\":";
    common::append_json_string(body, row[1].value_or(""));
    body += ",\"type\":";
    common::append_json_string(body, row[3].value_or(""));
    body += ",\"timestamp\":\"" + core::format_rfc3339(pg::int_or_zero(row[4])) + "\"";
    body += ",\"properties\":" + row[6].value_or("{}") + "}";
  }
  body += "]";
  core::ParseOptions po;
  po.now_us = 0;
  po.future_skew_us_max = std::numeric_limits<TimeUs>::max() / 2;
  po.events_max = static_cast<std::uint32_t>(rows.row_count()) + 1;
  parsed->clear();
  TALLY_TRY(core::parse_events(body, po, parsed));
  if (!parsed->errors.empty() || parsed->batch.size() != rows.row_count()) {
    return Status::corruption(
        "stored event '" + (parsed->errors.empty() ? std::string() : parsed->errors[0].id) +
        "' does not parse again: " + (parsed->errors.empty() ? "" : parsed->errors[0].message));
  }
  return Status();
}

// Feeds one chunk of events to the meters, as write_events() does (feed_meters).
void recompute(const pg::QueryResult& rows, core::ParsedEvents& parsed,
               std::span<const core::MeterSpec> meters, const ChargeMeters* charge_meters,
               const ChargeEvents& charge, States* minutes, Uniques* uniques) {
  core::EventBatch& b = parsed.batch;
  std::vector<std::uint32_t> all(b.size());
  std::vector<std::optional<EventCharge>> stored(b.size());
  for (std::size_t i = 0; i < b.size(); ++i) {
    b.events()[i].quantity = static_cast<std::uint32_t>(pg::int_or_zero(rows.rows[i][5]));
    all[i] = static_cast<std::uint32_t>(i);
    if (rows.rows[i][7]) {
      stored[i] = EventCharge{to_decimal(rows.rows[i][7]), to_decimal(rows.rows[i][8]), {}};
    }
  }
  const std::vector<std::optional<EventCharge>> charges =
      charge ? charge(b, all, stored) : std::vector<std::optional<EventCharge>>{};
  core::MeterInput input;
  std::string group;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const core::Event& e = b.events()[i];
    const auto seq = static_cast<std::uint64_t>(pg::int_or_zero(rows.rows[i][0]));
    const TimeUs minute = core::floor_to(e.time_us, core::kUsPerMinute);
    const std::string customer(b.text(e.customer));
    const EventCharge* c = i < charges.size() && charges[i] ? &*charges[i] : nullptr;
    feed_meters(meters, charge_meters, b, e, c, input, group,
                [&](std::uint32_t m, const std::string& g, const core::MeterInput& in) {
                  (*minutes)[Key{meters[m].key, customer, g, minute}].add(in.value, e.time_us, seq);
                  if (meters[m].aggregation == core::Aggregation::kUniqueCount) {
                    uniques->emplace(meters[m].key, customer, g, minute, std::string(in.unique));
                  }
                });
  }
}

std::string describe(const Key& k, std::string_view table) {
  const auto& [meter, customer, group, start] = k;
  return std::string(table) + " (" + meter + ", " + customer + ", '" + group + "', " +
         core::format_rfc3339(start) + ")";
}

std::string state_text(const core::AggState& s) {
  return "count " + std::to_string(s.count) + ", sum " + core::format_decimal(s.sum) + ", min " +
         core::format_decimal(s.min) + ", max " + core::format_decimal(s.max) + ", latest " +
         core::format_decimal(s.latest) + " at " + core::format_rfc3339(s.latest_time_us) + " #" +
         std::to_string(s.latest_seq);
}

class Report {
 public:
  Report(ShardVerify* out, std::string shard) : out_(out), shard_(std::move(shard)) {}

  void add(std::string what) {
    if (out_->differences.size() < kVerifyDifferencesMax) {
      out_->differences.push_back(shard_ + ": " + std::move(what));
    } else {
      ++more_;
    }
  }

  void finish() {
    if (more_ > 0) {
      out_->differences.push_back(shard_ + ": and " + std::to_string(more_) + " more differences");
    }
  }

 private:
  ShardVerify* out_;
  std::string shard_;
  std::uint64_t more_ = 0;
};

// Compares the stored rows of `table` with `expected`.
Status compare(pg::Connection& conn, std::string_view table, const States& expected,
               ShardVerify* out, Report* report) {
  auto rows = conn.exec(std::string(kStoredAggregates) + std::string(table));
  if (!rows) {
    return rows.error();
  }
  std::set<Key> seen;
  for (const auto& row : rows->rows) {
    Key k{row[0].value_or(""), row[1].value_or(""), row[2].value_or(""), pg::int_or_zero(row[3])};
    core::AggState stored;
    stored.count = pg::int_or_zero(row[4]);
    stored.sum = to_decimal(row[5]);
    stored.min = to_decimal(row[6]);
    stored.max = to_decimal(row[7]);
    stored.latest = to_decimal(row[8]);
    stored.latest_time_us = pg::int_or_zero(row[9]);
    stored.latest_seq = static_cast<std::uint64_t>(pg::int_or_zero(row[10]));
    ++out->aggregates;
    seen.insert(k);
    auto it = expected.find(k);
    if (it == expected.end()) {
      report->add(describe(k, table) + " is stored (" + state_text(stored) +
                  ") but no event adds up to it");
      continue;
    }
    const core::AggState& e = it->second;
    if (stored.count != e.count || stored.sum != e.sum || stored.min != e.min ||
        stored.max != e.max || stored.latest != e.latest ||
        stored.latest_time_us != e.latest_time_us || stored.latest_seq != e.latest_seq) {
      report->add(describe(k, table) + " holds " + state_text(stored) + "; its events add up to " +
                  state_text(e));
    }
  }
  for (const auto& [k, st] : expected) {
    if (seen.count(k) == 0) {
      report->add(describe(k, table) + " is missing; its events add up to " + state_text(st));
    }
  }
  return Status();
}

Status compare_uniques(pg::Connection& conn, const Uniques& expected, Report* report) {
  auto rows = conn.exec(
      "SELECT meter, customer_id, group_key, (extract(epoch FROM bucket_start) * 1000000)::bigint, "
      "value FROM aggregate_uniques");
  if (!rows) {
    return rows.error();
  }
  Uniques stored;
  for (const auto& row : rows->rows) {
    stored.emplace(row[0].value_or(""), row[1].value_or(""), row[2].value_or(""),
                   pg::int_or_zero(row[3]), row[4].value_or(""));
  }
  for (const auto& u : stored) {
    if (expected.count(u) == 0) {
      report->add("aggregate_uniques holds '" + std::get<4>(u) + "' of " + std::get<0>(u) + "/" +
                  std::get<1>(u) + " that no event carries");
    }
  }
  for (const auto& u : expected) {
    if (stored.count(u) == 0) {
      report->add("aggregate_uniques lacks '" + std::get<4>(u) + "' of " + std::get<0>(u) + "/" +
                  std::get<1>(u));
    }
  }
  return Status();
}

// A row of a breach of the chain: customer, seq, balance_before, the previous balance_after
// (0 for the first), amount, balance_after.
constexpr std::string_view kChainBreaks =
    "SELECT customer_id, seq, balance_before::text, previous::text, amount::text, "
    "balance_after::text FROM (SELECT customer_id, seq, balance_before, amount, balance_after, "
    "coalesce(lag(balance_after) OVER (PARTITION BY customer_id ORDER BY seq), 0) AS previous "
    "FROM ledger) AS t WHERE balance_before <> previous OR balance_before + amount <> "
    "balance_after ORDER BY customer_id, seq LIMIT $1::bigint";
constexpr std::string_view kWalletSums =
    "SELECT w.customer_id, w.balance::text, coalesce(l.total, 0)::text FROM wallets AS w LEFT "
    "JOIN (SELECT customer_id, sum(amount) AS total FROM ledger GROUP BY customer_id) AS l "
    "USING (customer_id) WHERE w.balance <> coalesce(l.total, 0) ORDER BY w.customer_id "
    "LIMIT $1::bigint";
// An event's credits and its burns' (or refund's) amounts, where they do not cancel out.
constexpr std::string_view kUnmatchedBurns =
    "SELECT coalesce(e.customer_id, b.customer_id), coalesce(e.event_id, b.event_id), "
    "coalesce(e.credits::text, 'none'), coalesce(b.amount::text, 'none'), coalesce(b.n, 0) FROM "
    "(SELECT customer_id, event_id, credits FROM events WHERE credits <> 0) AS e FULL JOIN "
    "(SELECT customer_id, event_id, sum(amount) AS amount, count(*) AS n FROM ledger WHERE "
    "type = 'burn' OR (type = 'refund' AND event_id <> '') GROUP BY customer_id, event_id) AS b "
    "ON e.customer_id = b.customer_id AND e.event_id = b.event_id "
    "WHERE e.event_id IS NULL OR b.event_id IS NULL OR e.credits + b.amount <> 0 OR b.n <> 1 "
    "ORDER BY 1, 2 LIMIT $1::bigint";

Status compare_ledger(pg::Connection& conn, ShardVerify* out, Report* report) {
  const std::string limit = std::to_string(kVerifyDifferencesMax);
  auto count = conn.exec("SELECT count(*) FROM ledger");
  if (!count) {
    return count.error();
  }
  out->transactions = static_cast<std::uint64_t>(pg::int_or_zero(count->at(0, 0)));
  auto breaks = conn.exec(kChainBreaks, {limit});
  if (!breaks) {
    return breaks.error();
  }
  for (const auto& row : breaks->rows) {
    report->add("ledger of customer '" + row[0].value_or("") + "', txn_" + row[1].value_or("") +
                ": balance_before " + row[2].value_or("") + " after a balance of " +
                row[3].value_or("") + ", amount " + row[4].value_or("") + ", balance_after " +
                row[5].value_or(""));
  }
  auto sums = conn.exec(kWalletSums, {limit});
  if (!sums) {
    return sums.error();
  }
  for (const auto& row : sums->rows) {
    report->add("wallet of customer '" + row[0].value_or("") + "': balance " + row[1].value_or("") +
                ", its transactions sum to " + row[2].value_or(""));
  }
  auto burns = conn.exec(kUnmatchedBurns, {limit});
  if (!burns) {
    return burns.error();
  }
  for (const auto& row : burns->rows) {
    report->add("event '" + row[1].value_or("") + "' of customer '" + row[0].value_or("") +
                "': credits " + row[2].value_or("") + ", " + row[4].value_or("0") + " burns of " +
                row[3].value_or(""));
  }
  return Status();
}

}  // namespace

Result<ShardVerify> verify_shard(pg::Connection& conn, std::span<const core::MeterSpec> meters,
                                 const std::string& shard, const ChargeMeters* charge_meters,
                                 const ChargeEvents& charge) {
  ShardVerify out;
  Report report(&out, shard);
  auto txn = pg::Transaction::begin(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
  if (!txn) {
    return txn.error();
  }
  TALLY_TRY(conn.exec(kEventsCursor).status());
  States minutes;
  Uniques uniques;
  core::ParsedEvents parsed;
  for (;;) {
    auto rows = conn.exec("FETCH " + std::to_string(kChunk) + " FROM tally_verify");
    if (!rows) {
      return rows.error();
    }
    if (rows->row_count() == 0) {
      break;
    }
    out.events += rows->row_count();
    TALLY_TRY(parse_rows(*rows, &parsed));
    recompute(*rows, parsed, meters, charge_meters, charge, &minutes, &uniques);
  }
  // An hour is the merge of its minutes, as write_events() rolls them up.
  States hours;
  for (const auto& [k, st] : minutes) {
    const auto& [meter, customer, group, minute] = k;
    hours[Key{meter, customer, group, core::floor_to(minute, core::kUsPerHour)}].merge(st);
  }
  TALLY_TRY(compare(conn, "aggregates_minute", minutes, &out, &report));
  TALLY_TRY(compare(conn, "aggregates_hour", hours, &out, &report));
  TALLY_TRY(compare_uniques(conn, uniques, &report));
  TALLY_TRY(compare_ledger(conn, &out, &report));
  TALLY_TRY(txn->commit());
  report.finish();
  return out;
}

}  // namespace tally::cluster
