// `tally migrate` end to end: the real binary against a real PostgreSQL 15 (one per test binary,
// tests/support/pg_server.h), each test in fresh databases of its own. Also `tally serve`
// refusing a shard whose schema needs `tally migrate`.
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pg/schema.h"
#include "support/pg_test.h"
#include "support/process.h"

namespace tally {
namespace {

using testing::ChildProcess;
using testing::ProcessOptions;

struct CliRun {
  int code = -1;
  std::string output;  // stdout and stderr
};

class MigrateTest : public testing::PgServerTest {
 protected:
  void SetUp() override {
    need_server();
    if (IsSkipped() || HasFatalFailure()) {
      return;
    }
    dir_ = testing::make_temp_dir("tally-migrate-");
    ASSERT_FALSE(dir_.empty());
  }

  void TearDown() override { testing::remove_tree(dir_); }

  // Creates `name` (a fresh database).
  void need_database(const std::string& name) { ASSERT_TRUE(server_->create_database(name).ok()); }

  // Writes a config whose [cluster] names `dbs` as shards; returns its path.
  std::string write_config(const std::vector<std::string>& dbs, const std::string& name) {
    std::string shards;
    for (const std::string& db : dbs) {
      shards += (shards.empty() ? "\"" : ", \"") + server_->conninfo(db) + "\"";
    }
    const std::string path = dir_ + "/" + name + ".toml";
    std::ofstream(path) << "[cluster]\npostgres = [" << shards
                        << "]\nredis = [\"127.0.0.1:7000\"]\ncommand_timeout = \"30s\"\n";
    return path;
  }

  ChildProcess start(const std::vector<std::string>& args, const std::string& log) {
    ProcessOptions o;
    o.executable = TALLY_BINARY;
    o.args = args;
    o.log_path = dir_ + "/" + log;
    auto p = ChildProcess::start(o);
    EXPECT_TRUE(p.has_value());
    return std::move(*p);
  }

  CliRun finish(ChildProcess& p, const std::string& log) {
    CliRun r;
    r.code = p.wait_exit(60000).value_or(-1);
    r.output = testing::read_file(dir_ + "/" + log).value_or("");
    return r;
  }

  CliRun tally(const std::vector<std::string>& args) {
    const std::string log = "run-" + std::to_string(++runs_) + ".log";
    ChildProcess p = start(args, log);
    return finish(p, log);
  }

  std::string query(const std::string& db, const std::string& sql) {
    auto r = server_->psql(db, sql);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    std::string out = r ? *r : "";
    while (!out.empty() && out.back() == '\n') {
      out.pop_back();
    }
    return out;
  }

  std::string dir_;
  int runs_ = 0;
};

const std::string kLatest = std::to_string(pg::latest_schema_version());

// "1, 2, ..., latest": what a fresh shard is given.
std::string all_versions(const char* sep) {
  std::string out;
  for (int v = 1; v <= pg::latest_schema_version(); ++v) {
    out += (v > 1 ? sep : "") + std::to_string(v);
  }
  return out;
}

TEST_F(MigrateTest, FreshDatabaseIsMigratedAndASecondRunHasNothingToDo) {
  need_database("fresh");
  const std::string config = write_config({"fresh"}, "fresh");

  CliRun check_before = tally({"migrate", "--config", config, "--check"});
  EXPECT_EQ(check_before.code, 1) << check_before.output;
  EXPECT_NE(check_before.output.find("schema at version 0; this binary needs version " + kLatest),
            std::string::npos)
      << check_before.output;
  EXPECT_NE(check_before.output.find("run `tally migrate`"), std::string::npos);
  // --check changed nothing.
  EXPECT_EQ(query("fresh", "SELECT to_regclass('tally_schema_version') IS NULL"), "t");

  CliRun first = tally({"migrate", "--config", config});
  EXPECT_EQ(first.code, 0) << first.output;
  EXPECT_NE(first.output.find("applied version" +
                              std::string(pg::latest_schema_version() > 1 ? "s " : " ") +
                              all_versions(", ")),
            std::string::npos)
      << first.output;
  EXPECT_NE(first.output.find("schema at version " + kLatest), std::string::npos);
  EXPECT_NE(first.output.find("/fresh)"), std::string::npos) << first.output;
  EXPECT_EQ(query("fresh",
                  "SELECT string_agg(version::text, ',' ORDER BY version) "
                  "FROM tally_schema_version"),
            all_versions(","));
  // The tables of docs/cluster.md exist.
  EXPECT_EQ(query("fresh",
                  "SELECT string_agg(table_name, ',' ORDER BY table_name) FROM "
                  "information_schema.tables WHERE table_schema = 'public'"),
            "aggregate_uniques,aggregates_hour,aggregates_minute,alerts,api_keys,audit_log,"
            "customers,events,ledger,price_usage,reservations,tally_schema_version,wallets,"
            "webhook_outbox");
  const std::string tables_before = query("fresh", "SELECT count(*) FROM pg_class");

  CliRun second = tally({"migrate", "--config", config});
  EXPECT_EQ(second.code, 0) << second.output;
  EXPECT_NE(second.output.find("schema at version " + kLatest + ", nothing to do"),
            std::string::npos)
      << second.output;
  EXPECT_EQ(second.output.find("applied"), std::string::npos) << second.output;
  EXPECT_EQ(query("fresh", "SELECT count(*) FROM tally_schema_version"), kLatest);
  EXPECT_EQ(query("fresh", "SELECT count(*) FROM pg_class"), tables_before);

  CliRun check_after = tally({"migrate", "--config", config, "--check"});
  EXPECT_EQ(check_after.code, 0) << check_after.output;
  EXPECT_NE(check_after.output.find("as this binary expects"), std::string::npos);
}

TEST_F(MigrateTest, TwoMigrationsAtOnceApplyTheSchemaOnce) {
  need_database("racing");
  const std::string config = write_config({"racing"}, "racing");
  // Both start before either can finish; the advisory lock makes the second wait its turn.
  ChildProcess a = start({"migrate", "--config", config}, "a.log");
  ChildProcess b = start({"migrate", "--config", config}, "b.log");
  CliRun ra = finish(a, "a.log");
  CliRun rb = finish(b, "b.log");
  EXPECT_EQ(ra.code, 0) << ra.output;
  EXPECT_EQ(rb.code, 0) << rb.output;
  const bool a_applied = ra.output.find("applied version") != std::string::npos;
  const bool b_applied = rb.output.find("applied version") != std::string::npos;
  EXPECT_NE(a_applied, b_applied) << "exactly one run applies the schema:\n"
                                  << ra.output << "\n"
                                  << rb.output;
  EXPECT_NE((a_applied ? rb : ra).output.find("nothing to do"), std::string::npos);
  EXPECT_EQ(query("racing", "SELECT count(*) FROM tally_schema_version"), kLatest);
}

TEST_F(MigrateTest, CheckFailsOnASchemaNewerThanTheBinaryNamingTheVersion) {
  need_database("future");
  const std::string config = write_config({"future"}, "future");
  ASSERT_EQ(tally({"migrate", "--config", config}).code, 0);
  query("future",
        "INSERT INTO tally_schema_version (version, name) VALUES (42, 'from a newer "
        "tally')");
  CliRun check = tally({"migrate", "--config", config, "--check"});
  EXPECT_EQ(check.code, 1) << check.output;
  EXPECT_NE(check.output.find("schema has version 42, which this binary (knowing up to " + kLatest +
                              ") does not know"),
            std::string::npos)
      << check.output;
  // migrate itself refuses too, and changes nothing.
  CliRun again = tally({"migrate", "--config", config});
  EXPECT_EQ(again.code, 1) << again.output;
  EXPECT_NE(again.output.find("version 42"), std::string::npos) << again.output;
  EXPECT_NE(again.output.find("nothing was changed"), std::string::npos) << again.output;
  EXPECT_EQ(query("future", "SELECT count(*) FROM tally_schema_version"),
            std::to_string(pg::latest_schema_version() + 1));
}

TEST_F(MigrateTest, EveryShardIsMigrated) {
  need_database("shard_a");
  need_database("shard_b");
  const std::string config = write_config({"shard_a", "shard_b"}, "shards");
  CliRun r = tally({"migrate", "--config", config});
  EXPECT_EQ(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("cluster.postgres[0]"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("cluster.postgres[1]"), std::string::npos) << r.output;
  EXPECT_EQ(query("shard_a", "SELECT count(*) FROM tally_schema_version"), kLatest);
  EXPECT_EQ(query("shard_b", "SELECT count(*) FROM tally_schema_version"), kLatest);
  CliRun check = tally({"migrate", "--config", config, "--check"});
  EXPECT_EQ(check.code, 0) << check.output;
}

TEST_F(MigrateTest, UnreachableShardFailsNamingItWithoutItsConnectionString) {
  need_database("reachable");
  const std::string path = dir_ + "/unreachable.toml";
  std::ofstream(path) << "[cluster]\npostgres = [\"" << server_->conninfo("reachable")
                      << "\", \"host=127.0.0.1 port=1 user=tally password=s3cret dbname=x\"]\n"
                      << "redis = [\"127.0.0.1:7000\"]\nconnect_timeout = \"2s\"\n";
  CliRun r = tally({"migrate", "--config", path});
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find("cluster.postgres[1]: cannot connect to PostgreSQL"), std::string::npos)
      << r.output;
  EXPECT_EQ(r.output.find("s3cret"), std::string::npos) << r.output;
  // The reachable shard was still migrated.
  EXPECT_EQ(query("reachable", "SELECT count(*) FROM tally_schema_version"), kLatest);
}

// These need no PostgreSQL.
TEST_F(MigrateTest, WithoutAClusterSectionThereIsNothingToMigrate) {
  const std::string path = dir_ + "/embedded.toml";
  std::ofstream(path) << "[server]\nlisten = \"127.0.0.1:0\"\n";
  CliRun r = tally({"migrate", "--config", path});
  EXPECT_EQ(r.code, 2) << r.output;
  EXPECT_NE(r.output.find("nothing to migrate"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("embedded store"), std::string::npos) << r.output;
  CliRun no_config = tally({"migrate"});
  EXPECT_NE(no_config.code, 0);
  EXPECT_NE(no_config.output.find("--config is required"), std::string::npos) << no_config.output;
  CliRun bad = tally({"migrate", "--config", dir_ + "/missing.toml"});
  EXPECT_EQ(bad.code, 2) << bad.output;
}

TEST_F(MigrateTest, ServeRefusesAShardThatNeedsMigrateAndCreatesNoDataDirectory) {
  need_database("unmigrated");
  const std::string path = dir_ + "/serve.toml";
  // Port 1: nothing listens there (a test's Redis may hold 7000).
  std::ofstream(path) << "[server]\nlisten = \"127.0.0.1:0\"\ndata_dir = \"" << dir_
                      << "/data\"\n[cluster]\npostgres = [\"" << server_->conninfo("unmigrated")
                      << "\"]\nredis = [\"127.0.0.1:1\"]\nconnect_timeout = \"2s\"\n";
  CliRun r = tally({"serve", "--config", path});
  EXPECT_NE(r.code, 0) << r.output;
  EXPECT_NE(r.output.find("cluster.postgres"), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("run `tally migrate`"), std::string::npos) << r.output;
  // Nothing was created: the embedded store was not opened.
  EXPECT_FALSE(testing::read_file(dir_ + "/data/CURRENT").has_value());

  // Migrated, it gets as far as Redis, which is not there: refused naming it.
  ASSERT_EQ(tally({"migrate", "--config", path}).code, 0);
  CliRun no_redis = tally({"serve", "--config", path});
  EXPECT_NE(no_redis.code, 0) << no_redis.output;
  EXPECT_NE(no_redis.output.find("cluster.redis"), std::string::npos) << no_redis.output;
}

}  // namespace
}  // namespace tally
