// Tally's configuration: one TOML file, loaded once at start.
//
// Every option lives in one table (options.cc) that both validates the file and generates the
// documented reference (docs/configuration.md). Unknown keys and invalid values fail start-up
// with the file, line and key named.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tally/status.h>

#include "core/limits.h"
#include "core/meter.h"
#include "core/pricing.h"

namespace tally::config {

struct ServerConfig {
  std::string listen_host = "127.0.0.1";
  std::uint16_t listen_port = 8080;
  std::string data_dir = "./data";
  int threads = 0;                                    // HTTP I/O threads; 0 = number of cores
  std::uint64_t body_bytes_max = 10 * 1024 * 1024;    // larger bodies get 413
  std::uint32_t batch_events_max = 10'000;            // more events in one request get 413
  std::int64_t future_skew_seconds_max = 300;         // event time this far ahead is refused
  bool auto_create_customers = true;                  // false: unknown customers get 422
  bool accept_unmetered_events = false;               // false: types no meter takes are refused
  std::string admin_key;                              // optional; TALLY_ADMIN_KEY also works
  std::uint32_t connections_max = 10'000;             // open connections, all clients
  std::uint32_t connections_per_address_max = 1'000;  // of one client address (IPv6: /64)
  std::uint32_t header_timeout_ms = 10'000;           // to send a whole request head
  std::uint32_t idle_timeout_ms = 60'000;             // between requests on a kept-alive connection
  int scan_threads = 2;                               // threads for scans, exports and reports
  std::uint32_t scan_queue_max = 256;                 // such requests waiting; more get 503
  std::uint32_t page_budget_ms = 200;                 // a page of events stops scanning after it
  std::uint32_t dashboard_session_seconds = 3600;     // a dashboard sign-in lasts this long
  std::uint32_t dashboard_sessions_max = 10'000;      // open dashboard sessions, all keys

  friend bool operator==(const ServerConfig&, const ServerConfig&) = default;
};

struct StorageConfig {
  bool fsync = true;                         // 202 only after fsync; off only for tests/benchmarks
  std::uint32_t commit_interval_us = 0;      // extra wait to gather a group commit (0 = none)
  std::uint32_t commit_events_max = 50'000;  // events in one group commit
  std::int64_t dedup_window_seconds = 0;     // 0 = forever (while the event is retained)
  // Minute aggregates older than this many hours before now are not kept in memory (their
  // hours and days are; reads of them go to the store); 0 = keep every minute.
  std::uint32_t memory_minutes_hours = 48;
  std::uint32_t checkpoint_interval_seconds = 60;  // aggregates checkpoint while running; 0 = off
  std::uint64_t block_cache_bytes = 64ull << 20;
  // Writes are refused (507) while the data directory's filesystem has less free space than
  // the smaller of these: room kept for the store's own flushes and compactions. 0 = off.
  std::uint64_t disk_reserve_bytes = 256ull << 20;
  std::uint32_t disk_reserve_percent = 5;  // of the filesystem's size

  friend bool operator==(const StorageConfig&, const StorageConfig&) = default;
};

struct CustomerSeed {
  std::string id;
  std::string name;
  std::string email;
  std::string timezone;  // IANA name; empty = UTC
  std::string plan;      // a configured plan; empty = the default plan
  std::string credits;   // decimal text granted when the seed creates the customer; "" = none

  friend bool operator==(const CustomerSeed&, const CustomerSeed&) = default;
};

// How checks behave.
struct EnforcementConfig {
  bool check_sync = false;  // true: a consuming check answers after its event is durable
  std::int64_t reservation_ttl_seconds = 300;
  std::string default_plan;  // the plan of customers that name none; "" = no limits
  std::uint32_t api_rate_limit_per_minute = 0;     // per API key on Tally's own API; 0 = off
  std::string authorize_key_header = "x-api-key";  // where /v1/authorize finds the end key
  // Plans removed from the config, and the configured plan their customers now have
  // (removed key, new key). A stored customer whose plan is neither configured nor here stops
  // the engine from opening: its limits would silently vanish.
  std::vector<std::pair<std::string, std::string>> replaced_plans;

  friend bool operator==(const EnforcementConfig&, const EnforcementConfig&) = default;
};

// Retention of raw events ([retention]): which events `tally archive` and the server's
// schedule move to archive files. Aggregates and the ledger are never archived.
struct RetentionConfig {
  std::int64_t archive_after_seconds = 0;        // archive events older than this; 0 = never
  std::string archive_dir;                       // empty = <data_dir>/archive
  std::int64_t archive_interval_seconds = 3600;  // how often the server runs the archive

  friend bool operator==(const RetentionConfig&, const RetentionConfig&) = default;
};

// The scale-out mode's servers ([cluster], docs/cluster.md): PostgreSQL shards and Redis seeds.
// Only parsed and validated here; `tally migrate` uses `postgres`, and `tally serve` refuses to
// start with a [cluster] section until the mode is built (issue #11).
struct ClusterConfig {
  // libpq connection strings, one per shard; customers are spread over them by a stable hash of
  // the customer id. At least one.
  std::vector<std::string> postgres;
  std::vector<std::string> redis;  // "host:port" seeds of a Redis Cluster (or one Redis)
  std::int64_t postgres_pool = 8;  // connections per node per shard
  std::int64_t redis_pool = 8;     // connections per node per Redis node
  std::int64_t connect_timeout_seconds = 5;
  std::int64_t command_timeout_seconds = 10;
  // Leased checks (docs/cluster.md, "Leased checks"): a node takes this much of every limit of
  // a (customer, meter) from Redis at once and answers checks from it locally; 0 = off.
  core::Decimal check_lease;
  std::int64_t check_lease_ms = 1000;  // a lease's life; then what is left goes back to Redis

  friend bool operator==(const ClusterConfig&, const ClusterConfig&) = default;
};

// What credits are worth. Prices name a currency; credits = cost x per_currency_unit x
// (1 + markup_percent / 100).
struct CreditsConfig {
  std::string currency = "USD";
  core::Decimal per_currency_unit = core::Decimal::from_int(1);
  core::Decimal markup_percent;

  friend bool operator==(const CreditsConfig&, const CreditsConfig&) = default;
};

// One [[prices]] entry: the spec, with credits_per_currency_unit computed from [credits] and
// the entry's own markup.
struct PriceConfig {
  core::PriceSpec spec;
  bool has_markup = false;  // markup_percent given here, overriding [credits]
  core::Decimal markup_percent;
  bool has_unit_price = false;
  // effective_from: this version's start (event time); without it, when the server first runs
  // with this spec.
  bool has_effective_from = false;
  core::TimeUs effective_from_us = 0;
};

// [alerts]: the defaults of plans that set no alert rules of their own.
struct AlertsConfig {
  std::vector<std::int64_t> thresholds;  // percent of each limit, ascending; [] = none
  std::vector<AlertLevel> levels;        // of the thresholds; [] = core::alert_level()'s
  bool has_balance_below = false;
  core::Decimal balance_below;  // a low-balance alert when a wallet drops below this

  friend bool operator==(const AlertsConfig&, const AlertsConfig&) = default;
};

// One [[webhooks]] endpoint: where events are POSTed, signed with `secret`, and how long a
// failing delivery is retried.
struct WebhookConfig {
  std::string url;  // http://host[:port]/path
  std::vector<std::string> events{"alert.triggered"};
  std::string secret;
  std::int64_t timeout_seconds = 10;               // per attempt
  std::int64_t retry_for_seconds = 3 * 86'400;     // then the delivery fails
  std::int64_t retry_backoff_seconds = 1;          // before the first retry; doubles
  std::int64_t retry_backoff_max_seconds = 3'600;  // the longest wait between attempts

  friend bool operator==(const WebhookConfig&, const WebhookConfig&) = default;
};

// The event types a webhook may subscribe to ("*" = all).
inline constexpr std::string_view kWebhookEvents[] = {"alert.triggered"};

// One [[notifications]] entry: alert emails sent through an SMTP server, from the same durable
// outbox as webhooks (docs/operations.md, "Email alerts"). The password is never in the file:
// `password_env` names the environment variable that holds it, read by `tally serve`.
struct NotificationConfig {
  std::string host;
  std::uint16_t port = 587;
  bool starttls = true;  // "required" (true) or "off" (false)
  std::string ca_file;   // PEM certificates to trust for STARTTLS; "" = the system's
  std::string user;      // "" = no AUTH
  std::string password_env;
  std::string from;
  std::string from_name = "Tally";
  std::string subject_prefix = "[Tally]";
  std::vector<std::string> to;  // fixed recipients
  bool to_customer = false;     // also the alert's customer's `email`
  std::vector<std::string> events{"alert.triggered"};
  std::vector<AlertLevel> levels;                  // alert levels sent; [] = all
  std::vector<AlertKind> kinds;                    // alert kinds sent; [] = all
  std::int64_t timeout_seconds = 30;               // per attempt, the whole SMTP exchange
  std::int64_t retry_for_seconds = 3 * 86'400;     // then the delivery fails
  std::int64_t retry_backoff_seconds = 10;         // before the first retry; doubles
  std::int64_t retry_backoff_max_seconds = 3'600;  // the longest wait between attempts

  friend bool operator==(const NotificationConfig&, const NotificationConfig&) = default;
};

// Maps an original request (for /v1/authorize) to a meter.
struct RouteRule {
  std::string path;    // "/api/v1/llm/*" (glob: '*' any run of characters) or a prefix
  std::string method;  // "" = any
  std::string meter;
  core::Decimal amount = core::Decimal::from_int(1);
  std::string feature;  // "" = none required

  friend bool operator==(const RouteRule&, const RouteRule&) = default;
};

// Whether `path` matches the rule's pattern: with a '*', as a glob over the whole path;
// without one, as a prefix ending at a '/' boundary or the end.
bool route_matches(const RouteRule& rule, std::string_view method, std::string_view path);

struct Config {
  std::string source_path;  // the file this came from, for messages; empty for defaults
  ServerConfig server;
  StorageConfig storage;
  EnforcementConfig enforcement;
  std::vector<core::MeterSpec> meters;
  std::vector<CustomerSeed> customers;
  std::vector<core::Plan> plans;
  std::vector<RouteRule> routes;
  CreditsConfig credits;
  RetentionConfig retention;
  std::vector<PriceConfig> prices;  // in file order: the first matching price of a meter applies
  AlertsConfig alerts;
  std::vector<WebhookConfig> webhooks;
  std::vector<NotificationConfig> notifications;
  // Present when the file has a [cluster] section (the scale-out mode, not built yet).
  std::optional<ClusterConfig> cluster;

  const core::Plan* find_plan(std::string_view key) const;
  const core::MeterSpec* find_meter(std::string_view key) const;
};

// Makes one limit from its parts, as the overrides API gives them.
// amount: an integer, "unlimited", -1 or a decimal string. Errors: kInvalidArgument.
Result<core::LimitRule> make_limit(std::string meter, core::PeriodKind period, std::int64_t days,
                                   std::string_view amount, bool hard);
// The same with the period as the configuration's text gives it ("day"; an unknown text is
// refused with the message of core::parse_period).
Result<core::LimitRule> make_limit(std::string meter, std::string_view period, std::int64_t days,
                                   std::string_view amount, bool hard);

// Parses TOML text. `path` names the file in messages ("tally.toml:12: unknown key 'x'").
// Errors: kInvalidArgument with file, line and key.
Result<Config> parse_config(std::string_view toml_text, std::string_view path);

// Reads and parses a file. Errors: kNotFound when the file cannot be read; as parse_config.
Result<Config> load_config_file(const std::string& path);

// Parses "host:port" ("127.0.0.1:8080", "[::1]:0", ":8080" = all interfaces).
// ":8080" yields host "0.0.0.0"; brackets are removed from IPv6 hosts ("[::1]" -> "::1").
// Errors: kInvalidArgument saying what is wrong; *host and *port are unchanged then.
// REQUIRES: host and port are not null.
Status parse_listen(std::string_view text, std::string* host, std::uint16_t* port);

// Parses a byte size: "10485760", "512KiB", "64MiB", "1GiB", "10MB" (KiB/MiB/GiB/TiB are powers
// of 1024, KB/MB/GB/TB powers of 1000, "B" is bytes; units are case-insensitive; a space may
// precede the unit). Whole numbers only. Errors: kInvalidArgument. REQUIRES: bytes not null.
Status parse_byte_size(std::string_view text, std::uint64_t* bytes);

// Parses a duration into seconds: "45s", "90m", "12h", "30d", "2w", sums such as "1h30m", or
// bare digits (seconds). Errors: kInvalidArgument. REQUIRES: seconds not null.
Status parse_duration_seconds(std::string_view text, std::int64_t* seconds);

// One row of the option table, for help text and the generated reference.
struct OptionInfo {
  std::string section;            // "server", "storage", "meters", "customers"
  bool section_is_array = false;  // true for [[meters]] and [[customers]]
  std::string key;
  std::string type;          // "integer (0..256)", "size", "duration", "host:port", ...
  std::string default_toml;  // the default as TOML text ("\"64MiB\"", "true"); empty = none
  bool required = false;
  std::string doc;
};

// Every option, in the order of the reference.
std::vector<OptionInfo> config_options();

// The option reference as Markdown (one table per section), generated from the same table that
// parses the file. docs/configuration.md embeds it verbatim; a test keeps the two in step.
std::string config_reference_markdown();

}  // namespace tally::config
