// The scale-out mode's listing of stored events (GET /v1/events, exports of events): one page of
// one PostgreSQL shard's events, read through indexes (docs/cluster.md, "Listing events").
//
// Order: customers by (created_at, id), each customer's events by events.seq (the order they
// were stored), which is the embedded store's order (customers by creation, events by sequence)
// wherever customers were created at distinct instants. A page starts after a position (a
// customer's created_at and id, and a seq) and holds at most `limit` events, so the pages of
// every shard merge into one page of the same order (engine/cluster_events.cc).
//
// Plan (schema version 8): a nested loop over the `customers_created` index (created_at, id)
// from the position on, each customer's events read by the `events_customer_seq` index
// (customer_id, seq) with an inner LIMIT, the whole under the page's LIMIT: a page reads about
// `limit` events and the customers they belong to, not the table. The type and time filters are
// applied to the rows the index gives (a sparse filter reads more of them). EXPLAIN ANALYZE on
// PostgreSQL 15, one shard of 2,000 customers and 1,000,000 events (one customer with 400,000),
// pages of 101 rows: every customer from the start or after a cursor, Limit <- Incremental Sort
// (presorted by created_at, id) <- Nested Loop (Index Only Scan using customers_created; Limit
// <- Index Scan using events_customer_seq), 1.2-1.5 ms; with a type and a two-hour range, the
// inner scan uses events_customer_time instead, 0.6 ms; one customer, Index Scan using
// customers_pkey, then events_customer_seq, 0.9 ms (1,001 rows of the big customer: 11 ms);
// the big customer's rare type (100 of its 400,000 events) reads all of them, 115 ms.
//
// Properties come back in the order and with the number texts they were sent with
// (events.properties_text, written by write_events from schema version 8 on); rows written
// before it have only the jsonb, whose key order (by length, then bytes) they then take.
//
// Thread safety: uses only the given connection.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pg/connection.h"
#include "tally/status.h"
#include "tally/types.h"

namespace tally::cluster {

// A position in the listing order: after this customer's event `seq`.
struct EventPosition {
  TimeUs created_at_us = 0;  // the customer's
  std::string customer;
  std::int64_t seq = 0;
};

struct EventListRead {
  std::string customer;  // "" = every customer of the shard
  std::string type;      // "" = every type
  TimeUs from_us = 0;
  TimeUs to_us = 0;  // 0 = no upper bound
  std::uint32_t limit = 100;
  // Only events after it; nullopt = from the start.
  std::optional<EventPosition> after;
};

struct ListedEvent {
  EventPosition position;
  StoredEvent event;  // seq is events.seq, this shard's
};

// Up to read.limit events of the shard after read.after, in the listing order.
// Errors: the connection's; kCorruption for a stored row that cannot be read back.
Result<std::vector<ListedEvent>> list_events(pg::Connection& conn, const EventListRead& read);

// True when `a` comes before `b` in the listing order.
bool before(const EventPosition& a, const EventPosition& b);

}  // namespace tally::cluster
