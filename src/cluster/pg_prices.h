// The units a tiered price has counted in a customer's billing period, in PostgreSQL (table
// price_usage, schema version 7 of src/pg/schema.cc), for the scale-out mode's pricing of the
// models whose charge depends on the units before an event in its period (graduated, volume,
// package, flat: core::price_is_tiered). One row per (customer, price, period start).
//
// The engine prices such events inside write_events' transaction (EventWriteOptions::
// before_aggregates), after they are inserted: lock_price_usage locks the rows of the periods
// they fall in (created at 0 when missing), every node taking the locks in one order (customer,
// price, period start, as PostgreSQL sorts them) after the events' and before the aggregates'
// and wallets', so nodes charging one customer's period take turns and each charge counts the
// units every committed write before it counted; store_price_usage writes the new units and
// set_event_charges the events' new cost and credits before the transaction commits. A
// duplicate event is not inserted, so it counts no units and is charged nothing.
//
// Thread safety: the functions use only the given connection (see pg/connection.h).
#pragma once

#include <string>
#include <tuple>
#include <vector>

#include "core/decimal.h"
#include "core/time.h"
#include "pg/connection.h"
#include "tally/status.h"

namespace tally::cluster {

// A billing period of a customer for one price (the price's key, engine/catalog.h PriceState).
struct PeriodKey {
  std::string customer;
  std::string price;
  core::TimeUs period_start_us = 0;

  friend bool operator<(const PeriodKey& a, const PeriodKey& b) {
    return std::tie(a.customer, a.price, a.period_start_us) <
           std::tie(b.customer, b.price, b.period_start_us);
  }
};

// Locks the rows of `keys` (distinct; created with 0 units when missing) until the open
// transaction ends, and returns the units of each, in keys' order. REQUIRES: a transaction is
// open on `conn`. Errors: the connection's.
Result<std::vector<core::Decimal>> lock_price_usage(pg::Connection& conn,
                                                    const std::vector<PeriodKey>& keys);

// Sets the units of `keys` (locked by lock_price_usage in the open transaction).
Status store_price_usage(pg::Connection& conn, const std::vector<PeriodKey>& keys,
                         const std::vector<core::Decimal>& units);

// The units of one period as committed now (0 when none), without a lock: a check's estimate.
Result<core::Decimal> read_price_usage(pg::Connection& conn, const PeriodKey& key);

// An event's charge, by its (customer, id).
struct ChargedEvent {
  std::string customer;
  std::string event_id;
  core::Decimal cost;
  core::Decimal credits;
};

// Sets the cost and credits of the stored events named (in the open transaction).
Status set_event_charges(pg::Connection& conn, const std::vector<ChargedEvent>& events);

}  // namespace tally::cluster
