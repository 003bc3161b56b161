// Which arguments of a command are keys (see command_keys in cluster_client.h): what the client
// routes by. Unknown commands are taken to have their key first, as most Redis commands do; a
// caller with a command of another shape routes it with command_for_key.
#include <cctype>
#include <charconv>
#include <string>
#include <string_view>

#include "redis/cluster_client.h"

namespace tally::redis {

namespace {

std::string upper(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return out;
}

// Commands that name no key: they go to any one primary.
bool is_keyless(const std::string& name) {
  static const char* const kKeyless[] = {
      "PING",      "ECHO",         "INFO",     "TIME",      "DBSIZE",  "FLUSHALL", "FLUSHDB",
      "FUNCTION",  "SCRIPT",       "CLUSTER",  "CONFIG",    "COMMAND", "ASKING",   "READONLY",
      "READWRITE", "HELLO",        "AUTH",     "CLIENT",    "ROLE",    "LASTSAVE", "WAIT",
      "MEMORY",    "SLOWLOG",      "LATENCY",  "RANDOMKEY", "SCAN",    "KEYS",     "SAVE",
      "BGSAVE",    "BGREWRITEAOF", "DEBUG",    "QUIT",      "RESET",   "MULTI",    "EXEC",
      "DISCARD",   "UNWATCH",      "SELECT",   "SWAPDB",    "MONITOR", "ACL",      "MODULE",
      "REPLICAOF", "SLAVEOF",      "SHUTDOWN", "FAILOVER",  "PUBLISH", "PUBSUB",
  };
  for (const char* k : kKeyless) {
    if (name == k) {
      return true;
    }
  }
  return false;
}

}  // namespace

Result<std::vector<std::size_t>> command_keys(const std::vector<std::string>& argv) {
  if (argv.empty()) {
    return Status::invalid_argument("redis: empty command");
  }
  std::string name = upper(argv[0]);
  std::vector<std::size_t> keys;
  if (name == "EVAL" || name == "EVALSHA" || name == "EVAL_RO" || name == "EVALSHA_RO" ||
      name == "FCALL" || name == "FCALL_RO") {
    if (argv.size() < 3) {
      return Status::invalid_argument("redis: " + name + " needs a script and numkeys");
    }
    std::size_t numkeys = 0;
    const std::string& n = argv[2];
    auto [end, ec] = std::from_chars(n.data(), n.data() + n.size(), numkeys);
    if (ec != std::errc() || end != n.data() + n.size() || numkeys > argv.size() - 3) {
      return Status::invalid_argument("redis: " + name + " numkeys '" + n +
                                      "' is not a number of the arguments that follow");
    }
    for (std::size_t i = 0; i < numkeys; ++i) {
      keys.push_back(3 + i);
    }
  } else if (name == "DEL" || name == "UNLINK" || name == "EXISTS" || name == "TOUCH" ||
             name == "MGET" || name == "WATCH") {
    for (std::size_t i = 1; i < argv.size(); ++i) {
      keys.push_back(i);
    }
  } else if (name == "MSET" || name == "MSETNX") {
    for (std::size_t i = 1; i < argv.size(); i += 2) {
      keys.push_back(i);
    }
  } else if (!is_keyless(name) && argv.size() >= 2) {
    keys.push_back(1);
  }
  return keys;
}

}  // namespace tally::redis
