// Real Redis servers for tests: a Redis Cluster (3 primaries + 3 replicas by default) or a single
// non-cluster Redis, on free loopback ports, in a temporary directory.
//
// start_cluster() runs `redis-server --cluster-enabled yes` per node (no persistence,
// cluster-node-timeout 1000 ms so that a failover takes a second or two), joins them with
// `redis-cli --cluster create ... --cluster-replicas R --cluster-yes`, and waits until every node
// says `cluster_state:ok`, knows every other node, and every replica's link to its primary is
// up. The destructor kills every server by its pid (never by name) and removes the directory.
// Tests skip (GTEST_SKIP) only where redis_programs_missing() says why.
//
// Thread safety: a RedisServers is used from one thread (the one that started it: the servers
// are killed if that thread exits, see process.h).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "support/process.h"
#include "tally/status.h"

namespace tally::testing {

// Why Redis tests cannot run here ("redis-server is not installed ..."), or "" when they can.
std::string redis_programs_missing();

class RedisServers {
 public:
  // A cluster of `primaries` primaries, each with `replicas` replicas.
  static Result<std::unique_ptr<RedisServers>> start_cluster(int primaries = 3, int replicas = 1);
  // One Redis without cluster support.
  static Result<std::unique_ptr<RedisServers>> start_standalone();

  RedisServers(const RedisServers&) = delete;
  RedisServers& operator=(const RedisServers&) = delete;
  // Kills every server still running (SIGKILL, by pid) and removes the directory.
  ~RedisServers();

  // "127.0.0.1:port" of every node, in start order.
  std::vector<std::string> endpoints() const;

  const std::string& dir() const { return dir_; }

  // Kills the node listening on `port` (SIGKILL, by pid) and reaps it. False when there is no
  // such running node.
  bool kill_node(std::uint16_t port);

  // Runs `redis-cli -h 127.0.0.1 -p port args...` and returns what it printed; an error when it
  // cannot run or exits non-zero.
  Result<std::string> cli(std::uint16_t port, const std::vector<std::string>& args);

  // Waits until every running node reports cluster_state:ok and a healthy replication link
  // (see above). kUnavailable naming the node that is not, after `timeout_ms`.
  Status wait_healthy(std::uint32_t timeout_ms);

 private:
  struct Node {
    std::uint16_t port = 0;
    ChildProcess process;
  };

  RedisServers() = default;
  Status start_node(bool cluster);

  std::string dir_;
  std::string server_;  // path of redis-server
  std::string cli_;     // path of redis-cli
  std::vector<Node> nodes_;
  int cli_runs_ = 0;
  int expected_nodes_ = 1;
};

}  // namespace tally::testing
