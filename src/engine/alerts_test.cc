// Alerts in the engine, on a fake clock: thresholds fire once per customer, limit, period and
// threshold, lowest first, also when one batch jumps over several; checks fire them too; a new
// period fires them again; low balances fire once per drop; nothing fires twice across a
// restart; the outbox keeps deliveries and their attempts.
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

#include "core/time.h"
#include "engine/engine_test_util.h"

namespace tally {
namespace {

constexpr const char* kConfig = R"(
[alerts]
thresholds = [100]   # for plans without their own

[[meters]]
key = "calls"
event_type = "call"
aggregation = "count"

[[prices]]
meter = "calls"
unit_price = "1"

[[plans]]
key = "basic"
limits = [{ meter = "calls", period = "month", amount = 100 },
          { meter = "calls", period = "day", amount = 1000 }]
alert_thresholds = [50, 80, 95]

[[plans]]
key = "seed004"
limits = [{ meter = "calls", period = "month", amount = 20 }]
alert_thresholds = [75, 90, 100]

[[plans]]
key = "wallet"
limits = [{ meter = "calls", period = "day", amount = 30 }]
alert_balance_below = 10

[[webhooks]]
url = "http://127.0.0.1:9/hook"
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)";

TimeUs at(const char* rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

constexpr const char* kStart = "2025-03-10T12:00:00Z";

class AlertsTest : public EngineDirTest {
 protected:
  AlertsTest() : EngineDirTest("tally-alerts-", at(kStart)) {}

  std::unique_ptr<Engine> open(const std::string& config = kConfig) { return open_engine(config); }

  static void customer(Engine& e, const std::string& id, const std::string& plan) {
    Customer c;
    c.id = id;
    c.plan = plan;
    ASSERT_TRUE(e.create_customer(c).has_value());
  }

  // `n` call events of `customer` in one batch, with ids from `first`.
  static void calls(Engine& e, const std::string& customer, int n, int first = 0) {
    std::string body = R"({"events":[)";
    for (int i = 0; i < n; ++i) {
      body += (i ? "," : "") + std::string(R"({"id":")") + customer + "-" +
              std::to_string(first + i) + R"(","customer":")" + customer + R"(","type":"call"})";
    }
    body += "]}";
    auto r = e.ingest_json(body);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    EXPECT_EQ(r->accepted, static_cast<std::uint64_t>(n));
    e.flush();
  }

  static std::vector<Alert> alerts(Engine& e, AlertQuery q = {}) {
    q.limit = 1000;
    auto p = e.alerts(q);
    EXPECT_TRUE(p.has_value()) << p.error().message();
    return p ? p->alerts : std::vector<Alert>{};
  }
};

TEST_F(AlertsTest, OneBatchOverSeveralThresholdsFiresEachOnceLowestFirst) {
  auto e = open();
  customer(*e, "acme", "basic");
  calls(*e, "acme", 40);
  EXPECT_TRUE(alerts(*e).empty());
  calls(*e, "acme", 56, 40);  // 96: over 50, 80 and 95 at once
  auto a = alerts(*e);
  ASSERT_EQ(a.size(), 3u);
  const std::int64_t expected[] = {50, 80, 95};
  const AlertLevel levels[] = {AlertLevel::kWarning, AlertLevel::kWarning, AlertLevel::kCritical};
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(a[i].customer, "acme");
    EXPECT_EQ(a[i].kind, AlertKind::kLimit);
    EXPECT_EQ(a[i].meter, "calls");
    EXPECT_EQ(a[i].period, LimitPeriod::kMonth);
    EXPECT_EQ(a[i].limit, "calls per month");
    EXPECT_EQ(a[i].threshold_percent, expected[i]);
    EXPECT_EQ(a[i].level, levels[i]);
    EXPECT_EQ(a[i].used, "96");
    EXPECT_EQ(a[i].limit_amount, "100");
    EXPECT_EQ(a[i].percent, "96.00");
    EXPECT_EQ(a[i].window_start_us, at("2025-03-01T00:00:00Z"));
    EXPECT_EQ(a[i].window_end_us, at("2025-04-01T00:00:00Z"));
    EXPECT_EQ(a[i].status, AlertStatus::kPending);  // the webhook is never reached in this test
    EXPECT_FALSE(a[i].sent);
    ASSERT_EQ(a[i].deliveries.size(), 1u);
    EXPECT_EQ(a[i].deliveries[0].url, "http://127.0.0.1:9/hook");
  }
  EXPECT_LT(a[0].id, a[1].id);
  // More usage in the same month fires nothing more; the day limit (1000) is far.
  calls(*e, "acme", 4, 96);
  EXPECT_EQ(alerts(*e).size(), 3u);
  // The next month is a new period: its thresholds fire again.
  clock_.set_us(at("2025-04-02T00:00:00Z"));
  calls(*e, "acme", 50, 100);
  a = alerts(*e);
  ASSERT_EQ(a.size(), 4u);
  EXPECT_EQ(a[3].threshold_percent, 50);
  EXPECT_EQ(a[3].window_start_us, at("2025-04-01T00:00:00Z"));
}

TEST_F(AlertsTest, LevelsFollowThe004ThresholdsAndChecksFireThem) {
  auto e = open();
  customer(*e, "clinic", "seed004");
  CheckRequest c;
  c.customer = "clinic";
  c.meter = "calls";
  for (int i = 0; i < 20; ++i) {
    auto r = e->check(c);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    ASSERT_TRUE(r->allowed);
  }
  e->flush();
  auto a = alerts(*e);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[0].level, AlertLevel::kWarning);
  EXPECT_EQ(a[1].level, AlertLevel::kCritical);
  EXPECT_EQ(a[2].level, AlertLevel::kExceeded);
  EXPECT_EQ(a[2].threshold_percent, 100);
  EXPECT_EQ(a[2].used, "20");
  // Filters.
  AlertQuery q;
  q.level = AlertLevel::kExceeded;
  ASSERT_EQ(alerts(*e, q).size(), 1u);
  q = {};
  q.customer = "clinic";
  q.status = AlertStatus::kPending;
  EXPECT_EQ(alerts(*e, q).size(), 3u);
  q.status = AlertStatus::kSent;
  EXPECT_TRUE(alerts(*e, q).empty());
}

TEST_F(AlertsTest, NothingFiresTwiceAcrossARestartAndTheOutboxKeepsAttempts) {
  std::string delivery;
  {
    auto e = open();
    customer(*e, "acme", "basic");
    calls(*e, "acme", 60);
    auto a = alerts(*e);
    ASSERT_EQ(a.size(), 1u);
    delivery = a[0].deliveries.at(0).id;
    TimeUs next = 0;
    auto due = e->due_deliveries(clock_.now_us(), 10, {}, &next);
    ASSERT_EQ(due.size(), 1u);
    EXPECT_EQ(due[0].id, delivery);
    // Skipped while being sent.
    EXPECT_TRUE(e->due_deliveries(clock_.now_us(), 10, {delivery}, &next).empty());
    DeliveryAttempt failed;
    failed.delivery_id = delivery;
    failed.status_code = 503;
    failed.error = "HTTP 503";
    failed.at_us = clock_.now_us();
    failed.next_attempt_at_us = clock_.now_us() + 2'000'000;
    ASSERT_TRUE(e->record_delivery_attempt(failed).ok());
    EXPECT_TRUE(e->due_deliveries(clock_.now_us(), 10, {}, &next).empty());
    EXPECT_EQ(next, clock_.now_us() + 2'000'000);
  }
  auto e = open();
  e->flush();
  auto a = alerts(*e);
  ASSERT_EQ(a.size(), 1u);  // the evaluation after open found it fired already
  EXPECT_EQ(a[0].delivery_attempts, 1u);
  EXPECT_EQ(a[0].deliveries.at(0).last_status_code, 503);
  calls(*e, "acme", 1, 60);
  EXPECT_EQ(alerts(*e).size(), 1u);
  clock_.advance_us(3'000'000);
  TimeUs next = 0;
  ASSERT_EQ(e->due_deliveries(clock_.now_us(), 10, {}, &next).size(), 1u);
  DeliveryAttempt ok;
  ok.delivery_id = delivery;
  ok.delivered = true;
  ok.status_code = 200;
  ok.at_us = clock_.now_us();
  ASSERT_TRUE(e->record_delivery_attempt(ok).ok());
  a = alerts(*e);
  EXPECT_EQ(a[0].status, AlertStatus::kSent);
  EXPECT_TRUE(a[0].sent);
  EXPECT_EQ(a[0].delivery_attempts, 2u);
  // A second report of a finished delivery changes nothing.
  EXPECT_EQ(e->record_delivery_attempt(ok).code(), StatusCode::kAlreadyExists);
  ok.delivery_id = "dlv_nope";
  EXPECT_EQ(e->record_delivery_attempt(ok).code(), StatusCode::kNotFound);
  EXPECT_TRUE(e->due_deliveries(clock_.now_us(), 10, {}, &next).empty());
  EXPECT_EQ(next, 0);
}

TEST_F(AlertsTest, AFailedDeliveryFailsItsAlert) {
  auto e = open();
  customer(*e, "acme", "basic");
  calls(*e, "acme", 50);
  auto a = alerts(*e);
  ASSERT_EQ(a.size(), 1u);
  DeliveryAttempt gave_up;
  gave_up.delivery_id = a[0].deliveries.at(0).id;
  gave_up.error = "cannot connect";
  gave_up.at_us = clock_.now_us();
  ASSERT_TRUE(e->record_delivery_attempt(gave_up).ok());  // next_attempt 0: give up
  a = alerts(*e);
  EXPECT_EQ(a[0].status, AlertStatus::kFailed);
  EXPECT_EQ(a[0].deliveries[0].status, DeliveryStatus::kFailed);
}

TEST_F(AlertsTest, LowBalanceFiresOncePerDrop) {
  auto e = open();
  customer(*e, "acme", "wallet");
  WalletTransactionRequest top_up;
  top_up.type = LedgerType::kTopUp;
  top_up.amount = "15";
  ASSERT_TRUE(e->wallet_transaction("acme", top_up).has_value());
  e->flush();
  EXPECT_TRUE(alerts(*e).empty());
  calls(*e, "acme", 6);  // 9 credits left: below 10
  auto a = alerts(*e);
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0].kind, AlertKind::kLowBalance);
  EXPECT_EQ(a[0].level, AlertLevel::kWarning);
  EXPECT_EQ(a[0].balance, "9");
  EXPECT_EQ(a[0].threshold_amount, "10");
  calls(*e, "acme", 2, 6);  // still low: nothing new
  EXPECT_EQ(alerts(*e).size(), 1u);
  ASSERT_TRUE(e->wallet_transaction("acme", top_up).has_value());  // 22: re-armed
  e->flush();
  calls(*e, "acme", 13, 8);  // 9 again
  a = alerts(*e);
  ASSERT_EQ(a.size(), 2u);
  EXPECT_EQ(a[1].kind, AlertKind::kLowBalance);
  // [alerts] thresholds apply to a plan without its own: 100% of 30 calls a day.
  calls(*e, "acme", 9, 21);
  a = alerts(*e);
  ASSERT_EQ(a.size(), 3u);
  EXPECT_EQ(a[2].kind, AlertKind::kLimit);
  EXPECT_EQ(a[2].threshold_percent, 100);
  EXPECT_EQ(a[2].level, AlertLevel::kExceeded);
  EXPECT_EQ(a[2].period, LimitPeriod::kDay);
}

TEST_F(AlertsTest, QueriesRefuseBadArguments) {
  auto e = open();
  customer(*e, "acme", "basic");
  AlertQuery q;
  q.cursor = "x1";
  EXPECT_EQ(e->alerts(q).error().code(), StatusCode::kInvalidArgument);
  q = {};
  q.customer = "nobody";
  EXPECT_EQ(e->alerts(q).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->alert("alrt_99").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->alert("bogus").error().code(), StatusCode::kNotFound);
}

TEST_F(AlertsTest, PagesWithACursor) {
  auto e = open();
  customer(*e, "acme", "basic");
  calls(*e, "acme", 96);
  AlertQuery q;
  q.limit = 2;
  auto p = e->alerts(q);
  ASSERT_TRUE(p.has_value());
  ASSERT_EQ(p->alerts.size(), 2u);
  ASSERT_FALSE(p->next_cursor.empty());
  q.cursor = p->next_cursor;
  auto p2 = e->alerts(q);
  ASSERT_TRUE(p2.has_value());
  ASSERT_EQ(p2->alerts.size(), 1u);
  EXPECT_EQ(p2->alerts[0].threshold_percent, 95);
  EXPECT_TRUE(p2->next_cursor.empty());
}

}  // namespace
}  // namespace tally
