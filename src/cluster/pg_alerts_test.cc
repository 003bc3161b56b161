// Alerts and the shared webhook outbox against a real PostgreSQL 15 (one server for the binary,
// tests/support/pg_server.h; a database per test, migrated to the latest schema): an alert is
// inserted once whoever inserts it, a delivery is claimed by one connection at a time, a claim
// whose lease expired is taken by another, and attempts are recorded only by the claimant.
#include "cluster/pg_alerts.h"

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "pg/schema.h"
#include "support/pg_test.h"

namespace tally::cluster {
namespace {

constexpr TimeUs kT0 = 1'767'225'600'000'000;  // 2026-01-01T00:00:00Z
constexpr TimeUs kSecond = 1'000'000;
constexpr TimeUs kLease = 60 * kSecond;

class PgAlertsTest : public testing::PgDatabaseTest {
 protected:
  PgAlertsTest() : PgDatabaseTest("a_", true) {}

  std::int64_t count(const std::string& sql) {
    auto r = conn_->exec(sql);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r ? pg::int_or_zero(r->at(0, 0)) : -1;
  }
};

// A limit alert of `customer` at `threshold` % of a day limit of 100 api_calls.
NewAlert limit_alert(const std::string& customer, std::int64_t threshold, int destinations = 2) {
  NewAlert n;
  Alert& a = n.alert;
  a.customer = customer;
  a.kind = AlertKind::kLimit;
  a.level = threshold >= 100 ? AlertLevel::kExceeded : AlertLevel::kWarning;
  a.meter = "api_calls";
  a.period = LimitPeriod::kDay;
  a.limit = "api_calls per day";
  a.threshold_percent = threshold;
  a.limit_amount = "100";
  a.used = std::to_string(threshold) + ".5";
  a.percent = std::to_string(threshold) + ".50";
  a.window_start_us = kT0;
  a.window_end_us = kT0 + 86'400 * kSecond;
  for (int i = 0; i < destinations; ++i) {
    n.destinations.emplace_back(i, "http://127.0.0.1:9/hook" + std::to_string(i));
  }
  return n;
}

TEST_F(PgAlertsTest, AnAlertIsInsertedOnceWhoeverInsertsIt) {
  // Two connections (two nodes) insert the same three thresholds 20 times each, at once.
  std::atomic<int> ready{0};
  std::atomic<int> inserted{0};
  std::atomic<int> deliveries{0};
  auto node = [&] {
    auto c = connect();
    ready.fetch_add(1);
    ASSERT_NE(c, nullptr);
    while (ready.load() < 2) {
    }
    for (int round = 0; round < 20; ++round) {
      auto r = insert_alerts(
          *c, {limit_alert("acme", 50), limit_alert("acme", 80), limit_alert("acme", 100)},
          kT0 + round);
      ASSERT_TRUE(r.has_value()) << r.error().to_string();
      inserted.fetch_add(static_cast<int>(r->size()));
      for (const Alert& a : *r) {
        deliveries.fetch_add(static_cast<int>(a.deliveries.size()));
      }
    }
  };
  std::thread a(node);
  std::thread b(node);
  a.join();
  b.join();
  EXPECT_EQ(inserted.load(), 3);
  EXPECT_EQ(deliveries.load(), 6);
  EXPECT_EQ(count("SELECT count(*) FROM alerts"), 3);
  EXPECT_EQ(count("SELECT count(*) FROM webhook_outbox"), 6);
  // Another window, or another customer, is another alert.
  NewAlert next_day = limit_alert("acme", 50);
  next_day.alert.window_start_us += 86'400 * kSecond;
  auto more = insert_alerts(*conn_, {next_day, limit_alert("globex", 50, 0)}, kT0);
  ASSERT_TRUE(more.has_value()) << more.error().to_string();
  EXPECT_EQ(more->size(), 2u);
  EXPECT_EQ(count("SELECT count(*) FROM webhook_outbox"), 8);

  // Read back as inserted.
  auto listed = list_alerts(*conn_, AlertFilter{});
  ASSERT_TRUE(listed.has_value()) << listed.error().to_string();
  ASSERT_EQ(listed->size(), 5u);
  const Alert& first = (*listed)[0].second;
  EXPECT_EQ(first.id, alert_id_of((*listed)[0].first));
  EXPECT_EQ(first.customer, "acme");
  EXPECT_EQ(first.kind, AlertKind::kLimit);
  EXPECT_EQ(first.level, AlertLevel::kWarning);
  EXPECT_EQ(first.meter, "api_calls");
  EXPECT_EQ(first.period, LimitPeriod::kDay);
  EXPECT_EQ(first.limit, "api_calls per day");
  EXPECT_EQ(first.threshold_percent, 50);
  EXPECT_EQ(first.limit_amount, "100");
  EXPECT_EQ(first.used, "50.5");
  EXPECT_EQ(first.percent, "50.50");
  EXPECT_EQ(first.window_start_us, kT0);
  EXPECT_EQ(first.window_end_us, kT0 + 86'400 * kSecond);
  ASSERT_EQ(first.deliveries.size(), 2u);
  EXPECT_EQ(first.deliveries[0].alert_id, first.id);
  EXPECT_EQ(first.deliveries[0].url, "http://127.0.0.1:9/hook0");
  EXPECT_EQ(first.deliveries[1].webhook, 1u);
  EXPECT_EQ(first.deliveries[0].status, DeliveryStatus::kPending);
  EXPECT_EQ(first.deliveries[0].event, "alert.triggered");
  EXPECT_EQ(first.deliveries[0].id.rfind("dlv_", 0), 0u);
  EXPECT_NE(first.deliveries[0].id, first.deliveries[1].id);
  EXPECT_EQ((*listed)[2].second.level, AlertLevel::kExceeded);

  // Filters and paging.
  AlertFilter f;
  f.customer = "globex";
  auto globex = list_alerts(*conn_, f);
  ASSERT_TRUE(globex.has_value());
  ASSERT_EQ(globex->size(), 1u);
  EXPECT_TRUE((*globex)[0].second.deliveries.empty());
  f = AlertFilter{};
  f.level = AlertLevel::kExceeded;
  auto exceeded = list_alerts(*conn_, f);
  ASSERT_TRUE(exceeded.has_value());
  EXPECT_EQ(exceeded->size(), 1u);
  f = AlertFilter{};
  f.rows_max = 2;
  f.after_row = (*listed)[1].first;
  auto page = list_alerts(*conn_, f);
  ASSERT_TRUE(page.has_value());
  ASSERT_EQ(page->size(), 2u);
  EXPECT_EQ((*page)[0].first, (*listed)[2].first);

  auto found = find_alert(*conn_, (*listed)[0].first);
  ASSERT_TRUE(found.has_value() && found->has_value());
  EXPECT_EQ((**found).deliveries.size(), 2u);
  auto missing = find_alert(*conn_, 999'999);
  ASSERT_TRUE(missing.has_value());
  EXPECT_FALSE(missing->has_value());
  EXPECT_EQ(alert_row_of("alrt_12").value_or(0), 12);
  EXPECT_FALSE(alert_row_of("alrt_").has_value());
  EXPECT_FALSE(alert_row_of("alrt_1x").has_value());
  EXPECT_FALSE(alert_row_of("dlv_1").has_value());
}

TEST_F(PgAlertsTest, TwoNodesClaimingAtOnceNeverTakeTheSameDelivery) {
  std::vector<NewAlert> alerts;
  for (int t = 1; t <= 40; ++t) {
    alerts.push_back(limit_alert("acme", t));  // 80 deliveries
  }
  ASSERT_TRUE(insert_alerts(*conn_, alerts, kT0).has_value());
  std::atomic<int> ready{0};
  std::map<std::string, std::vector<std::string>> taken;  // node -> delivery ids
  std::mutex mutex;
  auto node = [&](const std::string& name) {
    auto c = connect();
    ready.fetch_add(1);
    ASSERT_NE(c, nullptr);
    while (ready.load() < 2) {
    }
    for (;;) {
      TimeUs next_due = 0;
      auto claimed = claim_deliveries(*c, name, kT0 + kSecond, kLease, 3, &next_due);
      ASSERT_TRUE(claimed.has_value()) << claimed.error().to_string();
      if (claimed->empty()) {
        EXPECT_EQ(next_due, 0);  // every pending one is claimed by a live lease
        return;
      }
      std::lock_guard lock(mutex);
      for (const auto& d : *claimed) {
        taken[name].push_back(d.id);
      }
    }
  };
  std::thread a(node, "node-a");
  std::thread b(node, "node-b");
  a.join();
  b.join();
  std::set<std::string> all;
  std::size_t total = 0;
  for (const auto& [name, ids] : taken) {
    total += ids.size();
    all.insert(ids.begin(), ids.end());
  }
  EXPECT_EQ(total, 80u);
  EXPECT_EQ(all.size(), 80u);  // none twice
  EXPECT_EQ(count("SELECT count(*) FROM webhook_outbox WHERE claimed_by IS NULL"), 0);
}

TEST_F(PgAlertsTest, AnExpiredLeaseIsTakenByAnotherNodeAndTheLateRecordRefused) {
  ASSERT_TRUE(insert_alerts(*conn_, {limit_alert("acme", 80, 1)}, kT0).has_value());
  auto other = connect();
  ASSERT_NE(other, nullptr);
  TimeUs next_due = 0;
  // Not due before its time.
  auto early = claim_deliveries(*conn_, "node-a", kT0 - kSecond, kLease, 10, &next_due);
  ASSERT_TRUE(early.has_value());
  EXPECT_TRUE(early->empty());
  EXPECT_EQ(next_due, kT0);
  auto a = claim_deliveries(*conn_, "node-a", kT0, kLease, 10, &next_due);
  ASSERT_TRUE(a.has_value());
  ASSERT_EQ(a->size(), 1u);
  const std::string id = (*a)[0].id;
  // Node a "dies" holding it: node b cannot take it during the lease...
  auto b = claim_deliveries(*other, "node-b", kT0 + kLease - kSecond, kLease, 10, &next_due);
  ASSERT_TRUE(b.has_value());
  EXPECT_TRUE(b->empty());
  // ...and takes it once the lease has run out.
  b = claim_deliveries(*other, "node-b", kT0 + kLease, kLease, 10, &next_due);
  ASSERT_TRUE(b.has_value());
  ASSERT_EQ(b->size(), 1u);
  EXPECT_EQ((*b)[0].id, id);
  // Node a comes back and reports its attempt: refused, node b holds the delivery.
  DeliveryAttempt late;
  late.delivery_id = id;
  late.delivered = true;
  late.status_code = 200;
  late.at_us = kT0 + kLease + kSecond;
  Status s = record_attempt(*conn_, "node-a", late);
  EXPECT_EQ(s.code(), StatusCode::kAlreadyExists) << s.to_string();
  // Node b's failed attempt, retried 10 s later.
  DeliveryAttempt failed;
  failed.delivery_id = id;
  failed.status_code = 503;
  failed.error = "HTTP 503: busy";
  failed.at_us = kT0 + kLease + 2 * kSecond;
  failed.next_attempt_at_us = kT0 + kLease + 12 * kSecond;
  ASSERT_TRUE(record_attempt(*other, "node-b", failed).ok());
  auto not_yet =
      claim_deliveries(*conn_, "node-a", kT0 + kLease + 5 * kSecond, kLease, 10, &next_due);
  ASSERT_TRUE(not_yet.has_value());
  EXPECT_TRUE(not_yet->empty());
  EXPECT_EQ(next_due, kT0 + kLease + 12 * kSecond);
  auto again =
      claim_deliveries(*conn_, "node-a", kT0 + kLease + 12 * kSecond, kLease, 10, &next_due);
  ASSERT_TRUE(again.has_value());
  ASSERT_EQ(again->size(), 1u);
  EXPECT_EQ((*again)[0].attempts, 1u);
  EXPECT_EQ((*again)[0].last_status_code, 503);
  EXPECT_EQ((*again)[0].last_error, "HTTP 503: busy");
  DeliveryAttempt ok;
  ok.delivery_id = id;
  ok.delivered = true;
  ok.status_code = 204;
  ok.at_us = kT0 + kLease + 13 * kSecond;
  ASSERT_TRUE(record_attempt(*conn_, "node-a", ok).ok());
  EXPECT_EQ(record_attempt(*conn_, "node-a", ok).code(), StatusCode::kAlreadyExists);
  ok.delivery_id = "dlv_nope";
  EXPECT_EQ(record_attempt(*conn_, "node-a", ok).code(), StatusCode::kNotFound);
  auto done = claim_deliveries(*other, "node-b", kT0 + 10 * kLease, kLease, 10, &next_due);
  ASSERT_TRUE(done.has_value());
  EXPECT_TRUE(done->empty());
  EXPECT_EQ(next_due, 0);
  auto listed = list_alerts(*conn_, AlertFilter{});
  ASSERT_TRUE(listed.has_value());
  ASSERT_EQ(listed->size(), 1u);
  const WebhookDelivery& d = (*listed)[0].second.deliveries.at(0);
  EXPECT_EQ(d.status, DeliveryStatus::kDelivered);
  EXPECT_EQ(d.attempts, 2u);
  EXPECT_EQ(d.delivered_at_us, kT0 + kLease + 13 * kSecond);
  EXPECT_EQ(d.last_attempt_at_us, kT0 + kLease + 13 * kSecond);
  EXPECT_EQ(d.next_attempt_at_us, 0);
  EXPECT_EQ(count("SELECT count(*) FROM webhook_outbox WHERE claimed_by IS NOT NULL"), 0);
}

TEST_F(PgAlertsTest, AnAttemptWithoutANextTimeFailsTheDelivery) {
  ASSERT_TRUE(insert_alerts(*conn_, {limit_alert("acme", 80, 1)}, kT0).has_value());
  TimeUs next_due = 0;
  auto a = claim_deliveries(*conn_, "node-a", kT0, kLease, 10, &next_due);
  ASSERT_TRUE(a.has_value());
  ASSERT_EQ(a->size(), 1u);
  DeliveryAttempt gave_up;
  gave_up.delivery_id = (*a)[0].id;
  gave_up.error = "cannot connect: refused";
  gave_up.at_us = kT0 + kSecond;
  ASSERT_TRUE(record_attempt(*conn_, "node-a", gave_up).ok());
  auto listed = list_alerts(*conn_, AlertFilter{});
  ASSERT_TRUE(listed.has_value());
  const WebhookDelivery& d = (*listed)[0].second.deliveries.at(0);
  EXPECT_EQ(d.status, DeliveryStatus::kFailed);
  EXPECT_EQ(d.attempts, 1u);
  EXPECT_EQ(d.last_error, "cannot connect: refused");
  EXPECT_EQ(d.delivered_at_us, 0);
  auto none = claim_deliveries(*conn_, "node-b", kT0 + 10 * kLease, kLease, 10, &next_due);
  ASSERT_TRUE(none.has_value());
  EXPECT_TRUE(none->empty());
}

}  // namespace
}  // namespace tally::cluster
