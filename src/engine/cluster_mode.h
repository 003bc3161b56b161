// The engine in the scale-out mode (docs/cluster.md): a stateless node over PostgreSQL shards
// (customers, keys, events, aggregates) and a Redis Cluster (limit counters), chosen by a
// `[cluster]` section in the configuration. Engine's methods hand their work here when the mode
// is on (Engine::Impl::cluster); what the mode does not do yet they answer with
// kNotImplemented (HTTP 501), never with a silent difference.
//
// What a node does:
//  - customers and keys: rows of the customer's shard (keys: shard 0), read through on every
//    call; authentication keeps what it read for kAuthCacheUs, so a key revoked (or a customer
//    suspended) on another node is refused here within that time (on this node at once);
//  - ingest: the request is parsed as in the embedded mode and its events split by shard, and
//    within a shard by lane (kWriterLanes, a hash of the customer id); each lane's writer thread
//    writes every request part waiting for it in one transaction (cluster::write_events,
//    duplicates decided by PostgreSQL's unique constraint); the answer (202) comes after every
//    part committed. Customers are created on first use as in the embedded
//    mode (auto_create_customers);
//  - queries: a meter's usage of one or every customer, by group_by and filter, whole or by
//    window in any zone, aggregated on every shard at once (cluster::read_grouped) and merged
//    as the embedded store answers (cluster_query.cc);
//  - listing events (and exports of events): read from the events table of every shard at once
//    through indexes, merged in the listing order (cluster_events.cc);
//  - checks: the customer's plan limits on a count or sum meter, checked and consumed across
//    every node by one Redis function call (cluster::RedisLimits), or, with [cluster]
//    check_lease, answered from a lease of the counters the node took (cluster_leases.h); the
//    consumption is then written to PostgreSQL as a usage event by the usage writer, in batches
//    (checks that add up merged into one event: merged_usage), so usage and queries include it
//    within the flush interval (kUsageFlush), like the embedded mode's check_durability =
//    "async"; with [enforcement] check_sync the check answers after it. A batch is all or
//    nothing: a denied check and what the others consumed is taken back. Checks on latest and
//    max meters are decided in PostgreSQL under a lock of (customer, meter) (cluster_gauge.cc);
//  - ad-hoc limits (POST /v1/ratelimit): a fixed window's counter per namespace, identifier and
//    duration in Redis, decided and added by one function call (cluster_adhoc.cc);
//  - alerts: the thresholds of a customer's calendar limits, evaluated off the request path
//    after checks and ingest change usage, inserted once across every node by PostgreSQL's
//    unique constraint with their deliveries (shard 0); every node's webhook sender claims due
//    deliveries from that shared outbox for a lease (cluster_alerts.cc, cluster/pg_alerts.h);
//  - the audit log: the embedded store's records (audit.h) on shard 0, in the change's
//    transaction when the change is there, else right after it (cluster_mode.cc);
//  - period resets: stored in the customer's row, its window counters of the meter set to 0 in
//    Redis before the reset commits, so every node counts from it at once (cluster_mode.cc);
//  - the denial history: denied checks counted per customer and minute in Redis by every node
//    (cluster_denials.cc).
//
// Thread safety: every method may be called from any thread. Connections are leased from
// per-shard pools; Redis clients from a pool of their own (one client per thread at a time).
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "core/aggregate.h"
#include "engine/catalog.h"
#include "engine/series.h"
#include "tally/clock.h"
#include "tally/engine.h"

namespace tally::engine {

class ClusterMode {
 public:
  // Connects to every PostgreSQL shard (checking its schema: a shard that needs `tally
  // migrate`, or that a newer Tally migrated, is refused naming it) and to the Redis Cluster
  // (loading the limit function). `catalog` and `config` must outlive the node. Errors:
  // kUnavailable for a server that cannot be reached; kInvalidArgument for a schema this
  // binary cannot serve, or a configuration the mode cannot honour yet (two tiered-priced meters of
  // one event type, API-key rate limits): it says which.
  static Result<std::unique_ptr<ClusterMode>> open(const config::Config& config,
                                                   const Catalog& catalog, const Clock& clock);
  ~ClusterMode();
  ClusterMode(const ClusterMode&) = delete;
  ClusterMode& operator=(const ClusterMode&) = delete;

  // What the mode does not do: kNotImplemented naming `what`.
  static Status not_built(std::string_view what);

  // ---- customers and keys (rules applied by the engine: admin_rules.h) ----
  Result<Customer> create_customer(const Customer& c);
  Result<Customer> get_customer(const std::string& id);
  Result<std::vector<Customer>> list_customers();
  // The changes of customers and keys write the embedded store's audit records (engine/audit.h),
  // `actor` the key that acted ("" = none), to the audit log on shard 0: in the change's own
  // transaction when the change is on shard 0, else right after it commits.
  Result<Customer> update_customer(const std::string& id, const CustomerPatch& patch,
                                   const std::string& actor);
  Status create_key(const ApiKeyInfo& info, const std::string& secret_sha256,
                    const std::string& actor);
  Result<std::vector<ApiKeyInfo>> list_keys();
  Status revoke_key(const std::string& id, const std::string& actor);
  // By the SHA-256 of the presented secret, or by key id.
  Result<Identity> authenticate_hash(const std::string& secret_sha256);
  Result<Identity> authenticate_key_id(const std::string& key_id);

  // ---- usage ----
  void ingest(std::string body, const IngestOptions& options, Engine::IngestCallback done);
  Result<QueryResult> query(const MeterQuery& q);
  Result<CustomerUsage> customer_usage(const std::string& customer, TimeUs from_us, TimeUs to_us);
  // For statistics (Engine::meter_stats): `meter`'s state (and distinct values, for
  // unique_count) per window of `windows` (in order, covering [from, to); only [from, to)
  // counts), of `customer` or of every customer ("") merged, over the groups `filters` keeps
  // (index into the meter's group_by, value). *states and *uniques get one entry per window.
  // Errors: the shards' (cluster::read_grouped).
  Status window_states(const core::MeterSpec& meter, const std::string& customer,
                       const std::vector<std::pair<std::size_t, std::string>>& filters,
                       const std::vector<Span>& windows, TimeUs from, TimeUs to,
                       std::vector<core::AggState>* states, std::vector<core::UniqueSet>* uniques);

  // Stored events in the embedded store's listing order, every shard at once when no customer
  // is named (cluster_events.cc). REQUIRES: q.limit in 1..1000. Errors: kNotFound for an
  // unknown customer; kInvalidArgument for a cursor this listing did not return; the shards'.
  Result<EventPage> list_events(const EventListQuery& q);

  // ---- checks ----
  // One check, or a batch (all or nothing, as the embedded store's check_batch). A reserving
  // check holds its amount on the counters and stores its reservation on the customer's shard.
  Result<std::vector<CheckResult>> check(const std::vector<CheckRequest>& requests);
  // The customer's denied checks of each of the 60 minutes ending with the minute of `now`,
  // oldest first, counted by every node (cluster_denials.cc). Errors: kNotFound; Redis's.
  Result<std::vector<std::uint64_t>> denials_last_hour(const std::string& customer, TimeUs now);
  // Closes a reservation once across the nodes (Engine::commit_reservation and
  // release_reservation say what they answer).
  Result<CheckResult> commit_reservation(const std::string& id, const std::string& amount,
                                         const std::string& restrict_customer);
  Status release_reservation(const std::string& id, const std::string& restrict_customer);
  // Every limit of the customer as it stands on the counters (Engine::limits_report), nothing
  // consumed; read from a fresh copy of the customer's record.
  Result<LimitsReport> limits_report(const std::string& customer);
  // Replaces the customer's limit overrides (checked by the engine: check_overrides), the row
  // locked; this node's checks apply them at once, the others' within their customer cache's
  // age (kCustomerCacheUs).
  Result<Customer> set_overrides(const std::string& customer,
                                 const std::vector<LimitOverride>& overrides);
  // Starts the current period of every calendar limit of `meter` over for the customer at the
  // node's now (Engine::reset_period): stored in its row (locked) with its audit record, and the
  // customer's window counters of the meter in Redis set to 0, so every node's next check
  // counts from the reset. REQUIRES: `meter` is configured. Errors: kNotFound; the shard's and
  // Redis's (the reset stays stored: a counter it could not set counts from the window's start
  // until it is set again by a reset).
  Result<Customer> reset_period(const std::string& customer, const std::string& meter,
                                const std::string& actor);

  // ---- ad-hoc limits (cluster_adhoc.cc; Engine::limit_adhoc validates, decides the batch and
  // answers) ----
  // What one limit's window decided: whether the cost fitted (it was added then) and the
  // window's count before.
  struct AdHocCount {
    bool fits = false;
    std::int64_t used_before = 0;
  };

  // `l`'s cost on its window starting at `window_start_us` (ending at `reset_us`), a counter in
  // Redis that every node shares, decided as core::window_decide and added when it fits, in one
  // FCALL. Errors: Redis's (kUnavailable; cluster::may_have_run: the cost may have been added).
  Result<AdHocCount> adhoc_window(const AdHocLimit& l, TimeUs window_start_us, TimeUs reset_us);
  // Gives `l`'s cost back to that window (never below 0). Returns its count after, -1 when the
  // counter is gone.
  Result<std::int64_t> adhoc_take_back(const AdHocLimit& l, TimeUs window_start_us);

  // ---- alerts and the shared webhook outbox (cluster_alerts.cc; Engine's contract) ----
  Result<AlertPage> alerts(const AlertQuery& q);
  Result<Alert> alert(const std::string& id);
  // Claims (for this node, for a lease) up to `max` due deliveries not in `skip`.
  std::vector<WebhookDelivery> due_deliveries(TimeUs now, std::size_t max,
                                              const std::vector<std::string>& skip,
                                              TimeUs* next_due_us);
  // Errors: kNotFound; kAlreadyExists when the delivery is not pending or not this node's.
  Status record_delivery_attempt(const DeliveryAttempt& attempt);
  std::uint64_t wait_for_deliveries(std::uint64_t seen, TimeUs max_wait_us);

  // ---- wallets (cluster_wallets.cc: the embedded rules, engine/wallet_rules.h, on rows of the
  // customer's shard) ----
  Result<Wallet> wallet(const std::string& customer);
  // One or more of an admin's transactions, all or none (Engine::wallet_transactions_atomic).
  // With `audit_actor`, the last transaction is audited as the embedded
  // Engine::wallet_transaction audits it.
  Result<std::vector<LedgerTransaction>> wallet_transactions_atomic(
      const std::string& customer, const std::vector<WalletTransactionRequest>& requests,
      bool only_if_new, const std::optional<std::string>& audit_actor = std::nullopt);
  Result<LedgerPage> wallet_transactions(const LedgerQuery& q);

  // ---- the audit log (Engine::audit_log): the newest `limit` records, oldest first ----
  Result<std::vector<std::string>> audit_log(std::size_t limit);

  // ---- operations ----
  // Every shard answers and Redis answers; else kUnavailable saying which does not.
  Status ready();
  // `tally verify` on every shard (cluster/pg_verify.h): the aggregates are their events.
  Result<VerifyReport> verify();
  // Waits until the usage of answered checks is written and the alerts queued are evaluated,
  // then closes the reservations expired by now (as the node does about once a second).
  void flush();
  EngineStats stats() const;

 private:
  struct Impl;
  explicit ClusterMode(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally::engine
