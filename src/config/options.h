// The option table's shape, shared by the files of the config layer (not by other layers):
// how a TOML value is read (Kind, Value), one option (Option), the tables of every section and
// their reference text. options.cc holds the tables, loader.cc walks a TOML document against
// them, reference.cc turns them into docs/configuration.md, units.cc parses sizes, durations
// and addresses.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.h"
#include "core/decimal.h"
#include "core/limits.h"
#include "core/meter.h"
#include "core/pricing.h"

namespace tally::config {

// Bounds on what the file may hold, so a config cannot make start-up unbounded.
inline constexpr std::size_t kMetersMax = 1024;
inline constexpr std::int64_t kReplacedPlansMax = 256;
inline constexpr std::size_t kCustomersMax = 10'000;
inline constexpr std::size_t kMeterKeyBytesMax = 64;
inline constexpr std::int64_t kGroupByMax = 8;
inline constexpr std::int64_t kFilterEntriesMax = 16;
inline constexpr std::size_t kNameBytesMax = 128;  // group_by entries and filter keys
inline constexpr std::size_t kFilterTextBytesMax = 1024;
inline constexpr std::size_t kConnStringBytesMax = 4096;  // a libpq connection string
// The longest trial a limit may name, in days (the file's and an override's): its end, the start
// plus days * a day, stays far inside the microsecond range.
inline constexpr std::int64_t kTrialDaysMax = 3'650;

inline constexpr std::int64_t kKiB = 1024;
inline constexpr std::int64_t kMiB = 1024 * kKiB;
inline constexpr std::int64_t kGiB = 1024 * kMiB;
inline constexpr std::int64_t kTiB = 1024 * kGiB;
inline constexpr std::int64_t kSecondsPerDay = 86'400;

// How a TOML value is read before its setter sees it.
enum class Kind {
  kString,        // bounds: length in bytes
  kStringOrBool,  // a string (bounds: length) or true/false, read as the text "true"/"false"
  kInteger,       // bounds: value
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
  // A string, or an array of strings, each 1..kConnStringBytesMax bytes, without duplicates;
  // read into Value::list. bounds: entries
  kStringOrList,
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

// The sections, in the order of the reference.
struct SectionDoc {
  std::string_view name;
  bool is_array;
  std::string_view doc;
};

// The tables, one per section (options.cc).
extern const std::span<const Option<ServerConfig>> kServerOptions;
extern const std::span<const Option<StorageConfig>> kStorageOptions;
extern const std::span<const Option<core::MeterSpec>> kMeterOptions;
extern const std::span<const Option<CustomerSeed>> kCustomerOptions;
extern const std::span<const Option<core::Plan>> kPlanOptions;
extern const std::span<const Option<AlertsConfig>> kAlertsOptions;
extern const std::span<const Option<WebhookConfig>> kWebhookOptions;
extern const std::span<const Option<NotificationConfig>> kNotificationOptions;
extern const std::span<const Option<CreditsConfig>> kCreditsOptions;
extern const std::span<const Option<RetentionConfig>> kRetentionOptions;
extern const std::span<const Option<PriceConfig>> kPriceOptions;
extern const std::span<const Option<RouteRule>> kRouteOptions;
extern const std::span<const Option<EnforcementConfig>> kEnforcementOptions;
extern const std::span<const Option<ClusterConfig>> kClusterOptions;

// The sections' reference text, in the order of the reference (options.cc).
extern const SectionDoc kServerSection;
extern const SectionDoc kStorageSection;
extern const SectionDoc kMetersSection;
extern const SectionDoc kEnforcementSection;
extern const SectionDoc kPlansSection;
extern const SectionDoc kRoutesSection;
extern const SectionDoc kCreditsSection;
extern const SectionDoc kRetentionSection;
extern const SectionDoc kPricesSection;
extern const SectionDoc kAlertsSection;
extern const SectionDoc kWebhooksSection;
extern const SectionDoc kNotificationsSection;
extern const SectionDoc kCustomersSection;
extern const SectionDoc kClusterSection;

// A decimal option's text as a Decimal, refusing negatives unless allowed.
Status decimal_value(const std::string& text, bool allow_negative, core::Decimal* out);

// Whether two price matches name the same properties and values, in any order.
bool same_match(std::vector<std::pair<std::string, std::string>> a,
                std::vector<std::pair<std::string, std::string>> b);

// "64MiB" for a whole number of KiB, MiB, GiB or TiB, else "1000B" (reference.cc).
std::string format_bytes(std::int64_t bytes);
// "30d" for whole days, else "90s" (reference.cc).
std::string format_seconds(std::int64_t seconds);

// ASCII case-insensitive equality (units.cc).
bool equals_ignore_case(std::string_view a, std::string_view b);

}  // namespace tally::config
