// Tests for the configuration layer: the example file, the defaults, every error path with its
// message and line, and the generated reference that docs/configuration.md embeds.
#include "config/config.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "core/time.h"

namespace tally::config {
namespace {

constexpr std::string_view kDocsBegin = "<!-- reference:begin -->\n";
constexpr std::string_view kDocsEnd = "<!-- reference:end -->";

std::string source_path(std::string_view relative) {
  return std::string(TALLY_SOURCE_DIR) + "/" + std::string(relative);
}

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Parses `text` as tally.toml, expecting kInvalidArgument with every fragment in the message.
::testing::AssertionResult fails_with(std::string_view text,
                                      std::initializer_list<std::string_view> fragments) {
  Result<Config> r = parse_config(text, "tally.toml");
  if (r) {
    return ::testing::AssertionFailure() << "parsed without error";
  }
  if (r.error().code() != StatusCode::kInvalidArgument) {
    return ::testing::AssertionFailure() << "wrong code: " << r.error().to_string();
  }
  for (std::string_view f : fragments) {
    if (r.error().message().find(f) == std::string::npos) {
      return ::testing::AssertionFailure()
             << "message '" << r.error().message() << "' lacks '" << f << "'";
    }
  }
  return ::testing::AssertionSuccess() << r.error().message();
}

Config parse_ok(std::string_view text) {
  Result<Config> r = parse_config(text, "tally.toml");
  EXPECT_TRUE(r.has_value()) << r.status().to_string();
  return r ? std::move(r).value() : Config{};
}

// A minimal valid meter to embed in error tests.
constexpr std::string_view kMeterA = R"([[meters]]
key = "a"
event_type = "A"
)";

// ---------------------------------------------------------------------------------------------
// Defaults and the full shape.

TEST(ConfigTest, DefaultsAreValidAndMatchTheStruct) {
  const Config defaults;
  EXPECT_EQ(defaults.server.listen_host, "127.0.0.1");
  EXPECT_EQ(defaults.server.listen_port, 8080);
  EXPECT_EQ(defaults.server.data_dir, "./data");
  EXPECT_EQ(defaults.server.body_bytes_max, 10u * 1024 * 1024);
  EXPECT_TRUE(defaults.storage.fsync);
  EXPECT_EQ(defaults.storage.dedup_window_seconds, 0);
  EXPECT_EQ(defaults.storage.checkpoint_interval_seconds, 60u);
  EXPECT_EQ(defaults.storage.memory_minutes_hours, 48u);

  for (std::string_view text : {std::string_view(""), std::string_view("# nothing\n\n"),
                                std::string_view("[server]\n[storage]\n")}) {
    Config c = parse_ok(text);
    EXPECT_EQ(c.server, defaults.server);
    EXPECT_EQ(c.storage, defaults.storage);
    EXPECT_TRUE(c.meters.empty());
    EXPECT_TRUE(c.customers.empty());
    EXPECT_EQ(c.source_path, "tally.toml");
  }
}

// Each documented default, written into a file, gives the struct's default: the table and the
// header cannot drift apart.
TEST(ConfigTest, DocumentedDefaultsEqualStructDefaults) {
  const Config defaults;
  int checked = 0;
  for (const OptionInfo& o : config_options()) {
    if (o.default_toml.empty() || o.section_is_array) {
      continue;
    }
    std::string text = "[" + o.section + "]\n" + o.key + " = " + o.default_toml + "\n";
    if (o.section == "cluster") {
      // [cluster] cannot be given without its servers.
      text += "postgres = \"host=db\"\nredis = [\"r:7000\"]\n";
      ClusterConfig want;
      want.postgres = {"host=db"};
      want.redis = {"r:7000"};
      Config c = parse_ok(text);
      ASSERT_TRUE(c.cluster.has_value()) << text;
      EXPECT_EQ(*c.cluster, want) << text;
      ++checked;
      continue;
    }
    Config c = parse_ok(text);
    EXPECT_EQ(c.server, defaults.server) << text;
    EXPECT_EQ(c.storage, defaults.storage) << text;
    ++checked;
  }
  EXPECT_GE(checked, 10);
}

TEST(ConfigTest, ParsesTheFullShape) {
  Config c = parse_ok(R"(
[server]
listen = "[::1]:0"
data_dir = "/var/lib/tally"
threads = 4
body_bytes_max = "512KiB"
batch_events_max = 500
future_skew_seconds_max = 60
auto_create_customers = false
admin_key = "0123456789abcdef0123"

[storage]
fsync = false
commit_interval_us = 200
commit_events_max = 1000
dedup_window = "30d"
block_cache_bytes = 1048576

[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.input_tokens"
group_by = ["provider", "model"]
filter = { feature_id = "ai-text-generation", tier = 3, ratio = 0.5, beta = true }
unit = "tokens"
description = "Input tokens"

[[meters]]
key = "calls"
event_type = "api_call"

[[customers]]
id = "cust-test-001"
name = "Test Company"
email = "test@example.com"
timezone = "Europe/Berlin"
)");
  EXPECT_EQ(c.server.listen_host, "::1");
  EXPECT_EQ(c.server.listen_port, 0);
  EXPECT_EQ(c.server.data_dir, "/var/lib/tally");
  EXPECT_EQ(c.server.threads, 4);
  EXPECT_EQ(c.server.body_bytes_max, 512u * 1024);
  EXPECT_EQ(c.server.batch_events_max, 500u);
  EXPECT_EQ(c.server.future_skew_seconds_max, 60);
  EXPECT_FALSE(c.server.auto_create_customers);
  EXPECT_EQ(c.server.admin_key, "0123456789abcdef0123");
  EXPECT_FALSE(c.storage.fsync);
  EXPECT_EQ(c.storage.commit_interval_us, 200u);
  EXPECT_EQ(c.storage.commit_events_max, 1000u);
  EXPECT_EQ(c.storage.dedup_window_seconds, 30 * 86400);
  EXPECT_EQ(c.storage.block_cache_bytes, 1048576u);

  ASSERT_EQ(c.meters.size(), 2u);
  const core::MeterSpec& m = c.meters[0];
  EXPECT_EQ(m.key, "tokens_in");
  EXPECT_EQ(m.event_type, "TOKEN_USAGE");
  EXPECT_EQ(m.aggregation, core::Aggregation::kSum);
  EXPECT_EQ(m.value_property, "input_tokens");
  EXPECT_EQ(m.group_by, (std::vector<std::string>{"provider", "model"}));
  EXPECT_EQ(m.filter,
            (std::vector<std::pair<std::string, std::string>>{{"feature_id", "ai-text-generation"},
                                                              {"tier", "3"},
                                                              {"ratio", "0.5"},
                                                              {"beta", "true"}}));
  EXPECT_EQ(m.unit, "tokens");
  EXPECT_EQ(m.description, "Input tokens");
  EXPECT_EQ(c.meters[1].aggregation, core::Aggregation::kCount);  // the default
  EXPECT_TRUE(c.meters[1].value_property.empty());

  ASSERT_EQ(c.customers.size(), 1u);
  EXPECT_EQ(c.customers[0],
            (CustomerSeed{"cust-test-001", "Test Company", "test@example.com", "Europe/Berlin"}));
}

TEST(ConfigTest, DedupWindowForms) {
  EXPECT_EQ(parse_ok("[storage]\ndedup_window = \"forever\"").storage.dedup_window_seconds, 0);
  EXPECT_EQ(parse_ok("[storage]\ndedup_window = 3600").storage.dedup_window_seconds, 3600);
  EXPECT_EQ(parse_ok("[storage]\ndedup_window = \"12h\"").storage.dedup_window_seconds, 43200);
  EXPECT_EQ(parse_ok("[storage]\ndedup_window = \"90m\"").storage.dedup_window_seconds, 5400);
  EXPECT_EQ(parse_ok("[storage]\ndedup_window = \"45s\"").storage.dedup_window_seconds, 45);
}

TEST(ConfigTest, DiskReserve) {
  const Config defaults = parse_ok("");
  EXPECT_EQ(defaults.storage.disk_reserve_bytes, 256u << 20);
  EXPECT_EQ(defaults.storage.disk_reserve_percent, 5u);
  const Config c = parse_ok("[storage]\ndisk_reserve_bytes = \"1GiB\"\ndisk_reserve_percent = 0");
  EXPECT_EQ(c.storage.disk_reserve_bytes, 1u << 30);
  EXPECT_EQ(c.storage.disk_reserve_percent, 0u);
  EXPECT_EQ(parse_ok("[storage]\ndisk_reserve_bytes = 0").storage.disk_reserve_bytes, 0u);
  EXPECT_TRUE(
      fails_with("[storage]\ndisk_reserve_percent = 51", {"tally.toml:2", "disk_reserve_percent"}));
  EXPECT_TRUE(
      fails_with("[storage]\ndisk_reserve_bytes = -1", {"tally.toml:2", "disk_reserve_bytes"}));
}

// ---------------------------------------------------------------------------------------------
// The example and the docs.

TEST(ConfigTest, ExampleFileParses) {
  Result<Config> r = load_config_file(source_path("examples/tally.toml"));
  ASSERT_TRUE(r.has_value()) << r.status().to_string();
  const Config& c = *r;
  EXPECT_EQ(c.server.listen_host, "127.0.0.1");
  EXPECT_EQ(c.server.listen_port, 8080);
  EXPECT_EQ(c.server.data_dir, "./data");

  auto find = [&](std::string_view key) -> const core::MeterSpec* {
    for (const core::MeterSpec& m : c.meters) {
      if (m.key == key) {
        return &m;
      }
    }
    return nullptr;
  };

  struct Expected {
    std::string_view key;
    std::string_view event_type;
    core::Aggregation aggregation;
    std::string_view value;
  };

  const Expected expected[] = {
      {"api_calls", "api_call", core::Aggregation::kCount, ""},
      {"tokens_in", "TOKEN_USAGE", core::Aggregation::kSum, "input_tokens"},
      {"tokens_out", "TOKEN_USAGE", core::Aggregation::kSum, "output_tokens"},
      {"file_uploads", "file_upload", core::Aggregation::kCount, ""},
      {"upload_bytes", "file_upload", core::Aggregation::kSum, "bytes"},
      {"appointments", "appointment_created", core::Aggregation::kCount, ""},
      {"patients", "patients_gauge", core::Aggregation::kLatest, "count"},
      {"users", "users_gauge", core::Aggregation::kLatest, "count"},
      {"storage_gb", "storage_gauge", core::Aggregation::kLatest, "gb"},
      {"active_users", "api_call", core::Aggregation::kUniqueCount, "user_id"},
  };
  for (const Expected& e : expected) {
    const core::MeterSpec* m = find(e.key);
    ASSERT_NE(m, nullptr) << e.key;
    EXPECT_EQ(m->event_type, e.event_type) << e.key;
    EXPECT_EQ(m->aggregation, e.aggregation) << e.key;
    EXPECT_EQ(m->value_property, e.value) << e.key;
  }
  EXPECT_EQ(find("api_calls")->group_by, (std::vector<std::string>{"service"}));
  EXPECT_EQ(find("tokens_in")->group_by, (std::vector<std::string>{"provider", "model"}));
  EXPECT_EQ(find("tokens_out")->group_by, (std::vector<std::string>{"provider", "model"}));
  EXPECT_FALSE(c.customers.empty());
}

// The example is what users copy, so it shows every [server] and [storage] option (some as
// comments).
TEST(ConfigTest, ExampleMentionsEveryServerAndStorageOption) {
  const std::string text = read_text(source_path("examples/tally.toml"));
  ASSERT_FALSE(text.empty());
  for (const OptionInfo& o : config_options()) {
    if (o.section == "server" || o.section == "storage") {
      EXPECT_NE(text.find(o.key + " = "), std::string::npos) << o.key;
    }
  }
}

// docs/configuration.md embeds config_reference_markdown() verbatim. To regenerate it, run this
// test with TALLY_UPDATE_DOCS=1.
TEST(ConfigTest, DocsEmbedTheGeneratedReference) {
  const std::string path = source_path("docs/configuration.md");
  std::string doc = read_text(path);
  const std::size_t begin = doc.find(kDocsBegin);
  const std::size_t end = doc.find(kDocsEnd);
  ASSERT_NE(begin, std::string::npos) << path << " lacks " << kDocsBegin;
  ASSERT_NE(end, std::string::npos) << path << " lacks " << kDocsEnd;
  ASSERT_LT(begin, end);
  const std::size_t body = begin + kDocsBegin.size();
  const std::string generated = config_reference_markdown() + "\n";
  if (std::getenv("TALLY_UPDATE_DOCS") != nullptr) {
    doc.replace(body, end - body, generated);
    std::ofstream(path, std::ios::binary | std::ios::trunc) << doc;
    return;
  }
  EXPECT_EQ(doc.substr(body, end - body), generated)
      << path << " is out of date; run this test with TALLY_UPDATE_DOCS=1 to regenerate it";
}

TEST(ConfigTest, ReferenceNamesEveryOption) {
  const std::string md = config_reference_markdown();
  for (const OptionInfo& o : config_options()) {
    EXPECT_NE(md.find("| `" + o.key + "` |"), std::string::npos) << o.key;
    EXPECT_FALSE(o.doc.empty()) << o.key;
  }
  EXPECT_NE(md.find("### [server]"), std::string::npos);
  EXPECT_NE(md.find("### [[meters]]"), std::string::npos);
}

// ---------------------------------------------------------------------------------------------
// Unknown names.

TEST(ConfigTest, ClusterSectionAcceptedForms) {
  EXPECT_FALSE(parse_ok("").cluster.has_value());  // no [cluster]: the embedded store
  Config one = parse_ok(
      "[cluster]\n"
      "postgres = \"postgresql://tally@db1:5432/tally?sslmode=require\"\n"
      "redis = [\"10.0.0.5:7000\", \"[::1]:7001\", \"redis-a:7002\"]\n");
  ASSERT_TRUE(one.cluster.has_value());
  EXPECT_EQ(one.cluster->postgres,
            std::vector<std::string>{"postgresql://tally@db1:5432/tally?sslmode=require"});
  EXPECT_EQ(one.cluster->redis,
            (std::vector<std::string>{"10.0.0.5:7000", "[::1]:7001", "redis-a:7002"}));
  EXPECT_EQ(one.cluster->postgres_pool, 8);
  EXPECT_EQ(one.cluster->connect_timeout_seconds, 5);
  EXPECT_EQ(one.cluster->command_timeout_seconds, 10);

  Config shards = parse_ok(
      "[cluster]\n"
      "postgres = [\"host=db1 dbname=tally\", \"postgres://db2/tally\"]\n"
      "redis = [\"127.0.0.1:7000\"]\n"
      "postgres_pool = 16\nredis_pool = 4\n"
      "connect_timeout = \"2s\"\ncommand_timeout = \"1m\"\n");
  ASSERT_TRUE(shards.cluster.has_value());
  EXPECT_EQ(shards.cluster->postgres,
            (std::vector<std::string>{"host=db1 dbname=tally", "postgres://db2/tally"}));
  EXPECT_EQ(shards.cluster->postgres_pool, 16);
  EXPECT_EQ(shards.cluster->redis_pool, 4);
  EXPECT_EQ(shards.cluster->connect_timeout_seconds, 2);
  EXPECT_EQ(shards.cluster->command_timeout_seconds, 60);
  EXPECT_EQ(shards.cluster->check_lease.units, 0);  // leased checks off
  EXPECT_EQ(shards.cluster->check_lease_ms, 1000);

  Config leased = parse_ok(
      "[cluster]\npostgres = \"host=db1\"\nredis = [\"127.0.0.1:7000\"]\n"
      "check_lease = \"2.5\"\ncheck_lease_ms = 250\n");
  ASSERT_TRUE(leased.cluster.has_value());
  EXPECT_EQ(leased.cluster->check_lease.text(), "2.5");
  EXPECT_EQ(leased.cluster->check_lease_ms, 250);
}

TEST(ConfigTest, ClusterSectionRefusedValues) {
  const std::string redis = "redis = [\"127.0.0.1:7000\"]\n";
  EXPECT_TRUE(fails_with("[cluster]\n" + redis,
                         {"tally.toml:1:", "cluster: missing required key 'postgres'"}));
  EXPECT_TRUE(fails_with("[cluster]\npostgres = \"host=db\"\n",
                         {"tally.toml:1:", "missing required key 'redis'"}));
  EXPECT_TRUE(fails_with("[cluster]\n" + redis + "postgres = 5432\n",
                         {"tally.toml:3:",
                          "cluster.postgres: expected a string or an array "
                          "of strings, got an integer"}));
  EXPECT_TRUE(fails_with("[cluster]\n" + redis + "postgres = \"\"\n",
                         {"tally.toml:3:", "cluster.postgres: must be 1 to 4096 bytes long"}));
  EXPECT_TRUE(fails_with("[cluster]\n" + redis + "postgres = []\n",
                         {"tally.toml:3:", "cluster.postgres: has 0 entries; 1 to 64"}));
  EXPECT_TRUE(fails_with("[cluster]\n" + redis + "postgres = [\"host=a\", 7]\n",
                         {"tally.toml:3:", "cluster.postgres[1]: expected a string"}));
  EXPECT_TRUE(fails_with("[cluster]\n" + redis + "postgres = [\"host=a\", \"host=a\"]\n",
                         {"tally.toml:3:", "cluster.postgres[1]: is listed twice"}));
  EXPECT_TRUE(fails_with("[cluster]\n" + redis + "postgres = [\"host=a\", \"db.example.com\"]\n",
                         {"tally.toml:3:",
                          "cluster.postgres: shard 2 of 2 is not a libpq connection "
                          "string"}));
  const std::string pg = "postgres = \"host=db\"\n";
  EXPECT_TRUE(fails_with("[cluster]\n" + pg + "redis = []\n",
                         {"tally.toml:3:", "cluster.redis: must name at least one"}));
  EXPECT_TRUE(fails_with("[cluster]\n" + pg + "redis = \"127.0.0.1:7000\"\n",
                         {"tally.toml:3:", "cluster.redis: expected an array of strings"}));
  EXPECT_TRUE(fails_with("[cluster]\n" + pg + "redis = [\"127.0.0.1\"]\n",
                         {"tally.toml:3:", "cluster.redis: '127.0.0.1'"}));
  EXPECT_TRUE(fails_with("[cluster]\n" + pg + "redis = [\":7000\"]\n",
                         {"tally.toml:3:", "cluster.redis: ':7000' must name a host"}));
  EXPECT_TRUE(fails_with("[cluster]\n" + pg + "redis = [\"r:0\"]\n",
                         {"tally.toml:3:", "cluster.redis: 'r:0' must name a host and a port"}));
  const std::string both = "[cluster]\n" + pg + redis;
  EXPECT_TRUE(fails_with(both + "postgres_pool = 0\n",
                         {"tally.toml:4:", "cluster.postgres_pool: 0 is out of range 1..1024"}));
  EXPECT_TRUE(fails_with(both + "redis_pool = 5000\n",
                         {"tally.toml:4:", "cluster.redis_pool: 5000 is out of range 1..1024"}));
  EXPECT_TRUE(
      fails_with(both + "connect_timeout = \"10m\"\n",
                 {"tally.toml:4:", "cluster.connect_timeout: 600 seconds is out of range"}));
  EXPECT_TRUE(fails_with(both + "command_timeout = 0\n",
                         {"tally.toml:4:", "cluster.command_timeout: 0 seconds is out of range"}));
  EXPECT_TRUE(fails_with(both + "check_lease = \"0.0000001\"\n",
                         {"tally.toml:4:", "cluster.check_lease: must be a multiple of 0.000001"}));
  EXPECT_TRUE(
      fails_with(both + "check_lease = 2000000000\n", {"tally.toml:4:", "from 0 to 1000000000"}));
  EXPECT_TRUE(fails_with(both + "check_lease = -1\n", {"tally.toml:4:", "cluster.check_lease"}));
  EXPECT_TRUE(fails_with(both + "check_lease_ms = 5\n",
                         {"tally.toml:4:", "cluster.check_lease_ms: 5 is out of range 10..60000"}));
  EXPECT_TRUE(
      fails_with(both + "shards = 2\n", {"tally.toml:4:", "unknown key 'shards' in [cluster]"}));
  EXPECT_TRUE(fails_with("cluster = \"postgresql://db\"\n",
                         {"tally.toml:1:", "cluster: expected a table ([cluster])"}));
}

TEST(ConfigTest, UnknownTopLevelKey) {
  EXPECT_TRUE(fails_with("\n\nfoo = 1\n", {"tally.toml:3: unknown key 'foo' at top level"}));
}

TEST(ConfigTest, UnknownSection) {
  EXPECT_TRUE(fails_with("[server]\n[serverr]\nthreads = 1\n",
                         {"tally.toml:2: unknown section [serverr]", "did you mean 'server'?"}));
  EXPECT_TRUE(fails_with("[[plan]]\nname = \"x\"\n",
                         {"tally.toml:1: unknown section [[plan]]", "did you mean"}));
}

TEST(ConfigTest, UnknownKeyInSection) {
  EXPECT_TRUE(
      fails_with("[server]\nthreads = 2\nthread = 4\n",
                 {"tally.toml:3: unknown key 'thread' in [server]", "did you mean 'threads'?"}));
  EXPECT_TRUE(fails_with("[storage]\n\nfsync = true\nwal = 1\n",
                         {"tally.toml:4: unknown key 'wal' in [storage]"}));
  EXPECT_TRUE(
      fails_with("[server.tls]\ncert = \"x\"\n", {"tally.toml:1: unknown key 'tls' in [server]"}));
}

TEST(ConfigTest, UnknownKeyInMeterEntry) {
  const std::string text = std::string(kMeterA) + R"(
[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
value = "$.input_tokens"
unit = "tokens"


description = "x"

agregation = "sum"
)";
  // kMeterA is 3 lines, then a blank line; the typo sits on line 14.
  EXPECT_TRUE(fails_with(text, {"tally.toml:14: unknown key 'agregation' in [[meters]]",
                                "did you mean 'aggregation'?"}));
}

TEST(ConfigTest, FirstErrorInFileOrderIsReported) {
  // toml++ keeps keys sorted by name; the error for line 2 must still win over line 3's.
  EXPECT_TRUE(fails_with("[server]\nzzz = 1\naaa = 2\n", {"tally.toml:2: unknown key 'zzz'"}));
}

// ---------------------------------------------------------------------------------------------
// Types and values.

TEST(ConfigTest, WrongTypes) {
  EXPECT_TRUE(fails_with("[server]\nthreads = \"four\"\n",
                         {"tally.toml:2: server.threads: expected an integer, got a string"}));
  EXPECT_TRUE(fails_with("[server]\nthreads = 2.0\n",
                         {"tally.toml:2: server.threads: expected an integer, got a float"}));
  EXPECT_TRUE(fails_with("[storage]\nfsync = \"yes\"\n",
                         {"tally.toml:2: storage.fsync: expected true or false, got a string"}));
  EXPECT_TRUE(
      fails_with("[server]\nlisten = 8080\n", {"tally.toml:2: server.listen: expected a string"}));
  EXPECT_TRUE(fails_with("server = 5\n", {"tally.toml:1: server: expected a table"}));
  EXPECT_TRUE(fails_with("[meters]\nkey = \"a\"\n",
                         {"tally.toml:1: meters: expected an array of tables ([[meters]])"}));
  EXPECT_TRUE(fails_with("meters = [1]\n", {"meters[0]: expected a table, got an integer"}));
  EXPECT_TRUE(fails_with(std::string(kMeterA) + "group_by = \"provider\"\n",
                         {"tally.toml:4: meters[0].group_by: expected an array of strings"}));
}

TEST(ConfigTest, OutOfRange) {
  EXPECT_TRUE(fails_with("[server]\nthreads = -1\n",
                         {"tally.toml:2: server.threads: -1 is out of range 0..256"}));
  EXPECT_TRUE(fails_with("[server]\nbatch_events_max = 0\n", {"server.batch_events_max: 0"}));
  EXPECT_TRUE(fails_with("[server]\nbody_bytes_max = \"2GiB\"\n",
                         {"server.body_bytes_max: 2147483648 bytes is out of range 1KiB..1GiB"}));
  EXPECT_TRUE(fails_with("[server]\nadmin_key = \"short\"\n",
                         {"server.admin_key: must be 16 to 256 bytes long, got 5"}));
  EXPECT_TRUE(fails_with("[server]\ndata_dir = \"\"\n", {"server.data_dir: must not be empty"}));
  EXPECT_TRUE(fails_with(
      "[storage]\ncheckpoint_interval_seconds = -5\n",
      {"tally.toml:2: storage.checkpoint_interval_seconds: -5 is out of range 0..86400"}));
  EXPECT_TRUE(fails_with("[storage]\ncheckpoint_interval_seconds = \"1m\"\n",
                         {"storage.checkpoint_interval_seconds: expected an integer"}));
  EXPECT_EQ(
      parse_ok("[storage]\ncheckpoint_interval_seconds = 0").storage.checkpoint_interval_seconds,
      0u);
  EXPECT_TRUE(fails_with("[storage]\nmemory_minutes_hours = 9000\n",
                         {"tally.toml:2: storage.memory_minutes_hours: 9000 is out of range "
                          "0..8784"}));
  EXPECT_EQ(parse_ok("[storage]\nmemory_minutes_hours = 0").storage.memory_minutes_hours, 0u);
}

TEST(ConfigTest, BadAggregation) {
  const std::string text = std::string(kMeterA) + R"(
[[meters]]
key = "b"
event_type = "B"
aggregation = "median"
value = "$.x"
)";
  EXPECT_TRUE(fails_with(text, {"tally.toml:8: meters[1].aggregation: 'median' is not one of "
                                "count, sum, min, max, avg, latest, unique_count"}));
}

TEST(ConfigTest, SumWithoutValue) {
  const std::string text = std::string(kMeterA) + R"(
[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
)";
  EXPECT_TRUE(fails_with(text, {"tally.toml:5: meters[1]: aggregation 'sum' needs a 'value'"}));
}

TEST(ConfigTest, CountWithValue) {
  EXPECT_TRUE(
      fails_with("[[meters]]\nkey = \"a\"\nevent_type = \"A\"\naggregation = \"count\"\n"
                 "value = \"$.n\"\n",
                 {"tally.toml:5: meters[0].value: a count takes no value"}));
  EXPECT_TRUE(fails_with(
      "[[meters]]\nkey = \"a\"\nevent_type = \"A\"\nvalue = \"$.n\"\n",
      {"tally.toml:4: meters[0].value: a count takes no value", "aggregation defaults to count"}));
}

TEST(ConfigTest, DuplicateMeterKey) {
  const std::string text = std::string(kMeterA) + "\n" + std::string(kMeterA);
  EXPECT_TRUE(fails_with(text, {"tally.toml:6: meters[1].key: 'a' is already the key of "
                                "meters[0] (line 2)"}));
}

TEST(ConfigTest, BadMeterFields) {
  EXPECT_TRUE(fails_with("[[meters]]\nkey = \"Tokens In\"\nevent_type = \"A\"\n",
                         {"tally.toml:2: meters[0].key: 'Tokens In' may use only a-z, 0-9"}));
  EXPECT_TRUE(fails_with("[[meters]]\nkey = \"\"\nevent_type = \"A\"\n",
                         {"meters[0].key: must not be empty"}));
  EXPECT_TRUE(fails_with("[[meters]]\nkey = \"" + std::string(65, 'a') + "\"\nevent_type = \"A\"\n",
                         {"meters[0].key: must be 1 to 64 bytes long, got 65"}));
  EXPECT_TRUE(
      fails_with("[[meters]]\nkey = \"a\"\nevent_type = \"" + std::string(129, 'x') + "\"\n",
                 {"tally.toml:3: meters[0].event_type: must be 1 to 128 bytes long"}));
  EXPECT_TRUE(fails_with("\n[[meters]]\nevent_type = \"A\"\n",
                         {"tally.toml:2: meters[0]: missing required key 'key'"}));
  EXPECT_TRUE(fails_with("[[meters]]\nkey = \"a\"\n",
                         {"tally.toml:1: meters[0]: missing required key 'event_type'"}));
}

TEST(ConfigTest, BadValuePath) {
  EXPECT_TRUE(fails_with(std::string(kMeterA) + "aggregation = \"sum\"\nvalue = \"\"\n",
                         {"tally.toml:5: meters[0].value: must not be empty"}));
  EXPECT_TRUE(fails_with(std::string(kMeterA) + "aggregation = \"sum\"\nvalue = \"$..x\"\n",
                         {"tally.toml:5: meters[0].value: ", "$..x"}));
}

TEST(ConfigTest, BadGroupBy) {
  EXPECT_TRUE(fails_with(std::string(kMeterA) + "group_by = [\"provider\", \"provider\"]\n",
                         {"tally.toml:4: meters[0].group_by[1]: 'provider' is listed twice"}));
  EXPECT_TRUE(fails_with(std::string(kMeterA) + "group_by = [\"a\", \"\"]\n",
                         {"meters[0].group_by[1]: must be 1 to 128 bytes long"}));
  EXPECT_TRUE(fails_with(std::string(kMeterA) + "group_by = [\"a\", 2]\n",
                         {"meters[0].group_by[1]: expected a string, got an integer"}));
  EXPECT_TRUE(fails_with(
      std::string(kMeterA) + "group_by = [\"a\",\"b\",\"c\",\"d\",\"e\",\"f\",\"g\",\"h\",\"i\"]\n",
      {"meters[0].group_by: has 9 entries; at most 8 are allowed"}));
  // The line of the offending element, not of the key.
  EXPECT_TRUE(fails_with(std::string(kMeterA) + "group_by = [\n  \"a\",\n  \"a\",\n]\n",
                         {"tally.toml:6: meters[0].group_by[1]"}));
}

TEST(ConfigTest, BadFilter) {
  EXPECT_TRUE(fails_with(std::string(kMeterA) + "filter = { day = 2025-01-01 }\n",
                         {"tally.toml:4: meters[0].filter.day: expected a string, integer, "
                          "float or boolean, got a date"}));
  EXPECT_TRUE(fails_with(std::string(kMeterA) + "filter = \"feature\"\n",
                         {"meters[0].filter: expected a table"}));
  EXPECT_TRUE(fails_with(std::string(kMeterA) + "filter = { x = nan }\n",
                         {"meters[0].filter.x: expected"}));
}

TEST(ConfigTest, BadListen) {
  EXPECT_TRUE(fails_with("[server]\nlisten = \"localhost\"\n",
                         {"tally.toml:2: server.listen: 'localhost': expected host:port"}));
  EXPECT_TRUE(fails_with("[server]\nlisten = \"127.0.0.1:65536\"\n",
                         {"server.listen: '127.0.0.1:65536': the port must be 0..65535"}));
  EXPECT_TRUE(fails_with("[server]\nlisten = \"::1:8080\"\n", {"needs brackets"}));
}

TEST(ConfigTest, BadDuration) {
  EXPECT_TRUE(fails_with(
      "[storage]\ndedup_window = \"30 days\"\n",
      {"tally.toml:2: storage.dedup_window: '30 days' is not a duration", "or \"forever\""}));
  EXPECT_TRUE(
      fails_with("[storage]\ndedup_window = -5\n", {"storage.dedup_window: -5 is negative"}));
  EXPECT_TRUE(fails_with("[storage]\ndedup_window = \"100000d\"\n",
                         {"storage.dedup_window: 8640000000 seconds is out of range 0s..3650d"}));
  EXPECT_TRUE(fails_with("[storage]\ndedup_window = true\n",
                         {"storage.dedup_window: expected a duration"}));
}

TEST(ConfigTest, BadSize) {
  EXPECT_TRUE(fails_with("[storage]\nblock_cache_bytes = \"64 MiBs\"\n",
                         {"tally.toml:2: storage.block_cache_bytes: '64 MiBs' is not a size"}));
  EXPECT_TRUE(
      fails_with("[server]\nbody_bytes_max = -1\n", {"server.body_bytes_max: -1 is negative"}));
  EXPECT_TRUE(fails_with("[server]\nbody_bytes_max = \"1.5MiB\"\n", {"is not a size"}));
  EXPECT_TRUE(
      fails_with("[server]\nbody_bytes_max = 1.5\n", {"server.body_bytes_max: expected a size"}));
}

TEST(ConfigTest, BadTimezone) {
  EXPECT_TRUE(fails_with("[[customers]]\nid = \"c1\"\ntimezone = \"Europe/Berln\"\n",
                         {"tally.toml:3: customers[0].timezone: 'Europe/Berln' is not a known "
                          "IANA time zone"}));
}

TEST(ConfigTest, BadCustomers) {
  EXPECT_TRUE(fails_with("[[customers]]\nid = \"c1\"\n\n[[customers]]\nid = \"c1\"\n",
                         {"tally.toml:5: customers[1].id: 'c1' is already the id of "
                          "customers[0] (line 2)"}));
  EXPECT_TRUE(fails_with("[[customers]]\nname = \"x\"\n",
                         {"tally.toml:1: customers[0]: missing required key 'id'"}));
  EXPECT_TRUE(fails_with("[[customers]]\nid = \"c1\"\nplan = \"pro\"\n",
                         {"tally.toml:1: customers[0].plan: 'pro' is not a configured plan"}));
  EXPECT_TRUE(fails_with("[[customers]]\nid = \"c1\"\ntier = \"pro\"\n",
                         {"tally.toml:3: unknown key 'tier' in [[customers]]"}));
  EXPECT_TRUE(fails_with("[[customers]]\nid = \"c1\"\nemail = \"nobody\"\n",
                         {"customers[0].email: 'nobody' is not an email address"}));
  EXPECT_TRUE(fails_with("[[customers]]\nid = \"" + std::string(129, 'c') + "\"\n",
                         {"customers[0].id: must be 1 to 128 bytes long"}));
}

TEST(ConfigTest, TomlSyntaxErrorHasLineAndColumn) {
  Result<Config> r = parse_config("[server]\nthreads = 2\nlisten = \n", "conf/tally.toml");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.error().message().rfind("conf/tally.toml:3:", 0), 0u) << r.error().message();

  EXPECT_TRUE(fails_with("[server]\nthreads = 1\nthreads = 2\n", {"tally.toml:3:"}));
  EXPECT_TRUE(fails_with("[[meters]\n", {"tally.toml:1:"}));
}

// ---------------------------------------------------------------------------------------------
// Files.

TEST(ConfigTest, MissingFileIsNotFound) {
  Result<Config> r = load_config_file(::testing::TempDir() + "/no-such-dir/tally.toml");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kNotFound);
  EXPECT_NE(r.error().message().find("no-such-dir/tally.toml"), std::string::npos);

  Result<Config> dir = load_config_file(::testing::TempDir());
  ASSERT_FALSE(dir.has_value());
  EXPECT_EQ(dir.error().code(), StatusCode::kNotFound);
}

TEST(ConfigTest, FileErrorsNameTheFile) {
  const std::string path = ::testing::TempDir() + "/config_test_bad.toml";
  std::ofstream(path, std::ios::binary | std::ios::trunc) << "[server]\nthreads = \"x\"\n";
  Result<Config> r = load_config_file(path);
  std::remove(path.c_str());
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message().rfind(path + ":2: server.threads:", 0), 0u) << r.error().message();
}

}  // namespace
}  // namespace tally::config

namespace tally::config {
namespace {

constexpr std::string_view kPriceMeters = R"(
[[meters]]
key = "tokens_in"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.input_tokens"

[[meters]]
key = "last_seen"
event_type = "TOKEN_USAGE"
aggregation = "latest"
value = "$.input_tokens"
)";

TEST(ConfigPrices, SeedShapeWithCreditRateAndMarkup) {
  const std::string text = std::string(kPriceMeters) + R"(
[credits]
per_currency_unit = 1000
markup_percent = 20

[[prices]]
meter = "tokens_in"
match = { provider = "OPENAI", model = "gpt-4-turbo" }
unit_price = "0.00001"
currency = "USD"

[[prices]]
meter = "tokens_in"
model = "graduated"
markup_percent = 0
tiers = [{ up_to = 1000, unit_price = "0.01" }, { up_to = "inf", unit_price = "0.005", flat_fee = 2 }]
)";
  Result<Config> c = parse_config(text, "tally.toml");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  ASSERT_EQ(c->prices.size(), 2u);
  const core::PriceSpec& first = c->prices[0].spec;
  EXPECT_EQ(first.model, core::PriceModel::kPerUnit);
  EXPECT_EQ(core::format_decimal(first.unit_price), "0.00001");
  ASSERT_EQ(first.match.size(), 2u);
  EXPECT_EQ(first.match[0], (std::pair<std::string, std::string>{"provider", "OPENAI"}));
  EXPECT_EQ(core::format_decimal(first.credits_per_currency_unit), "1200");
  const core::PriceSpec& second = c->prices[1].spec;
  EXPECT_EQ(core::format_decimal(second.credits_per_currency_unit), "1000");
  ASSERT_EQ(second.tiers.size(), 2u);
  EXPECT_FALSE(second.tiers[0].unbounded);
  EXPECT_TRUE(second.tiers[1].unbounded);
  EXPECT_EQ(core::format_decimal(second.tiers[1].flat_fee), "2");
}

TEST(ConfigPrices, PrepaidPlanAndSeedCredits) {
  const std::string text = std::string(kPriceMeters) + R"(
[[plans]]
key = "payg"
prepaid = true

[[customers]]
id = "cust-test-001"
plan = "payg"
credits = 1000000
)";
  Result<Config> c = parse_config(text, "tally.toml");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_TRUE(c->plans[0].prepaid);
  EXPECT_EQ(c->customers[0].credits, "1000000");
}

TEST(ConfigPrices, VersionsOfOnePriceEachHaveTheirOwnStart) {
  const std::string m(kPriceMeters);
  const std::string base = m + "[[prices]]\nmeter = \"tokens_in\"\nunit_price = \"1\"\n";
  Result<Config> c = parse_config(base +
                                      "[[prices]]\nmeter = \"tokens_in\"\nunit_price = \"2\"\n"
                                      "effective_from = \"2027-01-01T00:00:00+01:00\"\n",
                                  "tally.toml");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_FALSE(c->prices[0].has_effective_from);
  EXPECT_TRUE(c->prices[1].has_effective_from);
  EXPECT_EQ(c->prices[1].effective_from_us, *core::parse_rfc3339("2026-12-31T23:00:00Z"));
  EXPECT_TRUE(fails_with(base + "[[prices]]\nmeter = \"tokens_in\"\nunit_price = \"2\"\n",
                         {"prices[1]", "repeats the meter and match of prices[0]"}));
  EXPECT_TRUE(fails_with(m + "[[prices]]\nmeter = \"tokens_in\"\nunit_price = \"1\"\n"
                             "effective_from = \"2027-01-01T00:00:00Z\"\n"
                             "[[prices]]\nmeter = \"tokens_in\"\nunit_price = \"2\"\n"
                             "effective_from = \"2027-01-01T00:00:00Z\"\n",
                         {"prices[1]", "their own effective_from"}));
  EXPECT_TRUE(fails_with(base + "[[prices]]\nmeter = \"tokens_in\"\nunit_price = \"2\"\n"
                                "effective_from = \"next month\"\n",
                         {"prices[1].effective_from", "not an RFC 3339 time"}));
  // Another match is another price, not a version.
  EXPECT_TRUE(parse_config(base + "[[prices]]\nmeter = \"tokens_in\"\nunit_price = \"2\"\n"
                                  "match = { model = \"x\" }\n",
                           "tally.toml")
                  .has_value());
}

TEST(ConfigPrices, BadPrices) {
  const std::string m(kPriceMeters);
  EXPECT_TRUE(fails_with(m + "[[prices]]\nmeter = \"nope\"\nunit_price = \"1\"\n",
                         {"prices[0].meter", "'nope' is not a configured meter"}));
  EXPECT_TRUE(fails_with(m + "[[prices]]\nmeter = \"last_seen\"\nunit_price = \"1\"\n",
                         {"prices[0].meter", "prices apply to count and sum meters"}));
  EXPECT_TRUE(
      fails_with(m + "[[prices]]\nmeter = \"tokens_in\"\n", {"prices[0]", "needs 'unit_price'"}));
  EXPECT_TRUE(fails_with(m + "[[prices]]\nmeter = \"tokens_in\"\nunit_price = \"abc\"\n",
                         {"prices[0].unit_price", "not a decimal number"}));
  EXPECT_TRUE(fails_with(m + "[[prices]]\nmeter = \"tokens_in\"\nunit_price = \"-1\"\n",
                         {"prices[0].unit_price", "negative"}));
  EXPECT_TRUE(fails_with(m + "[[prices]]\nmeter = \"tokens_in\"\nmodel = \"tiered\"\n",
                         {"prices[0].model", "'tiered' is not per_unit"}));
  EXPECT_TRUE(fails_with(m + "[[prices]]\nmeter = \"tokens_in\"\nmodel = \"volume\"\n",
                         {"prices[0]", "needs 'tiers'"}));
  EXPECT_TRUE(fails_with(
      m + "[[prices]]\nmeter = \"tokens_in\"\nmodel = \"volume\"\ntiers = [{ up_to = 10, "
          "unit_price = 1 }]\n",
      {"prices[0].tiers[0]", "the last tier has no bound"}));
  EXPECT_TRUE(fails_with(
      m + "[[prices]]\nmeter = \"tokens_in\"\nmodel = \"volume\"\ntiers = [{ up_to = 10, "
          "unit_price = 1 }, { up_to = 5, unit_price = 1 }, { unit_price = 1 }]\n",
      {"prices[0].tiers[1].up_to", "ascending"}));
  EXPECT_TRUE(fails_with(
      m + "[[prices]]\nmeter = \"tokens_in\"\nmodel = \"graduated\"\ntiers = [{ unit_price = 1, "
          "colour = 2 }]\n",
      {"unknown key 'colour'"}));
  EXPECT_TRUE(fails_with(m + "[[prices]]\nmeter = \"tokens_in\"\nmodel = \"package\"\n",
                         {"prices[0]", "'package_size' (> 0) and 'package_price'"}));
  EXPECT_TRUE(
      fails_with(m + "[[prices]]\nmeter = \"tokens_in\"\nunit_price = 1\ncurrency = \"EUR\"\n",
                 {"prices[0].currency", "differs from [credits] currency 'USD'"}));
  EXPECT_TRUE(fails_with(m + "[credits]\nper_currency_unit = 0\n",
                         {"credits.per_currency_unit", "must be positive"}));
  EXPECT_TRUE(fails_with(m + "[credits]\ncurrency = \"usd\"\n", {"credits.currency"}));
  EXPECT_TRUE(fails_with(m + "[[customers]]\nid = \"a\"\ncredits = \"x\"\n",
                         {"customers[0].credits", "not a decimal number"}));
}

TEST(ConfigTest, Retention) {
  auto c = parse_config(
      "[retention]\narchive_after = \"90d\"\narchive_dir = \"/srv/arch\"\n"
      "archive_interval = \"15m\"\n",
      "tally.toml");
  ASSERT_TRUE(c.has_value()) << c.error().message();
  EXPECT_EQ(c->retention.archive_after_seconds, 90 * 86400);
  EXPECT_EQ(c->retention.archive_dir, "/srv/arch");
  EXPECT_EQ(c->retention.archive_interval_seconds, 900);
  for (std::string_view never : {"", "0", "never"}) {
    auto n = parse_config("[retention]\narchive_after = \"" + std::string(never) + "\"\n", "t");
    ASSERT_TRUE(n.has_value()) << never;
    EXPECT_EQ(n->retention.archive_after_seconds, 0);
  }
  auto d = parse_config("", "t");
  ASSERT_TRUE(d.has_value());
  EXPECT_EQ(d->retention.archive_after_seconds, 0);
  EXPECT_EQ(d->retention.archive_interval_seconds, 3600);
}

TEST(ConfigTest, BadRetention) {
  EXPECT_TRUE(fails_with("[retention]\narchive_after = \"90 days\"\n",
                         {"tally.toml:2: retention.archive_after: '90 days' is not a duration"}));
  EXPECT_TRUE(fails_with("[retention]\narchive_after = \"5m\"\n",
                         {"retention.archive_after: '5m' is out of range 1h..36500d"}));
  EXPECT_TRUE(fails_with("[retention]\narchive_after = 90\n",
                         {"retention.archive_after: expected a string"}));
  EXPECT_TRUE(fails_with("[retention]\narchive_interval = \"10s\"\n",
                         {"retention.archive_interval: 10 seconds is out of range 60s..7d"}));
  EXPECT_TRUE(fails_with("[retention]\narchive_every = \"1h\"\n", {"archive_every"}));
}
}  // namespace
}  // namespace tally::config

namespace tally::config {
namespace {

// ---------------------------------------------------------------------------------------------
// Hardening (issue #16): negative values, ids, removed plans, repeated limits, empty files.

constexpr std::string_view kUsageMeters = R"(
[[meters]]
key = "api_calls"
event_type = "api_call"

[[meters]]
key = "tokens"
event_type = "TOKEN_USAGE"
aggregation = "sum"
value = "$.input_tokens"
)";

TEST(ConfigHardening, AllowNegativeIsForMetersWithAValue) {
  Config c = parse_ok(std::string(kUsageMeters) + "allow_negative = true\n");
  ASSERT_EQ(c.meters.size(), 2u);
  EXPECT_FALSE(c.meters[0].allow_negative);
  EXPECT_TRUE(c.meters[1].allow_negative);
  EXPECT_TRUE(fails_with("[[meters]]\nkey = \"a\"\nevent_type = \"A\"\nallow_negative = true\n",
                         {"tally.toml:4: meters[0].allow_negative: a count has no value"}));
}

TEST(ConfigHardening, IdsFollowTheOneRule) {
  EXPECT_TRUE(fails_with("[[customers]]\nid = \"evil\\r\\nX-Injected: yes\"\n",
                         {"customers[0].id: id must be 1 to 128 bytes of UTF-8 without control"}));
  EXPECT_TRUE(fails_with("[[customers]]\nid = \"a/b\"\n", {"customers[0].id: id must be"}));
  EXPECT_TRUE(fails_with("[[meters]]\nkey = \"a\"\nevent_type = \"A\\u0007\"\n",
                         {"meters[0].event_type: event_type must be"}));
  Config ok = parse_ok("[[customers]]\nid = \"K\\u00f6ln\"\n");
  EXPECT_EQ(ok.customers[0].id, "K\xC3\xB6ln");
}

TEST(ConfigHardening, APlanRepeatingALimitIsRefused) {
  EXPECT_TRUE(fails_with(std::string(kUsageMeters) + R"(
[[plans]]
key = "starter"
limits = [{ meter = "api_calls", period = "day", amount = 100 },
          { meter = "api_calls", period = "month", amount = 1000 },
          { meter = "api_calls", period = "day", amount = 200 }]
)",
                         {"plans[0].limits[2]: repeats the day limit of meter 'api_calls' "
                          "(limits[0])"}));
}

TEST(ConfigHardening, ATrialIsOneToTenYearsOfDays) {
  const std::string plan = std::string(kUsageMeters) + R"(
[[plans]]
key = "trial"
limits = [{ meter = "api_calls", period = "trial", days = )";
  EXPECT_TRUE(fails_with(plan + "3651, amount = 10 }]\n",
                         {"plans[0].limits[0].days: expected an integer 1..3650"}));
  EXPECT_TRUE(fails_with(plan + "9223372036854775807, amount = 10 }]\n",
                         {"plans[0].limits[0].days: expected an integer 1..3650"}));
  Config c = parse_ok(plan + "3650, amount = 10 }]\n");
  ASSERT_EQ(c.plans.size(), 1u);
  EXPECT_EQ(c.plans[0].limits[0].days, 3650);
  // The same bound where an operator sets a limit through the API (an override).
  Result<core::LimitRule> r = make_limit("api_calls", "trial", 3651, "10", true);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().message(), "a trial's 'days' must be 1..3650");
}

TEST(ConfigHardening, ReplacedPlansNameARemovedAndAConfiguredPlan) {
  const std::string plans = std::string(kUsageMeters) + R"(
[[plans]]
key = "basic"
limits = [{ meter = "api_calls", period = "day", amount = 100 }]
)";
  Config c = parse_ok(plans + "[enforcement]\nreplaced_plans = { starter = \"basic\" }\n");
  ASSERT_EQ(c.enforcement.replaced_plans.size(), 1u);
  EXPECT_EQ(c.enforcement.replaced_plans[0].first, "starter");
  EXPECT_EQ(c.enforcement.replaced_plans[0].second, "basic");
  EXPECT_TRUE(fails_with(plans + "[enforcement]\nreplaced_plans = { starter = \"gold\" }\n",
                         {"enforcement.replaced_plans.starter: 'gold' is not a configured plan"}));
  EXPECT_TRUE(fails_with(plans + "[enforcement]\nreplaced_plans = { basic = \"basic\" }\n",
                         {"'basic' is a configured plan"}));
}

TEST(ConfigHardening, AnEmptyFileIsEveryDefault) {
  const std::string path = ::testing::TempDir() + "/config_test_empty.toml";
  { std::ofstream(path, std::ios::binary | std::ios::trunc); }
  Result<Config> r = load_config_file(path);
  std::remove(path.c_str());
  ASSERT_TRUE(r.has_value()) << r.error().to_string();
  EXPECT_TRUE(r->meters.empty());
  EXPECT_EQ(r->server.listen_port, Config{}.server.listen_port);
}

}  // namespace
}  // namespace tally::config

namespace tally::config {
namespace {

constexpr std::string_view kNotification = R"(
[[notifications]]
host = "smtp.example.com"
from = "alerts@example.com"
to = ["ops@example.com"]
)";

TEST(ConfigNotifications, DefaultsAndEveryOption) {
  Config c = parse_ok(kNotification);
  ASSERT_EQ(c.notifications.size(), 1u);
  const NotificationConfig& n = c.notifications[0];
  EXPECT_EQ(n.host, "smtp.example.com");
  EXPECT_EQ(n.port, 587);
  EXPECT_TRUE(n.starttls);
  EXPECT_EQ(n.from_name, "Tally");
  EXPECT_EQ(n.events, (std::vector<std::string>{"alert.triggered"}));
  EXPECT_TRUE(n.levels.empty());
  EXPECT_FALSE(n.to_customer);
  EXPECT_EQ(n.timeout_seconds, 30);
  EXPECT_EQ(n.retry_backoff_seconds, 10);

  c = parse_ok(R"(
[[notifications]]
host = "127.0.0.1"
port = 2525
starttls = false
user = "tally"
password_env = "TALLY_SMTP_PASSWORD"
from = "alerts@example.com"
from_name = ""
to_customer = true
levels = ["critical", "exceeded"]
kinds = ["limit"]
timeout = "5s"
retry_for = "1h"
retry_backoff = "2s"
retry_backoff_max = "1m"

[[notifications]]
host = "mail.example.com"
starttls = "off"
from = "a@example.com"
to = ["b@example.com"]
)");
  ASSERT_EQ(c.notifications.size(), 2u);
  EXPECT_EQ(c.notifications[0].port, 2525);
  EXPECT_FALSE(c.notifications[0].starttls);
  EXPECT_EQ(c.notifications[0].password_env, "TALLY_SMTP_PASSWORD");
  EXPECT_TRUE(c.notifications[0].to_customer);
  EXPECT_EQ(c.notifications[0].kinds, (std::vector<AlertKind>{AlertKind::kLimit}));
  EXPECT_EQ(c.notifications[0].retry_backoff_max_seconds, 60);
  EXPECT_FALSE(c.notifications[1].starttls);
  EXPECT_TRUE(
      parse_ok(std::string(kNotification) + "starttls = \"required\"\n").notifications[0].starttls);
  EXPECT_TRUE(parse_ok(std::string(kNotification) + "starttls = true\n").notifications[0].starttls);
}

TEST(ConfigNotifications, ErrorsNameTheField) {
  const std::string base(kNotification);
  EXPECT_TRUE(fails_with("[[notifications]]\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n",
                         {"missing required key 'host'"}));
  EXPECT_TRUE(fails_with(base + "port = 0\n", {"notifications[0].port", "out of range 1..65535"}));
  EXPECT_TRUE(fails_with(base + "port = 65536\n", {"notifications[0].port"}));
  EXPECT_TRUE(fails_with(base + "starttls = \"yes\"\n",
                         {"notifications[0].starttls", "\"required\", \"off\", true or false"}));
  EXPECT_TRUE(fails_with(base + "starttls = 1\n", {"expected a string or a boolean"}));
  EXPECT_TRUE(
      fails_with("[[notifications]]\nhost = \"h\"\nfrom = \"alerts\"\nto = [\"b@example.com\"]\n",
                 {"notifications[0].from", "'alerts' is not an email address"}));
  EXPECT_TRUE(fails_with(
      "[[notifications]]\nhost = \"h\"\nfrom = \"a@example.com\"\nto = [\"a b@c.com\"]\n",
      {"notifications[0].to", "'a b@c.com' is not an email address"}));
  EXPECT_TRUE(fails_with("[[notifications]]\nhost = \"h\"\nfrom = \"a@example.com\"\n",
                         {"notifications[0]", "no recipients"}));
  EXPECT_TRUE(fails_with(base + "user = \"u\"\n", {"user needs password_env"}));
  EXPECT_TRUE(fails_with(base + "password_env = \"P\"\n", {"password_env needs a user"}));
  EXPECT_TRUE(fails_with(base + "user = \"u\"\npassword_env = \"BAD-NAME\"\n",
                         {"not an environment variable name"}));
  EXPECT_TRUE(fails_with(base + "password = \"hunter2\"\n", {"password"}));
  EXPECT_TRUE(fails_with(base + "levels = [\"loud\"]\n", {"'loud' is not an alert level"}));
  EXPECT_TRUE(fails_with(base + "kinds = [\"usage\"]\n", {"'usage' is not an alert kind"}));
  EXPECT_TRUE(fails_with(base + "events = [\"invoice.paid\"]\n", {"not an event type"}));
  EXPECT_TRUE(fails_with(base + "retry_backoff = \"1h\"\nretry_backoff_max = \"1m\"\n",
                         {"retry_backoff_max", "is shorter than retry_backoff"}));
  EXPECT_TRUE(fails_with("[notifications]\nhost = \"h\"\n", {"notifications"}));
}

}  // namespace
}  // namespace tally::config
