// The scale-out mode's event and aggregate writes, and its usage reads, in PostgreSQL
// (docs/cluster.md, "Events and aggregates in PostgreSQL"; schema version 1 of src/pg/schema.cc).
//
// write_events() is the ingest write of one batch on one shard, as ONE transaction:
//   1. the events are deduplicated inside the batch in memory (the first of an id counts), given
//      sequence numbers from the `events.seq` identity in batch order (one round trip), and
//      COPYed into a temporary staging table (created once per pg::Connection, before its
//      first write's transaction, and emptied by every commit: ON COMMIT DELETE ROWS);
//   2. `INSERT INTO events ... SELECT ... FROM staging ORDER BY customer_id, event_id
//      ON CONFLICT ON CONSTRAINT events_dedup DO NOTHING RETURNING seq`: the unique constraint,
//      not any node's memory, decides which events are new, across every node;
//   3. for the inserted events only, what each adds to each meter (core::meter_accepts) is
//      pre-aggregated in memory into one core::AggState per (meter, customer, group, minute)
//      and per hour, and one row per distinct value of a unique_count meter and minute;
//   4. those rows are COPYed into a staging table and upserted with `INSERT ... SELECT ...
//      ORDER BY <key> ON CONFLICT (<key>) DO UPDATE` combining them as AggState::merge does
//      (count and sum added, least min, greatest max, latest by (time, seq)); distinct values
//      with ON CONFLICT DO NOTHING. Never one statement per event;
//   (between 2 and 3, options.before_aggregates, when given: the engine's tiered prices)
//   5. options.in_transaction, when given, runs last (the engine's credit burns of the inserted
//      events: wallet rows locked in customer order, ledger rows; engine/cluster_wallets.cc).
// Every node takes its row locks in the same order (events by (customer, id), then minute rows,
// then hour rows, then distinct values, each sorted by key, then wallets), so two nodes writing
// the same rows wait for each other instead of deadlocking; should PostgreSQL still report a
// serialization failure or a deadlock (pg::is_retryable), the whole transaction runs again, a
// bounded number of times. Any failure rolls the transaction back: nothing of the batch is written.
//
// `latest` is ordered by (event time, events.seq) as in the embedded engine, where an event's
// sequence number follows the batch order; here it comes from the table's identity, so a
// recomputation from the events table gives the stored aggregates exactly.
//
// read_usage() reads a meter's aggregate for one customer over [from, to) (aligned to whole
// minutes as Engine::query aligns them) in one REPEATABLE READ snapshot: whole hours from
// aggregates_hour, the partial hours at both ends from aggregates_minute, distinct values from
// aggregate_uniques; optionally per minute, hour or UTC day.
//
// Thread safety: the functions use only the given connection (one per thread; see
// pg/connection.h). Distinct connections may write the same rows at once.
// REQUIRES (both functions): no transaction is open on the connection; each opens its own.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "core/aggregate.h"
#include "core/event.h"
#include "core/meter.h"
#include "core/time.h"
#include "pg/connection.h"
#include "tally/status.h"

namespace tally::cluster {

// At most this many events in one write_events call (its memory and its transaction's size).
inline constexpr std::size_t kWriteEventsMax = 100'000;
// At most this many rows (aggregate rows and distinct values) read by one read_usage call.
inline constexpr std::size_t kUsageRowsMax = 1'000'000;

enum class EventOutcome : std::uint8_t {
  kInserted,   // new: stored, and added to its meters' aggregates
  kDuplicate,  // its (customer, id) was stored already, or came earlier in the same batch
};

// What an event is charged for one priced meter that accepts it: the meter's index in
// write_events' `meters`, and the cost and credits its price gives.
struct MeterCharge {
  std::uint32_t meter = 0;
  core::Decimal cost;
  core::Decimal credits;
};

// What an event is charged by its prices (the engine prices it: engine/price_match.h): the sums
// over its priced meters, stored in its events row's cost and credits, and each meter's part,
// added to that meter's charge meters (ChargeMeters).
struct EventCharge {
  core::Decimal cost;
  core::Decimal credits;
  std::vector<MeterCharge> meters;
};

inline constexpr std::uint32_t kNoChargeMeter = ~std::uint32_t{0};

// The meters fed by pricing rather than by events, as the embedded engine's hidden cost and
// credits meters (engine/catalog.h): per meter of `meters` (by index), the index in `meters` of
// the sum meter of its cost and of its credits, or kNoChargeMeter; empty: no such meters. A
// charge meter is never fed by core::meter_accepts: each inserted event adds its MeterCharge's
// cost (credits) to its meter's cost (credits) meter, under the group and minute that meter
// gives the event, with the event's time and sequence number.
struct ChargeMeters {
  std::vector<std::uint32_t> cost;
  std::vector<std::uint32_t> credits;
  std::vector<bool> charged;  // per meter of `meters` (or empty): a charge meter

  bool is_charge_meter(std::uint32_t m) const { return m < charged.size() && charged[m]; }

  // From the two per-meter maps (charged is derived).
  static ChargeMeters of(std::vector<std::uint32_t> cost, std::vector<std::uint32_t> credits,
                         std::size_t meters);
};

// What event `e` of `b` adds to `meters`, as write_events and `tally verify` feed them: calls
// add(meter index, group, input) for each meter core::meter_accepts accepts (charge meters
// excepted), then, when `charge` has that meter's part, add(cost meter, group, cost) and
// add(credits meter, group, credits) with the same group (input.unique empty).
template <class Add>
void feed_meters(std::span<const core::MeterSpec> meters, const ChargeMeters* charge_meters,
                 const core::EventBatch& b, const core::Event& e, const EventCharge* charge,
                 core::MeterInput& input, std::string& group, Add&& add) {
  for (std::uint32_t m = 0; m < meters.size(); ++m) {
    if ((charge_meters != nullptr && charge_meters->is_charge_meter(m)) ||
        !core::meter_accepts(meters[m], b, e, &input, &group)) {
      continue;
    }
    add(m, group, input);
    if (charge == nullptr || charge_meters == nullptr || m >= charge_meters->cost.size() ||
        charge_meters->cost[m] == kNoChargeMeter) {
      continue;
    }
    for (const MeterCharge& mc : charge->meters) {
      if (mc.meter != m) {
        continue;
      }
      core::MeterInput priced;
      priced.value = mc.cost;
      add(charge_meters->cost[m], group, priced);
      priced.value = mc.credits;
      add(charge_meters->credits[m], group, priced);
    }
  }
}

struct EventWriteOptions {
  // Per entry of `indices`: the event's charge, or nullopt for an event no price charges (cost
  // and credits NULL). Empty: no event is charged. Otherwise its size must be indices' size.
  std::span<const std::optional<EventCharge>> charges;
  // The meters of `meters` fed by the charges (see ChargeMeters); null: none.
  const ChargeMeters* charge_meters = nullptr;
  // Runs inside the transaction after the events are inserted and before the aggregates are
  // computed, given per entry of `indices` whether that event was inserted now: it may change
  // the entries of the charges `charges` views (the caller owns them; their count stays) of
  // inserted events, which the aggregates and in_transaction then read, and store them in the
  // events' rows (the engine's tiered prices: cluster/pg_prices.h). Its row locks come after
  // the events' and before the aggregates'; an error rolls back as in_transaction's does.
  std::function<Status(pg::Connection&, const std::vector<bool>& inserted)> before_aggregates;
  // Runs inside the transaction after the events and aggregates are written, before COMMIT,
  // given per entry of `indices` whether that event was inserted now (each (customer, id) is
  // inserted at most once across every node, so what it does for inserted events happens
  // once). An error from it rolls the whole transaction back; a retryable one
  // (pg::is_retryable) runs the transaction, and it, again. It takes its row locks after the
  // aggregates', in an order every caller shares.
  std::function<Status(pg::Connection&, const std::vector<bool>& inserted)> in_transaction;
  // Runs of the whole transaction when PostgreSQL reports a serialization failure or a deadlock
  // (pg::is_retryable); at least 1.
  std::uint32_t attempts_max = 5;
  // Waited before the second run, doubled before each later one.
  std::uint32_t retry_delay_ms = 5;
};

struct EventWriteResult {
  // Per entry of `indices`, in its order.
  std::vector<EventOutcome> outcomes;
  // Per entry of `indices`: the event's events.seq when inserted, 0 for a duplicate.
  std::vector<std::int64_t> seqs;
  std::uint64_t inserted = 0;
  std::uint64_t duplicates = 0;
  // Rows upserted by the transaction that committed.
  std::uint64_t minute_rows = 0;
  std::uint64_t hour_rows = 0;
  std::uint64_t unique_rows = 0;  // distinct values offered (those already stored are skipped)
  std::uint32_t attempts = 0;     // transactions run: 1 unless a retryable failure was met
};

// Writes the events of `batch` named by `indices` (each at most once in the batch's order of
// `indices`), received at `received_at_us`, with their meters' aggregates, in one transaction
// (see the header comment). `meters` are every meter of the catalog: each event feeds those
// core::meter_accepts accepts. An event's properties are stored in the jsonb column as a JSON
// object (numbers as the JSON number text sent, strings escaped, booleans, null); its
// quantity is Event::quantity; cost and credits are options.charges' (NULL without one) and
// suspended is false.
// Errors (nothing written in every case): kInvalidArgument (nothing sent) for an index out of
// range, charges of another size than indices, or a text with a NUL byte, which PostgreSQL text
// cannot hold; kPayloadTooLarge (nothing sent) for more than kWriteEventsMax indices; kUnavailable
// when the connection is lost (the outcome of a COMMIT in flight is unknown: writing the batch
// again is safe, its events then come back as duplicates) or when every attempt met a retryable
// failure; a server error's own mapping (pg/connection.h), e.g. kUnprocessable for an event that
// breaks a constraint (quantity 0) and kInvalidArgument for an aggregate out of numeric(38, 9)'s
// range; options.in_transaction's own.
Result<EventWriteResult> write_events(pg::Connection& conn, const core::EventBatch& batch,
                                      std::span<const std::uint32_t> indices,
                                      std::span<const core::MeterSpec> meters,
                                      core::TimeUs received_at_us,
                                      const EventWriteOptions& options = {});

// Per-bucket rows of a usage read (besides the total).
enum class UsageBuckets : std::uint8_t { kNone, kMinute, kHour, kDay };

struct UsageQuery {
  std::string customer;
  // One group (its group_by values joined by U+001F, as core::meter_accepts makes it), or every
  // group when nullopt.
  std::optional<std::string> group_key;
  core::TimeUs from_us = 0;  // aligned down to a minute
  core::TimeUs to_us = 0;    // aligned up to a minute
  UsageBuckets buckets = UsageBuckets::kNone;
};

struct UsageBucket {
  core::TimeUs start_us = 0;  // the bucket's own bounds (a UTC minute, hour or day), which
  core::TimeUs end_us = 0;    // may reach outside the range; its state covers the range only
  core::AggState state;
  core::UniqueSet uniques;  // unique_count meters
  std::string value;        // core::aggregate_value as decimal text; "" = no value
};

struct Usage {
  core::TimeUs from_us = 0;  // the aligned range
  core::TimeUs to_us = 0;
  core::AggState state;     // every group's state over the range, combined
  core::UniqueSet uniques;  // unique_count meters: the distinct values over the range
  std::string value;        // core::aggregate_value as decimal text; "" = no value (as QueryRow)
  std::vector<UsageBucket> buckets;  // buckets with data, in time order
};

// An aggregate state from the seven columns of `row` from `first` on: count, sum, min, max,
// latest, latest_time (microseconds since the epoch), latest_seq, as the aggregate tables hold
// them. Errors: kInternal for a NULL or a column that is not a number; kInvalidArgument for a
// number outside core::Decimal's range.
Result<core::AggState> parse_agg_state(const std::vector<pg::Value>& row, std::size_t first);

// Reads `meter`'s usage for one customer (see the header comment). A customer or meter with no
// rows reads as an empty state (value "0" for count, sum and unique_count; "" otherwise).
// Errors: kInvalidArgument when `to` is not after `from` (after aligning), or when more than
// kUsageRowsMax rows would be read (details kQueryTooLargeDetails: narrow the range); the
// connection's errors.
Result<Usage> read_usage(pg::Connection& conn, const core::MeterSpec& meter,
                         const UsageQuery& query);

}  // namespace tally::cluster
