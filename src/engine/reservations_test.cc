// Engine tests of committing reservations (reservations.cc) on the in-memory store: the answer
// of a commit in full (over the limit: recorded and flagged as overage; of 0: nothing recorded),
// a gauge's new value, and the refusals' messages, after which the reservation stays open.
#include <string>

#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

#include "core/time.h"

namespace tally {
namespace {

constexpr const char* kConfig = R"(
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"

[[meters]]
key = "patients"
event_type = "patients_gauge"
aggregation = "latest"
value = "$.count"

[[plans]]
key = "basic"
limits = [
  { meter = "api_calls", period = "day", amount = 1000 },
  { meter = "tokens", period = "month", amount = 5000 },
  { meter = "patients", period = "lifetime", amount = 500 },
]
)";

CheckRequest req(const std::string& customer, const std::string& meter, const std::string& amount,
                 Consume consume = Consume::kYes) {
  CheckRequest r;
  r.customer = customer;
  r.meter = meter;
  r.amount = amount;
  r.consume = consume;
  return r;
}

class ReservationsTest : public ::testing::Test {
 protected:
  std::unique_ptr<Engine> open_memory() {
    EngineOptions o;
    o.in_memory = true;
    o.config_toml = kConfig;
    o.clock = &clock_;
    auto e = Engine::open(o);
    EXPECT_TRUE(e.has_value()) << e.error().message();
    return e ? std::move(*e) : nullptr;
  }

  static void add_customer(Engine& e, const std::string& id, const std::string& plan) {
    Customer c;
    c.id = id;
    c.plan = plan;
    auto r = e.create_customer(c);
    ASSERT_TRUE(r.has_value()) << r.error().message();
  }

  static CheckResult check(Engine& e, const CheckRequest& r) {
    auto out = e.check(r);
    EXPECT_TRUE(out.has_value()) << out.error().message();
    return out ? *out : CheckResult{};
  }

  // The meter's total for the customer over all time, or "none".
  static std::string total(Engine& e, const std::string& meter, const std::string& customer) {
    e.flush();
    MeterQuery q;
    q.meter = meter;
    q.customer = customer;
    q.from_us = 0;
    q.to_us = *core::parse_rfc3339("2030-01-01T00:00:00Z");
    auto r = e.query(q);
    EXPECT_TRUE(r.has_value()) << r.error().message();
    return !r || r->rows.empty() ? "none" : r->rows[0].value;
  }

  FakeClock clock_{*core::parse_rfc3339("2025-01-20T12:00:00Z")};
};

TEST_F(ReservationsTest, ReservationCommitAnswersInFullAndNamesItsRefusals) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");  // api_calls: 1000 a day
  CheckResult held = check(*e, req("acme", "api_calls", "900", Consume::kReserve));
  ASSERT_TRUE(held.allowed);
  ASSERT_TRUE(check(*e, req("acme", "api_calls", "50")).allowed);
  // More than the hold and than the limit: recorded all the same, and flagged as overage.
  auto committed = e->commit_reservation(held.reservation_id, "1000");
  ASSERT_TRUE(committed.has_value()) << committed.error().message();
  EXPECT_TRUE(committed->allowed);
  EXPECT_TRUE(committed->overage);
  EXPECT_EQ(committed->meter, "api_calls");
  EXPECT_EQ(committed->plan, "basic");
  EXPECT_EQ(committed->reservation_id, held.reservation_id);
  EXPECT_EQ(committed->amount.text(), "1000");
  EXPECT_EQ(committed->rule.used.text(), "1050");
  EXPECT_EQ(committed->rule.limit.text(), "1000");
  EXPECT_EQ(total(*e, "api_calls", "acme"), "1050");
  EXPECT_EQ(e->commit_reservation(held.reservation_id, "").error().message(),
            "reservation '" + held.reservation_id + "' does not exist or has expired");

  // A commit of 0 records nothing and answers no limits.
  CheckResult none = check(*e, req("acme", "tokens", "10", Consume::kReserve));
  auto zero = e->commit_reservation(none.reservation_id, "0");
  ASSERT_TRUE(zero.has_value()) << zero.error().message();
  EXPECT_TRUE(zero->allowed);
  EXPECT_FALSE(zero->overage);
  EXPECT_EQ(zero->meter, "tokens");
  EXPECT_EQ(zero->plan, "basic");
  EXPECT_TRUE(zero->limits.empty());
  EXPECT_EQ(total(*e, "tokens", "acme"), "none");

  add_customer(*e, "globex", "basic");
  CheckResult open = check(*e, req("globex", "api_calls", "1", Consume::kReserve));
  ASSERT_TRUE(open.allowed);
  for (const char* bad : {"-1", "x", "1e", "1e40"}) {
    auto r = e->commit_reservation(open.reservation_id, bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().message(), "amount must be a number >= 0") << bad;
  }
  for (const char* bad : {"1.5", "10001"}) {
    auto r = e->commit_reservation(open.reservation_id, bad);
    ASSERT_FALSE(r.has_value()) << bad;
    EXPECT_EQ(r.error().message(), "this meter counts events: amount must be a whole number")
        << bad;
  }
  EXPECT_TRUE(e->commit_reservation(open.reservation_id, "1").has_value()) << "still open";
}

TEST_F(ReservationsTest, AGaugeReservationCommitsTheGaugesNewValue) {
  auto e = open_memory();
  add_customer(*e, "acme", "basic");  // patients: 500, lifetime
  ASSERT_TRUE(check(*e, req("acme", "patients", "100")).allowed);
  CheckResult held = check(*e, req("acme", "patients", "50", Consume::kReserve));
  ASSERT_TRUE(held.allowed);
  auto committed = e->commit_reservation(held.reservation_id, "30");
  ASSERT_TRUE(committed.has_value()) << committed.error().message();
  EXPECT_EQ(committed->rule.used.text(), "130");
  EXPECT_EQ(total(*e, "patients", "acme"), "130");
}

}  // namespace
}  // namespace tally
