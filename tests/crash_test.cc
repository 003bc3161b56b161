// Durability: SIGKILL the server while several clients ingest, restart it, and prove that every
// acknowledged event is present exactly once and that `tally verify` finds no aggregate that
// differs from a recomputation over the stored events.
#include <atomic>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <thread>

#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

constexpr const char* kConfig = R"(
[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"

[[meters]]
key = "bytes"
event_type = "api_call"
aggregation = "sum"
value = "$.bytes"
group_by = ["route"]
)";

// All stored event ids of one customer, with how often each appears.
std::map<std::string, int> stored_ids(HttpClient& c, const std::string& customer) {
  std::map<std::string, int> out;
  std::string cursor;
  for (int page = 0; page < 10000; ++page) {
    std::string target = "/v1/events?limit=1000&customer=" + customer;
    if (!cursor.empty())
      target += "&cursor=" + cursor;
    auto r = c.request("GET", target, {}, key_header(kAdminKey));
    EXPECT_EQ(r.status, 200) << r.body;
    if (r.status != 200)
      break;
    Json j(r.body);
    for (auto e : j["events"].get_array()) {
      ++out[std::string(e["id"].get_string().value())];
    }
    if (j.is_null("next_cursor"))
      break;
    cursor = j.str("next_cursor");
  }
  return out;
}

// Four clients ingest for `ingest_ms`, the server is killed mid-stream, restarted on the same
// directory: every acknowledged event is there once, the count meter equals the stored events,
// retries are duplicates and `tally verify` passes. `before_kill` runs just before the kill.
void ingest_kill_restart_verify(const std::string& config, int ingest_ms,
                                const std::function<void(const std::string& dir)>& before_kill,
                                const std::function<void(HttpClient&)>& after_restart) {
  const std::string dir = make_temp_dir("tally-crash-");
  std::vector<std::set<std::string>> acked(4);
  std::vector<std::vector<std::string>> acked_bodies(4);
  {
    TallyServer server(config, dir);
    {
      // Customers with no events after the first moments: a restart from a checkpoint reads
      // only the four busy ones again.
      std::string body = "{\"events\":[";
      for (int q = 0; q < 8; ++q) {
        body += std::string(q ? "," : "") + R"({"id":"quiet-)" + std::to_string(q) +
                R"(","customer":"q)" + std::to_string(q) +
                R"(","type":"api_call","properties":{"bytes":5,"route":"r0"}})";
      }
      auto r = server.client()->request("POST", "/v1/events", body + "]}", key_header(kAdminKey));
      ASSERT_EQ(r.status, 202) << r.body;
    }
    std::atomic<bool> stop{false};
    std::vector<std::thread> clients;
    for (int t = 0; t < 4; ++t) {
      clients.emplace_back([&, t] {
        HttpClient c("127.0.0.1", server.port(), 5000);
        for (int n = 0; !stop.load() && n < 100000; ++n) {
          std::string body = "{\"events\":[";
          std::vector<std::string> ids;
          for (int i = 0; i < 40; ++i) {
            const std::string id =
                "t" + std::to_string(t) + "-" + std::to_string(n) + "-" + std::to_string(i);
            ids.push_back(id);
            body += std::string(i ? "," : "") + R"({"id":")" + id + R"(","customer":"c)" +
                    std::to_string(t) + R"(","type":"api_call","properties":{"bytes":)" +
                    std::to_string(i * 10 + n % 7) + R"(,"route":"r)" + std::to_string(i % 3) +
                    "\"}}";
          }
          body += "]}";
          auto r = c.request("POST", "/v1/events", body, key_header(kAdminKey));
          if (r.status == 0) {
            break;  // the server is gone
          }
          ASSERT_EQ(r.status, 202) << r.body;
          for (auto& id : ids)
            acked[t].insert(id);
          acked_bodies[t].push_back(std::move(body));
        }
      });
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(ingest_ms));
    before_kill(dir);
    server.kill_hard();  // SIGKILL by pid, mid-stream
    stop = true;
    for (auto& th : clients)
      th.join();
  }
  std::size_t total_acked = 0;
  for (auto& s : acked)
    total_acked += s.size();
  ASSERT_GT(total_acked, 0u) << "no batch was acknowledged before the kill";

  TallyServer server(config, dir);
  auto c = server.client();
  after_restart(*c);
  for (int t = 0; t < 4; ++t) {
    const auto stored = stored_ids(*c, "c" + std::to_string(t));
    for (const auto& id : acked[t]) {
      auto it = stored.find(id);
      ASSERT_NE(it, stored.end()) << "acknowledged event " << id << " was lost";
    }
    for (const auto& [id, n] : stored) {
      ASSERT_EQ(n, 1) << "event " << id << " stored " << n << " times";
    }
    // The count meter equals the stored events.
    auto q = c->request("GET", "/v1/meters/calls/query?customer=c" + std::to_string(t), {},
                        key_header(kAdminKey));
    ASSERT_EQ(q.status, 200);
    Json qj(q.body);
    auto rows = qj["data"].get_array();
    if (stored.empty()) {
      EXPECT_EQ(rows.size(), 0u);
    } else {
      ASSERT_EQ(rows.size(), 1u);
      EXPECT_EQ(rows.at(0)["value"].get_int64().value(), static_cast<std::int64_t>(stored.size()));
    }
    // Retried acknowledged batches are all duplicates.
    if (!acked_bodies[t].empty()) {
      auto again = c->request("POST", "/v1/events", acked_bodies[t].front(), key_header(kAdminKey));
      ASSERT_EQ(again.status, 202);
      EXPECT_EQ(Json(again.body).str("status"), "all_duplicates");
    }
  }
  EXPECT_EQ(server.stop(), 0) << server.log();
  std::string out;
  EXPECT_EQ(
      run_tally({"verify", "--config", dir + "/tally.toml", "--data", dir + "/data"}, &out, dir), 0)
      << out;
  EXPECT_NE(out.find("OK"), std::string::npos) << out;
  remove_tree(dir);
}

TEST(CrashTest, AcknowledgedEventsSurviveSigkill) {
  // No periodic checkpoint: the restart reads every stored aggregate.
  ingest_kill_restart_verify(
      std::string(kConfig) + "\n[storage]\ncheckpoint_interval_seconds = 0\n", 1500,
      [](const std::string& dir) {
        EXPECT_FALSE(std::filesystem::exists(dir + "/data/aggregates.checkpoint"));
      },
      [](HttpClient& c) {
        EXPECT_NE(c.request("GET", "/metrics").body.find("tally_aggregates_from_checkpoint 0"),
                  std::string::npos);
      });
}

TEST(CrashTest, AcknowledgedEventsSurviveSigkillAfterAPeriodicCheckpoint) {
  // A checkpoint every second: the restart reads the last one and the customers committed after
  // it, which the clients went on ingesting for.
  ingest_kill_restart_verify(
      std::string(kConfig) + "\n[storage]\ncheckpoint_interval_seconds = 1\n", 2500,
      [](const std::string& dir) {
        EXPECT_TRUE(std::filesystem::exists(dir + "/data/aggregates.checkpoint"));
      },
      [](HttpClient& c) {
        EXPECT_NE(c.request("GET", "/metrics").body.find("tally_aggregates_from_checkpoint 1"),
                  std::string::npos);
      });
}

TEST(CliTest, IngestQueryVerifyKeys) {
  const std::string dir = make_temp_dir("tally-cli-");
  std::ofstream(dir + "/tally.toml") << kConfig;
  {
    std::ofstream f(dir + "/events.jsonl");
    for (int i = 0; i < 2500; ++i) {
      f << R"({"id":"e)" << i
        << R"(","customer":"cli-co","type":"api_call","time":"2025-03-01T10:00:00Z","properties":{"bytes":2,"route":"r"}})"
        << "\n";
    }
    f << R"({"id":"e0","customer":"cli-co","type":"api_call","time":"2025-03-01T10:00:00Z"})"
      << "\n";
    f << R"({"customer":"cli-co","type":"api_call"})"
      << "\n";
  }
  const std::vector<std::string> data = {"--config", dir + "/tally.toml", "--data", dir + "/data"};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.end(), data.begin(), data.end());
    return args;
  };
  std::string out;
  EXPECT_EQ(run_tally(with({"ingest", dir + "/events.jsonl"}), &out, dir), 1)
      << out;  // one bad line
  EXPECT_NE(out.find("2500 accepted, 1 duplicates, 1 rejected"), std::string::npos) << out;
  EXPECT_NE(out.find("line 2502"), std::string::npos) << out;
  EXPECT_EQ(
      run_tally(with({"query", "bytes", "--customer", "cli-co", "--from", "2025-03-01T00:00:00Z"}),
                &out, dir),
      0)
      << out;
  EXPECT_NE(out.find("\"value\":5000"), std::string::npos) << out;
  EXPECT_EQ(run_tally(with({"usage", "cli-co", "--from", "2025-03-01T00:00:00Z", "--to",
                            "2025-04-01T00:00:00Z"}),
                      &out, dir),
            0)
      << out;
  EXPECT_NE(out.find("\"meter\":\"calls\",\"aggregation\":\"count\",\"unit\":\"\",\"value\":2500"),
            std::string::npos)
      << out;
  EXPECT_EQ(run_tally(with({"verify"}), &out, dir), 0) << out;
  EXPECT_EQ(
      run_tally(with({"keys", "create", "--customer", "cli-co", "--scopes", "read"}), &out, dir), 0)
      << out;
  EXPECT_NE(out.find("\"key\":\"tk_"), std::string::npos) << out;
  const std::size_t id_at = out.find("{\"id\":\"") + 7;
  const std::string key_id = out.substr(id_at, out.find('"', id_at) - id_at);
  EXPECT_EQ(key_id.rfind("key_", 0), 0u) << out;
  EXPECT_EQ(run_tally(with({"keys", "create", "--customer", "ghost"}), &out, dir), 1) << out;
  EXPECT_EQ(run_tally(with({"keys", "list"}), &out, dir), 0) << out;
  EXPECT_NE(out.find("\"id\":\"" + key_id + "\""), std::string::npos) << out;
  EXPECT_EQ(run_tally(with({"keys", "revoke", key_id}), &out, dir), 0) << out;
  EXPECT_NE(out.find("{\"id\":\"" + key_id + "\",\"revoked\":true}"), std::string::npos) << out;
  EXPECT_EQ(run_tally(with({"keys", "revoke", "key_nothing"}), &out, dir), 1) << out;
  EXPECT_EQ(run_tally(with({"customers", "create", "cli-new", "--name", "New Co", "--timezone",
                            "Europe/Paris"}),
                      &out, dir),
            0)
      << out;
  EXPECT_NE(out.find("\"id\":\"cli-new\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"name\":\"New Co\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"timezone\":\"Europe/Paris\""), std::string::npos) << out;
  EXPECT_EQ(run_tally(with({"customers", "create", "cli-new"}), &out, dir), 1) << out;
  EXPECT_EQ(run_tally(with({"customers", "list"}), &out, dir), 0) << out;
  EXPECT_NE(out.find("\"id\":\"cli-co\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"id\":\"cli-new\""), std::string::npos) << out;
  EXPECT_EQ(run_tally({"version"}, &out, dir), 0);
  // A config with an unknown key fails with file, line and key.
  std::ofstream(dir + "/bad.toml") << "[server]\nlisten = \"127.0.0.1:0\"\nlisenn = 1\n";
  EXPECT_NE(run_tally({"serve", "--config", dir + "/bad.toml"}, &out, dir), 0);
  EXPECT_NE(out.find("bad.toml:3"), std::string::npos) << out;
  EXPECT_NE(out.find("lisenn"), std::string::npos) << out;
  remove_tree(dir);
}

TEST(CliTest, IngestRefusesBadLinesAloneWithTheirLineNumbers) {
  const std::string dir = make_temp_dir("tally-cli-lines-");
  std::ofstream(dir + "/tally.toml") << kConfig;
  {
    std::ofstream f(dir + "/events.jsonl");
    f << R"({"id":"l1","customer":"lines-co","type":"api_call","time":"2025-03-01T10:00:00Z","properties":{"bytes":1,"route":"r"}})"
      << "\n";       // line 1
    f << "\n   \n";  // lines 2, 3
    f << R"({"id":"l4","customer":"lines-co","type":"api_call","time":"2025-03-01T10:00:00Z","properties":{"bytes":2,"route":"r"}})"
      << "\n";  // 4
    f << R"({"id":"l5","customer":"lines-co","type":"api_call","time":"2025-03-01T10:00:00Z","properties":{"bytes":)"
      << "\n";  // 5: malformed
    f << "\n";  // 6
    f << R"({"customer":"lines-co","type":"api_call"})"
      << "\n";  // 7: no id
    f << R"({"id":"l8","customer":"lines-co","type":"api_call"}, {"id":"l8b","customer":"lines-co","type":"api_call"})"
      << "\n";       // 8: two values
    f << "[1,2]\n";  // 9: not an object
    f << R"({"id":"l10","customer":"lines-co","type":"api_call","time":"2025-03-01T10:00:00Z","properties":{"bytes":4,"route":"r"}})"
      << "\n";  // 10
  }
  const std::vector<std::string> args = {
      "ingest", dir + "/events.jsonl", "--config", dir + "/tally.toml", "--data", dir + "/data"};
  std::string out;
  EXPECT_EQ(run_tally(args, &out, dir), 1) << out;
  EXPECT_NE(out.find("10 lines, 3 accepted, 0 duplicates, 4 rejected"), std::string::npos) << out;
  EXPECT_NE(out.find("line 5: INVALID_JSON"), std::string::npos) << out;
  EXPECT_NE(out.find("line 7: MISSING_FIELD"), std::string::npos) << out;
  EXPECT_NE(out.find("line 8: INVALID_JSON"), std::string::npos) << out;
  EXPECT_NE(out.find("line 9: INVALID_TYPE"), std::string::npos) << out;
  EXPECT_EQ(out.find("tally: lines "), std::string::npos) << "no whole batch may fail: " << out;
  EXPECT_EQ(run_tally({"query", "bytes", "--customer", "lines-co", "--from", "2025-03-01T00:00:00Z",
                       "--config", dir + "/tally.toml", "--data", dir + "/data"},
                      &out, dir),
            0)
      << out;
  EXPECT_NE(out.find("\"value\":7"), std::string::npos) << out;
  remove_tree(dir);
}

TEST(CliTest, ReadCommandsNeedTheConfigForTheirMeters) {
  const std::string dir = make_temp_dir("tally-cli-noconfig-");
  std::ofstream(dir + "/tally.toml") << kConfig;
  std::ofstream(dir + "/e.jsonl") << R"({"id":"a","customer":"c","type":"api_call"})"
                                  << "\n";
  std::string out;
  ASSERT_EQ(run_tally({"ingest", dir + "/e.jsonl", "--config", dir + "/tally.toml", "--data",
                       dir + "/data"},
                      &out, dir),
            0)
      << out;
  for (std::vector<std::string> args :
       {std::vector<std::string>{"verify"}, std::vector<std::string>{"query", "calls"},
        std::vector<std::string>{"usage", "c"}}) {
    args.insert(args.end(), {"--data", dir + "/data"});
    std::remove((dir + "/cli.log").c_str());
    EXPECT_EQ(run_tally(args, &out, dir), 2) << args[0] << ": " << out;
    EXPECT_NE(out.find("needs --config"), std::string::npos) << args[0] << ": " << out;
    EXPECT_NE(out.find("meters are defined in the configuration"), std::string::npos) << out;
  }
  remove_tree(dir);
}

TEST(ServeTest, ShortAdminKeyFailsStartUp) {
  const std::string dir = make_temp_dir("tally-short-key-");
  ProcessOptions o;
  o.executable = TALLY_BINARY;
  o.args = {"serve", "--data", dir + "/data", "--listen", "127.0.0.1:0"};
  o.env = {{"TALLY_ADMIN_KEY", "short-secret"}};
  o.log_path = dir + "/server.log";
  auto p = ChildProcess::start(o);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  EXPECT_EQ(p->wait_exit(30000), 2);
  const std::string log = read_file(o.log_path).value_or("");
  EXPECT_NE(log.find("TALLY_ADMIN_KEY must be 16 to 256 bytes long, got 12"), std::string::npos)
      << log;
  remove_tree(dir);
}

TEST(ServeTest, SigtermShutsDownCleanly) {
  TallyServer server(kConfig);
  auto c = server.client();
  EXPECT_EQ(c->request("POST", "/v1/events", R"({"id":"a","customer":"x","type":"api_call"})",
                       key_header(kAdminKey))
                .status,
            202);
  EXPECT_EQ(server.stop(), 0) << server.log();
}

}  // namespace
}  // namespace tally::testing
