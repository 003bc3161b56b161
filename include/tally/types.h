// Plain value types of Tally's public API. Times are microseconds since the Unix epoch (UTC);
// meter values and other exact numbers travel as decimal text ("1500", "0.015") or as Decimal
// (include/tally/decimal.h), so no binary floating point ever touches them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tally/decimal.h>

namespace tally {

using TimeUs = std::int64_t;

// ---- closed sets ------------------------------------------------------------------------------
// Each value of these sets has one text, the same in the JSON API, the configuration, the CLI,
// the webhook and email bodies and the storage format. to_string() gives it; parse_*() reads it
// back and refuses any other text (std::nullopt, also for other letter cases). Both are in
// src/core/names.cc. Only the texts are stored; the numbers live in memory only.

// A customer's standing: "active", or "suspended" (its checks are denied, its events flagged).
enum class CustomerStatus : std::uint8_t { kActive, kSuspended };
std::string_view to_string(CustomerStatus v);
std::optional<CustomerStatus> parse_customer_status(std::string_view text);

// A calendar window in a time zone: "minute", "hour", "day", "week", "month" (core::Window, the
// calendar arithmetic of src/core/time.h, is this type).
enum class Window : std::uint8_t { kMinute = 0, kHour = 1, kDay = 2, kWeek = 3, kMonth = 4 };
std::string_view to_string(Window v);
std::optional<Window> parse_window_name(std::string_view text);

// A ledger transaction's type: "grant", "top_up", "burn", "refund", "adjustment", "expiry",
// "hold", "release".
enum class LedgerType : std::uint8_t {
  kGrant,
  kTopUp,
  kBurn,
  kRefund,
  kAdjustment,
  kExpiry,
  kHold,
  kRelease,
};
std::string_view to_string(LedgerType v);
std::optional<LedgerType> parse_ledger_type(std::string_view text);

// What an alert is about: a limit's usage ("limit") or a wallet's balance ("low_balance").
enum class AlertKind : std::uint8_t { kLimit, kLowBalance };
std::string_view to_string(AlertKind v);
std::optional<AlertKind> parse_alert_kind(std::string_view text);

// An alert's level, from the least to the most urgent: "info", "warning", "critical",
// "exceeded".
enum class AlertLevel : std::uint8_t { kInfo, kWarning, kCritical, kExceeded };
std::string_view to_string(AlertLevel v);
std::optional<AlertLevel> parse_alert_level(std::string_view text);

// One delivery of an alert: "pending" (to be tried or retried), "delivered", "failed" (gave up).
enum class DeliveryStatus : std::uint8_t { kPending, kDelivered, kFailed };
std::string_view to_string(DeliveryStatus v);
std::optional<DeliveryStatus> parse_delivery_status(std::string_view text);

// An alert's deliveries together: "none" (no webhook takes it), "pending" (some not finished),
// "sent" (every one delivered), "failed" (some gave up).
enum class AlertStatus : std::uint8_t { kNone, kPending, kSent, kFailed };
std::string_view to_string(AlertStatus v);
std::optional<AlertStatus> parse_alert_status(std::string_view text);

// How a meter combines the values of its events: "count", "sum", "min", "max", "avg",
// "latest", "unique_count" (core::Aggregation, of src/core/meter.h, is this type).
enum class Aggregation : std::uint8_t {
  kCount = 0,
  kSum = 1,
  kMin = 2,
  kMax = 3,
  kAvg = 4,
  kLatest = 5,
  kUniqueCount = 6,
};
std::string_view to_string(Aggregation v);
std::optional<Aggregation> parse_aggregation_name(std::string_view text);

// The period of a limit: the rates "second", "minute", "hour", and the calendar windows "day",
// "week", "month", "billing_period", "trial", "lifetime" (core::PeriodKind, of
// src/core/limits.h, is this type). Named so beside Period, a span of time.
enum class LimitPeriod : std::uint8_t {
  kSecond,
  kMinute,
  kHour,
  kDay,
  kWeek,
  kMonth,
  kBillingPeriod,
  kTrial,
  kLifetime,
};
std::string_view to_string(LimitPeriod v);
std::optional<LimitPeriod> parse_limit_period(std::string_view text);

// What a meter query adds up: "units" (the meter's own values), or for a priced meter "cost"
// (in the prices' currency) or "credits".
enum class Measure : std::uint8_t { kUnits, kCost, kCredits };
std::string_view to_string(Measure v);
std::optional<Measure> parse_measure(std::string_view text);

// The order of an operator's customer list: by "id", "name", "plan", "status" or "usage" (the
// highest limit percent now).
enum class CustomerSort : std::uint8_t { kId, kName, kPlan, kStatus, kUsage };
std::string_view to_string(CustomerSort v);
std::optional<CustomerSort> parse_customer_sort(std::string_view text);

// How a price charges: "per_unit", "graduated", "volume", "package", "flat" (core::PriceModel,
// of src/core/pricing.h, is this type). These numbers are stored with each price version, so
// they never change.
enum class PriceModel : std::uint8_t {
  kPerUnit = 0,
  kGraduated = 1,
  kVolume = 2,
  kPackage = 3,
  kFlat = 4,
};
std::string_view to_string(PriceModel v);
std::optional<PriceModel> parse_price_model(std::string_view text);

// ---- ingest ---------------------------------------------------------------------------------

struct EventError {
  std::uint32_t index = 0;  // position of the event in the request
  std::string id;
  std::string code;  // MISSING_FIELD, INVALID_TYPE, INVALID_VALUE, INVALID_TIME, TIME_IN_FUTURE,
                     // UNKNOWN_CUSTOMER, and DUPLICATE (IngestOptions::all_or_nothing)
  std::string message;
};

struct IngestOptions {
  // For a customer key: every event must name this customer (or none, and get it); otherwise
  // the whole request is refused with kPermissionDenied and nothing is written.
  std::string restrict_customer;
  // For an admin caller: events may carry values below zero for meters configured with
  // `allow_negative = true` (corrections). Otherwise, and always for other meters, an event
  // that feeds a meter a negative value is refused with NEGATIVE_VALUE.
  bool negative_corrections = false;
  // CloudEvents as OpenMeter takes them: an event's `source` scopes its `id`, so the stored id
  // (and the deduplication key) is "<source>/<id>"; without a source, the id alone.
  bool source_scopes_id = false;
  // All or nothing (as Lago's batches are): when any event of the request is invalid, names an
  // unknown customer, or is a duplicate (of a stored event or of an earlier one in the
  // request), nothing of the request is stored, and the summary lists every such event
  // (duplicates with code DUPLICATE) with accepted = 0 and rejected = the request's events.
  bool all_or_nothing = false;
};

struct IngestSummary {
  std::uint32_t accepted = 0;
  std::uint32_t rejected = 0;
  std::uint32_t duplicates = 0;
  std::string batch_id;  // empty when nothing was written
  std::vector<EventError> errors;
  std::int64_t processing_time_us = 0;

  // "accepted" | "partial" | "all_duplicates" | "rejected".
  const char* status() const {
    if (accepted == 0 && rejected == 0 && duplicates > 0) {
      return "all_duplicates";
    }
    if (accepted == 0 && duplicates == 0) {
      return "rejected";
    }
    if (rejected > 0 || duplicates > 0) {
      return "partial";
    }
    return "accepted";
  }
};

// ---- customers and keys ---------------------------------------------------------------------

// A per-customer limit that replaces the plan's limit on the same meter and period (or adds
// one). amount: a decimal text, or "unlimited".
struct LimitOverride {
  std::string meter;
  LimitPeriod period = LimitPeriod::kMonth;
  std::int64_t days = 0;  // for period trial
  std::string amount;
  bool hard = true;
};

struct Customer {
  std::string id;
  std::string name;
  std::string email;
  std::string timezone = "UTC";
  CustomerStatus status = CustomerStatus::kActive;
  std::string metadata_json = "{}";  // a JSON object
  TimeUs created_at_us = 0;
  TimeUs updated_at_us = 0;
  std::string plan;                // "" = the configured default plan
  TimeUs trial_started_at_us = 0;  // 0 = created_at
  TimeUs billing_anchor_us = 0;    // 0 = created_at
  std::vector<LimitOverride> overrides;
  // Per meter: limits count usage from this instant on (POST /v1/customers/{id}/reset).
  std::vector<std::pair<std::string, TimeUs>> resets;
  std::string organization;  // the parent organization's id; "" = none
};

struct CustomerPatch {
  std::optional<std::string> name;
  std::optional<std::string> email;
  std::optional<std::string> timezone;
  std::optional<CustomerStatus> status;
  std::optional<std::string> metadata_json;
  std::optional<std::string> plan;
  std::optional<TimeUs> trial_started_at_us;
  std::optional<TimeUs> billing_anchor_us;
  std::optional<std::string> organization;  // "" removes it
};

// What a key may do: a set of these bits, combined with | and asked with has(). The numbers
// are stored with each key, so they never change.
enum class Scope : std::uint32_t {
  kNone = 0,
  kIngest = 1u << 0,
  kCheck = 1u << 1,
  kRead = 1u << 2,
  kAdmin = 1u << 31,
};

constexpr Scope operator|(Scope a, Scope b) {
  return static_cast<Scope>(static_cast<std::uint32_t>(a) | static_cast<std::uint32_t>(b));
}

constexpr Scope operator&(Scope a, Scope b) {
  return static_cast<Scope>(static_cast<std::uint32_t>(a) & static_cast<std::uint32_t>(b));
}

constexpr Scope operator~(Scope a) {
  return static_cast<Scope>(~static_cast<std::uint32_t>(a));
}

constexpr Scope& operator|=(Scope& a, Scope b) {
  return a = a | b;
}

// Whether `scopes` holds every bit of `wanted`.
constexpr bool has(Scope scopes, Scope wanted) {
  return (scopes & wanted) == wanted;
}

// The three scopes of customer data.
inline constexpr Scope kDataScopes = Scope::kIngest | Scope::kCheck | Scope::kRead;

struct ApiKeyInfo {
  std::string id;        // "key_..." : names the key in the API; not secret
  std::string prefix;    // the first characters of the secret, to recognise it
  std::string customer;  // empty for an admin key
  std::string name;
  Scope scopes = Scope::kNone;
  TimeUs created_at_us = 0;
  TimeUs revoked_at_us = 0;    // 0 = active
  TimeUs last_used_at_us = 0;  // 0 = never
  std::uint64_t total_requests = 0;
};

struct NewApiKey {
  ApiKeyInfo info;
  std::string secret;  // shown once; only its SHA-256 is stored
};

struct NewApiKeyRequest {
  std::string customer;         // empty = admin key
  Scope scopes = Scope::kNone;  // none = the default (admin, or kDataScopes for a customer)
  std::string name;
};

// Who a presented key is.
struct Identity {
  std::string key_id;
  std::string customer;  // empty for admin
  Scope scopes = Scope::kNone;

  bool admin() const { return has(scopes, Scope::kAdmin); }
};

// ---- meters and queries ---------------------------------------------------------------------

struct MeterInfo {
  std::string key;
  std::string event_type;
  Aggregation aggregation = Aggregation::kCount;
  std::string value_property;
  std::vector<std::string> group_by;
  std::vector<std::pair<std::string, std::string>> filter;
  std::string unit;
  std::string description;
};

struct MeterQuery {
  std::string meter;
  TimeUs from_us = 0;
  TimeUs to_us = 0;
  std::optional<Window> window;  // none: one total row
  std::string timezone;  // IANA; "" = the customer's zone when one customer is asked, else UTC
  std::string customer;  // "" = every customer
  std::vector<std::string> group_by;                        // a subset of the meter's group_by
  std::vector<std::pair<std::string, std::string>> filter;  // group-by property == value
  Measure measure = Measure::kUnits;                        // cost and credits: priced meters only
};

struct QueryRow {
  TimeUs window_start_us = 0;
  TimeUs window_end_us = 0;
  std::string customer;
  std::vector<std::pair<std::string, std::string>> group;
  std::string value;  // decimal text, or empty for "no value" (min of nothing)
};

struct QueryResult {
  std::string meter;
  Measure measure = Measure::kUnits;  // as asked
  TimeUs from_us = 0;
  TimeUs to_us = 0;
  std::optional<Window> window;  // as asked
  std::string timezone;
  std::vector<QueryRow> rows;
};

struct UsageItem {
  std::string meter;
  Aggregation aggregation = Aggregation::kCount;
  std::string unit;
  std::string value;    // decimal text; empty = no value
  std::string cost;     // priced meters: the cost of that usage ("" = not priced)
  std::string credits;  // priced meters: the credits burned for it
};

// A span of time [start, end).
struct Period {
  TimeUs start_us = 0;
  TimeUs end_us = 0;
};

struct CustomerUsage {
  std::string customer;
  TimeUs from_us = 0;
  TimeUs to_us = 0;
  std::string timezone;
  std::vector<UsageItem> meters;
};

// ---- checks -------------------------------------------------------------------------------

enum class Consume : std::uint8_t {
  kNo,       // only ask
  kYes,      // record the amount as usage when allowed
  kReserve,  // hold the amount until commit, release or expiry
};

struct CheckRequest {
  std::string customer;
  std::string meter;
  std::string amount = "1";  // decimal text, > 0
  Consume consume = Consume::kYes;
  std::string feature;                                          // "" = none required
  std::vector<std::pair<std::string, std::string>> properties;  // for the usage event
  std::string event_id;  // idempotency: a retried check with the same id consumes once
  std::int64_t reservation_ttl_seconds = 0;  // 0 = the configured default
};

// Why a check was denied.
enum class Denial : std::uint8_t {
  kNone,
  kLimitExceeded,
  kTrialExpired,
  kFeatureNotEnabled,
  kCustomerSuspended,
  kInsufficientCredits,
  kBatchDenied,  // allowed on its own, not consumed because another check of its batch was denied
};

// The reason's name in the API: "limit_exceeded", ...; "" for kNone. parse_denial reads it back
// (src/core/names.cc).
std::string_view denial_name(Denial d);
std::optional<Denial> parse_denial(std::string_view text);

// One limit as it stands for a customer: numbers, made into text at the edges (rule(),
// percent(), Decimal::text()).
struct LimitState {
  std::string meter;
  LimitPeriod period = LimitPeriod::kMonth;
  std::int64_t days = 0;  // a trial's length in days
  bool per_key = false;   // the API key's own request rate, not a customer's limit
  bool unlimited = false;
  bool hard = true;
  Decimal limit;  // 0 when unlimited
  Decimal used;
  Decimal remaining;  // 0 when unlimited
  TimeUs window_start_us = 0;
  TimeUs reset_us = 0;  // when the window ends or the rate bucket is empty; 0 = never

  // "api_calls per day", "api_calls per trial (14 days)", "api_calls (lifetime)",
  // "api_requests per minute (per key)".
  std::string rule() const;
  // used / limit x 100 with two decimals, half-even ("85.00"); "" when unlimited.
  std::string percent() const;
};

struct CheckResult {
  bool allowed = false;
  Denial reason = Denial::kNone;  // kNone when allowed
  std::string message;            // on denial
  std::string plan;
  std::string meter;
  Decimal amount;
  bool overage = false;            // allowed past a soft limit
  bool replayed = false;           // an event_id already consumed: nothing consumed again
  bool has_rule = false;           // false when no limit applies (unlimited)
  LimitState rule;                 // the most restrictive limit
  std::vector<LimitState> limits;  // every limit on the meter
  TimeUs retry_after_us = 0;       // on denial: when the amount may fit again; 0 = unknown
  std::string reservation_id;
  TimeUs reservation_expires_us = 0;
  // Prepaid plans: the estimated credits of the request and what the wallet had available
  // for it (both 0 when the plan is not prepaid).
  bool prepaid = false;
  Decimal credits_required;
  Decimal credits_available;
};

// A percentage of a calendar limit at which an alert fires, and its level.
struct AlertThreshold {
  std::int64_t percent = 0;
  AlertLevel level = AlertLevel::kWarning;
};

// A page of customers for an operator's list (GET /v1/admin/customers).
struct CustomerSummaryQuery {
  std::string search;  // case-insensitive part of the id or name; "" = every customer
  CustomerSort sort = CustomerSort::kId;
  bool descending = false;
  std::uint32_t offset = 0;
  std::uint32_t limit = 50;  // 1 to 1000
};

struct CustomerSummary {
  std::string id;
  std::string name;
  std::string plan;  // the plan in force (the default plan when none is set); "" = none
  CustomerStatus status = CustomerStatus::kActive;
  std::string organization;
  std::string max_percent;  // the highest percent of a limit now, two decimals; "" = none
  std::string max_rule;     // that limit's rule, "api_calls per day"
};

struct CustomerSummaryPage {
  std::uint64_t total = 0;  // customers matching the search
  std::vector<CustomerSummary> customers;
};

struct LimitsReport {
  std::string customer;
  std::string plan;
  std::vector<std::string> features;
  std::vector<LimitState> limits;
  std::vector<std::string> warnings;  // "api_calls per day at 85.00%"
  // The thresholds at which the customer's calendar limits alert (the plan's, else [alerts]'s),
  // ascending; empty when none alert.
  std::vector<AlertThreshold> alert_thresholds;
};

// ---- reports and statistics (src/engine/reports.cc) ------------------------------------------

// One window of a series: its calendar bounds and the meter's value inside [from, to).
struct WindowValue {
  TimeUs window_start_us = 0;
  TimeUs window_end_us = 0;
  std::string value;  // decimal text; "" = no value (min/max/avg/latest without events)
};

struct HistoryQuery {
  std::string customer;
  std::string meter;
  Window window = Window::kDay;
  TimeUs from_us = 0;  // from = to = 0: the last `windows`, the current one included
  TimeUs to_us = 0;
  std::uint32_t windows = 30;  // 1 to 10,000; used when from = to = 0
  std::string timezone;        // IANA; "" = the customer's zone
  std::string group_by;        // "" or one group-by property of the meter: a series per value too
};

struct HistorySeries {
  std::vector<std::pair<std::string, std::string>> group;  // property -> value
  std::vector<WindowValue> data;                           // every window, zero-filled
};

struct UsageHistory {
  std::string customer;
  std::string meter;
  Aggregation aggregation = Aggregation::kCount;
  std::string unit;
  Window window = Window::kDay;
  std::string timezone;
  TimeUs from_us = 0;
  TimeUs to_us = 0;
  std::vector<WindowValue> data;      // every window of the range, zero-filled
  std::vector<HistorySeries> groups;  // with group_by: one per value seen, ordered by value
};

// One group's share of a meter in the usage report (the "service breakdown").
struct BreakdownItem {
  std::string value;    // the group-by property's value ("" = events without it)
  std::string usage;    // decimal text
  std::string percent;  // of the meter's total, two decimals; "" for non-additive meters
};

struct Breakdown {
  std::string meter;
  std::string property;
  Aggregation aggregation = Aggregation::kCount;
  std::string unit;
  std::vector<BreakdownItem> groups;  // by usage, largest first
};

struct UsageReport {
  Customer customer;
  std::string plan;                // "" = none
  CustomerUsage current_period;    // the calendar month in the customer's zone
  std::vector<LimitState> limits;  // as limits_report gives them
  std::vector<std::string> warnings;
  std::vector<Breakdown> breakdown;
};

// Denied checks of one customer over the last hour, by minute (Engine::denials_last_hour).
struct DenialHistory {
  std::string customer;
  TimeUs from_us = 0;                     // the start of the oldest minute
  TimeUs to_us = 0;                       // the end of the current minute
  std::vector<std::uint64_t> per_minute;  // 60 counts, oldest first
  std::uint64_t total = 0;
};

// One organization of an operator's list (Engine::organization_summaries): its customers
// rolled up.
struct OrganizationSummary {
  std::string organization;
  std::uint64_t customers = 0;
  std::uint64_t suspended = 0;
  std::string max_percent;        // the highest limit percent of any member now; "" = none
  std::string max_customer;       // the member it belongs to
  std::string max_rule;           // and its rule, "api_calls per day"
  std::vector<UsageItem> meters;  // every meter over the members' events this calendar month (UTC)
};

struct OrganizationSummaryPage {
  std::uint64_t total = 0;  // organizations
  std::vector<OrganizationSummary> organizations;
};

struct OrganizationUsage {
  std::string organization;
  TimeUs from_us = 0;
  TimeUs to_us = 0;
  std::string timezone;
  std::vector<std::string> customers;  // members, ordered by id
  std::vector<UsageItem> meters;       // the meter's aggregation over every member's events
  std::vector<CustomerUsage> by_customer;
};

struct TopCustomer {
  std::string customer;
  std::string name;
  std::string value;
};

struct TopUsage {
  std::string meter;
  Aggregation aggregation = Aggregation::kCount;
  std::string unit;
  std::optional<Window> period;  // none when from/to were given
  TimeUs from_us = 0;
  TimeUs to_us = 0;
  std::string timezone;
  std::vector<TopCustomer> customers;  // by value, largest first; ties by id
};

struct StatsQuery {
  std::string meter;
  std::string customer;  // "" = every customer, merged per window
  Window window = Window::kDay;
  TimeUs from_us = 0;  // from = to = 0: the last 30 windows, the current one included
  TimeUs to_us = 0;
  std::string timezone;  // "" = the customer's zone with one customer, else UTC
  std::vector<std::pair<std::string, std::string>> filter;  // group-by property == value
  std::uint32_t peaks_max = 5;
};

// A value against the one before it. change and change_percent are "" when either is missing;
// change_percent is also "" when the previous value is 0.
struct TrendPoint {
  TimeUs window_start_us = 0;
  TimeUs window_end_us = 0;
  std::string value;
  std::string previous;
  std::string change;
  std::string change_percent;  // two decimals, half to even
};

struct MeterStats {
  std::string meter;
  Aggregation aggregation = Aggregation::kCount;
  std::string unit;
  std::string customer;  // "" = every customer
  Window window = Window::kDay;
  std::string timezone;
  TimeUs from_us = 0;
  TimeUs to_us = 0;
  std::uint64_t windows = 0;            // windows in the range
  std::uint64_t windows_with_data = 0;  // windows with at least one event
  std::uint64_t count = 0;              // per-window values the statistics are over
  // Decimal texts; "" when count is 0.
  std::string sum, avg, min, max, median, p95, p99;
  std::vector<TrendPoint> window_over_window;
  std::vector<TrendPoint> day_over_day;
  std::vector<WindowValue> peaks;
};

// ---- stored events --------------------------------------------------------------------------

struct EventProperty {
  std::string key;
  std::string text;
  enum class Kind : std::uint8_t { kString, kNumber, kBool, kNull } kind = Kind::kString;
};

struct StoredEvent {
  std::string id;
  std::string customer;
  std::string type;
  TimeUs time_us = 0;
  TimeUs received_at_us = 0;
  std::uint64_t seq = 0;
  bool flagged = false;  // the customer was suspended when it arrived
  // Occurrences the record stands for on count meters: 1, or N for a consuming check of N.
  std::uint32_t quantity = 1;
  std::vector<EventProperty> properties;
  bool priced = false;  // a price applied: cost and credits below are set
  std::string cost;     // decimal text in the [credits] currency
  std::string credits;  // decimal text
};

struct EventListQuery {
  std::string customer;  // "" = all
  std::string type;      // "" = all
  TimeUs from_us = 0;
  TimeUs to_us = 0;  // 0 = no upper bound
  std::uint32_t limit = 100;
  std::string cursor;  // from a previous page
  // The page stops scanning once this long has passed on the engine's clock (looked at every
  // few hundred events examined, so each page moves on) and returns what it found, maybe
  // nothing, with a next_cursor. 0 = no budget: a page ends only at `limit` or at the end.
  std::uint32_t budget_ms = 0;
};

struct EventPage {
  // At most `limit`; fewer, even none, when the budget ran out (next_cursor is then set).
  std::vector<StoredEvent> events;
  std::string next_cursor;  // empty on the last page
};

// ---- wallets and the ledger ------------------------------------------------------------------

// One immutable ledger entry. Amounts are signed decimal credits: positive adds to the balance.
struct LedgerTransaction {
  std::string id;         // "txn_<n>"
  std::uint64_t seq = 0;  // global order of transactions
  std::string customer;
  LedgerType type = LedgerType::kGrant;
  std::string amount;
  std::string balance_before;
  std::string balance_after;
  std::string event_id;        // burn: the event it pays for
  std::string grant_id;        // grant/top_up/refund/adjustment: this id; expiry: the grant
  std::string reservation_id;  // hold, release, and the burn of a reservation's commit
  std::string held;            // hold: the credits held; release: the credits freed ("" else)
  // A re-rating adjustment (Engine::reprice): the billing period it adjusts; 0 otherwise.
  TimeUs period_start_us = 0;
  TimeUs period_end_us = 0;
  std::string description;
  TimeUs created_at_us = 0;
  TimeUs expires_at_us = 0;   // grants that expire; 0 = never
  std::int64_t priority = 0;  // grants: lower burns first
};

struct WalletGrant {
  std::string id;                        // the id of the transaction that created it
  LedgerType type = LedgerType::kGrant;  // grant, top_up, refund or adjustment
  std::string amount;
  std::string remaining;
  std::int64_t priority = 0;
  TimeUs expires_at_us = 0;
  TimeUs created_at_us = 0;
};

struct Wallet {
  std::string customer;
  std::string currency;  // of the prices; credits per unit below
  std::string credits_per_currency_unit;
  std::string balance;  // sum of every transaction
  // balance minus open holds and usage counted by checks but not yet committed
  std::string available;
  std::string held;                 // by open reservations (hold transactions not yet released)
  bool exhausted = false;           // balance <= 0: prepaid checks deny
  std::vector<WalletGrant> grants;  // with credits left, in burn order
  std::uint64_t transactions = 0;
};

// An admin's change to a wallet: grant (promotional, default priority 0, may expire), top_up
// (paid, default priority 100), refund (credits given back, like a top-up), adjustment (signed).
struct WalletTransactionRequest {
  LedgerType type = LedgerType::kGrant;  // grant, top_up, refund or adjustment
  std::string amount;                    // decimal text; > 0, except adjustments (non-zero, signed)
  std::string description;
  std::int64_t priority = -1;  // -1 = the type's default
  TimeUs expires_at_us = 0;    // grant and top_up only; 0 = never
};

struct LedgerQuery {
  std::string customer;
  std::optional<LedgerType> type;  // none = all
  TimeUs from_us = 0;
  TimeUs to_us = 0;  // 0 = no bound
  std::uint32_t limit = 100;
  std::string cursor;
};

struct LedgerPage {
  std::vector<LedgerTransaction> transactions;  // oldest first
  std::string next_cursor;
};

// ---- alerts and webhooks ----------------------------------------------------------------------

// One attempt, or all of them, to deliver an event to one webhook endpoint or, by email, to the
// recipients of one [[notifications]] entry.
struct WebhookDelivery {
  std::string id;  // unique; sent as the delivery id header, the same on every retry
  std::string alert_id;
  std::string event;          // "alert.triggered"
  std::uint32_t webhook = 0;  // index in [[webhooks]], or in [[notifications]] for email
  // The webhook's URL, or for email "mailto:" and the recipients joined by commas (fixed when
  // the alert fired).
  std::string url;
  DeliveryStatus status = DeliveryStatus::kPending;
  std::uint32_t attempts = 0;
  TimeUs created_at_us = 0;
  TimeUs next_attempt_at_us = 0;  // pending only
  TimeUs last_attempt_at_us = 0;  // 0 = never tried
  TimeUs delivered_at_us = 0;
  int last_status_code = 0;  // the endpoint's last HTTP status or SMTP reply code; 0 = none
  std::string last_error;
};

// A threshold crossed: a limit's usage reached a percentage of it, or a wallet's balance
// dropped below an amount. Fired once per customer, limit, period and threshold.
struct Alert {
  std::string id;
  std::string customer;
  AlertKind kind = AlertKind::kLimit;
  AlertLevel level = AlertLevel::kWarning;
  // kind "limit": the limit, its window and usage when the alert fired.
  std::string meter;
  LimitPeriod period = LimitPeriod::kMonth;
  std::string limit;  // "api_calls per month"
  std::int64_t threshold_percent = 0;
  std::string limit_amount;
  std::string used;
  std::string percent;  // used / limit x 100, two decimals
  TimeUs window_start_us = 0;
  TimeUs window_end_us = 0;  // 0 = no end (lifetime)
  // kind "low_balance": the amount it fell below and the balance.
  std::string threshold_amount;
  std::string balance;
  TimeUs created_at_us = 0;
  // Its deliveries together (AlertStatus): pending, sent, failed or none.
  AlertStatus status = AlertStatus::kNone;
  bool sent = false;
  std::uint32_t delivery_attempts = 0;  // over all its deliveries
  std::vector<WebhookDelivery> deliveries;
};

struct AlertQuery {
  std::string customer;               // "" = all
  std::optional<AlertLevel> level;    // none = all
  std::optional<AlertStatus> status;  // none = all
  TimeUs from_us = 0;                 // created_at >= from
  TimeUs to_us = 0;                   // created_at < to; 0 = no bound
  std::uint32_t limit = 100;
  std::string cursor;
};

struct AlertPage {
  std::vector<Alert> alerts;  // oldest first
  std::string next_cursor;
};

// What one delivery attempt came to, as the webhook sender reports it.
struct DeliveryAttempt {
  std::string delivery_id;
  bool delivered = false;
  int status_code = 0;
  std::string error;
  TimeUs at_us = 0;
  TimeUs next_attempt_at_us = 0;  // when not delivered; 0 = give up (the delivery fails)
};

// ---- ad-hoc limits (Engine::limit_adhoc) ------------------------------------------------------
// A limit the caller gives with the request (as Unkey's and Gubernator's rate limits work): at
// most `limit` per fixed window of `duration_ms`, counted per namespace and identifier. No plan
// and no customer needed.
struct AdHocLimit {
  std::string ns;                // the namespace: 1..255 bytes ("sms.sign_up")
  std::string identifier;        // 1..255 bytes: a user id, an IP address, ...
  std::int64_t limit = 0;        // 0..1e15
  std::int64_t duration_ms = 0;  // 1000 .. 2592000000 (30 days)
  std::int64_t cost = 1;         // 0 (only ask) .. 1e15
};

struct AdHocResult {
  std::string ns;
  std::string identifier;
  bool allowed = false;  // this limit admits its cost (with those before it in the request)
  std::int64_t limit = 0;
  std::int64_t used = 0;       // in the window, after the request
  std::int64_t remaining = 0;  // in the window, after the request
  TimeUs window_start_us = 0;
  TimeUs reset_us = 0;  // when the window ends
};

// ---- prices -------------------------------------------------------------------------------------

struct PriceTierInfo {
  std::string up_to;  // "" = no bound
  std::string unit_price;
  std::string flat_fee;
};

// One version of a price: what it charges from effective_from on.
struct PriceVersionInfo {
  TimeUs effective_from_us = INT64_MIN;  // INT64_MIN: since forever (the first version)
  TimeUs created_at_us = 0;              // when the server first ran with it
  bool ended = false;                    // the price was removed from the configuration
  bool in_effect = false;                // the version that prices an event of now
  PriceModel model = PriceModel::kPerUnit;
  std::string unit_price;
  std::vector<PriceTierInfo> tiers;
  std::string package_size;
  std::string package_price;
  std::string flat_fee;
  std::string currency;
  std::string credits_per_currency_unit;  // markup included
};

// A price (a meter and match) with every version it has had.
struct PriceInfo {
  std::string id;  // "tokens_in#0"
  std::string meter;
  std::vector<std::pair<std::string, std::string>> match;
  bool configured = true;  // false: removed from the configuration; its history is kept
  std::vector<PriceVersionInfo> versions;  // by effective_from, then created_at
};

// Re-rating (Engine::reprice): the current versions applied to already priced events.
struct RepriceRequest {
  std::string customer;
  TimeUs from_us = 0;  // event time, inclusive
  TimeUs to_us = 0;    // event time, exclusive
  bool dry_run = false;
};

// What re-rating changed in one billing period of the customer.
struct RepricePeriod {
  TimeUs start_us = 0;
  TimeUs end_us = 0;
  std::uint64_t events = 0;    // events of the range in it whose credits changed
  std::string charged;         // credits those events were charged (with earlier re-ratings)
  std::string rated;           // credits the current versions give them
  std::string difference;      // rated - charged: the adjustment takes this from the wallet
  std::string transaction_id;  // the adjustment's ("" in a dry run)
};

struct RepriceReport {
  std::string customer;
  bool dry_run = false;
  std::uint64_t events = 0;            // priced events of the range looked at
  std::uint64_t changed = 0;           // of them, those whose credits changed
  std::vector<RepricePeriod> periods;  // with a difference only
};

// ---- operations -----------------------------------------------------------------------------

struct VerifyReport {
  std::uint64_t events = 0;           // in the hot store
  std::uint64_t archived_events = 0;  // archived: checked through what archiving recorded
  std::uint64_t aggregates = 0;
  std::uint64_t transactions = 0;        // ledger transactions checked
  std::vector<std::string> differences;  // empty when everything matches

  bool ok() const { return differences.empty(); }
};

// Archiving raw events (Engine::archive, docs/operations.md "Archiving").
struct ArchiveRequest {
  // Events whose event time is before `before_us` are archived. When 0: before now minus
  // `older_than_seconds`, or, when that is 0 too, now minus [retention] archive_after.
  TimeUs before_us = 0;
  std::int64_t older_than_seconds = 0;
  std::string out_dir;  // "" = [retention] archive_dir, or <data_dir>/archive
};

struct ArchiveResult {
  std::uint64_t archive_id = 0;  // 0 when nothing was archived
  TimeUs cutoff_us = 0;          // the `before` used
  std::uint64_t events = 0;      // 0: nothing older than the cutoff; no file was written
  std::string file;              // the .jsonl.zst file's path
  std::string manifest;          // the manifest's path
  std::uint64_t bytes = 0;       // size of the compressed file
  std::string sha256;            // of the compressed file, lower-case hex
  TimeUs from_us = 0;            // the archived events' earliest and latest event times
  TimeUs to_us = 0;
  std::uint64_t first_seq = 0;  // their lowest and highest sequences
  std::uint64_t last_seq = 0;
  std::uint32_t customers = 0;
  std::uint64_t blocks_deleted = 0;    // event blocks removed whole
  std::uint64_t blocks_rewritten = 0;  // event blocks that kept some events
  bool more = false;  // stopped at the per-run bound: events before the cutoff remain
};

struct RestoreResult {
  std::uint64_t archive_id = 0;
  std::string file;
  std::uint64_t events = 0;           // put back into the hot store
  std::uint64_t already_present = 0;  // in the hot store already (a restore done before)
};

struct EngineStats {
  std::uint64_t events_accepted = 0;
  std::uint64_t events_rejected = 0;
  std::uint64_t events_duplicate = 0;
  std::uint64_t batches = 0;
  std::uint64_t commits = 0;
  std::uint64_t customers = 0;
  std::uint64_t aggregates_live = 0;
  // Whether this open read the aggregates from the checkpoint (else from every stored minute
  // aggregate), and how many customers with events after the checkpoint it read again from the
  // store.
  bool aggregates_from_checkpoint = false;
  std::uint64_t aggregates_customers_reloaded = 0;
  std::uint64_t events_indexed = 0;
  std::uint64_t store_bytes = 0;
  std::uint64_t pending_events = 0;
  // Consumptions of checks already answered (check_durability = "async") whose usage events
  // are not yet durable: what a crash now would lose. Bounded by the queue's 500,000 events.
  std::uint64_t check_events_not_durable = 0;
  // The data directory's filesystem at the last look (about once a second, and before every
  // commit); disk_known is false for an in-memory engine or before the first look.
  bool disk_known = false;
  std::uint64_t disk_free_bytes = 0;
  std::uint64_t disk_total_bytes = 0;
  std::uint64_t disk_reserve_bytes = 0;  // writes are refused while free is below this
  bool writes_refused = false;           // by the disk reserve or a write that found no space
  // The alert outbox: alerts stored, deliveries waiting to be sent or retried (and when the
  // oldest of them was created, 0 = none), deliveries that gave up (all stored), and attempts
  // that failed since the engine opened.
  std::uint64_t alerts = 0;
  std::uint64_t deliveries_pending = 0;
  TimeUs oldest_pending_delivery_at_us = 0;
  std::uint64_t deliveries_failed = 0;
  std::uint64_t delivery_attempts_failed = 0;
  // Latency histograms: bucket upper bounds in microseconds and cumulative counts.
  std::vector<std::uint64_t> latency_bounds_us;
  std::vector<std::uint64_t> commit_latency_counts;  // one per bound, then +Inf
  std::uint64_t commit_latency_sum_us = 0;
  std::vector<std::uint64_t> batch_latency_counts;
  std::uint64_t batch_latency_sum_us = 0;
};

}  // namespace tally
