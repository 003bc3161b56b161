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
// - toml++ is used only in loader.cc; its exceptions are caught here and become Status values.
// - An empty file, or no file at all, gives the defaults of `Config{}`.
//
// This file holds the table: one row per option. Most rows name the field they fill
// (`field<&ServerConfig::threads>`); a lambda remains only where an option fills more than one
// field or parses its text further.
#include "config/options.h"

#include <algorithm>
#include <iterator>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "core/ids.h"
#include "core/time.h"

namespace tally::config {

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

bool same_match(std::vector<std::pair<std::string, std::string>> a,
                std::vector<std::pair<std::string, std::string>> b) {
  std::sort(a.begin(), a.end());
  std::sort(b.begin(), b.end());
  return a == b;
}

namespace {

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

// A field set only when `Check` accepts the value (its message becomes the option's error).
template <auto Check, auto M, auto... Rest>
Status checked_field(ClassOf<M>& target, Value&& v) {
  using F = std::remove_reference_t<decltype(member<M, Rest...>(target))>;
  TALLY_TRY(Check(value_for<F>(v)));
  return field<M, Rest...>(target, std::move(v));
}

// A list of a closed set's texts (include/tally/types.h), each read by `parse`; an unknown text
// is refused with "'x' is not <what> (<texts>)".
template <auto Parse, auto M>
Status enum_list_field(ClassOf<M>& target, Value&& v, std::string_view what,
                       std::string_view texts) {
  auto& out = target.*M;
  out.clear();
  for (const auto& text : v.list) {
    const auto e = Parse(text);
    if (!e) {
      out.clear();
      return Status::invalid_argument("'" + text + "' is not " + std::string(what) + " (" +
                                      std::string(texts) + ")");
    }
    out.push_back(*e);
  }
  return Status();
}

template <auto M>
Status alert_levels_field(ClassOf<M>& target, Value&& v) {
  return enum_list_field<parse_alert_level, M>(target, std::move(v), "an alert level",
                                               "info, warning, critical, exceeded");
}

template <auto M>
Status alert_kinds_field(ClassOf<M>& target, Value&& v) {
  return enum_list_field<parse_alert_kind, M>(target, std::move(v), "an alert kind",
                                              "limit, low_balance");
}

// A non-negative decimal amount, given as text.
template <auto M, auto... Rest>
Status decimal_field(ClassOf<M>& target, Value&& v) {
  return decimal_value(v.text, false, &member<M, Rest...>(target));
}

// ---------------------------------------------------------------------------------------------
// The option table.

constexpr Option<ServerConfig> kServerTable[] = {
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
    {"threads", Kind::kInteger, 0, 256, false, "0",
     "HTTP I/O threads; 0 = one per CPU core, or eight per core on a node of the cluster mode, "
     "whose requests wait on PostgreSQL and Redis.",
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

constexpr Option<StorageConfig> kStorageTable[] = {
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
    {"checkpoint_interval_seconds", Kind::kInteger, 0, kSecondsPerDay, false, "60",
     "How often, in seconds, the running server writes its in-memory aggregates to "
     "`aggregates.checkpoint` in the data directory (only when events were committed since the "
     "last one, and not while the disk reserve refuses writes). A restart, also after a crash, "
     "reads that file and only the customers with events committed after it from the store, "
     "instead of every stored aggregate. 0 = only at a clean stop. See docs/operations.md, "
     "\"Restart after a crash\".",
     field<&StorageConfig::checkpoint_interval_seconds>},
    {"memory_minutes_hours", Kind::kInteger, 0, 24 * 366, false, "48",
     "How many hours of minute aggregates, before now, the server keeps in memory. Older "
     "minutes are dropped from memory at open and each hour while it runs (on the checkpoint "
     "tick); their hours and UTC days stay, and a read that needs one of them (a window edge "
     "inside an old hour, a minute window, a late event) reads the store's records. 0 = keep "
     "every minute. See docs/storage.md, \"Memory\".",
     field<&StorageConfig::memory_minutes_hours>},
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

Status check_event_type(const std::string& text) {
  return core::check_name("event_type", text);
}

Status check_customer_id(const std::string& text) {
  return core::check_name("id", text);
}

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

constexpr Option<core::MeterSpec> kMeterTable[] = {
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

constexpr Option<CustomerSeed> kCustomerTable[] = {
    {"plan", Kind::kString, 0, kMeterKeyBytesMax, false, "",
     "The customer's plan (a `[[plans]]` key); empty = `enforcement.default_plan`.",
     field<&CustomerSeed::plan>},
    {"id", Kind::kString, 1, 128, true, "",
     "The customer id that events and API keys refer to: 1 to 128 bytes of UTF-8 without control "
     "characters, `/`, `?` or `#` (the rule every customer id follows), unique.",
     checked_field<check_customer_id, &CustomerSeed::id>},
    {"name", Kind::kString, 0, 256, false, "", "Display name.", field<&CustomerSeed::name>},
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

constexpr Option<core::Plan> kPlanTable[] = {
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
     "`billing_period`, `trial` (with `days = N`, 1 to 3,650) or `lifetime` (calendar windows "
     "in the customer's time zone). `amount` is a number, a decimal string, or `-1` / "
     "`\"unlimited\"`. "
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
     alert_levels_field<&core::Plan::alert_levels>},
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

constexpr Option<AlertsConfig> kAlertsTable[] = {
    {"thresholds", Kind::kIntList, 1, 1000, false, "[]",
     "Percentages of each limit at which alerts fire, for plans without `alert_thresholds` "
     "(`[75, 90, 100]`). Each fires once per customer, limit and period.",
     field<&AlertsConfig::thresholds>},
    {"levels", Kind::kStringList, 0, 1000, false, "",
     "Names of `thresholds`, as the plans' `alert_levels`.",
     alert_levels_field<&AlertsConfig::levels>},
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

constexpr Option<WebhookConfig> kWebhookTable[] = {
    {"url", Kind::kString, 8, 2048, true, "",
     "Where deliveries are POSTed: `http://host[:port]/path`.",
     [](WebhookConfig& w, Value&& v) {
       if (v.text.rfind("https://", 0) == 0) {
         return Status::invalid_argument(
             "'" + v.text +
             "': https is not supported yet; deliver to an http:// endpoint, "
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
         const bool known =
             e == "*" || std::find(std::begin(kWebhookEvents), std::end(kWebhookEvents), e) !=
                             std::end(kWebhookEvents);
         if (!known) {
           return Status::invalid_argument("'" + e + "' is not an event type (alert.triggered, *)");
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
     "The longest wait between two attempts.", field<&WebhookConfig::retry_backoff_max_seconds>},
};

// The alert kinds a notification may subscribe to.

Status check_addresses(const std::vector<std::string>& list) {
  for (const auto& a : list) {
    if (!core::valid_email_address(a)) {
      return Status::invalid_argument("'" + a + "' is not an email address");
    }
  }
  return Status();
}

constexpr Option<NotificationConfig> kNotificationTable[] = {
    {"host", Kind::kString, 1, 253, true, "",
     "The SMTP server's host name or IP address (with STARTTLS, the name its certificate "
     "carries).",
     field<&NotificationConfig::host>},
    {"port", Kind::kInteger, 1, 65535, false, "587",
     "The SMTP server's port: 587 (submission) or 25 usually.", field<&NotificationConfig::port>},
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
       const bool ok = !v.text.empty() && std::all_of(v.text.begin(), v.text.end(), [](char c) {
         return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                c == '_';
       }) && !(v.text[0] >= '0' && v.text[0] <= '9');
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
     "The display name of `From:`; \"\" for none.", field<&NotificationConfig::from_name>},
    {"subject_prefix", Kind::kString, 0, 64, false, R"("[Tally]")", "Put before every subject.",
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
           return Status::invalid_argument("'" + e + "' is not an event type (alert.triggered, *)");
         }
       }
       n.events = std::move(v.list);
       return Status();
     }},
    {"levels", Kind::kStringList, 0, 4, false, "[]",
     "The alert levels sent (`info`, `warning`, `critical`, `exceeded`); [] = all.",
     alert_levels_field<&NotificationConfig::levels>},
    {"kinds", Kind::kStringList, 0, 2, false, "[]",
     "The alert kinds sent (`limit`, `low_balance`); [] = all.",
     alert_kinds_field<&NotificationConfig::kinds>},
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

constexpr Option<CreditsConfig> kCreditsTable[] = {
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

constexpr Option<RetentionConfig> kRetentionTable[] = {
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

constexpr Option<PriceConfig> kPriceTable[] = {
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
       const std::optional<PriceModel> m = parse_price_model(v.text);
       if (!m) {
         return Status::invalid_argument("'" + v.text +
                                         "' is not per_unit, graduated, volume, package or flat");
       }
       p.spec.model = *m;
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

constexpr Option<RouteRule> kRouteTable[] = {
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

constexpr Option<EnforcementConfig> kEnforcementTable[] = {
    {"check_durability", Kind::kString, 1, 16, false, R"("async")",
     "`\"async\"`: a consuming check is answered at once and its usage event joins the next "
     "group commit, so a crash loses the consumptions not yet committed: those of the commit in "
     "flight and the queue behind it, at most 500,000 checks (under load one commit has taken "
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

// A PostgreSQL shard: a libpq URI or a "key=value" connection string. Only the form is checked
// here (the config layer does not link libpq); `tally migrate` reports what libpq makes of it.
bool looks_like_conninfo(std::string_view text) {
  return text.rfind("postgresql://", 0) == 0 || text.rfind("postgres://", 0) == 0 ||
         text.find('=') != std::string_view::npos;
}

constexpr std::int64_t kShardsMax = 64;
constexpr std::int64_t kRedisSeedsMax = 64;

constexpr Option<ClusterConfig> kClusterTable[] = {
    {"postgres", Kind::kStringOrList, 1, kShardsMax, true, "",
     "PostgreSQL, the durable truth: a libpq connection string (`\"postgresql://tally@db:5432/"
     "tally\"` or `\"host=db dbname=tally user=tally\"`), or an array of them, one per shard; "
     "customers are spread over the shards by a stable hash of the customer id. `tally migrate` "
     "creates the schema on each. Keep passwords out of the file: libpq reads `PGPASSWORD` or "
     "`~/.pgpass`.",
     [](ClusterConfig& c, Value&& v) {
       for (std::size_t i = 0; i < v.list.size(); ++i) {
         if (!looks_like_conninfo(v.list[i])) {
           return Status::invalid_argument(
               "shard " + std::to_string(i + 1) + " of " + std::to_string(v.list.size()) +
               " is not a libpq connection string (a \"postgresql://...\" URI or "
               "\"key=value ...\" pairs)");
         }
       }
       c.postgres = std::move(v.list);
       return Status();
     }},
    {"redis", Kind::kStringList, 1, kRedisSeedsMax, true, "",
     "Seed nodes of the Redis Cluster that holds the live limit counters, as `\"host:port\"` "
     "(`[\"10.0.0.5:7000\", \"10.0.0.6:7000\"]`); the other nodes are discovered. A single "
     "non-cluster Redis is accepted too.",
     [](ClusterConfig& c, Value&& v) {
       if (v.list.empty()) {
         return Status::invalid_argument("must name at least one \"host:port\" seed");
       }
       for (const std::string& seed : v.list) {
         std::string host;
         std::uint16_t port = 0;
         Status s = parse_listen(seed, &host, &port);
         if (!s.ok()) {
           return Status::invalid_argument("'" + seed + "': " + s.message());
         }
         if (seed.front() == ':' || port == 0) {
           return Status::invalid_argument("'" + seed +
                                           "' must name a host and a port other than 0");
         }
       }
       c.redis = std::move(v.list);
       return Status();
     }},
    {"postgres_pool", Kind::kInteger, 1, 1024, false, "8",
     "PostgreSQL connections each node keeps open per shard.",
     field<&ClusterConfig::postgres_pool>},
    {"redis_pool", Kind::kInteger, 1, 1024, false, "8",
     "Redis connections each node keeps open per Redis node.", field<&ClusterConfig::redis_pool>},
    {"connect_timeout", Kind::kDuration, 1, 300, false, R"("5s")",
     "How long opening a connection to PostgreSQL or Redis may take: `\"1s\"` to `\"5m\"`.",
     field<&ClusterConfig::connect_timeout_seconds>},
    {"command_timeout", Kind::kDuration, 1, 3600, false, R"("10s")",
     "How long one statement or command may run (PostgreSQL's `statement_timeout`; for "
     "`tally migrate`, each migration and the wait for another node's lock): `\"1s\"` to "
     "`\"1h\"`.",
     field<&ClusterConfig::command_timeout_seconds>},
    {"check_lease", Kind::kAmount, 0, 0, false, "0",
     "Leased checks (docs/cluster.md, \"Leased checks\"): how much of each limit a node takes "
     "from Redis at once for a customer and meter, to answer that many units of consuming "
     "checks locally, without a Redis round trip. Nodes together still never admit more than a "
     "limit; they may deny up to this much per other node early. `0` (the default): every check "
     "asks Redis.",
     [](ClusterConfig& c, Value&& v) {
       TALLY_TRY(decimal_value(v.text, false, &c.check_lease));
       // As every amount counted in Redis: millionths, at most 1e9 (cluster/redis_limits.h).
       constexpr __int128 kMillionth = core::Decimal::kScale / 1'000'000;
       if (c.check_lease.units % kMillionth != 0 ||
           c.check_lease > core::Decimal::from_int(1'000'000'000)) {
         return Status::invalid_argument("must be a multiple of 0.000001 from 0 to 1000000000");
       }
       return Status();
     }},
    {"check_lease_ms", Kind::kInteger, 10, 60'000, false, "1000",
     "How long a node keeps a lease (milliseconds); then what it has not used goes back to "
     "Redis for every node.",
     field<&ClusterConfig::check_lease_ms>},
};

}  // namespace

constexpr std::span<const Option<ServerConfig>> kServerOptions{kServerTable};
constexpr std::span<const Option<StorageConfig>> kStorageOptions{kStorageTable};
constexpr std::span<const Option<core::MeterSpec>> kMeterOptions{kMeterTable};
constexpr std::span<const Option<CustomerSeed>> kCustomerOptions{kCustomerTable};
constexpr std::span<const Option<core::Plan>> kPlanOptions{kPlanTable};
constexpr std::span<const Option<AlertsConfig>> kAlertsOptions{kAlertsTable};
constexpr std::span<const Option<WebhookConfig>> kWebhookOptions{kWebhookTable};
constexpr std::span<const Option<NotificationConfig>> kNotificationOptions{kNotificationTable};
constexpr std::span<const Option<CreditsConfig>> kCreditsOptions{kCreditsTable};
constexpr std::span<const Option<RetentionConfig>> kRetentionOptions{kRetentionTable};
constexpr std::span<const Option<PriceConfig>> kPriceOptions{kPriceTable};
constexpr std::span<const Option<RouteRule>> kRouteOptions{kRouteTable};
constexpr std::span<const Option<EnforcementConfig>> kEnforcementOptions{kEnforcementTable};
constexpr std::span<const Option<ClusterConfig>> kClusterOptions{kClusterTable};

constexpr SectionDoc kServerSection{
    "server", false, "The HTTP server and the limits on what one request may carry."};
constexpr SectionDoc kStorageSection{
    "storage", false, "The embedded store: durability, group commit and deduplication."};
constexpr SectionDoc kMetersSection{
    "meters", true,
    "One `[[meters]]` entry per meter: which events it takes, which property it aggregates, "
    "how, and by which properties it groups."};
constexpr SectionDoc kEnforcementSection{"enforcement", false,
                                         "Checks, reservations and Tally's own API rate limit."};
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

constexpr SectionDoc kClusterSection{
    "cluster", false,
    "The scale-out mode (docs/cluster.md): PostgreSQL shards and a Redis Cluster shared by many "
    "nodes: `tally migrate` creates or upgrades the PostgreSQL schema from this section, and "
    "`tally serve` runs as one of the nodes. Without it, Tally runs on its embedded store."};

}  // namespace tally::config
