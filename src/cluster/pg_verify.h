// `tally verify` on one PostgreSQL shard of the scale-out mode (docs/cluster.md, "Verify"):
// proves that the stored aggregates are exactly what the stored events add up to.
//
// In one REPEATABLE READ READ ONLY snapshot, the shard's events are read in sequence order
// through a cursor, in chunks, and fed to every meter as write_events() feeds them
// (core::meter_accepts, core::AggState::add with the event's time and sequence number); the
// minute states so recomputed, their hour roll-ups and the distinct values of unique_count
// meters are then compared with every row of aggregates_minute, aggregates_hour and
// aggregate_uniques: a row missing, a row too many, or a row with another count, sum, min, max
// or latest is a difference. Memory: the recomputed aggregates of the shard.
//
// In the same snapshot, the credits: each customer's ledger, in sequence order, is a chain
// (balance_before is the previous balance_after, 0 for the first; balance_before + amount =
// balance_after), each wallet's balance is the sum of its ledger's amounts, and each event
// charged credits has its burn (or, for negative credits, its refund) of exactly that many,
// while each burn names a stored event charged them. Each check is one query; at most
// kVerifyDifferencesMax rows of each are reported.
//
// Thread safety: uses the given connection only (see pg/connection.h).
// REQUIRES: no transaction is open on the connection.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "cluster/pg_events.h"
#include "core/meter.h"
#include "pg/connection.h"
#include "tally/status.h"

namespace tally::cluster {

struct ShardVerify {
  std::uint64_t events = 0;
  std::uint64_t aggregates = 0;          // minute and hour rows compared
  std::uint64_t transactions = 0;        // ledger rows checked
  std::vector<std::string> differences;  // at most kVerifyDifferencesMax, then a count
};

inline constexpr std::size_t kVerifyDifferencesMax = 100;

// What the events of `indices` of a batch are charged, one entry per index (nullopt: nothing);
// empty when no event is. The engine's pricing (engine/cluster_prices.cc), given what each
// event's row says it was charged in all (`stored`, per index: cost and credits, no meters).
using ChargeEvents = std::function<std::vector<std::optional<EventCharge>>(
    const core::EventBatch&, std::span<const std::uint32_t>,
    std::span<const std::optional<EventCharge>> stored)>;

// Verifies one shard (see the file comment); `shard` names it in the differences. The charge
// meters of `meters` (charge_meters, null: none) are recomputed from what `charge` gives each
// event, as write_events feeds them.
// Errors: the connection's (nothing is changed either way).
Result<ShardVerify> verify_shard(pg::Connection& conn, std::span<const core::MeterSpec> meters,
                                 const std::string& shard,
                                 const ChargeMeters* charge_meters = nullptr,
                                 const ChargeEvents& charge = {});

}  // namespace tally::cluster
