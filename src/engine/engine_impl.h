// The engine's private state. See include/tally/engine.h for the contract.
//
// Concurrency model:
//  - One commit thread is the only writer of the store and the only mutator of in-memory
//    state. It takes queued jobs in order, builds one store write per group of ingest jobs,
//    writes it (fsync), then installs the new state under `state_mutex` held exclusively.
//  - Readers (queries, listings, authentication) take `state_mutex` shared.
//  - Key usage counters are atomics, written back by the commit thread about once a second.
#pragma once

#include <algorithm>
#include <array>
#include <atomic>
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <span>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <tally/engine.h>

#include "config/config.h"
#include "core/aggregate.h"
#include "core/event_parse.h"
#include "core/limits.h"
#include "core/meter.h"
#include "core/pricing.h"
#include "core/time.h"
#include "engine/catalog.h"
#include "engine/codec.h"
#include "engine/dedup_index.h"
#include "engine/denials.h"
#include "engine/disk_guard.h"
#include "engine/group_commit.h"
#include "engine/series.h"
#include "engine/string_map.h"
#include "store/store.h"

namespace tally {

namespace engine {

// The scale-out mode (engine/cluster_mode.h, included by the files that hand work to it, so a
// change there rebuilds those alone).
class ClusterMode;
// kNotImplemented naming `what` (ClusterMode::not_built).
Status cluster_not_built(std::string_view what);

struct CustomerState {
  std::uint32_t num = 0;
  Customer record;
  core::TimeZone tz;
};

struct KeyState {
  KeyRecord record;  // record.info counters are stale; the atomics below are current
  std::atomic<std::uint64_t> total_requests{0};
  std::atomic<std::int64_t> last_used_at_us{0};
  std::atomic<bool> dirty{false};
};

// The aggregates of one meter (indexed as Catalog::meters), installed by the commit thread.
struct MeterAggregates {
  // customer number -> group id -> series
  std::unordered_map<std::uint32_t, std::unordered_map<std::uint32_t, Series>> series;
  std::unordered_map<std::uint32_t, GroupTotals> totals;  // group id -> sums over customers
};

// ---- limits (limit_counters.cc) ----------------------------------------------------------------

// What a calendar window depends on besides the rule: a counter built under other values (the
// customer's zone, anchors or reset changed) is rebuilt, never reused.
struct WindowContext {
  const void* zone = nullptr;  // core::TimeZone::zone()
  core::TimeUs billing_anchor_us = 0;
  core::TimeUs trial_start_us = 0;
  core::TimeUs reset_us = 0;  // the meter's last reset, 0 = none

  friend bool operator==(const WindowContext&, const WindowContext&) = default;
};

// Usage of one meter in one calendar window of one customer, as limits see it.
struct LimitCounter {
  std::uint32_t meter = 0;
  core::PeriodKind period = core::PeriodKind::kMonth;
  std::int64_t days = 0;
  core::Span span;                 // the window; re-initialised when time leaves it
  core::TimeUs count_from_us = 0;  // span.start, or a reset inside the span
  WindowContext context;           // what span and count_from_us were computed from
  core::AggState committed;        // durable events in [count_from, span.end)
  core::Decimal pending;           // consumed or held in memory, not yet committed
};

struct RateCounter {
  std::uint32_t meter = 0;
  core::PeriodKind period = core::PeriodKind::kMinute;
  core::RateState state;
  bool initialised = false;
};

// Consumption in memory that no commit has settled yet: a check's usage event on its way to
// disk, or a reservation's hold.
struct InFlight {
  std::uint32_t meter = 0;
  core::TimeUs time_us = 0;
  core::Decimal amount;
  core::Decimal credits;  // estimated, for prepaid wallets; 0 when not prepaid or unpriced
};

// The in-flight consumption of one customer, in token order. Tokens only grow (they are taken
// under limits_mutex just before their consumption is added), so adding appends, and commits
// settle them mostly oldest first, so erasing usually trims the front: no allocation per token
// and no tree to walk, however far the commit thread lags. An entry erased from the middle (a
// reservation released early) is marked dead until the front reaches it.
class InFlightLog {
 public:
  void add(std::uint64_t token, const InFlight& f) {
    if (entries_.empty() || entries_.back().token < token) {
      entries_.push_back(Entry{token, true, f});
    } else {  // not expected; kept correct anyway
      auto it = lower(entries_, token);
      if (it != entries_.end() && it->token == token) {
        live_ -= it->live ? 1 : 0;
        *it = Entry{token, true, f};
      } else {
        entries_.insert(it, Entry{token, true, f});
      }
    }
    ++live_;
  }

  // The live entry of `token`, or null.
  const InFlight* find(std::uint64_t token) const {
    auto it = lower(entries_, token);
    return it != entries_.end() && it->token == token && it->live ? &it->f : nullptr;
  }

  // Erases `token`; false when it is not live.
  bool erase(std::uint64_t token) {
    auto it = lower(entries_, token);
    if (it == entries_.end() || it->token != token || !it->live) {
      return false;
    }
    it->live = false;
    --live_;
    while (!entries_.empty() && !entries_.front().live) {
      entries_.pop_front();
    }
    while (!entries_.empty() && !entries_.back().live) {
      entries_.pop_back();
    }
    return true;
  }

  template <typename F>
  void for_each(F&& f) const {
    for (const auto& e : entries_) {
      if (e.live) {
        f(e.token, e.f);
      }
    }
  }

  std::size_t size() const { return live_; }

  bool empty() const { return live_ == 0; }

 private:
  struct Entry {
    std::uint64_t token;
    bool live;
    InFlight f;
  };

  template <typename Entries>
  static auto lower(Entries& entries, std::uint64_t token) -> decltype(entries.begin()) {
    if (!entries.empty() && entries.front().token == token) {
      return entries.begin();  // the common case: the oldest settles first
    }
    return std::lower_bound(entries.begin(), entries.end(), token,
                            [](const Entry& e, std::uint64_t t) { return e.token < t; });
  }

  std::deque<Entry> entries_;
  std::size_t live_ = 0;
};

// One limit of a customer's meter, resolved from the plan and overrides, with the texts every
// answer repeats.
struct ResolvedRule {
  core::LimitRule rule;
  std::string rule_text;   // "api_calls per day"
  std::string limit_text;  // the amount; "" when unlimited
};

// The resolved limits of one meter of a customer, valid while its plan and overrides are the
// ones they were resolved from (the configuration, so every plan, is fixed at open).
struct ResolvedRules {
  std::uint32_t meter = 0;
  const core::Plan* plan = nullptr;
  std::vector<LimitOverride> overrides;
  std::vector<ResolvedRule> rules;
};

struct CustomerLimits {
  // Lists: a check holds pointers to several counters while it creates others.
  std::list<LimitCounter> counters;
  std::list<RateCounter> rates;
  InFlightLog in_flight;  // token -> consumption
  // Check event ids consumed recently (id -> token), so a retry is answered without consuming.
  std::unordered_map<std::string, std::uint64_t> recent_ids;
  std::deque<std::string> recent_order;
  // Per meter checked (bounded by the meters); a deque, so adding one keeps the others in place.
  std::deque<ResolvedRules> resolved;
  // Estimated credits of in-flight consumption and reservations not yet burned: a prepaid
  // check compares the wallet's balance minus this with its own estimate.
  core::Decimal credits_in_flight;
};

struct Reservation {
  std::uint32_t customer_num = 0;
  std::string customer;
  std::uint32_t meter = 0;
  core::Decimal amount;
  core::TimeUs expires_us = 0;
  std::uint64_t token = 0;
  std::vector<std::pair<std::string, std::string>> properties;
  std::string event_id;
  core::Decimal credits;  // held from a prepaid wallet (its `hold` transaction)
  core::TimeUs created_us = 0;
  // Its record and hold are durable: only then may expiry close it (a close must follow its
  // open in the store).
  bool durable = false;
};

// What one committed event did to a limited meter.
struct LimitDelta {
  std::uint32_t customer_num;
  std::uint32_t meter;
  core::TimeUs time_us;
  core::Decimal value;
  std::uint64_t seq;
  bool from_check;  // already counted by its check (rates and pending)
};

// The usage of one calendar limit now, for alerts (Impl::limit_usages).
struct LimitUsage {
  const ResolvedRule* rule = nullptr;  // valid while the customer's rules are unchanged
  core::Decimal used;                  // committed and in flight
  core::Span span;                     // the window
};

// ---- alerts (alerts.cc) ---------------------------------------------------------------------

// A stored alert and the numbers of its deliveries.
struct AlertEntry {
  std::uint64_t num = 0;
  Alert alert;  // deliveries empty: they live in Impl::delivery_records
  std::vector<std::uint64_t> deliveries;
};

// What makes an alert once-only: customer, meter, period, window start and threshold.
using FiredKey = std::tuple<std::uint32_t, std::string, LimitPeriod, core::TimeUs, std::int64_t>;

// ---- wallets (wallet.cc) --------------------------------------------------------------------

// The working state of wallets and tiered price usage during one commit: copies of what the
// commit touches, installed when the write is durable.
struct LedgerWork {
  std::unordered_map<std::uint32_t, WalletRecord> wallets;
  // (price index, customer, period start) -> units
  std::map<std::tuple<std::uint32_t, std::uint32_t, core::TimeUs>, core::Decimal> price_usage;
  std::vector<std::pair<std::uint32_t, LedgerRecord>> txns;  // customer num, txn
  bool from_scratch = false;  // price_of counts tiered usage from zero, not the live state
};

// Where a customer's chain of balances breaks: `txns` (its transactions, in order) must start
// from `balance` (each balance_before is the previous balance_after, the first one `balance`)
// and add up (balance_before + amount = balance_after). Empty when the chain holds, else the
// first break, naming the transaction.
std::string ledger_chain_break(core::Decimal balance, const std::vector<const LedgerRecord*>& txns);

// A latency histogram with fixed bounds (microseconds), cumulative on output.
class Histogram {
 public:
  // The upper bound of each bucket but the last, which holds everything above them. A constant
  // array: nothing to destroy at exit, when a commit thread may still be recording.
  static constexpr std::array<std::uint64_t, 15> kBoundsUs = {
      100,   250,    500,    1000,   2500,    5000,    10000,  25000,
      50000, 100000, 250000, 500000, 1000000, 2500000, 5000000};

  void record(std::uint64_t us);
  std::vector<std::uint64_t> cumulative() const;

  std::uint64_t sum_us() const { return sum_us_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> counts_[kBoundsUs.size() + 1] = {};
  std::atomic<std::uint64_t> sum_us_{0};
};

}  // namespace engine

// What only the embedded store does yet: in the scale-out mode the method answers
// kNotImplemented (HTTP 501) naming `what`.
#define TALLY_EMBEDDED_ONLY(what)             \
  do {                                        \
    if (impl_->cluster != nullptr) {          \
      return engine::cluster_not_built(what); \
    }                                         \
  } while (false)

struct Engine::Impl {
  // Both defined in engine.cc, where ClusterMode is complete.
  Impl();
  ~Impl();
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;

  // ---- fixed at open --------------------------------------------------------------------------
  config::Config config;
  const Clock* clock = nullptr;
  std::unique_ptr<store::Store> store;
  bool read_only = false;
  // Where the aggregates are checkpointed at a clean stop (checkpoint.cc); empty without a data
  // directory of our own (an in-memory or given store).
  std::string checkpoint_path;
  // Whether this open read its aggregates from a checkpoint instead of the store's records, and
  // how many customers touched after the checkpoint's sequence number it reloaded from the store.
  bool restored_from_checkpoint = false;
  std::uint64_t checkpoint_customers_reloaded = 0;
  std::string admin_key_hash;  // SHA-256 of the extra admin key, or empty
  // The meters and prices (engine/catalog.h): complete once open has loaded the stored prices,
  // never changed after, read without a lock.
  std::unique_ptr<const engine::Catalog> catalog = std::make_unique<const engine::Catalog>();
  // The scale-out mode ([cluster] in the configuration): every method hands its work to it, or
  // answers kNotImplemented (TALLY_EMBEDDED_ONLY); null on the embedded store.
  std::unique_ptr<engine::ClusterMode> cluster;

  // ---- state (guarded by state_mutex for readers; mutated only by the commit thread) ---------
  mutable std::shared_mutex state_mutex;
  std::vector<engine::MeterAggregates> meter_aggregates;               // per meter of the catalog
  engine::StringMap customer_nums;                                     // id -> number
  std::unordered_map<std::uint32_t, engine::CustomerState> customers;  // number -> state
  engine::StringMap group_ids;                                         // group text -> id
  std::deque<std::string> group_texts;                                 // id -> group text
  std::unordered_map<std::string, std::unique_ptr<engine::KeyState>> keys_by_hash;
  std::unordered_map<std::string, engine::KeyState*> keys_by_id;
  std::uint64_t aggregates_live = 0;  // minute aggregates held in memory
  // The minute horizon (storage.memory_minutes_hours; minute_horizon.cc): series made from now
  // on hold no minute before it (Series::kHoldsAll when there is none), and `old_minutes` reads
  // the ones they do not hold from the store. Set at load, moved on by forget_old_minutes.
  core::TimeUs minutes_from = engine::Series::kHoldsAll;
  std::unique_ptr<engine::OldMinutes> old_minutes;
  // Every sequence number below this is installed in memory or was rolled back (set by each
  // ingest commit's install), and the customer numbers below installed_customer were given out
  // by then: what a checkpoint started now can promise (checkpoint.cc).
  std::uint64_t installed_seq = 1;
  std::uint32_t installed_customer = 1;
  std::unordered_map<std::uint32_t, engine::WalletRecord> wallets;  // customer number -> wallet
  std::map<std::tuple<std::uint32_t, std::uint32_t, core::TimeUs>, core::Decimal> price_usage;

  // Denied checks per customer over the last hour (its own mutex, taken after limits_mutex).
  engine::DenialCounter denials;
  // Audit records written in one microsecond are told apart by this (audit.cc).
  std::atomic<std::uint64_t> audit_seq{0};

  // ---- limits (guarded by limits_mutex; taken after state_mutex, never before) ---------------
  mutable std::mutex limits_mutex;
  std::unordered_map<std::uint32_t, engine::CustomerLimits> limits;
  std::unordered_map<std::string, engine::Reservation> reservations;
  // Closes of expired reservations, for the commit thread's next write.
  std::vector<engine::ReservationOp> expired_reservation_ops;
  std::uint64_t next_token = 1;
  std::string token_prefix;  // random per process: names of check events and reservations

  // ---- Tally's own API rate limit (api_limit.cc), per key id ----------------------------------
  std::mutex api_rates_mutex;
  std::unordered_map<std::string, core::RateState> api_rates;

  // ---- ad-hoc limits (adhoc_limits.cc): namespace, identifier and duration -> its window ------
  struct AdHocWindow {
    core::WindowCount count;
    core::TimeUs end_us = 0;
  };

  std::mutex adhoc_mutex;
  std::unordered_map<std::string, AdHocWindow> adhoc_windows;
  std::size_t adhoc_sweep_at = 100'000;  // sweep ended windows when the map grows past this

  // ---- archive.cc: one archive or restore at a time (taken without waiting); verify holds it
  // too, so it never sees events both in their blocks and in an archive's records ------------
  mutable std::mutex archive_mutex;

  // ---- the disk reserve: written by the commit thread (admit before each write), read by any
  engine::DiskGuard disk;

  // ---- commit thread only --------------------------------------------------------------------
  engine::DedupIndex dedup;
  // Usage events of answered checks queued or committing, not yet durable (EngineStats).
  std::atomic<std::uint64_t> check_events_not_durable{0};
  std::uint64_t next_seq = 1;
  std::uint32_t next_customer = 1;
  std::int64_t last_key_flush_us = 0;
  std::uint64_t next_txn = 1;

  // ---- the queue (group_commit.h) ---------------------------------------------------------
  engine::CommitQueue commit_queue;
  std::thread committer;

  // ---- the periodic checkpoint (checkpoint.cc): its thread, and what wakes it to stop --------
  std::thread checkpointer;
  std::mutex checkpointer_mutex;
  std::condition_variable checkpointer_cv;
  bool checkpointer_stopping = false;  // guarded by checkpointer_mutex
  // Set by stop(): a periodic write under way gives up between two series (the clean stop's
  // own write follows), so a stop never waits for a whole file.
  std::atomic<bool> checkpoint_abandon{false};
  std::uint64_t checkpoint_written_seq = 0;  // the S of the last file written (checkpointer's)
  // Tests only: called between the chunks of a checkpoint being written, no lock held.
  std::function<void()> checkpoint_between_chunks;

  // ---- alerts (alerts.cc) ----------------------------------------------------------------------
  bool alerts_enabled = false;  // fixed at open: some plan or [alerts] has an alert rule
  // Commit thread only: what changed since alerts were last evaluated, and what has fired.
  std::vector<std::pair<std::uint32_t, std::uint32_t>> alert_touched_limits;  // customer, meter
  std::vector<std::uint32_t> alert_touched_wallets;
  std::set<engine::FiredKey> alerts_fired;
  std::unordered_set<std::uint32_t> balance_low;  // customers whose low-balance alert fired
  std::uint64_t next_alert = 1;
  std::uint64_t next_delivery = 1;
  // Guarded by alerts_mutex (taken after state_mutex, never before; never with limits_mutex).
  mutable std::mutex alerts_mutex;
  mutable std::condition_variable deliveries_cv;
  std::map<std::uint64_t, engine::AlertEntry> alert_records;
  std::map<std::uint64_t, WebhookDelivery> delivery_records;
  std::unordered_map<std::string, std::uint64_t> delivery_nums;  // id -> number
  std::set<std::uint64_t> pending_deliveries;
  std::uint64_t deliveries_added = 0;
  std::uint64_t deliveries_failed = 0;         // status "failed", stored
  std::uint64_t delivery_attempts_failed = 0;  // since open
  bool alerts_closing = false;

  // ---- statistics ----------------------------------------------------------------------------
  std::atomic<std::uint64_t> events_accepted{0};
  std::atomic<std::uint64_t> events_rejected{0};
  std::atomic<std::uint64_t> events_duplicate{0};
  std::atomic<std::uint64_t> batches{0};
  std::atomic<std::uint64_t> commits{0};
  engine::Histogram commit_latency;
  engine::Histogram batch_latency;

  // ---- recovery.cc: the in-memory state from the store, at open ---------------------------
  // Reads sequence numbers, customers, keys, aggregates, the dedup index, wallets,
  // reservations and alerts; rebuilds the meters whose definition changed. REQUIRES: catalog.
  Status load();
  // Every stored minute aggregate and distinct value into memory.
  Status load_aggregates();
  // The dedup records within the dedup window into the (empty) dedup index. Touches nothing
  // else, so load() runs it beside the aggregates' loading.
  Status load_dedup();
  Status rebuild_meter(std::uint32_t meter_index);
  // ---- checkpoint.cc ---------------------------------------------------------------------------
  // Writes every series and group total as of S = installed_seq (read first): each series is
  // copied under a hold of state_mutex shared of its own, so commits go on meanwhile; a series
  // that changed after S belongs to a customer with an event numbered S or later, which
  // load_checkpoint reloads from the store. The S written, in *seq when given. Safe beside the
  // commit thread; not beside another call of itself.
  Status save_checkpoint(std::uint64_t* seq = nullptr);
  // The periodic writer's one step, also a test hook: a checkpoint now, unless the disk guard
  // refuses writes or no sequence number was installed since the last one (then OK, nothing
  // written).
  Status write_checkpoint_now();
  // The checkpointer thread: write_checkpoint_now every storage.checkpoint_interval_seconds
  // until stop.
  void run_checkpointer();
  // Reads the checkpoint into the empty aggregates when it was written for these meters at a
  // sequence number the store has reached, then reloads from the store every customer with an
  // event numbered from there on and rebuilds the group totals; false (and nothing installed)
  // when there is none or it does not match. A writer removes a file it does not use.
  Result<bool> load_checkpoint();
  // Drops the series of customer `cnum` in every meter and reads them again from its stored
  // minute aggregates and distinct values (the totals are left to the caller).
  Status reload_customer(std::uint32_t cnum);
  // Every group total made again from the series.
  void rebuild_totals();
  // Removes the checkpoint file (a writer's, when it no longer matches the store).
  void remove_checkpoint();

  // Tests only: the state behind an engine.
  static Impl& of(Engine& e);

  // ---- engine.cc -----------------------------------------------------------------------------
  // Engine::open on `given_store` instead of the store the options name (null: theirs): the
  // seam through which the simulation (tests/simulation) runs the engine on a fault-injecting
  // store. Internal, so the public API names no store type.
  static Result<std::unique_ptr<Engine>> open_cluster(std::unique_ptr<Impl> impl,
                                                      const EngineOptions& options);
  static Result<std::unique_ptr<Engine>> open(const EngineOptions& options,
                                              std::unique_ptr<store::Store> given_store);
  void start();
  void stop();

  // Every store write of the engine goes through here (the commit thread, or the opening thread
  // before it starts): refused without touching the store while the disk reserve says so
  // (kInsufficientStorage), and a write that finds no space refuses the next ones.
  Status write_store(const store::WriteBatch& wb, bool sync);
  // Request threads, before queuing work that writes: the disk reserve's refusal, or OK.
  Status writes_allowed() const;
  std::uint32_t intern_group(std::string_view group);  // commit thread only
  // Reads the id of the stored event (customer_num, seq), in its block or, once archived, in
  // its archived record; false when absent. Errors: the store's read error (kIOError),
  // kCorruption when its block or record cannot be decoded.
  Result<bool> read_stored_event(std::uint32_t customer_num, std::uint64_t seq, std::string* id,
                                 core::TimeUs* received_at_us) const;
  void install_state(std::uint32_t meter, std::uint32_t customer_num, std::uint32_t group,
                     core::TimeUs minute_us, const core::AggState& delta);
  void install_unique(std::uint32_t meter, std::uint32_t customer_num, std::uint32_t group,
                      core::TimeUs minute_us, const std::string& value);
  // The installed state of one minute aggregate into *out; false, leaving *out as it was, when
  // there is none (a minute before the horizon is read from the store: kIOError, kCorruption).
  // REQUIRES: the commit thread, or state_mutex held.
  Result<bool> minute_state(std::uint32_t meter, std::uint32_t customer_num, std::uint32_t group,
                            core::TimeUs minute_us, core::AggState* out) const;
  // The series of (meter, customer, group), made (bound to old_minutes, holding minutes from
  // minutes_from) when absent. The commit thread, or the opening thread before it starts.
  engine::Series& series_for(std::uint32_t meter, std::uint32_t customer_num, std::uint32_t group);

  // ---- minute_horizon.cc -------------------------------------------------------------------
  // Where the horizon of minutes held falls at `now`: the hour storage.memory_minutes_hours
  // before it; Series::kHoldsAll when that option is 0.
  core::TimeUs minute_horizon(core::TimeUs now) const;
  // Moves the horizon to minute_horizon(clock now) when it passed an hour: every series drops
  // its older minutes, a few customers per hold of state_mutex on the commit thread (admin
  // jobs), so commits go on between. The checkpointer thread calls it on each tick; tests too.
  // Errors: run_admin's (read-only engine, the disk reserve refusing writes).
  Status forget_old_minutes();

  // ---- group_commit.cc ---------------------------------------------------------------------
  void run_committer();
  // One group commit of ingest jobs: one store write, then install and answer (or roll back).
  void commit_ingest(std::vector<std::unique_ptr<engine::IngestJob>>& jobs);
  void commit_admin(engine::AdminJob& job);
  void flush_key_counters(store::WriteBatch& wb, bool force);

  // ---- limit_counters.cc -----------------------------------------------------------------------
  // Applies committed events to limit counters and settles check tokens. Called by the commit
  // thread with state_mutex held exclusively.
  void settle_limits(const std::vector<engine::LimitDelta>& deltas,
                     const std::vector<std::pair<std::uint32_t, std::uint64_t>>& settled);
  // Frees the holds of reservations past their expiry and queues their closes
  // (expired_reservation_ops). REQUIRES: state_mutex held (shared or exclusive) and
  // limits_mutex held.
  void expire_reservations(core::TimeUs now);
  // Forgets the event ids of checks whose usage events were not stored (their commit failed), so
  // that a retry counts instead of being answered as a replay. Takes limits_mutex.
  void forget_check_ids(const std::vector<std::pair<std::uint32_t, std::uint64_t>>& lost);

  // The calendar limits of `meter` for a customer now, with their usage (building counters as a
  // check would). REQUIRES: state_mutex held (shared or exclusive); takes limits_mutex.
  void limit_usages(const engine::CustomerState& cs, std::uint32_t meter, core::TimeUs now,
                    std::vector<engine::LimitUsage>* out);

  // ---- alerts.cc -----------------------------------------------------------------------------
  Status load_alerts();
  // Marks every limited meter of every customer, and every wallet, for evaluation: at open, so
  // an alert lost to a crash between a commit and its alert write fires after the restart.
  void touch_all_for_alerts();
  // Evaluates the alert rules of what changed since the last call, then stores and installs
  // the alerts that fire with their deliveries. Commit thread only.
  void evaluate_alerts(core::TimeUs now);

  // ---- wallet.cc -----------------------------------------------------------------------------
  Status load_wallets();
  // The price of one meter's value for an event with these properties: false when no price
  // of the meter matches. Tiered prices count units in the customer's billing period (from
  // `anchor_us` in `tz`) of the event's time: from `work`'s copy when given (and add the value
  // there), else from the installed state (readers: state_mutex held).
  // The version of a price that applies is the one in effect at the event's time among those
  // created by `known_at_us` (verify passes when the event was priced; commits know all).
  bool price_of(std::uint32_t meter, std::uint32_t customer_num, const core::TimeZone& tz,
                core::TimeUs anchor_us, core::TimeUs time_us, core::Decimal value,
                std::span<const std::pair<std::string_view, std::string_view>> props,
                engine::LedgerWork* work, core::Decimal* cost, core::Decimal* credits,
                core::TimeUs known_at_us = INT64_MAX) const;

  // ---- prices.cc -----------------------------------------------------------------------------
  // Reads the stored prices and versions, gives each configured price its key, stores a
  // version for each config entry that differs from the stored ones (and an ending version for
  // a price the config no longer has), at open, into the catalog being built. Before load.
  Status load_prices(engine::Catalog& catalog_building);
  // The wallet of a customer in `work` (copied in on first use). Commit thread only.
  engine::WalletRecord& work_wallet(engine::LedgerWork& work, std::uint32_t customer_num,
                                    core::TimeUs now);
  // Appends a transaction changing a wallet of `work`. Commit thread only.
  void append_txn(engine::LedgerWork& work, std::uint32_t customer_num, core::Decimal amount,
                  engine::LedgerRecord t);
  // Burns credits for an event from the customer's wallet in `work`; `reservation_id` names
  // the reservation whose commit the event records, or is empty.
  void burn(engine::LedgerWork& work, std::uint32_t customer_num, core::Decimal credits,
            std::string_view event_id, core::TimeUs now, std::string_view reservation_id = {});

  // ---- reservations.cc -------------------------------------------------------------------------
  // Reads the open reservations back into memory with their holds (at open).
  Status load_reservations();
  // Writes reservation opens and closes into `wb` and their hold and release transactions into
  // `work`; `burned` gives the credits the commit burned per usage token. Commit thread only.
  void write_reservations(const std::vector<engine::ReservationOp>& ops,
                          const std::unordered_map<std::uint64_t, core::Decimal>& burned,
                          engine::LedgerWork& work, store::WriteBatch& wb, core::TimeUs now);
  // Marks the opened reservations durable once their write is. REQUIRES: state_mutex held
  // exclusively.
  void install_reservations(const std::vector<engine::ReservationOp>& ops);
  // The commit thread's expiry pass when idle: frees expired holds and writes their closes.
  void expire_reservations_idle(core::TimeUs now);
  // Appends `t` (an adjustment) changing the wallet by the signed `amount`: credits become a
  // grant (paying debt first), a negative amount is taken from the grants (or becomes debt).
  void adjust_wallet(engine::LedgerWork& work, std::uint32_t customer_num, core::Decimal amount,
                     engine::LedgerRecord t, core::TimeUs now);
  // Writes `work` (transactions, wallets, price usage, next txn) into `wb`.
  void write_ledger(const engine::LedgerWork& work, store::WriteBatch& wb) const;
  // Installs `work` into the live state. REQUIRES: state_mutex held exclusively.
  void install_ledger(engine::LedgerWork& work);

  // The ledger half of `tally verify`: chains, balances, and burns against the stored events
  // (priced again from scratch in `priced`, filled by the recompute hook).
  struct PricedEvent {
    core::Decimal stored;    // credits stored with the event
    core::Decimal computed;  // credits its prices give now
  };

  // `rerate_differences`: per customer, what its re-rated events are charged beyond their
  // stored credits, which its re-rating adjustments must take (add back when negative).
  void verify_ledger(
      const std::map<std::pair<std::uint32_t, std::string>, std::vector<PricedEvent>>& priced,
      const std::unordered_map<std::uint32_t, std::string>& ids,
      const std::map<std::uint32_t, core::Decimal>& rerate_differences, VerifyReport* report) const;
  // Applies an admin's wallet transaction to `work`. Errors: kInvalidArgument.
  Status apply_wallet_request(engine::LedgerWork& work, std::uint32_t customer_num,
                              const WalletTransactionRequest& req, core::TimeUs now);
  // Writes expiry transactions for grants past their time. Commit thread only.
  void expire_grants(core::TimeUs now);

  // ---- query.cc ------------------------------------------------------------------------------
  const engine::CustomerState* find_customer(std::string_view id) const;
  // kInvalidArgument naming each plan that stored customers have but the config neither
  // configures nor replaces ([enforcement] replaced_plans), and how many customers have it.
  Status check_plans_configured() const;
  // Whether the dedup index holds event `id` of customer `cs` (named `customer`): a hash match
  // of the same customer, not confirmed against the stored id (a false match of two 64-bit
  // hashes of one customer is not a concern). REQUIRES: state_mutex held (shared or exclusive).
  bool event_id_stored(const engine::CustomerState& cs, std::string_view customer,
                       std::string_view id) const;
};

namespace engine {
// Runs an admin job on the commit thread and waits for its result (admin.cc).
Status run_admin(Engine::Impl& d, std::function<Status(store::WriteBatch&)> prepare,
                 std::function<void()> install);

// Series::combine over every group of one customer's series of a meter. Errors: Series::combine.
[[nodiscard]] Status combine_customer(const MeterAggregates& m, std::uint32_t customer_num,
                                      core::TimeUs a, core::TimeUs b, bool want_uniques,
                                      core::AggState* state, core::UniqueSet* uniques);
// The minutes a series no longer holds, read from the engine's store (minute_horizon.cc).
std::unique_ptr<OldMinutes> make_store_minutes(const Engine::Impl& d);

// A whole decimal number of 1 to 19 digits (no sign), as ids and cursors carry them; false
// when `text` is anything else (query.cc).
bool parse_u64(std::string_view text, std::uint64_t* out);
// The position a page's `next_cursor` gave; "" = the start (0). Errors: kInvalidArgument.
Status parse_cursor(const std::string& cursor, std::uint64_t* after);

// The plan of a customer: its own, or the default; null when it has none (limit_counters.cc).
const core::Plan* plan_of(const config::Config& config, const Customer& c);

// The `n` group-by values of an interned group text (values joined by '\x1f'); missing ones
// are empty (query.cc).
std::vector<std::string_view> split_group(std::string_view text, std::size_t n);

// Recomputes the minute aggregates of the given meters from every stored event.
// Output: aggregate key -> state, and the set of unique keys.
struct Recomputed {
  std::map<std::string, core::AggState> aggregates;
  std::map<std::string, bool> uniques;
  std::uint64_t events = 0;
  std::vector<std::string> problems;  // duplicate ids, corrupt blocks
};

// An id stored twice for one customer is a problem only when the copies were received within
// `dedup_window_us` of each other (0 = forever): after the window a copy is accepted again.
// `on_event`, when set, sees every stored event in (customer, sequence) order with a one-event
// batch holding it.
using RecomputeHook =
    std::function<void(std::uint32_t customer_num, const BlockEvent& e, const core::EventBatch& b)>;
// The one-event batch meters read a stored event from (verify.cc).
void stored_event_batch(std::string_view customer, const BlockEvent& be, core::EventBatch* b);

// Calls fn(meter, minute_us, group, input) for every meter of `meters` that stored event `be`
// (one-event batch `b`) feeds.
template <typename Fn>
void for_each_meter_fed(const std::vector<core::MeterSpec>& meters, const BlockEvent& be,
                        const core::EventBatch& b, Fn&& fn) {
  core::MeterInput input;
  std::string group;
  for (const auto& m : meters) {
    if (m.event_type == be.type && core::meter_accepts(m, b, b.events()[0], &input, &group)) {
      fn(m, core::floor_to(be.time_us, core::kUsPerMinute), group, input);
    }
  }
}

// Adds what one stored event gives the minute aggregates and distinct values of `meters`.
void add_event_aggregates(const std::vector<core::MeterSpec>& meters, std::uint32_t cnum,
                          const BlockEvent& be, const core::EventBatch& b,
                          std::map<std::string, core::AggState>* aggregates,
                          std::map<std::string, bool>* uniques);

// Prices stored events again from scratch, fed in (customer, sequence) order, as their commits
// priced them: verify compares the result with what was stored and burned, and archiving
// records the archived events' part. Tiered prices count units from those that archives
// recorded (seed_from_archives), so a period partly archived prices on where it left off.
class Repricer {
 public:
  explicit Repricer(const Engine::Impl& d);
  Status seed_from_archives();
  // Prices one event; returns whether a price applied, with its credits in *credits. Adds its
  // cost and credits to the hidden meters' minute states in `hidden` when set, and counts its
  // tiered units in `units` when set.
  // With `as_committed`, the versions known when the event was committed price it (as its
  // commit did); without, every version (re-rating).
  bool price(std::uint32_t cnum, const BlockEvent& be, const core::EventBatch& b,
             std::map<std::string, core::AggState>* hidden, core::Decimal* credits,
             LedgerWork* units, bool as_committed = true);
  // Whether events of `type` were priced by a meter the configuration no longer has: their
  // stored credits cannot be priced again.
  bool priced_by_removed_meter(std::string_view type) const;

 private:
  const Engine::Impl& d_;
  LedgerWork work_;
  std::unordered_map<std::uint32_t, std::pair<core::TimeZone, core::TimeUs>> periods_;
  core::MeterInput input_;
  std::string group_;
  std::vector<std::pair<std::string_view, std::string_view>> props_;
};

// Adds the baselines archives recorded (Space::kArchive) to a recomputation: archived events'
// part of aggregates and distinct values (of the meters in `meter_keys`), and each archived
// priced event's credits to `priced`; counts archived events in *archived.
Status add_archive_baselines(
    const store::Store& store, const std::set<std::string>& meter_keys, Recomputed* r,
    std::map<std::pair<std::uint32_t, std::string>, std::vector<Engine::Impl::PricedEvent>>* priced,
    std::uint64_t* archived);

// `on_customer_done`, when set, is called after the last event of each customer (in customer
// number order) with what was recomputed so far; it takes that customer's aggregates and
// distinct values out of *out, so a whole store never sits in memory at once. An error it
// returns ends the recomputation with that error.
using CustomerDone = std::function<Status(std::uint32_t customer_num, Recomputed* r)>;

// Customer numbers [first, end); the default holds every one.
struct CustomerRange {
  static constexpr std::uint64_t kEnd = std::uint64_t{1} << 32;
  std::uint64_t first = 0;
  std::uint64_t end = kEnd;
};

// Reads the events of the customers in `customers` only.
Status recompute(const store::Store& store, const std::vector<core::MeterSpec>& meters,
                 const std::unordered_map<std::uint32_t, std::string>& customer_ids,
                 Recomputed* out, std::int64_t dedup_window_us = 0,
                 const RecomputeHook& on_event = {}, const CustomerDone& on_customer_done = {},
                 CustomerRange customers = {});
}  // namespace engine

}  // namespace tally
