// A real PostgreSQL 15 server for tests, on a free loopback port, in a temporary directory.
//
// start() runs Debian's `initdb` (/usr/lib/postgresql/15/bin) into <tmp>/data with a superuser
// `tally` and trust authentication on loopback, then `postgres -D <tmp>/data -p PORT
// -k <tmp> -c listen_addresses=127.0.0.1` (fsync off: the tests do not test PostgreSQL's
// durability) as a child of the test, and waits until its postmaster.pid says "ready".
// PostgreSQL refuses to run as root: when the test runs as root, the directory is given to the
// `postgres` user (which Debian's package creates) and both programs run under
// `runuser -u postgres --`. The destructor stops the server by the pid in postmaster.pid (never
// by name), waits for it to exit, and removes the directory. Tests skip (GTEST_SKIP) only where
// pg_programs_missing() says why.
//
// Thread safety: a PgServer is used from one thread (the one that started it; see process.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "support/process.h"
#include "tally/status.h"

namespace tally::testing {

// Why PostgreSQL tests cannot run here ("initdb is not installed ..."), or "" when they can.
std::string pg_programs_missing();

class PgServer {
 public:
  static Result<std::unique_ptr<PgServer>> start();

  PgServer(const PgServer&) = delete;
  PgServer& operator=(const PgServer&) = delete;
  // Stops the server (SIGINT to the postmaster's pid: fast shutdown; SIGKILL if it is still
  // running after 10 s) and removes the directory.
  ~PgServer();

  std::uint16_t port() const { return port_; }

  const std::string& dir() const { return dir_; }

  // A libpq connection string for database `dbname` as the superuser `tally`.
  std::string conninfo(const std::string& dbname = "postgres") const;

  // Creates database `name` (a fresh, empty one per test). Errors: kUnavailable with psql's
  // output.
  Status create_database(const std::string& name);

  // Runs `psql -d dbname -c sql` (tuples only, unaligned) and returns what it printed.
  Result<std::string> psql(const std::string& dbname, const std::string& sql);

  // The postmaster's pid, from postmaster.pid; 0 when it cannot be read.
  int postmaster_pid() const;

 private:
  PgServer() = default;

  // The command that runs `program` with `args`: as is, or under runuser when root.
  ProcessOptions command(const std::string& program, std::vector<std::string> args) const;

  std::string dir_;
  std::string bin_;  // /usr/lib/postgresql/15/bin
  bool as_postgres_ = false;
  std::uint16_t port_ = 0;
  std::unique_ptr<ChildProcess> process_;
  int psql_runs_ = 0;
};

}  // namespace tally::testing
