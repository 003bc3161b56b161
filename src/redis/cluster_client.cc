// The Redis Cluster client (see cluster_client.h for the design and guarantees). This file and
// its siblings' .cc files are the only code that includes hiredis; hiredis replies are copied
// into owned Reply values before they leave this file.
//
// Every call is a loop over one "batch" (one command, or a pipeline of commands for one slot):
// send the pending commands to the target node, keep the replies that are final, and follow
// the first redirect (or retry) for the others, within the redirect and retry budgets.
#include "redis/cluster_client.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <limits>
#include <optional>
#include <thread>
#include <unordered_map>
#include <utility>

#include <hiredis/hiredis.h>
#include <poll.h>
#include <sys/time.h>

#include "redis/slot.h"

namespace tally::redis {

namespace {

constexpr std::int32_t kNoNode = -1;

struct ContextFree {
  void operator()(redisContext* context) const { redisFree(context); }
};

using ContextPtr = std::unique_ptr<redisContext, ContextFree>;

struct ReplyFree {
  void operator()(redisReply* reply) const { freeReplyObject(reply); }
};

using ReplyPtr = std::unique_ptr<redisReply, ReplyFree>;

timeval to_timeval(std::uint32_t ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms % 1000) * 1000);
  return tv;
}

Reply convert(const redisReply& r) {
  Reply out;
  switch (r.type) {
    case REDIS_REPLY_STRING:
      out.type = Reply::Type::kString;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_STATUS:
      out.type = Reply::Type::kStatus;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_ERROR:
      out.type = Reply::Type::kError;
      out.str.assign(r.str, r.len);
      break;
    case REDIS_REPLY_INTEGER:
      out.type = Reply::Type::kInteger;
      out.integer = static_cast<std::int64_t>(r.integer);
      break;
    case REDIS_REPLY_ARRAY:
      out.type = Reply::Type::kArray;
      out.elements.reserve(r.elements);
      for (std::size_t i = 0; i < r.elements; ++i) {
        out.elements.push_back(convert(*r.element[i]));
      }
      break;
    default:
      out.type = Reply::Type::kNil;
      break;
  }
  return out;
}

bool starts_with(std::string_view s, std::string_view prefix) {
  return s.substr(0, prefix.size()) == prefix;
}

// "host:port" -> (host, port). The last ':' separates them, so "::1:7000" works.
std::optional<std::pair<std::string, int>> parse_endpoint(std::string_view endpoint) {
  std::size_t colon = endpoint.rfind(':');
  if (colon == std::string_view::npos || colon + 1 >= endpoint.size()) {
    return std::nullopt;
  }
  int port = 0;
  std::string_view digits = endpoint.substr(colon + 1);
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), port);
  if (ec != std::errc() || end != digits.data() + digits.size() || port <= 0 || port > 65535) {
    return std::nullopt;
  }
  return std::make_pair(std::string(endpoint.substr(0, colon)), port);
}

std::string make_endpoint(std::string_view host, std::int64_t port) {
  return std::string(host) + ":" + std::to_string(port);
}

enum class Redirect : std::uint8_t { kNone, kMoved, kAsk, kTryAgain, kClusterDown };

// What an error reply asks of the client, and for MOVED/ASK the slot and endpoint it names.
struct RedirectInfo {
  Redirect kind = Redirect::kNone;
  std::string endpoint;  // "host:port"; the host is empty when the node did not know it
};

RedirectInfo classify(const Reply& reply) {
  RedirectInfo info;
  if (!reply.is_error()) {
    return info;
  }
  std::string_view text = reply.str;
  if (starts_with(text, "MOVED ") || starts_with(text, "ASK ")) {
    // "MOVED 3999 127.0.0.1:6381"
    std::size_t last_space = text.rfind(' ');
    info.kind = starts_with(text, "MOVED ") ? Redirect::kMoved : Redirect::kAsk;
    info.endpoint = std::string(text.substr(last_space + 1));
  } else if (starts_with(text, "TRYAGAIN")) {
    info.kind = Redirect::kTryAgain;
  } else if (starts_with(text, "CLUSTERDOWN")) {
    info.kind = Redirect::kClusterDown;
  }
  return info;
}

}  // namespace

class ClusterClient::Impl {
 public:
  explicit Impl(ClusterOptions options) : options_(std::move(options)) {
    slot_owner_.assign(kSlotCount, kNoNode);
  }

  Status init() {
    if (options_.seeds.empty()) {
      return Status::invalid_argument("redis: no seed node given (host:port)");
    }
    for (const std::string& seed : options_.seeds) {
      if (!parse_endpoint(seed)) {
        return Status::invalid_argument("redis: seed '" + seed + "' is not host:port");
      }
      node_index(seed);
    }
    return refresh();
  }

  // ---- routing ----

  // The slot of argv's keys (nullopt for a command without keys), or CROSSSLOT.
  Result<std::optional<std::uint16_t>> slot_of(const std::vector<std::string>& argv) {
    auto keys = command_keys(argv);
    if (!keys) {
      return keys.error();
    }
    std::optional<std::uint16_t> slot;
    for (std::size_t index : *keys) {
      std::uint16_t s = key_slot(argv[index]);
      if (slot && *slot != s) {
        return crossslot(argv[0], *slot, s);
      }
      slot = s;
    }
    return slot;
  }

  static Status crossslot(std::string_view name, std::uint16_t a, std::uint16_t b) {
    return Status::invalid_argument(
        "CROSSSLOT: the keys of '" + std::string(name) + "' map to different slots (" +
        std::to_string(a) + " and " + std::to_string(b) +
        "); the keys of one command or pipeline must share a slot: give them the same {hash tag}");
  }

  Result<std::vector<Reply>> run(std::optional<std::uint16_t> slot,
                                 const std::vector<const std::vector<std::string>*>& commands) {
    std::vector<Reply> replies(commands.size());
    std::vector<std::size_t> pending(commands.size());
    for (std::size_t i = 0; i < pending.size(); ++i) {
      pending[i] = i;
    }
    std::uint32_t redirects = 0;
    std::uint32_t retries = 0;
    std::int32_t target = owner(slot);
    bool asking = false;
    while (!pending.empty()) {
      if (target == kNoNode) {
        if (!retry_allowed(retries)) {
          return Status::unavailable(slot ? "redis: no primary serves slot " +
                                                std::to_string(*slot) + " (is the cluster down?)"
                                          : std::string("redis: no node is known"));
        }
        refresh().ignore_error();  // the next turn fails again if it found nothing
        target = owner(slot);
        continue;
      }
      std::vector<const std::vector<std::string>*> batch;
      batch.reserve(pending.size());
      for (std::size_t i : pending) {
        batch.push_back(commands[i]);
      }
      SendResult sent = send(static_cast<std::size_t>(target), batch, asking);
      if (sent.written) {
        stats_.commands += batch.size();
      }
      if (!sent.status.ok()) {
        if (sent.written) {
          // It may have run: never sent again. Learn the map for the next call.
          refresh().ignore_error();
          return sent.status;
        }
        if (!retry_allowed(retries)) {
          return sent.status;
        }
        refresh().ignore_error();
        target = owner(slot);
        asking = false;
        continue;
      }
      std::vector<std::size_t> again;
      RedirectInfo first;
      for (std::size_t k = 0; k < pending.size(); ++k) {
        RedirectInfo info = classify(sent.replies[k]);
        if (info.kind == Redirect::kNone) {
          replies[pending[k]] = std::move(sent.replies[k]);
          continue;
        }
        if (info.kind == Redirect::kMoved) {
          stats_.moved++;
        } else if (info.kind == Redirect::kAsk) {
          stats_.ask++;
        }
        if (first.kind == Redirect::kNone) {
          first = info;
        }
        // Kept in case the budget runs out: then the redirect itself is the answer.
        replies[pending[k]] = std::move(sent.replies[k]);
        again.push_back(pending[k]);
      }
      if (again.empty()) {
        break;
      }
      std::size_t answered_by = static_cast<std::size_t>(target);
      if (first.kind == Redirect::kMoved || first.kind == Redirect::kAsk) {
        if (redirects >= options_.redirects_max) {
          return Status::unavailable(
              "redis: more than " + std::to_string(options_.redirects_max) +
              " redirects for one command (last: " + replies[again.front()].str + ")");
        }
        redirects++;
        std::string endpoint = first.endpoint;
        if (starts_with(endpoint, ":")) {
          endpoint = nodes_[answered_by].host + endpoint;  // the node did not know its address
        }
        if (!parse_endpoint(endpoint)) {
          return Status::unavailable("redis: unreadable redirect '" + replies[again.front()].str +
                                     "'");
        }
        std::int32_t next = static_cast<std::int32_t>(node_index(endpoint));
        if (first.kind == Redirect::kMoved) {
          if (slot) {
            slot_owner_[*slot] = next;
          }
          refresh().ignore_error();
          if (slot && slot_owner_[*slot] == kNoNode) {
            slot_owner_[*slot] = next;
          }
          asking = false;
        } else {
          asking = true;
        }
        target = next;
      } else {
        if (!retry_allowed(retries)) {
          break;  // the TRYAGAIN / CLUSTERDOWN error replies are the answers
        }
        if (first.kind == Redirect::kClusterDown) {
          refresh().ignore_error();
        }
        target = owner(slot);
        asking = false;
      }
      pending = std::move(again);
    }
    return replies;
  }

  // ---- the slot map ----

  Status refresh() {
    std::string failures;
    // Nodes with an open connection first: they answered recently.
    std::vector<std::size_t> order;
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (nodes_[i].conn) {
        order.push_back(i);
      }
    }
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (!nodes_[i].conn) {
        order.push_back(i);
      }
    }
    static const std::vector<std::string> kClusterSlots = {"CLUSTER", "SLOTS"};
    for (std::size_t i : order) {
      SendResult sent = send(i, {&kClusterSlots}, false);
      if (!sent.status.ok()) {
        failures += (failures.empty() ? "" : "; ") + sent.status.message();
        continue;
      }
      const Reply& reply = sent.replies.front();
      if (reply.is_error()) {
        if (reply.str.find("cluster support disabled") != std::string::npos) {
          standalone_ = true;
          slot_owner_.assign(kSlotCount, static_cast<std::int32_t>(i));
          stats_.slot_map_refreshes++;
          return Status();
        }
        failures += (failures.empty() ? "" : "; ") + nodes_[i].endpoint + ": " + reply.str;
        continue;
      }
      Status installed = install(i, reply);
      if (installed.ok()) {
        stats_.slot_map_refreshes++;
        return installed;
      }
      failures += (failures.empty() ? "" : "; ") + installed.message();
    }
    return Status::unavailable("redis: no node answered CLUSTER SLOTS (" + failures + ")");
  }

  // Installs a CLUSTER SLOTS reply got from node `from`:
  // [[start, end, [host, port, id, ...], replicas...], ...].
  Status install(std::size_t from, const Reply& reply) {
    if (!reply.is_array()) {
      return Status::unavailable("redis: " + nodes_[from].endpoint +
                                 ": CLUSTER SLOTS answered something other than an array");
    }
    std::vector<std::int32_t> owners(kSlotCount, kNoNode);
    std::size_t covered = 0;
    for (const Reply& range : reply.elements) {
      if (!range.is_array() || range.elements.size() < 3 || !range.elements[0].is_integer() ||
          !range.elements[1].is_integer() || !range.elements[2].is_array() ||
          range.elements[2].elements.size() < 2 || !range.elements[2].elements[0].is_text() ||
          !range.elements[2].elements[1].is_integer()) {
        return Status::unavailable("redis: " + nodes_[from].endpoint +
                                   ": a CLUSTER SLOTS entry has an unexpected shape");
      }
      std::int64_t start = range.elements[0].integer;
      std::int64_t end = range.elements[1].integer;
      if (start < 0 || end < start || end >= kSlotCount) {
        return Status::unavailable("redis: " + nodes_[from].endpoint +
                                   ": CLUSTER SLOTS names slots out of range");
      }
      std::string host = range.elements[2].elements[0].str;
      if (host.empty() || host == "?") {
        host = nodes_[from].host;  // "unknown endpoint": the node we asked
      }
      std::int64_t port = range.elements[2].elements[1].integer;
      if (port <= 0 || port > 65535) {
        return Status::unavailable("redis: " + nodes_[from].endpoint +
                                   ": CLUSTER SLOTS names port " + std::to_string(port));
      }
      auto index = static_cast<std::int32_t>(node_index(make_endpoint(host, port)));
      for (std::int64_t s = start; s <= end; ++s) {
        owners[static_cast<std::size_t>(s)] = index;
      }
      covered += static_cast<std::size_t>(end - start + 1);
    }
    if (covered == 0) {
      return Status::unavailable("redis: " + nodes_[from].endpoint + " serves no slot yet");
    }
    standalone_ = false;
    slot_owner_ = std::move(owners);
    return Status();
  }

  std::int32_t owner(std::optional<std::uint16_t> slot) const {
    if (slot) {
      return slot_owner_[*slot];
    }
    for (std::int32_t o : slot_owner_) {
      if (o != kNoNode) {
        return o;
      }
    }
    return kNoNode;
  }

  std::size_t node_index(const std::string& endpoint) {
    auto it = index_.find(endpoint);
    if (it != index_.end()) {
      return it->second;
    }
    auto parsed = parse_endpoint(endpoint);
    Node node;
    node.endpoint = endpoint;
    if (parsed) {
      node.host = parsed->first;
      node.port = parsed->second;
    }
    nodes_.push_back(std::move(node));
    index_.emplace(endpoint, nodes_.size() - 1);
    return nodes_.size() - 1;
  }

  bool retry_allowed(std::uint32_t& retries) {
    if (retries >= options_.retries_max) {
      return false;
    }
    std::uint64_t delay_ms = static_cast<std::uint64_t>(options_.retry_delay_ms) << retries;
    retries++;
    stats_.retries++;
    std::this_thread::sleep_for(std::chrono::milliseconds(delay_ms));
    return true;
  }

  // ---- connections ----

  struct Node {
    std::string endpoint;
    std::string host;
    int port = 0;
    ContextPtr conn;
  };

  struct SendResult {
    Status status;
    bool written = false;  // the commands were written to the socket: they may have run
    std::vector<Reply> replies;
  };

  Status ensure_connected(Node& node) {
    if (node.conn) {
      // Nothing is expected from the server between calls: a readable socket means the peer
      // closed it (or sent garbage). Open a new one rather than lose the next command to it.
      pollfd pfd{};
      pfd.fd = node.conn->fd;
      pfd.events = POLLIN;
      if (::poll(&pfd, 1, 0) != 0) {
        node.conn.reset();
        stats_.connection_errors++;
      }
    }
    if (node.conn) {
      return Status();
    }
    if (node.port == 0) {
      return Status::unavailable("redis: '" + node.endpoint + "' is not host:port");
    }
    ContextPtr conn(redisConnectWithTimeout(node.host.c_str(), node.port,
                                            to_timeval(options_.connect_timeout_ms)));
    if (!conn) {
      return Status::unavailable("redis: " + node.endpoint + ": cannot allocate a connection");
    }
    if (conn->err != 0) {
      stats_.connection_errors++;
      return Status::unavailable("redis: " + node.endpoint + ": " + conn->errstr);
    }
    if (redisSetTimeout(conn.get(), to_timeval(options_.command_timeout_ms)) != REDIS_OK) {
      stats_.connection_errors++;
      return Status::unavailable("redis: " + node.endpoint + ": cannot set the timeout");
    }
    stats_.connects++;
    node.conn = std::move(conn);
    return Status();
  }

  SendResult send(std::size_t index, const std::vector<const std::vector<std::string>*>& commands,
                  bool asking) {
    Node& node = nodes_[index];
    SendResult result;
    result.status = ensure_connected(node);
    if (!result.status.ok()) {
      return result;
    }
    redisContext* c = node.conn.get();
    static const std::vector<std::string> kAsking = {"ASKING"};
    std::vector<const std::vector<std::string>*> wire;
    for (const auto* argv : commands) {
      if (asking) {
        wire.push_back(&kAsking);
      }
      wire.push_back(argv);
    }
    std::vector<const char*> args;
    std::vector<std::size_t> lens;
    for (const auto* argv : wire) {
      args.clear();
      lens.clear();
      for (const std::string& a : *argv) {
        args.push_back(a.data());
        lens.push_back(a.size());
      }
      if (redisAppendCommandArgv(c, static_cast<int>(args.size()), args.data(), lens.data()) !=
          REDIS_OK) {
        return broken(node, false, "cannot queue the command");
      }
    }
    int done = 0;
    while (done == 0) {
      if (redisBufferWrite(c, &done) != REDIS_OK) {
        return broken(node, false, "write failed");
      }
    }
    result.written = true;
    result.replies.reserve(commands.size());
    for (std::size_t i = 0; i < wire.size(); ++i) {
      void* raw = nullptr;
      if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) {
        return broken(node, true, "no reply");
      }
      ReplyPtr reply(static_cast<redisReply*>(raw));
      if (asking && i % 2 == 0) {
        continue;  // ASKING's +OK (an error here shows up as a MOVED for the command itself)
      }
      result.replies.push_back(convert(*reply));
    }
    return result;
  }

  SendResult broken(Node& node, bool written, std::string_view what) {
    SendResult result;
    std::string detail = node.conn && node.conn->errstr[0] != '\0' ? node.conn->errstr : "";
    node.conn.reset();
    stats_.connection_errors++;
    result.written = written;
    result.status =
        Status::unavailable("redis: " + node.endpoint + ": " + std::string(what) +
                            (detail.empty() ? "" : " (") + detail + (detail.empty() ? "" : ")") +
                            (written ? "; the command was sent and may have run" : ""));
    return result;
  }

  ClusterOptions options_;
  std::vector<Node> nodes_;
  std::unordered_map<std::string, std::size_t> index_;
  std::vector<std::int32_t> slot_owner_;  // node index per slot, kNoNode when unserved
  bool standalone_ = false;
  ClusterStats stats_;
};

Result<std::unique_ptr<ClusterClient>> ClusterClient::connect(ClusterOptions options) {
  auto impl = std::make_unique<Impl>(std::move(options));
  TALLY_TRY(impl->init());
  return std::unique_ptr<ClusterClient>(new ClusterClient(std::move(impl)));
}

ClusterClient::ClusterClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ClusterClient::~ClusterClient() = default;

Result<Reply> ClusterClient::command(const std::vector<std::string>& argv) {
  auto slot = impl_->slot_of(argv);
  if (!slot) {
    return slot.error();
  }
  auto replies = impl_->run(*slot, {&argv});
  if (!replies) {
    return replies.error();
  }
  return std::move(replies->front());
}

Result<Reply> ClusterClient::command_for_key(std::string_view key,
                                             const std::vector<std::string>& argv) {
  if (argv.empty()) {
    return Status::invalid_argument("redis: empty command");
  }
  auto replies = impl_->run(key_slot(key), {&argv});
  if (!replies) {
    return replies.error();
  }
  return std::move(replies->front());
}

Result<std::vector<Reply>> ClusterClient::pipeline(
    const std::vector<std::vector<std::string>>& commands) {
  if (commands.empty()) {
    return std::vector<Reply>{};
  }
  std::optional<std::uint16_t> slot;
  std::vector<const std::vector<std::string>*> batch;
  for (const auto& argv : commands) {
    auto s = impl_->slot_of(argv);
    if (!s) {
      return s.error();
    }
    if (!*s) {
      return Status::invalid_argument("redis: '" + argv[0] +
                                      "' names no key; a pipeline holds commands of one slot");
    }
    if (slot && *slot != **s) {
      return Impl::crossslot(argv[0], *slot, **s);
    }
    slot = *s;
    batch.push_back(&argv);
  }
  return impl_->run(slot, batch);
}

Result<Reply> ClusterClient::command_on_all_primaries(const std::vector<std::string>& argv) {
  if (argv.empty()) {
    return Status::invalid_argument("redis: empty command");
  }
  std::vector<std::string> targets = primaries();
  if (targets.empty()) {
    return Status::unavailable("redis: no primary is known");
  }
  Reply last;
  for (const std::string& endpoint : targets) {
    auto reply = command_at(endpoint, argv);
    if (!reply || reply->is_error()) {
      return reply;
    }
    last = std::move(*reply);
  }
  return last;
}

Result<Reply> ClusterClient::command_at(std::string_view endpoint,
                                        const std::vector<std::string>& argv) {
  if (argv.empty()) {
    return Status::invalid_argument("redis: empty command");
  }
  if (!parse_endpoint(endpoint)) {
    return Status::invalid_argument("redis: '" + std::string(endpoint) + "' is not host:port");
  }
  std::size_t index = impl_->node_index(std::string(endpoint));
  auto sent = impl_->send(index, {&argv}, false);
  if (sent.written) {
    impl_->stats_.commands++;
  }
  if (!sent.status.ok()) {
    return sent.status;
  }
  return std::move(sent.replies.front());
}

Status ClusterClient::refresh_slots() {
  return impl_->refresh();
}

bool ClusterClient::standalone() const {
  return impl_->standalone_;
}

std::string ClusterClient::primary_for_slot(std::uint16_t slot) const {
  if (slot >= kSlotCount) {
    return {};
  }
  std::int32_t o = impl_->slot_owner_[slot];
  return o == kNoNode ? std::string() : impl_->nodes_[static_cast<std::size_t>(o)].endpoint;
}

std::vector<std::string> ClusterClient::primaries() const {
  std::vector<std::string> out;
  std::vector<bool> seen(impl_->nodes_.size(), false);
  for (std::int32_t o : impl_->slot_owner_) {
    if (o != kNoNode && !seen[static_cast<std::size_t>(o)]) {
      seen[static_cast<std::size_t>(o)] = true;
      out.push_back(impl_->nodes_[static_cast<std::size_t>(o)].endpoint);
    }
  }
  return out;
}

const ClusterStats& ClusterClient::stats() const {
  return impl_->stats_;
}

}  // namespace tally::redis
