// The texts of the public closed sets (src/core/names.cc): every value reads back as itself,
// every value has its own text, and any other text is refused.
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

#include <tally/types.h>

#include "core/limits.h"
#include "core/meter.h"
#include "core/time.h"

namespace tally {
namespace {

// Texts no closed set accepts: empty (except Denial's kNone), other cases, padding, prefixes.
const std::vector<std::string> kStrangers = {
    "bogus",  "ACTIVE", "Day", " day", "day ", "gran", "pending\n", std::string("hold\0", 5),
    "unknown"};

template <typename E, typename Parse>
void expect_round_trips(const std::vector<std::pair<E, std::string_view>>& values, Parse parse) {
  std::set<std::string_view> seen;
  for (const auto& [value, text] : values) {
    EXPECT_EQ(to_string(value), text);
    const std::optional<E> back = parse(text);
    ASSERT_TRUE(back.has_value()) << text;
    EXPECT_EQ(*back, value) << text;
    EXPECT_TRUE(seen.insert(text).second) << "two values share the text " << text;
  }
  for (const std::string& s : kStrangers) {
    EXPECT_FALSE(parse(s).has_value()) << "'" << s << "' was accepted";
  }
}

TEST(Names, CustomerStatus) {
  expect_round_trips<CustomerStatus>(
      {{CustomerStatus::kActive, "active"}, {CustomerStatus::kSuspended, "suspended"}},
      parse_customer_status);
  EXPECT_FALSE(parse_customer_status("").has_value());
  EXPECT_FALSE(parse_customer_status("closed").has_value());
}

TEST(Names, Window) {
  expect_round_trips<Window>({{Window::kMinute, "minute"},
                              {Window::kHour, "hour"},
                              {Window::kDay, "day"},
                              {Window::kWeek, "week"},
                              {Window::kMonth, "month"}},
                             parse_window_name);
  EXPECT_FALSE(parse_window_name("").has_value());
  EXPECT_FALSE(parse_window_name("year").has_value());
  // From the shortest to the longest.
  EXPECT_LT(Window::kMinute, Window::kHour);
  EXPECT_LT(Window::kWeek, Window::kMonth);
  // core's parser, with its message, reads the same texts.
  EXPECT_EQ(*core::parse_window("week"), Window::kWeek);
  EXPECT_EQ(core::window_name(Window::kHour), "hour");
  const auto bad = core::parse_window("fortnight");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.error().message(),
            "unknown window \"fortnight\"; expected minute, hour, day, week or month");
}

TEST(Names, LedgerType) {
  expect_round_trips<LedgerType>({{LedgerType::kGrant, "grant"},
                                  {LedgerType::kTopUp, "top_up"},
                                  {LedgerType::kBurn, "burn"},
                                  {LedgerType::kRefund, "refund"},
                                  {LedgerType::kAdjustment, "adjustment"},
                                  {LedgerType::kExpiry, "expiry"},
                                  {LedgerType::kHold, "hold"},
                                  {LedgerType::kRelease, "release"}},
                                 parse_ledger_type);
  EXPECT_FALSE(parse_ledger_type("").has_value());
  EXPECT_FALSE(parse_ledger_type("top-up").has_value());
}

TEST(Names, AlertKind) {
  expect_round_trips<AlertKind>(
      {{AlertKind::kLimit, "limit"}, {AlertKind::kLowBalance, "low_balance"}}, parse_alert_kind);
  EXPECT_FALSE(parse_alert_kind("").has_value());
}

TEST(Names, AlertLevel) {
  expect_round_trips<AlertLevel>({{AlertLevel::kInfo, "info"},
                                  {AlertLevel::kWarning, "warning"},
                                  {AlertLevel::kCritical, "critical"},
                                  {AlertLevel::kExceeded, "exceeded"}},
                                 parse_alert_level);
  EXPECT_FALSE(parse_alert_level("").has_value());
  EXPECT_FALSE(parse_alert_level("error").has_value());
  // From the least to the most urgent.
  EXPECT_LT(AlertLevel::kInfo, AlertLevel::kWarning);
  EXPECT_LT(AlertLevel::kWarning, AlertLevel::kCritical);
  EXPECT_LT(AlertLevel::kCritical, AlertLevel::kExceeded);
}

TEST(Names, DeliveryStatus) {
  expect_round_trips<DeliveryStatus>({{DeliveryStatus::kPending, "pending"},
                                      {DeliveryStatus::kDelivered, "delivered"},
                                      {DeliveryStatus::kFailed, "failed"}},
                                     parse_delivery_status);
  EXPECT_FALSE(parse_delivery_status("").has_value());
  EXPECT_FALSE(parse_delivery_status("sent").has_value()) << "an alert's text, not a delivery's";
}

TEST(Names, AlertStatus) {
  expect_round_trips<AlertStatus>({{AlertStatus::kNone, "none"},
                                   {AlertStatus::kPending, "pending"},
                                   {AlertStatus::kSent, "sent"},
                                   {AlertStatus::kFailed, "failed"}},
                                  parse_alert_status);
  EXPECT_FALSE(parse_alert_status("").has_value());
  EXPECT_FALSE(parse_alert_status("delivered").has_value()) << "a delivery's text";
}

TEST(Names, Aggregation) {
  expect_round_trips<Aggregation>({{Aggregation::kCount, "count"},
                                   {Aggregation::kSum, "sum"},
                                   {Aggregation::kMin, "min"},
                                   {Aggregation::kMax, "max"},
                                   {Aggregation::kAvg, "avg"},
                                   {Aggregation::kLatest, "latest"},
                                   {Aggregation::kUniqueCount, "unique_count"}},
                                  parse_aggregation_name);
  EXPECT_FALSE(parse_aggregation_name("").has_value());
  EXPECT_FALSE(parse_aggregation_name("median").has_value());
  EXPECT_FALSE(parse_aggregation_name("COUNT").has_value());
  // core's parser, with its message, reads the same texts.
  EXPECT_EQ(*core::parse_aggregation("unique_count"), Aggregation::kUniqueCount);
  EXPECT_EQ(core::aggregation_name(Aggregation::kAvg), "avg");
  const auto bad = core::parse_aggregation("median");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message(),
            "unknown aggregation \"median\"; expected count, sum, min, max, avg, latest or "
            "unique_count");
}

TEST(Names, LimitPeriod) {
  expect_round_trips<LimitPeriod>({{LimitPeriod::kSecond, "second"},
                                   {LimitPeriod::kMinute, "minute"},
                                   {LimitPeriod::kHour, "hour"},
                                   {LimitPeriod::kDay, "day"},
                                   {LimitPeriod::kWeek, "week"},
                                   {LimitPeriod::kMonth, "month"},
                                   {LimitPeriod::kBillingPeriod, "billing_period"},
                                   {LimitPeriod::kTrial, "trial"},
                                   {LimitPeriod::kLifetime, "lifetime"}},
                                  parse_limit_period);
  EXPECT_FALSE(parse_limit_period("").has_value());
  EXPECT_FALSE(parse_limit_period("year").has_value());
  EXPECT_FALSE(parse_limit_period("billing-period").has_value());
  // core's parser, with its message, reads the same texts.
  EXPECT_EQ(*core::parse_period("billing_period"), LimitPeriod::kBillingPeriod);
  EXPECT_EQ(core::period_name(LimitPeriod::kLifetime), "lifetime");
  const auto bad = core::parse_period("fortnight");
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().message(),
            "unknown period 'fortnight' (expected second, minute, hour, day, week, month, "
            "billing_period, trial or lifetime)");
}

TEST(Names, Measure) {
  expect_round_trips<Measure>(
      {{Measure::kUnits, "units"}, {Measure::kCost, "cost"}, {Measure::kCredits, "credits"}},
      parse_measure);
  EXPECT_FALSE(parse_measure("").has_value()) << "the API's empty measure is read at its edge";
  EXPECT_FALSE(parse_measure("euros").has_value());
}

TEST(Names, CustomerSort) {
  expect_round_trips<CustomerSort>({{CustomerSort::kId, "id"},
                                    {CustomerSort::kName, "name"},
                                    {CustomerSort::kPlan, "plan"},
                                    {CustomerSort::kStatus, "status"},
                                    {CustomerSort::kUsage, "usage"}},
                                   parse_customer_sort);
  EXPECT_FALSE(parse_customer_sort("").has_value());
  EXPECT_FALSE(parse_customer_sort("created_at").has_value());
}

TEST(Names, PriceModel) {
  expect_round_trips<PriceModel>({{PriceModel::kPerUnit, "per_unit"},
                                  {PriceModel::kGraduated, "graduated"},
                                  {PriceModel::kVolume, "volume"},
                                  {PriceModel::kPackage, "package"},
                                  {PriceModel::kFlat, "flat"}},
                                 parse_price_model);
  EXPECT_FALSE(parse_price_model("").has_value());
  EXPECT_FALSE(parse_price_model("tiered").has_value());
  // The numbers are stored with each price version: they never change.
  EXPECT_EQ(static_cast<int>(PriceModel::kPerUnit), 0);
  EXPECT_EQ(static_cast<int>(PriceModel::kGraduated), 1);
  EXPECT_EQ(static_cast<int>(PriceModel::kVolume), 2);
  EXPECT_EQ(static_cast<int>(PriceModel::kPackage), 3);
  EXPECT_EQ(static_cast<int>(PriceModel::kFlat), 4);
}

TEST(Names, Denial) {
  const std::vector<std::pair<Denial, std::string_view>> values = {
      {Denial::kNone, ""},
      {Denial::kLimitExceeded, "limit_exceeded"},
      {Denial::kTrialExpired, "trial_expired"},
      {Denial::kFeatureNotEnabled, "feature_not_enabled"},
      {Denial::kCustomerSuspended, "customer_suspended"},
      {Denial::kInsufficientCredits, "insufficient_credits"},
      {Denial::kBatchDenied, "batch_denied"}};
  std::set<std::string_view> seen;
  for (const auto& [value, text] : values) {
    EXPECT_EQ(denial_name(value), text);
    ASSERT_TRUE(parse_denial(text).has_value()) << text;
    EXPECT_EQ(*parse_denial(text), value) << text;
    EXPECT_TRUE(seen.insert(text).second) << text;
  }
  for (const std::string& s : kStrangers) {
    EXPECT_FALSE(parse_denial(s).has_value()) << "'" << s << "' was accepted";
  }
  EXPECT_FALSE(parse_denial("LIMIT_EXCEEDED").has_value());
}

}  // namespace
}  // namespace tally
