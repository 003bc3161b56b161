// A real PostgreSQL server for tests (see pg_server.h). Talks to the server only through psql,
// so the test support library needs no PostgreSQL client of its own.
#include "support/pg_server.h"

#include <chrono>
#include <sstream>
#include <thread>
#include <utility>
#include <vector>

#include <pwd.h>
#include <signal.h>
#include <unistd.h>

namespace tally::testing {
namespace {

constexpr const char* kBinDir = "/usr/lib/postgresql/15/bin";

bool executable(const std::string& path) {
  return ::access(path.c_str(), X_OK) == 0;
}

std::string runuser_path() {
  for (const char* p : {"/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"}) {
    if (executable(p)) {
      return p;
    }
  }
  return {};
}

// The lines of postmaster.pid: pid, data dir, start time, port, socket dir, listen address,
// shared memory key, status ("starting", "ready", "stopping").
std::vector<std::string> pid_file_lines(const std::string& data_dir) {
  std::vector<std::string> lines;
  auto text = read_file(data_dir + "/postmaster.pid");
  if (!text) {
    return lines;
  }
  std::stringstream in(*text);
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && line.back() == ' ') {
      line.pop_back();
    }
    lines.push_back(line);
  }
  return lines;
}

}  // namespace

std::string pg_programs_missing() {
  for (const char* program : {"initdb", "postgres", "psql"}) {
    if (!executable(std::string(kBinDir) + "/" + program)) {
      return std::string(kBinDir) + "/" + program +
             " is not installed (scripts/setup.sh installs Debian's postgresql)";
    }
  }
  if (::geteuid() == 0) {
    if (runuser_path().empty()) {
      return "runuser is not installed; PostgreSQL cannot run as root without it";
    }
    if (::getpwnam("postgres") == nullptr) {
      return "there is no 'postgres' user (Debian's postgresql package creates it); "
             "PostgreSQL refuses to run as root";
    }
  }
  return {};
}

ProcessOptions PgServer::command(const std::string& program, std::vector<std::string> args) const {
  ProcessOptions o;
  const std::string path = bin_ + "/" + program;
  if (as_postgres_) {
    o.executable = runuser_path();
    o.args = {"-u", "postgres", "--", path};
    o.args.insert(o.args.end(), args.begin(), args.end());
  } else {
    o.executable = path;
    o.args = std::move(args);
  }
  // The locale of the test's environment may not exist here; initdb --locale=C does not care.
  o.env = {{"LC_ALL", "C"}};
  return o;
}

Result<std::unique_ptr<PgServer>> PgServer::start() {
  std::string missing = pg_programs_missing();
  if (!missing.empty()) {
    return Status::unavailable(missing);
  }
  std::unique_ptr<PgServer> server(new PgServer());
  server->bin_ = kBinDir;
  server->as_postgres_ = ::geteuid() == 0;
  server->dir_ = make_temp_dir("tally-pg-");
  if (server->dir_.empty()) {
    return Status::io_error("cannot create a temporary directory for PostgreSQL");
  }
  if (server->as_postgres_) {
    const passwd* pw = ::getpwnam("postgres");
    if (pw == nullptr || ::chown(server->dir_.c_str(), pw->pw_uid, pw->pw_gid) != 0) {
      return Status::io_error("cannot give " + server->dir_ + " to the postgres user");
    }
  }
  const std::string data = server->dir_ + "/data";
  ProcessOptions init =
      server->command("initdb", {"-D", data, "-U", "tally", "--auth=trust", "-E", "UTF8",
                                 "--locale=C", "--no-sync", "--no-instructions"});
  init.log_path = server->dir_ + "/initdb.log";
  auto initdb = ChildProcess::start(init);
  if (!initdb) {
    return initdb.error();
  }
  auto init_code = initdb->wait_exit(120000);
  if (init_code != 0) {
    return Status::unavailable("initdb failed: " + read_file(init.log_path).value_or("(no log)"));
  }
  // A port picked here may be taken before the server binds it: try another.
  for (int attempt = 0; attempt < 5; ++attempt) {
    const std::uint16_t port = pick_loopback_port(20000, 60999);
    if (port == 0) {
      return Status::unavailable("no free loopback port was found");
    }
    ProcessOptions o = server->command(
        "postgres", {"-D", data, "-p", std::to_string(port), "-k", server->dir_, "-c",
                     "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "full_page_writes=off",
                     "-c", "max_connections=60", "-c", "shared_buffers=32MB"});
    o.log_path = server->dir_ + "/postgres.log";
    auto process = ChildProcess::start(o);
    if (!process) {
      return process.error();
    }
    server->process_ = std::make_unique<ChildProcess>(std::move(*process));
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < deadline && server->process_->running()) {
      auto lines = pid_file_lines(data);
      if (lines.size() >= 8 && lines[7] == "ready" && lines[3] == std::to_string(port)) {
        server->port_ = port;
        return server;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    server->process_.reset();  // exited (the port was taken, most likely) or never ready
  }
  return Status::unavailable("postgres did not start; see " + server->dir_ + "/postgres.log");
}

int PgServer::postmaster_pid() const {
  auto lines = pid_file_lines(dir_ + "/data");
  if (lines.empty()) {
    return 0;
  }
  try {
    return std::stoi(lines[0]);
  } catch (const std::exception&) {
    return 0;
  }
}

PgServer::~PgServer() {
  if (process_ != nullptr) {
    const int pid = postmaster_pid();
    if (pid > 0) {
      ::kill(pid, SIGINT);  // fast shutdown: ends sessions, writes a checkpoint, exits
    }
    if (!process_->wait_exit(10000).has_value()) {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
      }
      process_->kill_hard();
      process_->wait_exit(5000);
    }
    process_.reset();
  }
  if (!dir_.empty()) {
    remove_tree(dir_);
  }
}

std::string PgServer::conninfo(const std::string& dbname) const {
  return "host=127.0.0.1 port=" + std::to_string(port_) + " user=tally dbname=" + dbname;
}

Result<std::string> PgServer::psql(const std::string& dbname, const std::string& sql) {
  ProcessOptions o;
  o.executable = bin_ + "/psql";
  o.args = {"-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", conninfo(dbname), "-c", sql};
  o.env = {{"LC_ALL", "C"}, {"PGCONNECT_TIMEOUT", "10"}};
  o.log_path = dir_ + "/psql-" + std::to_string(++psql_runs_) + ".log";
  auto p = ChildProcess::start(o);
  if (!p) {
    return p.error();
  }
  auto code = p->wait_exit(60000);
  std::string out = read_file(o.log_path).value_or("");
  if (code != 0) {
    return Status::unavailable("psql -c '" + sql + "' failed: " + out);
  }
  return out;
}

Status PgServer::create_database(const std::string& name) {
  auto r = psql("postgres", "CREATE DATABASE " + name);
  return r ? Status() : r.error();
}

}  // namespace tally::testing
