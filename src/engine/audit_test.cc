// The audit log of operators' actions (audit.h): plan and status changes, other customer
// updates, wallet transactions, key creation and revocation, each with its actor and time,
// written with the action (a refused action leaves no record) and kept across a restart; and
// organizations rolled up for the admin view (organizations.cc).
#include <gtest/gtest.h>

#include <tally/engine.h>

#include "core/time.h"
#include "engine/engine_test_util.h"

namespace tally {
namespace {

TimeUs at(const char* rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

constexpr const char* kConfig = R"(
[enforcement]
default_plan = "basic"

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[plans]]
key = "basic"
limits = [{ meter = "api_calls", period = "day", amount = 10 }]

[[plans]]
key = "pro"
limits = [{ meter = "api_calls", period = "day", amount = 100 }]
)";

class AuditTest : public EngineDirTest {
 protected:
  AuditTest() : EngineDirTest("tally-audit-", at("2025-01-20T12:00:00Z")) {}

  static bool has(const std::vector<std::string>& log, std::initializer_list<const char*> parts) {
    for (const auto& rec : log) {
      bool all = true;
      for (const char* p : parts) {
        all = all && rec.find(p) != std::string::npos;
      }
      if (all) {
        return true;
      }
    }
    return false;
  }
};

TEST_F(AuditTest, EveryOperatorActionIsAuditedWithItsActor) {
  auto e = open_engine(kConfig);
  ASSERT_NE(e, nullptr);
  Customer c;
  c.id = "acme";
  ASSERT_TRUE(e->create_customer(c).has_value());

  CustomerPatch plan;
  plan.plan = "pro";
  ASSERT_TRUE(e->update_customer("acme", plan, "key_ops1").has_value());
  clock_.advance_us(core::kUsPerSecond);
  CustomerPatch suspend;
  suspend.status = CustomerStatus::kSuspended;
  suspend.name = "Acme Inc";
  ASSERT_TRUE(e->update_customer("acme", suspend, "key_ops1").has_value());
  WalletTransactionRequest top;
  top.type = LedgerType::kTopUp;
  top.amount = "25";
  auto t = e->wallet_transaction("acme", top, "key_ops2");
  ASSERT_TRUE(t.has_value()) << t.error().message();
  NewApiKeyRequest kr;
  kr.customer = "acme";
  kr.name = "dash";
  auto k = e->create_key(kr, "key_ops2");
  ASSERT_TRUE(k.has_value());
  ASSERT_TRUE(e->revoke_key(k->info.id, "key_ops3").ok());
  ASSERT_TRUE(e->reset_period("acme", "api_calls", "key_ops3").has_value());

  // Refused actions change nothing and leave no record.
  const std::size_t before = e->audit_log(1000)->size();
  CustomerPatch bad;
  bad.plan = "nope";
  EXPECT_FALSE(e->update_customer("acme", bad, "key_bad").has_value());
  top.amount = "-1";
  EXPECT_FALSE(e->wallet_transaction("acme", top, "key_bad").has_value());
  EXPECT_FALSE(e->revoke_key("key_ghost", "key_bad").ok());
  kr.customer = "ghost";
  EXPECT_FALSE(e->create_key(kr, "key_bad").has_value());
  // A patch that changes nothing is no action.
  CustomerPatch same;
  same.plan = "pro";
  ASSERT_TRUE(e->update_customer("acme", same, "key_ops1").has_value());
  EXPECT_EQ(e->audit_log(1000)->size(), before);

  // Kept across a restart.
  e.reset();
  e = open_engine(kConfig);
  ASSERT_NE(e, nullptr);
  const auto log = *e->audit_log(1000);
  EXPECT_EQ(log.size(), 7u);
  EXPECT_TRUE(
      has(log, {R"("action":"plan_change")", R"("customer":"acme")", R"("actor":"key_ops1")",
                R"("from":null)", R"("to":"pro")", R"("at":"2025-01-20T12:00:00Z")"}));
  EXPECT_TRUE(has(log, {R"("action":"status_change")", R"("from":"active")", R"("to":"suspended")",
                        R"("at":"2025-01-20T12:00:01Z")"}));
  EXPECT_TRUE(has(log, {R"("action":"customer_update")", R"("fields":["name"])"}));
  EXPECT_TRUE(
      has(log, {R"("action":"wallet_transaction")", R"("actor":"key_ops2")", R"("type":"top_up")",
                R"("amount":"25")", (R"("transaction":")" + t->id + "\"").c_str()}));
  EXPECT_TRUE(has(log, {R"("action":"key_create")", R"("actor":"key_ops2")",
                        (R"("key":")" + k->info.id + "\"").c_str(), R"("name":"dash")"}));
  EXPECT_TRUE(has(log, {R"("action":"key_revoke")", R"("actor":"key_ops3")",
                        (R"("key":")" + k->info.id + "\"").c_str()}));
  EXPECT_TRUE(has(log, {R"("action":"reset")", R"("actor":"key_ops3")"}));
  // Oldest first, and the newest `limit` of them.
  const auto last2 = *e->audit_log(2);
  ASSERT_EQ(last2.size(), 2u);
  EXPECT_EQ(last2[0], log[5]);
  EXPECT_EQ(last2[1], log[6]);
}

TEST_F(AuditTest, OrganizationsRollUpTheirCustomers) {
  auto e = open_engine(kConfig);
  ASSERT_NE(e, nullptr);
  auto add = [&](const char* id, const char* org, const char* plan) {
    Customer c;
    c.id = id;
    c.organization = org;
    c.plan = plan;
    ASSERT_TRUE(e->create_customer(c).has_value());
  };
  add("a1", "org-a", "basic");
  add("a2", "org-a", "pro");
  add("b1", "org-b", "basic");
  add("solo", "", "basic");
  auto ingest = [&](const char* customer, int n) {
    std::string body = "[";
    for (int i = 0; i < n; ++i) {
      body += std::string(i ? "," : "") + R"({"id":")" + customer + std::to_string(i) +
              R"(","customer":")" + customer +
              R"(","type":"api_call","time":"2025-01-20T11:00:00Z"})";
    }
    body += "]";
    auto r = e->ingest_json(body);
    ASSERT_TRUE(r.has_value()) << r.error().message();
  };
  ingest("a1", 3);   // 30 % of 10
  ingest("a2", 40);  // 40 % of 100
  ingest("b1", 9);   // 90 % of 10
  ingest("solo", 10);
  CustomerPatch suspend;
  suspend.status = CustomerStatus::kSuspended;
  ASSERT_TRUE(e->update_customer("a1", suspend).has_value());

  auto page = e->organization_summaries(0, 50);
  ASSERT_TRUE(page.has_value()) << page.error().message();
  ASSERT_EQ(page->total, 2u);
  ASSERT_EQ(page->organizations.size(), 2u);
  const OrganizationSummary& b = page->organizations[0];  // 90 % first
  EXPECT_EQ(b.organization, "org-b");
  EXPECT_EQ(b.customers, 1u);
  EXPECT_EQ(b.max_percent, "90.00");
  EXPECT_EQ(b.max_customer, "b1");
  const OrganizationSummary& a = page->organizations[1];
  EXPECT_EQ(a.organization, "org-a");
  EXPECT_EQ(a.customers, 2u);
  EXPECT_EQ(a.suspended, 1u);
  EXPECT_EQ(a.max_percent, "40.00");
  EXPECT_EQ(a.max_customer, "a2");
  EXPECT_EQ(a.max_rule, "api_calls per day");
  ASSERT_EQ(a.meters.size(), 1u);
  EXPECT_EQ(a.meters[0].meter, "api_calls");
  EXPECT_EQ(a.meters[0].value, "43");  // the organization's total, as organization_usage says
  EXPECT_EQ(a.meters[0].value, e->organization_usage("org-a", 0, 0, "")->meters[0].value);

  auto second = e->organization_summaries(1, 1);
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->total, 2u);
  ASSERT_EQ(second->organizations.size(), 1u);
  EXPECT_EQ(second->organizations[0].organization, "org-a");
  EXPECT_TRUE(e->organization_summaries(5, 10)->organizations.empty());
  EXPECT_EQ(e->organization_summaries(0, 0).error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->organization_summaries(0, 101).error().code(), StatusCode::kInvalidArgument);
}

TEST_F(AuditTest, OrganizationsSortByTheirHighestPercentTiesByIdWithoutALimitLast) {
  auto e = open_engine(std::string(kConfig) + R"(
[[plans]]
key = "free"
limits = [{ meter = "api_calls", period = "day", amount = -1 }]
)");
  ASSERT_NE(e, nullptr);
  auto add = [&](const char* id, const char* org, const char* plan, int calls) {
    Customer c;
    c.id = id;
    c.organization = org;
    c.plan = plan;
    ASSERT_TRUE(e->create_customer(c).has_value());
    std::string body = "[";
    for (int i = 0; i < calls; ++i) {
      body += std::string(i ? "," : "") + R"({"id":")" + id + std::to_string(i) +
              R"(","customer":")" + id + R"(","type":"api_call","time":"2025-01-20T11:00:00Z"})";
    }
    auto r = e->ingest_json(body + "]");
    ASSERT_TRUE(r.has_value()) << r.error().message();
  };
  add("c1", "org-c", "basic", 5);
  add("d1", "org-d", "basic", 5);
  add("e1", "org-e", "free", 3);
  add("f1", "org-f", "free", 9);
  add("f2", "org-f", "basic", 2);
  add("g1", "org-g", "basic", 7);
  add("g2", "org-g", "basic", 7);
  e->flush();
  auto page = e->organization_summaries(0, 100);
  ASSERT_TRUE(page.has_value()) << page.error().message();
  EXPECT_EQ(page->total, 5u);
  std::vector<std::string> rows;
  for (const auto& o : page->organizations) {
    rows.push_back(o.organization + " " + o.max_percent + " " + o.max_customer + " " + o.max_rule +
                   " " + std::to_string(o.customers));
  }
  EXPECT_EQ(rows, (std::vector<std::string>{"org-g 70.00 g1 api_calls per day 2",
                                            "org-c 50.00 c1 api_calls per day 1",
                                            "org-d 50.00 d1 api_calls per day 1",
                                            "org-f 20.00 f2 api_calls per day 2", "org-e    1"}));
  for (const auto& o : page->organizations) {
    auto usage = e->organization_usage(o.organization, 0, 0, "");
    ASSERT_TRUE(usage.has_value());
    ASSERT_EQ(o.meters.size(), usage->meters.size()) << o.organization;
    for (std::size_t i = 0; i < o.meters.size(); ++i) {
      EXPECT_EQ(o.meters[i].value, usage->meters[i].value) << o.organization;
    }
  }
  EXPECT_EQ(page->organizations[3].meters.at(0).value, "11");
  EXPECT_EQ(e->organization_summaries(0, 0).error().message(), "limit must be 1..100");
}

}  // namespace
}  // namespace tally
