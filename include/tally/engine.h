// tally::Engine: the whole of Tally in-process. The `tally` server, the CLI, the tests and any
// C++ program that embeds Tally use this one class.
//
// An Engine owns a data directory (or an in-memory store), the meters of its configuration,
// and everything read often: aggregates, the dedup index, customers and keys. Ingest goes
// through one group-commit pipeline: an ingest call is answered only after its events, their
// aggregates and their dedup entries are on disk in one atomic write (fsync), shared by every
// batch that arrived meanwhile. Reads are answered from memory.
//
// With a `[cluster]` section in the configuration, the Engine is a stateless node of the
// scale-out mode instead (docs/cluster.md): its state is in PostgreSQL and a Redis Cluster, and
// every method the mode does not have yet answers kNotImplemented (HTTP 501), never a silent
// difference.
//
// Thread safety: every method may be called from any thread at once.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <tally/clock.h>
#include <tally/status.h>
#include <tally/types.h>

namespace tally {

struct EngineOptions {
  std::string config_path;       // a TOML file; empty = defaults (and config_toml, if set)
  std::string config_toml;       // TOML text, used when config_path is empty (tests, embedding)
  std::string data_dir;          // overrides the config's data_dir when set
  bool in_memory = false;        // no disk at all: for tests and simulations
  bool read_only = false;        // open a live data directory for reading (verify, queries)
  const Clock* clock = nullptr;  // not owned; null = the system clock
  std::string admin_key;         // an extra admin key (from TALLY_ADMIN_KEY); empty = none
};

class Engine {
 public:
  // Opens the store, loads state into memory, rebuilds the aggregates of meters whose
  // definition changed, and starts the commit thread; with [cluster], connects to PostgreSQL
  // (checking each shard's schema) and Redis instead.
  // Errors: kInvalidArgument (config, a cluster schema to migrate), kUnavailable (directory in
  // use, a cluster server unreachable), kIOError, kCorruption.
  static Result<std::unique_ptr<Engine>> open(const EngineOptions& options);

  // Finishes in-flight commits, then closes the store.
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // ---- ingest -------------------------------------------------------------------------------
  using IngestCallback = std::function<void(Result<IngestSummary>)>;

  // Parses a JSON body (see docs/api.md for the accepted shapes) and commits its valid events.
  // `done` runs once, on the commit thread (or at once for requests refused before commit),
  // after the events are durable. Invalid events, unknown customers (auto-create off) and
  // duplicates are not errors: they are counted and listed in the IngestSummary, also when no
  // event was valid. Errors passed to `done`: kInvalidArgument with kInvalidJsonDetails
  // (malformed JSON, content after the document, a body of the wrong shape, no events),
  // kPermissionDenied (a customer key sent another customer's events), kPayloadTooLarge (more
  // than batch_events_max events),
  // kUnavailable (queue full, shutting down, or opened read-only), kIOError / kCorruption (the
  // commit could not be written, or a stored event needed for dedup could not be read; nothing
  // of the request is stored), kInsufficientStorage (the data directory's disk is below its
  // reserve, or the commit found it full; nothing is stored, retry once space is freed).
  void ingest_json_async(std::string body, const IngestOptions& options, IngestCallback done);
  // The same, waiting for the answer.
  Result<IngestSummary> ingest_json(std::string body, const IngestOptions& options = {});

  // ---- reads --------------------------------------------------------------------------------
  std::vector<MeterInfo> meters() const;
  // The meter's aggregates over the query's range, by window, customer and group.
  // Errors: kNotFound (meter, customer), kInvalidArgument (window, zone, range, group_by,
  // filter, cost or credits of a meter without a price; with kQueryTooLargeDetails: more than
  // 100,000 rows).
  Result<QueryResult> query(const MeterQuery& q) const;
  // Totals per meter for one customer over [from, to); from = to = 0 means the current
  // calendar month in the customer's zone. Errors: kNotFound.
  // The customer's billing period that contains `at_us`: monthly from the day of its billing
  // anchor (its creation when none is set), midnight in its zone, as tiered prices count it.
  // Errors: kNotFound.
  Result<Period> billing_period(const std::string& customer, TimeUs at_us) const;
  Result<CustomerUsage> customer_usage(const std::string& customer, TimeUs from_us,
                                       TimeUs to_us) const;
  Result<EventPage> list_events(const EventListQuery& q) const;

  // ---- checks (see docs/api.md "Checks") -------------------------------------------------------
  // Evaluates every rule that applies (customer status, feature, each limit of the plan on the
  // meter) atomically; when allowed and consuming, counts the amount at once and queues its
  // usage event for the next group commit (with check_durability = "sync", returns after it is
  // durable). A denial is a result, not an error. Errors: kNotFound (customer, meter),
  // kInvalidArgument (amount, fields), kUnavailable (read-only), kInsufficientStorage (a
  // consuming check while writes are refused for lack of disk space; a dry run is answered).
  Result<CheckResult> check(const CheckRequest& request);
  // Up to 100 checks, all or nothing: when one is denied, none consumes.
  Result<std::vector<CheckResult>> check_batch(const std::vector<CheckRequest>& requests);
  // Settles a reservation with the actual amount ("" = the reserved amount; "0" records
  // nothing) and frees the rest. A non-empty `restrict_customer` (a customer key's customer)
  // sees only that customer's reservations: another's is kNotFound, as an unknown one is.
  // Errors: kNotFound (unknown, expired or another customer's), kInvalidArgument.
  Result<CheckResult> commit_reservation(const std::string& id, const std::string& amount,
                                         const std::string& restrict_customer = {});
  // Frees a reservation. Errors: kNotFound (unknown, expired or another customer's).
  Status release_reservation(const std::string& id, const std::string& restrict_customer = {});
  // Plan, features and every limit with its usage now. Errors: kNotFound.
  Result<LimitsReport> limits_report(const std::string& customer);
  // One page of the customers matching a search, sorted, each with its highest limit
  // percentage now. Sorting by usage evaluates every matching customer's limits; the other
  // sorts only the page's. Ties are broken by id. Errors: kInvalidArgument (limit).
  Result<CustomerSummaryPage> customer_summaries(const CustomerSummaryQuery& query);
  // Replaces the customer's limit overrides. Errors: kNotFound, kInvalidArgument.
  Result<Customer> set_overrides(const std::string& customer,
                                 const std::vector<LimitOverride>& overrides);
  // Starts the current period of a meter's limits over for one customer, from now on; usage
  // history is kept, and the reset is written to the audit log. Errors: kNotFound,
  // kInvalidArgument.
  Result<Customer> reset_period(const std::string& customer, const std::string& meter,
                                const std::string& actor);
  // Tally's own API rate limit ([enforcement] api_rate_limit_per_minute), by GCRA per key:
  // counts one request of `key_id` and says whether it is allowed, with the limit's state for
  // the rate-limit headers. Always allowed (has_rule false) when the limit is off.
  CheckResult limit_api_request(const std::string& key_id);
  // The customer's denied checks over the last hour, per minute (in memory: a restart starts
  // them at zero). A denied check of a batch counts; its allowed siblings, not consumed, do
  // not. Errors: kNotFound.
  Result<DenialHistory> denials_last_hour(const std::string& customer) const;
  // The newest `limit` audit records (JSON objects), oldest first.
  Result<std::vector<std::string>> audit_log(std::size_t limit) const;

  // ---- wallets (see docs/api.md "Wallets") ----------------------------------------------------
  // The customer's credit wallet (an empty one when nothing was ever granted). Errors: kNotFound.
  Result<Wallet> wallet(const std::string& customer);
  // Records an admin's grant, top_up, refund or adjustment, durable when it returns, with its
  // audit record naming `actor`. Errors: kNotFound, kInvalidArgument.
  Result<LedgerTransaction> wallet_transaction(const std::string& customer,
                                               const WalletTransactionRequest& request,
                                               const std::string& actor = {});
  // Several of an admin's transactions on one wallet in one durable write, all or none (each
  // checked as wallet_transaction checks it), in order. With `only_if_new`, refused with
  // kAlreadyExists when the wallet already has a transaction: a wallet opened this way is
  // opened once, also by concurrent callers. Errors: kNotFound, kInvalidArgument,
  // kAlreadyExists.
  Result<std::vector<LedgerTransaction>> wallet_transactions_atomic(
      const std::string& customer, const std::vector<WalletTransactionRequest>& requests,
      bool only_if_new = false);
  // The customer's ledger, oldest first. Errors: kNotFound, kInvalidArgument.
  Result<LedgerPage> wallet_transactions(const LedgerQuery& query) const;

  // ---- ad-hoc limits (see docs/api.md "Ad-hoc limits")
  // ------------------------------------------- Counts each limit's cost in its current window, all
  // or nothing: when any is over, none counts (each result says whether it fits). In memory, like
  // rate buckets. At most 100. Errors: kInvalidArgument, kUnavailable (too many live windows).
  Result<std::vector<AdHocResult>> limit_adhoc(const std::vector<AdHocLimit>& limits);

  // ---- prices (see docs/api.md "Prices")
  // --------------------------------------------------------- Every price with its versions: the
  // configured ones in config order, then those removed.
  std::vector<PriceInfo> prices() const;
  // Re-rating: the current price versions applied to the customer's priced events whose event
  // time is in [from, to), with one `adjustment` transaction per billing period for the
  // difference (none in a dry run); running it again changes nothing. Archived events are not
  // re-rated. Errors: kNotFound, kInvalidArgument.
  Result<RepriceReport> reprice(const RepriceRequest& request);

  // ---- reports and statistics (see docs/api.md "Reports") --------------------------------------
  // The meter's value per window of one customer over the range, every window listed (0 for
  // count, sum and unique_count without events; no value for the others), optionally also one
  // series per value of a group-by property. At most 10,000 windows.
  // Errors: kNotFound (customer, meter), kInvalidArgument (window, zone, range, property).
  Result<UsageHistory> usage_history(const HistoryQuery& q) const;
  // Customer, plan, current calendar month's usage, limits, warnings, and per meter a breakdown
  // by `group_by` (or, when empty, by the meter's first group-by property).
  // Errors: kNotFound, kInvalidArgument (a property no meter groups by).
  Result<UsageReport> usage_report(const std::string& customer, const std::string& group_by);
  // Every meter over the customers naming `organization`, over [from, to) (from = to = 0: the
  // current calendar month in `timezone`, "" = UTC).
  // Errors: kNotFound (no customer names it), kInvalidArgument.
  Result<OrganizationUsage> organization_usage(const std::string& organization, TimeUs from_us,
                                               TimeUs to_us, const std::string& timezone) const;
  // One page of the organizations that customers name, each with its number of customers, the
  // highest limit percent of a member now and every meter's total this calendar month (UTC);
  // sorted by that percent, highest first (none last), ties by id. Evaluates every member's
  // limits. Errors: kInvalidArgument (limit not 1..100).
  Result<OrganizationSummaryPage> organization_summaries(std::uint32_t offset, std::uint32_t limit);
  // The `n` customers with the largest value of the meter over the current `period` (in
  // `timezone`) or, with no period, over [from, to).
  // Errors: kNotFound (meter), kInvalidArgument (with kQueryTooLargeDetails: more than 100,000
  // customers have events in the range).
  Result<TopUsage> top_customers(const std::string& meter, std::optional<Window> period,
                                 TimeUs from_us, TimeUs to_us, const std::string& timezone,
                                 std::uint32_t n) const;
  // Statistics of the meter's per-window values (see docs/api.md for the exact definitions).
  // Errors: kNotFound (customer, meter), kInvalidArgument.
  Result<MeterStats> meter_stats(const StatsQuery& q) const;

  // ---- alerts and webhook deliveries (see docs/webhooks.md) -----------------------------------
  // Alerts are evaluated by the engine as usage changes and stored with their deliveries (a
  // durable outbox, one delivery per alert and subscribed [[webhooks]] entry). Sending is the
  // job of a webhook sender (src/webhook), which takes due deliveries and reports attempts.
  // Errors: kInvalidArgument (cursor, level, status).
  Result<AlertPage> alerts(const AlertQuery& query) const;
  // One alert with its deliveries. Errors: kNotFound.
  Result<Alert> alert(const std::string& id) const;
  // Up to `max` pending deliveries due at `now`, oldest first, skipping `skip` (ids being sent).
  // *next_due_us: the earliest later attempt (0 = none pending).
  std::vector<WebhookDelivery> due_deliveries(TimeUs now, std::size_t max,
                                              const std::vector<std::string>& skip,
                                              TimeUs* next_due_us) const;
  // Records an attempt durably. Errors: kNotFound, kIOError.
  Status record_delivery_attempt(const DeliveryAttempt& attempt);
  // Waits up to `max_wait_us` for a delivery to be added (or the engine to close). Returns the
  // number of deliveries ever added, to pass back as `seen`.
  std::uint64_t wait_for_deliveries(std::uint64_t seen, TimeUs max_wait_us) const;

  // ---- customers ----------------------------------------------------------------------------
  // Errors: kInvalidArgument, kAlreadyExists.
  Result<Customer> create_customer(const Customer& c);
  Result<Customer> get_customer(const std::string& id) const;  // kNotFound
  std::vector<Customer> list_customers() const;
  // Changes of plan and status and the other fields are written to the audit log with
  // `actor` (the key id that acted; "" = none given), in the same write.
  Result<Customer> update_customer(const std::string& id, const CustomerPatch& patch,
                                   const std::string& actor = {});

  // ---- API keys -----------------------------------------------------------------------------
  // Creating and revoking a key are audited with `actor`. kNotFound (customer).
  Result<NewApiKey> create_key(const NewApiKeyRequest& request, const std::string& actor = {});
  std::vector<ApiKeyInfo> list_keys() const;
  Status revoke_key(const std::string& key_id, const std::string& actor = {});  // kNotFound
  // Checks a presented secret and counts the use (total_requests, last_used_at).
  // Errors: kUnauthenticated (unknown or revoked), kPermissionDenied (customer suspended).
  Result<Identity> authenticate(std::string_view secret);
  // The same for the key whose id is `key_id`, as authenticate() found it earlier: what that
  // key may do now (so a dashboard session made from a key ends with the key's revocation and
  // follows its customer's suspension). Counts the use. Errors: as authenticate().
  Result<Identity> authenticate_key_id(const std::string& key_id);

  // ---- operations ---------------------------------------------------------------------------
  EngineStats stats() const;
  // Whether the store answers reads and accepts writes. Errors: kUnavailable / kIOError (the
  // store cannot be read), kInsufficientStorage (writes are refused for lack of disk space;
  // reads still work; see [storage] disk_reserve_bytes).
  Status ready() const;
  // Recomputes every aggregate from the stored events (and what archives recorded of theirs)
  // and compares (see `tally verify`). Waits for an archive or restore in progress.
  Result<VerifyReport> verify() const;
  // Moves every stored event whose event time is before the request's cutoff to a new
  // zstd-compressed JSON Lines file and a manifest in the archive directory (both fsynced and
  // read back), then removes them from the hot store in one write that also records what
  // verify and dedup need of them; aggregates and the ledger are not touched. Ingest and
  // checks keep running. At most 1,000,000 events per call (`more` says whether some remain).
  // Nothing older than the cutoff: OK with events = 0 and no file.
  // Errors: kInvalidArgument (no cutoff: no age given and none configured), kUnavailable
  // (read-only, or another archive, restore or verify is running), kIOError (the directory or
  // file).
  Result<ArchiveResult> archive(const ArchiveRequest& request);
  // Puts the events of an archive (its .jsonl.zst file or its manifest) back into the hot store
  // with their original sequences, and forgets the archive's records. Restoring an archive
  // already restored changes nothing. A file whose size, checksum or content does not match
  // its manifest is refused and nothing changes.
  // Errors: kNotFound (file), kCorruption (size, checksum or count differ from the manifest),
  // kInvalidArgument (not an archive or manifest), kUnprocessable (an archive this data
  // directory has no record of, or a customer it does not know), kUnavailable.
  Result<RestoreResult> restore(const std::string& path);
  // Waits until everything submitted so far is committed. For tests and the CLI.
  void flush();
  const Clock& clock() const;

  struct Impl;

 private:
  explicit Engine(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally
