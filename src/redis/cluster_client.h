// A synchronous Redis Cluster client: slot routing, MOVED and ASK redirects, reconnects.
//
// Design: the client keeps the cluster's slot map (slot -> primary "host:port"), learned with
// `CLUSTER SLOTS` from any node it knows (the seeds first), and one lazily opened hiredis
// connection per node. A command's keys (found by command_keys()) must all hash to one slot
// (slot.h); the command goes to that slot's primary. Replies that redirect are followed:
//  - `MOVED slot host:port`: the slot has a new owner. The map entry is updated at once, the
//    whole map is fetched again, and the command is sent to the new owner.
//  - `ASK slot host:port`: the slot is being migrated and this key is already (or will be) on
//    the importing node. `ASKING` and the command are sent there; the map is NOT updated.
//  - `TRYAGAIN` (a multi-key command during a migration) and `CLUSTERDOWN`: retried after a
//    short, doubling delay (the map is fetched again after CLUSTERDOWN).
// At most `redirects_max` redirects and `retries_max` retries per call; then the call fails.
//
// Broken connections: before a command is written, a connection that the peer has closed
// (a restarted or killed node, `CLIENT KILL`, an idle timeout) is noticed and opened again. A
// command that could not be written (connection refused, reset while writing) certainly did not
// run: the map is fetched again (a failover may have promoted a replica) and it is retried, up
// to `retries_max` times. A command that was written but whose reply never came (read timeout,
// the node died) may or may not have run, so it is NOT retried: the call fails with kUnavailable
// saying so, and the map is fetched again for the next call. Whether a retry is safe is the
// caller's decision (an INCRBY is not idempotent).
//
// A single Redis without cluster support is accepted too: when `CLUSTER SLOTS` answers that
// cluster support is disabled, every slot is routed to that server. The same-slot rule for the
// keys of one command is still enforced, so code that works here also works on a cluster.
//
// Limits: the client reads from primaries only (no READONLY replica reads), speaks RESP2 (no
// pub/sub, no client-side caching), and does not run MULTI/EXEC transactions across redirects.
// The retry delays sleep on the calling thread; keep retries_max and retry_delay_ms small on a
// request path.
//
// Thread safety: a ClusterClient is not thread-safe; use one per thread (connections are not
// shared between clients). Distinct clients may be used from distinct threads. The free
// functions are pure.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tally/status.h"

namespace tally::redis {

// A reply, owned and independent of hiredis. RESP2 types only.
struct Reply {
  enum class Type : std::uint8_t { kNil, kInteger, kString, kStatus, kError, kArray };

  Type type = Type::kNil;
  std::int64_t integer = 0;     // kInteger
  std::string str;              // kString (binary-safe), kStatus ("OK"), kError (its message)
  std::vector<Reply> elements;  // kArray

  bool is_nil() const { return type == Type::kNil; }

  bool is_error() const { return type == Type::kError; }

  bool is_integer() const { return type == Type::kInteger; }

  bool is_array() const { return type == Type::kArray; }

  // A bulk string or a status ("OK", "PONG").
  bool is_text() const { return type == Type::kString || type == Type::kStatus; }
};

struct ClusterOptions {
  // "host:port" of one or more nodes; the others are discovered. Required.
  std::vector<std::string> seeds;
  std::uint32_t connect_timeout_ms = 500;
  // For writing a command and reading its reply, per node.
  std::uint32_t command_timeout_ms = 1000;
  // MOVED and ASK redirects followed within one call.
  std::uint32_t redirects_max = 5;
  // Retries within one call after a connection failure, TRYAGAIN or CLUSTERDOWN.
  std::uint32_t retries_max = 3;
  // The delay before the first retry, doubled for each next one.
  std::uint32_t retry_delay_ms = 50;
};

// Counters since the client was created, for tests and metrics.
struct ClusterStats {
  // The caller's commands written to a node, a pipeline's one by one, each redirect or retry
  // again (the client's own CLUSTER SLOTS and ASKING are not counted).
  std::uint64_t commands = 0;
  std::uint64_t moved = 0;               // MOVED replies followed
  std::uint64_t ask = 0;                 // ASK replies followed
  std::uint64_t retries = 0;             // retries after connection failures, TRYAGAIN, CLUSTERDOWN
  std::uint64_t connects = 0;            // connections opened
  std::uint64_t connection_errors = 0;   // connections that failed to open or broke
  std::uint64_t slot_map_refreshes = 0;  // CLUSTER SLOTS answered and installed
};

class ClusterClient {
 public:
  // Connects to the seeds and learns the slot map. Errors: kInvalidArgument when there is no
  // seed or one is not "host:port"; kUnavailable when no seed answers (naming each failure).
  static Result<std::unique_ptr<ClusterClient>> connect(ClusterOptions options);

  ClusterClient(const ClusterClient&) = delete;
  ClusterClient& operator=(const ClusterClient&) = delete;
  ~ClusterClient();

  // Runs one command (argv[0] is its name; arguments are binary-safe) on the primary of its
  // keys' slot, following redirects. A command without keys (PING, FUNCTION ..., CLUSTER ...)
  // goes to any one primary. Returns Redis's reply, which may be an error reply (kError: Redis
  // refused it, e.g. WRONGTYPE; or TRYAGAIN / CLUSTERDOWN still answered after retries_max
  // retries, and then the command did not run). Errors: kInvalidArgument for an empty
  // argv, malformed key counts (EVALSHA/FCALL numkeys) or keys in different slots ("CROSSSLOT",
  // nothing is sent); kUnavailable when no node could run it within the limits, or when it was
  // sent but no reply came (it may have run).
  Result<Reply> command(const std::vector<std::string>& argv);

  // Like command(), routed by `key` instead of by the keys found in argv: for commands whose
  // keys command_keys() does not know. The caller keeps every key in `key`'s slot.
  Result<Reply> command_for_key(std::string_view key, const std::vector<std::string>& argv);

  // Sends `commands` in one round trip to the primary of their slot and returns one reply per
  // command, in order. Every key of every command must hash to the same slot (kInvalidArgument
  // "CROSSSLOT" otherwise, nothing sent); commands without keys are refused too (they would not
  // be redirected with the others). Redirected commands are sent again to where they were
  // redirected, in their order, after the ones that were not: keep commands that depend on one
  // another on the same key. Errors as command().
  Result<std::vector<Reply>> pipeline(const std::vector<std::vector<std::string>>& commands);

  // Runs `argv` on every primary, in slot order (e.g. FUNCTION LOAD, which is not replicated
  // across shards). Stops at the first node that fails or answers an error reply, and returns
  // that; otherwise the last reply.
  Result<Reply> command_on_all_primaries(const std::vector<std::string>& argv);

  // Runs `argv` on the node "host:port" as is: no routing, no redirects followed, no retry
  // (the reply may be a MOVED error). For administration and tests.
  Result<Reply> command_at(std::string_view endpoint, const std::vector<std::string>& argv);

  // Fetches the slot map again from any known node.
  Status refresh_slots();

  // True when the server is a single Redis without cluster support.
  bool standalone() const;
  // The primary that owns `slot` in the current map ("host:port"), or "" when none does.
  std::string primary_for_slot(std::uint16_t slot) const;
  // The distinct primaries of the current map, in slot order.
  std::vector<std::string> primaries() const;
  const ClusterStats& stats() const;

 private:
  class Impl;
  explicit ClusterClient(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
};

// The positions in argv of a command's keys, by Redis's rules for that command (names are
// case-insensitive): EVAL/EVALSHA/EVAL_RO/EVALSHA_RO/FCALL/FCALL_RO take `numkeys` keys after
// their third word; DEL/UNLINK/EXISTS/TOUCH/MGET/WATCH take every argument; MSET/MSETNX every
// other one; commands of the server, cluster, scripts and functions (PING, INFO, CLUSTER, ...)
// none; every other command its first argument, when it has one. Errors: kInvalidArgument for an
// empty argv or a numkeys that is not a number within the arguments.
Result<std::vector<std::size_t>> command_keys(const std::vector<std::string>& argv);

}  // namespace tally::redis
