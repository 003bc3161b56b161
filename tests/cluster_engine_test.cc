// tally::Engine in the scale-out mode: two engines (two nodes) in this process over one real
// PostgreSQL 15 and one real 3-primary + 3-replica Redis Cluster, started once for the binary
// (tests/support/pg_server.h, redis_cluster.h); each test in a database of its own and with
// customers of its own. The HTTP API over the same engine is tested end to end by
// cluster_e2e_test.cc.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/shard.h"
#include "config/config.h"
#include "core/decimal.h"
#include "export/export.h"
#include "support/http_receiver.h"
#include "support/pg_server.h"
#include "support/process.h"
#include "support/redis_cluster.h"
#include "tally/clock.h"
#include "tally/engine.h"
#include "webhook/sender.h"

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

// What a race of attempts on two nodes gave (race()).
struct RaceCounts {
  int allowed = 0;
  int denied = 0;
  int failed = 0;
};

enum class Attempt { kAllowed, kDenied, kFailed };

Attempt attempt_of(const Result<CheckResult>& r) {
  return !r ? Attempt::kFailed : r->allowed ? Attempt::kAllowed : Attempt::kDenied;
}

// `threads` threads, alternately on nodes `a` and `b`, each making `each` attempts at once with
// the others: how many were allowed, denied, or failed.
RaceCounts race(Engine& a, Engine& b, int threads, int each,
                const std::function<Attempt(Engine&)>& attempt) {
  std::atomic<int> allowed{0};
  std::atomic<int> denied{0};
  std::atomic<int> failed{0};
  std::vector<std::thread> running;
  for (int t = 0; t < threads; ++t) {
    Engine* e = t % 2 == 0 ? &a : &b;
    running.emplace_back([&, e] {
      for (int i = 0; i < each; ++i) {
        const Attempt got = attempt(*e);
        ++(got == Attempt::kAllowed ? allowed : got == Attempt::kDenied ? denied : failed);
      }
    });
  }
  for (auto& t : running) {
    t.join();
  }
  return {allowed.load(), denied.load(), failed.load()};
}

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

  // An embedded engine in memory with the nodes' meters and `extra`.
  std::unique_ptr<Engine> embedded(const std::string& extra = "") {
    EngineOptions o;
    o.config_toml = std::string(kMeters) + extra;
    o.in_memory = true;
    o.clock = &clock_;
    auto e = Engine::open(o);
    EXPECT_TRUE(e.has_value()) << e.error().to_string();
    return e ? std::move(*e) : nullptr;
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
  const RaceCounts got = race(*a, *b, 8, 10, [](Engine& e) {
    auto r = e.check(check_of("busy"));
    if (r && !r->allowed) {
      EXPECT_EQ(r->reason, Denial::kLimitExceeded);
    }
    return attempt_of(r);
  });
  EXPECT_EQ(got.failed, 0);
  EXPECT_EQ(got.allowed, 30);
  EXPECT_EQ(got.denied, 50);
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

// A batch of checks is all or nothing, as on the embedded store: one denied check and the
// others, allowed on their own, consume nothing (batch_denied), their event ids stay free and no
// usage of theirs is written; an invalid check refuses the whole batch before anything is
// decided; a batch that fits consumes every check, over customers of both shards.
TEST_F(ClusterEngineTest, ABatchOfChecksIsAllOrNothing) {
  ASSERT_TRUE(pg2_->create_database(db_).ok());
  two_shards_ = true;
  auto a = node();
  auto b = node();
  ASSERT_TRUE(a && b);
  ASSERT_EQ(a->ingest_json(events("batch-a", 0, 45))->accepted, 45u);  // 45 of 50 calls a day
  Customer other;
  other.id = "batch-b";
  ASSERT_TRUE(b->create_customer(other).has_value());
  CheckRequest call = check_of("batch-b");
  call.event_id = "req-b";
  CheckRequest tokens = check_of("batch-b", "tokens", "600");
  CheckRequest six = check_of("batch-a", "api_calls", "6");  // 51 > 50: denied
  auto denied = b->check_batch({call, tokens, six});
  ASSERT_TRUE(denied.has_value()) << denied.error().to_string();
  ASSERT_EQ(denied->size(), 3u);
  EXPECT_FALSE((*denied)[0].allowed);
  EXPECT_EQ((*denied)[0].reason, Denial::kBatchDenied);
  EXPECT_FALSE((*denied)[1].allowed);
  EXPECT_EQ((*denied)[1].reason, Denial::kBatchDenied);
  EXPECT_EQ((*denied)[1].message, "Not consumed: another check of the batch was denied.");
  EXPECT_FALSE((*denied)[2].allowed);
  EXPECT_EQ((*denied)[2].reason, Denial::kLimitExceeded);

  // Nothing was consumed: 600 tokens fit again on the other node, then 400 more, not 401;
  // the id req-b consumes (it is not a replay).
  auto t1 = a->check(tokens);
  ASSERT_TRUE(t1.has_value() && t1->allowed);
  EXPECT_EQ(t1->rule.used.text(), "600");
  auto c1 = a->check(call);
  ASSERT_TRUE(c1.has_value());
  EXPECT_TRUE(c1->allowed);
  EXPECT_FALSE(c1->replayed);
  EXPECT_EQ(c1->rule.used.text(), "1");

  // An invalid check refuses the batch; nothing of the valid ones is consumed.
  auto invalid = a->check_batch({check_of("batch-b"), check_of("batch-b", "api_calls", "-2")});
  ASSERT_FALSE(invalid.has_value());
  EXPECT_EQ(invalid.error().code(), StatusCode::kInvalidArgument);

  // A batch that fits consumes all: 5 calls of batch-a (to exactly 50), 400 tokens of batch-b.
  auto fits =
      b->check_batch({check_of("batch-a", "api_calls", "5"), check_of("batch-b", "tokens", "400")});
  ASSERT_TRUE(fits.has_value()) << fits.error().to_string();
  EXPECT_TRUE((*fits)[0].allowed);
  EXPECT_TRUE((*fits)[1].allowed);
  a->flush();
  b->flush();
  EXPECT_EQ(value_of(*a, "api_calls", "batch-a"), "50");
  EXPECT_EQ(value_of(*b, "tokens", "batch-b"), "1000");
  EXPECT_EQ(value_of(*b, "api_calls", "batch-b"), "1");
  auto over = a->check(check_of("batch-b", "tokens", "1"));
  ASSERT_TRUE(over.has_value());
  EXPECT_FALSE(over->allowed);
}

// A reservation holds its amount on the counters every node checks, and is closed once across
// the nodes: committed (its usage written, what it did not use given back; more than reserved
// is recorded as overage), released (all given back) or expired (given back by a node's sweep).
TEST_F(ClusterEngineTest, AReservationHoldsOnEveryNodeAndClosesOnce) {
  auto a = node();
  auto b = node();
  ASSERT_TRUE(a && b);
  for (const char* id : {"res-co", "res-co2", "res-co3"}) {
    Customer c;
    c.id = id;
    ASSERT_TRUE(a->create_customer(c).has_value());
  }
  CheckRequest reserve = check_of("res-co", "api_calls", "30");
  reserve.consume = Consume::kReserve;
  auto held = a->check(reserve);
  ASSERT_TRUE(held.has_value()) << held.error().to_string();
  ASSERT_TRUE(held->allowed);
  const std::string id = held->reservation_id;
  EXPECT_EQ(id.rfind("res_", 0), 0u) << id;
  EXPECT_EQ(held->reservation_expires_us, kNow + 300 * 1'000'000LL);  // the default 5 minutes
  // The other node sees the hold: 30 + 21 > 50.
  CheckRequest ask = check_of("res-co", "api_calls", "21");
  ask.consume = Consume::kNo;
  auto asked = b->check(ask);
  ASSERT_TRUE(asked.has_value());
  EXPECT_FALSE(asked->allowed);
  // Another customer's key cannot commit it; the other node commits 10 of the 30, once.
  EXPECT_EQ(b->commit_reservation(id, "10", "res-co2").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(b->commit_reservation(id, "-1").error().code(), StatusCode::kInvalidArgument);
  auto committed = b->commit_reservation(id, "10");
  ASSERT_TRUE(committed.has_value()) << committed.error().to_string();
  EXPECT_TRUE(committed->allowed);
  EXPECT_EQ(committed->amount.text(), "10");
  EXPECT_EQ(committed->reservation_id, id);
  EXPECT_FALSE(committed->overage);
  ASSERT_TRUE(committed->has_rule);
  EXPECT_EQ(committed->rule.used.text(), "10");
  EXPECT_EQ(a->commit_reservation(id, "10").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(a->release_reservation(id).code(), StatusCode::kNotFound);
  EXPECT_EQ(value_of(*a, "api_calls", "res-co"), "10");  // its usage event, written before
  auto rest = a->check(check_of("res-co", "api_calls", "40"));
  ASSERT_TRUE(rest.has_value());
  EXPECT_TRUE(rest->allowed);

  // Released on the other node: all of it given back, once.
  CheckRequest r2 = check_of("res-co2", "api_calls", "20");
  r2.consume = Consume::kReserve;
  auto held2 = a->check(r2);
  ASSERT_TRUE(held2.has_value() && held2->allowed);
  EXPECT_TRUE(b->release_reservation(held2->reservation_id).ok());
  EXPECT_EQ(a->release_reservation(held2->reservation_id).code(), StatusCode::kNotFound);
  auto all = b->check(check_of("res-co2", "api_calls", "50"));
  ASSERT_TRUE(all.has_value());
  EXPECT_TRUE(all->allowed);

  // Expired: a node's sweep gives it back; a commit after its time finds nothing.
  CheckRequest r3 = check_of("res-co3", "api_calls", "40");
  r3.consume = Consume::kReserve;
  r3.reservation_ttl_seconds = 10;
  auto held3 = b->check(r3);
  ASSERT_TRUE(held3.has_value() && held3->allowed);
  clock_.advance_us(11'000'000);
  EXPECT_EQ(a->commit_reservation(held3->reservation_id, "").error().code(), StatusCode::kNotFound);
  a->flush();  // sweeps
  auto after = b->check(check_of("res-co3", "api_calls", "50"));
  ASSERT_TRUE(after.has_value());
  EXPECT_TRUE(after->allowed);

  // More than reserved is recorded, over the limit: overage.
  CheckRequest r4 = check_of("res-co3", "tokens", "100");
  r4.consume = Consume::kReserve;
  auto held4 = a->check(r4);
  ASSERT_TRUE(held4.has_value() && held4->allowed);
  auto over = b->commit_reservation(held4->reservation_id, "1200");
  ASSERT_TRUE(over.has_value()) << over.error().to_string();
  EXPECT_TRUE(over->overage);
  EXPECT_EQ(value_of(*a, "tokens", "res-co3"), "1200");
  auto denied = a->check(check_of("res-co3", "tokens", "1"));
  ASSERT_TRUE(denied.has_value());
  EXPECT_FALSE(denied->allowed);

  // A bad time to live is refused, as on the embedded store.
  CheckRequest bad = r2;
  bad.reservation_ttl_seconds = 7 * 86400 + 1;
  EXPECT_EQ(a->check(bad).error().code(), StatusCode::kInvalidArgument);
}

TEST_F(ClusterEngineTest, WhatTheModeDoesNotDoAnswersNotImplemented) {
  auto a = node();
  ASSERT_TRUE(a);
  ASSERT_TRUE(a->ingest_json(events("acme", 0, 1)).has_value());
  RepriceRequest reprice;
  reprice.customer = "acme";
  reprice.from_us = kNow - 3'600'000'000LL;
  reprice.to_us = kNow;
  EXPECT_EQ(a->reprice(reprice).error().code(), StatusCode::kNotImplemented);
  auto no_alerts = a->alerts({});  // built: no thresholds configured, none fire
  ASSERT_TRUE(no_alerts.has_value()) << no_alerts.error().to_string();
  EXPECT_TRUE(no_alerts->alerts.empty());
  MeterQuery everyone;
  everyone.meter = "api_calls";
  everyone.from_us = kNow - 3'600'000'000LL;
  everyone.to_us = kNow;
  everyone.measure = Measure::kCost;
  auto all = a->query(everyone);
  ASSERT_FALSE(all.has_value());
  EXPECT_EQ(all.error().code(), StatusCode::kInvalidArgument);  // no meter has a price
  everyone.measure = Measure::kUnits;
  // Errors a user causes are the embedded mode's.
  MeterQuery unknown = everyone;
  unknown.meter = "nope";
  unknown.customer = "acme";
  EXPECT_EQ(a->query(unknown).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(a->check(check_of("nobody")).error().code(), StatusCode::kNotFound);
  EXPECT_EQ(a->check(check_of("acme", "api_calls", "-1")).error().code(),
            StatusCode::kInvalidArgument);
}

// ---- alerts and the shared webhook outbox ----------------------------------------------------

// Alert thresholds of every plan, and `hooks` webhooks to `url` (paths /hook0, /hook1, ...).
std::string alerting(const std::string& url, int hooks) {
  std::string out = "\n[alerts]\nthresholds = [50, 80, 100]\n";
  for (int i = 0; i < hooks; ++i) {
    out += "\n[[webhooks]]\nurl = \"" + url + std::to_string(i) +
           "\"\nsecret = \"s3cret-s3cret-s3cret\"\ntimeout = \"5s\"\n";
  }
  return out;
}

// Usage of customer `id` (plan free: 50 api_calls a day) driven past every threshold by node a
// checking and node b checking and ingesting, all at once.
void cross_thresholds_at_once(Engine& a, Engine& b, const std::string& id) {
  std::atomic<int> ready{0};
  auto wait_all = [&] {
    ready.fetch_add(1);
    while (ready.load() < 3) {
      std::this_thread::yield();
    }
  };
  auto checks = [&](Engine& e) {
    wait_all();
    for (int i = 0; i < 20; ++i) {
      CheckRequest r;
      r.customer = id;
      r.meter = "api_calls";
      r.amount = "1";
      auto c = e.check(r);
      ASSERT_TRUE(c.has_value()) << c.error().to_string();
    }
  };
  std::thread ta(checks, std::ref(a));
  std::thread tb(checks, std::ref(b));
  std::thread ti([&] {
    wait_all();
    for (int batch = 0; batch < 2; ++batch) {
      std::string body = "[";
      for (int i = 0; i < 10; ++i) {
        body += (i == 0 ? "" : ",") + std::string(R"({"id":"a)") + std::to_string(batch * 10 + i) +
                R"(","customer_id":")" + id +
                R"(","type":"api_call","timestamp":"2026-12-07T09:30:00Z"})";
      }
      ASSERT_TRUE(b.ingest_json(body + "]").has_value());
    }
  });
  ta.join();
  tb.join();
  ti.join();
  a.flush();
  b.flush();
}

TEST_F(ClusterEngineTest, TwoNodesCrossingThresholdsAtOnceFireEachAlertOnce) {
  migrate();
  const std::string extra = alerting("http://127.0.0.1:9/hook", 2);
  auto a = open(config(extra));
  auto b = open(config(extra));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  Customer c;
  c.id = "alerted";
  c.email = "ops@alerted.test";
  ASSERT_TRUE((*a)->create_customer(c).has_value());
  cross_thresholds_at_once(**a, **b, "alerted");
  for (Engine* e : {a->get(), b->get()}) {
    auto page = e->alerts({});
    ASSERT_TRUE(page.has_value()) << page.error().to_string();
    ASSERT_EQ(page->alerts.size(), 3u);  // 50, 80 and 100 %, once each across the two nodes
    const std::int64_t want[] = {50, 80, 100};
    for (std::size_t i = 0; i < 3; ++i) {
      const Alert& al = page->alerts[i];
      EXPECT_EQ(al.threshold_percent, want[i]);
      EXPECT_EQ(al.customer, "alerted");
      EXPECT_EQ(al.kind, AlertKind::kLimit);
      EXPECT_EQ(al.meter, "api_calls");
      EXPECT_EQ(al.period, LimitPeriod::kDay);
      EXPECT_EQ(al.limit, "api_calls per day");
      EXPECT_EQ(al.limit_amount, "50");
      EXPECT_EQ(al.window_start_us, 1'796'601'600'000'000);  // 2026-12-07T00:00:00Z
      EXPECT_EQ(al.window_end_us, 1'796'601'600'000'000 + 86'400'000'000LL);
      EXPECT_EQ(al.created_at_us, kNow);
      core::Decimal used;
      ASSERT_TRUE(core::try_parse_decimal(al.used, &used)) << al.used;
      EXPECT_GE(used, core::Decimal::from_int(want[i] / 2));  // reached when it fired
      EXPECT_EQ(al.level, want[i] == 100  ? AlertLevel::kExceeded
                          : want[i] == 80 ? AlertLevel::kCritical
                                          : AlertLevel::kWarning);
      EXPECT_EQ(al.status, AlertStatus::kPending);
      ASSERT_EQ(al.deliveries.size(), 2u);  // one per webhook
      EXPECT_EQ(al.deliveries[1].url, "http://127.0.0.1:9/hook1");
      auto one = e->alert(al.id);
      ASSERT_TRUE(one.has_value()) << one.error().to_string();
      EXPECT_EQ(one->threshold_percent, want[i]);
    }
    AlertQuery of_other;
    of_other.customer = "nobody";
    EXPECT_EQ(e->alerts(of_other).error().code(), StatusCode::kNotFound);
    AlertQuery paged;
    paged.limit = 2;
    auto first = e->alerts(paged);
    ASSERT_TRUE(first.has_value());
    ASSERT_EQ(first->alerts.size(), 2u);
    paged.cursor = first->next_cursor;
    auto rest = e->alerts(paged);
    ASSERT_TRUE(rest.has_value());
    ASSERT_EQ(rest->alerts.size(), 1u);
    EXPECT_EQ(rest->alerts[0].threshold_percent, 100);
    EXPECT_TRUE(rest->next_cursor.empty());
  }
  EXPECT_EQ((*a)->alert("alrt_999").error().code(), StatusCode::kNotFound);
  EXPECT_EQ((*a)->alert("bogus").error().code(), StatusCode::kNotFound);
  // More usage in the same window fires nothing again.
  ASSERT_TRUE((*b)->ingest_json(events("alerted", 100, 5)).has_value());
  (*a)->flush();
  (*b)->flush();
  EXPECT_EQ((*b)->alerts({})->alerts.size(), 3u);
}

TEST_F(ClusterEngineTest, TwoNodesClaimingTheOutboxAtOnceTakeEachDeliveryOnce) {
  migrate();
  const std::string extra = alerting("http://127.0.0.1:9/hook", 4);
  auto a = open(config(extra));
  auto b = open(config(extra));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  Customer c;
  c.id = "claimed";
  ASSERT_TRUE((*a)->create_customer(c).has_value());
  cross_thresholds_at_once(**a, **b, "claimed");  // 3 alerts x 4 webhooks
  std::atomic<int> ready{0};
  std::vector<std::string> taken[2];
  auto claim = [&](Engine& e, std::vector<std::string>* out) {
    ready.fetch_add(1);
    while (ready.load() < 2) {
      std::this_thread::yield();
    }
    for (;;) {
      TimeUs next_due = 0;
      auto due = e.due_deliveries(kNow, 1, {}, &next_due);
      if (due.empty()) {
        return;
      }
      out->push_back(due[0].id);
    }
  };
  std::thread ta(claim, std::ref(**a), &taken[0]);
  std::thread tb(claim, std::ref(**b), &taken[1]);
  ta.join();
  tb.join();
  std::set<std::string> all(taken[0].begin(), taken[0].end());
  all.insert(taken[1].begin(), taken[1].end());
  EXPECT_EQ(taken[0].size() + taken[1].size(), 12u);
  EXPECT_EQ(all.size(), 12u);  // none claimed by both
  // A node records only what it holds.
  DeliveryAttempt attempt;
  attempt.delivered = true;
  attempt.status_code = 200;
  attempt.at_us = kNow;
  attempt.delivery_id = taken[0].empty() ? taken[1][0] : taken[0][0];
  Engine& holder = taken[0].empty() ? **b : **a;
  Engine& other = taken[0].empty() ? **a : **b;
  EXPECT_EQ(other.record_delivery_attempt(attempt).code(), StatusCode::kAlreadyExists);
  EXPECT_TRUE(holder.record_delivery_attempt(attempt).ok());
  attempt.delivery_id = "dlv_unknown";
  EXPECT_EQ(holder.record_delivery_attempt(attempt).code(), StatusCode::kNotFound);
}

TEST_F(ClusterEngineTest, AClaimWhoseNodeDiedIsDeliveredOnceByTheOther) {
  testing::HttpReceiver receiver([](std::size_t) { return 200; });
  migrate();
  const std::string extra = alerting(receiver.url("/hook"), 1);
  auto a = open(config(extra));
  auto b = open(config(extra));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  Customer c;
  c.id = "orphaned";
  ASSERT_TRUE((*a)->create_customer(c).has_value());
  cross_thresholds_at_once(**a, **b, "orphaned");
  // Node a claims the three deliveries, then dies before sending any.
  std::set<std::string> claimed;
  for (;;) {
    TimeUs next_due = 0;
    auto due = (*a)->due_deliveries(kNow, 10, {}, &next_due);
    if (due.empty()) {
      break;
    }
    for (const auto& d : due) {
      claimed.insert(d.id);
    }
  }
  ASSERT_EQ(claimed.size(), 3u);
  a->reset();
  auto config_b = config::parse_config(config(extra), "node-b.toml");
  ASSERT_TRUE(config_b.has_value()) << config_b.error().to_string();
  // Node b's sender, during the lease: nothing to take.
  {
    webhook::Sender sender(**b, config_b->webhooks, {}, {}, clock_, 2);
    sender.start();
    std::this_thread::sleep_for(std::chrono::milliseconds(600));
    sender.stop();
  }
  EXPECT_TRUE(receiver.requests().empty());
  // After the lease (the longest timeout + 30 s), node b's sender takes and delivers each once.
  FakeClock later(kNow + 40'000'000);
  webhook::Sender sender(**b, config_b->webhooks, {}, {}, later, 2);
  sender.start();
  ASSERT_TRUE(receiver.wait_for(3, 20'000));
  std::this_thread::sleep_for(std::chrono::milliseconds(600));  // nothing more comes
  sender.stop();
  const auto got = receiver.requests();
  ASSERT_EQ(got.size(), 3u);
  std::set<std::string> delivered;
  for (const auto& r : got) {
    delivered.insert(r.header("tally-delivery-id"));
    EXPECT_EQ(r.header("tally-event"), "alert.triggered");
    EXPECT_NE(r.body.find("\"customer\":\"orphaned\""), std::string::npos) << r.body;
  }
  EXPECT_EQ(delivered, claimed);
  auto page = (*b)->alerts({});
  ASSERT_TRUE(page.has_value());
  ASSERT_EQ(page->alerts.size(), 3u);
  for (const Alert& al : page->alerts) {
    EXPECT_EQ(al.status, AlertStatus::kSent);
    ASSERT_EQ(al.deliveries.size(), 1u);
    EXPECT_EQ(al.deliveries[0].attempts, 1u);
    EXPECT_EQ(al.deliveries[0].last_status_code, 200);
  }
}

// ---- queries over every customer, by group, window and zone: the embedded store's answers ----

constexpr const char* kQueryMeters = R"(
[[meters]]
key = "spend"
event_type = "llm"
aggregation = "sum"
value = "cost"
group_by = ["model", "region"]

[[meters]]
key = "peak"
event_type = "llm"
aggregation = "max"
value = "cost"
group_by = ["model", "region"]

[[meters]]
key = "low"
event_type = "llm"
aggregation = "min"
value = "cost"
group_by = ["model"]

[[meters]]
key = "last"
event_type = "llm"
aggregation = "latest"
value = "cost"
group_by = ["region"]

[[meters]]
key = "users"
event_type = "llm"
aggregation = "unique_count"
value = "$.user"
group_by = ["model", "region"]

[[meters]]
key = "calls"
event_type = "llm"
aggregation = "count"
group_by = ["model", "region"]
)";

// 2026-02-20T00:00:00Z: the events run from here over the US change to summer time (2026-03-08)
// into April.
constexpr TimeUs kQueryEventsFrom = 1'771'545'600'000'000;
constexpr TimeUs kUsPerHourT = 3'600'000'000LL;
constexpr TimeUs kUsPerDayT = 24 * kUsPerHourT;

class ClusterQueryTest : public ClusterEngineTest {
 protected:
  // Two shards, a node, and an embedded engine in memory with the same meters; both hold the
  // same customers (k1 and k2 in Asia/Kolkata) and the same events.
  // `extra`: more configuration for both (prices).
  void start(const std::string& extra = "") {
    ASSERT_TRUE(pg2_->create_database(db_).ok());
    two_shards_ = true;
    migrate();
    auto c = open(config(kQueryMeters + extra));
    ASSERT_TRUE(c.has_value()) << c.error().to_string();
    cluster_ = std::move(*c);
    embedded_ = embedded(kQueryMeters + extra);
    ASSERT_NE(embedded_, nullptr);
    for (const char* id : {"k1", "k2"}) {
      Customer k;
      k.id = id;
      k.name = id;
      k.timezone = "Asia/Kolkata";
      ASSERT_TRUE(cluster_->create_customer(k).has_value());
      ASSERT_TRUE(embedded_->create_customer(k).has_value());
    }
    // 1,200 events of 14 customers, at times spread over seven weeks (minutes and seconds
    // included), with a few models, regions, users and decimal costs.
    std::uint64_t x = 12345;
    auto next = [&x](std::uint64_t n) {
      x = x * 6364136223846793005ULL + 1442695040888963407ULL;
      return (x >> 33) % n;
    };
    for (int batch = 0; batch < 4; ++batch) {
      std::string body = "[";
      for (int i = 0; i < 300; ++i) {
        const int n = batch * 300 + i;
        const std::string customer =
            n % 14 < 2 ? "k" + std::to_string(n % 14 + 1) : "q" + std::to_string(n % 14);
        const TimeUs at = kQueryEventsFrom + static_cast<TimeUs>(next(49ULL * 86'400)) * 1'000'000;
        const std::uint64_t cents = next(5000) + 1;
        const std::string cost = std::to_string(cents / 100) + "." +
                                 std::to_string(cents % 100 / 10) + std::to_string(cents % 10);
        body += std::string(i == 0 ? "" : ",") + R"({"id":"ev)" + std::to_string(n) +
                R"(","customer_id":")" + customer + R"(","type":"llm","timestamp":")" +
                core_time(at) + R"(","properties":{"model":")" +
                std::string(next(3) == 0   ? "small"
                            : next(2) == 0 ? "large"
                                           : "medium") +
                R"(","region":")" + (next(2) == 0 ? "eu" : "us") + R"(","user":"u)" +
                std::to_string(next(9)) + R"(","cost":)" + cost + "}}";
      }
      body += "]";
      auto a = cluster_->ingest_json(body);
      ASSERT_TRUE(a.has_value()) << a.error().to_string();
      auto b = embedded_->ingest_json(body);
      ASSERT_TRUE(b.has_value()) << b.error().to_string();
      ASSERT_EQ(a->accepted, b->accepted);
      ASSERT_EQ(a->rejected, 0u) << (a->errors.empty() ? "" : a->errors[0].message);
    }
    // Both shards hold some of the customers.
    for (PgServer* server : {pg_.get(), pg2_.get()}) {
      auto r = server->psql(db_, "SELECT count(DISTINCT customer_id) FROM events");
      ASSERT_TRUE(r.has_value()) << r.error().to_string();
      EXPECT_GT(std::stoi(*r), 1);
    }
  }

  // RFC 3339 of a UTC instant, to the second.
  static std::string core_time(TimeUs t) {
    const std::time_t secs = static_cast<std::time_t>(t / 1'000'000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[32];
    std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
  }

  // The node answers `q` as the embedded store does: the same rows, in the same order.
  void same(const MeterQuery& q, const std::string& what, std::size_t rows_min = 1) {
    SCOPED_TRACE(what);
    auto want = embedded_->query(q);
    auto got = cluster_->query(q);
    ASSERT_EQ(got.has_value(), want.has_value())
        << (got ? std::string("node answered") : got.error().to_string()) << " / "
        << (want ? std::string("embedded answered") : want.error().to_string());
    if (!want) {
      EXPECT_EQ(got.error().code(), want.error().code());
      EXPECT_EQ(got.error().message(), want.error().message());
      return;
    }
    EXPECT_GE(want->rows.size(), rows_min);
    EXPECT_EQ(got->meter, want->meter);
    EXPECT_EQ(got->measure, want->measure);
    EXPECT_EQ(got->from_us, want->from_us);
    EXPECT_EQ(got->to_us, want->to_us);
    EXPECT_EQ(got->window, want->window);
    EXPECT_EQ(got->timezone, want->timezone);
    ASSERT_EQ(got->rows.size(), want->rows.size());
    for (std::size_t i = 0; i < want->rows.size(); ++i) {
      const QueryRow& g = got->rows[i];
      const QueryRow& w = want->rows[i];
      ASSERT_EQ(g.customer, w.customer) << "row " << i;
      ASSERT_EQ(g.group, w.group) << "row " << i;
      ASSERT_EQ(g.window_start_us, w.window_start_us) << "row " << i << " of " << w.customer;
      ASSERT_EQ(g.window_end_us, w.window_end_us) << "row " << i;
      ASSERT_EQ(g.value, w.value) << "row " << i << " of " << w.customer;
    }
  }

  static MeterQuery query_of(const std::string& meter, TimeUs from, TimeUs to,
                             std::optional<Window> window = std::nullopt,
                             const std::string& zone = "") {
    MeterQuery q;
    q.meter = meter;
    q.from_us = from;
    q.to_us = to;
    q.window = window;
    q.timezone = zone;
    return q;
  }

  std::unique_ptr<Engine> cluster_;
  std::unique_ptr<Engine> embedded_;
};

// A ragged range: from a minute past the hour to a minute before one, seconds ignored as both
// modes align them.
constexpr TimeUs kRaggedFrom =
    kQueryEventsFrom + 3 * kUsPerDayT + 5 * kUsPerHourT + 17 * 60'000'000LL + 30'000'000;
constexpr TimeUs kRaggedTo =
    kQueryEventsFrom + 45 * kUsPerDayT + 20 * kUsPerHourT + 43 * 60'000'000LL;

TEST_F(ClusterQueryTest, EveryCustomerWholeAndByWindowIsTheEmbeddedAnswer) {
  start();
  ASSERT_TRUE(cluster_ && embedded_);
  const TimeUs all_to = kQueryEventsFrom + 50 * kUsPerDayT;
  for (const char* meter : {"calls", "spend", "peak", "low", "last", "users"}) {
    same(query_of(meter, kQueryEventsFrom, all_to), std::string(meter) + " whole", 14);
    same(query_of(meter, kRaggedFrom, kRaggedTo), std::string(meter) + " whole, ragged", 14);
    same(query_of(meter, kRaggedFrom, kRaggedTo, Window::kDay), std::string(meter) + " by day",
         300);
    same(query_of(meter, kRaggedFrom, kRaggedFrom + 3 * kUsPerDayT, Window::kHour),
         std::string(meter) + " by hour", 20);
    same(query_of(meter, kRaggedFrom, kRaggedFrom + 2 * kUsPerDayT, Window::kMinute),
         std::string(meter) + " by minute", 10);
  }
  // One customer, and nobody's usage in an empty range.
  MeterQuery one = query_of("spend", kQueryEventsFrom, all_to, Window::kWeek, "UTC");
  one.customer = "q5";
  same(one, "one customer by week");
  same(query_of("spend", kQueryEventsFrom - 10 * kUsPerDayT, kQueryEventsFrom), "empty", 0);
}

TEST_F(ClusterQueryTest, GroupByAndFilterAreTheEmbeddedAnswer) {
  start();
  ASSERT_TRUE(cluster_ && embedded_);
  for (const char* meter : {"spend", "peak", "users", "calls"}) {
    MeterQuery q = query_of(meter, kRaggedFrom, kRaggedTo);
    q.group_by = {"model"};
    same(q, std::string(meter) + " by model", 30);
    q.group_by = {"region", "model"};
    same(q, std::string(meter) + " by region and model", 60);
    q.window = Window::kDay;
    same(q, std::string(meter) + " by region and model and day", 300);
    q.group_by = {"model"};
    q.filter = {{"region", "eu"}};
    q.window = std::nullopt;
    same(q, std::string(meter) + " by model in eu", 20);
    q.filter = {{"region", "us"}, {"model", "large"}};
    q.window = Window::kWeek;
    same(q, std::string(meter) + " large in us by week", 14);
    q.filter = {{"region", "mars"}};
    same(q, std::string(meter) + " nothing on mars", 0);
  }
  // Properties that are not the meter's are refused as the embedded store refuses them.
  MeterQuery bad = query_of("low", kRaggedFrom, kRaggedTo);
  bad.group_by = {"region"};
  same(bad, "group_by not of the meter", 0);
  bad.group_by.clear();
  bad.filter = {{"user", "u1"}};
  same(bad, "filter not of the meter", 0);
}

TEST_F(ClusterQueryTest, WeeksMonthsAndZonesAreTheEmbeddedAnswer) {
  start();
  ASSERT_TRUE(cluster_ && embedded_);
  const TimeUs all_to = kQueryEventsFrom + 50 * kUsPerDayT;
  for (const char* meter : {"calls", "spend", "last", "users"}) {
    // New York: windows over the change to summer time on 2026-03-08.
    for (Window w : {Window::kDay, Window::kWeek, Window::kMonth}) {
      same(query_of(meter, kQueryEventsFrom, all_to, w, "America/New_York"),
           std::string(meter) + " New York " + std::string(to_string(w)), 14);
      same(query_of(meter, kRaggedFrom, kRaggedTo, w, "America/New_York"),
           std::string(meter) + " New York ragged " + std::string(to_string(w)), 14);
    }
    // New York hours from 2026-03-07 to 2026-03-09, over the change (07:00 UTC on the 8th).
    same(query_of(meter, kQueryEventsFrom + 15 * kUsPerDayT, kQueryEventsFrom + 18 * kUsPerDayT,
                  Window::kHour, "America/New_York"),
         std::string(meter) + " New York hours", 14);
    // Kolkata, +05:30: days, weeks, months and hours that start at half past a UTC hour.
    for (Window w : {Window::kHour, Window::kDay, Window::kWeek, Window::kMonth}) {
      const TimeUs to = w == Window::kHour ? kRaggedFrom + 4 * kUsPerDayT : kRaggedTo;
      same(query_of(meter, kRaggedFrom, to, w, "Asia/Kolkata"),
           std::string(meter) + " Kolkata " + std::string(to_string(w)), 14);
    }
    same(query_of(meter, kRaggedFrom, kRaggedTo, Window::kMonth, "UTC"),
         std::string(meter) + " UTC month", 14);
  }
  // One customer without a zone: the customer's (k1: Asia/Kolkata).
  MeterQuery mine = query_of("spend", kQueryEventsFrom, all_to, Window::kDay);
  mine.customer = "k1";
  same(mine, "k1 in its zone by day", 20);
  auto got = cluster_->query(mine);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->timezone, "Asia/Kolkata");
  mine.customer = "nobody";
  same(mine, "an unknown customer", 0);
  mine.customer = "";
  mine.timezone = "Mars/Olympus";
  same(mine, "an unknown zone", 0);
}

bool same_point(const TrendPoint& a, const TrendPoint& b) {
  return a.window_start_us == b.window_start_us && a.window_end_us == b.window_end_us &&
         a.value == b.value && a.previous == b.previous && a.change == b.change &&
         a.change_percent == b.change_percent;
}

bool same_peak(const WindowValue& a, const WindowValue& b) {
  return a.window_start_us == b.window_start_us && a.window_end_us == b.window_end_us &&
         a.value == b.value;
}

TEST_F(ClusterQueryTest, StatisticsAndTopCustomersAreTheEmbeddedAnswer) {
  start();
  ASSERT_TRUE(cluster_ && embedded_);
  auto same_stats = [&](const StatsQuery& q, const std::string& what) {
    SCOPED_TRACE(what);
    auto want = embedded_->meter_stats(q);
    auto got = cluster_->meter_stats(q);
    ASSERT_EQ(got.has_value(), want.has_value())
        << (got ? std::string("node answered") : got.error().to_string()) << " / "
        << (want ? std::string("embedded answered") : want.error().to_string());
    if (!want) {
      EXPECT_EQ(got.error().code(), want.error().code());
      EXPECT_EQ(got.error().message(), want.error().message());
      return;
    }
    EXPECT_GT(want->windows_with_data, 0u);
    EXPECT_EQ(got->timezone, want->timezone);
    EXPECT_EQ(got->from_us, want->from_us);
    EXPECT_EQ(got->to_us, want->to_us);
    EXPECT_EQ(got->windows, want->windows);
    EXPECT_EQ(got->windows_with_data, want->windows_with_data);
    EXPECT_EQ(got->count, want->count);
    for (auto [g, w] : {std::pair{got->sum, want->sum},
                        {got->avg, want->avg},
                        {got->min, want->min},
                        {got->max, want->max},
                        {got->median, want->median},
                        {got->p95, want->p95},
                        {got->p99, want->p99}}) {
      EXPECT_EQ(g, w);
    }
    EXPECT_TRUE(std::equal(got->window_over_window.begin(), got->window_over_window.end(),
                           want->window_over_window.begin(), want->window_over_window.end(),
                           same_point));
    EXPECT_TRUE(std::equal(got->day_over_day.begin(), got->day_over_day.end(),
                           want->day_over_day.begin(), want->day_over_day.end(), same_point));
    EXPECT_TRUE(std::equal(got->peaks.begin(), got->peaks.end(), want->peaks.begin(),
                           want->peaks.end(), same_peak));
    EXPECT_EQ(got->peaks.size(), 5u);
  };
  for (const char* meter : {"spend", "users", "last"}) {
    StatsQuery q;
    q.meter = meter;
    q.from_us = kRaggedFrom;
    q.to_us = kRaggedTo;
    same_stats(q, std::string(meter) + " every customer by day");
    q.window = Window::kWeek;
    q.timezone = "America/New_York";
    q.filter = {{"region", "eu"}};
    same_stats(q, std::string(meter) + " eu by New York week");
    q.window = Window::kHour;
    q.timezone = "";
    q.customer = "k2";  // in Asia/Kolkata: hours at half past UTC ones
    q.filter.clear();
    q.to_us = kRaggedFrom + 20 * kUsPerDayT;
    same_stats(q, std::string(meter) + " k2 by its hours");
  }
  StatsQuery nobody;
  nobody.meter = "spend";
  nobody.customer = "nobody";
  same_stats(nobody, "an unknown customer");

  for (const char* meter : {"spend", "peak", "users"}) {
    auto want = embedded_->top_customers(meter, std::nullopt, kRaggedFrom, kRaggedTo, "", 5);
    auto got = cluster_->top_customers(meter, std::nullopt, kRaggedFrom, kRaggedTo, "", 5);
    ASSERT_TRUE(want.has_value()) << want.error().to_string();
    ASSERT_TRUE(got.has_value()) << got.error().to_string();
    ASSERT_EQ(want->customers.size(), 5u);
    ASSERT_EQ(got->customers.size(), want->customers.size()) << meter;
    for (std::size_t i = 0; i < want->customers.size(); ++i) {
      EXPECT_EQ(got->customers[i].customer, want->customers[i].customer) << meter << " " << i;
      EXPECT_EQ(got->customers[i].name, want->customers[i].name) << meter << " " << i;
      EXPECT_EQ(got->customers[i].value, want->customers[i].value) << meter << " " << i;
    }
    EXPECT_EQ(got->aggregation, want->aggregation);
    EXPECT_EQ(got->from_us, want->from_us);
    EXPECT_EQ(got->to_us, want->to_us);
  }
  EXPECT_EQ(
      cluster_->top_customers("nope", std::nullopt, kRaggedFrom, kRaggedTo, "", 5).error().code(),
      StatusCode::kNotFound);
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
  // The cost and credits of the events inserted, on either node (ClusterQueryTest compares
  // them with the embedded store's).
  MeterQuery cost;
  cost.meter = "tokens";
  cost.customer = "p";
  cost.measure = Measure::kCost;
  cost.from_us = kNow - 86'400'000'000LL;
  cost.to_us = kNow + 60'000'000;
  for (Engine* node : {a->get(), b->get()}) {
    auto r = node->query(cost);
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    ASSERT_EQ(r->rows.size(), 1u);
    EXPECT_EQ(r->rows[0].value, "0.045");
  }
  cost.measure = Measure::kCredits;
  auto credits = (*b)->query(cost);
  ASSERT_TRUE(credits.has_value()) << credits.error().to_string();
  ASSERT_EQ(credits->rows.size(), 1u);
  EXPECT_EQ(credits->rows[0].value, "4.5");
  // A model that counts the period's units opens (TieredPricesCountThePeriodsUnitsAcrossNodes).
  auto tiered = open(config(std::string(kPrices) +
                            "\n[[prices]]\nmeter = \"api_calls\"\nmodel = \"package\"\n"
                            "package_size = 10\npackage_price = \"0.5\"\n"));
  EXPECT_TRUE(tiered.has_value()) << tiered.error().to_string();
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
  std::unique_ptr<Engine> solo = embedded(kPrices);
  ASSERT_NE(solo, nullptr);
  // The same story on both stores: credits, usage burning them, a second node, mistakes.
  std::vector<Engine*> stores = {solo.get(), a->get()};
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
  std::unique_ptr<Engine> solo = embedded(kPrices + prepaid);
  ASSERT_NE(solo, nullptr);
  ASSERT_TRUE(solo->create_customer(c).has_value());
  auto broke = (*b)->check(gold());
  auto broke_embedded = solo->check(gold());
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
  const RaceCounts got = race(**a, **b, 8, 10, [&](Engine& e) {
    auto r = e.check(gold());
    if (r && !r->allowed) {
      EXPECT_EQ(r->reason, Denial::kInsufficientCredits);
    }
    return attempt_of(r);
  });
  EXPECT_EQ(got.failed, 0);
  EXPECT_LE(got.allowed, 20);
  EXPECT_EQ(got.allowed + got.denied, 80);
  std::printf("prepaid checks on two nodes at once: %d of 80 admitted (20 affordable)\n",
              got.allowed);
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
  EXPECT_EQ(got.allowed + more, 20);
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

// ---- cost and credits queries: the embedded store's answers ---------------------------------

// Two priced meters of one event type (each event charged by both, or by one), so an event's
// charge splits over the meters' hidden cost and credits meters.
constexpr const char* kQueryPrices = R"(
[credits]
per_currency_unit = 100

[[prices]]
meter = "spend"
unit_price = "0.25"

[[prices]]
meter = "calls"
match = { model = "large" }
unit_price = "0.002"
)";

TEST_F(ClusterQueryTest, CostAndCreditsAreTheEmbeddedAnswer) {
  start(kQueryPrices);
  ASSERT_TRUE(cluster_ && embedded_);
  const TimeUs all_to = kQueryEventsFrom + 50 * kUsPerDayT;
  for (const Measure measure : {Measure::kCost, Measure::kCredits}) {
    for (const char* meter : {"spend", "calls"}) {
      const std::string what = std::string(meter) + " " + std::string(to_string(measure));
      MeterQuery q = query_of(meter, kQueryEventsFrom, all_to);
      q.measure = measure;
      same(q, what + " whole", 14);
      q = query_of(meter, kRaggedFrom, kRaggedTo, Window::kDay);
      q.measure = measure;
      same(q, what + " by day", 200);  // calls: large models only
      q = query_of(meter, kRaggedFrom, kRaggedFrom + 2 * kUsPerDayT, Window::kHour);
      q.measure = measure;
      same(q, what + " by hour", 10);
      q = query_of(meter, kRaggedFrom, kRaggedTo, Window::kWeek, "America/New_York");
      q.measure = measure;
      q.group_by = {"model"};
      q.filter = {{"region", "eu"}};
      same(q, what + " by model in eu, New York weeks", 14);
      q = query_of(meter, kQueryEventsFrom, all_to, Window::kDay);
      q.measure = measure;
      q.customer = "k1";  // its own zone, Asia/Kolkata
      same(q, what + " of one customer by its days", 20);
    }
    // A meter without a price has no cost or credits, refused as the embedded store does.
    MeterQuery none = query_of("peak", kQueryEventsFrom, all_to);
    none.measure = measure;
    same(none, "no price", 0);
  }
  // A customer's usage carries each priced meter's cost and credits.
  for (const char* customer : {"k1", "q7"}) {
    auto want = embedded_->customer_usage(customer, kQueryEventsFrom, all_to);
    auto got = cluster_->customer_usage(customer, kQueryEventsFrom, all_to);
    ASSERT_TRUE(want.has_value() && got.has_value());
    ASSERT_EQ(got->meters.size(), want->meters.size());
    for (std::size_t i = 0; i < want->meters.size(); ++i) {
      SCOPED_TRACE(want->meters[i].meter);
      EXPECT_EQ(got->meters[i].value, want->meters[i].value);
      EXPECT_EQ(got->meters[i].cost, want->meters[i].cost);
      EXPECT_EQ(got->meters[i].credits, want->meters[i].credits);
    }
    std::size_t priced = 0;
    for (const UsageItem& item : want->meters) {
      priced += item.cost.empty() ? 0 : 1;
    }
    EXPECT_EQ(priced, 2u);  // spend and calls
  }
  // The hidden meters' rows are what the events' charges add up to.
  auto verified = cluster_->verify();
  ASSERT_TRUE(verified.has_value()) << verified.error().to_string();
  EXPECT_TRUE(verified->ok()) << verified->differences.front();
  ASSERT_TRUE(pg_->psql(db_,
                        "UPDATE aggregates_hour SET sum = sum + 1 WHERE meter = 'calls:cost' AND "
                        "customer_id IN (SELECT customer_id FROM aggregates_hour WHERE meter = "
                        "'calls:cost' LIMIT 1)")
                  .has_value());
  ASSERT_TRUE(pg2_->psql(db_,
                         "UPDATE aggregates_hour SET sum = sum + 1 WHERE meter = 'calls:cost' AND "
                         "customer_id IN (SELECT customer_id FROM aggregates_hour WHERE meter = "
                         "'calls:cost' LIMIT 1)")
                  .has_value());
  auto tampered = cluster_->verify();
  ASSERT_TRUE(tampered.has_value());
  EXPECT_FALSE(tampered->ok());
}

// ---- tiered prices: the units of the billing period counted across nodes -------------------

// Each model that counts the period's units: graduated and volume on tokens, package and flat on
// calls (one tiered meter per event type).
constexpr const char* kTieredPrices = R"(
[credits]
per_currency_unit = 100

[[prices]]
meter = "tokens"
match = { plan = "vol" }
model = "volume"
tiers = [{ up_to = 500, unit_price = "0.01" }, { up_to = "inf", unit_price = "0.004" }]

[[prices]]
meter = "tokens"
model = "graduated"
tiers = [{ up_to = 100, unit_price = "0.01" }, { up_to = "inf", unit_price = "0.001", flat_fee = "1" }]

[[prices]]
meter = "api_calls"
match = { route = "flat" }
model = "flat"
flat_fee = "3"

[[prices]]
meter = "api_calls"
model = "package"
package_size = 7
package_price = "0.5"
)";

// `n` batches of 10 events of `customer`, both types, over two hours of 2026-12-07, with varied
// tokens and properties; ids unique per customer.
std::vector<std::string> tiered_batches(const std::string& customer, int n) {
  std::vector<std::string> out;
  for (int b = 0; b < n; ++b) {
    std::string body = "[";
    for (int i = 0; i < 10; ++i) {
      const int k = b * 10 + i;
      const bool call = k % 3 == 0;
      char at[32];
      std::snprintf(at, sizeof(at), "2026-12-07T%02d:%02d:%02dZ", 8 + k % 2, k % 60, k % 7);
      body += std::string(i == 0 ? "" : ",") + R"({"id":"t)" + std::to_string(k) +
              R"(","customer_id":")" + customer + R"(","type":")" +
              (call ? "api_call" : "completion") + R"(","timestamp":")" + at +
              R"(","properties":{"tokens":)" + std::to_string(1 + k * 7 % 23) + R"(,"route":")" +
              (k % 4 == 0 ? "flat" : "std") + R"(","plan":")" + (k % 5 == 0 ? "vol" : "std") +
              R"("}})";
    }
    out.push_back(body + "]");
  }
  return out;
}

MeterQuery measure_query(const std::string& meter, const std::string& customer, Measure measure,
                         std::optional<Window> window = std::nullopt) {
  MeterQuery q;
  q.meter = meter;
  q.customer = customer;
  q.measure = measure;
  q.from_us = kNow - 86'400'000'000LL;
  q.to_us = kNow + 3'600'000'000LL;
  q.window = window;
  return q;
}

// Row by row, as text.
std::string rows_text(const Result<QueryResult>& r) {
  if (!r) {
    return r.error().to_string();
  }
  std::string out;
  for (const QueryRow& row : r->rows) {
    out += std::to_string(row.window_start_us) + "=" + row.value + ";";
  }
  return out;
}

TEST_F(ClusterEngineTest, TieredPricesCountThePeriodsUnitsAcrossNodes) {
  migrate();
  auto a = open(config(kTieredPrices));
  auto b = open(config(kTieredPrices));
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  std::unique_ptr<Engine> solo = embedded(kTieredPrices);
  ASSERT_NE(solo, nullptr);

  // Sent in one order to one node: each event charged as on the embedded store, minute by
  // minute (the same order of arrival).
  for (const std::string& body : tiered_batches("seq", 12)) {
    ASSERT_EQ((*a)->ingest_json(body)->accepted, 10u);
    ASSERT_EQ(solo->ingest_json(body)->accepted, 10u);
  }
  for (const char* meter : {"tokens", "api_calls"}) {
    for (const Measure m : {Measure::kCost, Measure::kCredits}) {
      const MeterQuery q = measure_query(meter, "seq", m, Window::kMinute);
      const std::string want = rows_text(solo->query(q));
      EXPECT_EQ(rows_text((*b)->query(q)), want) << meter;
      EXPECT_GT(want.size(), 100u);
    }
  }

  // Sent twice, by two nodes at once in opposite orders: every event charged once, the period's
  // total the embedded store's for the same events.
  const std::vector<std::string> batches = tiered_batches("conc", 30);
  for (const std::string& body : batches) {
    ASSERT_EQ(solo->ingest_json(body)->accepted, 10u);
  }
  std::atomic<std::uint64_t> accepted{0};
  std::atomic<std::uint64_t> duplicates{0};
  auto send = [&](Engine* node, bool reversed) {
    for (std::size_t i = 0; i < batches.size(); ++i) {
      auto r = node->ingest_json(batches[reversed ? batches.size() - 1 - i : i]);
      ASSERT_TRUE(r.has_value()) << r.error().to_string();
      accepted += r->accepted;
      duplicates += r->duplicates;
    }
  };
  std::thread one(send, a->get(), false);
  std::thread two(send, b->get(), true);
  one.join();
  two.join();
  EXPECT_EQ(accepted.load(), 300u);
  EXPECT_EQ(duplicates.load(), 300u);
  for (const char* meter : {"tokens", "api_calls"}) {
    for (const Measure m : {Measure::kCost, Measure::kCredits}) {
      const MeterQuery q = measure_query(meter, "conc", m);
      const std::string want = rows_text(solo->query(q));
      EXPECT_EQ(rows_text((*a)->query(q)), want) << meter;
      EXPECT_EQ(rows_text((*b)->query(q)), want) << meter;
    }
  }
  auto embedded_usage = solo->customer_usage("conc", kNow - 86'400'000'000LL, kNow);
  ASSERT_TRUE(embedded_usage.has_value());
  core::Decimal want_total;
  for (const UsageItem& item : embedded_usage->meters) {
    if (!item.cost.empty()) {
      want_total += *core::parse_decimal(item.cost);
    }
  }
  EXPECT_GT(want_total.units, 0);
  auto stored_total = core::parse_decimal(
      trimmed(pg_->psql(db_, "SELECT sum(cost)::text FROM events WHERE customer_id = 'conc'")));
  ASSERT_TRUE(stored_total.has_value());
  EXPECT_EQ(core::format_decimal(*stored_total), core::format_decimal(want_total));
  // The periods' units: every event's once (tokens, and a unit per call), in four rows (two
  // prices of each meter, one period).
  const long long units = std::stoll(value_of(*solo, "tokens", "conc")) +
                          std::stoll(value_of(*solo, "api_calls", "conc"));
  EXPECT_EQ(trimmed(pg_->psql(db_,
                              "SELECT count(*), sum(units)::bigint FROM price_usage WHERE "
                              "customer_id = 'conc'")),
            "4|" + std::to_string(units));
  auto verified = (*a)->verify();
  ASSERT_TRUE(verified.has_value()) << verified.error().to_string();
  EXPECT_TRUE(verified->ok()) << verified->differences.front();

  // Two tiered meters of one event type are refused, naming them.
  auto two_tiered = open(config(std::string(kTieredPrices) +
                                "\n[[meters]]\nkey = \"calls2\"\nevent_type = \"api_call\"\n"
                                "aggregation = \"count\"\n\n[[prices]]\nmeter = \"calls2\"\n"
                                "model = \"flat\"\nflat_fee = \"1\"\n"));
  ASSERT_FALSE(two_tiered.has_value());
  EXPECT_NE(two_tiered.error().message().find("both have a tiered price"), std::string::npos)
      << two_tiered.error().message();
}

// ---- limit overrides and the limits report ----------------------------------------------------

// Every field of a limits report, one limit per line.
std::string report_text(const Result<LimitsReport>& r) {
  if (!r) {
    return "error: " + r.error().to_string();
  }
  std::string out = r->customer + " plan " + r->plan + " features";
  for (const std::string& f : r->features) {
    out += " " + f;
  }
  for (const AlertThreshold& t : r->alert_thresholds) {
    out += " alert " + std::to_string(t.percent) + " " + std::string(to_string(t.level));
  }
  for (const LimitState& l : r->limits) {
    out += "\n" + l.rule() + " hard " + std::to_string(l.hard) + " limit " + l.limit.text() +
           " used " + l.used.text() + " remaining " + l.remaining.text() + " percent " +
           l.percent() + " window " + std::to_string(l.window_start_us) + " reset " +
           std::to_string(l.reset_us);
  }
  for (const std::string& w : r->warnings) {
    out += "\nwarning " + w;
  }
  return out;
}

std::string overrides_text(const std::vector<LimitOverride>& overrides) {
  std::string out;
  for (const LimitOverride& o : overrides) {
    out += o.meter + " " + std::string(to_string(o.period)) + " " + std::to_string(o.days) + " " +
           o.amount + " " + (o.hard ? "hard" : "soft") + "; ";
  }
  return out;
}

// PUT overrides on one node: stored on the customer's shard, applied by every node's checks
// (this node's at once, the others' within their 1 s customer cache) so that two nodes together
// admit exactly the overridden limit; the limits report of any node is the embedded store's
// after the same calls, and the refusals are the embedded store's.
TEST_F(ClusterEngineTest, OverridesApplyOnEveryNodeAndTheLimitsReportIsTheEmbeddedOne) {
  auto a = node();
  auto b = node();
  ASSERT_TRUE(a && b);
  std::unique_ptr<Engine> e = embedded();
  ASSERT_TRUE(e);

  // The same usage on both: 10 events, then one check (which b caches the customer for).
  ASSERT_EQ(a->ingest_json(events("ovr", 0, 10))->accepted, 10u);
  ASSERT_EQ(e->ingest_json(events("ovr", 0, 10))->accepted, 10u);
  ASSERT_TRUE(b->check(check_of("ovr"))->allowed);
  ASSERT_TRUE(e->check(check_of("ovr"))->allowed);
  EXPECT_EQ(report_text(b->limits_report("ovr")), report_text(e->limits_report("ovr")));

  const std::vector<LimitOverride> overrides = {
      {"api_calls", LimitPeriod::kDay, 0, "12", true},
      {"tokens", LimitPeriod::kWeek, 0, "500.5", false},
      {"api_calls", LimitPeriod::kTrial, 14, "40", true},
  };
  auto set = a->set_overrides("ovr", overrides);
  ASSERT_TRUE(set.has_value()) << set.error().to_string();
  auto embedded_set = e->set_overrides("ovr", overrides);
  ASSERT_TRUE(embedded_set.has_value()) << embedded_set.error().to_string();
  EXPECT_EQ(overrides_text(set->overrides), overrides_text(overrides));
  auto read_back = b->get_customer("ovr");
  ASSERT_TRUE(read_back.has_value()) << read_back.error().to_string();
  EXPECT_EQ(overrides_text(read_back->overrides), overrides_text(overrides));

  // b read the customer for its check less than a second ago; past that, both nodes apply the
  // override: 11 of 12 are used, so 40 checks from both admit exactly one.
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  const RaceCounts got =
      race(*a, *b, 8, 5, [](Engine& n) { return attempt_of(n.check(check_of("ovr"))); });
  EXPECT_EQ(got.failed, 0);
  EXPECT_EQ(got.allowed, 1);
  ASSERT_TRUE(e->check(check_of("ovr"))->allowed);
  EXPECT_FALSE(e->check(check_of("ovr"))->allowed);
  a->flush();
  b->flush();
  EXPECT_EQ(value_of(*a, "api_calls", "ovr"), "12");
  const std::string embedded_report = report_text(e->limits_report("ovr"));
  EXPECT_NE(embedded_report.find("api_calls per day hard 1 limit 12 used 12"), std::string::npos)
      << embedded_report;
  EXPECT_EQ(report_text(a->limits_report("ovr")), embedded_report);
  EXPECT_EQ(report_text(b->limits_report("ovr")), embedded_report);

  // The embedded refusals, and nothing changed by them.
  auto unknown = b->set_overrides("nobody", overrides);
  ASSERT_FALSE(unknown.has_value());
  EXPECT_EQ(unknown.error().to_string(), e->set_overrides("nobody", overrides).error().to_string());
  const std::vector<LimitOverride> bad = {{"nope", LimitPeriod::kDay, 0, "5", true}};
  auto refused = b->set_overrides("ovr", bad);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().to_string(), e->set_overrides("ovr", bad).error().to_string());
  EXPECT_EQ(overrides_text(a->get_customer("ovr")->overrides), overrides_text(overrides));
  EXPECT_EQ(b->limits_report("nobody").error().to_string(),
            e->limits_report("nobody").error().to_string());

  // Removing them: the plan's 50 a day again.
  ASSERT_TRUE(b->set_overrides("ovr", {}).has_value());
  ASSERT_TRUE(e->set_overrides("ovr", {}).has_value());
  EXPECT_TRUE(b->check(check_of("ovr"))->allowed);
  EXPECT_TRUE(e->check(check_of("ovr"))->allowed);
  EXPECT_EQ(report_text(b->limits_report("ovr")), report_text(e->limits_report("ovr")));
}

// ---- listing and exporting stored events ------------------------------------------------------

// A stored event as text, all but its seq (the embedded store's is global, a shard's its own).
std::string event_text(const StoredEvent& e) {
  std::string s = e.id + "|" + e.customer + "|" + e.type + "|" + std::to_string(e.time_us) + "|" +
                  std::to_string(e.received_at_us) + "|" + std::to_string(e.quantity) + "|" +
                  (e.flagged ? "flagged" : "") + "|" + (e.priced ? e.cost + "/" + e.credits : "-");
  for (const auto& p : e.properties) {
    s += "|" + p.key + "=" + std::to_string(static_cast<int>(p.kind)) + ":" + p.text;
  }
  return s;
}

// Every page of a listing, following its cursors (at most 200 pages).
Result<std::vector<std::vector<std::string>>> pages_of(const Engine& e, EventListQuery q) {
  std::vector<std::vector<std::string>> pages;
  for (int n = 0; n < 200; ++n) {
    auto page = e.list_events(q);
    if (!page) {
      return page.error();
    }
    std::vector<std::string> texts;
    for (const auto& ev : page->events) {
      texts.push_back(event_text(ev));
    }
    pages.push_back(std::move(texts));
    if (page->next_cursor.empty()) {
      return pages;
    }
    q.cursor = page->next_cursor;
  }
  return Status::internal("more than 200 pages");
}

class ClusterListingTest : public ClusterEngineTest {
 protected:
  // Two shards, a node, and an embedded engine in memory with the same meters and prices; both
  // hold the same customers, created a second apart in an order that is not their ids', and
  // the same events (priced and not, nested properties, number texts jsonb would rewrite).
  void start() {
    ASSERT_TRUE(pg2_->create_database(db_).ok());
    two_shards_ = true;
    migrate();
    auto c = open(config(kPrices));
    ASSERT_TRUE(c.has_value()) << c.error().to_string();
    cluster_ = std::move(*c);
    embedded_ = embedded(kPrices);
    ASSERT_NE(embedded_, nullptr);
    for (const char* id : kCustomers) {
      Customer k;
      k.id = id;
      ASSERT_TRUE(cluster_->create_customer(k).has_value());
      ASSERT_TRUE(embedded_->create_customer(k).has_value());
      clock_.advance_us(1'000'000);
    }
    for (int batch = 0; batch < 3; ++batch) {
      std::string body = "[";
      for (int i = 0; i < 40; ++i) {
        const int n = batch * 40 + i;
        const bool completion = n % 3 == 0;
        body += std::string(i == 0 ? "" : ",") + R"({"id":"ev)" + std::to_string(n) +
                R"(","customer_id":")" + kCustomers[n % 5] + R"(","type":")" +
                (completion ? "completion" : "api_call") + R"(","timestamp":"2026-12-07T09:)" +
                (n % 60 < 10 ? "0" : "") + std::to_string(n % 60) +
                R"(:00Z","properties":{"z":1.50,"route":")" + (n % 4 == 0 ? "gold" : "tin") +
                R"(","a":{"b":"x\"é","c":true},"n":null,"big":1e3,"tokens":)" +
                std::to_string(n % 7 + 1) + "}}";
      }
      body += "]";
      auto a = cluster_->ingest_json(body);
      ASSERT_TRUE(a.has_value()) << a.error().to_string();
      auto b = embedded_->ingest_json(body);
      ASSERT_TRUE(b.has_value()) << b.error().to_string();
      ASSERT_EQ(a->accepted, 40u) << (a->errors.empty() ? "" : a->errors[0].message);
      ASSERT_EQ(b->accepted, 40u);
      clock_.advance_us(1'000'000);
    }
    // A customer created by its first event.
    const std::string first = R"({"id":"n1","customer_id":"new1","type":"api_call",)"
                              R"("timestamp":"2026-12-07T09:59:00Z","properties":{"k":"v"}})";
    ASSERT_EQ(cluster_->ingest_json(first)->accepted, 1u);
    ASSERT_EQ(embedded_->ingest_json(first)->accepted, 1u);
    for (PgServer* server : {pg_.get(), pg2_.get()}) {
      auto r = server->psql(db_, "SELECT count(DISTINCT customer_id) FROM events");
      ASSERT_TRUE(r.has_value()) << r.error().to_string();
      EXPECT_GE(std::stoi(*r), 1);
    }
  }

  // The node's pages of `q` are the embedded store's: the same events, pages and order.
  void same(const EventListQuery& q, const std::string& what, std::size_t pages_min) {
    SCOPED_TRACE(what);
    auto want = pages_of(*embedded_, q);
    auto got = pages_of(*cluster_, q);
    ASSERT_TRUE(want.has_value()) << want.error().to_string();
    ASSERT_TRUE(got.has_value()) << got.error().to_string();
    EXPECT_GE(want->size(), pages_min);
    ASSERT_EQ(got->size(), want->size());
    for (std::size_t p = 0; p < want->size(); ++p) {
      ASSERT_EQ((*got)[p], (*want)[p]) << "page " << p;
    }
  }

  static constexpr const char* kCustomers[] = {"zed", "amy", "mid", "bo", "kay"};
  std::unique_ptr<Engine> cluster_;
  std::unique_ptr<Engine> embedded_;
};

TEST_F(ClusterListingTest, PagesOfEveryCustomerAndOfOneAreTheEmbeddedAnswer) {
  start();
  ASSERT_TRUE(cluster_ && embedded_);
  EventListQuery all;
  all.limit = 7;
  same(all, "every customer by 7", 18);
  all.limit = 1000;
  same(all, "every customer at once", 1);
  EventListQuery one;
  one.customer = "mid";
  one.limit = 5;
  same(one, "one customer", 5);
  EventListQuery filtered;
  filtered.type = "completion";
  filtered.from_us = kNow - 3'600'000'000LL + 10 * 60'000'000LL;  // 09:10
  filtered.to_us = kNow - 3'600'000'000LL + 50 * 60'000'000LL;    // 09:50
  filtered.limit = 3;
  same(filtered, "a type and a range", 4);
  filtered.customer = "zed";
  filtered.type = "api_call";
  same(filtered, "one customer's type and range", 2);
  EventListQuery none;
  none.type = "nothing";
  same(none, "nothing", 1);

  // The first page's events are the embedded store's first seven, whatever shard they are on.
  all.limit = 7;
  auto page = cluster_->list_events(all);
  ASSERT_TRUE(page.has_value()) << page.error().to_string();
  ASSERT_EQ(page->events.size(), 7u);
  EXPECT_EQ(page->events[0].customer, "zed");  // created first, though last by id
  // A cursor is good on any node: another one goes on from it.
  auto b = open(config(kPrices));
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  EventListQuery next = all;
  next.cursor = page->next_cursor;
  auto on_a = cluster_->list_events(next);
  auto on_b = (*b)->list_events(next);
  ASSERT_TRUE(on_a.has_value() && on_b.has_value());
  ASSERT_EQ(on_b->events.size(), 7u);
  for (std::size_t i = 0; i < 7; ++i) {
    EXPECT_EQ(event_text(on_b->events[i]), event_text(on_a->events[i])) << i;
  }
  EXPECT_EQ(on_b->next_cursor, on_a->next_cursor);
}

TEST_F(ClusterListingTest, ErrorsAreTheEmbeddedOnes) {
  start();
  ASSERT_TRUE(cluster_ && embedded_);
  auto same_error = [&](const EventListQuery& q, StatusCode code, const std::string& what) {
    auto want = embedded_->list_events(q);
    auto got = cluster_->list_events(q);
    ASSERT_FALSE(want.has_value()) << what;
    ASSERT_FALSE(got.has_value()) << what;
    EXPECT_EQ(want.error().code(), code) << what;
    EXPECT_EQ(got.error().code(), code) << what;
    EXPECT_EQ(got.error().message(), want.error().message()) << what;
  };
  EventListQuery q;
  q.customer = "nobody";
  same_error(q, StatusCode::kNotFound, "an unknown customer");
  q.customer = "";
  q.limit = 0;
  same_error(q, StatusCode::kInvalidArgument, "limit 0");
  q.limit = 1001;
  same_error(q, StatusCode::kInvalidArgument, "limit 1001");
  q.limit = 2;
  for (const char* bad : {"zz", "1.2.", "1.2.zz", "1.2.6d6964x", " 1.2.6d6964"}) {
    q.cursor = bad;
    same_error(q, StatusCode::kInvalidArgument, std::string("cursor ") + bad);
  }
  // A cursor of one customer's listing is refused by another's, on both stores.
  EventListQuery amy;
  amy.customer = "amy";
  amy.limit = 2;
  auto want = embedded_->list_events(amy);
  auto got = cluster_->list_events(amy);
  ASSERT_TRUE(want.has_value() && got.has_value());
  ASSERT_FALSE(got->next_cursor.empty());
  EventListQuery mid;
  mid.customer = "mid";
  mid.cursor = got->next_cursor;
  EXPECT_EQ(cluster_->list_events(mid).error().code(), StatusCode::kInvalidArgument);
  mid.cursor = want->next_cursor;
  EXPECT_EQ(embedded_->list_events(mid).error().code(), StatusCode::kInvalidArgument);
}

// Every piece of a text export, concatenated.
Result<std::string> exported(const Engine& e, const exporter::ExportRequest& r) {
  auto ex = exporter::TextExport::open(e, r);
  if (!ex) {
    return ex.error();
  }
  std::string out;
  for (int n = 0; n < 10'000; ++n) {
    auto more = (*ex)->next(&out);
    if (!more) {
      return more.error();
    }
    if (!*more) {
      return out;
    }
  }
  return Status::internal("the export did not end");
}

TEST_F(ClusterListingTest, ExportsOfEventsAreTheEmbeddedBytes) {
  start();
  ASSERT_TRUE(cluster_ && embedded_);
  for (auto format : {exporter::Format::kCsv, exporter::Format::kJson, exporter::Format::kJsonl}) {
    exporter::ExportRequest r;
    r.format = format;
    r.kind = exporter::Kind::kEvents;
    for (const char* customer : {"", "kay"}) {
      r.customer = customer;
      for (const char* meter : {"", "tokens"}) {
        r.meter = meter;
        SCOPED_TRACE(std::string(exporter::format_name(format)) + " customer '" + customer +
                     "' meter '" + meter + "'");
        auto want = exported(*embedded_, r);
        auto got = exported(*cluster_, r);
        ASSERT_TRUE(want.has_value()) << want.error().to_string();
        ASSERT_TRUE(got.has_value()) << got.error().to_string();
        EXPECT_GT(want->size(), 300u);
        EXPECT_EQ(*got, *want);
      }
    }
  }
}

// ---- the billing period and the usage history ---------------------------------------------------

std::string history_text(const Result<UsageHistory>& h) {
  if (!h) {
    return "error " + std::to_string(static_cast<int>(h.error().code())) + " " +
           h.error().message();
  }
  std::string s = h->customer + "|" + h->meter + "|" +
                  std::to_string(static_cast<int>(h->aggregation)) + "|" + h->unit + "|" +
                  std::to_string(static_cast<int>(h->window)) + "|" + h->timezone + "|" +
                  std::to_string(h->from_us) + "|" + std::to_string(h->to_us) + "\n";
  auto values = [&s](const std::vector<WindowValue>& data) {
    for (const auto& v : data) {
      s += std::to_string(v.window_start_us) + "-" + std::to_string(v.window_end_us) + "=" +
           v.value + " ";
    }
    s += "\n";
  };
  values(h->data);
  for (const auto& g : h->groups) {
    for (const auto& [k, v] : g.group) {
      s += k + "=" + v + ",";
    }
    s += ": ";
    values(g.data);
  }
  return s;
}

// Whether `text` (not an error) holds `prefix` followed by a value that is not zero.
bool nonzero_after(const std::string& text, const std::string& prefix) {
  if (text.rfind("error", 0) == 0) {
    return false;
  }
  for (std::size_t at = text.find(prefix); at != std::string::npos;
       at = text.find(prefix, at + 1)) {
    const std::size_t v = at + prefix.size();
    if (v < text.size() && text[v] >= '1' && text[v] <= '9') {
      return true;
    }
  }
  return false;
}

TEST_F(ClusterQueryTest, BillingPeriodAndUsageHistoryAreTheEmbeddedAnswer) {
  start();
  ASSERT_TRUE(cluster_ && embedded_);
  // A customer with a billing anchor on the 31st, in New York.
  Customer anchored;
  anchored.id = "anchored";
  anchored.timezone = "America/New_York";
  anchored.billing_anchor_us = kQueryEventsFrom - 20 * kUsPerDayT + 5 * kUsPerHourT;  // Jan 31
  ASSERT_TRUE(cluster_->create_customer(anchored).has_value());
  ASSERT_TRUE(embedded_->create_customer(anchored).has_value());
  int periods = 0;
  for (const char* id : {"k1", "q5", "anchored"}) {
    for (TimeUs at : {kQueryEventsFrom, kQueryEventsFrom + 9 * kUsPerDayT + 7,
                      kQueryEventsFrom + 38 * kUsPerDayT, kNow}) {
      auto want = embedded_->billing_period(id, at);
      auto got = cluster_->billing_period(id, at);
      ASSERT_TRUE(want.has_value()) << want.error().to_string();
      ASSERT_TRUE(got.has_value()) << got.error().to_string();
      EXPECT_EQ(got->start_us, want->start_us) << id << " at " << at;
      EXPECT_EQ(got->end_us, want->end_us) << id << " at " << at;
      ++periods;
    }
  }
  EXPECT_EQ(periods, 12);
  auto nobody = cluster_->billing_period("nobody", kNow);
  ASSERT_FALSE(nobody.has_value());
  EXPECT_EQ(nobody.error().code(), StatusCode::kNotFound);
  EXPECT_EQ(nobody.error().message(), embedded_->billing_period("nobody", kNow).error().message());

  auto same_history = [&](const HistoryQuery& q, const std::string& what) {
    SCOPED_TRACE(what);
    const std::string want = history_text(embedded_->usage_history(q));
    EXPECT_EQ(history_text(cluster_->usage_history(q)), want);
    return want;
  };
  // A history with a value other than zero in some window.
  auto has_usage = [](const std::string& text) {
    return nonzero_after(text, "=");
  };
  HistoryQuery q;
  q.customer = "k1";  // Asia/Kolkata
  q.meter = "spend";
  q.window = Window::kDay;
  q.from_us = kQueryEventsFrom;
  q.to_us = kQueryEventsFrom + 50 * kUsPerDayT;
  EXPECT_TRUE(has_usage(same_history(q, "k1 spend by day in its zone")));
  q.group_by = "model";
  EXPECT_TRUE(has_usage(same_history(q, "k1 spend by day and model")));
  q.customer = "q5";
  q.meter = "users";
  q.window = Window::kWeek;
  q.timezone = "America/New_York";
  q.group_by = "region";
  EXPECT_TRUE(has_usage(same_history(q, "q5 users by New York week and region")));
  q.meter = "peak";
  q.window = Window::kMonth;
  q.group_by = "";
  EXPECT_NE(same_history(q, "q5 peak by month").rfind("error", 0), 0u);
  HistoryQuery last;  // the last 10 hours up to now: no events, zero-filled
  last.customer = "anchored";
  last.meter = "calls";
  last.window = Window::kHour;
  last.windows = 10;
  EXPECT_NE(same_history(last, "the last 10 hours").rfind("error", 0), 0u);
  HistoryQuery bad = q;
  bad.customer = "nobody";
  EXPECT_EQ(same_history(bad, "an unknown customer").rfind("error", 0), 0u);
  bad = q;
  bad.group_by = "user";
  EXPECT_EQ(same_history(bad, "a property not of the meter").rfind("error", 0), 0u);
  bad = q;
  bad.timezone = "Mars/Base";
  EXPECT_EQ(same_history(bad, "an unknown zone").rfind("error", 0), 0u);
}

// ---- organization usage ------------------------------------------------------------------------

std::string organization_text(const Result<OrganizationUsage>& u) {
  if (!u) {
    return "error " + std::to_string(static_cast<int>(u.error().code())) + " " +
           u.error().message();
  }
  std::string s = u->organization + "|" + std::to_string(u->from_us) + "|" +
                  std::to_string(u->to_us) + "|" + u->timezone + "\n";
  auto items = [&s](const std::vector<UsageItem>& meters) {
    for (const auto& m : meters) {
      s += m.meter + "/" + std::to_string(static_cast<int>(m.aggregation)) + "/" + m.unit + "=" +
           m.value + "/" + m.cost + "/" + m.credits + " ";
    }
    s += "\n";
  };
  for (const auto& c : u->customers) {
    s += c + ",";
  }
  s += "\n";
  items(u->meters);
  for (const auto& c : u->by_customer) {
    s += c.customer + "|" + std::to_string(c.from_us) + "|" + std::to_string(c.to_us) + "|" +
         c.timezone + ": ";
    items(c.meters);
  }
  return s;
}

TEST_F(ClusterQueryTest, OrganizationUsageIsTheEmbeddedAnswer) {
  start();
  ASSERT_TRUE(cluster_ && embedded_);
  // The members: the customers the node lets join k1's organization (those on k1's shard), the
  // same on the embedded store.
  std::vector<std::string> members;
  for (int n = 2; n < 14; ++n) {
    const std::string id = "q" + std::to_string(n);
    CustomerPatch patch;
    patch.organization = "k1";
    auto joined = cluster_->update_customer(id, patch);
    if (!joined) {
      EXPECT_EQ(joined.error().code(), StatusCode::kNotImplemented) << joined.error().to_string();
      continue;
    }
    ASSERT_TRUE(embedded_->update_customer(id, patch).has_value());
    members.push_back(id);
  }
  ASSERT_GE(members.size(), 2u);
  auto same_usage = [&](TimeUs from, TimeUs to, const std::string& zone, const std::string& what) {
    SCOPED_TRACE(what);
    const std::string want = organization_text(embedded_->organization_usage("k1", from, to, zone));
    EXPECT_EQ(organization_text(cluster_->organization_usage("k1", from, to, zone)), want);
    return want;
  };
  const std::string whole =
      same_usage(kQueryEventsFrom, kQueryEventsFrom + 50 * kUsPerDayT, "", "the seven weeks");
  EXPECT_NE(whole.find(members[0]), std::string::npos);
  EXPECT_TRUE(nonzero_after(whole, "calls/0/=")) << whole;  // the members have calls
  EXPECT_NE(same_usage(kRaggedFrom, kRaggedTo, "", "a ragged range").rfind("error", 0), 0u);
  EXPECT_NE(same_usage(kRaggedFrom, kRaggedTo, "America/New_York", "a ragged range in New York")
                .rfind("error", 0),
            0u);
  EXPECT_NE(same_usage(0, 0, "", "this month").rfind("error", 0), 0u);
  const std::string none = organization_text(cluster_->organization_usage("nobody", 0, 0, ""));
  EXPECT_EQ(none, organization_text(embedded_->organization_usage("nobody", 0, 0, "")));
  EXPECT_EQ(none.rfind("error", 0), 0u);
  EXPECT_EQ(organization_text(cluster_->organization_usage("k1", 0, 0, "Mars/Base")),
            organization_text(embedded_->organization_usage("k1", 0, 0, "Mars/Base")));
}

// ---- the usage report ----------------------------------------------------------------------

// Every field of a usage report but the customer's record beyond its id.
std::string usage_report_text(const Result<UsageReport>& r) {
  if (!r) {
    return "error: " + r.error().to_string();
  }
  std::string out = r->customer.id + " plan " + r->plan + " period " +
                    std::to_string(r->current_period.from_us) + ".." +
                    std::to_string(r->current_period.to_us) + " " + r->current_period.timezone;
  for (const UsageItem& u : r->current_period.meters) {
    out += "\nusage " + u.meter + " " + u.value + " " + u.cost + " " + u.credits;
  }
  for (const LimitState& l : r->limits) {
    out += "\nlimit " + l.rule() + " " + l.used.text() + " " + l.remaining.text();
  }
  for (const std::string& w : r->warnings) {
    out += "\nwarning " + w;
  }
  for (const Breakdown& b : r->breakdown) {
    out += "\nbreakdown " + b.meter + " by " + b.property + ":";
    for (const BreakdownItem& g : b.groups) {
      out += " " + g.value + "=" + g.usage + "(" + g.percent + ")";
    }
  }
  return out;
}

// The usage report reads only what both stores answer alike (the customer, the limits report,
// the period's usage and meter queries by a group), so a node's is the embedded one.
TEST_F(ClusterQueryTest, TheUsageReportIsTheEmbeddedAnswer) {
  start();
  ASSERT_TRUE(cluster_ && embedded_);
  std::string body = "[";
  for (int i = 0; i < 9; ++i) {
    body += (i == 0 ? "" : ",") + std::string(R"({"id":"ur)") + std::to_string(i) +
            R"(","customer_id":"k1","type":")" + (i < 6 ? "llm" : "api_call") +
            R"(","timestamp":"2026-12-07T09:1)" + std::to_string(i) +
            R"(:00Z","properties":{"cost":)" + std::to_string(i + 1) + R"(,"model":"m)" +
            std::to_string(i % 3) + R"(","region":"r)" + std::to_string(i % 2) +
            R"(","user":"u1"}})";
  }
  body += "]";
  ASSERT_EQ(cluster_->ingest_json(body)->accepted, 9u);
  ASSERT_EQ(embedded_->ingest_json(body)->accepted, 9u);
  ASSERT_TRUE(cluster_->check(check_of("k1"))->allowed);
  ASSERT_TRUE(embedded_->check(check_of("k1"))->allowed);
  cluster_->flush();
  for (const char* group_by : {"", "region", "model"}) {
    SCOPED_TRACE(group_by);
    const std::string want = usage_report_text(embedded_->usage_report("k1", group_by));
    EXPECT_NE(want.find("breakdown spend by "), std::string::npos) << want;
    EXPECT_NE(want.find("limit api_calls per day 4 46"), std::string::npos) << want;
    EXPECT_EQ(usage_report_text(cluster_->usage_report("k1", group_by)), want);
  }
  EXPECT_EQ(usage_report_text(cluster_->usage_report("k1", "nope")),
            usage_report_text(embedded_->usage_report("k1", "nope")));
  EXPECT_EQ(usage_report_text(cluster_->usage_report("nobody", "")),
            usage_report_text(embedded_->usage_report("nobody", "")));
}

// ---- the audit log, period resets and the denial history ------------------------------------

constexpr TimeUs kSecondUs = 1'000'000;
constexpr TimeUs kMinuteUs = 60 * kSecondUs;

// Two nodes over two shards and an embedded engine with the same configuration (a second plan,
// `pro`), for the tests that compare them.
class ClusterHistoryTest : public ClusterEngineTest {
 protected:
  static constexpr const char* kPro = R"(
[[plans]]
key = "pro"
limits = [{ meter = "api_calls", period = "day", amount = 500 }]
)";

  void start() {
    ASSERT_TRUE(pg2_->create_database(db_).ok());
    two_shards_ = true;
    migrate();
    for (auto* n : {&a_, &b_}) {
      auto opened = open(config(kPro));
      ASSERT_TRUE(opened.has_value()) << opened.error().to_string();
      *n = std::move(*opened);
    }
    e_ = embedded(kPro);
    ASSERT_NE(e_, nullptr);
  }

  // A customer id of `prefix` that lives on `shard` (of two).
  static std::string on_shard(const std::string& prefix, std::size_t shard) {
    for (int i = 0;; ++i) {
      std::string id = prefix + std::to_string(i);
      if (cluster::shard_of(id, 2) == shard) {
        return id;
      }
    }
  }

  // Created with the same fields on the node and on the embedded engine.
  void create(const std::string& id) {
    Customer c;
    c.id = id;
    c.name = id;
    ASSERT_TRUE(a_->create_customer(c).has_value());
    ASSERT_TRUE(e_->create_customer(c).has_value());
  }

  // `n` checks answered alternately by the two nodes, and as many by the embedded engine; the
  // allowed ones counted.
  void check_both(const std::string& id, int n, int* allowed, int* allowed_embedded) {
    for (int i = 0; i < n; ++i) {
      auto r = (i % 2 == 0 ? *a_ : *b_).check(check_of(id));
      ASSERT_TRUE(r.has_value()) << r.error().to_string();
      *allowed += r->allowed ? 1 : 0;
      auto re = e_->check(check_of(id));
      ASSERT_TRUE(re.has_value()) << re.error().to_string();
      *allowed_embedded += re->allowed ? 1 : 0;
    }
  }

  std::unique_ptr<Engine> a_;
  std::unique_ptr<Engine> b_;
  std::unique_ptr<Engine> e_;
};

// `log` with each pair's first text (an id one store chose) replaced by its second, and every
// wallet transaction's id by "txn".
std::vector<std::string> renamed(std::vector<std::string> log,
                                 const std::vector<std::pair<std::string, std::string>>& names) {
  const std::string txn = "\"transaction\":\"";
  for (std::string& record : log) {
    if (std::size_t at = record.find(txn); at != std::string::npos) {
      const std::size_t from = at + txn.size();
      record.replace(from, record.find('"', from) - from, "txn");
    }
    for (const auto& [from, to] : names) {
      for (std::size_t at = record.find(from); at != std::string::npos;
           at = record.find(from, at + to.size())) {
        record.replace(at, from.size(), to);
      }
    }
  }
  return log;
}

// Every operator action the cluster mode has, made on two nodes for customers on both shards
// (records in the change's transaction on shard 0, right after it on shard 1): the log of either
// node is the embedded engine's, record for record and in its order (ids the stores chose
// renamed alike), with its limit; refused actions leave no record on either.
TEST_F(ClusterHistoryTest, TheAuditLogIsTheEmbeddedOne) {
  start();
  ASSERT_TRUE(a_ && b_ && e_);
  EXPECT_TRUE(a_->audit_log(10)->empty());
  std::vector<std::pair<std::string, std::string>> names;
  std::vector<std::string> txn_ids;
  int step = 0;
  for (const std::string& id : {on_shard("aud", 0), on_shard("aud", 1)}) {
    SCOPED_TRACE(id);
    create(id);
    Engine& n = step++ % 2 == 0 ? *a_ : *b_;
    CustomerPatch plan;
    plan.plan = "pro";
    ASSERT_TRUE(n.update_customer(id, plan, "key_ops1").has_value());
    ASSERT_TRUE(e_->update_customer(id, plan, "key_ops1").has_value());
    clock_.advance_us(kSecondUs);
    CustomerPatch suspend;  // two records of one instant: the status, then the other fields
    suspend.status = CustomerStatus::kSuspended;
    suspend.name = "Renamed";
    ASSERT_TRUE(n.update_customer(id, suspend, "key_ops1").has_value());
    ASSERT_TRUE(e_->update_customer(id, suspend, "key_ops1").has_value());
    WalletTransactionRequest top;
    top.type = LedgerType::kTopUp;
    top.amount = "25";
    auto t = n.wallet_transaction(id, top, "key_ops2");
    auto te = e_->wallet_transaction(id, top, "key_ops2");
    ASSERT_TRUE(t.has_value()) << t.error().to_string();
    ASSERT_TRUE(te.has_value()) << te.error().to_string();
    txn_ids.push_back(t->id);  // numbered per shard on the node: checked, then renamed
    clock_.advance_us(kSecondUs);
    NewApiKeyRequest kr;
    // Keys live on shard 0, whose api_keys.customer_id references its own customers only: a key
    // of a customer on another shard is refused there (a foreign key violation, not this test's).
    kr.customer = on_shard("aud", 0);
    kr.name = "dash";
    auto k = n.create_key(kr, "key_ops2");
    auto ke = e_->create_key(kr, "key_ops2");
    ASSERT_TRUE(k.has_value()) << k.error().to_string();
    ASSERT_TRUE(ke.has_value()) << ke.error().to_string();
    names.emplace_back(k->info.id, "key of " + id);
    names.emplace_back(ke->info.id, "key of " + id);
    ASSERT_TRUE(b_->revoke_key(k->info.id, "key_ops3").ok());
    ASSERT_TRUE(e_->revoke_key(ke->info.id, "key_ops3").ok());
    const std::vector<LimitOverride> overrides = {{"api_calls", LimitPeriod::kDay, 0, "9", true}};
    ASSERT_TRUE(n.set_overrides(id, overrides).has_value());
    ASSERT_TRUE(e_->set_overrides(id, overrides).has_value());
    clock_.advance_us(kSecondUs);
    auto reset = n.reset_period(id, "api_calls", "key_ops3");
    ASSERT_TRUE(reset.has_value()) << reset.error().to_string();
    ASSERT_TRUE(e_->reset_period(id, "api_calls", "key_ops3").has_value());
  }

  // Refused actions change nothing and leave no record.
  const std::string id = on_shard("aud", 1);
  CustomerPatch bad;
  bad.plan = "nope";
  EXPECT_FALSE(a_->update_customer(id, bad, "key_bad").has_value());
  CustomerPatch same;  // a patch that changes nothing is no action
  same.plan = "pro";
  ASSERT_TRUE(b_->update_customer(id, same, "key_bad").has_value());
  WalletTransactionRequest negative;
  negative.type = LedgerType::kTopUp;
  negative.amount = "-1";
  EXPECT_FALSE(b_->wallet_transaction(id, negative, "key_bad").has_value());
  EXPECT_EQ(a_->revoke_key("key_ghost", "key_bad").code(), StatusCode::kNotFound);
  NewApiKeyRequest ghost;
  ghost.customer = "ghost";
  EXPECT_FALSE(b_->create_key(ghost, "key_bad").has_value());
  EXPECT_EQ(a_->reset_period("ghost", "api_calls", "key_bad").error().to_string(),
            e_->reset_period("ghost", "api_calls", "key_bad").error().to_string());
  EXPECT_EQ(a_->reset_period(id, "nope", "key_bad").error().to_string(),
            e_->reset_period(id, "nope", "key_bad").error().to_string());
  EXPECT_FALSE(b_->set_overrides("ghost", {}).has_value());

  auto want = e_->audit_log(1000);
  ASSERT_TRUE(want.has_value());
  ASSERT_EQ(want->size(), 16u);  // 8 per customer
  EXPECT_NE((*want)[0].find(R"("action":"plan_change")"), std::string::npos) << (*want)[0];
  for (Engine* n : {a_.get(), b_.get()}) {
    auto got = n->audit_log(1000);
    ASSERT_TRUE(got.has_value()) << got.error().to_string();
    EXPECT_EQ(renamed(*got, names), renamed(*want, names));
    for (const std::string& txn : txn_ids) {
      EXPECT_EQ(std::count_if(got->begin(), got->end(),
                              [&](const std::string& r) {
                                return r.find("\"transaction\":\"" + txn + "\"") !=
                                       std::string::npos;
                              }),
                std::count(txn_ids.begin(), txn_ids.end(), txn))
          << txn;
    }
    auto last3 = n->audit_log(3);
    ASSERT_TRUE(last3.has_value());
    EXPECT_EQ(renamed(*last3, names), renamed(*e_->audit_log(3), names));
  }
  auto rows = pg_->psql(db_, "SELECT count(*) FROM audit_log");  // shard 0 holds them all
  ASSERT_TRUE(rows.has_value()) << rows.error().to_string();
  EXPECT_EQ(std::stoi(*rows), 16);
  rows = pg2_->psql(db_, "SELECT count(*) FROM audit_log");
  ASSERT_TRUE(rows.has_value()) << rows.error().to_string();
  EXPECT_EQ(std::stoi(*rows), 0);
}

// A reset on one node: the customer's day counter restarts at once for every node (the other
// node still caches the customer without the reset), so both together admit exactly the limit
// again; events ingested after it but dated before it are not counted; the limits report and the
// check's answer are the embedded engine's (the window starting at the reset); a counter Redis
// lost is rebuilt from PostgreSQL from the reset, not from the day's start; the errors are the
// embedded ones.
TEST_F(ClusterHistoryTest, AResetRestartsTheCountersOfEveryNodeAtOnce) {
  start();
  ASSERT_TRUE(a_ && b_ && e_);
  const std::string id = on_shard("rst", 1);
  create(id);
  const std::vector<LimitOverride> overrides = {{"api_calls", LimitPeriod::kDay, 0, "20", true}};
  ASSERT_TRUE(a_->set_overrides(id, overrides).has_value());
  ASSERT_TRUE(e_->set_overrides(id, overrides).has_value());
  ASSERT_EQ(a_->ingest_json(events(id, 0, 10))->accepted, 10u);
  ASSERT_EQ(e_->ingest_json(events(id, 0, 10))->accepted, 10u);
  int allowed = 0;
  int allowed_embedded = 0;
  check_both(id, 12, &allowed, &allowed_embedded);
  EXPECT_EQ(allowed, 10);
  EXPECT_EQ(allowed_embedded, 10);
  EXPECT_EQ(report_text(a_->limits_report(id)), report_text(e_->limits_report(id)));

  // A minute and a half later, reset on a: b (whose customer cache has no reset) admits at once.
  // The minute's rate bucket is rebuilt from the usage PostgreSQL holds, as the embedded engine
  // rebuilds its own: the checks' usage is written first.
  a_->flush();
  b_->flush();
  e_->flush();
  clock_.advance_us(90 * kSecondUs);
  auto reset = a_->reset_period(id, "api_calls", "key_ops");
  ASSERT_TRUE(reset.has_value()) << reset.error().to_string();
  auto reset_embedded = e_->reset_period(id, "api_calls", "key_ops");
  ASSERT_TRUE(reset_embedded.has_value());
  ASSERT_EQ(reset->resets.size(), 1u);
  EXPECT_EQ(reset->resets, reset_embedded->resets);
  EXPECT_EQ(b_->get_customer(id)->resets, reset_embedded->resets);
  auto first = b_->check(check_of(id));
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  auto first_embedded = e_->check(check_of(id));
  EXPECT_TRUE(first->allowed) << first->message;
  EXPECT_TRUE(first_embedded->allowed);
  EXPECT_EQ(first->rule.used.text(), "1");
  EXPECT_EQ(first->rule.used.text(), first_embedded->rule.used.text());
  // a dropped its cached customer: its answer starts the window at the reset, as embedded.
  auto second = a_->check(check_of(id));
  auto second_embedded = e_->check(check_of(id));
  ASSERT_TRUE(second.has_value() && second_embedded.has_value());
  EXPECT_EQ(second->rule.window_start_us, kNow + 90 * kSecondUs);
  EXPECT_EQ(second->rule.window_start_us, second_embedded->rule.window_start_us);
  EXPECT_EQ(second->rule.used.text(), "2");
  EXPECT_EQ(report_text(a_->limits_report(id)), report_text(e_->limits_report(id)));
  EXPECT_EQ(report_text(b_->limits_report(id)), report_text(e_->limits_report(id)));
  // Dated before the reset: kept as usage, not counted by the limit (on either store): 10 more
  // of 20 are admitted, not 7.
  ASSERT_EQ(b_->ingest_json(events(id, 100, 3))->accepted, 3u);
  ASSERT_EQ(e_->ingest_json(events(id, 100, 3))->accepted, 3u);
  allowed = 0;
  allowed_embedded = 0;
  check_both(id, 10, &allowed, &allowed_embedded);
  EXPECT_EQ(allowed, 10);
  EXPECT_EQ(allowed_embedded, 10);
  a_->flush();
  b_->flush();
  // Two minutes on, the rate buckets have drained on both stores (the embedded one fills its
  // bucket with ingested usage whatever its date, the nodes' buckets count checks only).
  clock_.advance_us(2 * kMinuteUs);
  EXPECT_EQ(report_text(b_->limits_report(id)), report_text(e_->limits_report(id)));

  // Redis loses the counters: seeded again from PostgreSQL from the reset's minute, which holds
  // only usage after the reset: 12 of 20 used, so 8 more, not 0 (nor 20).
  for (const std::string& endpoint : redis_->endpoints()) {
    const auto port =
        static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.find(':') + 1)));
    redis_->cli(port, {"FLUSHALL"}).status().ignore_error();
  }
  allowed = 0;
  allowed_embedded = 0;
  check_both(id, 12, &allowed, &allowed_embedded);
  EXPECT_EQ(allowed, 8);
  EXPECT_EQ(allowed_embedded, 8);
  EXPECT_EQ(report_text(a_->limits_report(id)), report_text(e_->limits_report(id)));
  a_->flush();
  b_->flush();
  EXPECT_EQ(value_of(*a_, "api_calls", id), "43");  // usage keeps what the reset does not count
  EXPECT_EQ(value_of(*a_, "api_calls", id), value_of(*e_, "api_calls", id));

  // The next day counts from its own start.
  clock_.advance_us(24 * 3600 * kSecondUs);
  auto next_day = b_->check(check_of(id));
  ASSERT_TRUE(next_day.has_value()) << next_day.error().to_string();
  EXPECT_TRUE(next_day->allowed);
  EXPECT_EQ(next_day->rule.used.text(), "1");
  EXPECT_EQ(next_day->rule.window_start_us, e_->check(check_of(id))->rule.window_start_us);

  // The embedded errors, and nothing changed by them.
  EXPECT_EQ(b_->reset_period("ghost", "api_calls", "k").error().to_string(),
            e_->reset_period("ghost", "api_calls", "k").error().to_string());
  EXPECT_EQ(b_->reset_period(id, "nope", "k").error().to_string(),
            e_->reset_period(id, "nope", "k").error().to_string());
  EXPECT_EQ(b_->get_customer(id)->resets, reset_embedded->resets);
}

// Denied checks on two nodes are counted where both see them: either node's history is their
// sum, minute by minute, and equals the embedded engine's after the same checks (a denied check
// of a batch counts, its sibling not consumed because of it does not).
TEST_F(ClusterHistoryTest, DenialsOnTwoNodesAreSummedInTheHistoryOfEither) {
  start();
  ASSERT_TRUE(a_ && b_ && e_);
  const std::string id = on_shard("den", 0);
  create(id);
  const std::vector<LimitOverride> overrides = {{"api_calls", LimitPeriod::kDay, 0, "2", true}};
  ASSERT_TRUE(a_->set_overrides(id, overrides).has_value());
  ASSERT_TRUE(e_->set_overrides(id, overrides).has_value());
  int allowed = 0;
  int allowed_embedded = 0;
  check_both(id, 7, &allowed, &allowed_embedded);  // 5 denied, 3 on a, 2 on b
  EXPECT_EQ(allowed, 2);
  EXPECT_EQ(allowed_embedded, 2);
  clock_.advance_us(kMinuteUs);
  // A batch: tokens allowed, then api_calls denied: one denial.
  const std::vector<CheckRequest> batch = {check_of(id, "tokens", "5"), check_of(id)};
  auto denied = b_->check_batch(batch);
  ASSERT_TRUE(denied.has_value()) << denied.error().to_string();
  ASSERT_TRUE(e_->check_batch(batch).has_value());
  EXPECT_EQ((*denied)[0].reason, Denial::kBatchDenied);
  auto want = e_->denials_last_hour(id);
  ASSERT_TRUE(want.has_value());
  EXPECT_EQ(want->total, 6u);
  for (Engine* n : {a_.get(), b_.get()}) {
    auto got = n->denials_last_hour(id);
    ASSERT_TRUE(got.has_value()) << got.error().to_string();
    EXPECT_EQ(got->customer, want->customer);
    EXPECT_EQ(got->from_us, want->from_us);
    EXPECT_EQ(got->to_us, want->to_us);
    EXPECT_EQ(got->total, want->total);
    EXPECT_EQ(got->per_minute, want->per_minute);
  }
  EXPECT_EQ(a_->denials_last_hour(id)->per_minute[58], 5u);
  EXPECT_EQ(a_->denials_last_hour(id)->per_minute[59], 1u);
  // An hour later the first minute is out of the history.
  clock_.advance_us(59 * kMinuteUs);
  EXPECT_EQ(b_->denials_last_hour(id)->total, 1u);
  EXPECT_EQ(b_->denials_last_hour(id)->per_minute, e_->denials_last_hour(id)->per_minute);
  EXPECT_EQ(a_->denials_last_hour("ghost").error().to_string(),
            e_->denials_last_hour("ghost").error().to_string());
}

// ---- the all-or-nothing batch (IngestOptions::all_or_nothing: the Lago API's events) ---------

// An all-or-nothing answer as text, to compare a node's with the embedded store's: the counts,
// whether a batch id was given, and each fault (index, id, code, message).
std::string whole_answer(const Result<IngestSummary>& r) {
  if (!r) {
    return "error " + r.error().to_string();
  }
  std::string out = "accepted " + std::to_string(r->accepted) + " rejected " +
                    std::to_string(r->rejected) + " duplicates " + std::to_string(r->duplicates) +
                    (r->batch_id.empty() ? " no batch" : " batch");
  for (const EventError& e : r->errors) {
    out += "\n" + std::to_string(e.index) + " " + e.id + " " + e.code + " " + e.message;
  }
  return out;
}

class ClusterBatchTest : public ClusterEngineTest {
 protected:
  // Sends `body` all or nothing to the node and to the embedded engine: the same answer.
  std::string same_whole(Engine& node, Engine& embedded, const std::string& body) {
    IngestOptions whole;
    whole.all_or_nothing = true;
    const std::string want = whole_answer(embedded.ingest_json(body, whole));
    EXPECT_EQ(whole_answer(node.ingest_json(body, whole)), want) << body;
    return want;
  }

  int stored(PgServer& server, const std::string& sql) {
    auto r = server.psql(db_, sql);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    return r ? std::stoi(*r) : -1;
  }
};

TEST_F(ClusterBatchTest, AFaultStoresNothingAndTheAnswersAreTheEmbeddedOnes) {
  auto a = node();
  auto e = embedded();
  ASSERT_TRUE(a && e);
  const std::string old = R"([{"id":"old","customer_id":"c1","type":"api_call",)"
                          R"("timestamp":"2026-12-07T09:30:00Z"}])";
  ASSERT_EQ(a->ingest_json(old)->accepted, 1u);
  ASSERT_EQ(e->ingest_json(old)->accepted, 1u);
  // A stored duplicate, a duplicate inside the request, an invalid event and a new customer:
  // nothing stored, each fault named by its index, the new customer not created.
  const std::string faulty = R"([
    {"id":"n1","customer_id":"c1","type":"api_call","timestamp":"2026-12-07T09:31:00Z"},
    {"id":"old","customer_id":"c1","type":"api_call","timestamp":"2026-12-07T09:31:00Z"},
    {"id":"n1","customer_id":"c1","type":"api_call","timestamp":"2026-12-07T09:31:00Z"},
    {"id":"n2","customer_id":"c1","type":"api_call","timestamp":"yesterday"},
    {"id":"old","customer_id":"c9","type":"completion","timestamp":"2026-12-07T09:31:00Z",
     "properties":{"tokens":5}}])";
  const std::string refused = same_whole(*a, *e, faulty);
  EXPECT_NE(refused.find("accepted 0 rejected 5 duplicates 0 no batch"), std::string::npos)
      << refused;
  EXPECT_NE(refused.find("2 n1 DUPLICATE"), std::string::npos) << refused;
  EXPECT_EQ(a->get_customer("c9").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(stored(*pg_, "SELECT count(*) FROM events"), 1);
  // Only the stored duplicate: still refused whole.
  same_whole(*a, *e, R"([
    {"id":"n1","customer_id":"c1","type":"api_call","timestamp":"2026-12-07T09:31:00Z"},
    {"id":"old","customer_id":"c1","type":"api_call","timestamp":"2026-12-07T09:31:00Z"}])");
  EXPECT_EQ(stored(*pg_, "SELECT count(*) FROM events"), 1);
  // Without a fault it is stored whole, the new customer created; sent again, every event is a
  // duplicate and nothing changes.
  const std::string fine = R"([
    {"id":"n1","customer_id":"c1","type":"api_call","timestamp":"2026-12-07T09:31:00Z"},
    {"id":"n2","customer_id":"c9","type":"completion","timestamp":"2026-12-07T09:32:00Z",
     "properties":{"tokens":5}},
    {"id":"n3","customer_id":"c9","type":"completion","timestamp":"2026-12-07T09:33:00Z",
     "properties":{"tokens":7}}])";
  EXPECT_EQ(same_whole(*a, *e, fine), "accepted 3 rejected 0 duplicates 0 batch");
  EXPECT_NE(same_whole(*a, *e, fine).find("accepted 0 rejected 3"), std::string::npos);
  same_whole(*a, *e, "[]");
  for (const char* customer : {"c1", "c9"}) {
    for (const char* meter : {"api_calls", "tokens"}) {
      EXPECT_EQ(value_of(*a, meter, customer), value_of(*e, meter, customer))
          << customer << " " << meter;
    }
  }
  EXPECT_EQ(value_of(*a, "tokens", "c9"), "12");
  auto c9 = a->get_customer("c9");
  ASSERT_TRUE(c9.has_value()) << c9.error().to_string();
  EXPECT_EQ(c9->created_at_us, kNow);
  EXPECT_EQ(stored(*pg_, "SELECT count(*) FROM events"), 4);
  auto verified = a->verify();
  ASSERT_TRUE(verified.has_value()) << verified.error().to_string();
  EXPECT_TRUE(verified->differences.empty());
  // The window counters of a check count the batch's events: 2 of c1's 50 used.
  auto r = a->check(check_of("c1", "api_calls", "48"));
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_TRUE(r->allowed);
  EXPECT_FALSE(a->check(check_of("c1"))->allowed);
}

TEST_F(ClusterBatchTest, UnknownCustomersAreRefusedWhenNotCreatedOnFirstUse) {
  migrate();
  const std::string strict = "\n[server]\nauto_create_customers = false\n";
  auto n = open(config(strict));
  ASSERT_TRUE(n.has_value()) << n.error().to_string();
  auto e = embedded(strict);
  ASSERT_TRUE(e);
  Customer c;
  c.id = "c1";
  ASSERT_TRUE((*n)->create_customer(c).has_value());
  ASSERT_TRUE(e->create_customer(c).has_value());
  const std::string answer = same_whole(**n, *e, R"([
    {"id":"a","customer_id":"c1","type":"api_call","timestamp":"2026-12-07T09:31:00Z"},
    {"id":"a","customer_id":"nobody","type":"api_call","timestamp":"2026-12-07T09:31:00Z"},
    {"id":"a","customer_id":"c1","type":"api_call","timestamp":"2026-12-07T09:31:00Z"}])");
  EXPECT_NE(answer.find("1 a UNKNOWN_CUSTOMER"), std::string::npos) << answer;
  EXPECT_NE(answer.find("2 a DUPLICATE"), std::string::npos) << answer;
  EXPECT_EQ(value_of(**n, "api_calls", "c1"), value_of(*e, "api_calls", "c1"));
  EXPECT_EQ(stored(*pg_, "SELECT count(*) FROM events"), 0);
}

TEST_F(ClusterBatchTest, ABatchSpanningShardsIsNotImplementedUnlessItIsRefused) {
  ASSERT_TRUE(pg2_->create_database(db_).ok());
  two_shards_ = true;
  auto a = node();
  auto e = embedded();
  ASSERT_TRUE(a && e);
  // Customers of each shard.
  std::vector<std::string> on[2];
  for (int i = 0; on[0].size() < 2 || on[1].size() < 2; ++i) {
    const std::string id = "s" + std::to_string(i);
    on[cluster::shard_of(id, 2)].push_back(id);
  }
  auto event = [](const std::string& id, const std::string& customer) {
    return R"({"id":")" + id + R"(","customer_id":")" + customer +
           R"(","type":"api_call","timestamp":"2026-12-07T09:31:00Z"})";
  };
  // Two customers of the second shard: one transaction there.
  const std::string one_shard =
      "[" + event("x1", on[1][0]) + "," + event("x2", on[1][1]) + "," + event("x3", on[1][0]) + "]";
  EXPECT_EQ(same_whole(*a, *e, one_shard), "accepted 3 rejected 0 duplicates 0 batch");
  EXPECT_EQ(stored(*pg2_, "SELECT count(*) FROM events"), 3);
  EXPECT_EQ(stored(*pg_, "SELECT count(*) FROM events"), 0);
  // A fault refuses a batch over both shards as the embedded store does.
  const std::string faulty = "[" + event("y1", on[0][0]) + "," + event("x1", on[1][0]) + "]";
  EXPECT_NE(same_whole(*a, *e, faulty).find("1 x1 DUPLICATE"), std::string::npos);
  // Without one, it would have to commit on both shards at once: 501, nothing written.
  IngestOptions whole;
  whole.all_or_nothing = true;
  auto spanning =
      a->ingest_json("[" + event("y1", on[0][0]) + "," + event("y2", on[1][1]) + "]", whole);
  ASSERT_FALSE(spanning.has_value());
  EXPECT_EQ(spanning.error().code(), StatusCode::kNotImplemented);
  EXPECT_NE(spanning.error().message().find("more than one shard"), std::string::npos)
      << spanning.error().message();
  EXPECT_EQ(
      stored(*pg_, "SELECT count(*) FROM events") + stored(*pg2_, "SELECT count(*) FROM events"),
      3);
  EXPECT_EQ(a->get_customer(on[0][0]).error().code(), StatusCode::kNotFound);
}

TEST_F(ClusterBatchTest, TheSameBatchOnTwoNodesAtOnceIsStoredOnceAndRefusedOnce) {
  auto a = node();
  auto b = node();
  ASSERT_TRUE(a && b);
  IngestOptions whole;
  whole.all_or_nothing = true;
  constexpr int kRounds = 12;
  constexpr int kEvents = 30;
  for (int round = 0; round < kRounds; ++round) {
    // Each round a new customer (created by the batch stored) and ids of its own.
    std::string body = "[";
    for (int i = 0; i < kEvents; ++i) {
      body +=
          std::string(i == 0 ? "" : ",") + R"({"id":"r)" + std::to_string(round) + "-" +
          std::to_string(i) + R"(","customer_id":"racer)" + std::to_string(round) +
          R"(","type":"completion","timestamp":"2026-12-07T09:31:00Z","properties":{"tokens":2}})";
    }
    body += "]";
    std::atomic<int> ready{0};
    Result<IngestSummary> answers[2] = {Status::internal("not run"), Status::internal("not run")};
    auto send = [&](Engine& node, int k) {
      ready.fetch_add(1);
      while (ready.load() < 2) {
        std::this_thread::yield();
      }
      answers[k] = node.ingest_json(body, whole);
    };
    std::thread ta(send, std::ref(*a), 0);
    std::thread tb(send, std::ref(*b), 1);
    ta.join();
    tb.join();
    SCOPED_TRACE("round " + std::to_string(round));
    ASSERT_TRUE(answers[0].has_value()) << answers[0].error().to_string();
    ASSERT_TRUE(answers[1].has_value()) << answers[1].error().to_string();
    const int winner = answers[0]->accepted > 0 ? 0 : 1;
    const IngestSummary& won = *answers[winner];
    const IngestSummary& lost = *answers[1 - winner];
    EXPECT_EQ(won.accepted, static_cast<std::uint32_t>(kEvents));
    EXPECT_TRUE(won.errors.empty());
    EXPECT_EQ(lost.accepted, 0u);
    EXPECT_EQ(lost.rejected, static_cast<std::uint32_t>(kEvents));
    ASSERT_EQ(lost.errors.size(), static_cast<std::size_t>(kEvents));
    EXPECT_EQ(lost.errors[0].code, "DUPLICATE");
    EXPECT_EQ(value_of(*b, "tokens", "racer" + std::to_string(round)), std::to_string(2 * kEvents));
  }
  EXPECT_EQ(stored(*pg_, "SELECT count(*) FROM events"), kRounds * kEvents);
  auto verified = a->verify();
  ASSERT_TRUE(verified.has_value()) << verified.error().to_string();
  EXPECT_TRUE(verified->differences.empty());
}

// ---- checks on latest and max meters (gauges) ---------------------------------------------

constexpr const char* kGauges = R"(
[[meters]]
key = "seats"
event_type = "seats_gauge"
aggregation = "latest"
value = "$.count"

[[meters]]
key = "storage"
event_type = "storage_gauge"
aggregation = "max"
value = "$.gb"

[[plans]]
key = "gauges"
features = ["chat"]
limits = [
  { meter = "seats", period = "day", amount = 10 },
  { meter = "seats", period = "month", amount = 11, hard = false },
  { meter = "storage", period = "month", amount = 100 },
]
)";

// A check's answer as text, to compare a node's with the embedded store's.
std::string check_text(const Result<CheckResult>& r) {
  if (!r) {
    return "error " + r.error().to_string();
  }
  auto state = [](const LimitState& l) {
    return l.rule() + " hard " + std::to_string(l.hard) + " limit " + l.limit.text() + " used " +
           l.used.text() + " remaining " + l.remaining.text() + " window " +
           std::to_string(l.window_start_us) + " reset " + std::to_string(l.reset_us);
  };
  std::string out = std::string(r->allowed ? "allowed" : "denied") + " " +
                    std::string(denial_name(r->reason)) + " '" + r->message + "' plan " + r->plan +
                    " meter " + r->meter + " amount " + r->amount.text() + " overage " +
                    std::to_string(r->overage) + " replayed " + std::to_string(r->replayed) +
                    " retry " + std::to_string(r->retry_after_us);
  if (r->has_rule) {
    out += "\nrule " + state(r->rule);
  }
  for (const LimitState& l : r->limits) {
    out += "\nlimit " + state(l);
  }
  return out;
}

class ClusterGaugeTest : public ClusterEngineTest {
 protected:
  void start() {
    migrate();
    for (auto* n : {&a_, &b_}) {
      auto opened = open(config(kGauges));
      ASSERT_TRUE(opened.has_value()) << opened.error().to_string();
      *n = std::move(*opened);
    }
    e_ = embedded(kGauges);
    ASSERT_NE(e_, nullptr);
  }

  void customer(const std::string& id, const std::string& plan) {
    Customer c;
    c.id = id;
    c.plan = plan;
    ASSERT_TRUE(a_->create_customer(c).has_value());
    ASSERT_TRUE(e_->create_customer(c).has_value());
  }

  // One reading of a gauge at `time`, ingested on node a and on the embedded engine.
  void reading(const std::string& id, const std::string& customer, const std::string& type,
               const std::string& property, const std::string& value, const std::string& time) {
    const std::string body = R"([{"id":")" + id + R"(","customer_id":")" + customer +
                             R"(","type":")" + type + R"(","timestamp":")" + time +
                             R"(","properties":{")" + property + R"(":)" + value + "}}]";
    ASSERT_EQ(a_->ingest_json(body)->accepted, 1u) << body;
    ASSERT_EQ(e_->ingest_json(body)->accepted, 1u) << body;
  }

  // The check on `node` answers as the embedded engine's; returns that answer.
  std::string same_check(Engine& node, const CheckRequest& r) {
    const std::string want = check_text(e_->check(r));
    e_->flush();  // its usage committed: the node writes a gauge check's before answering
    EXPECT_EQ(check_text(node.check(r)), want);
    return want;
  }

  static CheckRequest gauge_check(const std::string& customer, const std::string& meter,
                                  const std::string& amount, Consume consume = Consume::kYes,
                                  const std::string& event_id = "") {
    CheckRequest r = check_of(customer, meter, amount);
    r.consume = consume;
    r.event_id = event_id;
    return r;
  }

  std::unique_ptr<Engine> a_;
  std::unique_ptr<Engine> b_;
  std::unique_ptr<Engine> e_;
};

TEST_F(ClusterGaugeTest, LatestAndMaxLimitsAreTheEmbeddedAnswers) {
  start();
  customer("g1", "gauges");
  customer("g2", "gauges");
  // latest: 7 reported; a check of 2 fits (9 of 10 a day) and sets the gauge to 9.
  reading("s1", "g1", "seats_gauge", "count", "7", "2026-12-07T09:30:00Z");
  EXPECT_NE(same_check(*a_, gauge_check("g1", "seats", "2")).find("allowed"), std::string::npos);
  EXPECT_NE(same_check(*b_, gauge_check("g1", "seats", "2")).find("denied limit_exceeded"),
            std::string::npos);
  same_check(*a_, gauge_check("g1", "seats", "1", Consume::kNo));
  // An earlier reading does not replace the check's later value; one more fits, then none.
  reading("s2", "g1", "seats_gauge", "count", "3", "2026-12-07T09:40:00Z");
  same_check(*b_, gauge_check("g1", "seats", "1"));
  EXPECT_NE(same_check(*a_, gauge_check("g1", "seats", "1")).find("denied"), std::string::npos);
  // A later, lower reading replaces it: 2 reported, 8 more fit (the soft month limit of 11 is
  // not passed), then 1 more is denied.
  clock_.advance_us(60'000'000);
  reading("s3", "g1", "seats_gauge", "count", "2", "2026-12-07T10:01:00Z");
  EXPECT_NE(same_check(*b_, gauge_check("g1", "seats", "8")).find("allowed"), std::string::npos);
  same_check(*a_, gauge_check("g1", "seats", "1"));
  // max: the highest reading of the month, plus the checks' amounts.
  reading("t1", "g1", "storage_gauge", "gb", "50", "2026-12-07T09:10:00Z");
  reading("t2", "g1", "storage_gauge", "gb", "80.5", "2026-12-07T09:20:00Z");
  EXPECT_NE(same_check(*a_, gauge_check("g1", "storage", "19.5")).find("allowed"),
            std::string::npos);
  same_check(*b_, gauge_check("g1", "storage", "0.25"));
  reading("t3", "g1", "storage_gauge", "gb", "30", "2026-12-07T10:01:00Z");
  same_check(*b_, gauge_check("g1", "storage", "0.25", Consume::kNo));
  // A check with an event id consumes once across the nodes; asking again is a replay.
  reading("s4", "g2", "seats_gauge", "count", "4", "2026-12-07T09:30:00Z");
  same_check(*a_, gauge_check("g2", "seats", "3", Consume::kYes, "once"));
  EXPECT_NE(
      same_check(*b_, gauge_check("g2", "seats", "3", Consume::kYes, "once")).find("replayed 1"),
      std::string::npos);
  same_check(*b_, gauge_check("g2", "seats", "4"));
  e_->flush();
  for (const char* c : {"g1", "g2"}) {
    SCOPED_TRACE(c);
    EXPECT_EQ(report_text(a_->limits_report(c)), report_text(e_->limits_report(c)));
    EXPECT_EQ(report_text(b_->limits_report(c)), report_text(e_->limits_report(c)));
    for (const char* meter : {"seats", "storage"}) {
      EXPECT_EQ(value_of(*b_, meter, c), value_of(*e_, meter, c)) << meter;
    }
  }
  EXPECT_EQ(value_of(*a_, "seats", "g2"), "7");
  auto verified = a_->verify();
  ASSERT_TRUE(verified.has_value()) << verified.error().to_string();
  EXPECT_TRUE(verified->differences.empty());
  // What the mode does not do with gauges answers 501; nothing is consumed.
  EXPECT_EQ(a_->check(gauge_check("g1", "storage", "1", Consume::kReserve)).error().code(),
            StatusCode::kNotImplemented);
  auto batch = a_->check_batch({gauge_check("g2", "seats", "1"), check_of("g2")});
  ASSERT_FALSE(batch.has_value());
  EXPECT_EQ(batch.error().code(), StatusCode::kNotImplemented);
  EXPECT_EQ(value_of(*a_, "seats", "g2"), "7");
}

TEST_F(ClusterGaugeTest, TwoNodesTogetherNeverAdmitPastAGaugesLimit) {
  start();
  customer("g4", "gauges");
  reading("s1", "g4", "seats_gauge", "count", "2", "2026-12-07T09:30:00Z");
  // 8 of the day's 10 are left: 48 checks of 1 from 6 threads on two nodes admit exactly 8.
  const RaceCounts got = race(*a_, *b_, 6, 8, [](Engine& e) {
    return attempt_of(e.check(gauge_check("g4", "seats", "1")));
  });
  EXPECT_EQ(got.failed, 0);
  EXPECT_EQ(got.allowed, 8);
  EXPECT_EQ(value_of(*a_, "seats", "g4"), "10");
  auto denied = b_->check(gauge_check("g4", "seats", "1", Consume::kNo));
  ASSERT_TRUE(denied.has_value()) << denied.error().to_string();
  EXPECT_FALSE(denied->allowed);
  EXPECT_EQ(denied->rule.used.text(), "10");
}

// ---- the customer and organization summaries -----------------------------------------------

// A second plan for the summaries: a lower daily limit, so percents differ by plan.
constexpr const char* kSummaryPlans = R"(
[[plans]]
key = "pro"
features = ["chat", "export"]
limits = [
  { meter = "api_calls", period = "day", amount = 20 },
  { meter = "api_calls", period = "minute", amount = 500, hard = false },
]
)";

// Every field of a page of customer summaries, one customer per line.
std::string summaries_text(const Result<CustomerSummaryPage>& p) {
  if (!p) {
    return "error: " + p.error().to_string();
  }
  std::string out = "total " + std::to_string(p->total);
  for (const CustomerSummary& s : p->customers) {
    out += "\n" + s.id + "|" + s.name + "|" + s.plan + "|" + std::string(to_string(s.status)) +
           "|" + s.organization + "|" + s.max_percent + "|" + s.max_rule;
  }
  return out;
}

// Every field of a page of organization summaries, one organization per line.
std::string organizations_text(const Result<OrganizationSummaryPage>& p) {
  if (!p) {
    return "error: " + p.error().to_string();
  }
  std::string out = "total " + std::to_string(p->total);
  for (const OrganizationSummary& o : p->organizations) {
    out += "\n" + o.organization + "|" + std::to_string(o.customers) + "|" +
           std::to_string(o.suspended) + "|" + o.max_percent + "|" + o.max_customer + "|" +
           o.max_rule + "|";
    for (const UsageItem& m : o.meters) {
      out += " " + m.meter + "/" + std::string(to_string(m.aggregation)) + "/" + m.unit + "=" +
             m.value;
    }
  }
  return out;
}

// The summaries read only the customers' records and their limits reports (and an organization's
// usage), which both modes answer alike: a node's pages are the embedded ones, by every sort, in
// both orders, searched and paged, and so are their refusals.
TEST_F(ClusterQueryTest, CustomerAndOrganizationSummariesAreTheEmbeddedAnswer) {
  start(kSummaryPlans);
  ASSERT_TRUE(cluster_ && embedded_);
  // Counters other tests of this binary left in the shared Redis for k1 and k2 (the same
  // customers, the same day) are dropped: this test's are seeded from its own database.
  for (const std::string& endpoint : redis_->endpoints()) {
    const auto port =
        static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.find(':') + 1)));
    redis_->cli(port, {"FLUSHALL"}).status().ignore_error();  // replicas refuse: READONLY
  }
  // Names, plans, a suspension and two organizations (each member on its organization's shard),
  // the same on both.
  std::vector<std::string> joined;
  for (int n = 2; n < 14; ++n) {
    const std::string id = "q" + std::to_string(n);
    CustomerPatch patch;
    patch.name = std::string(n % 3 == 0 ? "Zeta " : "acme ") + std::to_string(20 - n % 5);
    if (n % 4 == 0) {
      patch.plan = "pro";
    }
    if (n == 5 || n == 8) {
      patch.status = CustomerStatus::kSuspended;
    }
    ASSERT_TRUE(cluster_->update_customer(id, patch).has_value()) << id;
    ASSERT_TRUE(embedded_->update_customer(id, patch).has_value()) << id;
    CustomerPatch org;
    org.organization = n % 2 == 0 ? "k1" : "k2";
    auto in = cluster_->update_customer(id, org);
    if (!in) {
      EXPECT_EQ(in.error().code(), StatusCode::kNotImplemented) << in.error().to_string();
      continue;
    }
    ASSERT_TRUE(embedded_->update_customer(id, org).has_value()) << id;
    joined.push_back(id);
  }
  ASSERT_GE(joined.size(), 2u);
  // Usage today: q<n> calls n times, k1 once more by a check; the percents of the plans'
  // daily limits differ (and some tie: q4 on pro and q10 on free are both at 20 %).
  std::string body = "[";
  for (int n = 2; n < 14; ++n) {
    for (int i = 0; i < n; ++i) {
      body += std::string(body.size() == 1 ? "" : ",") + R"({"id":"s)" + std::to_string(n) + "_" +
              std::to_string(i) + R"(","customer_id":"q)" + std::to_string(n) +
              R"(","type":"api_call","timestamp":"2026-12-07T09:30:00Z"})";
    }
  }
  body += "]";
  ASSERT_EQ(cluster_->ingest_json(body)->accepted, 90u);
  ASSERT_EQ(embedded_->ingest_json(body)->accepted, 90u);
  ASSERT_TRUE(cluster_->check(check_of("k1"))->allowed);
  ASSERT_TRUE(embedded_->check(check_of("k1"))->allowed);
  cluster_->flush();
  embedded_->flush();

  auto same_page = [&](const CustomerSummaryQuery& q, const std::string& what) {
    SCOPED_TRACE(what);
    const std::string want = summaries_text(embedded_->customer_summaries(q));
    EXPECT_EQ(summaries_text(cluster_->customer_summaries(q)), want);
    return want;
  };
  for (CustomerSort sort : {CustomerSort::kId, CustomerSort::kName, CustomerSort::kPlan,
                            CustomerSort::kStatus, CustomerSort::kUsage}) {
    for (bool descending : {false, true}) {
      CustomerSummaryQuery q;
      q.sort = sort;
      q.descending = descending;
      q.limit = 1000;
      const std::string what =
          std::string(to_string(sort)) + (descending ? " descending" : " ascending");
      EXPECT_EQ(same_page(q, what).rfind("total 14\n", 0), 0u) << what;
    }
  }
  CustomerSummaryQuery by_usage;
  by_usage.sort = CustomerSort::kUsage;
  by_usage.descending = true;
  by_usage.limit = 1000;
  const std::string all = same_page(by_usage, "by usage");
  // q12 (pro, 12 of 20) first; q8 (pro, suspended) at 40 %, the organizations as joined.
  EXPECT_EQ(all.rfind("total 14\nq12|Zeta 18|pro|active|", 0), 0u) << all;
  EXPECT_NE(all.find("|60.00|api_calls per day\n"), std::string::npos) << all;
  EXPECT_NE(all.find("\nq8|acme 17|pro|suspended|"), std::string::npos) << all;
  EXPECT_NE(all.find("|40.00|api_calls per day\n"), std::string::npos) << all;
  // Pages of 4 by usage, one past the end; searches in any case, by id or name.
  by_usage.limit = 4;
  for (std::uint32_t offset : {0u, 4u, 8u, 12u, 40u}) {
    by_usage.offset = offset;
    same_page(by_usage, "a page from " + std::to_string(offset));
  }
  for (const char* search : {"Q1", "zeta", "ACME 1", "k", "nobody"}) {
    CustomerSummaryQuery q;
    q.search = search;
    q.sort = CustomerSort::kName;
    same_page(q, std::string("searching ") + search);
  }
  CustomerSummaryQuery bad;
  bad.limit = 0;
  EXPECT_EQ(same_page(bad, "limit 0").rfind("error", 0), 0u);
  bad.limit = 1001;
  EXPECT_EQ(same_page(bad, "limit 1001").rfind("error", 0), 0u);

  auto same_organizations = [&](std::uint32_t offset, std::uint32_t limit) {
    SCOPED_TRACE("organizations from " + std::to_string(offset) + ", " + std::to_string(limit));
    const std::string want = organizations_text(embedded_->organization_summaries(offset, limit));
    EXPECT_EQ(organizations_text(cluster_->organization_summaries(offset, limit)), want);
    return want;
  };
  const std::string orgs = same_organizations(0, 100);
  EXPECT_EQ(orgs.rfind("total ", 0), 0u) << orgs;
  EXPECT_NE(orgs.find("|api_calls per day| "), std::string::npos) << orgs;
  EXPECT_NE(orgs.find(" api_calls/count/="), std::string::npos) << orgs;
  same_organizations(0, 1);
  same_organizations(1, 1);
  same_organizations(2, 5);
  EXPECT_EQ(same_organizations(0, 0).rfind("error", 0), 0u);
  EXPECT_EQ(same_organizations(0, 101).rfind("error", 0), 0u);
}

// ---- ad-hoc limits ---------------------------------------------------------------------------

// Every field of the answers of an ad-hoc request, one limit per line.
std::string adhoc_text(const Result<std::vector<AdHocResult>>& r) {
  if (!r) {
    return "error: " + r.error().to_string();
  }
  std::string out;
  for (const AdHocResult& x : *r) {
    out += x.ns + "|" + x.identifier + "|" + (x.allowed ? "allowed" : "denied") + "|" +
           std::to_string(x.limit) + "|" + std::to_string(x.used) + "|" +
           std::to_string(x.remaining) + "|" + std::to_string(x.window_start_us) + "|" +
           std::to_string(x.reset_us) + "\n";
  }
  return out;
}

// POST /v1/ratelimit's limits on two nodes answer as the embedded store does, request after
// request (alternating nodes: the windows are shared), all or nothing, with its refusals; and
// two nodes checking one limit at once never admit more than it, nor fewer.
TEST_F(ClusterEngineTest, AdHocLimitsAreTheEmbeddedAnswersAndTwoNodesNeverAdmitMoreThanTheLimit) {
  auto a = node();
  auto b = node();
  ASSERT_TRUE(a && b);
  std::unique_ptr<Engine> e = embedded();
  ASSERT_TRUE(e);

  auto lim = [](const std::string& id, std::int64_t n, std::int64_t cost = 1,
                std::int64_t duration_ms = 60'000, const std::string& ns = "adhoc.sms") {
    return AdHocLimit{ns, id, n, duration_ms, cost};
  };
  int step = 0;
  auto same = [&](const std::vector<AdHocLimit>& ls, const std::string& what) {
    SCOPED_TRACE(what);
    Engine& n = step++ % 2 == 0 ? *a : *b;
    const std::string want = adhoc_text(e->limit_adhoc(ls));
    EXPECT_EQ(adhoc_text(n.limit_adhoc(ls)), want);
    return want;
  };
  for (int i = 0; i < 3; ++i) {
    EXPECT_NE(same({lim("u1", 3)}, "u1 #" + std::to_string(i)).find("|allowed|"),
              std::string::npos);
  }
  EXPECT_NE(same({lim("u1", 3)}, "u1 over").find("|denied|3|3|0|"), std::string::npos);
  same({lim("u1", 3, 0)}, "a cost of 0 only asks");
  same({lim("u1", 5)}, "a higher limit counts on the same window");
  same({lim("u1", 3, 1, 3'600'000)}, "another window length");
  same({lim("u1", 3, 1, 60'000, "adhoc.email")}, "another namespace");
  same({lim("{u1}", 2, 2, 60'000, "~adhoc")}, "braces and a tilde");
  same({lim("u2", 0, 0)}, "a limit of 0 asked");
  same({lim("u2", 0)}, "a limit of 0");
  // All or nothing: the denied one leaves every window as it was, the same window twice counts
  // twice, and every answer says what its window holds after.
  ASSERT_TRUE(same({lim("b", 2)}, "b once").find("|allowed|") != std::string::npos);
  EXPECT_NE(same({lim("a", 5), lim("b", 2, 2), lim("a", 5, 3)}, "b denied").find("|denied|"),
            std::string::npos);
  same({lim("a", 5, 0)}, "a untouched");
  same({lim("a", 5, 2), lim("a", 5, 3)}, "a twice");
  same({lim("a", 5, 1), lim("c", 9, 4), lim("a", 5, 0)}, "a over, c given back");
  same({lim("c", 9, 0)}, "c untouched");
  // A new window.
  clock_.advance_us(60'000'000);
  same({lim("u1", 3, 3)}, "u1 in the next minute");
  same({lim("a", 5, 5)}, "a in the next minute");
  // The refusals, and nothing counted by them.
  same({}, "no limits");
  same(std::vector<AdHocLimit>(101, lim("many", 200)), "101 limits");
  same({lim("bad\x01", 3)}, "a control character");
  same({lim("d", 3), lim("d", 3, 1, 999)}, "a short window");
  same({lim("d", 3), lim("d", -1)}, "a negative limit");
  same({lim("d", 3, 1'000'000'000'000'001)}, "a cost above 1e15");
  same({lim("d", 3, 0)}, "d untouched");
  same({lim("big", 1'000'000'000'000'000, 999'999'999'999'999)}, "near 1e15");
  same({lim("big", 1'000'000'000'000'000, 2)}, "past it");

  // 8 threads on two nodes, 100 requests of one limit of 50: exactly 50 admitted.
  const RaceCounts got = race(*a, *b, 8, 13, [&](Engine& n) {
    auto r = n.limit_adhoc({lim("race", 50)});
    return !r ? Attempt::kFailed : (*r)[0].allowed ? Attempt::kAllowed : Attempt::kDenied;
  });
  EXPECT_EQ(got.failed, 0);
  EXPECT_EQ(got.allowed, 50);
  auto left = b->limit_adhoc({lim("race", 50, 0)});
  ASSERT_TRUE(left.has_value()) << left.error().to_string();
  EXPECT_EQ((*left)[0].used, 50);
}

// ---- keys of every shard's customers (schema version 11) -----------------------------------

// Keys live on shard 0: a key of a customer on shard 1 was refused by a reference to shard 0's
// customers, and an admin key's scopes (the high bit) did not fit an integer column.
TEST_F(ClusterHistoryTest, CustomersOfEveryShardAndAdminsHaveKeysThatEveryNodeKnows) {
  start();
  for (std::size_t shard : {0u, 1u}) {
    const std::string id = on_shard("keyed", shard);
    create(id);
    NewApiKeyRequest request;
    request.customer = id;
    request.name = "k";
    auto made = a_->create_key(request, "admin");
    ASSERT_TRUE(made.has_value()) << "shard " << shard << ": " << made.error().to_string();
    auto who = b_->authenticate(made->secret);
    ASSERT_TRUE(who.has_value()) << "shard " << shard << ": " << who.error().to_string();
    EXPECT_EQ(who->customer, id);
    EXPECT_FALSE(who->admin());
    EXPECT_EQ(who->scopes, made->info.scopes);
  }
  auto admin = a_->create_key(NewApiKeyRequest{}, "admin");
  ASSERT_TRUE(admin.has_value()) << admin.error().to_string();
  EXPECT_TRUE(has(admin->info.scopes, Scope::kAdmin));
  auto who = b_->authenticate(admin->secret);
  ASSERT_TRUE(who.has_value()) << who.error().to_string();
  EXPECT_TRUE(who->admin());
  EXPECT_EQ(who->scopes, admin->info.scopes);
  // A customer that exists on no shard still has no key, as on the embedded store.
  NewApiKeyRequest nobody;
  nobody.customer = "nobody-here";
  EXPECT_EQ(a_->create_key(nobody, "admin").error().code(),
            e_->create_key(nobody, "admin").error().code());
}

// Leased checks (docs/cluster.md, "Leased checks"): each node takes 10 of the day's 50 at once
// and answers from it. Together they never admit more than 50; a node may deny while another
// holds unused units, and those go back when the lease ends, so in the end exactly 50 are
// admitted, and exactly 50 are written.
TEST_F(ClusterEngineTest, LeasedChecksNeverAdmitMoreThanTheLimitAndUnusedLeasesGoBack) {
  migrate();
  const std::string leased = config() + "check_lease = 10\ncheck_lease_ms = 500\n";
  auto a = open(leased);
  auto b = open(leased);
  ASSERT_TRUE(a.has_value()) << a.error().to_string();
  ASSERT_TRUE(b.has_value()) << b.error().to_string();
  for (const char* id : {"leased", "busy"}) {
    Customer c;
    c.id = id;
    ASSERT_TRUE((*a)->create_customer(c).has_value());
  }
  auto check_until_denied = [&](Engine& e, const std::string& customer) {
    int admitted = 0;
    for (;;) {
      auto r = e.check(check_of(customer));
      EXPECT_TRUE(r.has_value()) << r.error().to_string();
      if (!r || !r->allowed) {
        if (r) {
          EXPECT_EQ(r->reason, Denial::kLimitExceeded);
        }
        return admitted;
      }
      ++admitted;
    }
  };

  // Node a takes a lease of 10 and uses 3: its answers count what was used, not what it holds.
  for (int i = 0; i < 3; ++i) {
    auto r = (*a)->check(check_of("leased"));
    ASSERT_TRUE(r.has_value()) << r.error().to_string();
    ASSERT_TRUE(r->allowed);
    ASSERT_EQ(r->limits.size(), 2u);
    EXPECT_EQ(r->limits[0].used.text(), std::to_string(i + 1));
    EXPECT_EQ(r->limits[0].remaining.text(), std::to_string(50 - i - 1));
  }
  // Node b gets the 40 that no lease holds; a's 7 unused count as used until its lease ends.
  EXPECT_EQ(check_until_denied(**b, "leased"), 40);
  // The lease's life passes: a gives its 7 back (its usage writer's sweep), and b admits them.
  clock_.advance_us(600'000);
  int late = 0;
  for (int tries = 0; tries < 200 && late == 0; ++tries) {
    late = check_until_denied(**b, "leased");
    if (late == 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  EXPECT_EQ(late, 7);
  EXPECT_EQ(check_until_denied(**a, "leased"), 0);
  (*a)->flush();
  (*b)->flush();
  EXPECT_EQ(value_of(**a, "api_calls", "leased"), "50");

  // 8 threads on the two nodes, 104 checks of another customer: never more than 50, and fewer
  // by at most what the two nodes' leases hold unused (9 each).
  const RaceCounts got =
      race(**a, **b, 8, 13, [](Engine& e) { return attempt_of(e.check(check_of("busy"))); });
  EXPECT_EQ(got.failed, 0);
  EXPECT_LE(got.allowed, 50);
  EXPECT_GE(got.allowed, 50 - 2 * 9);
  // Once both leases have ended and gone back, the rest of the day is admitted, and no more.
  clock_.advance_us(600'000);
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const int rest = check_until_denied(**a, "busy");
  EXPECT_EQ(got.allowed + rest, 50);
  EXPECT_EQ(check_until_denied(**b, "busy"), 0);
  (*a)->flush();
  (*b)->flush();
  EXPECT_EQ(value_of(**b, "api_calls", "busy"), "50");
}

}  // namespace
}  // namespace tally
