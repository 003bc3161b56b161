// Archiving across layers: `tally archive` and `tally restore` on a data directory with
// `tally verify` after each (and what they say when a server holds the directory), and
// POST /v1/admin/archive on a running server with its errors.
#include <filesystem>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

constexpr const char* kConfig = R"(
[server]
listen = "127.0.0.1:0"

[credits]
per_currency_unit = 100

[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"
group_by = ["route"]

[[meters]]
key = "bytes"
event_type = "api_call"
aggregation = "sum"
value = "$.bytes"

[[prices]]
meter = "calls"
unit_price = "0.01"
)";

std::string event(int i, const char* time) {
  return R"({"id":"e)" + std::to_string(i) + R"(","customer":"co","type":"api_call","time":")" +
         time + R"(","properties":{"bytes":)" + std::to_string(i) + R"(,"route":"r)" +
         std::to_string(i % 3) + R"("}})";
}

// run_tally appends to one log per directory: each run here starts it afresh, so what a check
// finds was said by that run.
int run_fresh(const std::vector<std::string>& args, std::string* out, const std::string& dir) {
  std::remove((dir + "/cli.log").c_str());
  return run_tally(args, out, dir);
}

std::size_t count_lines(const std::string& path) {
  std::ifstream in(path);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) {
    ++n;
  }
  return n;
}

TEST(ArchiveCliTest, ArchiveRestoreAndVerify) {
  const std::string dir = make_temp_dir("tally-archive-cli-");
  std::ofstream(dir + "/tally.toml") << kConfig;
  {
    std::ofstream f(dir + "/events.jsonl");
    for (int i = 0; i < 300; ++i) {
      f << event(i, i < 200 ? "2024-01-15T10:00:00Z" : "2025-03-01T10:00:00Z") << "\n";
    }
  }
  const std::vector<std::string> data = {"--config", dir + "/tally.toml", "--data-dir",
                                         dir + "/data"};
  auto with = [&](std::vector<std::string> args) {
    args.insert(args.end(), data.begin(), data.end());
    return args;
  };
  std::string out;
  ASSERT_EQ(run_fresh(with({"ingest", dir + "/events.jsonl"}), &out, dir), 0) << out;
  ASSERT_EQ(run_fresh(with({"query", "bytes", "--customer", "co", "--from", "2024-01-01T00:00:00Z",
                            "--to", "2025-04-01T00:00:00Z"}),
                      &out, dir),
            0)
      << out;
  const std::string total = "\"value\":" + std::to_string(299 * 300 / 2);
  ASSERT_NE(out.find(total), std::string::npos) << out;

  // User errors: no config, both cutoffs, a bad age, a bad time, no cutoff at all.
  EXPECT_EQ(run_fresh({"archive", "--data-dir", dir + "/data", "--older-than", "90d"}, &out, dir),
            2);
  EXPECT_NE(out.find("needs --config"), std::string::npos) << out;
  EXPECT_EQ(run_fresh(with({"archive", "--older-than", "90d", "--before", "2025-01-01T00:00:00Z"}),
                      &out, dir),
            2);
  EXPECT_NE(out.find("not both"), std::string::npos) << out;
  EXPECT_EQ(run_fresh(with({"archive", "--older-than", "90 days"}), &out, dir), 2);
  EXPECT_NE(out.find("--older-than: '90 days' is not a duration"), std::string::npos) << out;
  EXPECT_EQ(run_fresh(with({"archive", "--before", "yesterday"}), &out, dir), 2);
  EXPECT_NE(out.find("--before"), std::string::npos) << out;
  EXPECT_EQ(run_fresh(with({"archive"}), &out, dir), 2);
  EXPECT_NE(out.find("archive_after"), std::string::npos) << out;

  // Archive everything before 2025 into a directory of our choice.
  ASSERT_EQ(run_fresh(with({"archive", "--before", "2025-01-01T00:00:00Z", "--out", dir + "/cold"}),
                      &out, dir),
            0)
      << out;
  EXPECT_NE(out.find("archived 200 events"), std::string::npos) << out;
  // The JSON line (stdout) among the messages (stderr).
  const std::size_t brace =
      out.find("\n{") != std::string::npos ? out.find("\n{") + 1 : out.find('{');
  ASSERT_NE(brace, std::string::npos) << out;
  Json result(out.substr(brace, out.find('\n', brace) - brace));
  EXPECT_EQ(result.num("events"), 200);
  const std::string file = result.str("file");
  const std::string manifest = result.str("manifest");
  ASSERT_TRUE(std::filesystem::exists(file)) << file;
  ASSERT_TRUE(std::filesystem::exists(manifest)) << manifest;
  EXPECT_EQ(std::filesystem::path(file).parent_path(), std::filesystem::path(dir + "/cold"));
  EXPECT_EQ(static_cast<std::int64_t>(std::filesystem::file_size(file)), result.num("bytes"));

  // The manifest's checksum is the file's, as sha256sum computes it, and zstd reads the file.
  ASSERT_EQ(run_fresh({"version"}, &out, dir), 0);
  {
    Json m(read_file(manifest).value_or("{}"));
    EXPECT_EQ(m.str("sha256"), result.str("sha256"));
    EXPECT_EQ(m.num("events"), 200);
    EXPECT_EQ(m.num("format_version"), 1);
  }
  // scripts/setup.sh installs the zstd command; sha256sum is coreutils.
  ASSERT_EQ(std::system(("zstd -dcq '" + file + "' > '" + dir + "/plain.jsonl'").c_str()), 0);
  EXPECT_EQ(count_lines(dir + "/plain.jsonl"), 200u);
  ASSERT_EQ(std::system(("sha256sum '" + file + "' > '" + dir + "/sum.txt'").c_str()), 0);
  EXPECT_EQ(read_file(dir + "/sum.txt").value_or("").substr(0, 64), result.str("sha256"));

  // Answers unchanged, verify passes, a retried archived id is a duplicate.
  ASSERT_EQ(run_fresh(with({"query", "bytes", "--customer", "co", "--from", "2024-01-01T00:00:00Z",
                            "--to", "2025-04-01T00:00:00Z"}),
                      &out, dir),
            0);
  EXPECT_NE(out.find(total), std::string::npos) << out;
  EXPECT_EQ(run_fresh(with({"verify"}), &out, dir), 0) << out;
  EXPECT_NE(out.find("verified 100 events (200 archived)"), std::string::npos) << out;
  EXPECT_NE(out.find("OK"), std::string::npos) << out;
  std::ofstream(dir + "/retry.jsonl") << event(7, "2024-01-15T10:00:00Z") << "\n";
  ASSERT_EQ(run_fresh(with({"ingest", dir + "/retry.jsonl"}), &out, dir), 0) << out;
  EXPECT_NE(out.find("0 accepted, 1 duplicates"), std::string::npos) << out;

  // Nothing more to archive: exit 0, no file.
  EXPECT_EQ(run_fresh(with({"archive", "--before", "2025-01-01T00:00:00Z", "--out", dir + "/cold"}),
                      &out, dir),
            0)
      << out;
  EXPECT_NE(out.find("nothing to archive"), std::string::npos) << out;

  // Restore errors: no config, a missing file, a damaged one (nothing changes).
  EXPECT_EQ(run_fresh({"restore", "--data-dir", dir + "/data", manifest}, &out, dir), 2);
  EXPECT_NE(out.find("needs --config"), std::string::npos) << out;
  EXPECT_EQ(run_fresh(with({"restore", dir + "/cold/none.jsonl.zst"}), &out, dir), 1);
  EXPECT_NE(out.find("no manifest"), std::string::npos) << out;
  std::string bytes = read_file(file).value_or("");
  {
    std::string damaged = bytes;
    damaged[damaged.size() / 2] ^= 0x01;
    std::ofstream(file, std::ios::binary | std::ios::trunc) << damaged;
  }
  EXPECT_EQ(run_fresh(with({"restore", manifest}), &out, dir), 1);
  EXPECT_NE(out.find("damaged"), std::string::npos) << out;
  EXPECT_EQ(run_fresh(with({"verify"}), &out, dir), 0) << out;
  std::ofstream(file, std::ios::binary | std::ios::trunc) << bytes;

  // Restore, twice; verify after each.
  ASSERT_EQ(run_fresh(with({"restore", file}), &out, dir), 0) << out;
  EXPECT_NE(out.find("restored 200 events"), std::string::npos) << out;
  EXPECT_EQ(run_fresh(with({"verify"}), &out, dir), 0) << out;
  ASSERT_EQ(run_fresh(with({"restore", manifest}), &out, dir), 0) << out;
  EXPECT_NE(out.find("restored 0 events"), std::string::npos) << out;
  EXPECT_NE(out.find("200 already present"), std::string::npos) << out;
  EXPECT_EQ(run_fresh(with({"verify"}), &out, dir), 0) << out;
  EXPECT_NE(out.find("verified 300 events"), std::string::npos) << out;

  // While a server holds the directory, both say so and point to the server's ways.
  {
    TallyServer server(kConfig, dir);
    EXPECT_EQ(run_fresh(with({"archive", "--older-than", "90d"}), &out, dir), 1);
    EXPECT_NE(out.find("POST /v1/admin/archive"), std::string::npos) << out;
    EXPECT_NE(out.find("archive_interval"), std::string::npos) << out;
    EXPECT_EQ(run_fresh(with({"restore", manifest}), &out, dir), 1);
    EXPECT_NE(out.find("stop it"), std::string::npos) << out;
    EXPECT_EQ(server.stop(), 0) << server.log();
  }
  remove_tree(dir);
}

TEST(ArchiveApiTest, PostAdminArchive) {
  TallyServer server(kConfig);
  auto client = server.client();
  std::string body = "{\"events\":[";
  for (int i = 0; i < 50; ++i) {
    body += (i > 0 ? "," : "") + event(i, i < 30 ? "2024-01-15T10:00:00Z" : "2025-03-01T10:00:00Z");
  }
  body += "]}";
  auto r = client->request("POST", "/v1/events", body, key_header(kAdminKey));
  ASSERT_EQ(r.status, 202) << r.body;

  auto archive = [&](const std::string& b, const std::string& key = kAdminKey) {
    return client->request("POST", "/v1/admin/archive", b, key_header(key));
  };
  // Errors: a bad duration, a bad time, both, an unknown field, not an object, bad JSON, no
  // cutoff configured, a non-admin key.
  for (const auto& [bad, fragment] : std::vector<std::pair<std::string, std::string>>{
           {R"({"older_than":"ninety days"})", "older_than: 'ninety days' is not a duration"},
           {R"({"older_than":"0s"})", "older_than: must be positive"},
           {R"({"older_than":90})", "unknown or mistyped field 'older_than'"},
           {R"({"before":"2025-13-01"})", "before:"},
           {R"({"older_than":"90d","before":"2025-01-01T00:00:00Z"})", "not both"},
           {R"({"before":"2100-01-01T00:00:00Z"})", "is in the future"},
           {R"({"older_than":"999999d"})", "older_than must be 0 to 36500 days"},
           {R"({"after":"90d"})", "unknown or mistyped field 'after'"},
           {R"([1])", "the body must be an object"},
           {"", "archive_after"},
       }) {
    auto e = archive(bad);
    EXPECT_EQ(e.status, 400) << bad << ": " << e.body;
    EXPECT_NE(e.body.find(fragment), std::string::npos) << bad << ": " << e.body;
    EXPECT_NE(e.body.find("\"error\":"), std::string::npos) << e.body;
  }
  auto bad_json = archive("{\"older_than\":");
  EXPECT_EQ(bad_json.status, 400) << bad_json.body;
  EXPECT_NE(bad_json.body.find("INVALID_JSON"), std::string::npos) << bad_json.body;

  auto c = client->request("POST", "/v1/customers", R"({"id":"other"})", key_header(kAdminKey));
  ASSERT_EQ(c.status, 201) << c.body;
  auto k = client->request("POST", "/v1/keys", R"({"customer":"other"})", key_header(kAdminKey));
  ASSERT_EQ(k.status, 201) << k.body;
  auto forbidden = archive(R"({"older_than":"90d"})", Json(k.body).str("key"));
  EXPECT_EQ(forbidden.status, 403) << forbidden.body;

  // Nothing older than 10 years: 200 with no file.
  auto none = archive(R"({"older_than":"3650d"})");
  ASSERT_EQ(none.status, 200) << none.body;
  EXPECT_EQ(Json(none.body).num("events"), 0);
  EXPECT_NE(none.body.find("\"file\":null"), std::string::npos) << none.body;

  auto ok = archive(R"({"before":"2025-01-01T00:00:00Z"})");
  ASSERT_EQ(ok.status, 200) << ok.body;
  Json res(ok.body);
  EXPECT_EQ(res.num("events"), 30);
  EXPECT_TRUE(std::filesystem::exists(res.str("file"))) << ok.body;
  EXPECT_EQ(std::filesystem::path(res.str("file")).parent_path(),
            std::filesystem::path(server.dir() + "/data/archive"));

  // Listing shows the 20 left; the retried archived id is a duplicate; queries unchanged.
  auto list = client->request("GET", "/v1/events?limit=1000", "", key_header(kAdminKey));
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(Json(list.body)["events"].get_array().size(), 20u);
  auto retry = client->request("POST", "/v1/events", event(3, "2024-01-15T10:00:00Z"),
                               key_header(kAdminKey));
  ASSERT_EQ(retry.status, 202) << retry.body;
  EXPECT_EQ(Json(retry.body).num("duplicates"), 1) << retry.body;

  EXPECT_EQ(server.stop(), 0) << server.log();
  std::string out;
  EXPECT_EQ(run_tally({"verify", "--config", server.dir() + "/tally.toml", "--data",
                       server.dir() + "/data"},
                      &out, server.dir()),
            0)
      << out;
}

TEST(ArchiveApiTest, ServerLogsItsSchedule) {
  TallyServer server(std::string(kConfig) +
                     "\n[retention]\narchive_after = \"90d\"\narchive_interval = \"2h\"\n");
  EXPECT_EQ(server.stop(), 0) << server.log();
  EXPECT_NE(server.log().find("archiving events older than 7776000s every 7200s"),
            std::string::npos)
      << server.log();
}

}  // namespace
}  // namespace tally::testing
