// Wallets in the engine, on a fake clock: burn order and expiry, graduated prices counted per
// billing period (also across a restart), the ledger chain, reservation holds in the ledger.
// (Price versions and verify catching an altered one: prices_test.cc.)
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

#include "core/time.h"
#include "engine/engine_impl.h"
#include "engine/engine_test_util.h"

namespace tally {
namespace {

constexpr const char* kConfig = R"(
[credits]
per_currency_unit = 100

[[meters]]
key = "calls"
event_type = "call"
aggregation = "count"

[[meters]]
key = "gb"
event_type = "storage"
aggregation = "sum"
value = "$.gb"

[[prices]]
meter = "calls"
unit_price = "0.01"   # 1 credit per call

[[prices]]
meter = "gb"
model = "graduated"
tiers = [{ up_to = 10, unit_price = "1" }, { unit_price = "0.5" }]
)";

TimeUs at(const char* rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

constexpr const char* kStart = "2025-03-10T12:00:00Z";

class WalletTest : public EngineDirTest {
 protected:
  WalletTest() : EngineDirTest("tally-wallet-", at(kStart)) {}

  std::unique_ptr<Engine> open(const std::string& config = kConfig) { return open_engine(config); }

  static void credit(Engine& e, const std::string& customer, const std::string& type,
                     const std::string& amount, TimeUs expires = 0, std::int64_t priority = -1) {
    WalletTransactionRequest r;
    r.type = parse_ledger_type(type).value();
    r.amount = amount;
    r.expires_at_us = expires;
    r.priority = priority;
    auto t = e.wallet_transaction(customer, r);
    ASSERT_TRUE(t.has_value()) << t.error().message();
  }

  static void ingest(Engine& e, const std::string& body) {
    auto r = e.ingest_json(body);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    EXPECT_EQ(r->rejected, 0u);
  }

  static std::vector<LedgerTransaction> ledger(Engine& e, const std::string& customer) {
    LedgerQuery q;
    q.customer = customer;
    q.limit = 1000;
    auto p = e.wallet_transactions(q);
    EXPECT_TRUE(p.has_value());
    return p ? p->transactions : std::vector<LedgerTransaction>{};
  }

  static void expect_verified(Engine& e) {
    e.flush();
    auto v = e.verify();
    ASSERT_TRUE(v.has_value()) << v.error().message();
    EXPECT_TRUE(v->ok()) << v->differences.front();
  }
};

TEST_F(WalletTest, ExpiringGrantsBurnFirstAndExpireWithAnExpiryTransaction) {
  auto e = open();
  Customer c;
  c.id = "acme";
  ASSERT_TRUE(e->create_customer(c).has_value());
  credit(*e, "acme", "top_up", "10");
  credit(*e, "acme", "grant", "5", at("2025-03-20T00:00:00Z"), 50);  // burns after priority 0
  credit(*e, "acme", "grant", "3", at("2025-03-15T00:00:00Z"), 50);  // same priority, sooner
  credit(*e, "acme", "grant", "2");                                  // priority 0: first
  ingest(*e, R"({"events":[{"id":"a","customer":"acme","type":"call"},)"
             R"({"id":"b","customer":"acme","type":"call"},)"
             R"({"id":"c","customer":"acme","type":"call"},)"
             R"({"id":"d","customer":"acme","type":"call"}]})");
  auto w = e->wallet("acme");
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->balance, "16");
  // 4 credits: the priority-0 grant (2), then the sooner-expiring grant (2 of 3).
  ASSERT_EQ(w->grants.size(), 3u);
  EXPECT_EQ(w->grants[0].remaining, "1");  // expires 03-15
  EXPECT_EQ(w->grants[1].remaining, "5");  // expires 03-20
  EXPECT_EQ(w->grants[2].remaining, "10");
  // Past the first expiry, the next burn first expires what is left of that grant.
  clock_.set_us(at("2025-03-16T00:00:00Z"));
  ingest(*e, R"({"id":"e","customer":"acme","type":"call"})");
  auto txns = ledger(*e, "acme");
  ASSERT_GE(txns.size(), 2u);
  EXPECT_EQ(txns[txns.size() - 2].type, LedgerType::kExpiry);
  EXPECT_EQ(txns[txns.size() - 2].amount, "-1");
  EXPECT_EQ(txns.back().type, LedgerType::kBurn);
  EXPECT_EQ(e->wallet("acme")->balance, "14");
  // Each balance_before is the previous balance_after.
  std::string previous = "0";
  for (const auto& t : txns) {
    EXPECT_EQ(t.balance_before, previous) << t.id;
    previous = t.balance_after;
  }
  expect_verified(*e);
}

TEST_F(WalletTest, AtomicTransactionsAreAllOrNoneAndOpenAWalletOnce) {
  auto e = open();
  Customer c;
  c.id = "acme";
  ASSERT_TRUE(e->create_customer(c).has_value());
  WalletTransactionRequest paid;
  paid.type = LedgerType::kTopUp;
  paid.amount = "10";
  WalletTransactionRequest bad;
  bad.type = LedgerType::kGrant;
  bad.amount = "-1";
  // The second is invalid: neither is written.
  auto r = e->wallet_transactions_atomic("acme", {paid, bad}, true);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->wallet("acme")->transactions, 0u);
  EXPECT_EQ(e->wallet("acme")->balance, "0");
  WalletTransactionRequest free;
  free.type = LedgerType::kGrant;
  free.amount = "2.5";
  auto ok = e->wallet_transactions_atomic("acme", {paid, free}, true);
  ASSERT_TRUE(ok.has_value()) << ok.error().message();
  ASSERT_EQ(ok->size(), 2u);
  EXPECT_EQ((*ok)[0].type, LedgerType::kTopUp);
  EXPECT_EQ((*ok)[0].balance_after, "10");
  EXPECT_EQ((*ok)[1].type, LedgerType::kGrant);
  EXPECT_EQ((*ok)[1].balance_before, "10");
  EXPECT_EQ((*ok)[1].balance_after, "12.5");
  EXPECT_EQ((*ok)[1].customer, "acme");
  // Opened once: a second opening is refused; plain atomic transactions still go through.
  auto twice = e->wallet_transactions_atomic("acme", {free}, true);
  ASSERT_FALSE(twice.has_value());
  EXPECT_EQ(twice.error().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(e->wallet("acme")->balance, "12.5");
  ASSERT_TRUE(e->wallet_transactions_atomic("acme", {free}).has_value());
  EXPECT_EQ(e->wallet("acme")->balance, "15");
  EXPECT_EQ(e->wallet_transactions_atomic("nobody", {free}).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->wallet_transactions_atomic("acme", {}).error().code(), StatusCode::kInvalidArgument);
  // The ledger chains with no gap left by the refused requests.
  auto txns = ledger(*e, "acme");
  ASSERT_EQ(txns.size(), 3u);
  EXPECT_EQ(txns[0].id, "txn_1");
  EXPECT_EQ(txns[2].id, "txn_3");
  expect_verified(*e);
}

TEST_F(WalletTest, TheBillingPeriodRunsMonthlyFromTheAnchor) {
  auto e = open();
  Customer c;
  c.id = "acme";
  c.timezone = "Europe/Paris";
  c.billing_anchor_us = at("2025-01-31T15:00:00Z");
  ASSERT_TRUE(e->create_customer(c).has_value());
  auto p = e->billing_period("acme", at("2025-03-10T12:00:00Z"));
  ASSERT_TRUE(p.has_value()) << p.error().message();
  // From February's last day (the 31st clamped) to March 31st, midnight in Paris.
  EXPECT_EQ(p->start_us, at("2025-02-27T23:00:00Z"));
  EXPECT_EQ(p->end_us, at("2025-03-30T22:00:00Z"));
  Customer plain;
  plain.id = "plain";  // no anchor: its creation (2025-03-10, UTC)
  ASSERT_TRUE(e->create_customer(plain).has_value());
  auto q = e->billing_period("plain", at("2025-04-01T00:00:00Z"));
  ASSERT_TRUE(q.has_value());
  EXPECT_EQ(q->start_us, at("2025-03-10T00:00:00Z"));
  EXPECT_EQ(q->end_us, at("2025-04-10T00:00:00Z"));
  EXPECT_EQ(e->billing_period("nobody", 0).error().code(), StatusCode::kNotFound);
}

TEST_F(WalletTest, GraduatedPricesCountTheBillingPeriodAlsoAcrossARestart) {
  {
    auto e = open();
    Customer c;
    c.id = "acme";
    c.billing_anchor_us = at("2025-01-05T00:00:00Z");
    ASSERT_TRUE(e->create_customer(c).has_value());
    // 8 GB at 1 USD = 800 credits.
    ingest(
        *e,
        R"({"id":"s1","customer":"acme","type":"storage","time":"2025-03-06T00:00:00Z","properties":{"gb":8}})");
  }
  auto e = open();
  // 4 more GB in the same period (from 03-05): 2 at 1, 2 at 0.5 = 3 USD = 300 credits.
  ingest(
      *e,
      R"({"id":"s2","customer":"acme","type":"storage","time":"2025-03-07T00:00:00Z","properties":{"gb":4}})");
  // A new billing period (from 04-05) starts the tiers again: 1 GB at 1 USD.
  clock_.set_us(at("2025-04-06T00:00:00Z"));
  ingest(
      *e,
      R"({"id":"s3","customer":"acme","type":"storage","time":"2025-04-05T10:00:00Z","properties":{"gb":1}})");
  EventListQuery q;
  q.customer = "acme";
  auto page = e->list_events(q);
  ASSERT_TRUE(page.has_value());
  std::vector<std::string> credits;
  for (const auto& ev : page->events) {
    credits.push_back(ev.credits);
  }
  EXPECT_EQ(credits, (std::vector<std::string>{"800", "300", "100"}));
  EXPECT_EQ(e->wallet("acme")->balance, "-1200");
  EXPECT_TRUE(e->wallet("acme")->exhausted);
  expect_verified(*e);
}

TEST_F(WalletTest, DuplicatesNeverBurnTwice) {
  auto e = open();
  for (int i = 0; i < 3; ++i) {
    ingest(*e, R"({"id":"same","customer":"acme","type":"call"})");
  }
  EXPECT_EQ(e->wallet("acme")->balance, "-1");
  EXPECT_EQ(ledger(*e, "acme").size(), 1u);
  expect_verified(*e);
}

}  // namespace
}  // namespace tally

namespace tally {
namespace {

// ---- hardening (issue #16, defect 1) -----------------------------------------------------------

constexpr const char* kNegativeConfig = R"(
[credits]
per_currency_unit = 1000

[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.input_tokens"

[[meters]]
key = "corrections"
event_type = "correction"
aggregation = "sum"
value = "$.units"
allow_negative = true

[[meters]]
key = "seats"
event_type = "seats"
aggregation = "sum"
value = "$.n"

[[prices]]
meter = "tokens_in"
unit_price = "0.00001"

[[prices]]
meter = "corrections"
unit_price = "0.01"

[[prices]]
meter = "seats"
model = "volume"
tiers = [{ up_to = 10, unit_price = "2" }, { unit_price = "1" }]

[[plans]]
key = "payg"
prepaid = true
limits = [{ meter = "tokens_in", period = "day", amount = 1000 }]
)";

TEST_F(WalletTest, NegativeUsageNeitherMintsCreditsNorLowersALimit) {
  auto e = open(kNegativeConfig);
  Customer c;
  c.id = "acme";
  c.plan = "payg";
  ASSERT_TRUE(e->create_customer(c).has_value());
  credit(*e, "acme", "top_up", "100");
  // The issue's reproduction, as a customer key sends it.
  IngestOptions as_customer;
  as_customer.restrict_customer = "acme";
  auto r = e->ingest_json(
      R"({"id":"neg-1","type":"TOKEN_USAGE","properties":{"provider":"OPENAI","model":"gpt-4","input_tokens":-1000000000}})",
      as_customer);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->accepted, 0u);
  ASSERT_EQ(r->errors.size(), 1u);
  EXPECT_EQ(r->errors[0].code, "NEGATIVE_VALUE");
  // Also from an admin: the meter does not allow negative values.
  IngestOptions as_admin;
  as_admin.negative_corrections = true;
  r = e->ingest_json(
      R"({"id":"neg-2","customer":"acme","type":"TOKEN_USAGE","properties":{"input_tokens":-5}})",
      as_admin);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->accepted, 0u);
  e->flush();
  EXPECT_EQ(e->wallet("acme")->balance, "100");
  CheckRequest one;
  one.customer = "acme";
  one.meter = "tokens_in";
  one.amount = "1001";
  one.consume = Consume::kNo;
  auto denied = e->check(one);
  ASSERT_TRUE(denied.has_value());
  EXPECT_FALSE(denied->allowed) << "the day limit still counts from zero";
  for (const auto& t : ledger(*e, "acme")) {
    EXPECT_NE(t.type, LedgerType::kBurn) << "nothing was burned";
  }
  expect_verified(*e);
}

TEST_F(WalletTest, CorrectionsNeedAnAdminAndRefundInsteadOfBurning) {
  auto e = open(kNegativeConfig);
  Customer c;
  c.id = "acme";
  ASSERT_TRUE(e->create_customer(c).has_value());
  credit(*e, "acme", "top_up", "100");
  ingest(*e, R"({"id":"u1","customer":"acme","type":"correction","properties":{"units":5}})");
  EXPECT_EQ(e->wallet("acme")->balance, "50");  // 5 x 0.01 USD x 1000 credits
  IngestOptions as_customer;
  as_customer.restrict_customer = "acme";
  auto refused = e->ingest_json(R"({"id":"fix-1","type":"correction","properties":{"units":-2}})",
                                as_customer);
  ASSERT_TRUE(refused.has_value());
  ASSERT_EQ(refused->errors.size(), 1u);
  EXPECT_EQ(refused->errors[0].code, "NEGATIVE_VALUE");
  IngestOptions as_admin;
  as_admin.negative_corrections = true;
  auto fixed = e->ingest_json(
      R"({"id":"fix-1","customer":"acme","type":"correction","properties":{"units":-2}})",
      as_admin);
  ASSERT_TRUE(fixed.has_value());
  EXPECT_EQ(fixed->accepted, 1u);
  e->flush();
  EXPECT_EQ(e->wallet("acme")->balance, "70");
  const auto txns = ledger(*e, "acme");
  ASSERT_FALSE(txns.empty());
  EXPECT_EQ(txns.back().type, LedgerType::kRefund) << "a burn never adds credits";
  EXPECT_EQ(txns.back().amount, "20");
  EXPECT_EQ(txns.back().event_id, "fix-1");
  for (const auto& t : txns) {
    if (t.type == LedgerType::kBurn) {
      EXPECT_EQ(t.amount.front(), '-') << t.id;
    }
  }
  expect_verified(*e);
}

TEST_F(WalletTest, AVolumePriceFallingIsARefundNotANegativeBurn) {
  auto e = open(kNegativeConfig);
  Customer c;
  c.id = "acme";
  ASSERT_TRUE(e->create_customer(c).has_value());
  credit(*e, "acme", "top_up", "100000");
  // 10 seats at 2 USD = 20 USD; an 11th moves all 11 to 1 USD: the period's price falls to 11.
  ingest(*e, R"({"id":"s1","customer":"acme","type":"seats","properties":{"n":10}})");
  ingest(*e, R"({"id":"s2","customer":"acme","type":"seats","properties":{"n":1}})");
  const auto txns = ledger(*e, "acme");
  ASSERT_GE(txns.size(), 3u);
  EXPECT_EQ(txns[txns.size() - 2].type, LedgerType::kBurn);
  EXPECT_EQ(txns[txns.size() - 2].amount, "-20000");
  EXPECT_EQ(txns.back().type, LedgerType::kRefund);
  EXPECT_EQ(txns.back().amount, "9000");
  EXPECT_EQ(txns.back().event_id, "s2");
  EXPECT_EQ(e->wallet("acme")->balance, "89000");
  expect_verified(*e);
}

// ---- reservation holds in the ledger (issue #17) -------------------------------------------

CheckRequest reserve(const std::string& customer, const std::string& amount, std::int64_t ttl = 0) {
  CheckRequest r;
  r.customer = customer;
  r.meter = "tokens_in";
  r.amount = amount;
  r.consume = Consume::kReserve;
  r.reservation_ttl_seconds = ttl;
  return r;
}

TEST_F(WalletTest, AHoldIsALedgerEntryThatSurvivesARestartAndItsCommitBurnsAndReleasesTheRest) {
  auto e = open(kNegativeConfig);
  Customer c;
  c.id = "acme";
  c.plan = "payg";
  ASSERT_TRUE(e->create_customer(c).has_value());
  credit(*e, "acme", "top_up", "100");
  // 800 tokens at 0.00001 USD x 1000 credits: 8 credits held.
  auto held = e->check(reserve("acme", "800"));
  ASSERT_TRUE(held.has_value()) << held.error().message();
  ASSERT_TRUE(held->allowed);
  const std::string id = held->reservation_id;
  auto txns = ledger(*e, "acme");
  ASSERT_EQ(txns.size(), 2u);
  EXPECT_EQ(txns[1].type, LedgerType::kHold);
  EXPECT_EQ(txns[1].amount, "0") << "a hold leaves the balance";
  EXPECT_EQ(txns[1].held, "8");
  EXPECT_EQ(txns[1].reservation_id, id);
  auto w = e->wallet("acme");
  EXPECT_EQ(w->balance, "100");
  EXPECT_EQ(w->held, "8");
  EXPECT_EQ(w->available, "92");
  expect_verified(*e);

  // A restart keeps the hold: the wallet, the quota and the reservation itself.
  e.reset();
  e = open(kNegativeConfig);
  w = e->wallet("acme");
  EXPECT_EQ(w->balance, "100");
  EXPECT_EQ(w->held, "8");
  EXPECT_EQ(w->available, "92");
  CheckRequest rest = reserve("acme", "201");
  rest.consume = Consume::kNo;
  EXPECT_FALSE(e->check(rest)->allowed) << "800 of the 1000 tokens a day are still held";
  rest.amount = "200";
  EXPECT_TRUE(e->check(rest)->allowed);
  expect_verified(*e);

  // The commit burns the actual 300 tokens (3 credits) and releases the other 5.
  auto committed = e->commit_reservation(id, "300");
  ASSERT_TRUE(committed.has_value()) << committed.error().message();
  txns = ledger(*e, "acme");
  ASSERT_EQ(txns.size(), 4u);
  EXPECT_EQ(txns[2].type, LedgerType::kBurn);
  EXPECT_EQ(txns[2].amount, "-3");
  EXPECT_EQ(txns[2].reservation_id, id);
  EXPECT_EQ(txns[3].type, LedgerType::kRelease);
  EXPECT_EQ(txns[3].held, "5");
  EXPECT_EQ(txns[3].amount, "0");
  w = e->wallet("acme");
  EXPECT_EQ(w->balance, "97");
  EXPECT_EQ(w->held, "0");
  EXPECT_EQ(w->available, "97");
  EXPECT_FALSE(e->commit_reservation(id, "300").has_value()) << "committed once";
  expect_verified(*e);
  e.reset();
  e = open(kNegativeConfig);
  EXPECT_EQ(e->commit_reservation(id, "300").error().code(), StatusCode::kNotFound)
      << "a committed reservation stays closed after a restart";
  EXPECT_EQ(e->wallet("acme")->available, "97");
  expect_verified(*e);
}

TEST_F(WalletTest, ReleaseAndExpiryReleaseTheWholeHoldAlsoAcrossARestart) {
  auto e = open(kNegativeConfig);
  Customer c;
  c.id = "acme";
  c.plan = "payg";
  ASSERT_TRUE(e->create_customer(c).has_value());
  credit(*e, "acme", "top_up", "100");
  auto a = e->check(reserve("acme", "500", 60));
  auto b = e->check(reserve("acme", "200", 600));
  ASSERT_TRUE(a.has_value() && a->allowed && b.has_value() && b->allowed);
  EXPECT_EQ(e->wallet("acme")->held, "7");
  ASSERT_TRUE(e->release_reservation(b->reservation_id).ok());
  auto txns = ledger(*e, "acme");
  ASSERT_EQ(txns.back().type, LedgerType::kRelease);
  EXPECT_EQ(txns.back().held, "2");
  EXPECT_EQ(e->wallet("acme")->held, "5");
  // Past its time, the first expires; a restart in between changes nothing.
  e.reset();
  clock_.set_us(at(kStart) + 61 * core::kUsPerSecond);
  e = open(kNegativeConfig);
  EXPECT_EQ(e->release_reservation(a->reservation_id).code(), StatusCode::kNotFound);
  ingest(*e, R"({"id":"later","customer":"acme","type":"seats","properties":{"n":0}})");
  txns = ledger(*e, "acme");
  ASSERT_EQ(txns.back().type, LedgerType::kRelease) << to_string(txns.back().type);
  EXPECT_EQ(txns.back().held, "5");
  EXPECT_EQ(txns.back().reservation_id, a->reservation_id);
  auto w = e->wallet("acme");
  EXPECT_EQ(w->balance, "100");
  EXPECT_EQ(w->held, "0");
  EXPECT_EQ(w->available, "100");
  expect_verified(*e);
}

// The check a commit asserts before it writes a customer's transactions, and verify reports.
TEST(LedgerChainTest, NamesTheFirstTransactionThatBreaksTheChainOfBalances) {
  auto txn = [](std::uint64_t seq, const char* before, const char* amount, const char* after) {
    engine::LedgerRecord t;
    t.seq = seq;
    t.before = core::parse_decimal(before).value();
    t.amount = core::parse_decimal(amount).value();
    t.after = core::parse_decimal(after).value();
    return t;
  };
  const engine::LedgerRecord grant = txn(7, "10", "5.5", "15.5");
  const engine::LedgerRecord burn = txn(8, "15.5", "-2", "13.5");
  const core::Decimal ten = core::parse_decimal("10").value();
  EXPECT_EQ(engine::ledger_chain_break(ten, {&grant, &burn}), "");
  EXPECT_EQ(engine::ledger_chain_break(ten, {}), "");
  // Started again from zero instead of the stored balance.
  EXPECT_EQ(engine::ledger_chain_break(core::Decimal{}, {&grant, &burn}),
            "txn_7: balance_before 10 differs from the previous balance_after 0");
  // A transaction that does not follow the one before it.
  const engine::LedgerRecord gap = txn(9, "13", "-1", "12");
  EXPECT_EQ(engine::ledger_chain_break(ten, {&grant, &burn, &gap}),
            "txn_9: balance_before 13 differs from the previous balance_after 13.5");
  // One that does not add up.
  const engine::LedgerRecord wrong = txn(9, "13.5", "-1", "12");
  EXPECT_EQ(engine::ledger_chain_break(ten, {&grant, &burn, &wrong}),
            "txn_9: balance_before + amount != balance_after");
}

}  // namespace
}  // namespace tally
