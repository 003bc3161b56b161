// The inside of the engine's scale-out mode (cluster_mode.h), shared by its files:
// cluster_mode.cc (opening, customers, keys, resets, the audit log, operations), cluster_ingest.cc
// (ingest), cluster_batch.cc (all-or-nothing ingest), cluster_denials.cc (the denial history),
// cluster_query.cc (queries), cluster_check.cc (checks and their usage), cluster_gauge.cc (checks
// on latest and max meters), cluster_reservations.cc (reservations) and cluster_alerts.cc (alerts
// and the outbox). A check on a latest or max meter (a gauge) is decided in PostgreSQL rather than
// by the Redis counters (cluster_gauge.cc).
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <future>
#include <limits>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include <spdlog/spdlog.h>

#include "cluster/pg_alerts.h"
#include "cluster/pg_audit.h"
#include "cluster/pg_customers.h"
#include "cluster/pg_events.h"
#include "cluster/pg_prices.h"
#include "cluster/pg_query.h"
#include "cluster/pg_reservations.h"
#include "cluster/pg_verify.h"
#include "cluster/pg_wallets.h"
#include "cluster/pool.h"
#include "cluster/redis_limits.h"
#include "cluster/shard.h"
#include "common/crypto.h"
#include "core/event_parse.h"
#include "core/ids.h"
#include "engine/admin_rules.h"
#include "engine/audit.h"
#include "engine/cluster_leases.h"
#include "engine/cluster_mode.h"
#include "engine/limits_impl.h"
#include "pg/schema.h"
#include "redis/cluster_client.h"

namespace tally::engine {

// How long a check keeps what it read of its customer (plan, status, zone, anchors), and for
// how many customers at most.
inline constexpr TimeUs kCustomerCacheUs = core::kUsPerSecond;
inline constexpr std::size_t kCustomerCacheMax = 100'000;
// How long authentication keeps what it read of a key and its customer.
inline constexpr TimeUs kAuthCacheUs = 5 * core::kUsPerSecond;
// How often a node closes expired reservations.
inline constexpr std::int64_t kReservationSweepUs = core::kUsPerSecond;
// How often a node gives back what its expired check leases did not use.
inline constexpr std::int64_t kLeaseSweepUs = 20'000;
// Answered checks' usage is written at least this often.
inline constexpr auto kUsageFlush = std::chrono::milliseconds(5);
// Answered checks' usage waiting to be written, at most: a consuming check beyond it is refused
// (503) rather than held in memory without bound.
inline constexpr std::size_t kUsageQueueMax = 100'000;
// Writer threads (lanes) per shard on each node: a customer's events always go to the same
// lane (cluster::fnv1a64 of its id), so the lanes' transactions touch disjoint rows and run side
// by side, where one writer would wait for each commit before the next.
inline constexpr std::size_t kWriterLanes = 2;
// The most events one lane's writer puts in one transaction (it takes at least one request's).
inline constexpr std::size_t kGroupEventsMax = 20'000;
// How long a check's event_id is remembered in Redis (its usage event, written within
// milliseconds, remembers it in PostgreSQL from then on).
inline constexpr std::int64_t kEventIdMarkerMs = 24LL * 3600 * 1000;

// A monotonic instant: how long a request took, and the age of the node's caches.
inline std::int64_t cluster_steady_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// A Redis client and the limits over it: one thread's at a time.
struct RedisSlot {
  std::unique_ptr<redis::ClusterClient> client;
  std::unique_ptr<cluster::RedisLimits> limits;
};

// A consumption to write as a usage event.
struct PendingUsage {
  std::string customer;
  std::string event_id;
  const MeterDef* meter = nullptr;
  core::Decimal amount;
  std::vector<std::pair<std::string, std::string>> properties;
  TimeUs at_us = 0;
  std::shared_ptr<std::promise<Status>> written;  // check_sync: told when it is written
  core::Decimal credits_in_flight;  // a prepaid check's: released once its burn is written
};

// What a customer's calendar windows hang on (as engine::period_context for the embedded
// store's customers).
inline core::PeriodContext period_context_of(const Customer& c) {
  core::PeriodContext pc;
  auto tz = core::TimeZone::find(c.timezone);
  pc.tz = tz ? *tz : core::TimeZone();
  pc.billing_anchor_us = c.billing_anchor_us != 0 ? c.billing_anchor_us : c.created_at_us;
  pc.trial_start_us = c.trial_started_at_us != 0 ? c.trial_started_at_us : c.created_at_us;
  return pc;
}

// Where the count of `rule`'s calendar window `span` starts for customer `c`: the window's start,
// or a reset of the rule's meter inside the window (as the embedded store's counters count, and
// answer as the window's start). A rate rule's: `span.start`.
inline TimeUs counted_from(const Customer& c, const core::LimitRule& rule, const core::Span& span) {
  const TimeUs reset = core::period_is_rate(rule.period) ? 0 : reset_at(c, rule.meter);
  return reset != 0 && span.contains(reset) ? std::max(span.start, reset) : span.start;
}

// Where the count of `rule`'s outcome `o` (RedisLimits::check's) starts: counted_from of its
// window (`o.reset_us` 0: a window that never ends).
inline TimeUs window_start_of(const Customer& c, const core::LimitRule& rule,
                              const core::LimitOutcome& o) {
  const core::Span span{o.window_start_us,
                        o.reset_us == 0 ? std::numeric_limits<TimeUs>::max() : o.reset_us};
  return counted_from(c, rule, span);
}

// One ingest request, answered once the part of every shard it touches is written.
struct IngestRequest {
  core::ParsedEvents parsed;
  std::int64_t start_us = 0;
  Engine::IngestCallback done;
  std::vector<bool> known;                                    // per event: its customer exists
  std::vector<std::optional<cluster::EventOutcome>> outcome;  // per event, once written
  std::mutex mutex;
  int parts_left = 0;  // guarded by mutex once queued
  Status failure;      // the first part's failure
};

// A request's events (indexes into its batch) of one shard's lane, waiting for its writer.
struct ShardPart {
  std::shared_ptr<IngestRequest> req;
  std::vector<std::size_t> events;
};

// Alerts waiting for evaluation, at most: more are dropped (counted), and fire at the next
// change of the same usage.
inline constexpr std::size_t kAlertQueueMax = 10'000;
// A claimed delivery stays this node's for the longest attempt's timeout plus this margin.
inline constexpr TimeUs kDeliveryLeaseMarginUs = 30 * core::kUsPerSecond;

// Usage of one customer's meter that changed at `at_us`: its calendar limits' thresholds to
// evaluate. `used` (one per rule) when the caller knows it (a check's consumption), else empty:
// read from the Redis counters.
struct AlertWork {
  Customer customer;
  std::string meter;
  std::vector<core::LimitRule> rules;
  std::vector<core::Decimal> used;
  TimeUs at_us = 0;
};

// A check validated (cluster_check.cc): its customer, meter, amount, plan and the limits that
// apply.
struct ClusterPrepared {
  Customer customer;
  const MeterDef* meter = nullptr;
  core::Decimal amount;
  const core::Plan* plan = nullptr;
  std::vector<core::LimitRule> rules;
  bool prepaid = false;   // the plan is prepaid: the check also needs credits
  core::Decimal credits;  // what it needs (cluster_credits.cc)
};

struct CounterAdds;  // cluster_ingest.cc

// A part of an event's charge that a tiered price gives (cluster_prices.cc): it depends on the
// units of the customer's billing period before it, so it is priced in the write's transaction.
struct TieredPart {
  std::size_t pos = 0;      // the event's entry in the write's indices
  std::uint32_t meter = 0;  // the priced meter (catalog index)
  std::uint32_t price = 0;  // Catalog::prices index
  const core::PriceVersion* version = nullptr;
  core::Decimal units;  // what the event adds to the meter
};

// What a write's events are charged (cluster_prices.cc), per entry of its indices: `base` from
// per_unit prices, known before the write; `charges`, what write_events and the burns read:
// `base` plus, once priced in the write's transaction, the tiered parts of the events inserted.
struct WriteCharges {
  std::vector<std::optional<cluster::EventCharge>> base;
  std::vector<std::optional<cluster::EventCharge>> charges;
  std::vector<TieredPart> tiered;
  std::map<std::string, core::PeriodContext> periods;  // the customers of `tiered`
};

// The usage events of answered checks (cluster_check.cc), in `batch`'s order: a sum, latest or
// max meter's value property holds u.amount, a count meter's quantity is it. Ids are the check's
// event_id, or "chk_<node>_<n>" with n = ++*seq.
core::EventBatch usage_events(const std::vector<PendingUsage>& batch, const std::string& node,
                              std::uint64_t* seq);

// Answered checks' usage with the entries that add up merged into one (cluster_check.cc): of one
// customer and meter in one minute, without an event_id, properties, credits or a waiting
// caller, of a meter whose checks' usage merges; the others as they are, in order.
std::vector<PendingUsage> merged_usage(std::vector<PendingUsage> batch);

// The counters' verdict as a check's answer (cluster_check.cc): every limit's state (after the
// consumption when it consumed), the most restrictive as its rule, a denial's reason and message.
void answer_check(const CheckRequest& r, const ClusterPrepared& p, const cluster::RedisCheck& rc,
                  CheckResult* out);

struct ClusterMode::Impl {
  const config::Config* config = nullptr;
  const Catalog* catalog = nullptr;
  const Clock* clock = nullptr;
  std::vector<std::unique_ptr<cluster::PgPool>> shards;
  std::vector<core::MeterSpec> meter_specs;  // the catalog's meters, for write_events
  cluster::ChargeMeters charge_meters;       // its hidden cost and credits meters among them
  std::string node_prefix;                   // names this node's check events

  // Redis clients, leased one per calling thread.
  redis::ClusterOptions redis_options;
  std::mutex redis_mutex;
  std::vector<std::unique_ptr<RedisSlot>> redis_idle;

  // The window counters this node has seeded from PostgreSQL (their Redis keys): a counter is
  // seeded once per node and window; Redis keeps the first seed of all nodes (SET NX).
  std::mutex seeded_mutex;
  std::unordered_set<std::string> seeded;

  // Checks: the customers they read, and when (kCustomerCacheUs).
  std::mutex customers_mutex;
  std::unordered_map<std::string, std::pair<Customer, TimeUs>> check_customers;

  // Authentication: what was read of a key (by hash and by id), and when.
  struct CachedKey {
    cluster::KeyRow key;
    bool suspended = false;
    TimeUs read_at_us = 0;
  };

  std::mutex auth_mutex;
  std::unordered_map<std::string, CachedKey> keys_by_hash;

  // Writer threads: ingest requests and answered checks' usage.
  std::mutex work_mutex;
  std::condition_variable work_cv;
  std::condition_variable usage_cv;                 // the usage queue emptied (flush)
  std::vector<std::deque<ShardPart>> shard_queues;  // one per shard and lane (queue_of)
  std::vector<PendingUsage> usage;
  std::size_t usage_writing = 0;
  std::uint64_t usage_seq = 0;              // the usage writer's: names its events
  std::atomic<std::uint64_t> gauge_seq{0};  // names the usage events of gauge checks
  bool stopping = false;
  std::vector<std::thread> writers;
  std::thread usage_writer;
  std::int64_t reservations_swept_us = 0;  // steady time of the last expiry sweep (usage writer)

  // Leased checks (cluster_leases.h), when config's check_lease is above 0.
  bool leases_on = false;
  CheckLeases leases;
  std::int64_t leases_swept_us = 0;  // steady time of the last give-back of expired leases

  std::atomic<std::uint64_t> events_accepted{0};
  std::atomic<std::uint64_t> events_rejected{0};
  std::atomic<std::uint64_t> events_duplicate{0};
  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::uint64_t> usage_write_failures{0};
  std::atomic<std::uint64_t> audit_failures{0};  // records lost after their change committed

  // Alerts (cluster_alerts.cc): work queued by checks and ingest for the alert thread, the
  // thresholds this node has inserted or found inserted (so each is sent to PostgreSQL once
  // per node), and the deliveries this node added (wait_for_deliveries).
  bool alerts_on = false;
  TimeUs delivery_lease_us = 0;
  std::mutex alert_mutex;
  std::condition_variable alert_cv;       // work queued, or stopping
  std::condition_variable alert_idle_cv;  // the queue emptied (flush)
  std::condition_variable deliveries_cv;  // deliveries added, or stopping
  std::deque<AlertWork> alert_queue;
  bool alert_busy = false;
  bool alert_stopping = false;
  std::uint64_t deliveries_added = 0;
  std::unordered_set<std::string> alerts_tried;  // the alert thread's
  std::thread alert_thread;
  std::atomic<std::uint64_t> alerts_dropped{0};

  cluster::PgPool& shard_of(std::string_view customer) {
    return *shards[cluster::shard_of(customer, shards.size())];
  }

  cluster::PgPool& home() { return *shards[0]; }

  // Commits `txn`, a change open on `conn` of the shard of `customer` ("" = shard 0), with its
  // audit `records` (made at `at`): on shard 0 they are inserted in the transaction, so they
  // commit with the change or not at all; on another shard they are inserted on shard 0 right
  // after the change committed, and a failure then is logged and counted (audit_failures), not
  // answered: the change stands. Errors: the commit's, and the records' on shard 0.
  Status commit_audited(pg::Transaction& txn, pg::Connection& conn, std::string_view customer,
                        const std::vector<std::string>& records, TimeUs at);

  Result<std::unique_ptr<RedisSlot>> lease_redis();
  void return_redis(std::unique_ptr<RedisSlot> slot);

  Status ensure_customers(const core::EventBatch& b, const std::vector<std::size_t>& events,
                          std::size_t shard, std::vector<bool>* known,
                          std::map<std::string, Customer>* customers);
  std::map<std::string_view, CounterAdds> counter_adds(
      const core::EventBatch& b, const std::vector<std::uint32_t>& written,
      const std::map<std::string, Customer>& customers) const;
  void add_to_counters(const core::EventBatch& b, const std::vector<std::uint32_t>& written,
                       const std::map<std::string, Customer>& customers);
  // The customer `id` from its shard. Errors: kNotFound; the shard's.
  Result<Customer> read_customer(const std::string& id);
  Status prepare_check(const CheckRequest& r, ClusterPrepared* p);
  Result<Customer> find_check_customer(const std::string& id);
  Result<bool> is_replay(redis::ClusterClient& client, const CheckRequest& r, bool* claimed);
  void unclaim(redis::ClusterClient& client, const CheckRequest& r);
  Result<CheckResult> decide(RedisSlot& slot, const CheckRequest& r, const ClusterPrepared& p,
                             bool consume, TimeUs now, CheckResult out);
  // The counters' verdict on `amount` for `rules` of customer `c` on `meter` (consumed when
  // `consume`): when Redis lost counters this node had seeded, they are rebuilt from PostgreSQL
  // and asked again. The counters must have been seeded (seed_counters) before.
  // Whether check `r` may be answered from a lease: one consuming check without an event_id, of
  // a count or sum meter whose every limit is hard, not of a prepaid plan.
  bool leasable(const CheckRequest& r, const ClusterPrepared& p) const;
  // decide()'s way for a leasable check that no lease answered: takes a lease of check_lease (as
  // a consuming check of that amount) and answers `r` from it. Returns false, having consumed
  // nothing, when not that much is left: the check then asks for its own amount.
  Result<bool> take_lease(RedisSlot& slot, const CheckRequest& r, const ClusterPrepared& p,
                          const core::PeriodContext& pc, TimeUs now, CheckResult* out);
  // Gives what `lease` did not use back to the counters of its windows.
  void give_back(RedisSlot& slot, const CheckLease& lease);
  void give_back(std::vector<CheckLease> leases);  // on a Redis client of its own
  Result<cluster::RedisCheck> ask_counters(RedisSlot& slot, const Customer& c,
                                           const MeterDef& meter,
                                           const std::vector<core::LimitRule>& rules,
                                           const core::PeriodContext& pc, core::Decimal amount,
                                           TimeUs now, bool consume);
  // cluster_gauge.cc: a check on a latest or max meter, decided and its usage written in
  // PostgreSQL under a lock of (customer, meter); and a limit of one in the limits report.
  Result<CheckResult> decide_gauge(const CheckRequest& r, const ClusterPrepared& p, TimeUs now,
                                   CheckResult out);
  Result<LimitState> gauge_report_limit(const Customer& c, const MeterDef& meter,
                                        const core::LimitRule& rule, TimeUs now);
  void alert_on_check(const CheckRequest& r, const ClusterPrepared& p, const CheckResult& res,
                      TimeUs now);
  Status decide_all(RedisSlot& slot, const std::vector<CheckRequest>& requests,
                    const std::vector<ClusterPrepared>& prepared, TimeUs now,
                    std::vector<CheckResult>* results);
  Status queue_usage(const CheckRequest& r, const ClusterPrepared& p, TimeUs now);
  // Counts the checks of `requests` denied by their own decision in their customers' denial
  // history (cluster_denials.cc).
  void record_denials(redis::ClusterClient& client, const std::vector<CheckRequest>& requests,
                      const std::vector<CheckResult>& results, TimeUs now);
  // Queues `u` for the usage writer; with `wait`, returns once it is written (or failed).
  Status push_usage(PendingUsage u, bool wait);
  // Reservations (cluster_reservations.cc): opened for a batch's allowed reserving checks once
  // it is decided; expired ones closed by the usage writer's thread about once a second.
  Status open_reservations(RedisSlot& slot, const std::vector<CheckRequest>& requests,
                           const std::vector<ClusterPrepared>& prepared, TimeUs now,
                           std::vector<CheckResult>* results);
  Result<std::optional<cluster::ReservationRow>> take_reservation(const std::string& id,
                                                                  const std::string& customer,
                                                                  bool peek);
  void give_back(RedisSlot& slot, const cluster::ReservationRow& row);
  void expire_reservations();
  void forget_seeded(const std::string& customer, const std::vector<core::LimitRule>& rules,
                     const core::PeriodContext& ctx, TimeUs now);
  Status seed_counters(cluster::RedisLimits& limits, const Customer& c,
                       const std::vector<core::LimitRule>& rules, const core::PeriodContext& ctx,
                       const MeterDef& meter, TimeUs now);
  // cluster_batch.cc: an all-or-nothing request (IngestOptions::all_or_nothing), read, decided
  // and written by the calling thread, then answered by req.done.
  void ingest_whole(IngestRequest& req);
  Status write_whole(const core::EventBatch& b, std::size_t shard,
                     std::map<std::string, Customer> customers, std::vector<bool>* inserted);
  void refuse_whole(IngestRequest& req, IngestSummary sum);
  void commit_group(std::size_t shard, std::vector<ShardPart> parts);
  Status write_group(const core::EventBatch& b, const std::vector<std::size_t>& events,
                     std::size_t shard, std::vector<bool>* known,
                     std::vector<std::optional<cluster::EventOutcome>>* outcome);
  void finish_part(IngestRequest& req, const Status& s);
  void complete(IngestRequest& req);
  void write_usage(std::vector<PendingUsage> batch);
  // `query` on every shard at once, each on a connection of its own (on the customer's shard
  // alone when it names one). Errors: the first shard's that failed.
  Result<std::vector<cluster::GroupedUsage>> read_shards(const core::MeterSpec& spec,
                                                         const cluster::GroupedQuery& query);
  // The writer queue of `customer`'s events: its shard's lane for it.
  std::size_t queue_of(std::string_view customer) const;
  void writer_loop(std::size_t q);
  // cluster_prices.cc: per entry of `indices`, what the event is charged by per_unit prices
  // (nullopt: none charges it); empty when the catalog has no prices. The parts tiered prices
  // charge are appended to *tiered (in event, then meter order).
  std::vector<std::optional<cluster::EventCharge>> charges_of(
      const core::EventBatch& b, std::span<const std::uint32_t> indices,
      std::vector<TieredPart>* tiered) const;
  // Prices a write of `indices` into *wc (which must outlive the write) and sets the options
  // that write them: charges, charge meters, the tiered parts priced in the transaction, the
  // burns. `customers` (may be null) are the customers already read; others are read.
  // Errors: reading a customer's.
  Status prepare_write(const core::EventBatch& b, std::span<const std::uint32_t> indices,
                       const std::map<std::string, Customer>* customers, WriteCharges* wc,
                       cluster::EventWriteOptions* options);
  // For `tally verify`: charges_of's, and each event's tiered part taken from its row's
  // charge (`stored`, per entry) less its per_unit parts.
  std::vector<std::optional<cluster::EventCharge>> charges_to_verify(
      const core::EventBatch& b, std::span<const std::uint32_t> indices,
      std::span<const std::optional<cluster::EventCharge>> stored) const;
  // In the write's transaction: the tiered parts of the inserted events, with their periods'
  // units locked, added to wc.charges and stored (price_usage, the events' rows).
  Status charge_tiered(pg::Connection& conn, const core::EventBatch& b,
                       std::span<const std::uint32_t> indices, WriteCharges& wc,
                       const std::vector<bool>& inserted);
  // cluster_credits.cc: prepaid checks. The credits a check of `amount` of `meter` needs now.
  // A tiered price counts the customer's period's units committed so far.
  Result<core::Decimal> check_credits_of(const CheckRequest& r, const Customer& customer,
                                         const MeterDef& meter, core::Decimal amount, TimeUs now);
  // Whether the customer's balance less the credits in flight on every node covers `credits`
  // (sets out's prepaid fields); when consuming, `credits` are added to those in flight first
  // and stay there when admitted (release_credits once burned), else are taken back.
  Result<bool> admit_credits(redis::ClusterClient& client, const std::string& customer,
                             core::Decimal credits, bool consume, CheckResult* out);
  void release_credits(redis::ClusterClient& client, const std::string& customer,
                       core::Decimal credits);
  void release_burned(const std::vector<PendingUsage>& batch,
                      const std::vector<std::uint32_t>& written);
  // cluster_wallets.cc: burns the credits of the events of `indices` inserted now (`inserted`,
  // per entry) with `charges` (per entry) from their customers' wallets, in the write's open
  // transaction on `conn` (EventWriteOptions::in_transaction).
  Status burn_credits(pg::Connection& conn, const core::EventBatch& b,
                      std::span<const std::uint32_t> indices,
                      std::span<const std::optional<cluster::EventCharge>> charges,
                      const std::vector<bool>& inserted);
  // Each wallet of the shard: its row's balance and last seq are its state's, and its grants
  // less its debt are its balance (as the embedded verify checks); differences appended.
  Status verify_wallets(pg::Connection& conn, const std::string& shard,
                        std::vector<std::string>* differences);
  void usage_loop();
  void start_alerts();
  void stop_alerts();
  void wait_alerts_idle();
  void queue_alerts(AlertWork work);
  void alert_loop();
  void evaluate_alerts(std::vector<AlertWork> batch);
  Status read_used(AlertWork& w);
  void stop();
};

}  // namespace tally::engine
