// The cluster mode end to end (issue #11, docs/cluster.md "What the end-to-end tests prove"):
// three real `tally serve` nodes over one PostgreSQL 15 (tests/support/pg_server.h) and one Redis
// Cluster of 3 primaries + 3 replicas (tests/support/redis_cluster.h), driven only over HTTP as
// a client behind a load balancer would (docs/api.md). The servers and the nodes are started once
// for the binary and shared by its tests, each test on customers of its own.
//
// What is asserted is the first version of the mode: ingest committed in PostgreSQL before the
// 2xx, exactly once across nodes (the same id sent to several nodes at once, retried batches);
// meter queries and customer usage on any node right after a 202 on another; the plan's limits
// enforced across nodes in Redis (exactly the limit admitted under concurrent checks from every
// node, single and in all-or-nothing batches), answered as the embedded mode answers; customers
// and keys shared; limit alerts fired once across nodes and delivered once by the nodes' shared
// webhook outbox; 501 NOT_IMPLEMENTED for the rest; a node killed with SIGKILL during ingest losing
// nothing acknowledged and double-counting nothing retried elsewhere, while the others go on
// ingesting and checking; and `tally serve` refusing a schema that is missing, outdated or newer.
//
// The binary under test is TALLY_BINARY (this build's `tally`), or the one named by the
// environment variable TALLY_BIN. The tests skip (GTEST_SKIP, saying why) only where
// PostgreSQL's or Redis's programs are missing.
#include <atomic>
#include <barrier>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include "json_test_util.h"
#include "support/http_client.h"
#include "support/http_receiver.h"
#include "support/pg_server.h"
#include "support/process.h"
#include "support/redis_cluster.h"

namespace tally {
namespace {

using testing::ChildProcess;
using testing::HttpClient;
using testing::HttpResponse;
using testing::Json;
using testing::PgServer;
using testing::ProcessOptions;
using testing::RedisServers;

using Headers = std::vector<std::pair<std::string, std::string>>;

constexpr const char* kAdminKey = "cluster-e2e-admin-key-0123456789";
constexpr int kNodes = 3;
// The plan "limited": what the check tests must admit exactly, no more, no less.
constexpr int kDayCalls = 200;
constexpr int kDayTokens = 500;

// The nodes' meters and default plan; write_config adds the plan "limited" and [cluster].
constexpr const char* kMetersAndFreePlanToml = R"([server]
auto_create_customers = true

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]

[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.input_tokens"

[enforcement]
default_plan = "free"

[[plans]]
key = "free"
limits = [{ meter = "api_calls", period = "day", amount = 1000000 }]
)";

// A plan whose alerts fire at 50 and 100 % of 10 calls a day, and the nodes' webhook (its url
// follows).
constexpr const char* kAlertingToml = R"(
[[plans]]
key = "alerting"
limits = [{ meter = "api_calls", period = "day", amount = 10 }]
alert_thresholds = [50, 100]

[[webhooks]]
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
retry_backoff = "1s"
)";

std::string tally_binary() {
  const char* env = std::getenv("TALLY_BIN");
  return env != nullptr && *env != '\0' ? std::string(env) : std::string(TALLY_BINARY);
}

Headers admin_headers() {
  return {{"x-api-key", kAdminKey}, {"content-type", "application/json"}};
}

Headers key_headers(const std::string& key) {
  return {{"x-api-key", key}, {"content-type", "application/json"}};
}

// RFC 3339 of `t` (UTC, whole seconds).
std::string rfc3339(std::time_t t) {
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char out[32];
  std::strftime(out, sizeof(out), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return out;
}

// Events are stamped a minute ago and queried over the two hours around now: inside every
// window the tests read, whatever the time of day.
struct Times {
  std::string event;
  std::string from;
  std::string to;
};

Times times_now() {
  const std::time_t now = std::time(nullptr);
  return {rfc3339(now - 60), rfc3339(now - 3600), rfc3339(now + 3600)};
}

// A JSON number as an integer (meter values of these tests are whole).
std::int64_t as_int(simdjson::dom::element e) {
  std::int64_t i = 0;
  if (e.get_int64().get(i) == simdjson::SUCCESS) {
    return i;
  }
  double d = 0;
  if (e.get_double().get(d) == simdjson::SUCCESS) {
    return static_cast<std::int64_t>(std::llround(d));
  }
  return -999999;
}

// Field `key` of a JSON answer as a boolean; nullopt when the answer is not JSON or the field is
// missing or not a boolean.
std::optional<bool> flag(const Json& j, const char* key) {
  bool b = false;
  if (!j.ok() || j.root()[key].get_bool().get(b) != simdjson::SUCCESS) {
    return std::nullopt;
  }
  return b;
}

// `window_start` of the first entry of a check answer's `limits`; "" when there is none.
std::string first_window_start(const Json& j) {
  std::string_view start;
  if (!j.ok() ||
      j.root()["limits"].at(0)["window_start"].get_string().get(start) != simdjson::SUCCESS) {
    return {};
  }
  return std::string(start);
}

// The sum of `value` over a meter query's rows; -1 when the answer has no `data` array.
std::int64_t query_total(const HttpResponse& r) {
  Json j(r.body);
  simdjson::dom::array rows;
  if (!j.ok() || j.root()["data"].get_array().get(rows) != simdjson::SUCCESS) {
    return -1;
  }
  std::int64_t total = 0;
  for (simdjson::dom::element row : rows) {
    simdjson::dom::element value;
    if (row["value"].get(value) != simdjson::SUCCESS) {
      return -1;
    }
    total += as_int(value);
  }
  return total;
}

// The `value` of meter `meter` in a GET /v1/customers/{id}/usage answer; -1 when absent.
std::int64_t usage_value(const HttpResponse& r, const std::string& meter) {
  Json j(r.body);
  simdjson::dom::array meters;
  if (!j.ok() || j.root()["meters"].get_array().get(meters) != simdjson::SUCCESS) {
    return -1;
  }
  for (simdjson::dom::element m : meters) {
    std::string_view key;
    simdjson::dom::element value;
    if (m["meter"].get_string().get(key) == simdjson::SUCCESS && key == meter &&
        m["value"].get(value) == simdjson::SUCCESS) {
      return as_int(value);
    }
  }
  return -1;
}

// One event as JSON; `properties` is a JSON object.
std::string event_json(const std::string& id, const std::string& customer, const std::string& type,
                       const std::string& time, const std::string& properties) {
  return "{\"id\":\"" + id + "\",\"customer\":\"" + customer + "\",\"type\":\"" + type +
         "\",\"time\":\"" + time + "\",\"properties\":" + properties + "}";
}

// {"events":[...]}: api_call events (service "chat") for `customer`, with the ids
// prefix-first .. prefix-(first + count - 1).
std::string api_call_batch(const std::string& customer, const std::string& prefix, int first,
                           int count, const std::string& time) {
  std::string body = "{\"events\":[";
  for (int i = first; i < first + count; ++i) {
    body += (i > first ? "," : "");
    body += event_json(prefix + "-" + std::to_string(i), customer, "api_call", time,
                       R"({"service":"chat"})");
  }
  return body + "]}";
}

struct Node {
  std::unique_ptr<ChildProcess> process;
  std::uint16_t port = 0;
  std::string dir;
};

class ClusterE2eTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = testing::pg_programs_missing();
    if (skip_reason_.empty()) {
      skip_reason_ = testing::redis_programs_missing();
    }
    if (!skip_reason_.empty()) {
      return;
    }
    start_error_ = start_all();
  }

  static void TearDownTestSuite() {
    for (Node& n : nodes_) {
      if (n.process != nullptr) {
        n.process->send_signal(SIGTERM);
        if (!n.process->wait_exit(15000).has_value()) {
          n.process->kill_hard();
          n.process->wait_exit(5000);
        }
        n.process.reset();
      }
    }
    redis_.reset();
    pg_.reset();
    receiver_.reset();
    if (!dir_.empty()) {
      testing::remove_tree(dir_);
      dir_.clear();
    }
  }

  void SetUp() override {
    if (!skip_reason_.empty()) {
      GTEST_SKIP() << skip_reason_;
    }
    ASSERT_TRUE(start_error_.empty()) << start_error_;
  }

  // Starts PostgreSQL, the Redis Cluster, `tally migrate` and the three nodes; "" or what failed.
  static std::string start_all() {
    dir_ = testing::make_temp_dir("tally-cluster-e2e-");
    if (dir_.empty()) {
      return "cannot create a temporary directory";
    }
    auto pg = PgServer::start();
    if (!pg) {
      return "PostgreSQL: " + pg.error().to_string();
    }
    pg_ = std::move(*pg);
    if (Status s = pg_->create_database("tally"); !s.ok()) {
      return s.to_string();
    }
    auto redis = RedisServers::start_cluster(3, 1);
    if (!redis) {
      return "Redis Cluster: " + redis.error().to_string();
    }
    redis_ = std::move(*redis);
    receiver_ = std::make_unique<testing::HttpReceiver>([](std::size_t) { return 200; });
    config_ = write_config("tally", "tally");
    std::string output;
    const int code = run_tally({"migrate", "--config", config_}, &output);
    if (code != 0) {
      return "tally migrate exited " + std::to_string(code) + ": " + output;
    }
    for (int i = 0; i < kNodes; ++i) {
      if (std::string e = start_node(i); !e.empty()) {
        return e;
      }
    }
    return {};
  }

  // Writes <dir>/<name>.toml: the meters, the plans and a [cluster] on database `db`.
  static std::string write_config(const std::string& db, const std::string& name) {
    const std::vector<std::string> redis = redis_->endpoints();
    const std::string path = dir_ + "/" + name + ".toml";
    std::ofstream(path) << kMetersAndFreePlanToml << "\n[[plans]]\nkey = \"limited\"\nlimits = [\n"
                        << "  { meter = \"api_calls\", period = \"day\", amount = " << kDayCalls
                        << " },\n  { meter = \"tokens_in\", period = \"day\", amount = "
                        << kDayTokens << " },\n]\n"
                        << kAlertingToml << "url = \"" << receiver_->url("/hook")
                        << "\"\n\n[cluster]\npostgres = \"" << pg_->conninfo(db)
                        << "\"\nredis = [\"" << redis[0] << "\", \"" << redis[1] << "\", \""
                        << redis[2] << "\"]\npostgres_pool = 4\nredis_pool = 4\n"
                        << "connect_timeout = \"5s\"\ncommand_timeout = \"10s\"\n";
    return path;
  }

  // Runs `tally ARGS...` to completion (60 s at most); its exit code, its output in `output`.
  static int run_tally(const std::vector<std::string>& args, std::string* output) {
    ProcessOptions o;
    o.executable = tally_binary();
    o.args = args;
    o.env = {{"TALLY_ADMIN_KEY", kAdminKey}};
    o.log_path = dir_ + "/run-" + std::to_string(++runs_) + ".log";
    auto p = ChildProcess::start(o);
    if (!p) {
      *output = p.error().to_string();
      return -1;
    }
    const int code = p->wait_exit(60000).value_or(-1);
    *output = testing::read_file(o.log_path).value_or("");
    return code;
  }

  // Starts node `i` (again, after a kill) on a port of its own; "" or why it did not start.
  static std::string start_node(int i) {
    Node& n = nodes_[static_cast<std::size_t>(i)];
    n.dir = dir_ + "/node" + std::to_string(i);
    if (::mkdir(n.dir.c_str(), 0700) != 0 && errno != EEXIST) {
      return "cannot create " + n.dir;
    }
    std::remove((n.dir + "/port").c_str());
    ProcessOptions o;
    o.executable = tally_binary();
    o.args = {"serve",       "--config",  config_, "--data",      n.dir + "/data", "--listen",
              "127.0.0.1:0", "--threads", "4",     "--port-file", n.dir + "/port"};
    o.env = {{"TALLY_ADMIN_KEY", kAdminKey}};
    o.log_path = n.dir + "/server.log";
    auto p = ChildProcess::start(o);
    if (!p) {
      return "node " + std::to_string(i) + ": " + p.error().to_string();
    }
    n.process = std::make_unique<ChildProcess>(std::move(*p));
    for (int waited_ms = 0; waited_ms < 60000; waited_ms += 20) {
      auto port = testing::read_file(n.dir + "/port");
      if (port && !port->empty()) {
        n.port = static_cast<std::uint16_t>(std::stoi(*port));
        return {};
      }
      if (!n.process->running()) {
        return "node " + std::to_string(i) + " exited " +
               std::to_string(n.process->wait_exit(0).value_or(-1)) + ": " + node_log(i);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return "node " + std::to_string(i) + " did not listen within 60 s: " + node_log(i);
  }

  static std::string node_log(int i) {
    return testing::read_file(nodes_[static_cast<std::size_t>(i)].dir + "/server.log")
        .value_or("(no log)");
  }

  static std::unique_ptr<HttpClient> client(int node) {
    return std::make_unique<HttpClient>("127.0.0.1", nodes_[static_cast<std::size_t>(node)].port,
                                        20000);
  }

  // One request with the admin key to `node`, on a connection of its own.
  static HttpResponse admin(int node, std::string_view method, std::string_view target,
                            std::string_view body = {}) {
    return client(node)->request(method, target, body, admin_headers());
  }

  // The total of meter `meter` for `customer` over [from, to), asked of `node`.
  static std::int64_t meter_total(int node, const std::string& meter, const std::string& customer,
                                  const Times& t) {
    HttpResponse r = admin(
        node, "GET",
        "/v1/meters/" + meter + "/query?customer=" + customer + "&from=" + t.from + "&to=" + t.to);
    EXPECT_EQ(r.status, 200) << "node " << node << ": " << r.body;
    return query_total(r);
  }

  // How many events of `customer` PostgreSQL holds, read in a session of its own (psql): only
  // committed rows; -1 when psql fails.
  static std::int64_t stored_events(const std::string& customer) {
    auto out = pg_->psql("tally", "SELECT count(*) FROM events WHERE customer_id = '" + customer +
                                      "'");  // a constant id of these tests
    EXPECT_TRUE(out.has_value()) << out.error().to_string();
    return out ? std::stoll(*out) : -1;
  }

  static std::string creating(const std::string& id, const std::string& plan) {
    return "{\"id\":\"" + id + "\",\"plan\":\"" + plan + "\"}";
  }

  static inline std::string skip_reason_;
  static inline std::string start_error_;
  static inline std::string dir_;
  static inline std::string config_;
  static inline int runs_ = 0;
  static inline std::unique_ptr<PgServer> pg_;
  static inline std::unique_ptr<RedisServers> redis_;
  static inline std::unique_ptr<testing::HttpReceiver> receiver_;  // every node's webhook
  static inline Node nodes_[kNodes];
};

// A 202 on one node is in the meter query and the customer's usage of the two others at once.
TEST_F(ClusterE2eTest, IngestOnOneNodeIsReadAtOnceOnEveryOther) {
  const Times t = times_now();
  std::int64_t calls = 0;
  std::int64_t tokens = 0;
  for (int round = 0; round < 6; ++round) {
    const int writer = round % kNodes;
    std::string body = "{\"events\":[";
    for (int i = 0; i < 5; ++i) {
      const std::string id = "vis-" + std::to_string(round) + "-" + std::to_string(i);
      body += (i > 0 ? "," : "");
      body += i % 2 == 0 ? event_json(id, "visible", "api_call", t.event, R"({"service":"chat"})")
                         : event_json(id, "visible", "TOKEN_USAGE", t.event,
                                      "{\"input_tokens\":" + std::to_string(100 + round) + "}");
      if (i % 2 == 0) {
        ++calls;
      } else {
        tokens += 100 + round;
      }
    }
    body += "]}";
    HttpResponse w = admin(writer, "POST", "/v1/events", body);
    ASSERT_EQ(w.status, 202) << w.body;
    EXPECT_EQ(Json(w.body).num("accepted"), 5) << w.body;
    for (int reader = 0; reader < kNodes; ++reader) {
      if (reader == writer) {
        continue;
      }
      EXPECT_EQ(meter_total(reader, "api_calls", "visible", t), calls)
          << "round " << round << ", written on node " << writer << ", read on " << reader;
      EXPECT_EQ(meter_total(reader, "tokens_in", "visible", t), tokens)
          << "round " << round << ", written on node " << writer << ", read on " << reader;
      HttpResponse u =
          admin(reader, "GET", "/v1/customers/visible/usage?from=" + t.from + "&to=" + t.to);
      ASSERT_EQ(u.status, 200) << u.body;
      EXPECT_EQ(usage_value(u, "api_calls"), calls) << u.body;
      EXPECT_EQ(usage_value(u, "tokens_in"), tokens) << u.body;
    }
  }
  // An event without a time is stamped by the node: the current month's usage (the default
  // period) on another node counts it.
  HttpResponse w =
      admin(0, "POST", "/v1/events", R"({"id":"vis-now","customer":"visible","type":"api_call"})");
  ASSERT_EQ(w.status, 202) << w.body;
  HttpResponse u = admin(2, "GET", "/v1/customers/visible/usage");
  ASSERT_EQ(u.status, 200) << u.body;
  EXPECT_EQ(usage_value(u, "api_calls"), calls + 1) << u.body;
}

// A batch sent again, to another node, is answered as duplicates and counted once.
TEST_F(ClusterE2eTest, RetriedBatchOnAnotherNodeIsAnsweredAsDuplicates) {
  const Times t = times_now();
  const std::string batch = api_call_batch("retrier", "r", 0, 10, t.event);
  HttpResponse first = admin(0, "POST", "/v1/events", batch);
  ASSERT_EQ(first.status, 202) << first.body;
  EXPECT_EQ(Json(first.body).num("accepted"), 10) << first.body;
  EXPECT_EQ(Json(first.body).str("status"), "accepted") << first.body;
  // Committed in PostgreSQL before the 202.
  EXPECT_EQ(stored_events("retrier"), 10);

  HttpResponse again = admin(1, "POST", "/v1/events", batch);
  ASSERT_EQ(again.status, 202) << again.body;
  Json a(again.body);
  EXPECT_EQ(a.num("accepted"), 0) << again.body;
  EXPECT_EQ(a.num("duplicates"), 10) << again.body;
  EXPECT_EQ(a.str("status"), "all_duplicates") << again.body;

  // Half old, half new, on the third node.
  HttpResponse mixed =
      admin(2, "POST", "/v1/events", api_call_batch("retrier", "r", 5, 10, t.event));
  ASSERT_EQ(mixed.status, 202) << mixed.body;
  Json m(mixed.body);
  EXPECT_EQ(m.num("accepted"), 5) << mixed.body;
  EXPECT_EQ(m.num("duplicates"), 5) << mixed.body;
  EXPECT_EQ(m.str("status"), "partial") << mixed.body;

  for (int node = 0; node < kNodes; ++node) {
    EXPECT_EQ(meter_total(node, "api_calls", "retrier", t), 15) << "node " << node;
  }
  EXPECT_EQ(stored_events("retrier"), 15);
}

// The same event id sent to the three nodes at the same moment is stored once: one node answers
// it accepted, the two others duplicate.
TEST_F(ClusterE2eTest, SameEventSentToEveryNodeAtOnceIsCountedOnce) {
  const Times t = times_now();
  constexpr int kEvents = 40;
  std::barrier sync(kNodes);
  std::atomic<int> accepted{0};
  std::atomic<int> duplicates{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (int node = 0; node < kNodes; ++node) {
    threads.emplace_back([&, node] {
      auto c = client(node);
      for (int k = 0; k < kEvents; ++k) {
        const std::string body = api_call_batch("racer", "race", k, 1, t.event);
        sync.arrive_and_wait();
        HttpResponse r = c->request("POST", "/v1/events", body, admin_headers());
        Json j(r.body);
        if (r.status != 202) {
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back("node " + std::to_string(node) + " event " + std::to_string(k) + ": " +
                             std::to_string(r.status) + " " + r.body);
          continue;
        }
        accepted += static_cast<int>(j.num("accepted"));
        duplicates += static_cast<int>(j.num("duplicates"));
      }
    });
  }
  for (std::thread& th : threads) {
    th.join();
  }
  EXPECT_TRUE(failures.empty()) << failures.size() << " failed, the first: " << failures.front();
  EXPECT_EQ(accepted.load(), kEvents);
  EXPECT_EQ(duplicates.load(), kEvents * (kNodes - 1));
  for (int node = 0; node < kNodes; ++node) {
    EXPECT_EQ(meter_total(node, "api_calls", "racer", t), kEvents) << "node " << node;
  }
  EXPECT_EQ(stored_events("racer"), kEvents);
}

// Checks from every node over many connections for one customer admit exactly the plan's day
// limit: 200 allowed, 429 denied beyond it.
TEST_F(ClusterE2eTest, ChecksFromThreeNodesAdmitExactlyTheLimit) {
  HttpResponse created = admin(0, "POST", "/v1/customers", creating("checker", "limited"));
  ASSERT_EQ(created.status, 201) << created.body;

  constexpr int kThreadsPerNode = 6;
  constexpr int kChecksPerThread = 15;  // 3 x 6 x 15 = 270 attempts for a limit of 200
  std::atomic<int> allowed{0};
  std::atomic<int> denied{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (int node = 0; node < kNodes; ++node) {
    for (int k = 0; k < kThreadsPerNode; ++k) {
      threads.emplace_back([&, node] {
        auto c = client(node);
        for (int i = 0; i < kChecksPerThread; ++i) {
          HttpResponse r =
              c->request("POST", "/v1/check", R"({"customer":"checker","meter":"api_calls"})",
                         admin_headers());
          Json j(r.body);
          if (r.status == 200 && flag(j, "allowed") == true) {
            ++allowed;
          } else if (r.status == 429 && flag(j, "allowed") == false &&
                     j.str("reason") == "limit_exceeded") {
            ++denied;
          } else {
            std::lock_guard<std::mutex> lock(mu);
            failures.push_back("node " + std::to_string(node) + ": " + std::to_string(r.status) +
                               " " + r.body);
          }
        }
      });
    }
  }
  for (std::thread& th : threads) {
    th.join();
  }
  ASSERT_TRUE(failures.empty()) << failures.size()
                                << " unexpected answers, the first: " << failures.front();
  EXPECT_EQ(allowed.load(), kDayCalls);
  EXPECT_EQ(denied.load(), kNodes * kThreadsPerNode * kChecksPerThread - kDayCalls);

  // Every node now denies, and answers as the embedded mode does (docs/api.md): how far the
  // customer is, and when the day's window ends (the customer's zone is UTC).
  const std::time_t now = std::time(nullptr);
  const std::time_t midnight = now - now % 86400 + 86400;
  for (int node = 0; node < kNodes; ++node) {
    HttpResponse r =
        admin(node, "POST", "/v1/check", R"({"customer":"checker","meter":"api_calls"})");
    EXPECT_EQ(r.status, 429) << "node " << node << ": " << r.body;
    Json j(r.body);
    EXPECT_EQ(j.str("reason"), "limit_exceeded") << r.body;
    EXPECT_EQ(j.str("period"), "day") << r.body;
    EXPECT_EQ(j.num("limit"), kDayCalls) << r.body;
    EXPECT_EQ(j.num("used"), kDayCalls) << r.body;
    EXPECT_EQ(j.num("remaining"), 0) << r.body;
    EXPECT_EQ(j.str("reset"), rfc3339(midnight)) << r.body;
    EXPECT_EQ(first_window_start(j), rfc3339(midnight - 86400)) << r.body;
    EXPECT_EQ(r.header("X-RateLimit-Reset"), std::to_string(midnight)) << r.body;
    EXPECT_FALSE(r.header("Retry-After").empty()) << r.body;
  }
}

// An allowed check answers as the embedded mode does (docs/api.md, POST /v1/check): the day
// limit's window, its end in `reset` and X-RateLimit-Reset (the customer's zone is UTC).
TEST_F(ClusterE2eTest, AllowedCheckAnswersTheWindowAsTheEmbeddedModeDoes) {
  const std::time_t now = std::time(nullptr);
  const std::time_t midnight = now - now % 86400 + 86400;
  HttpResponse other = admin(0, "POST", "/v1/customers", creating("checker2", "limited"));
  ASSERT_EQ(other.status, 201) << other.body;
  HttpResponse allowed_one =
      admin(1, "POST", "/v1/check", R"({"customer":"checker2","meter":"api_calls"})");
  EXPECT_EQ(allowed_one.status, 200) << allowed_one.body;
  Json a(allowed_one.body);
  EXPECT_EQ(a.str("period"), "day") << allowed_one.body;
  EXPECT_EQ(a.num("used"), 1) << allowed_one.body;
  EXPECT_EQ(a.num("remaining"), kDayCalls - 1) << allowed_one.body;
  EXPECT_EQ(a.str("reset"), rfc3339(midnight)) << allowed_one.body;
  EXPECT_EQ(first_window_start(a), rfc3339(midnight - 86400)) << allowed_one.body;
  EXPECT_EQ(allowed_one.header("X-RateLimit-Reset"), std::to_string(midnight)) << allowed_one.body;
  EXPECT_EQ(allowed_one.header("RateLimit-Policy"), "\"api_calls-day\";q=200;w=86400");
}

// Check batches of two checks (one API call, then 10 tokens) from every node, all or nothing:
// exactly kDayTokens / 10 batches are admitted; the others are denied for the tokens' limit, and
// their API call, allowed on its own, is not consumed (`batch_denied`): the day's calls counted
// afterwards are exactly the admitted batches'.
TEST_F(ClusterE2eTest, CheckBatchesFromThreeNodesAdmitExactlyTheLimit) {
  HttpResponse created = admin(1, "POST", "/v1/customers", creating("batcher", "limited"));
  ASSERT_EQ(created.status, 201) << created.body;

  constexpr int kThreadsPerNode = 4;
  constexpr int kBatchesPerThread = 6;  // 72 attempts; 50 fit in 500 tokens
  constexpr int kFit = kDayTokens / 10;
  const std::string batch = R"({"checks":[{"customer":"batcher","meter":"api_calls"},)"
                            R"({"customer":"batcher","meter":"tokens_in","amount":10}]})";
  std::atomic<int> allowed{0};
  std::atomic<int> denied{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::vector<std::thread> threads;
  for (int node = 0; node < kNodes; ++node) {
    for (int k = 0; k < kThreadsPerNode; ++k) {
      threads.emplace_back([&, node] {
        auto c = client(node);
        for (int i = 0; i < kBatchesPerThread; ++i) {
          HttpResponse r = c->request("POST", "/v1/check/batch", batch, admin_headers());
          Json j(r.body);
          simdjson::dom::array results;
          std::string_view first;
          std::string_view second;
          const bool shaped = j.ok() &&
                              j.root()["results"].get_array().get(results) == simdjson::SUCCESS &&
                              results.size() == 2;
          if (r.status == 200 && shaped && flag(j, "allowed") == true) {
            ++allowed;
            continue;
          }
          if (r.status == 429 && shaped && flag(j, "allowed") == false &&
              results.at(0)["reason"].get_string().get(first) == simdjson::SUCCESS &&
              results.at(1)["reason"].get_string().get(second) == simdjson::SUCCESS &&
              first == "batch_denied" && second == "limit_exceeded") {
            ++denied;
            continue;
          }
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back("node " + std::to_string(node) + ": " + std::to_string(r.status) +
                             " " + r.body);
        }
      });
    }
  }
  for (std::thread& th : threads) {
    th.join();
  }
  ASSERT_TRUE(failures.empty()) << failures.size()
                                << " unexpected answers, the first: " << failures.front();
  EXPECT_EQ(allowed.load(), kFit);
  EXPECT_EQ(denied.load(), kNodes * kThreadsPerNode * kBatchesPerThread - kFit);

  // The denied batches consumed nothing: exactly the limit is used, one more token is denied,
  // and the calls counted are the admitted batches' (the next one is call kFit + 1).
  HttpResponse over =
      admin(2, "POST", "/v1/check", R"({"customer":"batcher","meter":"tokens_in","amount":1})");
  EXPECT_EQ(over.status, 429) << over.body;
  EXPECT_EQ(Json(over.body).num("used"), kDayTokens) << over.body;
  HttpResponse call =
      admin(0, "POST", "/v1/check", R"({"customer":"batcher","meter":"api_calls"})");
  EXPECT_EQ(call.status, 200) << call.body;
  EXPECT_EQ(Json(call.body).num("used"), kFit + 1) << call.body;
}

// A reservation made on one node holds on every node and is committed once: on another node,
// and not again on a third; its usage is then in every node's query.
TEST_F(ClusterE2eTest, AReservationIsCommittedOnceOnAnyNode) {
  HttpResponse created = admin(0, "POST", "/v1/customers", creating("reserver", "limited"));
  ASSERT_EQ(created.status, 201) << created.body;
  HttpResponse held =
      admin(0, "POST", "/v1/check",
            R"({"customer":"reserver","meter":"tokens_in","amount":400,"consume":"reserve"})");
  ASSERT_EQ(held.status, 200) << held.body;
  const std::string id = Json(held.body).str("reservation_id");
  ASSERT_FALSE(id.empty()) << held.body;
  EXPECT_FALSE(Json(held.body).str("expires_at").empty()) << held.body;
  HttpResponse over =
      admin(1, "POST", "/v1/check", R"({"customer":"reserver","meter":"tokens_in","amount":101})");
  EXPECT_EQ(over.status, 429) << over.body;
  HttpResponse committed =
      admin(1, "POST", "/v1/reservations/" + id + "/commit", R"({"amount":250})");
  ASSERT_EQ(committed.status, 200) << committed.body;
  EXPECT_EQ(Json(committed.body).str("reservation_id"), id) << committed.body;
  HttpResponse again = admin(2, "POST", "/v1/reservations/" + id + "/commit", R"({"amount":250})");
  EXPECT_EQ(again.status, 404) << again.body;
  EXPECT_EQ(Json(again.body).str("error"), "NOT_FOUND") << again.body;
  HttpResponse released = admin(0, "POST", "/v1/reservations/" + id + "/release");
  EXPECT_EQ(released.status, 404) << released.body;
  EXPECT_EQ(meter_total(2, "tokens_in", "reserver", times_now()), 250);
  HttpResponse rest =
      admin(2, "POST", "/v1/check", R"({"customer":"reserver","meter":"tokens_in","amount":250})");
  EXPECT_EQ(rest.status, 200) << rest.body;
}

// Customers and keys written on one node are read, changed and used on the others.
TEST_F(ClusterE2eTest, CustomersAndKeysAreSharedByEveryNode) {
  HttpResponse created = admin(0, "POST", "/v1/customers",
                               R"({"id":"acme","name":"Acme Inc.","email":"billing@acme.example",)"
                               R"("timezone":"Europe/Berlin","metadata":{"tier":"gold"}})");
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string created_at = Json(created.body).str("created_at");

  HttpResponse read = admin(1, "GET", "/v1/customers/acme");
  ASSERT_EQ(read.status, 200) << read.body;
  Json r(read.body);
  EXPECT_EQ(r.str("name"), "Acme Inc.");
  EXPECT_EQ(r.str("email"), "billing@acme.example");
  EXPECT_EQ(r.str("timezone"), "Europe/Berlin");
  EXPECT_EQ(r.str("status"), "active");
  EXPECT_EQ(r.str("created_at"), created_at);
  simdjson::dom::element metadata;
  ASSERT_EQ(r.root()["metadata"].get(metadata), simdjson::SUCCESS) << read.body;
  EXPECT_EQ(simdjson::minify(metadata), R"({"tier":"gold"})");

  HttpResponse conflict = admin(2, "POST", "/v1/customers", R"({"id":"acme"})");
  EXPECT_EQ(conflict.status, 409) << conflict.body;
  EXPECT_EQ(Json(conflict.body).str("error"), "CONFLICT") << conflict.body;

  HttpResponse patched = admin(2, "PATCH", "/v1/customers/acme", R"({"name":"Acme GmbH"})");
  ASSERT_EQ(patched.status, 200) << patched.body;
  EXPECT_EQ(Json(patched.body).str("name"), "Acme GmbH");
  HttpResponse reread = admin(0, "GET", "/v1/customers/acme");
  EXPECT_EQ(Json(reread.body).str("name"), "Acme GmbH") << reread.body;
  HttpResponse list = admin(1, "GET", "/v1/customers");
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_NE(list.body.find("\"Acme GmbH\""), std::string::npos) << list.body;
  EXPECT_EQ(admin(1, "GET", "/v1/customers/nobody").status, 404);

  // A customer key made on node 1 authenticates on every node, for its own customer only.
  HttpResponse made = admin(1, "POST", "/v1/keys", R"({"customer":"acme","name":"acme backend"})");
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string key = Json(made.body).str("key");
  const std::string key_id = Json(made.body).str("id");
  const Times t = times_now();
  for (int node = 0; node < kNodes; ++node) {
    auto c = client(node);
    HttpResponse own = c->request("GET", "/v1/customers/acme", {}, key_headers(key));
    EXPECT_EQ(own.status, 200) << "node " << node << ": " << own.body;
    HttpResponse other = c->request("GET", "/v1/customers/checker", {}, key_headers(key));
    EXPECT_EQ(other.status, 403) << "node " << node << ": " << other.body;
    HttpResponse ingest = c->request("POST", "/v1/events",
                                     R"({"id":"key-)" + std::to_string(node) +
                                         R"(","type":"api_call","time":")" + t.event + R"("})",
                                     key_headers(key));
    EXPECT_EQ(ingest.status, 202) << "node " << node << ": " << ingest.body;
    HttpResponse admin_only = c->request("GET", "/v1/keys", {}, key_headers(key));
    EXPECT_EQ(admin_only.status, 403) << "node " << node << ": " << admin_only.body;
  }
  HttpResponse usage = admin(2, "GET", "/v1/customers/acme/usage?from=" + t.from + "&to=" + t.to);
  ASSERT_EQ(usage.status, 200) << usage.body;
  EXPECT_EQ(usage_value(usage, "api_calls"), kNodes) << usage.body;

  HttpResponse keys = admin(2, "GET", "/v1/keys");
  ASSERT_EQ(keys.status, 200) << keys.body;
  EXPECT_NE(keys.body.find("\"" + key_id + "\""), std::string::npos) << keys.body;
  EXPECT_EQ(keys.body.find(key), std::string::npos) << "the secret is never listed";

  // Revoked on node 0: refused there at once, and on the other nodes once what they read of
  // the key is older than the authentication cache's 5 s (docs/cluster.md).
  HttpResponse revoked = admin(0, "DELETE", "/v1/keys/" + key_id);
  ASSERT_EQ(revoked.status, 200) << revoked.body;
  EXPECT_EQ(flag(Json(revoked.body), "revoked"), true) << revoked.body;
  const auto revoked_at = std::chrono::steady_clock::now();
  HttpResponse at_once = client(0)->request("GET", "/v1/customers/acme", {}, key_headers(key));
  EXPECT_EQ(at_once.status, 401) << at_once.body;
  for (int node = 1; node < kNodes; ++node) {
    auto c = client(node);
    HttpResponse after;
    do {
      after = c->request("GET", "/v1/customers/acme", {}, key_headers(key));
      if (after.status == 401) {
        break;
      }
      EXPECT_EQ(after.status, 200) << "node " << node << ": " << after.body;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    } while (std::chrono::steady_clock::now() - revoked_at < std::chrono::milliseconds(7000));
    EXPECT_EQ(after.status, 401) << "node " << node << " 7 s after the revocation: " << after.body;
  }
  EXPECT_EQ(admin(1, "DELETE", "/v1/keys/key_0000000000000000").status, 404);
}

// What the first version of the mode does not do answers 501 NOT_IMPLEMENTED with a JSON body,
// on every node, never a silent difference.
TEST_F(ClusterE2eTest, WhatTheModeDoesNotDoAnswers501) {
  HttpResponse created = admin(0, "POST", "/v1/customers", creating("unbuilt", "free"));
  ASSERT_EQ(created.status, 201) << created.body;
  const Times t = times_now();

  struct Route {
    const char* method;
    std::string target;
    std::string body;
  };

  const std::vector<Route> routes = {
      {"POST", "/v1/customers/unbuilt/reprice",
       R"({"from":")" + t.from + R"(","to":")" + t.to + R"("})"},
      {"POST", "/v1/admin/archive", R"({"before":")" + t.from + R"("})"},
  };
  // Alerts are built (docs/cluster.md, "Alerts"): listed from PostgreSQL on every node.
  for (int node = 0; node < kNodes; ++node) {
    HttpResponse alerts = admin(node, "GET", "/v1/alerts?customer=unbuilt", "");
    EXPECT_EQ(alerts.status, 200) << "node " << node << ": " << alerts.body;
    EXPECT_NE(alerts.body.find("\"alerts\":[]"), std::string::npos) << alerts.body;
  }
  // Listing and exporting events and the usage history are built (docs/cluster.md).
  for (int node = 0; node < kNodes; ++node) {
    HttpResponse listed = admin(node, "GET", "/v1/events?customer=unbuilt", "");
    EXPECT_EQ(listed.status, 200) << "node " << node << ": " << listed.body;
    EXPECT_EQ(listed.body, R"({"events":[],"next_cursor":null})") << "node " << node;
    HttpResponse exported =
        admin(node, "GET", "/v1/export?format=jsonl&kind=events&customer=unbuilt", "");
    EXPECT_EQ(exported.status, 200) << "node " << node << ": " << exported.body;
    HttpResponse history =
        admin(node, "GET", "/v1/customers/unbuilt/usage/history?meter=api_calls", "");
    EXPECT_EQ(history.status, 200) << "node " << node << ": " << history.body;
  }
  int i = 0;
  for (const Route& route : routes) {
    const int node = i++ % kNodes;
    HttpResponse r = admin(node, route.method, route.target, route.body);
    EXPECT_EQ(r.status, 501) << route.method << " " << route.target << " on node " << node << ": "
                             << r.body;
    Json j(r.body);
    if (!j.ok()) {
      ADD_FAILURE() << route.target << " answered no JSON: " << r.body;
      continue;
    }
    EXPECT_EQ(j.str("error"), "NOT_IMPLEMENTED") << route.target << ": " << r.body;
    EXPECT_FALSE(j.str("message").empty()) << r.body;
    EXPECT_NE(r.header("content-type").find("json"), std::string::npos) << route.target;
  }
}

// kill -9 of one node while clients ingest through all three: the two others keep answering,
// every acknowledged event is stored exactly once, and batches retried on another node after
// no answer are not counted twice. The killed node is started again at the end.
TEST_F(ClusterE2eTest, KillNineOfANodeDuringIngestLosesAndDoublesNothing) {
  HttpResponse created = admin(0, "POST", "/v1/customers", creating("bystander", "free"));
  ASSERT_EQ(created.status, 201) << created.body;
  const Times t = times_now();
  constexpr int kClients = 6;
  constexpr int kBatches = 40;  // per client
  constexpr int kBatchEvents = 25;
  constexpr int kVictim = 2;
  std::atomic<int> batches_acked{0};
  std::atomic<std::int64_t> accepted{0};
  std::atomic<std::int64_t> duplicates{0};
  std::atomic<int> retries{0};
  std::mutex mu;
  std::vector<std::string> failures;         // answers from the surviving nodes that were not 202
  std::vector<std::string> acked_by_victim;  // batches the killed node answered 202
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      std::unique_ptr<HttpClient> clients[kNodes];
      for (int n = 0; n < kNodes; ++n) {
        clients[n] = client(n);
      }
      for (int b = 0; b < kBatches; ++b) {
        const std::string body =
            api_call_batch("survivor", "k" + std::to_string(c) + "-" + std::to_string(b), 0,
                           kBatchEvents, t.event);
        int node = (c + b) % kNodes;
        bool acked = false;
        for (int attempt = 0; attempt < 2 * kNodes && !acked; ++attempt) {
          HttpResponse r = clients[node]->request("POST", "/v1/events", body, admin_headers());
          if (r.status == 202) {
            Json j(r.body);
            accepted += j.num("accepted");
            duplicates += j.num("duplicates");
            acked = true;
            if (node == kVictim) {
              std::lock_guard<std::mutex> lock(mu);
              acked_by_victim.push_back(body);
            }
            break;
          }
          // The victim fails the requests in flight when it dies and refuses the later ones;
          // no other node may fail one.
          if (node != kVictim) {
            std::lock_guard<std::mutex> lock(mu);
            failures.push_back("node " + std::to_string(node) + ": " + std::to_string(r.status) +
                               " " + r.body);
          }
          ++retries;
          node = (node + 1) % kNodes;  // another node, as a load balancer would
        }
        if (acked) {
          ++batches_acked;
        } else {
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back("batch k" + std::to_string(c) + "-" + std::to_string(b) +
                             " was never acknowledged");
        }
      }
    });
  }
  // Checks for another customer go on meanwhile on the two nodes that stay: every one answered
  // 200.
  std::atomic<bool> ingest_done{false};
  std::atomic<int> checks_allowed{0};
  std::vector<std::thread> checkers;
  for (int node = 0; node < kNodes; ++node) {
    if (node == kVictim) {
      continue;
    }
    checkers.emplace_back([&, node] {
      auto c = client(node);
      while (!ingest_done.load()) {
        HttpResponse r =
            c->request("POST", "/v1/check", R"({"customer":"bystander","meter":"api_calls"})",
                       admin_headers());
        if (r.status == 200) {
          ++checks_allowed;
        } else {
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back("check on node " + std::to_string(node) + ": " +
                             std::to_string(r.status) + " " + r.body);
        }
      }
    });
  }
  // Kill the victim once a third of the batches are in (or after 30 s, when they are not).
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (batches_acked.load() < kClients * kBatches / 3 &&
         std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  Node& victim = nodes_[kVictim];
  ASSERT_TRUE(victim.process->kill_hard());
  EXPECT_EQ(victim.process->wait_exit(10000), 128 + SIGKILL);
  for (std::thread& th : threads) {
    th.join();
  }
  ingest_done = true;
  for (std::thread& th : checkers) {
    th.join();
  }
  EXPECT_GT(checks_allowed.load(), 0);
  EXPECT_TRUE(failures.empty()) << failures.size() << " failures, the first: " << failures.front();
  const std::int64_t total = kClients * kBatches * kBatchEvents;
  EXPECT_EQ(batches_acked.load(), kClients * kBatches);
  // Every event was acknowledged once, as accepted or (after a retry of a batch the victim had
  // committed without answering) as a duplicate; none was a duplicate of a first send otherwise.
  EXPECT_EQ(accepted.load() + duplicates.load(), total);
  EXPECT_GT(retries.load(), 0) << "no request met the dead node: the test proved nothing";
  std::printf(
      "kill -9 during ingest: %d batches of %d acknowledged (%zu by the killed node), "
      "%lld events accepted and %lld answered as duplicates (batches the killed node had "
      "committed without answering), %d requests sent again to another node; %d checks "
      "allowed meanwhile\n",
      batches_acked.load(), kBatchEvents, acked_by_victim.size(),
      static_cast<long long>(accepted.load()), static_cast<long long>(duplicates.load()),
      retries.load(), checks_allowed.load());
  for (int node = 0; node < kNodes; ++node) {
    if (node != kVictim) {
      EXPECT_EQ(meter_total(node, "api_calls", "survivor", t), total) << "node " << node;
    }
  }
  EXPECT_EQ(stored_events("survivor"), total);
  // What the killed node acknowledged is there: each of its batches, sent again to a survivor,
  // is answered as duplicates, and counted once.
  EXPECT_FALSE(acked_by_victim.empty());
  for (const std::string& body : acked_by_victim) {
    HttpResponse again = admin(0, "POST", "/v1/events", body);
    EXPECT_EQ(again.status, 202) << again.body;
    EXPECT_EQ(Json(again.body).num("duplicates"), kBatchEvents) << again.body;
  }
  EXPECT_EQ(meter_total(1, "api_calls", "survivor", t), total);
  // The victim comes back and reads the same.
  victim.process.reset();
  ASSERT_EQ(start_node(kVictim), "");
  EXPECT_EQ(meter_total(kVictim, "api_calls", "survivor", t), total);
  HttpResponse health = admin(kVictim, "GET", "/health");
  EXPECT_EQ(health.status, 200) << health.body;
}

// `tally serve` refuses a database whose schema is missing, outdated or newer than the binary:
// exit 1 without listening, saying to run `tally migrate` (or that a newer Tally migrated it).
TEST_F(ClusterE2eTest, ServeRefusesASchemaItDoesNotKnow) {
  ASSERT_TRUE(pg_->create_database("unmigrated").ok());
  ASSERT_TRUE(pg_->create_database("outdated").ok());
  ASSERT_TRUE(pg_->create_database("newer").ok());
  std::string output;
  ASSERT_EQ(run_tally({"migrate", "--config", write_config("outdated", "outdated")}, &output), 0)
      << output;
  ASSERT_EQ(run_tally({"migrate", "--config", write_config("newer", "newer")}, &output), 0)
      << output;
  // The latest migration's row removed: the schema looks one version behind the binary.
  ASSERT_TRUE(pg_->psql("outdated",
                        "DELETE FROM tally_schema_version WHERE version = "
                        "(SELECT max(version) FROM tally_schema_version)")
                  .has_value());
  ASSERT_TRUE(pg_->psql("newer",
                        "INSERT INTO tally_schema_version (version, name) SELECT max(version) + 1, "
                        "'from the future' FROM tally_schema_version")
                  .has_value());
  auto latest = pg_->psql("tally", "SELECT max(version) FROM tally_schema_version");
  ASSERT_TRUE(latest.has_value());
  while (!latest->empty() && latest->back() == '\n') {
    latest->pop_back();
  }

  struct Case {
    std::string db;
    std::vector<std::string> says;  // parts of what serve must print
  };

  const std::vector<Case> cases = {
      {"unmigrated", {"schema at version 0", "run `tally migrate`"}},
      {"outdated", {"missing: " + *latest + ")", "run `tally migrate`"}},
      {"newer", {"migrated by a newer Tally"}},
  };
  for (const Case& c : cases) {
    const std::string config =
        c.db == "unmigrated" ? write_config(c.db, c.db) : dir_ + "/" + c.db + ".toml";
    const std::string port_file = dir_ + "/" + c.db + ".port";
    const int code = run_tally({"serve", "--config", config, "--data", dir_ + "/" + c.db + "-data",
                                "--listen", "127.0.0.1:0", "--port-file", port_file},
                               &output);
    EXPECT_EQ(code, 1) << c.db << ": " << output;
    for (const std::string& part : c.says) {
      EXPECT_NE(output.find(part), std::string::npos) << c.db << ": " << output;
    }
    EXPECT_FALSE(testing::read_file(port_file).has_value()) << c.db << ": it listened";
    std::printf("tally serve on the %s database: exit %d: %s", c.db.c_str(), code, output.c_str());
  }
}

// Alerts over HTTP: three nodes checking one customer past both thresholds at once fire each
// alert once; the three nodes' webhook senders share the outbox, so each delivery reaches the
// receiver once; every node lists the alerts as sent.
TEST_F(ClusterE2eTest, AlertsFireOnceAndTheNodesSendersDeliverEachOnce) {
  HttpResponse created = admin(0, "POST", "/v1/customers", creating("alerted", "alerting"));
  ASSERT_EQ(created.status, 201) << created.body;
  std::atomic<int> allowed{0};
  std::vector<std::thread> threads;
  for (int node = 0; node < kNodes; ++node) {
    for (int k = 0; k < 2; ++k) {
      threads.emplace_back([&, node] {
        auto c = client(node);
        for (int i = 0; i < 4; ++i) {
          HttpResponse r =
              c->request("POST", "/v1/check", R"({"customer":"alerted","meter":"api_calls"})",
                         admin_headers());
          allowed += r.status == 200 ? 1 : 0;
        }
      });
    }
  }
  for (std::thread& th : threads) {
    th.join();
  }
  EXPECT_EQ(allowed.load(), 10);
  ASSERT_TRUE(receiver_->wait_for(2, 20'000)) << receiver_->requests().size();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // no second copy comes
  std::set<std::string> ids;
  std::set<std::string> thresholds;
  for (const auto& r : receiver_->requests()) {
    if (r.body.find("\"customer\":\"alerted\"") == std::string::npos) {
      continue;
    }
    ids.insert(r.header("tally-delivery-id"));
    for (const char* t : {"50", "100"}) {
      if (r.body.find(std::string("\"threshold_percent\":") + t + ",") != std::string::npos) {
        thresholds.insert(t);
      }
    }
    EXPECT_EQ(r.header("tally-event"), "alert.triggered");
  }
  EXPECT_EQ(receiver_->requests().size(), 2u);
  EXPECT_EQ(ids.size(), 2u);
  EXPECT_EQ(thresholds, (std::set<std::string>{"50", "100"}));
  for (int node = 0; node < kNodes; ++node) {
    std::string body;
    for (int i = 0; i < 100; ++i) {
      HttpResponse r = admin(node, "GET", "/v1/alerts?customer=alerted", "");
      ASSERT_EQ(r.status, 200) << r.body;
      body = r.body;
      if (body.find("\"pending\"") == std::string::npos) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    Json j(body);
    auto alerts = j.root()["alerts"].get_array();
    ASSERT_FALSE(alerts.error()) << body;
    EXPECT_EQ(alerts.value_unsafe().size(), 2u) << body;
    EXPECT_EQ(body.find("\"pending\""), std::string::npos) << body;
    EXPECT_NE(body.find("\"status\":\"sent\""), std::string::npos) << body;
  }
}

// A meter query over every customer, by group, answers the same on every node, a row per
// customer and group with each one's usage, whichever node wrote it.
TEST_F(ClusterE2eTest, AQueryOverEveryCustomerIsTheSameOnEveryNode) {
  const Times t = times_now();
  const std::vector<std::pair<std::string, int>> customers = {
      {"every-a", 3}, {"every-b", 5}, {"every-c", 2}};
  for (std::size_t c = 0; c < customers.size(); ++c) {
    HttpResponse w =
        admin(static_cast<int>(c) % kNodes, "POST", "/v1/events",
              api_call_batch(customers[c].first, "every", 0, customers[c].second, t.event));
    ASSERT_EQ(w.status, 202) << w.body;
  }
  const std::string target =
      "/v1/meters/api_calls/query?group_by=service&from=" + t.from + "&to=" + t.to;
  std::string first_body;
  for (int node = 0; node < kNodes; ++node) {
    HttpResponse r = admin(node, "GET", target);
    ASSERT_EQ(r.status, 200) << "node " << node << ": " << r.body;
    if (node == 0) {
      first_body = r.body;
    } else {
      EXPECT_EQ(r.body, first_body) << "node " << node;
    }
    Json j(r.body);
    simdjson::dom::array rows;
    ASSERT_TRUE(j.ok() && j.root()["data"].get_array().get(rows) == simdjson::SUCCESS) << r.body;
    std::vector<std::pair<std::string, std::int64_t>> mine;
    std::string previous;
    for (simdjson::dom::element row : rows) {
      std::string_view customer;
      std::string_view service;
      ASSERT_EQ(row["customer"].get_string().get(customer), simdjson::SUCCESS) << r.body;
      EXPECT_GE(std::string(customer), previous) << "rows are in customer order: " << r.body;
      previous = std::string(customer);
      if (customer.substr(0, 6) == "every-") {
        ASSERT_EQ(row["group"]["service"].get_string().get(service), simdjson::SUCCESS) << r.body;
        EXPECT_EQ(service, "chat");
        mine.emplace_back(std::string(customer), as_int(row["value"]));
      }
    }
    const std::vector<std::pair<std::string, std::int64_t>> want = {
        {"every-a", 3}, {"every-b", 5}, {"every-c", 2}};
    EXPECT_EQ(mine, want) << r.body;
  }
}

// A wallet changed over HTTP on one node is read on the others, with the embedded API's bodies.
TEST_F(ClusterE2eTest, WalletsOverHttpOnEveryNode) {
  HttpResponse created = admin(0, "POST", "/v1/customers", creating("walleted", "free"));
  ASSERT_EQ(created.status, 201) << created.body;
  HttpResponse topped = admin(0, "POST", "/v1/customers/walleted/wallet/transactions",
                              R"({"type":"top_up","amount":100,"description":"first"})");
  ASSERT_EQ(topped.status, 201) << topped.body;
  HttpResponse taken = admin(1, "POST", "/v1/customers/walleted/wallet/transactions",
                             R"({"type":"adjustment","amount":-30})");
  ASSERT_EQ(taken.status, 201) << taken.body;
  Json wallet(admin(2, "GET", "/v1/customers/walleted/wallet", "").body);
  ASSERT_TRUE(wallet.ok());
  EXPECT_EQ(simdjson::minify(wallet["balance"]), "70");
  EXPECT_EQ(wallet.num("transactions"), 2);
  HttpResponse listed = admin(0, "GET", "/v1/customers/walleted/wallet/transactions", "");
  ASSERT_EQ(listed.status, 200) << listed.body;
  Json page(listed.body);
  ASSERT_TRUE(page.ok());
  simdjson::dom::array txns;
  ASSERT_EQ(page["transactions"].get_array().get(txns), simdjson::SUCCESS);
  EXPECT_EQ(txns.size(), 2u);
  HttpResponse bad = admin(1, "POST", "/v1/customers/walleted/wallet/transactions",
                           R"({"type":"grant","amount":-1})");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(admin(2, "GET", "/v1/customers/nobody/wallet", "").status, 404);
}

// Limit overrides set on one node over HTTP are applied by every node's checks within their 1 s
// customer cache, and the limits report reads the same on every node; a refused override is the
// embedded store's 400 and changes nothing.
TEST_F(ClusterE2eTest, OverridesAndTheLimitsReportOnEveryNode) {
  HttpResponse created = admin(0, "POST", "/v1/customers", creating("overridden", "free"));
  ASSERT_EQ(created.status, 201) << created.body;
  HttpResponse set = admin(1, "PUT", "/v1/customers/overridden/overrides",
                           R"({"overrides":[{"meter":"api_calls","period":"day","amount":3}]})");
  ASSERT_EQ(set.status, 200) << set.body;
  EXPECT_NE(set.body.find(R"("overrides":[{"meter":"api_calls","period":"day")"), std::string::npos)
      << set.body;
  HttpResponse bad = admin(2, "PUT", "/v1/customers/overridden/overrides",
                           R"({"overrides":[{"meter":"nope","period":"day","amount":3}]})");
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(admin(0, "PUT", "/v1/customers/nobody/overrides", R"({"overrides":[]})").status, 404);
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  int allowed = 0;
  for (int i = 0; i < 6; ++i) {
    HttpResponse r =
        admin(i % kNodes, "POST", "/v1/check", R"({"customer":"overridden","meter":"api_calls"})");
    ASSERT_TRUE(r.status == 200 || r.status == 429) << r.status << " " << r.body;
    allowed += r.status == 200 ? 1 : 0;
  }
  EXPECT_EQ(allowed, 3);
  std::string first;
  for (int node = 0; node < kNodes; ++node) {
    HttpResponse report = admin(node, "GET", "/v1/customers/overridden/limits", "");
    ASSERT_EQ(report.status, 200) << "node " << node << ": " << report.body;
    Json j(report.body);
    ASSERT_TRUE(j.ok()) << report.body;
    EXPECT_EQ(j.str("customer"), "overridden");
    EXPECT_NE(report.body.find(R"("rule":"api_calls per day")"), std::string::npos) << report.body;
    EXPECT_NE(report.body.find(R"("api_calls per day at 100.00%")"), std::string::npos)
        << report.body;
    if (node == 0) {
      first = report.body;
    } else {
      EXPECT_EQ(report.body, first) << "node " << node;
    }
  }
  EXPECT_EQ(admin(1, "GET", "/v1/customers/nobody/limits", "").status, 404);
}

// The primary of a customer's Redis slot killed (SIGKILL): its replica takes over (the cluster's
// node timeout is 1 s in tests) and the nodes go on checking, with the counters the replica
// holds. Meanwhile a check is answered 503 (never a wrong verdict), and in the end exactly the
// limit is admitted: the consumption admitted before the kill, replicated, counts. It comes last
// of the binary: the cluster it leaves has a primary without replica.
TEST_F(ClusterE2eTest, ChecksGoOnWhenTheirRedisPrimaryIsKilled) {
  const std::string customer = "redis-failover";
  HttpResponse created = admin(0, "POST", "/v1/customers", creating(customer, "limited"));
  ASSERT_EQ(created.status, 201) << created.body;
  const std::string body = "{\"customer\":\"" + customer + "\",\"meter\":\"api_calls\"}";
  constexpr int kBefore = 60;
  for (int i = 0; i < kBefore; ++i) {
    HttpResponse r = admin(i % kNodes, "POST", "/v1/check", body);
    ASSERT_EQ(r.status, 200) << r.body;
  }

  // The primary of the customer's slot (its counters' keys are tagged {tally:c:<id>}).
  const auto port_of = [](const std::string& endpoint) {
    return static_cast<std::uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1)));
  };
  const std::uint16_t any = port_of(redis_->endpoints()[0]);
  auto slot_text = redis_->cli(any, {"CLUSTER", "KEYSLOT", "{tally:c:" + customer + "}"});
  ASSERT_TRUE(slot_text.has_value()) << slot_text.error().to_string();
  const int slot = std::stoi(*slot_text);
  auto nodes_text = redis_->cli(any, {"CLUSTER", "NODES"});
  ASSERT_TRUE(nodes_text.has_value()) << nodes_text.error().to_string();
  std::string primary;  // host:port
  std::string primary_id;
  std::istringstream lines(*nodes_text);
  for (std::string line; std::getline(lines, line);) {
    std::istringstream fields(line);
    std::vector<std::string> f;
    for (std::string w; fields >> w;) {
      f.push_back(w);
    }
    if (f.size() < 9 || f[2].find("master") == std::string::npos) {
      continue;
    }
    for (std::size_t i = 8; i < f.size(); ++i) {
      const std::size_t dash = f[i].find('-');
      const int lo = std::stoi(f[i].substr(0, dash));
      const int hi = dash == std::string::npos ? lo : std::stoi(f[i].substr(dash + 1));
      if (lo <= slot && slot <= hi) {
        primary = f[1].substr(0, f[1].find('@'));
        primary_id = f[0];
      }
    }
  }
  ASSERT_FALSE(primary.empty()) << "no primary serves slot " << slot << ":\n" << *nodes_text;

  // Replication is asynchronous: the test kills the primary once its replica has every write
  // (what a failover can lose otherwise is the bound docs/cluster.md states).
  const auto repl_offset = [&](std::uint16_t port, const std::string& field) -> long long {
    auto info = redis_->cli(port, {"INFO", "replication"});
    if (!info) {
      return -1;
    }
    const std::size_t at = info->find(field + ":");
    return at == std::string::npos ? -1 : std::stoll(info->substr(at + field.size() + 1));
  };
  std::uint16_t replica = 0;
  std::istringstream again(*nodes_text);
  for (std::string line; std::getline(again, line);) {
    std::istringstream fields(line);
    std::string id, endpoint, flags, primary_of;
    fields >> id >> endpoint >> flags >> primary_of;
    if (flags.find("slave") != std::string::npos && primary_of == primary_id) {
      replica = port_of(endpoint.substr(0, endpoint.find('@')));
    }
  }
  ASSERT_NE(replica, 0) << "no replica of " << primary << ":\n" << *nodes_text;
  bool caught_up = false;
  for (int i = 0; i < 100 && !caught_up; ++i) {
    const long long master = repl_offset(port_of(primary), "master_repl_offset");
    caught_up = master > 0 && repl_offset(replica, "slave_repl_offset") == master;
    if (!caught_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  ASSERT_TRUE(caught_up) << "the replica " << replica << " did not catch up with " << primary;

  ASSERT_TRUE(redis_->kill_node(port_of(primary)));
  const auto killed_at = std::chrono::steady_clock::now();

  // Every node checks until the day's limit is reached; meanwhile only 503 is acceptable.
  std::atomic<int> allowed{0};
  std::atomic<int> unavailable{0};
  std::mutex mu;
  std::vector<std::string> failures;
  std::atomic<bool> denied_seen{false};
  std::vector<std::thread> threads;
  for (int node = 0; node < kNodes; ++node) {
    threads.emplace_back([&, node] {
      auto c = client(node);
      const auto deadline = killed_at + std::chrono::seconds(30);
      while (!denied_seen && std::chrono::steady_clock::now() < deadline) {
        HttpResponse r = c->request("POST", "/v1/check", body, admin_headers());
        Json j(r.body);
        if (r.status == 200 && flag(j, "allowed") == true) {
          ++allowed;
        } else if (r.status == 429 && j.str("reason") == "limit_exceeded") {
          denied_seen = true;
        } else if (r.status == 503) {
          ++unavailable;
          std::this_thread::sleep_for(std::chrono::milliseconds(50));
        } else {
          std::lock_guard<std::mutex> lock(mu);
          failures.push_back("node " + std::to_string(node) + ": " + std::to_string(r.status) +
                             " " + r.body);
          return;
        }
      }
    });
  }
  for (std::thread& th : threads) {
    th.join();
  }
  const auto took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                           std::chrono::steady_clock::now() - killed_at)
                           .count();
  ASSERT_TRUE(failures.empty()) << failures.size()
                                << " unexpected answers, the first: " << failures.front();
  EXPECT_TRUE(denied_seen.load()) << "the limit was not reached within 30 s of the kill";
  EXPECT_EQ(kBefore + allowed.load(), kDayCalls);
  std::printf(
      "redis failover: %d checks answered 503 meanwhile, limit reached %lld ms after the "
      "kill\n",
      unavailable.load(), static_cast<long long>(took_ms));
}

// The Lago API's events, all or nothing, on every node: a batch is stored whole on one node; the
// same batch on the others, and a batch with one stored event, are refused whole (422 naming
// each event by its index) and store nothing; a single event goes in on another node. (After
// the Redis failover test, this runs on a cluster with a primary without replica: ingest does
// not need one.)
TEST_F(ClusterE2eTest, LagoBatchesAreStoredWholeOrNotAtAllOnEveryNode) {
  auto lago = [](const std::string& id) {
    return R"({"transaction_id":")" + id +
           R"(","external_customer_id":"lagoer","code":"api_call"})";
  };
  const std::string batch =
      R"({"events":[)" + lago("l1") + "," + lago("l2") + "," + lago("l3") + "]}";
  HttpResponse first = admin(0, "POST", "/lago/api/v1/events/batch", batch);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_NE(first.body.find(R"("transaction_id":"l3")"), std::string::npos) << first.body;
  EXPECT_EQ(stored_events("lagoer"), 3);
  for (int node = 1; node < kNodes; ++node) {
    HttpResponse again = admin(node, "POST", "/lago/api/v1/events/batch", batch);
    EXPECT_EQ(again.status, 422) << "node " << node << ": " << again.body;
    EXPECT_NE(again.body.find(R"("2":{"transaction_id":["value_already_exist"]})"),
              std::string::npos)
        << again.body;
  }
  HttpResponse mixed =
      admin(2, "POST", "/lago/api/v1/events/batch",
            R"({"events":[)" + lago("l4") + "," + lago("l1") + "," + lago("l5") + "]}");
  EXPECT_EQ(mixed.status, 422) << mixed.body;
  EXPECT_NE(mixed.body.find(R"({"1":{"transaction_id":["value_already_exist"]}})"),
            std::string::npos)
      << mixed.body;
  EXPECT_EQ(stored_events("lagoer"), 3);
  HttpResponse single = admin(1, "POST", "/lago/api/v1/events", R"({"event":)" + lago("l4") + "}");
  EXPECT_EQ(single.status, 200) << single.body;
  EXPECT_EQ(stored_events("lagoer"), 4);
  const Times t = times_now();
  for (int node = 0; node < kNodes; ++node) {
    EXPECT_EQ(meter_total(node, "api_calls", "lagoer", t), 4) << "node " << node;
  }
}

}  // namespace
}  // namespace tally
