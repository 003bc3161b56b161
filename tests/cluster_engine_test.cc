// tally::Engine in the scale-out mode: two engines (two nodes) in this process over one real
// PostgreSQL 15 and one real 3-primary + 3-replica Redis Cluster, started once for the binary
// (tests/support/pg_server.h, redis_cluster.h); each test in a database of its own and with
// customers of its own. The HTTP API over the same engine is tested end to end by
// cluster_e2e_test.cc.
#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "support/pg_server.h"
#include "support/process.h"
#include "support/redis_cluster.h"
#include "tally/clock.h"
#include "tally/engine.h"

namespace tally {
namespace {

using testing::PgServer;
using testing::RedisServers;

// 2026-12-07T10:00:00Z
constexpr TimeUs kNow = 1'796'637'600'000'000;

constexpr const char* kMeters = R"(
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[meters]]
key = "tokens"
event_type = "completion"
aggregation = "sum"
value = "tokens"

[[plans]]
key = "free"
features = ["chat"]
limits = [
  { meter = "api_calls", period = "day", amount = 50 },
  { meter = "api_calls", period = "minute", amount = 1000 },
  { meter = "tokens", period = "month", amount = 1000 },
]

[enforcement]
default_plan = "free"
)";

class ClusterEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = testing::pg_programs_missing();
    if (skip_reason_.empty()) {
      skip_reason_ = testing::redis_programs_missing();
    }
    if (!skip_reason_.empty()) {
      return;
    }
    auto pg = PgServer::start();
    if (!pg) {
      start_error_ = pg.error().to_string();
      return;
    }
    pg_ = std::move(*pg);
    auto second = PgServer::start();  // a second PostgreSQL, for the sharding test
    if (!second) {
      start_error_ = second.error().to_string();
      return;
    }
    pg2_ = std::move(*second);
    auto redis = RedisServers::start_cluster();
    if (!redis) {
      start_error_ = redis.error().to_string();
      return;
    }
    redis_ = std::move(*redis);
  }

  static void TearDownTestSuite() {
    redis_.reset();
    pg2_.reset();
    pg_.reset();
  }

  void SetUp() override {
    if (!skip_reason_.empty()) {
      GTEST_SKIP() << skip_reason_;
    }
    ASSERT_NE(pg_, nullptr) << start_error_;
    ASSERT_NE(redis_, nullptr) << start_error_;
    db_ = "e_" + std::to_string(++databases_);
    ASSERT_TRUE(pg_->create_database(db_).ok());
  }

  // The configuration of a node: the meters, and [cluster] naming this test's database.
  // With `second_shard`, a second PostgreSQL holds this test's database too: two shards.
  std::string config(const std::string& extra = "") const {
    std::string seeds;
    for (const auto& e : redis_->endpoints()) {
      seeds += (seeds.empty() ? "\"" : ", \"") + e + "\"";
    }
    std::string shards = "\"" + pg_->conninfo(db_) + "\"";
    if (two_shards_) {
      shards += ", \"" + pg2_->conninfo(db_) + "\"";
    }
    return std::string(kMeters) + extra + "\n[cluster]\npostgres = [" + shards + "]\nredis = [" +
           seeds + "]\n";
  }

  Result<std::unique_ptr<Engine>> open(const std::string& toml) {
    EngineOptions o;
    o.config_toml = toml;
    o.clock = &clock_;
    return Engine::open(o);
  }

  // A node on a migrated database.
  std::unique_ptr<Engine> node() {
    if (!migrated_) {
      migrate();
    }
    auto e = open(config());
    EXPECT_TRUE(e.has_value()) << e.error().to_string();
    return e ? std::move(*e) : nullptr;
  }

  // `tally migrate` on this test's database.
  void migrate() {
    const std::string dir = testing::make_temp_dir("tally-cluster-engine-");
    ASSERT_FALSE(dir.empty());
    std::ofstream(dir + "/m.toml") << config();
    testing::ProcessOptions o;
    o.executable = TALLY_BINARY;
    o.args = {"migrate", "--config", dir + "/m.toml"};
    auto p = testing::ChildProcess::start(o);
    ASSERT_TRUE(p.has_value()) << p.error().to_string();
    EXPECT_EQ(p->wait_exit(60'000), 0);
    testing::remove_tree(dir);
    migrated_ = true;
  }

  static std::string events(const std::string& customer, int from, int n,
                            const std::string& type = "api_call") {
    std::string out = "[";
    for (int i = from; i < from + n; ++i) {
      out += (i == from ? "" : ",") + std::string(R"({"id":"e)") + std::to_string(i) +
             R"(","customer_id":")" + customer + R"(","type":")" + type +
             R"(","timestamp":"2026-12-07T09:30:00Z","properties":{"tokens":3}})";
    }
    return out + "]";
  }

  static std::string value_of(Engine& e, const std::string& meter, const std::string& customer) {
    MeterQuery q;
    q.meter = meter;
    q.customer = customer;
    q.from_us = kNow - 86'400'000'000LL;
    q.to_us = kNow + 3'600'000'000LL;
    auto r = e.query(q);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r && !r->rows.empty() ? r->rows[0].value : std::string("none");
  }

  static CheckRequest check_of(const std::string& customer, const std::string& meter = "api_calls",
                               const std::string& amount = "1") {
    CheckRequest r;
    r.customer = customer;
    r.meter = meter;
    r.amount = amount;
    return r;
  }

  static inline std::string skip_reason_;
  static inline std::string start_error_;
  static inline std::unique_ptr<PgServer> pg_;
  static inline std::unique_ptr<PgServer> pg2_;
  static inline std::unique_ptr<RedisServers> redis_;
  static inline int databases_ = 0;
  FakeClock clock_{kNow};
  std::string db_;
  bool migrated_ = false;
  bool two_shards_ = false;
};

TEST_F(ClusterEngineTest, AnUnmigratedDatabaseIsRefusedNamingTheShard) {
  auto e = open(config());
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.error().message().find("cluster.postgres"), std::string::npos) << e.error().message();
  EXPECT_NE(e.error().message().find("run `tally migrate`"), std::string::npos);
}

TEST_F(ClusterEngineTest, WhatTheModeCannotHonourYetIsRefusedAtOpen) {
  migrate();
  auto per_key = open(std::string(kMeters) + "api_rate_limit_per_minute = 100\n" +
                      config().substr(std::string(kMeters).size()));
  ASSERT_FALSE(per_key.has_value());
  EXPECT_NE(per_key.error().message().find("api_rate_limit_per_minute"), std::string::npos)
      << per_key.error().message();
}

TEST_F(ClusterEngineTest, EventsWrittenOnOneNodeAreCountedOnceAndReadOnTheOther) {
  auto a = node();
  auto b = node();
  ASSERT_TRUE(a && b);
  auto first = a->ingest_json(events("acme", 0, 10));
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  EXPECT_EQ(first->accepted, 10u);
  // The same ids again on the other node, with five new ones: only the new ones count.
  auto again = b->ingest_json(events("acme", 5, 10));
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_EQ(again->accepted, 5u);
  EXPECT_EQ(again->duplicates, 5u);
  EXPECT_EQ(value_of(*a, "api_calls", "acme"), "15");
  EXPECT_EQ(value_of(*b, "api_calls", "acme"), "15");
  // The customer was created on first use, visible from both.
  auto c = b->get_customer("acme");
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  EXPECT_EQ(c->id, "acme");
}

TEST_F(ClusterEngineTest, CustomersSpreadOverTwoShardsAndEachLivesOnOne) {
  ASSERT_TRUE(pg2_->create_database(db_).ok());
  two_shards_ = true;
  auto a = node();
  auto b = node();
  ASSERT_TRUE(a && b);
  std::string body = "[";
  for (int c = 0; c < 20; ++c) {
    for (int i = 0; i < 5; ++i) {
      body += std::string(body.size() > 1 ? "," : "") + R"({"id":"x)" + std::to_string(i) +
              R"(","customer_id":"c)" + std::to_string(c) +
              R"(","type":"api_call","timestamp":"2026-12-07T09:30:00Z"})";
    }
  }
  body += "]";
  auto written = a->ingest_json(body);
  ASSERT_TRUE(written.has_value()) << written.error().to_string();
  EXPECT_EQ(written->accepted, 100u);
  EXPECT_EQ(b->ingest_json(body)->duplicates, 100u);  // deduplicated on each shard
  // Each customer, its events and aggregates live on one shard, and both shards have some.
  auto on = [&](PgServer& server, const std::string& sql) {
    auto r = server.psql(db_, sql);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r ? std::stoi(*r) : -1;
  };
  const int first = on(*pg_, "SELECT count(*) FROM customers");
  const int second = on(*pg2_, "SELECT count(*) FROM customers");
  EXPECT_EQ(first + second, 20);
  EXPECT_GT(first, 0);
  EXPECT_GT(second, 0);
  EXPECT_EQ(on(*pg_, "SELECT count(*) FROM events"), first * 5);
  EXPECT_EQ(on(*pg2_, "SELECT count(*) FROM events"), second * 5);
  EXPECT_EQ(on(*pg_,
               "SELECT count(*) FROM events e WHERE NOT EXISTS (SELECT 1 FROM customers c "
               "WHERE c.id = e.customer_id)"),
            0);
  // Every node reads every customer on its shard; the list merges the shards.
  for (int c = 0; c < 20; ++c) {
    EXPECT_EQ(value_of(*b, "api_calls", "c" + std::to_string(c)), "5") << c;
  }
  EXPECT_EQ(a->list_customers().size(), 20u);
  // Checks count each customer's usage from its own shard: 5 of 50 used.
  auto r = b->check(check_of("c7", "api_calls", "45"));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_TRUE(r->allowed);
  EXPECT_FALSE(a->check(check_of("c7"))->allowed);
}

TEST_F(ClusterEngineTest, TwoNodesTogetherNeverAdmitMoreThanTheLimit) {
  auto a = node();
  auto b = node();
  ASSERT_TRUE(a && b);
  // 20 of the day's 50 were ingested before any check: the counter starts from them.
  ASSERT_EQ(a->ingest_json(events("busy", 0, 20))->accepted, 20u);
  std::atomic<int> allowed{0};
  std::atomic<int> denied{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    Engine* e = t % 2 == 0 ? a.get() : b.get();
    threads.emplace_back([&, e] {
      for (int i = 0; i < 10; ++i) {
        auto r = e->check(check_of("busy"));
        if (!r) {
          ++failed;
        } else if (r->allowed) {
          ++allowed;
        } else {
          ++denied;
          EXPECT_EQ(r->reason, Denial::kLimitExceeded);
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(allowed.load(), 30);
  EXPECT_EQ(denied.load(), 50);
  // The admitted checks' usage is written to PostgreSQL: the day holds exactly 50.
  a->flush();
  b->flush();
  EXPECT_EQ(value_of(*b, "api_calls", "busy"), "50");
  // Ingest after the counter exists adds to it: an event more, and a check that only asks sees
  // 51 used.
  ASSERT_EQ(b->ingest_json(events("busy", 100, 1))->accepted, 1u);
  CheckRequest ask = check_of("busy");
  ask.consume = Consume::kNo;
  auto asked = a->check(ask);
  ASSERT_TRUE(asked.has_value());
  EXPECT_FALSE(asked->allowed);
  ASSERT_TRUE(asked->has_rule);
  EXPECT_EQ(asked->rule.used.text(), "51");
  EXPECT_EQ(asked->message, "Limit of 50 api_calls per day reached: 51 used, 1 requested.");
}

TEST_F(ClusterEngineTest, ACheckWithAnEventIdConsumesOnceOnWhicheverNode) {
  auto a = node();
  auto b = node();
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->ingest_json(events("idem", 0, 1))->accepted, 1u);  // event id "e0"
  CheckRequest r = check_of("idem", "api_calls", "3");
  r.event_id = "req-1";
  // The same request to both nodes at once, several times: it consumes 3, once.
  std::atomic<int> consumed{0};
  std::atomic<int> replayed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    Engine* e = t % 2 == 0 ? a.get() : b.get();
    threads.emplace_back([&, e] {
      auto got = e->check(r);
      ASSERT_TRUE(got.has_value()) << got.error().to_string();
      EXPECT_TRUE(got->allowed);
      ++(got->replayed ? replayed : consumed);
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(consumed.load(), 1);
  EXPECT_EQ(replayed.load(), 5);
  a->flush();
  b->flush();
  EXPECT_EQ(value_of(*a, "api_calls", "idem"), "4");  // the ingested event and the 3
  // An id an ingested event holds is a replay too: nothing consumed.
  CheckRequest again = check_of("idem");
  again.event_id = "e0";
  auto ingested = b->check(again);
  ASSERT_TRUE(ingested.has_value());
  EXPECT_TRUE(ingested->replayed);
  // A denied check leaves its id free: the same id consumes once the amount fits.
  CheckRequest big = check_of("idem", "api_calls", "47");
  big.event_id = "req-2";
  auto denied = a->check(big);
  ASSERT_TRUE(denied.has_value());
  EXPECT_FALSE(denied->allowed);
  big.amount = "46";
  auto fits = b->check(big);
  ASSERT_TRUE(fits.has_value());
  EXPECT_TRUE(fits->allowed);
  EXPECT_FALSE(fits->replayed);
  b->flush();
  EXPECT_EQ(value_of(*a, "api_calls", "idem"), "50");
}

TEST_F(ClusterEngineTest, CountersRedisLostAreRebuiltFromPostgres) {
  auto a = node();
  ASSERT_TRUE(a);
  ASSERT_EQ(a->ingest_json(events("lost", 0, 10))->accepted, 10u);
  int allowed = 0;
  for (int i = 0; i < 20; ++i) {
    auto r = a->check(check_of("lost"));
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    allowed += r->allowed ? 1 : 0;
  }
  EXPECT_EQ(allowed, 20);
  a->flush();  // the checks' usage is in PostgreSQL: 30 of the day's 50
  for (const std::string& endpoint : redis_->endpoints()) {
    const auto port =
        static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.find(':') + 1)));
    // Replicas refuse writes (READONLY): only the primaries' FLUSHALL counts.
    redis_->cli(port, {"FLUSHALL"}).status().ignore_error();
  }
  // The node that had seeded the counter finds it gone and seeds it again from PostgreSQL: 20
  // more, not 50.
  allowed = 0;
  for (int i = 0; i < 40; ++i) {
    auto r = a->check(check_of("lost"));
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    allowed += r->allowed ? 1 : 0;
  }
  EXPECT_EQ(allowed, 20);
  a->flush();
  EXPECT_EQ(value_of(*a, "api_calls", "lost"), "50");
}

TEST_F(ClusterEngineTest, VerifyProvesTheAggregatesAreTheirEventsAndFindsTampering) {
  auto a = node();
  ASSERT_TRUE(a);
  ASSERT_EQ(a->ingest_json(events("v1", 0, 30))->accepted, 30u);
  ASSERT_EQ(a->ingest_json(events("v2", 0, 20, "completion"))->accepted, 20u);
  ASSERT_TRUE(a->check(check_of("v1", "api_calls", "4")).has_value());
  a->flush();
  auto clean = a->verify();
  ASSERT_TRUE(clean.has_value()) << clean.error().to_string();
  EXPECT_TRUE(clean->ok()) << clean->differences.front();
  EXPECT_EQ(clean->events, 51u);     // 50 ingested and the check's usage event
  EXPECT_EQ(clean->aggregates, 6u);  // v1: two minutes and their hours; v2: one of each
  // A count changed behind Tally's back, and an event deleted: both are found.
  ASSERT_TRUE(pg_->psql(db_,
                        "UPDATE aggregates_minute SET count = count + 1 WHERE customer_id = "
                        "'v2'")
                  .has_value());
  ASSERT_TRUE(pg_->psql(db_, "DELETE FROM events WHERE customer_id = 'v1' AND event_id = 'e3'")
                  .has_value());
  auto tampered = a->verify();
  ASSERT_TRUE(tampered.has_value());
  ASSERT_EQ(tampered->differences.size(), 3u);  // v2's minute; v1's minute and hour
  EXPECT_NE(tampered->differences[0].find("cluster.postgres: aggregates_minute"), std::string::npos)
      << tampered->differences[0];
}

TEST_F(ClusterEngineTest, ASumMeterLimitCountsIngestedValuesAndChecksAmounts) {
  auto a = node();
  ASSERT_TRUE(a);
  ASSERT_EQ(a->ingest_json(events("tok", 0, 100, "completion"))->accepted, 100u);  // 300
  auto big = a->check(check_of("tok", "tokens", "701"));
  ASSERT_TRUE(big.has_value()) << big.error().to_string();
  EXPECT_FALSE(big->allowed);
  auto fits = a->check(check_of("tok", "tokens", "700"));
  ASSERT_TRUE(fits.has_value());
  EXPECT_TRUE(fits->allowed);
  ASSERT_TRUE(fits->has_rule);
  EXPECT_EQ(fits->rule.used.text(), "1000");
  EXPECT_EQ(fits->rule.remaining.text(), "0");
  // The month's window, as the embedded mode answers it.
  EXPECT_EQ(fits->rule.window_start_us, 1'796'083'200'000'000);  // 2026-12-01T00:00:00Z
  EXPECT_EQ(fits->rule.reset_us, 1'798'761'600'000'000);         // 2027-01-01T00:00:00Z
  a->flush();
  EXPECT_EQ(value_of(*a, "tokens", "tok"), "1000");
}

TEST_F(ClusterEngineTest, CustomersKeysAndTheirRulesAreSharedByTheNodes) {
  auto a = node();
  auto b = node();
  ASSERT_TRUE(a && b);
  Customer c;
  c.id = "org-member";
  c.timezone = "Mars/Olympus";
  auto bad = a->create_customer(c);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kInvalidArgument);  // the embedded mode's rules
  c.timezone = "Europe/Paris";
  ASSERT_TRUE(a->create_customer(c).has_value());
  auto dup = b->create_customer(c);
  ASSERT_FALSE(dup.has_value());
  EXPECT_EQ(dup.error().code(), StatusCode::kAlreadyExists);

  NewApiKeyRequest kr;
  kr.customer = "org-member";
  auto key = a->create_key(kr);
  ASSERT_TRUE(key.has_value()) << key.error().to_string();
  auto who = b->authenticate(key->secret);
  ASSERT_TRUE(who.has_value()) << who.error().to_string();
  EXPECT_EQ(who->customer, "org-member");
  EXPECT_FALSE(who->admin());
  EXPECT_FALSE(b->authenticate("tk_not-a-key").has_value());

  CustomerPatch suspend;
  suspend.status = CustomerStatus::kSuspended;
  ASSERT_TRUE(b->update_customer("org-member", suspend).has_value());
  // The node that suspended refuses the key at once; a check anywhere is denied.
  auto refused = b->authenticate(key->secret);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kPermissionDenied);
  auto denied = a->check(check_of("org-member"));
  ASSERT_TRUE(denied.has_value());
  EXPECT_EQ(denied->reason, Denial::kCustomerSuspended);

  ASSERT_TRUE(a->revoke_key(key->info.id).ok());
  auto revoked = a->authenticate(key->secret);
  ASSERT_FALSE(revoked.has_value());
  EXPECT_EQ(revoked.error().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(b->list_keys().size(), 1u);
  EXPECT_EQ(b->list_customers().size(), 1u);
}

TEST_F(ClusterEngineTest, WhatTheModeDoesNotDoAnswersNotImplemented) {
  auto a = node();
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->ingest_json(events("acme", 0, 1)).has_value());
  EXPECT_EQ(a->audit_log(10).error().code(), StatusCode::kNotImplemented);
  EXPECT_EQ(a->alerts({}).error().code(), StatusCode::kNotImplemented);
  EXPECT_EQ(a->limits_report("acme").error().code(), StatusCode::kNotImplemented);
  CheckRequest reserve = check_of("acme");
  reserve.consume = Consume::kReserve;
  EXPECT_EQ(a->check(reserve).error().code(), StatusCode::kNotImplemented);
  MeterQuery everyone;
  everyone.meter = "api_calls";
  everyone.from_us = kNow - 3'600'000'000LL;
  everyone.to_us = kNow;
  auto all = a->query(everyone);
  ASSERT_FALSE(all.has_value());
  EXPECT_EQ(all.error().code(), StatusCode::kNotImplemented);
  EXPECT_NE(all.error().message().find("every customer"), std::string::npos);
  // Errors a user causes are the embedded mode's.
  MeterQuery unknown = everyone;
  unknown.meter = "nope";
  unknown.customer = "acme";
  EXPECT_EQ(a->query(unknown).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(a->check(check_of("nobody")).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(a->check(check_of("acme", "api_calls", "-1")).error().code(),
            StatusCode::kInvalidArgument);
}

// ---- prices, wallets and credits (docs/cluster.md "Prices, wallets and credits") ----------

constexpr const char* kPrices = R"(
[credits]
per_currency_unit = 100

[[prices]]
meter = "tokens"
unit_price = "0.001"

[[prices]]
meter = "api_calls"
match = { route = "gold" }
unit_price = "0.5"
effective_from = "2026-12-07T09:00:00Z"
)";

// What psql printed, without its trailing newline.
std::string trimmed(const Result<std::string>& out) {
  EXPECT_TRUE(out.has_value()) << out.error().to_string();
  std::string s = out ? *out : std::string();
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) {
    s.pop_back();
  }
  return s;
}

TEST_F(ClusterEngineTest, EventsArePricedOnceWhicheverNodeWritesThem) {
  migrate();
  auto a = open(config(kPrices));
  auto b = open(config(kPrices));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  ASSERT_TRUE(b.has_value());
  auto sql = [&](const std::string& text) {
    return trimmed(pg_->psql(db_, text));
  };
  // 3 tokens each: 0.003 USD, 0.3 credits. e5..e9 reach both nodes: charged once.
  ASSERT_EQ((*a)->ingest_json(events("p", 0, 10, "completion"))->accepted, 10u);
  auto second = (*b)->ingest_json(events("p", 5, 10, "completion"));
  ASSERT_TRUE(second.has_value());
  EXPECT_EQ(second->accepted, 5u);
  EXPECT_EQ(second->duplicates, 5u);
  EXPECT_EQ(sql("SELECT count(*), count(cost), sum(cost)::text, sum(credits)::text FROM events "
                "WHERE customer_id = 'p'"),
            "15|15|0.045000000|4.500000000");
  // A price's match and its effective_from: only route=gold calls from 09:00 on are charged.
  const std::string calls =
      R"([{"id":"g1","customer_id":"q","type":"api_call","timestamp":"2026-12-07T09:30:00Z",)"
      R"("properties":{"route":"gold"}},)"
      R"({"id":"g2","customer_id":"q","type":"api_call","timestamp":"2026-12-07T08:30:00Z",)"
      R"("properties":{"route":"gold"}},)"
      R"({"id":"s1","customer_id":"q","type":"api_call","timestamp":"2026-12-07T09:30:00Z",)"
      R"("properties":{"route":"silver"}}])";
  ASSERT_EQ((*b)->ingest_json(calls)->accepted, 3u);
  EXPECT_EQ(sql("SELECT string_agg(event_id || '=' || coalesce(credits::text, '-'), ',' ORDER BY "
                "event_id) FROM events WHERE customer_id = 'q'"),
            "g1=50.000000000,g2=-,s1=-");
  // Cost and credits queries are not built: 501, not a wrong "no price" answer.
  MeterQuery cost;
  cost.meter = "tokens";
  cost.customer = "p";
  cost.measure = Measure::kCost;
  cost.from_us = kNow - 86'400'000'000LL;
  cost.to_us = kNow;
  EXPECT_EQ((*a)->query(cost).error().code(), StatusCode::kNotImplemented);
  // A model that counts the period's units is refused at open, naming the price.
  auto tiered = open(config(std::string(kPrices) +
                            "\n[[prices]]\nmeter = \"api_calls\"\nmodel = \"package\"\n"
                            "package_size = 10\npackage_price = \"0.5\"\n"));
  ASSERT_FALSE(tiered.has_value());
  EXPECT_NE(tiered.error().message().find("package"), std::string::npos)
      << tiered.error().message();
}

// A wallet's view without its grants' ids, which number each store's own transactions.
std::string wallet_text(const Result<Wallet>& w) {
  if (!w) {
    return w.error().to_string();
  }
  std::string out = w->balance + " avail " + w->available + " held " + w->held + " n " +
                    std::to_string(w->transactions) + (w->exhausted ? " exhausted" : "");
  for (const WalletGrant& g : w->grants) {
    out += " [" + std::string(to_string(g.type)) + " " + g.amount + " left " + g.remaining + " p" +
           std::to_string(g.priority) + " exp " + std::to_string(g.expires_at_us) + "]";
  }
  return out;
}

// A ledger page as text (types, amounts, balances, events), and whether its chain holds.
std::string ledger_text(const Result<LedgerPage>& page, bool* chained) {
  if (!page) {
    return page.error().to_string();
  }
  std::string out;
  std::string previous = "0";
  *chained = true;
  for (const LedgerTransaction& t : page->transactions) {
    *chained = *chained && t.balance_before == previous;
    previous = t.balance_after;
    out += std::string(to_string(t.type)) + " " + t.amount + " " + t.balance_before + ">" +
           t.balance_after + (t.event_id.empty() ? "" : " " + t.event_id) + ";";
  }
  return out;
}

WalletTransactionRequest wallet_request(LedgerType type, const std::string& amount,
                                        TimeUs expires_at_us = 0) {
  WalletTransactionRequest r;
  r.type = type;
  r.amount = amount;
  r.expires_at_us = expires_at_us;
  r.description = "test";
  return r;
}

TEST_F(ClusterEngineTest, WalletsAnswerAsTheEmbeddedStoreAndBurnEachEventOnce) {
  migrate();
  auto a = open(config(kPrices));
  auto b = open(config(kPrices));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  ASSERT_TRUE(b.has_value());
  EngineOptions eo;
  eo.config_toml = std::string(kMeters) + kPrices;
  eo.in_memory = true;
  eo.clock = &clock_;
  auto embedded = Engine::open(eo);
  ASSERT_TRUE(embedded.has_value()) << embedded.error().to_string();
  // The same story on both stores: credits, usage burning them, a second node, mistakes.
  std::vector<Engine*> stores = {embedded->get(), a->get()};
  std::vector<std::string> wallets, ledgers, errors;
  for (Engine* e : stores) {
    Customer c;
    c.id = "w";
    c.name = "w";
    ASSERT_TRUE(e->create_customer(c).has_value());
    EXPECT_EQ(wallet_text(e->wallet("w")), "0 avail 0 held 0 n 0 exhausted");
    ASSERT_TRUE(e->wallet_transaction(
                     "w", wallet_request(LedgerType::kGrant, "100", kNow + 86'400'000'000LL))
                    .has_value());
    ASSERT_TRUE(e->wallet_transaction("w", wallet_request(LedgerType::kTopUp, "50")).has_value());
    auto adjusted = e->wallet_transaction("w", wallet_request(LedgerType::kAdjustment, "-30"));
    ASSERT_TRUE(adjusted.has_value()) << adjusted.error().to_string();
    EXPECT_EQ(adjusted->balance_after, "120");
    // 10 events of 3 tokens: 0.3 credits each.
    ASSERT_EQ(e->ingest_json(events("w", 0, 10, "completion"))->accepted, 10u);
    errors.push_back(
        e->wallet_transaction("w", wallet_request(LedgerType::kGrant, "-1")).error().to_string());
    errors.push_back(e->wallet_transaction("nobody", wallet_request(LedgerType::kGrant, "1"))
                         .error()
                         .to_string());
    errors.push_back(e->wallet_transactions_atomic("w", {wallet_request(LedgerType::kGrant, "1")},
                                                   /*only_if_new=*/true)
                         .error()
                         .to_string());
    errors.push_back(e->wallet("nobody").error().to_string());
    wallets.push_back(wallet_text(e->wallet("w")));
    LedgerQuery q;
    q.customer = "w";
    q.limit = 1000;
    bool chained = false;
    ledgers.push_back(ledger_text(e->wallet_transactions(q), &chained));
    EXPECT_TRUE(chained) << ledgers.back();
  }
  EXPECT_EQ(wallets[0], wallets[1]);
  EXPECT_EQ(wallets[1],
            "117 avail 117 held 0 n 13 [grant 100 left 67 p0 exp 1796724000000000] [top_up 50 "
            "left 50 p100 exp 0]");
  EXPECT_EQ(ledgers[0], ledgers[1]);
  ASSERT_EQ(errors.size(), 8u);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(errors[i], errors[i + 4]);
  }
  EXPECT_EQ(errors[0], "INVALID_ARGUMENT: the amount of a grant must be positive");
  // The other node reads the same wallet; the same events sent to it burn nothing more.
  EXPECT_EQ(wallet_text((*b)->wallet("w")), wallets[1]);
  auto again = (*b)->ingest_json(events("w", 5, 10, "completion"));  // e5..e9 again, e10..e14 new
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->duplicates, 5u);
  EXPECT_EQ(trimmed(pg_->psql(db_,
                              "SELECT count(*), count(DISTINCT event_id), sum(amount)::text "
                              "FROM ledger WHERE customer_id = 'w' AND type = 'burn'")),
            "15|15|-4.500000000");
  EXPECT_EQ(trimmed(pg_->psql(db_,
                              "SELECT w.balance::text, (SELECT sum(amount) FROM ledger l "
                              "WHERE l.customer_id = w.customer_id)::text FROM wallets w "
                              "WHERE customer_id = 'w'")),
            "115.500000000|115.500000000");
  // Paging: a cursor continues where the page ended.
  LedgerQuery q;
  q.customer = "w";
  q.limit = 2;
  auto first = (*a)->wallet_transactions(q);
  ASSERT_TRUE(first.has_value());
  ASSERT_EQ(first->transactions.size(), 2u);
  q.cursor = first->next_cursor;
  auto second = (*a)->wallet_transactions(q);
  ASSERT_TRUE(second.has_value());
  ASSERT_EQ(second->transactions.size(), 2u);
  EXPECT_EQ(second->transactions[0].type, LedgerType::kAdjustment);
  EXPECT_EQ(second->transactions[0].balance_before, first->transactions[1].balance_after);
}

TEST_F(ClusterEngineTest, PrepaidChecksOnTwoNodesNeverSpendBeyondTheBalance) {
  migrate();
  // Each gold call costs 0.5 USD = 50 credits; 1,000 credits pay for exactly 20.
  const std::string prepaid =
      "\n[[plans]]\nkey = \"pre\"\nprepaid = true\nlimits = [{ meter = \"api_calls\", period = "
      "\"day\", amount = 1000 }]\n";
  auto a = open(config(kPrices + prepaid));
  auto b = open(config(kPrices + prepaid));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  ASSERT_TRUE(b.has_value());
  Customer c;
  c.id = "pp";
  c.name = "pp";
  c.plan = "pre";
  ASSERT_TRUE((*a)->create_customer(c).has_value());
  auto gold = [] {
    CheckRequest r = check_of("pp");
    r.properties = {{"route", "gold"}};
    return r;
  };
  // No credits yet: denied as the embedded mode denies, nothing consumed.
  EngineOptions eo;
  eo.config_toml = std::string(kMeters) + kPrices + prepaid;
  eo.in_memory = true;
  eo.clock = &clock_;
  auto embedded = Engine::open(eo);
  ASSERT_TRUE(embedded.has_value()) << embedded.error().to_string();
  ASSERT_TRUE((*embedded)->create_customer(c).has_value());
  auto broke = (*b)->check(gold());
  auto broke_embedded = (*embedded)->check(gold());
  ASSERT_TRUE(broke.has_value()) << broke.error().to_string();
  ASSERT_TRUE(broke_embedded.has_value());
  EXPECT_FALSE(broke->allowed);
  EXPECT_EQ(broke->reason, Denial::kInsufficientCredits);
  EXPECT_EQ(broke->message, "Insufficient credits: 50 needed, 0 available.");
  EXPECT_TRUE(broke->prepaid);
  EXPECT_EQ(broke->message, broke_embedded->message);
  EXPECT_EQ(broke->credits_required, broke_embedded->credits_required);
  EXPECT_EQ(broke->credits_available, broke_embedded->credits_available);
  ASSERT_TRUE((*a)->wallet_transaction("pp", wallet_request(LedgerType::kTopUp, "1000")));
  // 8 threads, 4 on each node, 10 checks each: 80 asked for, at most 20 admitted.
  std::atomic<int> allowed{0};
  std::atomic<int> insufficient{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    Engine* node = t % 2 == 0 ? a->get() : b->get();
    threads.emplace_back([&, node] {
      for (int i = 0; i < 10; ++i) {
        auto r = node->check(gold());
        if (!r) {
          ++failed;
        } else if (r->allowed) {
          ++allowed;
        } else if (r->reason == Denial::kInsufficientCredits) {
          ++insufficient;
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(failed.load(), 0);
  EXPECT_LE(allowed.load(), 20);
  EXPECT_EQ(allowed.load() + insufficient.load(), 80);
  std::printf("prepaid checks on two nodes at once: %d of 80 admitted (20 affordable)\n",
              allowed.load());
  (*a)->flush();
  (*b)->flush();
  // Once every burn landed, checks one at a time use up exactly what is left.
  int more = 0;
  for (int i = 0; i < 30; ++i) {
    auto r = (i % 2 == 0 ? *a : *b)->check(gold());
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    if (!r->allowed) {
      break;
    }
    ++more;
    (i % 2 == 0 ? *a : *b)->flush();
  }
  EXPECT_EQ(allowed.load() + more, 20);
  auto w = (*a)->wallet("pp");
  ASSERT_TRUE(w.has_value());
  EXPECT_EQ(w->balance, "0");
  EXPECT_EQ(trimmed(pg_->psql(db_,
                              "SELECT count(*) FROM ledger WHERE customer_id = 'pp' AND "
                              "type = 'burn'")),
            "20");
  // A check that needs no credits (no price matches) still needs a balance above zero.
  auto plain = (*b)->check(check_of("pp"));
  ASSERT_TRUE(plain.has_value());
  EXPECT_FALSE(plain->allowed);
  EXPECT_EQ(plain->reason, Denial::kInsufficientCredits);
}

TEST_F(ClusterEngineTest, VerifyProvesTheLedgerAndFindsTampering) {
  migrate();
  auto a = open(config(kPrices));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  ASSERT_TRUE(
      (*a)->wallet_transaction("lv", wallet_request(LedgerType::kTopUp, "5")).error().code() ==
      StatusCode::kNotFound);
  ASSERT_EQ((*a)->ingest_json(events("lv", 0, 10, "completion"))->accepted, 10u);  // 3 credits
  ASSERT_TRUE((*a)->wallet_transaction("lv", wallet_request(LedgerType::kTopUp, "5")));
  auto clean = (*a)->verify();
  ASSERT_TRUE(clean.has_value()) << clean.error().to_string();
  EXPECT_TRUE(clean->ok()) << clean->differences.front();
  EXPECT_EQ(clean->transactions, 11u);  // 10 burns into debt, then the top-up paying it
  // One burn's amount changed behind Tally's back: its chain, its wallet's sum and its event.
  ASSERT_TRUE(pg_->psql(db_, "UPDATE ledger SET amount = amount - 1 WHERE event_id = 'e3'"));
  auto tampered = (*a)->verify();
  ASSERT_TRUE(tampered.has_value());
  ASSERT_EQ(tampered->differences.size(), 3u);
  EXPECT_NE(tampered->differences[0].find("txn_"), std::string::npos) << tampered->differences[0];
  EXPECT_NE(tampered->differences[1].find("its transactions sum to"), std::string::npos)
      << tampered->differences[1];
  EXPECT_NE(tampered->differences[2].find("event 'e3'"), std::string::npos)
      << tampered->differences[2];
  // A balance changed behind Tally's back: the row, its state and its ledger disagree.
  ASSERT_TRUE(pg_->psql(db_, "UPDATE ledger SET amount = amount + 1 WHERE event_id = 'e3'"));
  ASSERT_TRUE(pg_->psql(db_, "UPDATE wallets SET balance = balance + 1"));
  auto balance = (*a)->verify();
  ASSERT_TRUE(balance.has_value());
  ASSERT_EQ(balance->differences.size(), 2u);
  EXPECT_NE(balance->differences[0].find("its transactions sum to"), std::string::npos)
      << balance->differences[0];
  EXPECT_NE(balance->differences[1].find("its row and its state differ"), std::string::npos)
      << balance->differences[1];
}

}  // namespace
}  // namespace tally
