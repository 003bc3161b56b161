// Loading Tally's TOML configuration.
//
// Design, after Redis's config.c: every option is one row of a table below (section, key, type,
// bounds, default, doc text, setter). The same rows drive parsing, validation and the reference
// text that docs/configuration.md embeds, so an option cannot exist without its documentation
// and the docs cannot describe an option the parser does not know.
//
// Guarantees:
// - Anything the table does not name (a section, a key, a key inside a [[meters]] entry) is an
//   error, never silently ignored: a typo must not leave a limit or a meter unconfigured.
// - Errors name the file, the line and the field ("tally.toml:9: meters[1].aggregation: ...").
//   Keys are visited in file order, so the error reported is the first one in the file.
// - toml++ is used only in this file; its exceptions are caught here and become Status values.
// - An empty file, or no file at all, gives the defaults of `Config{}`.
#include "config/config.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <span>
#include <sstream>
#include <system_error>
#include <type_traits>
#include <utility>

#include <toml++/toml.h>

#include "core/ids.h"
#include "core/time.h"

namespace tally::config {
namespace {

// Bounds on what the file may hold, so a config cannot make start-up unbounded.
constexpr std::size_t kMetersMax = 1024;
constexpr std::int64_t kReplacedPlansMax = 256;
constexpr std::size_t kCustomersMax = 10'000;
constexpr std::size_t kMeterKeyBytesMax = 64;
constexpr std::int64_t kGroupByMax = 8;
constexpr std::int64_t kFilterEntriesMax = 16;
constexpr std::size_t kNameBytesMax = 128;  // group_by entries and filter keys
constexpr std::size_t kFilterTextBytesMax = 1024;

constexpr std::int64_t kKiB = 1024;
constexpr std::int64_t kMiB = 1024 * kKiB;
constexpr std::int64_t kGiB = 1024 * kMiB;
constexpr std::int64_t kTiB = 1024 * kGiB;
constexpr std::int64_t kSecondsPerDay = 86'400;

// How a TOML value is read before its setter sees it.
enum class Kind {
  kString,   // bounds: length in bytes
  kStringOrBool,  // a string (bounds: length) or true/false, read as the text "true"/"false"
  kInteger,  // bounds: value
  kBool,
  kBytes,       // integer or size string ("64MiB"); bounds: bytes
  kDuration,    // integer seconds, "forever" (= 0) or "30d"; bounds: seconds
  kListen,      // "host:port"
  kStringList,  // array of non-empty strings without duplicates; bounds: entries
  kFilter,      // table of scalars, kept as text; bounds: entries
  kIntList,     // array of integers, ascending; bounds: each value
  kLimits,      // array of limit tables { meter, period, amount, days?, hard? }; bounds: entries
  kAmount,      // integer, decimal string or "unlimited"/-1 (kept as text)
  kTiers,       // array of tier tables { up_to?, unit_price?, flat_fee? }; bounds: entries
};

// A TOML value read according to its Kind.
struct Value {
  std::string text;               // kString; the host for kListen
  std::int64_t number = 0;        // kInteger, kBytes, kDuration; the port for kListen
  bool flag = false;              // kBool
  std::vector<std::string> list;  // kStringList
  std::vector<std::pair<std::string, std::string>> pairs;  // kFilter
  std::vector<std::int64_t> ints;                          // kIntList
  std::vector<core::LimitRule> limits;                     // kLimits
  std::vector<core::PriceTier> tiers;                      // kTiers
};

// A decimal option's text as a Decimal, refusing negatives unless allowed.
Status decimal_value(const std::string& text, bool allow_negative, core::Decimal* out) {
  Result<core::Decimal> d = core::parse_decimal(text);
  if (!d) {
    return Status::invalid_argument("'" + text + "' is not a decimal number");
  }
  if (!allow_negative && d->units < 0) {
    return Status::invalid_argument("'" + text + "' is negative");
  }
  *out = *d;
  return Status();
}

// Whether two price matches name the same properties and values, in any order.
bool same_match(std::vector<std::pair<std::string, std::string>> a,
                std::vector<std::pair<std::string, std::string>> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

// Alert level names must be known ones.
Status check_alert_levels(const std::vector<std::string>& levels) {
  for (const auto& l : levels) {
    if (std::find(std::begin(core::kAlertLevels), std::end(core::kAlertLevels), l) ==
        std::end(core::kAlertLevels)) {
      return Status::invalid_argument("'" + l +
                                      "' is not an alert level (info, warning, critical, exceeded)");
    }
  }
  return Status();
}

// One option. `set` receives a value already checked against kind and bounds; it returns an
// error without location (the caller adds file, line and field).
template <typename T>
struct Option {
  std::string_view key;
  Kind kind;
  std::int64_t min;
  std::int64_t max;
  bool required;
  std::string_view default_toml;  // TOML text; empty = no default
  std::string_view doc;
  Status (*set)(T& target, Value&& v);
};

// Setters named by the field they fill, so most rows of the table need no code of their own
// (after Redis's standardConfig): `field<&ServerConfig::threads>` stores the value read for
// the row's Kind in ServerConfig::threads, converted to the field's type; a path of member
// pointers reaches a nested field (`field<&PriceConfig::spec, &core::PriceSpec::meter>`). The
// Kind's bounds have been checked before a setter runs, so the integer conversions cannot
// narrow. Options that fill two fields or parse their text further keep a lambda.
template <typename M>
struct MemberOf;
template <typename C, typename F>
struct MemberOf<F C::*> {
  using Class = C;
  using Field = F;
};
template <auto M>
using ClassOf = typename MemberOf<decltype(M)>::Class;

template <auto M, auto... Rest>
decltype(auto) member(ClassOf<M>& target) {
  if constexpr (sizeof...(Rest) == 0) {
    return (target.*M);
  } else {
    return member<Rest...>(target.*M);
  }
}

// The member of `v` that holds a value for a field of type F.
template <typename F>
auto&& value_for(Value& v) {
  if constexpr (std::is_same_v<F, bool>) {
    return v.flag;
  } else if constexpr (std::is_integral_v<F>) {
    return v.number;
  } else if constexpr (std::is_same_v<F, std::string>) {
    return v.text;
  } else if constexpr (std::is_same_v<F, std::vector<std::string>>) {
    return v.list;
  } else if constexpr (std::is_same_v<F, std::vector<std::pair<std::string, std::string>>>) {
    return v.pairs;
  } else if constexpr (std::is_same_v<F, std::vector<std::int64_t>>) {
    return v.ints;
  } else if constexpr (std::is_same_v<F, std::vector<core::LimitRule>>) {
    return v.limits;
  } else {
    static_assert(std::is_same_v<F, std::vector<core::PriceTier>>, "no Value member for F");
    return v.tiers;
  }
}

template <auto M, auto... Rest>
Status field(ClassOf<M>& target, Value&& v) {
  auto& f = member<M, Rest...>(target);
  using F = std::remove_reference_t<decltype(f)>;
  if constexpr (std::is_integral_v<F> && !std::is_same_v<F, bool>) {
    f = static_cast<F>(v.number);
  } else {
    f = std::move(value_for<F>(v));
  }
  return Status();
}

// A field set only when `check` accepts the value (its message becomes the option's error).
template <auto check, auto M, auto... Rest>
Status checked_field(ClassOf<M>& target, Value&& v) {
  using F = std::remove_reference_t<decltype(member<M, Rest...>(target))>;
  TALLY_TRY(check(value_for<F>(v)));
  return field<M, Rest...>(target, std::move(v));
}

// A non-negative decimal amount, given as text.
template <auto M, auto... Rest>
Status decimal_field(ClassOf<M>& target, Value&& v) {
  return decimal_value(v.text, false, &member<M, Rest...>(target));
}

// ---------------------------------------------------------------------------------------------
// The option table.

constexpr Option<ServerConfig> kServerOptions[] = {
    {"listen", Kind::kListen, 0, 0, false, R"("127.0.0.1:8080")",
     "Address the HTTP API listens on: `\"host:port\"`, `\"[::1]:8080\"` for IPv6, "
     "`\":8080\"` for all interfaces. Port 0 picks a free port (useful in tests).",
     [](ServerConfig& s, Value&& v) {
       s.listen_host = std::move(v.text);
       s.listen_port = static_cast<std::uint16_t>(v.number);
       return Status();
     }},
    {"data_dir", Kind::kString, 1, 4096, false, R"("./data")",
     "Directory of the embedded store, created if missing. It holds every event, aggregate and "
     "ledger entry: put it on durable storage and back it up.",
     field<&ServerConfig::data_dir>},
    {"threads", Kind::kInteger, 0, 256, false, "0", "HTTP I/O threads; 0 = one per CPU core.",
     field<&ServerConfig::threads>},
    {"body_bytes_max", Kind::kBytes, kKiB, kGiB, false, "10485760",
     "Largest request body accepted; a larger one is answered 413 without being read. An "
     "integer (bytes) or a size such as `\"10MiB\"`.",
     field<&ServerConfig::body_bytes_max>},
    {"batch_events_max", Kind::kInteger, 1, 1'000'000, false, "10000",
     "Most events in one ingest request; a larger batch is answered 413 and nothing of it is "
     "stored.",
     field<&ServerConfig::batch_events_max>},
    {"future_skew_seconds_max", Kind::kInteger, 0, 7 * kSecondsPerDay, false, "300",
     "How far ahead of the server's clock an event's time may be, in seconds; events further "
     "in the future are refused, so a client with a wrong clock cannot fill future windows.",
     field<&ServerConfig::future_skew_seconds_max>},
    {"auto_create_customers", Kind::kBool, 0, 0, false, "true",
     "Whether an event for an unknown customer creates that customer (true) or is refused "
     "with 422 (false).",
     field<&ServerConfig::auto_create_customers>},
    {"accept_unmetered_events", Kind::kBool, 0, 0, false, "false",
     "Whether an event whose type no meter takes is stored anyway (true) or refused with "
     "`UNKNOWN_EVENT_TYPE` (false), which catches misspelt types before they are lost to every "
     "meter. Without any meter configured every type is accepted.",
     field<&ServerConfig::accept_unmetered_events>},
    {"admin_key", Kind::kString, 16, 256, false, "",
     "Admin API key (at least 16 bytes; `openssl rand -hex 32` makes a good one). Optional; the "
     "environment variable `TALLY_ADMIN_KEY` can supply it instead, which keeps the secret out "
     "of the file.",
     field<&ServerConfig::admin_key>},
    {"connections_max", Kind::kInteger, 1, 1'000'000, false, "10000",
     "Most open HTTP connections; a connection beyond it is closed at once. Once 90% are open, "
     "each new connection closes the longest-idle kept-alive one, so the last tenth stays free "
     "for new clients. Keep it below the process's open-file limit (`ulimit -n`).",
     field<&ServerConfig::connections_max>},
    {"connections_per_address_max", Kind::kInteger, 1, 1'000'000, false, "1000",
     "Most open connections from one client address (an IPv6 client: from one /64 prefix); a "
     "connection beyond it is closed at once, so one client cannot take every connection. "
     "Behind a reverse proxy every connection comes from the proxy's address: raise it to "
     "`connections_max` there, and let the proxy limit its clients.",
     field<&ServerConfig::connections_per_address_max>},
    {"header_timeout_ms", Kind::kInteger, 100, 600'000, false, "10000",
     "How long a client has to send a whole request head (request line and headers), in "
     "milliseconds, from its first byte (on a new connection: from the connection's opening). "
     "A connection that takes longer is closed, so slow or silent clients cannot hold "
     "connections.",
     field<&ServerConfig::header_timeout_ms>},
    {"idle_timeout_ms", Kind::kInteger, 100, 3'600'000, false, "60000",
     "How long a kept-alive connection may wait for its next request, in milliseconds, before "
     "it is closed (sooner when connections run short, see `connections_max`).",
     field<&ServerConfig::idle_timeout_ms>},
    {"scan_threads", Kind::kInteger, 1, 64, false, "2",
     "Threads for the requests that may take long: event listings, exports, meter queries, "
     "reports, listings of customers, keys, wallet transactions and alerts, and archiving. "
     "They never run on the HTTP I/O threads, so `/health`, checks and ingest stay quick "
     "meanwhile.",
     field<&ServerConfig::scan_threads>},
    {"scan_queue_max", Kind::kInteger, 1, 100'000, false, "256",
     "Most such requests waiting for a scan thread; one more is answered 503 "
     "`SERVICE_UNAVAILABLE` with `Retry-After: 1`.",
     field<&ServerConfig::scan_queue_max>},
    {"page_budget_ms", Kind::kInteger, 0, 60'000, false, "200",
     "How long one page of `GET /v1/events` (or of an events export) may scan, in "
     "milliseconds. A page that runs out of time returns the events found so far, perhaps "
     "none, with a `next_cursor` to go on from. 0 = no budget.",
     field<&ServerConfig::page_budget_ms>},
    {"dashboard_session_seconds", Kind::kInteger, 1, 7 * kSecondsPerDay, false, "3600",
     "How long a dashboard sign-in lasts, in seconds, from the moment the key was exchanged for "
     "a session cookie; the page then asks for the key again. Sessions are held in memory, so "
     "a restart also ends them; revoking the key ends them at once.",
     field<&ServerConfig::dashboard_session_seconds>},
    {"dashboard_sessions_max", Kind::kInteger, 1, 1'000'000, false, "10000",
     "Most dashboard sessions open at once, over every key (each key holds at most 32: a newer "
     "sign-in ends its oldest). A sign-in beyond it is answered 503 until sessions expire.",
     field<&ServerConfig::dashboard_sessions_max>},
};

constexpr Option<StorageConfig> kStorageOptions[] = {
    {"fsync", Kind::kBool, 0, 0, false, "true",
     "Acknowledge ingest only after the commit is on disk (fsync). With false, a power loss "
     "can lose acknowledged events: for tests and benchmarks only.",
     field<&StorageConfig::fsync>},
    {"commit_interval_us", Kind::kInteger, 0, 1'000'000, false, "0",
     "Extra wait, in microseconds, before a group commit, to gather more concurrent batches "
     "into one fsync. 0 = no extra wait (batches that arrive during a commit still share the "
     "next one).",
     field<&StorageConfig::commit_interval_us>},
    {"commit_events_max", Kind::kInteger, 1, 10'000'000, false, "50000",
     "Most events in one group commit; bounds commit latency and memory.",
     field<&StorageConfig::commit_events_max>},
    {"dedup_window", Kind::kDuration, 0, 3650 * kSecondsPerDay, false, R"("forever")",
     "How long an event id is remembered to drop duplicates: `\"forever\"` (as long as the "
     "event is retained), an integer number of seconds, or a duration such as `\"30d\"`, "
     "`\"12h\"`, `\"90m\"`, `\"45s\"`, `\"1h30m\"`. 0 also means forever. A retry that arrives "
     "after the window is counted again.",
     field<&StorageConfig::dedup_window_seconds>},
    {"block_cache_bytes", Kind::kBytes, 0, kTiB, false, R"("64MiB")",
     "Memory for the embedded store's block cache: an integer (bytes) or a size such as "
     "`\"512MiB\"`.",
     field<&StorageConfig::block_cache_bytes>},
    {"disk_reserve_bytes", Kind::kBytes, 0, kTiB, false, R"("256MiB")",
     "Free space kept on the data directory's filesystem: while less is free than the smaller "
     "of this and `disk_reserve_percent`, everything that writes (ingest, consuming checks, "
     "admin changes, wallet transactions) is refused with `507 INSUFFICIENT_STORAGE` and "
     "`/ready` answers 503, while reads and dry-run checks go on; writes resume by themselves "
     "once space is freed. The reserve is the room the store needs to flush and compact. An "
     "integer (bytes) or a size such as `\"1GiB\"`; 0 = no reserve (writes stop only when the "
     "disk is full). See docs/operations.md, \"A full disk\".",
     field<&StorageConfig::disk_reserve_bytes>},
    {"disk_reserve_percent", Kind::kInteger, 0, 50, false, "5",
     "The same reserve as a percentage of the filesystem's size, so that a small filesystem "
     "keeps a reserve that fits it; the smaller of the two applies. 0 = no reserve.",
     field<&StorageConfig::disk_reserve_percent>},
};

bool is_meter_key_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

// Checks of single text options, for checked_field rows.
Status check_key_text(const std::string& text) {
  if (!std::all_of(text.begin(), text.end(), is_meter_key_char)) {
    return Status::invalid_argument("'" + text + "' may use only a-z, 0-9, '_' and '-'");
  }
  return Status();
}

Status check_event_type(const std::string& text) { return core::check_name("event_type", text); }

Status check_customer_id(const std::string& text) { return core::check_name("id", text); }

// A customer's email may be empty (none); a set one needs at least an '@'.
Status check_optional_email(const std::string& text) {
  if (!text.empty() && text.find('@') == std::string::npos) {
    return Status::invalid_argument("'" + text + "' is not an email address");
  }
  return Status();
}

Status check_email_address(const std::string& text) {
  if (!core::valid_email_address(text)) {
    return Status::invalid_argument("'" + text + "' is not an email address");
  }
  return Status();
}

Status check_route_path(const std::string& text) {
  if (text.front() != '/') {
    return Status::invalid_argument("'" + text + "' must start with '/'");
  }
  return Status();
}

std::string aggregation_choices() {
  std::string out;
  for (int i = 0; i <= static_cast<int>(core::Aggregation::kUniqueCount); ++i) {
    if (i > 0) {
      out += ", ";
    }
    out += core::aggregation_name(static_cast<core::Aggregation>(i));
  }
  return out;
}

constexpr Option<core::MeterSpec> kMeterOptions[] = {
    {"key", Kind::kString, 1, kMeterKeyBytesMax, true, "",
     "The meter's name in the API, reports and limits: `[a-z0-9_-]`, 1 to 64 bytes, unique.",
     checked_field<check_key_text, &core::MeterSpec::key>},
    {"event_type", Kind::kString, 1, static_cast<std::int64_t>(core::kEventNameBytesMax), true, "",
     "Events whose `type` equals this feed the meter: 1 to 128 bytes of UTF-8 without control "
     "characters, `/`, `?` or `#`, the rule events' types follow.",
     checked_field<check_event_type, &core::MeterSpec::event_type>},
    {"aggregation", Kind::kString, 1, 64, false, R"("count")",
     "How values combine: `count` (events), `sum`, `min`, `max`, `avg`, `latest` (the most "
     "recent value: gauges such as patients or storage) or `unique_count` (distinct values).",
     [](core::MeterSpec& m, Value&& v) {
       Result<core::Aggregation> a = core::parse_aggregation(v.text);
       if (!a) {
         return Status::invalid_argument("'" + v.text + "' is not one of " + aggregation_choices());
       }
       m.aggregation = *a;
       return Status();
     }},
    {"value", Kind::kString, 1, 512, false, "",
     "JSON path of the property to aggregate (`\"$.input_tokens\"`, `\"usage.input\"`, "
     "`\"$['usage']['input']\"`); for `unique_count`, the property whose distinct values are "
     "counted. Required for every aggregation except `count`, and refused for `count`.",
     [](core::MeterSpec& m, Value&& v) {
       Result<std::string> path = core::parse_value_path(v.text);
       if (!path) {
         return path.error();  // core's message names the path and what is wrong with it
       }
       m.value_property = std::move(path).value();
       return Status();
     }},
    {"group_by", Kind::kStringList, 0, kGroupByMax, false, "",
     "Properties whose values split the meter into groups, e.g. `[\"provider\", \"model\"]`. "
     "At most 8, no duplicates; an event without the property falls in the group \"\".",
     field<&core::MeterSpec::group_by>},
    {"filter", Kind::kFilter, 0, kFilterEntriesMax, false, "",
     "Equality filters on properties, e.g. `{ feature_id = \"ai-text-generation\" }`: only "
     "events whose properties equal every value feed the meter. Values may be strings, "
     "integers, floats or booleans and are compared as text (integers as their digits, "
     "booleans as `true`/`false`). At most 16.",
     field<&core::MeterSpec::filter>},
    {"unit", Kind::kString, 0, 64, false, "",
     "Unit shown in reports and the dashboard (`\"tokens\"`, `\"bytes\"`, `\"GB\"`).",
     field<&core::MeterSpec::unit>},
    {"description", Kind::kString, 0, 1024, false, "", "Free text for people reading reports.",
     field<&core::MeterSpec::description>},
    {"allow_negative", Kind::kBool, 0, 0, false, "false",
     "Whether events may feed the meter values below zero (corrections). Even then only an "
     "admin key (or `tally ingest`) may send them; a customer key's negative value is refused "
     "with `NEGATIVE_VALUE`, so usage can never lower a limit's count or earn credits. Only for "
     "aggregations with a value other than `unique_count`.",
     field<&core::MeterSpec::allow_negative>},
};

constexpr Option<CustomerSeed> kCustomerOptions[] = {
    {"plan", Kind::kString, 0, kMeterKeyBytesMax, false, "",
     "The customer's plan (a `[[plans]]` key); empty = `enforcement.default_plan`.",
     field<&CustomerSeed::plan>},
    {"id", Kind::kString, 1, 128, true, "",
     "The customer id that events and API keys refer to: 1 to 128 bytes of UTF-8 without control "
     "characters, `/`, `?` or `#` (the rule every customer id follows), unique.",
     checked_field<check_customer_id, &CustomerSeed::id>},
    {"name", Kind::kString, 0, 256, false, "", "Display name.",
     field<&CustomerSeed::name>},
    {"email", Kind::kString, 0, 256, false, "", "Contact email address.",
     checked_field<check_optional_email, &CustomerSeed::email>},
    {"timezone", Kind::kString, 0, 64, false, R"("UTC")",
     "IANA time zone (`\"Europe/Berlin\"`) for the customer's day, week and month windows and "
     "quota resets.",
     [](CustomerSeed& c, Value&& v) {
       if (!v.text.empty()) {
         Result<core::TimeZone> tz = core::TimeZone::find(v.text);
         if (!tz) {
           return Status::invalid_argument("'" + v.text + "' is not a known IANA time zone");
         }
       }
       c.timezone = std::move(v.text);
       return Status();
     }},
    {"credits", Kind::kAmount, 0, 0, false, "",
     "Credits granted (a `top_up` transaction) when this entry creates the customer.",
     [](CustomerSeed& c, Value&& v) {
       core::Decimal d;
       TALLY_TRY(decimal_value(v.text, false, &d));
       c.credits = core::format_decimal(d);
       return Status();
     }},
};

constexpr std::int64_t kPlanLimitsMax = 64;

constexpr Option<core::Plan> kPlanOptions[] = {
    {"key", Kind::kString, 1, kMeterKeyBytesMax, true, "",
     "The plan's name, as customers' `plan` field names it: `[a-z0-9_-]`, unique.",
     checked_field<check_key_text, &core::Plan::key>},
    {"name", Kind::kString, 0, 256, false, "", "Display name (\"Professional\").",
     field<&core::Plan::name>},
    {"features", Kind::kStringList, 0, 256, false, "",
     "Features the plan enables (`[\"chat\", \"tts\"]`); a check naming a feature outside this "
     "list is answered 403.",
     field<&core::Plan::features>},
    {"limits", Kind::kLimits, 0, kPlanLimitsMax, false, "",
     "Limits: `{ meter = \"api_calls\", period = \"day\", amount = 100 }`. `period` is one of "
     "`second`, `minute`, `hour` (rates, enforced by GCRA), `day`, `week`, `month`, "
     "`billing_period`, `trial` (with `days = N`) or `lifetime` (calendar windows in the "
     "customer's time zone). `amount` is a number, a decimal string, or `-1` / `\"unlimited\"`. "
     "`hard = false` makes a soft limit: allowed, flagged as overage.",
     field<&core::Plan::limits>},
    {"alert_thresholds", Kind::kIntList, 1, 1000, false, "",
     "Percentages of each limit at which alerts fire, ascending (`[50, 80, 95]`); each fires "
     "once per customer, limit and period. Unset = `alerts.thresholds`.",
     field<&core::Plan::alert_thresholds>},
    {"alert_levels", Kind::kStringList, 0, 1000, false, "",
     "Names of the alert thresholds, one per threshold: `info`, `warning`, `critical` or "
     "`exceeded`. Without them, a threshold of 100 or more is `exceeded`, the highest below 100 "
     "is `critical` when two or more are below 100, and the rest are `warning`.",
     checked_field<check_alert_levels, &core::Plan::alert_levels>},
    {"alert_balance_below", Kind::kAmount, 0, 0, false, "",
     "A `low_balance` alert when the customer's wallet drops below this many credits (once per "
     "drop: it fires again only after the balance has been at or above it). Overrides "
     "`alerts.balance_below`.",
     [](core::Plan& p, Value&& v) {
       TALLY_TRY(decimal_value(v.text, true, &p.alert_balance_below));
       p.has_alert_balance_below = true;
       return Status();
     }},
    {"prepaid", Kind::kBool, 0, 0, false, "false",
     "Whether usage must be paid from the customer's credit wallet in advance: a check is "
     "answered 402 when the balance cannot cover the estimated cost of what it asks for.",
     field<&core::Plan::prepaid>},
};

constexpr Option<AlertsConfig> kAlertsOptions[] = {
    {"thresholds", Kind::kIntList, 1, 1000, false, "[]",
     "Percentages of each limit at which alerts fire, for plans without `alert_thresholds` "
     "(`[75, 90, 100]`). Each fires once per customer, limit and period.",
     field<&AlertsConfig::thresholds>},
    {"levels", Kind::kStringList, 0, 1000, false, "",
     "Names of `thresholds`, as the plans' `alert_levels`.",
     checked_field<check_alert_levels, &AlertsConfig::levels>},
    {"balance_below", Kind::kAmount, 0, 0, false, "",
     "A `low_balance` alert when a wallet drops below this many credits, for plans without "
     "`alert_balance_below`; none when unset.",
     [](AlertsConfig& a, Value&& v) {
       TALLY_TRY(decimal_value(v.text, true, &a.balance_below));
       a.has_balance_below = true;
       return Status();
     }},
};

constexpr std::int64_t kWebhookBackoffMax = 7 * kSecondsPerDay;

constexpr Option<WebhookConfig> kWebhookOptions[] = {
    {"url", Kind::kString, 8, 2048, true, "",
     "Where deliveries are POSTed: `http://host[:port]/path`.",
     [](WebhookConfig& w, Value&& v) {
       if (v.text.rfind("https://", 0) == 0) {
         return Status::invalid_argument(
             "'" + v.text + "': https is not supported yet; deliver to an http:// endpoint, "
             "for example a local TLS-terminating proxy");
       }
       if (v.text.rfind("http://", 0) != 0 || v.text.size() == 7) {
         return Status::invalid_argument("'" + v.text + "' is not an http:// URL");
       }
       w.url = std::move(v.text);
       return Status();
     }},
    {"events", Kind::kStringList, 1, 64, false, R"(["alert.triggered"])",
     "The event types delivered here: `alert.triggered`, or `*` for all.",
     [](WebhookConfig& w, Value&& v) {
       for (const auto& e : v.list) {
         const bool known = e == "*" || std::find(std::begin(kWebhookEvents),
                                                  std::end(kWebhookEvents),
                                                  e) != std::end(kWebhookEvents);
         if (!known) {
           return Status::invalid_argument("'" + e +
                                           "' is not an event type (alert.triggered, *)");
         }
       }
       w.events = std::move(v.list);
       return Status();
     }},
    {"secret", Kind::kString, 16, 256, true, "",
     "The shared secret that signs every delivery (HMAC-SHA256; see docs/webhooks.md), e.g. "
     "`whsec_` and random base64.",
     field<&WebhookConfig::secret>},
    {"timeout", Kind::kDuration, 1, 300, false, "10",
     "How long one attempt may take (connect, send, answer) before it counts as failed.",
     field<&WebhookConfig::timeout_seconds>},
    {"retry_for", Kind::kDuration, 0, 30 * kSecondsPerDay, false, R"("3d")",
     "How long after its alert a failing delivery is retried; then it is marked failed.",
     field<&WebhookConfig::retry_for_seconds>},
    {"retry_backoff", Kind::kDuration, 1, kWebhookBackoffMax, false, "1",
     "The wait before the first retry; each later wait doubles, with random jitter (50-100% "
     "of the doubled wait).",
     field<&WebhookConfig::retry_backoff_seconds>},
    {"retry_backoff_max", Kind::kDuration, 1, kWebhookBackoffMax, false, R"("1h")",
     "The longest wait between two attempts.",
     field<&WebhookConfig::retry_backoff_max_seconds>},
};

// The alert kinds a notification may subscribe to.
constexpr std::string_view kAlertKinds[] = {"limit", "low_balance"};

Status check_addresses(const std::vector<std::string>& list) {
  for (const auto& a : list) {
    if (!core::valid_email_address(a)) {
      return Status::invalid_argument("'" + a + "' is not an email address");
    }
  }
  return Status();
}

constexpr Option<NotificationConfig> kNotificationOptions[] = {
    {"host", Kind::kString, 1, 253, true, "",
     "The SMTP server's host name or IP address (with STARTTLS, the name its certificate "
     "carries).",
     field<&NotificationConfig::host>},
    {"port", Kind::kInteger, 1, 65535, false, "587",
     "The SMTP server's port: 587 (submission) or 25 usually.",
     field<&NotificationConfig::port>},
    {"starttls", Kind::kStringOrBool, 0, 16, false, R"("required")",
     "`\"required\"` (or `true`): switch to TLS with STARTTLS before AUTH and the message, and "
     "verify the server's certificate and name; a server that does not offer it fails the "
     "attempt. `\"off\"` (or `false`): plain text, for a relay on the same machine or network.",
     [](NotificationConfig& n, Value&& v) {
       if (v.text == "required" || v.text == "true") {
         n.starttls = true;
       } else if (v.text == "off" || v.text == "false") {
         n.starttls = false;
       } else {
         return Status::invalid_argument("must be \"required\", \"off\", true or false");
       }
       return Status();
     }},
    {"ca_file", Kind::kString, 0, 4096, false, "",
     "PEM file of the certificates to trust for STARTTLS instead of the system's (a private "
     "CA).",
     field<&NotificationConfig::ca_file>},
    {"user", Kind::kString, 0, 256, false, "",
     "The user for SMTP AUTH (PLAIN, else LOGIN); none when unset. Needs `password_env`.",
     field<&NotificationConfig::user>},
    {"password_env", Kind::kString, 0, 128, false, "",
     "The name of the environment variable that holds the SMTP password (for example "
     "`\"TALLY_SMTP_PASSWORD\"`); `tally serve` refuses to start when it is unset or empty. "
     "The password itself never goes in this file.",
     [](NotificationConfig& n, Value&& v) {
       const bool ok = !v.text.empty() &&
                       std::all_of(v.text.begin(), v.text.end(), [](char c) {
                         return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                (c >= '0' && c <= '9') || c == '_';
                       }) &&
                       !(v.text[0] >= '0' && v.text[0] <= '9');
       if (!ok && !v.text.empty()) {
         return Status::invalid_argument("'" + v.text +
                                         "' is not an environment variable name (letters, "
                                         "digits and '_')");
       }
       n.password_env = std::move(v.text);
       return Status();
     }},
    {"from", Kind::kString, 3, 254, true, "",
     "The sender address (envelope and `From:`), e.g. `\"alerts@example.com\"`.",
     checked_field<check_email_address, &NotificationConfig::from>},
    {"from_name", Kind::kString, 0, 128, false, R"("Tally")",
     "The display name of `From:`; \"\" for none.",
     field<&NotificationConfig::from_name>},
    {"subject_prefix", Kind::kString, 0, 64, false, R"("[Tally]")",
     "Put before every subject.",
     field<&NotificationConfig::subject_prefix>},
    {"to", Kind::kStringList, 0, 20, false, "[]",
     "Fixed recipients of every alert this entry sends (an operations or account team).",
     checked_field<check_addresses, &NotificationConfig::to>},
    {"to_customer", Kind::kBool, 0, 0, false, "false",
     "Also send each alert to its customer's `email` (set by `[[customers]]` or the customers "
     "API). A customer without a valid address gets none; the fixed recipients still do.",
     field<&NotificationConfig::to_customer>},
    {"events", Kind::kStringList, 1, 64, false, R"(["alert.triggered"])",
     "The event types sent: `alert.triggered`, or `*` for all.",
     [](NotificationConfig& n, Value&& v) {
       for (const auto& e : v.list) {
         if (e != "*" && std::find(std::begin(kWebhookEvents), std::end(kWebhookEvents), e) ==
                             std::end(kWebhookEvents)) {
           return Status::invalid_argument("'" + e +
                                           "' is not an event type (alert.triggered, *)");
         }
       }
       n.events = std::move(v.list);
       return Status();
     }},
    {"levels", Kind::kStringList, 0, 4, false, "[]",
     "The alert levels sent (`info`, `warning`, `critical`, `exceeded`); [] = all.",
     [](NotificationConfig& n, Value&& v) {
       for (const auto& l : v.list) {
         if (std::find(std::begin(core::kAlertLevels), std::end(core::kAlertLevels), l) ==
             std::end(core::kAlertLevels)) {
           return Status::invalid_argument("'" + l +
                                           "' is not an alert level (info, warning, critical, "
                                           "exceeded)");
         }
       }
       n.levels = std::move(v.list);
       return Status();
     }},
    {"kinds", Kind::kStringList, 0, 2, false, "[]",
     "The alert kinds sent (`limit`, `low_balance`); [] = all.",
     [](NotificationConfig& n, Value&& v) {
       for (const auto& k : v.list) {
         if (std::find(std::begin(kAlertKinds), std::end(kAlertKinds), k) ==
             std::end(kAlertKinds)) {
           return Status::invalid_argument("'" + k + "' is not an alert kind (limit, low_balance)");
         }
       }
       n.kinds = std::move(v.list);
       return Status();
     }},
    {"timeout", Kind::kDuration, 1, 300, false, R"("30s")",
     "How long one attempt (connect, TLS, AUTH, the message) may take before it counts as "
     "failed.",
     field<&NotificationConfig::timeout_seconds>},
    {"retry_for", Kind::kDuration, 0, 30 * kSecondsPerDay, false, R"("3d")",
     "How long after its alert a failing delivery is retried; then it is marked failed. A "
     "permanent refusal (a 5xx to the sender, every recipient or the message) fails it at once.",
     field<&NotificationConfig::retry_for_seconds>},
    {"retry_backoff", Kind::kDuration, 1, kWebhookBackoffMax, false, R"("10s")",
     "The wait before the first retry; each later wait doubles, with random jitter (50-100% "
     "of the doubled wait).",
     field<&NotificationConfig::retry_backoff_seconds>},
    {"retry_backoff_max", Kind::kDuration, 1, kWebhookBackoffMax, false, R"("1h")",
     "The longest wait between two attempts.",
     field<&NotificationConfig::retry_backoff_max_seconds>},
};

constexpr Option<CreditsConfig> kCreditsOptions[] = {
    {"currency", Kind::kString, 3, 3, false, R"("USD")",
     "ISO 4217 code of the currency prices are given in. Every price uses this currency.",
     [](CreditsConfig& c, Value&& v) {
       if (!std::all_of(v.text.begin(), v.text.end(),
                        [](char ch) { return ch >= 'A' && ch <= 'Z'; })) {
         return Status::invalid_argument("'" + v.text + "' is not a currency code such as \"USD\"");
       }
       c.currency = std::move(v.text);
       return Status();
     }},
    {"per_currency_unit", Kind::kAmount, 0, 0, false, "1",
     "Credits one unit of the currency buys (`1000`: 1 credit = 0.001 USD). A positive number "
     "or decimal string.",
     [](CreditsConfig& c, Value&& v) {
       TALLY_TRY(decimal_value(v.text, false, &c.per_currency_unit));
       if (c.per_currency_unit.units == 0) {
         return Status::invalid_argument("must be positive");
       }
       return Status();
     }},
    {"markup_percent", Kind::kAmount, 0, 0, false, "0",
     "Markup on every price when converted to credits, in percent (`20`: credits = cost x "
     "per_currency_unit x 1.2). A price may set its own.",
     decimal_field<&CreditsConfig::markup_percent>},
};

// A retention age: a duration string, or "" / "0" / "never" for no automatic archiving.
Status set_archive_after(RetentionConfig& r, Value&& v) {
  if (v.text.empty() || v.text == "0" || v.text == "never") {
    r.archive_after_seconds = 0;
    return Status();
  }
  std::int64_t seconds = 0;
  TALLY_TRY(parse_duration_seconds(v.text, &seconds));
  if (seconds < 3600 || seconds > 100 * 365 * kSecondsPerDay) {
    // Under an hour would archive events still arriving late; the upper bound keeps the
    // cutoff after 1970.
    return Status::invalid_argument("'" + v.text + "' is out of range 1h..36500d");
  }
  r.archive_after_seconds = seconds;
  return Status();
}

constexpr Option<RetentionConfig> kRetentionOptions[] = {
    {"archive_after", Kind::kString, 0, 32, false, R"("")",
     "Archive raw events whose event time is older than this (a duration such as `\"90d\"`, "
     "at least `\"1h\"`): the server moves them to compressed files in `archive_dir` every "
     "`archive_interval`, and `tally archive` uses it when given no age. `\"\"`, `\"0\"` or "
     "`\"never\"`: never archive automatically. Aggregates and the ledger are kept.",
     set_archive_after},
    {"archive_dir", Kind::kString, 0, 4096, false, R"("")",
     "Directory of archive files and their manifests, created if missing. `\"\"` = "
     "`<data_dir>/archive`.",
     field<&RetentionConfig::archive_dir>},
    {"archive_interval", Kind::kDuration, 60, 7 * kSecondsPerDay, false, R"("1h")",
     "How often a running server archives (when `archive_after` is set): a duration from "
     "`\"1m\"` to `\"7d\"`.",
     field<&RetentionConfig::archive_interval_seconds>},
};

constexpr std::int64_t kPriceTiersMax = 32;

constexpr Option<PriceConfig> kPriceOptions[] = {
    {"meter", Kind::kString, 1, kMeterKeyBytesMax, true, "",
     "The meter this price applies to (a configured meter). Its value is the number of units.",
     field<&PriceConfig::spec, &core::PriceSpec::meter>},
    {"match", Kind::kFilter, 0, kFilterEntriesMax, false, "",
     "Property values an event must have for this price to apply, e.g. `{ provider = "
     "\"OPENAI\", model = \"gpt-4-turbo\" }`. The first matching price of a meter applies, so "
     "put specific prices before general ones.",
     field<&PriceConfig::spec, &core::PriceSpec::match>},
    {"model", Kind::kString, 1, 16, false, R"("per_unit")",
     "`per_unit`, `graduated` (each unit at its tier's price), `volume` (every unit at the "
     "price of the tier the period's total reaches), `package` (per started block of "
     "`package_size` units) or `flat` (`flat_fee` once per billing period). Tiered models "
     "count units within the customer's billing period.",
     [](PriceConfig& p, Value&& v) {
       if (!core::parse_price_model(v.text, &p.spec.model)) {
         return Status::invalid_argument("'" + v.text +
                                         "' is not per_unit, graduated, volume, package or flat");
       }
       return Status();
     }},
    {"unit_price", Kind::kAmount, 0, 0, false, "",
     "Price of one unit for `per_unit`, as an exact decimal string (`\"0.00001\"`).",
     [](PriceConfig& p, Value&& v) {
       p.has_unit_price = true;
       return decimal_value(v.text, false, &p.spec.unit_price);
     }},
    {"currency", Kind::kString, 3, 3, false, R"("USD")",
     "Currency of the price; must equal `[credits] currency`.",
     field<&PriceConfig::spec, &core::PriceSpec::currency>},
    {"tiers", Kind::kTiers, 1, kPriceTiersMax, false, "",
     "For `graduated` and `volume`: `[{ up_to = 1000, unit_price = \"0.01\" }, { up_to = "
     "\"inf\", unit_price = \"0.008\", flat_fee = \"2\" }]`, ascending; the last tier has "
     "no bound (`\"inf\"` or no `up_to`). A tier's `flat_fee` is charged when usage enters it.",
     field<&PriceConfig::spec, &core::PriceSpec::tiers>},
    {"package_size", Kind::kAmount, 0, 0, false, "", "For `package`: units per block (> 0).",
     decimal_field<&PriceConfig::spec, &core::PriceSpec::package_size>},
    {"package_price", Kind::kAmount, 0, 0, false, "", "For `package`: the price of one block.",
     decimal_field<&PriceConfig::spec, &core::PriceSpec::package_price>},
    {"flat_fee", Kind::kAmount, 0, 0, false, "",
     "For `flat`: the fee per billing period, charged with the period's first units.",
     decimal_field<&PriceConfig::spec, &core::PriceSpec::flat_fee>},
    {"markup_percent", Kind::kAmount, 0, 0, false, "",
     "This price's markup in percent, instead of `[credits] markup_percent`.",
     [](PriceConfig& p, Value&& v) {
       p.has_markup = true;
       return decimal_value(v.text, false, &p.markup_percent);
     }},
    {"effective_from", Kind::kString, 1, 64, false, "",
     "When this version of the price takes effect (RFC 3339, event time), e.g. "
     "`\"2027-01-01T00:00:00Z\"` for a change at the start of next month. Without it, a changed "
     "price takes effect when the server starts with it. Several entries with the same `meter` "
     "and `match` and different `effective_from` are versions of one price; every version is "
     "stored, and each event is priced by the version in effect at its event time.",
     [](PriceConfig& p, Value&& v) {
       Result<core::TimeUs> t = core::parse_rfc3339(v.text);
       if (!t) {
         return Status::invalid_argument("'" + v.text + "' is not an RFC 3339 time");
       }
       p.has_effective_from = true;
       p.effective_from_us = *t;
       return Status();
     }},
};

constexpr Option<RouteRule> kRouteOptions[] = {
    {"path", Kind::kString, 1, 1024, true, "",
     "The original request path this rule covers: a glob with `*` (`\"/api/v1/llm/*\"`) or a "
     "prefix (`\"/api/v1/search\"` covers `/api/v1/search` and `/api/v1/search/...`). The first "
     "matching rule wins.",
     checked_field<check_route_path, &RouteRule::path>},
    {"method", Kind::kString, 0, 16, false, "", "HTTP method to match (`\"POST\"`); empty = any.",
     field<&RouteRule::method>},
    {"meter", Kind::kString, 1, kMeterKeyBytesMax, true, "",
     "The meter a matching request consumes (must be a configured meter).",
     field<&RouteRule::meter>},
    {"amount", Kind::kAmount, 0, 0, false, "1", "How much one request consumes.",
     [](RouteRule& r, Value&& v) {
       Result<core::Decimal> d = core::parse_decimal(v.text);
       if (!d || d->units <= 0) {
         return Status::invalid_argument("'" + v.text + "' is not a positive number");
       }
       r.amount = *d;
       return Status();
     }},
    {"feature", Kind::kString, 0, 128, false, "",
     "A feature the customer's plan must enable for the request to pass.",
     field<&RouteRule::feature>},
};

constexpr Option<EnforcementConfig> kEnforcementOptions[] = {
    {"check_durability", Kind::kString, 1, 16, false, R"("async")",
     "`\"async\"`: a consuming check is answered at once and its usage event joins the next "
     "group commit, so a crash loses the consumptions not yet committed: those of the commit in "
     "flight and the queue behind it, at most 500,000 events (under load one commit has taken "
     "hundreds of milliseconds; `tally_check_events_not_durable` and "
     "`tally_commit_duration_seconds` in `/metrics` show it). `\"sync\"`: the check is answered "
     "after its event is durable.",
     [](EnforcementConfig& e, Value&& v) {
       if (v.text != "async" && v.text != "sync") {
         return Status::invalid_argument("'" + v.text + "' is not \"async\" or \"sync\"");
       }
       e.check_sync = v.text == "sync";
       return Status();
     }},
    {"reservation_ttl", Kind::kDuration, 1, 7 * kSecondsPerDay, false, "300",
     "Default lifetime of a reservation (`\"consume\": \"reserve\"`); an expired reservation "
     "frees what it held.",
     [](EnforcementConfig& e, Value&& v) {
       if (v.number == 0) {
         return Status::invalid_argument("a reservation cannot live forever");
       }
       e.reservation_ttl_seconds = v.number;
       return Status();
     }},
    {"default_plan", Kind::kString, 0, kMeterKeyBytesMax, false, "",
     "The plan of customers that name none; empty = such customers have no limits.",
     field<&EnforcementConfig::default_plan>},
    {"replaced_plans", Kind::kFilter, 0, kReplacedPlansMax, false, "",
     "Where the customers of a plan removed from this file go, e.g. `{ starter = \"basic\" }`: "
     "the removed key, then a configured plan. Tally refuses to start while stored customers "
     "name a plan that is neither configured nor replaced here (the message names the plan and "
     "how many customers use it), so no customer silently loses its limits.",
     field<&EnforcementConfig::replaced_plans>},
    {"api_rate_limit_per_minute", Kind::kInteger, 0, 100'000'000, false, "0",
     "Requests per minute each API key may make to Tally's own API (GCRA); excess requests "
     "get 429 with rate-limit headers. 0 = off.",
     field<&EnforcementConfig::api_rate_limit_per_minute>},
    {"authorize_key_header", Kind::kString, 1, 128, false, R"("x-api-key")",
     "Header of the original request that carries the end customer's Tally key, for "
     "`/v1/authorize` (`Authorization: Bearer` is also accepted).",
     [](EnforcementConfig& e, Value&& v) {
       std::string h = std::move(v.text);
       std::transform(h.begin(), h.end(), h.begin(),
                      [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
       e.authorize_key_header = std::move(h);
       return Status();
     }},
};

// The sections, in the order of the reference.
struct SectionDoc {
  std::string_view name;
  bool is_array;
  std::string_view doc;
};

constexpr SectionDoc kServerSection{
    "server", false, "The HTTP server and the limits on what one request may carry."};
constexpr SectionDoc kStorageSection{
    "storage", false, "The embedded store: durability, group commit and deduplication."};
constexpr SectionDoc kMetersSection{
    "meters", true,
    "One `[[meters]]` entry per meter: which events it takes, which property it aggregates, "
    "how, and by which properties it groups."};
constexpr SectionDoc kEnforcementSection{
    "enforcement", false, "Checks, reservations and Tally's own API rate limit."};
constexpr SectionDoc kPlansSection{
    "plans", true,
    "One `[[plans]]` entry per plan: its features, limits and alert thresholds. Customers name "
    "their plan in the `plan` field."};
constexpr SectionDoc kRoutesSection{
    "routes", true,
    "Route rules for `/v1/authorize` (nginx `auth_request`): which meter an original request "
    "consumes."};
constexpr SectionDoc kCreditsSection{
    "credits", false, "What credits are worth: the currency of prices and its credit rate."};
constexpr SectionDoc kRetentionSection{
    "retention", false,
    "Retention of raw events: archiving old events to compressed JSON Lines files (see "
    "docs/operations.md, \"Archiving\")."};
constexpr SectionDoc kPricesSection{
    "prices", true,
    "One `[[prices]]` entry per price: a meter, optionally narrowed by property values, and a "
    "pricing model. Every stored event carries its cost and credits, burned from the "
    "customer's wallet in the same commit."};
constexpr SectionDoc kAlertsSection{
    "alerts", false,
    "Alert rules for plans that set none: thresholds of limits and a low balance. Alerts are "
    "stored (`GET /v1/alerts`) and delivered to `[[webhooks]]` and by email through "
    "`[[notifications]]`."};
constexpr SectionDoc kWebhooksSection{
    "webhooks", true,
    "One `[[webhooks]]` entry per endpoint that receives events: signed JSON POSTs from a "
    "durable outbox, retried with exponential backoff until delivered or `retry_for` has "
    "passed. See docs/webhooks.md for the payload and how to verify signatures."};
constexpr SectionDoc kNotificationsSection{
    "notifications", true,
    "One `[[notifications]]` entry per SMTP server that sends alert emails: to fixed "
    "recipients, the alert's customer, or both, from the same durable outbox as webhooks "
    "(once per threshold, retried with backoff, never sent twice after a restart). See "
    "docs/operations.md, \"Email alerts\"."};
constexpr SectionDoc kCustomersSection{
    "customers", true,
    "Customers to create at start-up, handy for development and tests. Customers are run-time "
    "state kept in the store; most are created through the API or by their first event."};

// ---------------------------------------------------------------------------------------------
// Small helpers.

std::string_view type_phrase(const toml::node& n) {
  switch (n.type()) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return n.as_array()->is_array_of_tables() && !n.as_array()->empty() ? "an array of tables"
                                                                          : "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
      return "a date";
    case toml::node_type::time:
      return "a time";
    case toml::node_type::date_time:
      return "a date-time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

// Edit distance, for "did you mean" hints on misspelt keys. Keys are short, so quadratic is fine.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) {
    row[j] = j;
  }
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diagonal = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t above = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diagonal + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diagonal = above;
    }
  }
  return row[b.size()];
}

// " (did you mean 'x'?)" when one of `known` is close to `key`, else "".
template <typename Range>
std::string suggestion(std::string_view key, const Range& known) {
  std::string_view best;
  std::size_t best_distance = 3;  // more than two edits away is a different word
  for (std::string_view k : known) {
    std::size_t d = edit_distance(key, k);
    if (d < best_distance) {
      best = k;
      best_distance = d;
    }
  }
  return best.empty() ? std::string() : " (did you mean '" + std::string(best) + "'?)";
}

std::string format_bytes(std::int64_t bytes) {
  static constexpr std::pair<std::int64_t, std::string_view> kUnits[] = {
      {kTiB, "TiB"}, {kGiB, "GiB"}, {kMiB, "MiB"}, {kKiB, "KiB"}};
  for (const auto& [size, name] : kUnits) {
    if (bytes >= size && bytes % size == 0) {
      return std::to_string(bytes / size) + std::string(name);
    }
  }
  return std::to_string(bytes) + "B";
}

std::string format_seconds(std::int64_t seconds) {
  if (seconds > 0 && seconds % kSecondsPerDay == 0) {
    return std::to_string(seconds / kSecondsPerDay) + "d";
  }
  return std::to_string(seconds) + "s";
}

std::string kind_name(Kind kind, std::int64_t min, std::int64_t max) {
  switch (kind) {
    case Kind::kString:
      return "string";
    case Kind::kStringOrBool:
      return "string or boolean";
    case Kind::kInteger:
      return "integer (" + std::to_string(min) + ".." + std::to_string(max) + ")";
    case Kind::kBool:
      return "boolean";
    case Kind::kBytes:
      return "size (" + format_bytes(min) + ".." + format_bytes(max) + ")";
    case Kind::kDuration:
      return "duration (up to " + format_seconds(max) + ")";
    case Kind::kListen:
      return "host:port";
    case Kind::kStringList:
      return "array of strings";
    case Kind::kFilter:
      return "table";
    case Kind::kIntList:
      return "array of integers (" + std::to_string(min) + ".." + std::to_string(max) + ")";
    case Kind::kLimits:
      return "array of limit tables";
    case Kind::kAmount:
      return "amount";
    case Kind::kTiers:
      return "array of tier tables";
  }
  return "?";
}

// Text of a scalar filter value, as an event property of that value would read.
bool scalar_text(const toml::node& n, std::string* out) {
  if (const auto* s = n.as_string()) {
    *out = s->get();
    return true;
  }
  if (const auto* i = n.as_integer()) {
    *out = std::to_string(i->get());
    return true;
  }
  if (const auto* b = n.as_boolean()) {
    *out = b->get() ? "true" : "false";
    return true;
  }
  if (const auto* f = n.as_floating_point()) {
    double d = f->get();
    if (d != d || d == std::numeric_limits<double>::infinity() ||
        d == -std::numeric_limits<double>::infinity()) {
      return false;  // no JSON number has this text
    }
    std::array<char, 64> buf{};
    auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), d);
    if (ec != std::errc()) {
      return false;
    }
    out->assign(buf.data(), end);
    return true;
  }
  return false;
}

bool before(const toml::source_position& a, const toml::source_position& b) {
  return a.line != b.line ? a.line < b.line : a.column < b.column;
}

// A table's entries in file order. toml++ keeps keys sorted by name; errors should come in the
// order a person reads the file.
std::vector<std::pair<const toml::key*, const toml::node*>> in_file_order(const toml::table& t) {
  std::vector<std::pair<const toml::key*, const toml::node*>> out;
  out.reserve(t.size());
  for (const auto& [k, v] : t) {
    out.emplace_back(&k, &v);
  }
  std::stable_sort(out.begin(), out.end(), [](const auto& a, const auto& b) {
    return before(a.first->source().begin, b.first->source().begin);
  });
  return out;
}

// Where each key of one table was given, for checks that span keys.
using Positions = std::map<std::string, toml::source_position, std::less<>>;

// ---------------------------------------------------------------------------------------------
// The loader: walks the TOML tree against the option table.

class Loader {
 public:
  explicit Loader(std::string_view path) : path_(path.empty() ? "<config>" : path) {}

  Status load(const toml::table& root, Config* config) {
    for (const auto& [key, node] : in_file_order(root)) {
      std::string_view name = key->str();
      const toml::source_position at = key->source().begin;
      if (name == kServerSection.name) {
        TALLY_TRY(load_section(*node, at, kServerSection, kServerOptions, &config->server));
      } else if (name == kStorageSection.name) {
        TALLY_TRY(load_section(*node, at, kStorageSection, kStorageOptions, &config->storage));
      } else if (name == kMetersSection.name) {
        TALLY_TRY(load_meters(*node, at, &config->meters));
      } else if (name == kCustomersSection.name) {
        TALLY_TRY(load_customers(*node, at, &config->customers));
      } else if (name == kEnforcementSection.name) {
        TALLY_TRY(load_section(*node, at, kEnforcementSection, kEnforcementOptions,
                               &config->enforcement));
      } else if (name == kPlansSection.name) {
        TALLY_TRY(load_plans(*node, at, &config->plans));
      } else if (name == kRoutesSection.name) {
        TALLY_TRY(load_routes(*node, at, &config->routes));
      } else if (name == kCreditsSection.name) {
        TALLY_TRY(load_section(*node, at, kCreditsSection, kCreditsOptions, &config->credits));
      } else if (name == kRetentionSection.name) {
        TALLY_TRY(load_section(*node, at, kRetentionSection, kRetentionOptions,
                               &config->retention));
      } else if (name == kPricesSection.name) {
        TALLY_TRY(load_prices(*node, at, &config->prices));
      } else if (name == kAlertsSection.name) {
        TALLY_TRY(load_section(*node, at, kAlertsSection, kAlertsOptions, &config->alerts));
      } else if (name == kWebhooksSection.name) {
        TALLY_TRY(load_webhooks(*node, at, &config->webhooks));
      } else if (name == kNotificationsSection.name) {
        TALLY_TRY(load_notifications(*node, at, &config->notifications));
      } else {
        static constexpr std::string_view kNames[] = {
            kServerSection.name, kStorageSection.name, kEnforcementSection.name,
            kMetersSection.name, kPlansSection.name,   kRoutesSection.name,
            kCreditsSection.name, kPricesSection.name, kAlertsSection.name,
            kWebhooksSection.name, kNotificationsSection.name, kCustomersSection.name,
            kRetentionSection.name};
        std::string hint = suggestion(name, kNames);
        if (node->is_table()) {
          return fail(at, "unknown section [" + std::string(name) + "]" + hint);
        }
        if (node->is_array_of_tables()) {
          return fail(at, "unknown section [[" + std::string(name) + "]]" + hint);
        }
        return fail(at, "unknown key '" + std::string(name) + "' at top level" + hint);
      }
    }
    return cross_check(root, *config);
  }

 private:
  // "file:line: what".
  Status fail(const toml::source_position& at, std::string_view what) const {
    return Status::invalid_argument(path_ + ":" + std::to_string(at.line) + ": " +
                                    std::string(what));
  }

  Status fail_field(const toml::source_position& at, std::string_view field,
                    std::string_view what) const {
    return fail(at, std::string(field) + ": " + std::string(what));
  }

  template <typename T>
  Status load_section(const toml::node& node, const toml::source_position& at,
                      const SectionDoc& section,
                      std::span<const Option<std::type_identity_t<T>>> options, T* target) {
    const toml::table* table = node.as_table();
    if (table == nullptr) {
      return fail(at, std::string(section.name) + ": expected a table ([" +
                          std::string(section.name) + "]), got " + std::string(type_phrase(node)));
    }
    Positions positions;
    return apply(*table, options, std::string(section.name) + ".",
                 "[" + std::string(section.name) + "]", target, &positions);
  }

  // Sets every key of `table` through `options`. `field_prefix` starts field names in messages
  // ("server.", "meters[2]."); `where` names the table in unknown-key messages ("[[meters]]").
  template <typename T>
  Status apply(const toml::table& table, std::span<const Option<std::type_identity_t<T>>> options,
               const std::string& field_prefix, const std::string& where, T* target,
               Positions* positions) {
    for (const auto& [key, node] : in_file_order(table)) {
      std::string_view name = key->str();
      const toml::source_position at = key->source().begin;
      const auto option = std::find_if(options.begin(), options.end(),
                                       [&](const Option<T>& o) { return o.key == name; });
      if (option == options.end()) {
        std::vector<std::string_view> known;
        for (const Option<T>& o : options) {
          known.push_back(o.key);
        }
        return fail(
            at, "unknown key '" + std::string(name) + "' in " + where + suggestion(name, known));
      }
      const std::string field = field_prefix + std::string(name);
      Value value;
      TALLY_TRY(read(*node, *option, field, &value));
      Status s = option->set(*target, std::move(value));
      if (!s.ok()) {
        return fail_field(node->source().begin, field, s.message());
      }
      positions->emplace(std::string(name), at);
    }
    // The table's own position is its header ("[[meters]]"), where a missing key belongs.
    for (const Option<T>& o : options) {
      if (o.required && positions->find(o.key) == positions->end()) {
        return fail(table.source().begin, field_prefix.substr(0, field_prefix.size() - 1) +
                                              ": missing required key '" + std::string(o.key) +
                                              "'");
      }
    }
    return Status();
  }

  // Reads `node` as option o's kind into *out, checking the bounds.
  template <typename T>
  Status read(const toml::node& node, const Option<T>& o, const std::string& field,
              Value* out) const {
    const toml::source_position at = node.source().begin;
    auto wrong_type = [&](std::string_view expected) {
      return fail_field(
          at, field,
          "expected " + std::string(expected) + ", got " + std::string(type_phrase(node)));
    };
    switch (o.kind) {
      case Kind::kStringOrBool:
        if (const auto* b = node.as_boolean()) {
          out->text = b->get() ? "true" : "false";
          return Status();
        }
        [[fallthrough]];
      case Kind::kString: {
        const auto* s = node.as_string();
        if (s == nullptr) {
          return wrong_type(o.kind == Kind::kString ? "a string" : "a string or a boolean");
        }
        const std::string& text = s->get();
        const auto size = static_cast<std::int64_t>(text.size());
        if (size < o.min || size > o.max) {
          if (o.min > 0 && size == 0) {
            return fail_field(at, field, "must not be empty");
          }
          return fail_field(at, field,
                            "must be " + std::to_string(o.min) + " to " + std::to_string(o.max) +
                                " bytes long, got " + std::to_string(size));
        }
        out->text = text;
        return Status();
      }
      case Kind::kInteger: {
        const auto* i = node.as_integer();
        if (i == nullptr) {
          return wrong_type("an integer");
        }
        out->number = i->get();
        if (out->number < o.min || out->number > o.max) {
          return fail_field(at, field,
                            std::to_string(out->number) + " is out of range " +
                                std::to_string(o.min) + ".." + std::to_string(o.max));
        }
        return Status();
      }
      case Kind::kBool: {
        const auto* b = node.as_boolean();
        if (b == nullptr) {
          return wrong_type("true or false");
        }
        out->flag = b->get();
        return Status();
      }
      case Kind::kBytes: {
        std::uint64_t bytes = 0;
        if (const auto* i = node.as_integer()) {
          if (i->get() < 0) {
            return fail_field(at, field, std::to_string(i->get()) + " is negative");
          }
          bytes = static_cast<std::uint64_t>(i->get());
        } else if (const auto* s = node.as_string()) {
          Status st = parse_byte_size(s->get(), &bytes);
          if (!st.ok()) {
            return fail_field(at, field, st.message());
          }
        } else {
          return wrong_type("a size (an integer, or a string such as \"64MiB\")");
        }
        if (bytes < static_cast<std::uint64_t>(o.min) ||
            bytes > static_cast<std::uint64_t>(o.max)) {
          return fail_field(at, field,
                            std::to_string(bytes) + " bytes is out of range " +
                                format_bytes(o.min) + ".." + format_bytes(o.max));
        }
        out->number = static_cast<std::int64_t>(bytes);
        return Status();
      }
      case Kind::kDuration: {
        std::int64_t seconds = 0;
        if (const auto* i = node.as_integer()) {
          seconds = i->get();
          if (seconds < 0) {
            return fail_field(at, field, std::to_string(seconds) + " is negative");
          }
        } else if (const auto* s = node.as_string()) {
          if (s->get() != "forever") {
            Status st = parse_duration_seconds(s->get(), &seconds);
            if (!st.ok()) {
              return fail_field(at, field, st.message() + ", or \"forever\"");
            }
          }
        } else {
          return wrong_type("a duration (\"forever\", seconds, or a string such as \"30d\")");
        }
        if (seconds < o.min || seconds > o.max) {
          return fail_field(at, field,
                            std::to_string(seconds) + " seconds is out of range " +
                                format_seconds(o.min) + ".." + format_seconds(o.max));
        }
        out->number = seconds;
        return Status();
      }
      case Kind::kListen: {
        const auto* s = node.as_string();
        if (s == nullptr) {
          return wrong_type("a string \"host:port\"");
        }
        std::uint16_t port = 0;
        Status st = parse_listen(s->get(), &out->text, &port);
        if (!st.ok()) {
          return fail_field(at, field, st.message());
        }
        out->number = port;
        return Status();
      }
      case Kind::kStringList: {
        const auto* array = node.as_array();
        if (array == nullptr) {
          return wrong_type("an array of strings");
        }
        if (static_cast<std::int64_t>(array->size()) > o.max) {
          return fail_field(at, field,
                            "has " + std::to_string(array->size()) + " entries; at most " +
                                std::to_string(o.max) + " are allowed");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& element = *array->get(i);
          const std::string element_field = field + "[" + std::to_string(i) + "]";
          const toml::source_position element_at = element.source().begin;
          const auto* s = element.as_string();
          if (s == nullptr) {
            return fail_field(element_at, element_field,
                              "expected a string, got " + std::string(type_phrase(element)));
          }
          if (s->get().empty() || s->get().size() > kNameBytesMax) {
            return fail_field(element_at, element_field,
                              "must be 1 to " + std::to_string(kNameBytesMax) + " bytes long");
          }
          if (std::find(out->list.begin(), out->list.end(), s->get()) != out->list.end()) {
            return fail_field(element_at, element_field, "'" + s->get() + "' is listed twice");
          }
          out->list.push_back(s->get());
        }
        return Status();
      }
      case Kind::kFilter: {
        const auto* table = node.as_table();
        if (table == nullptr) {
          return wrong_type("a table such as { feature_id = \"x\" }");
        }
        if (static_cast<std::int64_t>(table->size()) > o.max) {
          return fail_field(at, field,
                            "has " + std::to_string(table->size()) + " entries; at most " +
                                std::to_string(o.max) + " are allowed");
        }
        for (const auto& [key, value] : in_file_order(*table)) {
          const std::string entry_field = field + "." + std::string(key->str());
          const toml::source_position entry_at = key->source().begin;
          if (key->str().empty() || key->str().size() > kNameBytesMax) {
            return fail_field(
                entry_at, field,
                "property names must be 1 to " + std::to_string(kNameBytesMax) + " bytes long");
          }
          std::string text;
          if (!scalar_text(*value, &text)) {
            return fail_field(entry_at, entry_field,
                              "expected a string, integer, float or boolean, got " +
                                  std::string(type_phrase(*value)));
          }
          if (text.size() > kFilterTextBytesMax) {
            return fail_field(entry_at, entry_field,
                              "longer than " + std::to_string(kFilterTextBytesMax) + " bytes");
          }
          out->pairs.emplace_back(std::string(key->str()), std::move(text));
        }
        return Status();
      }
      case Kind::kIntList: {
        const auto* array = node.as_array();
        if (array == nullptr) {
          return wrong_type("an array of integers");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& element = *array->get(i);
          const std::string element_field = field + "[" + std::to_string(i) + "]";
          const auto* n = element.as_integer();
          if (n == nullptr) {
            return fail_field(element.source().begin, element_field,
                              "expected an integer, got " + std::string(type_phrase(element)));
          }
          if (n->get() < o.min || n->get() > o.max) {
            return fail_field(element.source().begin, element_field,
                              std::to_string(n->get()) + " is out of range " +
                                  std::to_string(o.min) + ".." + std::to_string(o.max));
          }
          if (!out->ints.empty() && n->get() <= out->ints.back()) {
            return fail_field(element.source().begin, element_field,
                              "values must be ascending without repeats");
          }
          out->ints.push_back(n->get());
        }
        return Status();
      }
      case Kind::kAmount: {
        if (!scalar_text(node, &out->text) || node.is_boolean()) {
          return wrong_type("a number or a decimal string");
        }
        return Status();
      }
      case Kind::kTiers: {
        const auto* array = node.as_array();
        if (array == nullptr || array->empty()) {
          return wrong_type("a non-empty array of tables such as [{ up_to = 1000, unit_price = "
                            "\"0.01\" }, { unit_price = \"0.008\" }]");
        }
        if (static_cast<std::int64_t>(array->size()) > o.max) {
          return fail_field(at, field,
                            "has " + std::to_string(array->size()) + " entries; at most " +
                                std::to_string(o.max) + " are allowed");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& element = *array->get(i);
          const std::string ef = field + "[" + std::to_string(i) + "]";
          const toml::source_position eat = element.source().begin;
          const auto* t = element.as_table();
          if (t == nullptr) {
            return fail_field(eat, ef, "expected a table, got " + std::string(type_phrase(element)));
          }
          core::PriceTier tier;
          tier.unbounded = true;
          for (const auto& [key, value] : in_file_order(*t)) {
            const std::string kf = ef + "." + std::string(key->str());
            const toml::source_position kat = key->source().begin;
            const std::string_view k = key->str();
            std::string text;
            if (!scalar_text(*value, &text) || value->is_boolean()) {
              return fail_field(kat, kf, "expected a number or a decimal string");
            }
            if (k == "up_to") {
              if (text == "inf" || text == "unlimited" || text == "-1") {
                continue;
              }
              Status st = decimal_value(text, false, &tier.up_to);
              if (!st.ok() || tier.up_to.units == 0) {
                return fail_field(kat, kf, "expected a positive number or \"inf\"");
              }
              tier.unbounded = false;
            } else if (k == "unit_price" || k == "flat_fee") {
              Status st = decimal_value(text, false, k == "unit_price" ? &tier.unit_price
                                                                        : &tier.flat_fee);
              if (!st.ok()) {
                return fail_field(kat, kf, st.message());
              }
            } else {
              static constexpr std::string_view kKeys[] = {"up_to", "unit_price", "flat_fee"};
              return fail(kat, "unknown key '" + std::string(k) + "' in " + ef + suggestion(k, kKeys));
            }
          }
          const bool last = i + 1 == array->size();
          if (tier.unbounded != last) {
            return fail_field(eat, ef,
                              last ? "the last tier has no bound: use up_to = \"inf\" or leave "
                                     "it out"
                                   : "every tier but the last needs 'up_to'");
          }
          if (!out->tiers.empty() && !tier.unbounded && tier.up_to <= out->tiers.back().up_to) {
            return fail_field(eat, ef + ".up_to", "tiers must be ascending");
          }
          out->tiers.push_back(tier);
        }
        return Status();
      }
      case Kind::kLimits: {
        const auto* array = node.as_array();
        if (array == nullptr) {
          return wrong_type("an array of tables such as [{ meter = \"api_calls\", period = "
                            "\"day\", amount = 100 }]");
        }
        if (static_cast<std::int64_t>(array->size()) > o.max) {
          return fail_field(at, field,
                            "has " + std::to_string(array->size()) + " entries; at most " +
                                std::to_string(o.max) + " are allowed");
        }
        for (std::size_t i = 0; i < array->size(); ++i) {
          const toml::node& element = *array->get(i);
          const std::string ef = field + "[" + std::to_string(i) + "]";
          const toml::source_position eat = element.source().begin;
          const auto* t = element.as_table();
          if (t == nullptr) {
            return fail_field(eat, ef, "expected a table, got " + std::string(type_phrase(element)));
          }
          std::string meter, period, amount;
          std::int64_t days = 0;
          bool hard = true;
          bool has_amount = false;
          for (const auto& [key, value] : in_file_order(*t)) {
            const std::string kf = ef + "." + std::string(key->str());
            const toml::source_position kat = key->source().begin;
            const std::string_view k = key->str();
            if (k == "meter" || k == "period") {
              const auto* str = value->as_string();
              if (str == nullptr) {
                return fail_field(kat, kf, "expected a string, got " + std::string(type_phrase(*value)));
              }
              (k == "meter" ? meter : period) = str->get();
            } else if (k == "amount") {
              if (!scalar_text(*value, &amount) || value->is_boolean()) {
                return fail_field(kat, kf, "expected a number, -1 or \"unlimited\"");
              }
              has_amount = true;
            } else if (k == "days") {
              const auto* n = value->as_integer();
              if (n == nullptr || n->get() < 1 || n->get() > 3650) {
                return fail_field(kat, kf, "expected an integer 1..3650");
              }
              days = n->get();
            } else if (k == "hard") {
              const auto* b = value->as_boolean();
              if (b == nullptr) {
                return fail_field(kat, kf, "expected true or false");
              }
              hard = b->get();
            } else {
              static constexpr std::string_view kKeys[] = {"meter", "period", "amount", "days", "hard"};
              return fail(kat, "unknown key '" + std::string(k) + "' in " + ef + suggestion(k, kKeys));
            }
          }
          if (meter.empty() || period.empty() || !has_amount) {
            return fail_field(eat, ef, "a limit needs 'meter', 'period' and 'amount'");
          }
          Result<core::LimitRule> rule = make_limit(meter, period, days, amount, hard);
          if (!rule) {
            return fail_field(eat, ef, rule.error().message());
          }
          out->limits.push_back(std::move(*rule));
        }
        return Status();
      }
    }
    return fail_field(at, field, "unsupported option kind");  // unreachable: all kinds handled
  }

  // The node of an array-of-tables section, or an error saying how to write one.
  Result<const toml::array*> array_of_tables(const toml::node& node,
                                             const toml::source_position& at,
                                             const SectionDoc& section) const {
    const toml::array* array = node.as_array();
    const std::string name(section.name);
    if (array == nullptr) {
      return fail(at, name + ": expected an array of tables ([[" + name + "]]), got " +
                          std::string(type_phrase(node)));
    }
    for (std::size_t i = 0; i < array->size(); ++i) {
      const toml::node& entry = *array->get(i);
      if (!entry.is_table()) {
        return fail(entry.source().begin, name + "[" + std::to_string(i) +
                                              "]: expected a table, got " +
                                              std::string(type_phrase(entry)));
      }
    }
    return array;
  }

  Status load_meters(const toml::node& node, const toml::source_position& at,
                     std::vector<core::MeterSpec>* meters) {
    Result<const toml::array*> array = array_of_tables(node, at, kMetersSection);
    if (!array) {
      return array.error();
    }
    if ((*array)->size() > kMetersMax) {
      return fail(at, "meters: " + std::to_string((*array)->size()) + " meters; at most " +
                          std::to_string(kMetersMax) + " are allowed");
    }
    std::map<std::string, std::pair<std::size_t, std::uint32_t>, std::less<>> seen;  // line
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      const std::string prefix = "meters[" + std::to_string(i) + "]";
      core::MeterSpec meter;
      Positions positions;
      TALLY_TRY(apply(entry, kMeterOptions, prefix + ".", "[[meters]]", &meter, &positions));

      const toml::source_position key_at = positions.at("key");
      auto [it, inserted] = seen.try_emplace(meter.key, i, key_at.line);
      if (!inserted) {
        return fail_field(key_at, prefix + ".key",
                          "'" + meter.key + "' is already the key of meters[" +
                              std::to_string(it->second.first) + "] (line " +
                              std::to_string(it->second.second) + ")");
      }

      const auto value_at = positions.find("value");
      const bool has_value = value_at != positions.end();
      if (meter.aggregation == core::Aggregation::kCount && has_value) {
        const bool explicit_count = positions.count("aggregation") > 0;
        return fail_field(value_at->second, prefix + ".value",
                          std::string("a count takes no value") +
                              (explicit_count ? "" : " (aggregation defaults to count)") +
                              "; remove 'value' or choose another aggregation");
      }
      if (meter.allow_negative && (meter.aggregation == core::Aggregation::kCount ||
                                   meter.aggregation == core::Aggregation::kUniqueCount)) {
        return fail_field(positions.at("allow_negative"), prefix + ".allow_negative",
                          std::string("a ") +
                              std::string(core::aggregation_name(meter.aggregation)) +
                              " has no value that could be negative; remove 'allow_negative'");
      }
      if (meter.aggregation != core::Aggregation::kCount && !has_value) {
        return fail(entry.source().begin,
                    prefix + ": aggregation '" +
                        std::string(core::aggregation_name(meter.aggregation)) +
                        "' needs a 'value' (a path such as \"$.input_tokens\")");
      }
      meters->push_back(std::move(meter));
    }
    return Status();
  }

  Status load_customers(const toml::node& node, const toml::source_position& at,
                        std::vector<CustomerSeed>* customers) {
    Result<const toml::array*> array = array_of_tables(node, at, kCustomersSection);
    if (!array) {
      return array.error();
    }
    if ((*array)->size() > kCustomersMax) {
      return fail(at, "customers: " + std::to_string((*array)->size()) + " customers; at most " +
                          std::to_string(kCustomersMax) + " are allowed");
    }
    std::map<std::string, std::pair<std::size_t, std::uint32_t>, std::less<>> seen;
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      const std::string prefix = "customers[" + std::to_string(i) + "]";
      CustomerSeed customer;
      Positions positions;
      TALLY_TRY(
          apply(entry, kCustomerOptions, prefix + ".", "[[customers]]", &customer, &positions));
      const toml::source_position id_at = positions.at("id");
      auto [it, inserted] = seen.try_emplace(customer.id, i, id_at.line);
      if (!inserted) {
        return fail_field(id_at, prefix + ".id",
                          "'" + customer.id + "' is already the id of customers[" +
                              std::to_string(it->second.first) + "] (line " +
                              std::to_string(it->second.second) + ")");
      }
      customers->push_back(std::move(customer));
    }
    return Status();
  }

  Status load_plans(const toml::node& node, const toml::source_position& at,
                    std::vector<core::Plan>* plans) {
    Result<const toml::array*> array = array_of_tables(node, at, kPlansSection);
    if (!array) {
      return array.error();
    }
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      const std::string prefix = "plans[" + std::to_string(i) + "]";
      core::Plan plan;
      Positions positions;
      TALLY_TRY(apply(entry, kPlanOptions, prefix + ".", "[[plans]]", &plan, &positions));
      for (std::size_t j = 0; j < plans->size(); ++j) {
        if ((*plans)[j].key == plan.key) {
          return fail_field(positions.at("key"), prefix + ".key",
                            "'" + plan.key + "' is already the key of plans[" +
                                std::to_string(j) + "]");
        }
      }
      plans->push_back(std::move(plan));
    }
    return Status();
  }

  Status load_routes(const toml::node& node, const toml::source_position& at,
                     std::vector<RouteRule>* routes) {
    Result<const toml::array*> array = array_of_tables(node, at, kRoutesSection);
    if (!array) {
      return array.error();
    }
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      RouteRule route;
      Positions positions;
      TALLY_TRY(apply(entry, kRouteOptions, "routes[" + std::to_string(i) + "].", "[[routes]]",
                      &route, &positions));
      routes->push_back(std::move(route));
    }
    return Status();
  }

  Status load_webhooks(const toml::node& node, const toml::source_position& at,
                       std::vector<WebhookConfig>* webhooks) {
    Result<const toml::array*> array = array_of_tables(node, at, kWebhooksSection);
    if (!array) {
      return array.error();
    }
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      WebhookConfig hook;
      Positions positions;
      TALLY_TRY(apply(entry, kWebhookOptions, "webhooks[" + std::to_string(i) + "].",
                      "[[webhooks]]", &hook, &positions));
      webhooks->push_back(std::move(hook));
    }
    return Status();
  }

  Status load_notifications(const toml::node& node, const toml::source_position& at,
                            std::vector<NotificationConfig>* notifications) {
    Result<const toml::array*> array = array_of_tables(node, at, kNotificationsSection);
    if (!array) {
      return array.error();
    }
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      NotificationConfig n;
      Positions positions;
      TALLY_TRY(apply(entry, kNotificationOptions, "notifications[" + std::to_string(i) + "].",
                      "[[notifications]]", &n, &positions));
      notifications->push_back(std::move(n));
    }
    return Status();
  }

  Status load_prices(const toml::node& node, const toml::source_position& at,
                     std::vector<PriceConfig>* prices) {
    Result<const toml::array*> array = array_of_tables(node, at, kPricesSection);
    if (!array) {
      return array.error();
    }
    for (std::size_t i = 0; i < (*array)->size(); ++i) {
      const toml::table& entry = *(*array)->get(i)->as_table();
      const std::string prefix = "prices[" + std::to_string(i) + "]";
      PriceConfig price;
      Positions positions;
      TALLY_TRY(apply(entry, kPriceOptions, prefix + ".", "[[prices]]", &price, &positions));
      const core::PriceSpec& p = price.spec;
      const toml::source_position eat = entry.source().begin;
      auto needs = [&](std::string_view what) {
        return fail(eat, prefix + ": model '" + std::string(core::price_model_name(p.model)) +
                             "' needs " + std::string(what));
      };
      switch (p.model) {
        case core::PriceModel::kPerUnit:
          if (!price.has_unit_price) {
            return needs("'unit_price'");
          }
          break;
        case core::PriceModel::kGraduated:
        case core::PriceModel::kVolume:
          if (p.tiers.empty()) {
            return needs("'tiers'");
          }
          break;
        case core::PriceModel::kPackage:
          if (p.package_size.units <= 0 || positions.count("package_price") == 0) {
            return needs("'package_size' (> 0) and 'package_price'");
          }
          break;
        case core::PriceModel::kFlat:
          if (positions.count("flat_fee") == 0) {
            return needs("'flat_fee'");
          }
          break;
      }
      prices->push_back(std::move(price));
    }
    return Status();
  }

  // References between sections: limits and routes name meters, default_plan names a plan.
  Status cross_check(const toml::table& root, const Config& config) const {
    auto entry_at = [&](std::string_view section, std::size_t i) {
      const toml::array* a = root[section].as_array();
      return a != nullptr && i < a->size() ? a->get(i)->source().begin : root.source().begin;
    };
    for (std::size_t i = 0; i < config.plans.size(); ++i) {
      const core::Plan& plan = config.plans[i];
      for (std::size_t j = 0; j < plan.limits.size(); ++j) {
        const core::LimitRule& l = plan.limits[j];
        const std::string field =
            "plans[" + std::to_string(i) + "].limits[" + std::to_string(j) + "]";
        const core::MeterSpec* m = config.find_meter(l.meter);
        if (m == nullptr) {
          return fail_field(entry_at("plans", i), field + ".meter",
                            "'" + l.meter + "' is not a configured meter");
        }
        for (std::size_t k = 0; k < j; ++k) {
          const core::LimitRule& earlier = plan.limits[k];
          if (earlier.meter == l.meter && earlier.period == l.period) {
            return fail_field(entry_at("plans", i), field,
                              "repeats the " + std::string(core::period_name(l.period)) +
                                  " limit of meter '" + l.meter + "' (limits[" +
                                  std::to_string(k) +
                                  "]); a plan has one limit per meter and period");
          }
        }
        if (m->aggregation != core::Aggregation::kCount &&
            m->aggregation != core::Aggregation::kSum &&
            m->aggregation != core::Aggregation::kLatest &&
            m->aggregation != core::Aggregation::kMax) {
          return fail_field(entry_at("plans", i), field + ".meter",
                            "meter '" + l.meter + "' aggregates by " +
                                std::string(core::aggregation_name(m->aggregation)) +
                                "; limits apply to count, sum, latest and max meters");
        }
        if (core::period_is_rate(l.period) && m->aggregation != core::Aggregation::kCount &&
            m->aggregation != core::Aggregation::kSum) {
          return fail_field(entry_at("plans", i), field + ".period",
                            "a rate limit needs a count or sum meter");
        }
      }
    }
    for (std::size_t i = 0; i < config.routes.size(); ++i) {
      const RouteRule& r = config.routes[i];
      if (config.find_meter(r.meter) == nullptr) {
        return fail_field(entry_at("routes", i), "routes[" + std::to_string(i) + "].meter",
                          "'" + r.meter + "' is not a configured meter");
      }
    }
    for (std::size_t i = 0; i < config.customers.size(); ++i) {
      const std::string& plan = config.customers[i].plan;
      if (!plan.empty() && config.find_plan(plan) == nullptr) {
        return fail_field(entry_at("customers", i), "customers[" + std::to_string(i) + "].plan",
                          "'" + plan + "' is not a configured plan");
      }
    }
    for (std::size_t i = 0; i < config.prices.size(); ++i) {
      const core::PriceSpec& p = config.prices[i].spec;
      const std::string field = "prices[" + std::to_string(i) + "]";
      const core::MeterSpec* m = config.find_meter(p.meter);
      if (m == nullptr) {
        return fail_field(entry_at("prices", i), field + ".meter",
                          "'" + p.meter + "' is not a configured meter");
      }
      if (m->aggregation != core::Aggregation::kCount && m->aggregation != core::Aggregation::kSum) {
        return fail_field(entry_at("prices", i), field + ".meter",
                          "meter '" + p.meter + "' aggregates by " +
                              std::string(core::aggregation_name(m->aggregation)) +
                              "; prices apply to count and sum meters");
      }
      if (p.currency != config.credits.currency) {
        return fail_field(entry_at("prices", i), field + ".currency",
                          "'" + p.currency + "' differs from [credits] currency '" +
                              config.credits.currency + "'");
      }
      // Entries of one meter and match are versions of one price: each its own start.
      for (std::size_t j = 0; j < i; ++j) {
        const PriceConfig& earlier = config.prices[j];
        if (earlier.spec.meter != p.meter || !same_match(earlier.spec.match, p.match)) {
          continue;
        }
        const PriceConfig& here = config.prices[i];
        if (here.has_effective_from == earlier.has_effective_from &&
            (!here.has_effective_from || here.effective_from_us == earlier.effective_from_us)) {
          return fail_field(entry_at("prices", i), field,
                            "repeats the meter and match of prices[" + std::to_string(j) +
                                "]: versions of one price each need their own effective_from "
                                "(one may have none)");
        }
      }
    }
    if (!config.enforcement.default_plan.empty() &&
        config.find_plan(config.enforcement.default_plan) == nullptr) {
      const toml::node* n = root.at_path("enforcement.default_plan").node();
      return fail_field(n != nullptr ? n->source().begin : root.source().begin,
                        "enforcement.default_plan",
                        "'" + config.enforcement.default_plan + "' is not a configured plan");
    }
    for (const auto& [removed, replacement] : config.enforcement.replaced_plans) {
      const toml::node* n = root.at_path("enforcement.replaced_plans").node();
      const toml::source_position where = n != nullptr ? n->source().begin : root.source().begin;
      if (config.find_plan(removed) != nullptr) {
        return fail_field(where, "enforcement.replaced_plans." + removed,
                          "'" + removed + "' is a configured plan; only removed plans are replaced");
      }
      if (config.find_plan(replacement) == nullptr) {
        return fail_field(where, "enforcement.replaced_plans." + removed,
                          "'" + replacement + "' is not a configured plan");
      }
    }
    for (std::size_t i = 0; i < config.plans.size(); ++i) {
      const core::Plan& plan = config.plans[i];
      if (!plan.alert_levels.empty() && plan.alert_levels.size() != plan.alert_thresholds.size()) {
        return fail_field(entry_at("plans", i), "plans[" + std::to_string(i) + "].alert_levels",
                          "names " + std::to_string(plan.alert_levels.size()) +
                              " levels for " + std::to_string(plan.alert_thresholds.size()) +
                              " alert_thresholds; give one per threshold");
      }
    }
    const AlertsConfig& alerts = config.alerts;
    if (!alerts.levels.empty() && alerts.levels.size() != alerts.thresholds.size()) {
      const toml::node* n = root.at_path("alerts.levels").node();
      return fail_field(n != nullptr ? n->source().begin : root.source().begin, "alerts.levels",
                        "names " + std::to_string(alerts.levels.size()) + " levels for " +
                            std::to_string(alerts.thresholds.size()) +
                            " thresholds; give one per threshold");
    }
    for (std::size_t i = 0; i < config.webhooks.size(); ++i) {
      const WebhookConfig& w = config.webhooks[i];
      if (w.retry_backoff_max_seconds < w.retry_backoff_seconds) {
        return fail_field(entry_at("webhooks", i),
                          "webhooks[" + std::to_string(i) + "].retry_backoff_max",
                          "is shorter than retry_backoff");
      }
    }
    for (std::size_t i = 0; i < config.notifications.size(); ++i) {
      const NotificationConfig& n = config.notifications[i];
      const std::string name = "notifications[" + std::to_string(i) + "]";
      if (n.retry_backoff_max_seconds < n.retry_backoff_seconds) {
        return fail_field(entry_at("notifications", i), name + ".retry_backoff_max",
                          "is shorter than retry_backoff");
      }
      if (n.to.empty() && !n.to_customer) {
        return fail_field(entry_at("notifications", i), name,
                          "no recipients: set `to`, or `to_customer = true`");
      }
      if (!n.user.empty() && n.password_env.empty()) {
        return fail_field(entry_at("notifications", i), name,
                          "user needs password_env (the environment variable that holds the "
                          "password)");
      }
      if (n.user.empty() && !n.password_env.empty()) {
        return fail_field(entry_at("notifications", i), name, "password_env needs a user");
      }
    }
    return Status();
  }

  std::string path_;
};

template <typename T>
void append_options(const SectionDoc& section, std::span<const Option<T>> options,
                    std::vector<OptionInfo>* out) {
  for (const Option<T>& o : options) {
    out->push_back(OptionInfo{std::string(section.name), section.is_array, std::string(o.key),
                              kind_name(o.kind, o.min, o.max), std::string(o.default_toml),
                              o.required, std::string(o.doc)});
  }
}

// Markdown table cells cannot hold '|' or line breaks.
std::string cell(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '|') {
      out += "\\|";
    } else if (c == '\n') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out;
}

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

bool equals_ignore_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) {
      return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    };
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

// Reads leading digits of *s into *value (consuming them). False when there are none or the
// number exceeds uint64.
bool take_number(std::string_view* s, std::uint64_t* value) {
  const char* begin = s->data();
  const char* end = s->data() + s->size();
  auto [ptr, ec] = std::from_chars(begin, end, *value);
  if (ec != std::errc() || ptr == begin) {
    return false;
  }
  s->remove_prefix(static_cast<std::size_t>(ptr - begin));
  return true;
}

}  // namespace

// -----------------------------------------------------------------------------------------------

Result<Config> parse_config(std::string_view toml_text, std::string_view path) {
  const std::string shown_path = path.empty() ? std::string("<config>") : std::string(path);
  Config config;
  config.source_path = std::string(path);
  try {
    toml::table root = toml::parse(toml_text, std::string_view(shown_path));
    Loader loader(shown_path);
    TALLY_TRY(loader.load(root, &config));
    for (PriceConfig& price : config.prices) {
      const core::Decimal markup =
          price.has_markup ? price.markup_percent : config.credits.markup_percent;
      core::Decimal factor;
      core::Decimal rate;
      if (!core::divide_decimal_half_even(markup + core::Decimal::from_int(100),
                                          core::Decimal::from_int(100), &factor) ||
          !core::multiply_half_even(config.credits.per_currency_unit, factor, &rate)) {
        return Status::invalid_argument(shown_path + ": prices of meter '" + price.spec.meter +
                                        "': the credit rate is out of range");
      }
      price.spec.credits_per_currency_unit = rate;
    }
  } catch (const toml::parse_error& e) {
    const toml::source_position at = e.source().begin;
    return Status::invalid_argument(shown_path + ":" + std::to_string(at.line) + ":" +
                                    std::to_string(at.column) + ": " +
                                    std::string(e.description()));
  } catch (const std::exception& e) {
    // Only allocation failure is expected here; no exception may leave the config layer.
    return Status::internal(shown_path + ": " + e.what());
  }
  return config;
}

Result<Config> load_config_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return Status::not_found("cannot read config file '" + path + "': it is a directory");
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return Status::not_found("cannot read config file '" + path + "': " + std::strerror(errno));
  }
  // Not `stream << in.rdbuf()`: it fails on an empty file, and an empty file is a valid
  // config (every default).
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) {
    // A directory opens on Linux but cannot be read.
    return Status::not_found("cannot read config file '" + path + "'");
  }
  return parse_config(text, path);
}

Status parse_listen(std::string_view text, std::string* host, std::uint16_t* port) {
  std::string_view host_part;
  std::string_view port_part;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return Status::invalid_argument("'" + std::string(text) +
                                      "': missing ']' after the "
                                      "IPv6 address");
    }
    host_part = text.substr(1, close - 1);
    if (host_part.empty()) {
      return Status::invalid_argument("'" + std::string(text) + "': empty IPv6 address");
    }
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return Status::invalid_argument("'" + std::string(text) +
                                      "': expected host:port, such as \"[::1]:8080\"");
    }
    port_part = text.substr(close + 2);
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return Status::invalid_argument("'" + std::string(text) +
                                      "': expected host:port, such as \"127.0.0.1:8080\"");
    }
    host_part = text.substr(0, colon);
    port_part = text.substr(colon + 1);
    if (host_part.find(':') != std::string_view::npos) {
      return Status::invalid_argument("'" + std::string(text) +
                                      "': an IPv6 address needs brackets, as in \"[::1]:8080\"");
    }
  }
  for (char c : host_part) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' ||
                    c == '-' || c == '_' || c == ':' || c == '%';
    if (!ok) {
      return Status::invalid_argument("'" + std::string(text) + "': invalid character in host");
    }
  }
  if (port_part.empty() || port_part.size() > 5 ||
      !std::all_of(port_part.begin(), port_part.end(), is_digit)) {
    return Status::invalid_argument("'" + std::string(text) + "': the port must be 0..65535");
  }
  std::uint32_t value = 0;
  for (char c : port_part) {
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (value > 65535) {
    return Status::invalid_argument("'" + std::string(text) + "': the port must be 0..65535");
  }
  *host = host_part.empty() ? std::string("0.0.0.0") : std::string(host_part);
  *port = static_cast<std::uint16_t>(value);
  return Status();
}

Status parse_byte_size(std::string_view text, std::uint64_t* bytes) {
  static constexpr std::pair<std::string_view, std::uint64_t> kUnits[] = {
      {"", 1},
      {"B", 1},
      {"KiB", 1ull << 10},
      {"MiB", 1ull << 20},
      {"GiB", 1ull << 30},
      {"TiB", 1ull << 40},
      {"KB", 1'000},
      {"MB", 1'000'000},
      {"GB", 1'000'000'000},
      {"TB", 1'000'000'000'000},
  };
  auto invalid = [&] {
    return Status::invalid_argument("'" + std::string(text) +
                                    "' is not a size; use bytes or a whole number with a unit: "
                                    "B, KiB, MiB, GiB, TiB, KB, MB, GB, TB (e.g. \"64MiB\")");
  };
  std::string_view rest = trim(text);
  std::uint64_t number = 0;
  if (!take_number(&rest, &number)) {
    return invalid();
  }
  rest = trim(rest);
  for (const auto& [unit, scale] : kUnits) {
    if (equals_ignore_case(rest, unit)) {
      if (number > std::numeric_limits<std::uint64_t>::max() / scale) {
        return Status::invalid_argument("'" + std::string(text) + "' is too large");
      }
      *bytes = number * scale;
      return Status();
    }
  }
  return invalid();
}

Status parse_duration_seconds(std::string_view text, std::int64_t* seconds) {
  auto invalid = [&] {
    return Status::invalid_argument("'" + std::string(text) +
                                    "' is not a duration; use seconds or whole numbers with "
                                    "units s, m, h, d, w (e.g. \"30d\", \"12h\", \"1h30m\")");
  };
  std::string_view rest = trim(text);
  if (rest.empty()) {
    return invalid();
  }
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (std::all_of(rest.begin(), rest.end(), is_digit)) {
    std::uint64_t number = 0;
    if (!take_number(&rest, &number) || number > kMax) {
      return Status::invalid_argument("'" + std::string(text) + "' is too large");
    }
    *seconds = static_cast<std::int64_t>(number);
    return Status();
  }
  std::uint64_t total = 0;
  while (!rest.empty()) {
    std::uint64_t number = 0;
    if (!take_number(&rest, &number) || rest.empty()) {
      return invalid();
    }
    std::uint64_t scale = 0;
    switch (rest.front()) {
      case 's':
        scale = 1;
        break;
      case 'm':
        scale = 60;
        break;
      case 'h':
        scale = 3'600;
        break;
      case 'd':
        scale = 86'400;
        break;
      case 'w':
        scale = 7 * 86'400;
        break;
      default:
        return invalid();
    }
    rest.remove_prefix(1);
    if (number > kMax / scale || total > kMax - number * scale) {
      return Status::invalid_argument("'" + std::string(text) + "' is too large");
    }
    total += number * scale;
  }
  *seconds = static_cast<std::int64_t>(total);
  return Status();
}

std::vector<OptionInfo> config_options() {
  std::vector<OptionInfo> out;
  append_options<ServerConfig>(kServerSection, kServerOptions, &out);
  append_options<StorageConfig>(kStorageSection, kStorageOptions, &out);
  append_options<core::MeterSpec>(kMetersSection, kMeterOptions, &out);
  append_options<EnforcementConfig>(kEnforcementSection, kEnforcementOptions, &out);
  append_options<core::Plan>(kPlansSection, kPlanOptions, &out);
  append_options<RouteRule>(kRoutesSection, kRouteOptions, &out);
  append_options<CreditsConfig>(kCreditsSection, kCreditsOptions, &out);
  append_options<PriceConfig>(kPricesSection, kPriceOptions, &out);
  append_options<AlertsConfig>(kAlertsSection, kAlertsOptions, &out);
  append_options<WebhookConfig>(kWebhooksSection, kWebhookOptions, &out);
  append_options<NotificationConfig>(kNotificationsSection, kNotificationOptions, &out);
  append_options<RetentionConfig>(kRetentionSection, kRetentionOptions, &out);
  append_options<CustomerSeed>(kCustomersSection, kCustomerOptions, &out);
  return out;
}

std::string config_reference_markdown() {
  static constexpr const SectionDoc* kSections[] = {
      &kServerSection, &kStorageSection, &kMetersSection,   &kEnforcementSection,
      &kPlansSection,  &kRoutesSection,  &kCreditsSection,     &kPricesSection,
      &kAlertsSection, &kWebhooksSection, &kNotificationsSection, &kRetentionSection,
      &kCustomersSection};
  const std::vector<OptionInfo> options = config_options();
  std::string out;
  for (const SectionDoc* section : kSections) {
    const std::string name(section->name);
    out += section->is_array ? "### [[" + name + "]]\n\n" : "### [" + name + "]\n\n";
    out += std::string(section->doc) + "\n\n";
    out += "| key | type | default | meaning |\n";
    out += "|---|---|---|---|\n";
    for (const OptionInfo& o : options) {
      if (o.section != name) {
        continue;
      }
      std::string default_text = o.required               ? "required"
                                 : o.default_toml.empty() ? "none"
                                                          : "`" + o.default_toml + "`";
      out += "| `" + o.key + "` | " + cell(o.type) + " | " + cell(default_text) + " | " +
             cell(o.doc) + " |\n";
    }
    out += "\n";
  }
  out.pop_back();  // one trailing newline, not a blank line
  return out;
}

Result<core::LimitRule> make_limit(std::string meter, std::string_view period,
                                   std::int64_t days, std::string_view amount, bool hard) {
  core::LimitRule rule;
  rule.meter = std::move(meter);
  Result<core::PeriodKind> p = core::parse_period(period);
  if (!p) {
    return p.error();
  }
  rule.period = *p;
  if (rule.period == core::PeriodKind::kTrial) {
    if (days <= 0) {
      return Status::invalid_argument("a trial limit needs 'days' (the trial's length)");
    }
    rule.days = days;
  } else if (days != 0) {
    return Status::invalid_argument("'days' applies only to period \"trial\"");
  }
  if (amount == "unlimited" || amount == "-1") {
    rule.unlimited = true;
  } else {
    Result<core::Decimal> d = core::parse_decimal(amount);
    if (!d || d->units < 0) {
      return Status::invalid_argument("amount '" + std::string(amount) +
                                      "' is not a number >= 0, -1 or \"unlimited\"");
    }
    rule.amount = *d;
  }
  rule.hard = hard;
  return rule;
}

bool route_matches(const RouteRule& rule, std::string_view method, std::string_view path) {
  if (!rule.method.empty() && !equals_ignore_case(rule.method, method)) {
    return false;
  }
  const std::string_view pattern = rule.path;
  if (pattern.find('*') == std::string_view::npos) {
    if (path.substr(0, pattern.size()) != pattern) {
      return false;
    }
    return path.size() == pattern.size() || pattern.back() == '/' || path[pattern.size()] == '/' ||
           path[pattern.size()] == '?';
  }
  // Glob: '*' matches any run of characters (iterative with backtracking to the last star).
  std::size_t p = 0, s = 0, star = std::string_view::npos, mark = 0;
  const std::string_view subject = path.substr(0, path.find('?'));
  while (s < subject.size()) {
    if (p < pattern.size() && pattern[p] == '*') {
      star = p++;
      mark = s;
    } else if (p < pattern.size() && pattern[p] == subject[s]) {
      ++p;
      ++s;
    } else if (star != std::string_view::npos) {
      p = star + 1;
      s = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') {
    ++p;
  }
  return p == pattern.size();
}

const core::Plan* Config::find_plan(std::string_view key) const {
  for (const auto& p : plans) {
    if (p.key == key) {
      return &p;
    }
  }
  return nullptr;
}

const core::MeterSpec* Config::find_meter(std::string_view key) const {
  for (const auto& m : meters) {
    if (m.key == key) {
      return &m;
    }
  }
  return nullptr;
}

}  // namespace tally::config
