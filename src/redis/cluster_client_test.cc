// ClusterClient against real servers: one Redis Cluster (3 primaries + 3 replicas, started once
// for the whole binary by tests/support/redis_cluster.h) and a single non-cluster Redis. The
// tests run in the order written; the failover test kills a primary, so it comes last among
// the cluster tests.
#include "redis/cluster_client.h"

#include <chrono>
#include <cstdio>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "redis/slot.h"
#include "support/redis_cluster.h"

namespace tally::redis {
namespace {

using testing::RedisServers;

std::uint16_t port_of(const std::string& endpoint) {
  return static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
}

// Asserts a reply is the text `want` (a bulk string or a status).
void expect_text(const Result<Reply>& reply, const std::string& want) {
  ASSERT_TRUE(reply.has_value()) << reply.error().to_string();
  EXPECT_TRUE(reply->is_text()) << "type " << static_cast<int>(reply->type) << ": " << reply->str;
  EXPECT_EQ(reply->str, want);
}

void expect_integer(const Result<Reply>& reply, std::int64_t want) {
  ASSERT_TRUE(reply.has_value()) << reply.error().to_string();
  ASSERT_TRUE(reply->is_integer())
      << "type " << static_cast<int>(reply->type) << ": " << reply->str;
  EXPECT_EQ(reply->integer, want);
}

// A small function library: the shape the check path will use (keys route, args carry amounts).
const char* const kLibrary =
    "#!lua name=tallytest\n"
    "redis.register_function('tally_test_add', function(keys, args)\n"
    "  local total = 0\n"
    "  for i, key in ipairs(keys) do total = total + redis.call('INCRBY', key, args[1]) end\n"
    "  return total\n"
    "end)\n";

class ClusterClientTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = testing::redis_programs_missing();
    if (!skip_reason_.empty()) {
      return;
    }
    auto started = RedisServers::start_cluster(3, 1);
    if (!started) {
      start_error_ = started.error().to_string();
      return;
    }
    cluster_ = std::move(*started);
  }

  static void TearDownTestSuite() { cluster_.reset(); }

  void SetUp() override {
    if (!skip_reason_.empty()) {
      GTEST_SKIP() << skip_reason_;
    }
    ASSERT_TRUE(cluster_) << "the cluster did not start: " << start_error_;
  }

  // A client seeded with one node only: it must discover the others.
  static std::unique_ptr<ClusterClient> connect(ClusterOptions options = {}) {
    options.seeds = {cluster_->endpoints().back()};
    auto client = ClusterClient::connect(options);
    EXPECT_TRUE(client.has_value()) << client.error().to_string();
    return client ? std::move(*client) : nullptr;
  }

  static std::string node_id(ClusterClient& client, const std::string& endpoint) {
    auto id = client.command_at(endpoint, {"CLUSTER", "MYID"});
    EXPECT_TRUE(id.has_value() && id->is_text());
    return id ? id->str : std::string();
  }

  static inline std::unique_ptr<RedisServers> cluster_;
  static inline std::string skip_reason_;
  static inline std::string start_error_;
};

TEST_F(ClusterClientTest, DiscoversThreePrimariesCoveringEverySlot) {
  auto client = connect();
  ASSERT_TRUE(client);
  EXPECT_FALSE(client->standalone());
  std::vector<std::string> primaries = client->primaries();
  EXPECT_EQ(primaries.size(), 3u);
  for (std::uint32_t slot = 0; slot < kSlotCount; ++slot) {
    ASSERT_FALSE(client->primary_for_slot(static_cast<std::uint16_t>(slot)).empty()) << slot;
  }
  EXPECT_GE(client->stats().slot_map_refreshes, 1u);
}

TEST_F(ClusterClientTest, KeySlotsAgreeWithTheServer) {
  auto client = connect();
  ASSERT_TRUE(client);
  std::vector<std::string> keys = {"foo",           "{user1000}.following",
                                   "foo{}{bar}",    "foo{{bar}}zap",
                                   "foo{bar}{zap}", std::string("bin\0ary\xff", 8)};
  for (int i = 0; i < 200; ++i) {
    keys.push_back("customer:" + std::to_string(i * 7919) + ":{tag" + std::to_string(i % 13) + "}");
  }
  for (const std::string& key : keys) {
    auto reply = client->command({"CLUSTER", "KEYSLOT", key});
    expect_integer(reply, key_slot(key));
  }
}

TEST_F(ClusterClientTest, SetAndGetAcrossAllPrimaries) {
  auto client = connect();
  ASSERT_TRUE(client);
  std::set<std::string> owners;
  for (int i = 0; i < 300; ++i) {
    std::string key = "spread:" + std::to_string(i);
    std::string value = "value " + std::to_string(i) + std::string("\0\r\n", 3);
    expect_text(client->command({"SET", key, value}), "OK");
    owners.insert(client->primary_for_slot(key_slot(key)));
  }
  EXPECT_EQ(owners.size(), 3u) << "300 keys should land on every primary";
  for (int i = 0; i < 300; ++i) {
    std::string key = "spread:" + std::to_string(i);
    expect_text(client->command({"GET", key}),
                "value " + std::to_string(i) + std::string("\0\r\n", 3));
    // The key really lives on the primary the map names (no redirect followed here).
    expect_integer(client->command_at(client->primary_for_slot(key_slot(key)), {"EXISTS", key}), 1);
  }
  auto missing = client->command({"GET", "spread:none"});
  ASSERT_TRUE(missing.has_value());
  EXPECT_TRUE(missing->is_nil());
  EXPECT_EQ(client->stats().moved, 0u);
  EXPECT_EQ(client->stats().ask, 0u);
}

TEST_F(ClusterClientTest, RedisErrorRepliesAreReplies) {
  auto client = connect();
  ASSERT_TRUE(client);
  expect_text(client->command({"SET", "err:string", "x"}), "OK");
  auto reply = client->command({"LPUSH", "err:string", "y"});
  ASSERT_TRUE(reply.has_value()) << reply.error().to_string();
  ASSERT_TRUE(reply->is_error());
  EXPECT_EQ(reply->str.rfind("WRONGTYPE", 0), 0u) << reply->str;
  expect_text(client->command({"GET", "err:string"}), "x");  // unchanged
}

TEST_F(ClusterClientTest, CrossSlotCommandsAreRefusedBeforeSending) {
  auto client = connect();
  ASSERT_TRUE(client);
  ASSERT_NE(key_slot("foo"), key_slot("bar"));
  std::uint64_t sent = client->stats().commands;
  auto mget = client->command({"MGET", "foo", "bar"});
  ASSERT_FALSE(mget.has_value());
  EXPECT_EQ(mget.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(mget.error().message().find("CROSSSLOT"), std::string::npos) << mget.error().message();
  EXPECT_NE(mget.error().message().find("12182"), std::string::npos);
  EXPECT_NE(mget.error().message().find("5061"), std::string::npos);
  auto fcall = client->command({"FCALL", "tally_test_add", "2", "{a}x", "{b}x", "1"});
  ASSERT_FALSE(fcall.has_value());
  EXPECT_NE(fcall.error().message().find("CROSSSLOT"), std::string::npos);
  auto mset = client->command({"MSET", "foo", "1", "bar", "2"});
  ASSERT_FALSE(mset.has_value());
  auto pipe = client->pipeline({{"SET", "foo", "1"}, {"SET", "bar", "1"}});
  ASSERT_FALSE(pipe.has_value());
  EXPECT_NE(pipe.error().message().find("CROSSSLOT"), std::string::npos);
  EXPECT_EQ(client->stats().commands, sent) << "a refused command must not be sent";
  // Nothing was written by the refused commands.
  auto foo = client->command({"EXISTS", "foo"});
  expect_integer(foo, 0);
  // Keys that share a hash tag are one slot: accepted.
  expect_text(client->command({"MSET", "{pair}a", "1", "{pair}b", "2"}), "OK");
  auto both = client->command({"MGET", "{pair}a", "{pair}b"});
  ASSERT_TRUE(both.has_value());
  ASSERT_EQ(both->elements.size(), 2u);
  EXPECT_EQ(both->elements[0].str, "1");
  EXPECT_EQ(both->elements[1].str, "2");
}

TEST_F(ClusterClientTest, MalformedCommandsAreRefused) {
  auto client = connect();
  ASSERT_TRUE(client);
  auto empty = client->command({});
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code(), StatusCode::kInvalidArgument);
  for (const std::vector<std::string>& argv :
       std::vector<std::vector<std::string>>{{"EVALSHA", "abc"},
                                             {"FCALL", "f", "x"},
                                             {"FCALL", "f", "2", "onlyone"},
                                             {"EVAL", "return 1", "-1"}}) {
    auto r = client->command(argv);
    ASSERT_FALSE(r.has_value()) << argv[0];
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  }
  auto keyless_pipeline = client->pipeline({{"PING"}});
  ASSERT_FALSE(keyless_pipeline.has_value());
  EXPECT_EQ(keyless_pipeline.error().code(), StatusCode::kInvalidArgument);
}

TEST_F(ClusterClientTest, FunctionLoadAndFcallRoutedByKey) {
  auto client = connect();
  ASSERT_TRUE(client);
  auto loaded = client->command_on_all_primaries({"FUNCTION", "LOAD", "REPLACE", kLibrary});
  ASSERT_TRUE(loaded.has_value()) << loaded.error().to_string();
  expect_text(loaded, "tallytest");
  // One customer's counters share a slot through their hash tag; customers land everywhere.
  std::set<std::string> owners;
  for (int c = 0; c < 30; ++c) {
    std::string tag = "{customer" + std::to_string(c) + "}";
    owners.insert(client->primary_for_slot(key_slot(tag)));
    expect_integer(client->command({"FCALL", "tally_test_add", "1", tag + ":minute", "5"}), 5);
    expect_integer(
        client->command({"FCALL", "tally_test_add", "2", tag + ":minute", tag + ":month", "3"}),
        8 + 3);
    expect_text(client->command({"GET", tag + ":month"}), "3");
  }
  EXPECT_EQ(owners.size(), 3u);
  // EVALSHA routes by its keys the same way.
  auto sha = client->command_on_all_primaries(
      {"SCRIPT", "LOAD", "return redis.call('INCRBY', KEYS[1], ARGV[1])"});
  ASSERT_TRUE(sha.has_value()) << sha.error().to_string();
  ASSERT_TRUE(sha->is_text());
  expect_integer(client->command({"EVALSHA", sha->str, "1", "{customer3}:day", "7"}), 7);
  EXPECT_EQ(client->stats().moved, 0u);
}

TEST_F(ClusterClientTest, PipelineOfOneSlot) {
  auto client = connect();
  ASSERT_TRUE(client);
  std::vector<std::vector<std::string>> commands;
  for (int i = 0; i < 20; ++i) {
    commands.push_back({"INCRBY", "{pipe}counter", std::to_string(i)});
  }
  commands.push_back({"GET", "{pipe}counter"});
  commands.push_back({"LPUSH", "{pipe}counter", "x"});  // an error reply in the middle is kept
  commands.push_back({"SET", "{pipe}other", "y"});
  std::uint64_t sent = client->stats().commands;
  auto replies = client->pipeline(commands);
  ASSERT_TRUE(replies.has_value()) << replies.error().to_string();
  ASSERT_EQ(replies->size(), commands.size());
  std::int64_t sum = 0;
  for (int i = 0; i < 20; ++i) {
    sum += i;
    ASSERT_TRUE((*replies)[static_cast<std::size_t>(i)].is_integer());
    EXPECT_EQ((*replies)[static_cast<std::size_t>(i)].integer, sum);
  }
  EXPECT_EQ((*replies)[20].str, std::to_string(sum));
  EXPECT_TRUE((*replies)[21].is_error());
  EXPECT_EQ((*replies)[22].str, "OK");
  EXPECT_EQ(client->stats().commands - sent, commands.size());
}

TEST_F(ClusterClientTest, BadSeedsAreClearErrors) {
  ClusterOptions none;
  auto empty = ClusterClient::connect(none);
  ASSERT_FALSE(empty.has_value());
  EXPECT_EQ(empty.error().code(), StatusCode::kInvalidArgument);
  ClusterOptions malformed;
  malformed.seeds = {"localhost"};
  auto bad = ClusterClient::connect(malformed);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.error().message().find("localhost"), std::string::npos);
  // A port where nothing listens (port 1 needs root to bind, and nothing here does).
  ClusterOptions closed;
  closed.seeds = {"127.0.0.1:1"};
  auto refused = ClusterClient::connect(closed);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.error().message().find("127.0.0.1:1"), std::string::npos)
      << refused.error().message();
  // A dead seed followed by a live one: the live one is used.
  ClusterOptions mixed;
  mixed.seeds = {"127.0.0.1:1", cluster_->endpoints().front()};
  auto ok = ClusterClient::connect(mixed);
  ASSERT_TRUE(ok.has_value()) << ok.error().to_string();
  expect_text((*ok)->command({"SET", "mixed", "1"}), "OK");
}

TEST_F(ClusterClientTest, ReconnectsAfterTheServerClosesTheConnection) {
  auto client = connect();
  auto killer = connect();
  ASSERT_TRUE(client && killer);
  std::string key = "reconnect:key";
  expect_text(client->command({"SET", key, "before"}), "OK");
  std::uint64_t connects = client->stats().connects;
  // Close every other client's connection on that node.
  std::string owner = client->primary_for_slot(key_slot(key));
  auto killed = killer->command_at(owner, {"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
  ASSERT_TRUE(killed.has_value() && killed->is_integer()) << killed.error().to_string();
  EXPECT_GE(killed->integer, 1);
  expect_text(client->command({"GET", key}), "before");
  EXPECT_EQ(client->stats().connects, connects + 1) << "the closed connection was opened again";
  EXPECT_GE(client->stats().connection_errors, 1u);
}

// Moves the slot of "{moving}" from its primary to another with CLUSTER SETSLOT and MIGRATE,
// reading and writing throughout: ASK during the migration, MOVED after it.
TEST_F(ClusterClientTest, ReshardingIsFollowedThroughAskAndMoved) {
  auto client = connect();
  auto admin = connect();
  ASSERT_TRUE(client && admin);
  const std::uint16_t slot = key_slot("{moving}");
  const std::string source = client->primary_for_slot(slot);
  std::string target;
  for (const std::string& p : client->primaries()) {
    if (p != source) {
      target = p;
      break;
    }
  }
  ASSERT_FALSE(target.empty());
  const std::string source_id = node_id(*admin, source);
  const std::string target_id = node_id(*admin, target);
  const std::string s = std::to_string(slot);

  for (int i = 0; i < 10; ++i) {
    expect_text(client->command({"SET", "{moving}old" + std::to_string(i), std::to_string(i)}),
                "OK");
  }
  expect_text(admin->command_at(target, {"CLUSTER", "SETSLOT", s, "IMPORTING", source_id}), "OK");
  expect_text(admin->command_at(source, {"CLUSTER", "SETSLOT", s, "MIGRATING", target_id}), "OK");

  // Keys still on the source are served there; a new key is created on the target (ASK).
  expect_text(client->command({"GET", "{moving}old3"}), "3");
  EXPECT_EQ(client->stats().ask, 0u);
  expect_text(client->command({"SET", "{moving}new", "fresh"}), "OK");
  EXPECT_GE(client->stats().ask, 1u);
  // (An importing node answers MOVED to a plain EXISTS: count the slot's keys instead.)
  expect_integer(admin->command_at(target, {"CLUSTER", "COUNTKEYSINSLOT", s}), 1);
  EXPECT_EQ(client->primary_for_slot(slot), source) << "ASK must not change the map";

  // Move half of the old keys; those are then found on the target through ASK.
  std::uint16_t target_port = port_of(target);
  for (int i = 0; i < 5; ++i) {
    auto migrated = admin->command_at(source, {"MIGRATE", "127.0.0.1", std::to_string(target_port),
                                               "{moving}old" + std::to_string(i), "0", "5000"});
    expect_text(migrated, "OK");
  }
  std::uint64_t ask_before = client->stats().ask;
  for (int i = 0; i < 10; ++i) {
    expect_text(client->command({"GET", "{moving}old" + std::to_string(i)}), std::to_string(i));
  }
  EXPECT_EQ(client->stats().ask, ask_before + 5);
  // A pipeline over the slot mid-migration: some commands run on the source, some are asked.
  auto mixed = client->pipeline({{"GET", "{moving}old1"}, {"GET", "{moving}old8"}});
  ASSERT_TRUE(mixed.has_value()) << mixed.error().to_string();
  EXPECT_EQ((*mixed)[0].str, "1");
  EXPECT_EQ((*mixed)[1].str, "8");

  // A multi-key command whose keys are split between the two nodes cannot run anywhere now:
  // TRYAGAIN, retried retries_max times, then returned as the error reply it is.
  std::uint64_t retries_before = client->stats().retries;
  auto split = client->command({"MGET", "{moving}old1", "{moving}old8"});
  ASSERT_TRUE(split.has_value()) << split.error().to_string();
  ASSERT_TRUE(split->is_error());
  EXPECT_EQ(split->str.rfind("TRYAGAIN", 0), 0u) << split->str;
  EXPECT_EQ(client->stats().retries, retries_before + ClusterOptions{}.retries_max);

  // Finish: the rest of the keys, then the slot belongs to the target everywhere.
  for (int i = 5; i < 10; ++i) {
    expect_text(admin->command_at(source, {"MIGRATE", "127.0.0.1", std::to_string(target_port),
                                           "{moving}old" + std::to_string(i), "0", "5000"}),
                "OK");
  }
  // The order of the specification: the importing node, the migrating one, then the others.
  std::vector<std::string> order = {target, source};
  for (const std::string& node : cluster_->endpoints()) {
    if (node != target && node != source) {
      order.push_back(node);
    }
  }
  for (const std::string& node : order) {
    auto set = admin->command_at(node, {"CLUSTER", "SETSLOT", s, "NODE", target_id});
    ASSERT_TRUE(set.has_value()) << set.error().to_string();
  }
  // Gossip may briefly carry the old owner back to a node: wait until every node names the
  // target (a plain GET is answered by the owner, and redirected there by every other node).
  const std::string moved_to_target = "MOVED " + s + " " + target;
  auto agreed_by = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  for (const std::string& node : cluster_->endpoints()) {
    for (;;) {
      auto seen = admin->command_at(node, {"GET", "{moving}old0"});
      ASSERT_TRUE(seen.has_value()) << seen.error().to_string();
      if (node == target ? seen->str == "0" : seen->str == moved_to_target) {
        break;
      }
      ASSERT_LT(std::chrono::steady_clock::now(), agreed_by)
          << node << " still answers '" << seen->str << "'";
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  EXPECT_EQ(client->primary_for_slot(slot), source) << "the client has not seen it yet";
  std::uint64_t moved_before = client->stats().moved;
  expect_text(client->command({"GET", "{moving}old7"}), "7");
  EXPECT_EQ(client->stats().moved, moved_before + 1);
  EXPECT_EQ(client->primary_for_slot(slot), target);
  expect_integer(client->command({"INCR", "{moving}counter"}), 1);
  expect_text(client->command({"GET", "{moving}new"}), "fresh");
  EXPECT_EQ(client->stats().moved, moved_before + 1) << "the map is right again: no more MOVED";
  // Every key of the slot is on the target now (10 old ones, "new" and "counter"), none left on
  // the source.
  expect_integer(admin->command_at(target, {"CLUSTER", "COUNTKEYSINSLOT", s}), 12);
  expect_integer(admin->command_at(source, {"CLUSTER", "COUNTKEYSINSLOT", s}), 0);
}

// Kills the primary of one slot. The client gets errors (never a wrong answer) until the
// replica has taken over, then works again, with the data written before the kill.
TEST_F(ClusterClientTest, FailoverOfAKilledPrimary) {
  ClusterOptions options;
  options.retries_max = 2;
  options.retry_delay_ms = 20;
  auto client = connect(options);
  ASSERT_TRUE(client);
  const std::string key = "{failover}key";
  const std::uint16_t slot = key_slot(key);
  expect_text(client->command({"SET", key, "kept"}), "OK");
  const std::string old_primary = client->primary_for_slot(slot);
  // The replica must have the write before its primary dies (replication is asynchronous).
  expect_integer(client->command_at(old_primary, {"WAIT", "1", "2000"}), 1);
  ASSERT_TRUE(cluster_->kill_node(port_of(old_primary)));

  auto killed_at = std::chrono::steady_clock::now();
  auto deadline = killed_at + std::chrono::seconds(15);
  int failures = 0;
  bool recovered = false;
  while (std::chrono::steady_clock::now() < deadline) {
    auto reply = client->command({"GET", key});
    if (reply.has_value() && reply->is_text()) {
      EXPECT_EQ(reply->str, "kept");
      recovered = true;
      break;
    }
    if (reply.has_value()) {
      // Only the cluster's own "not now" answers are acceptable meanwhile.
      EXPECT_TRUE(reply->is_error()) << static_cast<int>(reply->type);
      EXPECT_TRUE(reply->str.rfind("CLUSTERDOWN", 0) == 0 || reply->str.rfind("TRYAGAIN", 0) == 0)
          << reply->str;
    } else {
      EXPECT_EQ(reply.error().code(), StatusCode::kUnavailable) << reply.error().to_string();
    }
    failures++;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  auto took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                     std::chrono::steady_clock::now() - killed_at)
                     .count();
  ASSERT_TRUE(recovered) << "no answer for the killed primary's slot within 15 s";
  EXPECT_LT(took_ms, 10000) << "failover should take a few seconds with node-timeout 1000";
  EXPECT_NE(client->primary_for_slot(slot), old_primary);
  EXPECT_GE(client->stats().connection_errors, 1u);
  // Writes work again, and every other shard kept working.
  expect_text(client->command({"SET", key, "after"}), "OK");
  expect_text(client->command({"GET", key}), "after");
  for (int i = 0; i < 50; ++i) {
    expect_text(client->command({"SET", "after-failover:" + std::to_string(i), "v"}), "OK");
  }
  std::printf("failover: answered again after %lld ms (%d failed attempts)\n",
              static_cast<long long>(took_ms), failures);
}

// A single Redis without cluster support: everything goes to it.
class StandaloneTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string missing = testing::redis_programs_missing();
    if (!missing.empty()) {
      GTEST_SKIP() << missing;
    }
    auto started = RedisServers::start_standalone();
    ASSERT_TRUE(started.has_value()) << started.error().to_string();
    server_ = std::move(*started);
    ClusterOptions options;
    options.seeds = server_->endpoints();
    auto client = ClusterClient::connect(options);
    ASSERT_TRUE(client.has_value()) << client.error().to_string();
    client_ = std::move(*client);
  }

  std::unique_ptr<RedisServers> server_;
  std::unique_ptr<ClusterClient> client_;
};

TEST_F(StandaloneTest, RoutesEverythingToTheOneServer) {
  EXPECT_TRUE(client_->standalone());
  EXPECT_EQ(client_->primaries(), server_->endpoints());
  for (int i = 0; i < 100; ++i) {
    std::string key = "single:" + std::to_string(i);
    expect_text(client_->command({"SET", key, std::to_string(i)}), "OK");
  }
  for (int i = 0; i < 100; ++i) {
    expect_text(client_->command({"GET", "single:" + std::to_string(i)}), std::to_string(i));
  }
  expect_integer(client_->command({"DBSIZE"}), 100);
  auto loaded = client_->command_on_all_primaries({"FUNCTION", "LOAD", "REPLACE", kLibrary});
  expect_text(loaded, "tallytest");
  expect_integer(client_->command({"FCALL", "tally_test_add", "1", "{c}:minute", "4"}), 4);
  auto replies = client_->pipeline({{"INCR", "{p}n"}, {"INCR", "{p}n"}});
  ASSERT_TRUE(replies.has_value()) << replies.error().to_string();
  EXPECT_EQ((*replies)[1].integer, 2);
  EXPECT_EQ(client_->stats().moved + client_->stats().ask, 0u);
}

TEST_F(StandaloneTest, KeepsTheSameSlotRuleAsACluster) {
  // Redis alone would accept this; the client refuses it so code that runs here runs on a
  // cluster too.
  auto mget = client_->command({"MGET", "foo", "bar"});
  ASSERT_FALSE(mget.has_value());
  EXPECT_NE(mget.error().message().find("CROSSSLOT"), std::string::npos);
}

// A reply that does not come within command_timeout_ms: the command was sent and may have run,
// so the call fails saying so and the command is not sent again.
TEST_F(StandaloneTest, ATimedOutCommandIsReportedAndNotRetried) {
  ClusterOptions options;
  options.seeds = server_->endpoints();
  options.command_timeout_ms = 200;
  auto client = ClusterClient::connect(options);
  ASSERT_TRUE(client.has_value()) << client.error().to_string();
  // Counts its own runs, then keeps the server busy for 600 ms.
  const char* slow =
      "redis.call('INCR', KEYS[1])\n"
      "local t = redis.call('TIME')\n"
      "local start = t[1] * 1000000 + t[2]\n"
      "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start > 600000\n"
      "return 1\n";
  auto reply = (*client)->command({"EVAL", slow, "1", "{slow}runs"});
  ASSERT_FALSE(reply.has_value());
  EXPECT_EQ(reply.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(reply.error().message().find("may have run"), std::string::npos)
      << reply.error().message();
  // Once the script is over: it ran exactly once, and the client works again.
  std::this_thread::sleep_for(std::chrono::milliseconds(700));
  expect_text((*client)->command({"GET", "{slow}runs"}), "1");
  EXPECT_EQ((*client)->stats().retries, 0u);
}

TEST_F(StandaloneTest, AKilledServerIsAClearErrorNotAMaybe) {
  expect_text(client_->command({"SET", "k", "v"}), "OK");
  ASSERT_TRUE(server_->kill_node(port_of(server_->endpoints().front())));
  auto down = client_->command({"GET", "k"});
  ASSERT_FALSE(down.has_value());
  EXPECT_EQ(down.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(down.error().message().find(server_->endpoints().front()), std::string::npos)
      << down.error().message();
  EXPECT_EQ(down.error().message().find("may have run"), std::string::npos)
      << "a command that could not be sent certainly did not run: " << down.error().message();
}

}  // namespace
}  // namespace tally::redis
