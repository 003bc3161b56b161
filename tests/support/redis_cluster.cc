// Real Redis servers for tests (see redis_cluster.h). Talks to the servers only through
// redis-cli, so the test support library needs no Redis client of its own.
#include "support/redis_cluster.h"

#include <chrono>
#include <cstdlib>
#include <set>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

namespace tally::testing {

namespace {

// The path of `name` in $PATH, or "".
std::string find_in_path(const std::string& name) {
  const char* path = std::getenv("PATH");
  std::stringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
  std::string dir;
  while (std::getline(dirs, dir, ':')) {
    std::string candidate = (dir.empty() ? "." : dir) + "/" + name;
    if (::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
  }
  return {};
}

bool port_accepts(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

// A port free now whose cluster bus port (port + 10000) is free too, not in `taken`.
std::uint16_t pick_cluster_port(const std::set<std::uint16_t>& taken) {
  return pick_loopback_port(20000, 54999, [&](std::uint16_t port) {
    const auto bus = static_cast<std::uint16_t>(port + 10000);
    return taken.count(port) == 0 && taken.count(bus) == 0 && loopback_port_free(bus);
  });
}

bool contains(const std::string& text, const std::string& what) {
  return text.find(what) != std::string::npos;
}

}  // namespace

std::string redis_programs_missing() {
  if (find_in_path("redis-server").empty()) {
    return "redis-server is not installed (scripts/setup.sh installs Debian's redis-server)";
  }
  if (find_in_path("redis-cli").empty()) {
    return "redis-cli is not installed (scripts/setup.sh installs Debian's redis-tools)";
  }
  return {};
}

Result<std::unique_ptr<RedisServers>> RedisServers::start_cluster(int primaries, int replicas) {
  std::string missing = redis_programs_missing();
  if (!missing.empty()) {
    return Status::unavailable(missing);
  }
  std::unique_ptr<RedisServers> servers(new RedisServers());
  servers->server_ = find_in_path("redis-server");
  servers->cli_ = find_in_path("redis-cli");
  servers->dir_ = make_temp_dir("tally-redis-cluster-");
  if (servers->dir_.empty()) {
    return Status::io_error("cannot create a temporary directory for the cluster");
  }
  servers->expected_nodes_ = primaries * (1 + replicas);
  for (int i = 0; i < servers->expected_nodes_; ++i) {
    TALLY_TRY(servers->start_node(true));
  }
  std::vector<std::string> create = {"--cluster", "create"};
  for (const std::string& endpoint : servers->endpoints()) {
    create.push_back(endpoint);
  }
  create.insert(create.end(), {"--cluster-replicas", std::to_string(replicas), "--cluster-yes"});
  auto created = servers->cli(servers->nodes_.front().port, create);
  if (!created) {
    return created.error();
  }
  TALLY_TRY(servers->wait_healthy(30000));
  return servers;
}

Result<std::unique_ptr<RedisServers>> RedisServers::start_standalone() {
  std::string missing = redis_programs_missing();
  if (!missing.empty()) {
    return Status::unavailable(missing);
  }
  std::unique_ptr<RedisServers> servers(new RedisServers());
  servers->server_ = find_in_path("redis-server");
  servers->cli_ = find_in_path("redis-cli");
  servers->dir_ = make_temp_dir("tally-redis-");
  if (servers->dir_.empty()) {
    return Status::io_error("cannot create a temporary directory for redis");
  }
  TALLY_TRY(servers->start_node(false));
  return servers;
}

RedisServers::~RedisServers() {
  nodes_.clear();  // each ChildProcess kills (SIGKILL, by pid) and reaps its server
  if (!dir_.empty()) {
    remove_tree(dir_);
  }
}

Status RedisServers::start_node(bool cluster) {
  std::set<std::uint16_t> taken;
  for (const Node& n : nodes_) {
    taken.insert(n.port);
    taken.insert(static_cast<std::uint16_t>(n.port + 10000));
  }
  // A port picked here may be taken by another test before the server binds it: try again.
  for (int attempt = 0; attempt < 5; ++attempt) {
    std::uint16_t port = pick_cluster_port(taken);
    if (port == 0) {
      return Status::unavailable("no free loopback port pair (port, port + 10000) was found");
    }
    std::string p = std::to_string(port);
    ProcessOptions options;
    options.executable = server_;
    options.args = {"--port",    p,  "--bind",       "127.0.0.1", "--dir",       dir_,
                    "--save",    "", "--appendonly", "no",        "--daemonize", "no",
                    "--logfile", ""};
    if (cluster) {
      options.args.insert(options.args.end(),
                          {"--cluster-enabled", "yes", "--cluster-config-file",
                           "nodes-" + p + ".conf", "--cluster-node-timeout", "1000",
                           // A replica may always take over, however old its data: failover tests
                           // must not depend on how recently the link was checked.
                           "--cluster-replica-validity-factor", "0"});
    }
    options.log_path = dir_ + "/redis-" + p + ".log";
    auto process = ChildProcess::start(options);
    if (!process) {
      return process.error();
    }
    Node node{port, std::move(*process)};
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (std::chrono::steady_clock::now() < deadline && node.process.running() &&
           !port_accepts(port)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (node.process.running() && port_accepts(port)) {
      nodes_.push_back(std::move(node));
      return Status();
    }
    // Exited (most likely the port was taken meanwhile) or never listened: try another port.
  }
  return Status::unavailable("redis-server did not start; see the logs in " + dir_);
}

std::vector<std::string> RedisServers::endpoints() const {
  std::vector<std::string> out;
  for (const Node& n : nodes_) {
    out.push_back("127.0.0.1:" + std::to_string(n.port));
  }
  return out;
}

bool RedisServers::kill_node(std::uint16_t port) {
  for (Node& n : nodes_) {
    if (n.port == port && n.process.running()) {
      if (!n.process.kill_hard()) {
        return false;
      }
      return n.process.wait_exit(5000).has_value();
    }
  }
  return false;
}

Result<std::string> RedisServers::cli(std::uint16_t port, const std::vector<std::string>& args) {
  ProcessOptions options;
  options.executable = cli_;
  options.args = {"-h", "127.0.0.1", "-p", std::to_string(port)};
  options.args.insert(options.args.end(), args.begin(), args.end());
  options.log_path = dir_ + "/cli-" + std::to_string(cli_runs_++) + ".out";
  auto process = ChildProcess::start(options);
  if (!process) {
    return process.error();
  }
  std::optional<int> code = process->wait_exit(60000);
  std::string output = read_file(options.log_path).value_or("");
  ::unlink(options.log_path.c_str());
  if (!code || *code != 0) {
    return Status::unavailable("redis-cli " + (args.empty() ? std::string() : args.front()) +
                               " on port " + std::to_string(port) + " failed (" +
                               (code ? "exit " + std::to_string(*code) : "timeout") +
                               "): " + output);
  }
  return output;
}

Status RedisServers::wait_healthy(std::uint32_t timeout_ms) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  std::string last;
  for (;;) {
    bool healthy = true;
    int running = 0;
    for (Node& n : nodes_) {
      running += n.process.running() ? 1 : 0;
    }
    for (Node& n : nodes_) {
      if (!n.process.running()) {
        continue;
      }
      auto info = cli(n.port, {"cluster", "info"});
      auto replication = cli(n.port, {"info", "replication"});
      std::string where = "node " + std::to_string(n.port) + ": ";
      if (!info || !contains(*info, "cluster_state:ok")) {
        last = where + (info ? "cluster_state is not ok" : info.error().message());
      } else if (!contains(*info, "cluster_known_nodes:" + std::to_string(expected_nodes_))) {
        last = where + "does not know all " + std::to_string(expected_nodes_) + " nodes yet";
      } else if (!replication) {
        last = where + replication.error().message();
      } else if (contains(*replication, "role:slave") &&
                 !contains(*replication, "master_link_status:up")) {
        last = where + "replica link is not up";
      } else if (contains(*replication, "role:master") && running == expected_nodes_ &&
                 expected_nodes_ > 1 && contains(*replication, "connected_slaves:0")) {
        last = where + "primary has no replica connected yet";
      } else {
        continue;
      }
      healthy = false;
      break;
    }
    if (healthy) {
      return Status();
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return Status::unavailable("the redis cluster in " + dir_ + " is not healthy: " + last);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

}  // namespace tally::testing
