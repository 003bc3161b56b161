// `tally migrate`: creates or upgrades the PostgreSQL schema of the scale-out mode on every shard
// of [cluster] postgres (src/pg/schema.h), or with --check only says whether each shard's schema
// is the one this binary knows. Exit codes: 0 done (or, with --check, every shard known);
// 1 a shard could not be reached or migrated, or (--check) is outdated or newer; 2 a usage or
// configuration error, including a configuration without [cluster] (nothing to migrate).
#include <cstdio>
#include <memory>
#include <string>

#include <CLI/CLI.hpp>

#include "cli/cli.h"
#include "config/config.h"
#include "pg/connection.h"
#include "pg/schema.h"

namespace tally::cli {
namespace {

struct MigrateOptions {
  std::string config_path;
  bool check = false;
};

std::string versions_text(const std::vector<int>& versions) {
  std::string out;
  for (int v : versions) {
    out += (out.empty() ? "" : ", ") + std::to_string(v);
  }
  return out;
}

// Says why shard `name` failed; its exit code, 1.
int shard_failed(const std::string& name, const Status& why) {
  std::fprintf(stderr, "tally migrate: %s: %s\n", name.c_str(), why.message().c_str());
  return 1;
}

// --check on one shard: 0 when its schema is the one this binary knows, else 1.
int check_shard(pg::Connection& conn, const std::string& name) {
  auto status = pg::schema_status(conn);
  if (!status) {
    return shard_failed(name, status.error());
  }
  const bool known = status->state == pg::SchemaState::kKnown;
  std::fprintf(known ? stdout : stderr, "%s%s: %s\n", known ? "" : "tally migrate: ", name.c_str(),
               status->describe().c_str());
  return known ? 0 : 1;
}

// Migrates one shard, saying what it applied; 0, or 1 when it failed.
int migrate_shard(pg::Connection& conn, const std::string& name) {
  auto result = pg::migrate(conn);
  if (!result) {
    return shard_failed(name, result.error());
  }
  if (result->applied_now.empty()) {
    std::printf("%s: schema at version %d, nothing to do\n", name.c_str(), result->version);
  } else {
    std::printf("%s: applied version%s %s; schema at version %d\n", name.c_str(),
                result->applied_now.size() > 1 ? "s" : "",
                versions_text(result->applied_now).c_str(), result->version);
  }
  return 0;
}

// Shard `i` of the cluster's: connected to, then checked or migrated; its exit code.
int run_shard(const config::ClusterConfig& cluster, std::size_t i, bool check) {
  // The connection string may hold a password: messages name the shard by its place.
  std::string name = "cluster.postgres";
  if (cluster.postgres.size() > 1) {
    name += "[" + std::to_string(i) + "]";
  }
  pg::ConnectOptions co;
  co.conninfo = cluster.postgres[i];
  co.connect_timeout_ms = static_cast<std::uint32_t>(cluster.connect_timeout_seconds * 1000);
  co.command_timeout_ms = static_cast<std::uint32_t>(cluster.command_timeout_seconds * 1000);
  auto conn = pg::Connection::connect(co);
  if (!conn) {
    return shard_failed(name, conn.error());
  }
  name += " (" + (*conn)->describe() + ")";
  return check ? check_shard(**conn, name) : migrate_shard(**conn, name);
}

int migrate(const MigrateOptions& o) {
  auto loaded = config::load_config_file(o.config_path);
  if (!loaded) {
    std::fprintf(stderr, "tally: %s\n", loaded.error().message().c_str());
    return 2;
  }
  if (!loaded->cluster) {
    std::fprintf(stderr,
                 "tally migrate: nothing to migrate: %s has no [cluster] section, so Tally keeps "
                 "its data in the embedded store, which needs no migration (see "
                 "docs/cluster.md)\n",
                 o.config_path.c_str());
    return 2;
  }
  int exit_code = 0;
  for (std::size_t i = 0; i < loaded->cluster->postgres.size(); ++i) {
    if (run_shard(*loaded->cluster, i, o.check) != 0) {
      exit_code = 1;
    }
  }
  return exit_code;
}

}  // namespace

void register_migrate(CLI::App& app) {
  auto o = std::make_shared<MigrateOptions>();
  auto* cmd = app.add_subcommand(
      "migrate",
      "create or upgrade the PostgreSQL schema of [cluster] on every shard (cluster mode)");
  cmd->add_option("-c,--config", o->config_path, "TOML configuration file with a [cluster] section")
      ->required();
  cmd->add_flag("--check", o->check,
                "change nothing: exit 1 unless every shard's schema is the one this binary knows");
  cmd->callback([o] { std::exit(migrate(*o)); });
}

}  // namespace tally::cli
