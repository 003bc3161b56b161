// Open reservations of the scale-out mode, in PostgreSQL (docs/cluster.md, "Reservations").
//
// A reservation (a check with consume = "reserve") holds its amount on the customer's counters
// in Redis, like a consumption, and is answered once its row is committed here, on the
// customer's shard. Closing it (commit, release or expiry) deletes the row with `DELETE ...
// RETURNING`: whichever node deletes it closes it, once, across every node; the others find
// nothing (404). Expired rows are taken by any node with `FOR UPDATE SKIP LOCKED`, so two nodes
// sweeping at once never take the same row. Times are microseconds since the epoch (the
// engine's clock), stored as timestamptz.
//
// Thread safety: the functions use the given connection only (see pg/connection.h).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "core/decimal.h"
#include "pg/connection.h"
#include "tally/status.h"
#include "tally/types.h"

namespace tally::cluster {

struct ReservationRow {
  std::string id;
  std::string customer;
  std::string meter;
  core::Decimal amount;
  std::string event_id;  // the check's, or ""
  std::vector<std::pair<std::string, std::string>> properties;
  TimeUs created_us = 0;
  TimeUs expires_us = 0;
};

// Stores an open reservation. Errors: kAlreadyExists for an id already stored; the connection's.
Status insert_reservation(pg::Connection& conn, const ReservationRow& r);

// The open reservation `id` (of `customer` when not empty), or nullopt.
Result<std::optional<ReservationRow>> find_reservation(pg::Connection& conn, std::string_view id,
                                                       std::string_view customer);

// Deletes the open reservation `id` (of `customer` when not empty) and returns it, or nullopt
// when there is none (never stored, or closed by another call).
Result<std::optional<ReservationRow>> take_reservation(pg::Connection& conn, std::string_view id,
                                                       std::string_view customer);

// Deletes up to `limit` reservations whose expiry is at or before `now_us` and returns them,
// skipping rows another transaction holds.
Result<std::vector<ReservationRow>> take_expired_reservations(pg::Connection& conn, TimeUs now_us,
                                                              int limit);

}  // namespace tally::cluster
