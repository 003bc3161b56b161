// The texts of the public API's closed sets (include/tally/types.h): one table per enum, read
// both ways, so a value and its text cannot drift apart between the API, the configuration, the
// CLI and the storage format. A text is matched exactly (case included).
#include <array>
#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

#include <tally/types.h>

namespace tally {

namespace {

// text[i] is the text of the enum value i: the enums number their values from 0, in order.
template <typename E, std::size_t N>
struct Names {
  std::array<std::string_view, N> text;
};

template <typename E, std::size_t N>
std::string_view name_of(const Names<E, N>& names, E v) {
  const auto i = static_cast<std::size_t>(v);
  return i < N ? names.text[i] : std::string_view("unknown");
}

template <typename E, std::size_t N>
std::optional<E> value_of(const Names<E, N>& names, std::string_view text) {
  for (std::size_t i = 0; i < N; ++i) {
    if (names.text[i] == text) {
      return static_cast<E>(i);
    }
  }
  return std::nullopt;
}

constexpr Names<CustomerStatus, 2> kCustomerStatuses = {{"active", "suspended"}};
constexpr Names<Window, 5> kWindows = {{"minute", "hour", "day", "week", "month"}};
constexpr Names<LedgerType, 8> kLedgerTypes = {
    {"grant", "top_up", "burn", "refund", "adjustment", "expiry", "hold", "release"}};
constexpr Names<AlertKind, 2> kAlertKinds = {{"limit", "low_balance"}};
constexpr Names<AlertLevel, 4> kAlertLevels = {{"info", "warning", "critical", "exceeded"}};
constexpr Names<DeliveryStatus, 3> kDeliveryStatuses = {{"pending", "delivered", "failed"}};
constexpr Names<AlertStatus, 4> kAlertStatuses = {{"none", "pending", "sent", "failed"}};
constexpr Names<Aggregation, 7> kAggregations = {
    {"count", "sum", "min", "max", "avg", "latest", "unique_count"}};
constexpr Names<LimitPeriod, 9> kLimitPeriods = {
    {"second", "minute", "hour", "day", "week", "month", "billing_period", "trial", "lifetime"}};
constexpr Names<Measure, 3> kMeasures = {{"units", "cost", "credits"}};
constexpr Names<CustomerSort, 5> kCustomerSorts = {{"id", "name", "plan", "status", "usage"}};
constexpr Names<PriceModel, 5> kPriceModels = {
    {"per_unit", "graduated", "volume", "package", "flat"}};
constexpr Names<Denial, 7> kDenials = {{"", "limit_exceeded", "trial_expired",
                                        "feature_not_enabled", "customer_suspended",
                                        "insufficient_credits", "batch_denied"}};

}  // namespace

std::string_view to_string(CustomerStatus v) {
  return name_of(kCustomerStatuses, v);
}

std::optional<CustomerStatus> parse_customer_status(std::string_view text) {
  return value_of(kCustomerStatuses, text);
}

std::string_view to_string(Window v) {
  return name_of(kWindows, v);
}

std::optional<Window> parse_window_name(std::string_view text) {
  return value_of(kWindows, text);
}

std::string_view to_string(LedgerType v) {
  return name_of(kLedgerTypes, v);
}

std::optional<LedgerType> parse_ledger_type(std::string_view text) {
  return value_of(kLedgerTypes, text);
}

std::string_view to_string(AlertKind v) {
  return name_of(kAlertKinds, v);
}

std::optional<AlertKind> parse_alert_kind(std::string_view text) {
  return value_of(kAlertKinds, text);
}

std::string_view to_string(AlertLevel v) {
  return name_of(kAlertLevels, v);
}

std::optional<AlertLevel> parse_alert_level(std::string_view text) {
  return value_of(kAlertLevels, text);
}

std::string_view to_string(DeliveryStatus v) {
  return name_of(kDeliveryStatuses, v);
}

std::optional<DeliveryStatus> parse_delivery_status(std::string_view text) {
  return value_of(kDeliveryStatuses, text);
}

std::string_view to_string(AlertStatus v) {
  return name_of(kAlertStatuses, v);
}

std::optional<AlertStatus> parse_alert_status(std::string_view text) {
  return value_of(kAlertStatuses, text);
}

std::string_view to_string(Aggregation v) {
  return name_of(kAggregations, v);
}

std::optional<Aggregation> parse_aggregation_name(std::string_view text) {
  return value_of(kAggregations, text);
}

std::string_view to_string(LimitPeriod v) {
  return name_of(kLimitPeriods, v);
}

std::optional<LimitPeriod> parse_limit_period(std::string_view text) {
  return value_of(kLimitPeriods, text);
}

std::string_view to_string(Measure v) {
  return name_of(kMeasures, v);
}

std::optional<Measure> parse_measure(std::string_view text) {
  return value_of(kMeasures, text);
}

std::string_view to_string(CustomerSort v) {
  return name_of(kCustomerSorts, v);
}

std::optional<CustomerSort> parse_customer_sort(std::string_view text) {
  return value_of(kCustomerSorts, text);
}

std::string_view to_string(PriceModel v) {
  return name_of(kPriceModels, v);
}

std::optional<PriceModel> parse_price_model(std::string_view text) {
  return value_of(kPriceModels, text);
}

std::string_view denial_name(Denial d) {
  return name_of(kDenials, d);
}

std::optional<Denial> parse_denial(std::string_view text) {
  return value_of(kDenials, text);
}

}  // namespace tally
