// Alerts of the scale-out mode and their webhook outbox, in PostgreSQL (docs/cluster.md,
// "Alerts and the shared webhook outbox").
//
// Both tables live on shard 0, the cluster's home shard (as API keys do), so an alert's id
// ("alrt_<n>", n its row's identity) is unique across the cluster and one table holds every
// node's deliveries. An alert is inserted once per customer, meter, period, window and threshold
// across every node: the constraint `alerts_once` decides (`ON CONFLICT ... DO NOTHING`), and
// the deliveries of an alert are inserted in the same transaction as the alert, only when the
// alert was (so a node that loses the race adds no delivery).
//
// Deliveries are claimed by one node at a time: claim_deliveries marks up to n due, pending,
// unclaimed (or claimed with an expired lease) rows as this node's until now + lease, choosing
// them with `FOR UPDATE SKIP LOCKED`, so two nodes claiming at once never take the same row.
// record_attempt writes an attempt only for a row still pending and claimed by the recording
// node, and releases the claim. A node that dies holding a claim leaves it to expire; another
// node then takes the row (delivery is at least once, as in the embedded store: receivers
// deduplicate by the delivery id). Times are the callers' clocks (the sender's `now`),
// microseconds since the epoch; nodes' clocks are assumed to agree well within a lease.
//
// Thread safety: the functions use the given connection only (see pg/connection.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pg/connection.h"
#include "tally/status.h"
#include "tally/types.h"

namespace tally::cluster {

// "alrt_<n>" for alert row n, and back (nullopt for an id not of that form).
std::string alert_id_of(std::int64_t row);
std::optional<std::int64_t> alert_row_of(std::string_view id);

// An alert to insert (kind "limit"; id and deliveries ignored) and where it is delivered:
// (index in [[webhooks]] or [[notifications]], url).
struct NewAlert {
  Alert alert;
  std::vector<std::pair<std::uint32_t, std::string>> destinations;
};

// Inserts each alert that no node inserted before (alerts_once), created at `now_us`, with one
// pending delivery due at `now_us` per destination, in one transaction. Returns the alerts
// inserted, with their ids and deliveries. Errors: the connection's (nothing inserted).
Result<std::vector<Alert>> insert_alerts(pg::Connection& conn, const std::vector<NewAlert>& alerts,
                                         TimeUs now_us);

// Which alerts to list: after row `after_row`, oldest first, at most `rows_max` rows, of one
// customer ("" = all), of one level, created in [from_us, to_us) (to_us 0 = no bound).
struct AlertFilter {
  std::int64_t after_row = 0;
  std::size_t rows_max = 100;
  std::string customer;
  std::optional<AlertLevel> level;
  TimeUs from_us = 0;
  TimeUs to_us = 0;
};

// The alerts of `filter`, each with its row number and its deliveries (by id).
Result<std::vector<std::pair<std::int64_t, Alert>>> list_alerts(pg::Connection& conn,
                                                                const AlertFilter& filter);

// The alert of row `row` with its deliveries, or nullopt.
Result<std::optional<Alert>> find_alert(pg::Connection& conn, std::int64_t row);

// Claims for `node` up to `max` pending deliveries due at `now_us` whose claim is free or
// expired, until now_us + lease_us, oldest first. *next_due_us: when nothing was claimed, the
// earliest next attempt of a pending delivery not claimed by a live lease (0 = none).
Result<std::vector<WebhookDelivery>> claim_deliveries(pg::Connection& conn, const std::string& node,
                                                      TimeUs now_us, TimeUs lease_us,
                                                      std::size_t max, TimeUs* next_due_us);

// Records `attempt` on a delivery pending and claimed by `node`, releasing the claim: delivered,
// failed (next_attempt_at_us 0) or due again at next_attempt_at_us. Errors: kNotFound for an
// unknown delivery; kAlreadyExists when it is no longer pending or another node holds it now
// (its lease expired and it was taken: that node's attempt counts).
Status record_attempt(pg::Connection& conn, const std::string& node,
                      const DeliveryAttempt& attempt);

}  // namespace tally::cluster
