// The PostgreSQL schema of the scale-out mode and its migrations (docs/cluster.md, "Schema").
//
// Design: the schema is a list of versioned migrations compiled into the binary, each a script
// of DDL. A shard's `tally_schema_version` table holds one row per applied version. migrate()
// applies the missing versions in order, each in its own transaction together with its row, so
// a migration is applied whole or not at all; it holds a session advisory lock
// (pg_advisory_lock(kMigrationLockKey)) throughout, so two nodes migrating the same shard at
// once take turns and the second finds nothing to do. Running it again changes nothing.
//
// schema_status() is what a node checks before serving: a shard whose schema lacks a version
// this binary knows is "outdated" (run `tally migrate`), one holding a version this binary does
// not know is "newer" (it was migrated by a newer Tally: upgrade this one), and `tally serve`
// must refuse both.
//
// Thread safety: the functions use the given connection only; see connection.h.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pg/connection.h"
#include "tally/status.h"

namespace tally::pg {

// The advisory lock key `tally migrate` holds ("tally" in ASCII).
inline constexpr std::int64_t kMigrationLockKey = 0x74616c6c79;

struct Migration {
  int version;            // 1, 2, ...: consecutive
  std::string_view name;  // what it does, for messages
  std::string_view sql;   // DDL statements separated by ';'
};

// Every migration this binary knows, in version order.
std::span<const Migration> migrations();

// The highest version this binary knows.
int latest_schema_version();

enum class SchemaState {
  kKnown,     // every known version applied, nothing else
  kOutdated,  // some known version is missing (a fresh database: all of them)
  kNewer,     // a version this binary does not know is applied
};

struct SchemaStatus {
  SchemaState state = SchemaState::kOutdated;
  std::vector<int> applied;  // versions in tally_schema_version, ascending
  std::vector<int> missing;  // known versions not applied
  std::vector<int> unknown;  // applied versions this binary does not know

  // One sentence: "schema at version 1, as this binary expects", "schema at version 0; this
  // binary needs version 1: run `tally migrate`", "schema has version 7, which this binary
  // (knowing up to 1) does not know: ...".
  std::string describe() const;
};

// Reads the shard's schema versions. Errors: those of the connection (kUnavailable when lost).
Result<SchemaStatus> schema_status(Connection& conn);

struct MigrateResult {
  std::vector<int> applied_now;  // versions this call applied (empty: nothing to do)
  int version = 0;               // the schema's version afterwards
};

// Creates tally_schema_version if missing and applies every missing migration, under the
// advisory lock (see above). Errors: kUnprocessable (nothing changed) when the shard holds a
// version this binary does not know; a failed migration's error, naming it (that migration is
// rolled back, those before it stay applied); the connection's errors (a statement_timeout
// while waiting for the lock is kUnavailable).
Result<MigrateResult> migrate(Connection& conn);

}  // namespace tally::pg
