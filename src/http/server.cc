// The HTTP/1.1 server (see server.h for the contract).
//
// A connection's life. A Session reads a request head (async_read_header, under the header
// deadline), checks its framing, and hands the head to Admit. A refused request is answered at
// once; if a body was due, the answer says "Connection: close" and the rest of what the client
// sends is read and discarded within bounds (kDrainBytesMax, kDrainTimeoutMs) before closing,
// so the answer is not destroyed by a reset. An admitted request's body is read (after
// "100 Continue" when asked) into the parser's string, and the request goes to the admitted
// Handler. After the response, a kept-alive connection waits for its next request's first
// bytes with a plain read (the idle phase: idle timeout, and listed in its worker's idle list,
// oldest first, so it can be closed to make room), then reads the head again.
//
// Lifetime, the subtle part. A Session (one connection) is owned by the asynchronous operations
// pending on it, plus `self_hold_` while it waits for its handler to answer or for a streamed
// body's next piece. Responders and StreamReadys hold only a weak reference, and reach the
// session's worker through that worker's Gate: a mutex-guarded "open" flag that stop() clears
// before the io_contexts are destroyed, so one called late (the engine's commit thread answering
// after shutdown) never posts into freed memory. All sessions are destroyed while their
// io_context still exists: stop() drops every `self_hold_` after joining the threads, and
// destroying each io_context destroys the sessions its pending operations held.
//
// A Responder called inline, inside the handler on the worker thread, skips the Gate: the
// response is stashed and written when the handler returns, with no cross-thread post.
//
// Responses are serialised by hand into a per-connection buffer and written with one gather
// write (head, body): Beast's serializer is general but slower for this one shape. A streamed
// body (Response::stream) is written the same way, one piece per gather write (size line, piece,
// CRLF), asking the stream for the next piece only when the previous write completed; the piece
// always comes back through the Gate, so a producer on another thread and one answering inline
// take the same path.
//
// Connection counts. on_accept (worker 0's thread) takes a ConnectionSlot, counting the
// connection in the total and under its client's address, or closes the socket when either
// bound is reached; the slot, moved into the Session, gives both back when destroyed.
#include "http/server.h"

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>
#include <unordered_map>

#include <boost/asio/buffer.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/read_size.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/system_error.hpp>

#include "common/assert.h"
#include "common/json_writer.h"

namespace tally::http {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;
// The concrete executor, not any_io_executor: every operation is cheaper without type erasure.
using Executor = asio::io_context::executor_type;
using Socket = asio::basic_stream_socket<tcp, Executor>;
using Stream = beast::basic_stream<tcp, Executor, beast::unlimited_rate_policy>;
using Parser = bhttp::request_parser<bhttp::string_body>;

constexpr int kThreadsMax = 256;  // also bounds the worker index folded into request numbers
// A connection's read buffer is shrunk back after a request that grew it beyond this, so a single
// large upload does not pin memory for the rest of a long keep-alive connection.
constexpr std::size_t kBufferKeepBytesMax = 64 * 1024;
// After an error response the rest of the request is read and discarded (up to these bounds)
// before closing: closing with unread data makes the kernel send RST, which can destroy the
// error response before the client reads it.
constexpr std::uint64_t kDrainBytesMax = 4 << 20;
constexpr std::uint32_t kDrainTimeoutMs = 1000;
constexpr std::size_t kDrainChunkBytes = 16 * 1024;
// Pause before accepting again after an accept error (e.g. EMFILE), so it cannot spin.
constexpr std::uint32_t kAcceptRetryMs = 50;
// The share of connections_max kept for new clients: above 100 - this percent, each new
// connection closes one idle kept-alive connection.
constexpr std::uint32_t kReservedPercent = 10;
constexpr std::string_view kContinueResponse = "HTTP/1.1 100 Continue\r\n\r\n";

std::string error_body(std::string_view code, std::string_view message) {
  std::string out;
  out.reserve(32 + code.size() + message.size());
  out += "{\"error\":";
  common::append_json_string(out, code);
  out += ",\"message\":";
  common::append_json_string(out, message);
  out += '}';
  return out;
}

Response error_response(unsigned status, std::string_view code, std::string_view message) {
  Response r;
  r.status = status;
  r.body = error_body(code, message);
  return r;
}

char ascii_lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (ascii_lower(a[i]) != ascii_lower(b[i])) {
      return false;
    }
  }
  return true;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') {
    return c - '0';
  }
  if (c >= 'a' && c <= 'f') {
    return c - 'a' + 10;
  }
  if (c >= 'A' && c <= 'F') {
    return c - 'A' + 10;
  }
  return -1;
}

// Appends the percent-decoding of `in` to `out`. Returns false on a malformed escape or an
// encoded NUL (which no handler should ever have to think about).
bool percent_decode(std::string_view in, bool plus_is_space, std::string& out) {
  out.reserve(out.size() + in.size());
  for (std::size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) {
        return false;
      }
      int hi = hex_value(in[i + 1]);
      int lo = hex_value(in[i + 2]);
      if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
        return false;
      }
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      out += ' ';
    } else {
      out += c;
    }
  }
  return true;
}

// Splits a request target into the decoded path and query, and sets request.target to its
// origin form. Returns false when it is malformed.
bool parse_target(std::string_view target, Request& request) {
  if (target == "*") {  // asterisk-form, OPTIONS only
    request.target = "*";
    request.path = "*";
    return true;
  }
  bool absolute_form = false;
  // Absolute-form ("http://host/path?q"), which proxies send (RFC 9112 3.2.2): the authority
  // is not ours to check; keep only the path and query.
  for (std::string_view scheme : {std::string_view("http://"), std::string_view("https://")}) {
    if (target.size() >= scheme.size() && iequals(target.substr(0, scheme.size()), scheme)) {
      std::size_t start = target.find_first_of("/?", scheme.size());
      target = start == std::string_view::npos ? std::string_view() : target.substr(start);
      absolute_form = true;
      break;
    }
  }
  if (!absolute_form && (target.empty() || target.front() != '/')) {
    return false;
  }
  request.target.clear();
  if (target.empty() || target.front() != '/') {
    request.target = "/";  // "http://host" and "http://host?q" have an empty path
  }
  request.target.append(target.data(), target.size());
  std::size_t question = target.find('?');
  std::string_view path = target.substr(0, question);
  request.path.clear();
  if (path.empty()) {
    request.path = "/";
  } else if (!percent_decode(path, /*plus_is_space=*/false, request.path)) {
    return false;
  }
  if (question == std::string_view::npos) {
    return true;
  }
  std::string_view query = target.substr(question + 1);
  while (!query.empty()) {
    std::size_t amp = query.find('&');
    std::string_view part = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view() : query.substr(amp + 1);
    if (part.empty()) {
      continue;
    }
    std::size_t eq = part.find('=');
    std::string name;
    std::string value;
    if (!percent_decode(part.substr(0, eq), /*plus_is_space=*/true, name)) {
      return false;
    }
    if (eq != std::string_view::npos &&
        !percent_decode(part.substr(eq + 1), /*plus_is_space=*/true, value)) {
      return false;
    }
    request.query.emplace_back(std::move(name), std::move(value));
  }
  return true;
}

// A Host value is uri-host [":" port] (RFC 9110 7.2); it may be empty.
bool valid_host(std::string_view host) {
  return std::all_of(host.begin(), host.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("-._~!$&'()*+,;=:[]%").find(c) != std::string_view::npos;
  });
}

std::string_view trim_ows(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// The framing rules of RFC 9112 that Beast's parser leaves to its user, checked on the head
// before anything else happens to the request. Returns the answer to close with, if any.
std::optional<Response> framing_error(const bhttp::request<bhttp::string_body>& message) {
  // Host (RFC 9112 3.2): exactly one in HTTP/1.1, never more than one.
  const std::size_t hosts = message.count(bhttp::field::host);
  if (hosts > 1) {
    return error_response(400, "BAD_REQUEST", "more than one Host header");
  }
  if (hosts == 0 && message.version() >= 11) {
    return error_response(400, "BAD_REQUEST", "an HTTP/1.1 request needs a Host header");
  }
  if (hosts == 1) {
    auto host = message[bhttp::field::host];
    if (!valid_host(std::string_view(host.data(), host.size()))) {
      return error_response(400, "BAD_REQUEST", "malformed Host header");
    }
  }
  // Transfer-Encoding (RFC 9112 6.1, 6.3, 7): the only coding understood is chunked, and it
  // must come last (else the body's end cannot be found), once. Beast takes a body as chunked
  // whenever chunked is last, whatever precedes it, and as absent when chunked is not last.
  if (message.count(bhttp::field::transfer_encoding) == 0) {
    return std::nullopt;
  }
  if (message.version() < 11) {
    return error_response(400, "BAD_REQUEST", "Transfer-Encoding is not defined in HTTP/1.0");
  }
  std::vector<std::string_view> codings;
  for (const auto& field : message) {
    if (field.name() != bhttp::field::transfer_encoding) {
      continue;
    }
    std::string_view list(field.value().data(), field.value().size());
    while (!list.empty()) {
      const std::size_t comma = list.find(',');
      std::string_view coding = trim_ows(list.substr(0, comma));
      list = comma == std::string_view::npos ? std::string_view() : list.substr(comma + 1);
      if (!coding.empty()) {
        codings.push_back(coding);
      }
    }
  }
  if (codings.empty() || !iequals(codings.back(), "chunked")) {
    return error_response(400, "BAD_REQUEST",
                          "Transfer-Encoding must end with chunked, or the body's length is "
                          "unknown");
  }
  for (std::size_t i = 0; i + 1 < codings.size(); ++i) {
    if (iequals(codings[i], "chunked")) {
      return error_response(400, "BAD_REQUEST", "Transfer-Encoding applies chunked twice");
    }
  }
  if (codings.size() > 1) {
    return error_response(501, "NOT_IMPLEMENTED",
                          "transfer coding '" + std::string(codings.front()) +
                              "' is not supported; send the body with Transfer-Encoding: "
                              "chunked alone");
  }
  return std::nullopt;
}

// The parser of each request of a connection.
void configure_parser(Parser& parser, const ServerOptions& options) {
  parser.header_limit(options.header_bytes_max);
  parser.body_limit(options.body_bytes_max);
}

// The head of a request as its handler sees it (method, headers with lower-cased names, the
// decoded target), or the answer to close with when its framing or its target is malformed.
std::optional<Response> read_head(const bhttp::request<bhttp::string_body>& message,
                                  Request& head) {
  if (auto error = framing_error(message)) {
    return error;
  }
  auto method = message.method_string();
  head.method.assign(method.data(), method.size());
  head.headers.reserve(static_cast<std::size_t>(std::distance(message.begin(), message.end())));
  for (const auto& field : message) {
    auto name = field.name_string();
    auto value = field.value();
    std::string lower(name.data(), name.size());
    std::transform(lower.begin(), lower.end(), lower.begin(), ascii_lower);
    head.headers.emplace_back(std::move(lower), std::string(value.data(), value.size()));
  }
  auto target = message.target();
  if (!parse_target(std::string_view(target.data(), target.size()), head)) {
    return error_response(400, "BAD_REQUEST", "malformed request target");
  }
  return std::nullopt;
}

// What a connection answers when reading a request failed; nothing when it just closes (the
// client went away, a socket error, a deadline).
std::optional<Response> read_failure(const ErrorCode& ec, const ServerOptions& options) {
  if (ec == bhttp::error::body_limit) {
    return error_response(
        413, "PAYLOAD_TOO_LARGE",
        "request body exceeds " + std::to_string(options.body_bytes_max) + " bytes");
  }
  if (ec == bhttp::error::header_limit) {
    return error_response(
        431, "HEADER_TOO_LARGE",
        "request header exceeds " + std::to_string(options.header_bytes_max) + " bytes");
  }
  if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message ||
      ec == bhttp::error::buffer_overflow) {
    return std::nullopt;  // the client went away, possibly mid-request: nobody to answer
  }
  if (ec.category() == bhttp::make_error_code(bhttp::error::bad_target).category()) {
    return error_response(400, "BAD_REQUEST", "malformed HTTP request: " + ec.message());
  }
  return std::nullopt;
}

// The key a client's connections are counted under: its IPv4 address, or the /64 prefix of its
// IPv6 address (one host usually holds a whole /64).
std::string address_key(const asio::ip::address& address) {
  std::string key;
  if (address.is_v6() && !address.to_v6().is_v4_mapped()) {
    const auto bytes = address.to_v6().to_bytes();
    key = "6";
    key.append(reinterpret_cast<const char*>(bytes.data()), 8);
    return key;
  }
  const auto v4 = address.is_v4() ? address.to_v4()
                                  : asio::ip::make_address_v4(asio::ip::v4_mapped, address.to_v6());
  const auto bytes = v4.to_bytes();
  key = "4";
  key.append(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  return key;
}

bool header_safe(std::string_view s) {
  return std::none_of(s.begin(), s.end(), [](char c) { return c == '\r' || c == '\n' || c == 0; });
}

// Headers the server writes itself; a handler's copy of one would make the framing ambiguous.
bool reserved_header(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "content-type") ||
         iequals(name, "connection") || iequals(name, "server") ||
         iequals(name, "transfer-encoding");
}

void append_hex(std::string& out, std::uint64_t v) {
  char digits[16];
  int n = 0;
  do {
    digits[n++] = "0123456789abcdef"[v % 16];
    v /= 16;
  } while (v != 0);
  while (n > 0) {
    out += digits[--n];
  }
}

void append_decimal(std::string& out, std::uint64_t v) {
  char digits[20];
  int n = 0;
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  while (n > 0) {
    out += digits[--n];
  }
}

class Session;

// The way from any thread into a worker's io_context, closed by stop() before it is destroyed.
struct Gate {
  explicit Gate(Executor e) : executor(e) {}

  template <typename F>
  void post(F&& f) {
    std::lock_guard<std::mutex> lock(mu);
    if (open) {
      asio::post(executor, std::forward<F>(f));
    }
  }

  std::mutex mu;
  bool open = true;  // guarded by mu
  Executor executor;
};

struct Worker {
  explicit Worker(std::uint64_t i)
      : index(i), ioc(1), gate(std::make_shared<Gate>(ioc.get_executor())) {}

  // A request number unique across all workers: a Responder compares it against the request its
  // session is serving now, and session memory can be reused by any worker.
  std::uint64_t next_request_seq() { return (request_counter++ << 8) | index; }

  // Declared before ioc so they outlive it: sessions destroyed along with the io_context's
  // pending operations unlink themselves from these lists.
  Session* sessions_head = nullptr;   // all live sessions of this worker; worker thread only
  Session* idle_head = nullptr;       // sessions in their idle phase, longest idle first
  Session* idle_tail = nullptr;       // the most recently idle; worker thread only
  bool stopping = false;              // worker thread only
  const std::uint64_t index;          // < kThreadsMax <= 256, so it fits the low 8 bits
  std::uint64_t request_counter = 1;  // worker thread only
  asio::io_context ioc;
  std::shared_ptr<Gate> gate;
  std::thread thread;
};

// The session whose handler is running on this thread, for the inline-response fast path.
thread_local Session* tls_dispatching = nullptr;

// What every session needs from the server. Outlives all sessions (see stop()).
struct Shared {
  Shared(ServerOptions o, Admit a, Handler h)
      : options(std::move(o)), admit(std::move(a)), handler(std::move(h)) {}

  // Counts a new connection from `address` unless a bound is reached. Accept thread only.
  bool take_slot(const std::string& address) {
    std::lock_guard<std::mutex> lock(addresses_mu);
    if (live_connections.load(std::memory_order_acquire) >= options.connections_max) {
      refused_connections_max.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    std::uint32_t& n = connections_by_address[address];
    if (n >= options.connections_per_address_max) {
      if (n == 0) {
        connections_by_address.erase(address);
      }
      refused_per_address.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
    ++n;
    live_connections.fetch_add(1, std::memory_order_acq_rel);
    return true;
  }

  void give_back_slot(const std::string& address) {
    std::lock_guard<std::mutex> lock(addresses_mu);
    auto it = connections_by_address.find(address);
    const bool counted = it != connections_by_address.end() && it->second > 0;
    TALLY_BUG(counted, "a connection slot given back that was not taken");
    if (counted && --it->second == 0) {
      connections_by_address.erase(it);
    }
    live_connections.fetch_sub(1, std::memory_order_acq_rel);
  }

  const ServerOptions options;
  const Admit admit;      // empty: every request is admitted to `handler`
  const Handler handler;  // empty when `admit` is set
  // Sessions alive, plus accepted ones in transit; read without the lock by stop() and stats().
  std::atomic<std::uint32_t> live_connections{0};
  std::mutex addresses_mu;
  std::unordered_map<std::string, std::uint32_t> connections_by_address;  // guarded
  std::atomic<std::uint64_t> refused_connections_max{0};
  std::atomic<std::uint64_t> refused_per_address{0};
  std::atomic<std::uint64_t> idle_evicted{0};
  std::atomic<std::uint64_t> header_timeouts{0};
};

// A connection's place in the counts of Shared, given back when destroyed (with its Session, or
// with the accepted socket when the session never started).
class ConnectionSlot {
 public:
  ConnectionSlot(Shared* shared, std::string address)
      : shared_(shared), address_(std::move(address)) {}

  ConnectionSlot(ConnectionSlot&& other) noexcept
      : shared_(std::exchange(other.shared_, nullptr)), address_(std::move(other.address_)) {}

  ConnectionSlot& operator=(ConnectionSlot&&) = delete;
  ConnectionSlot(const ConnectionSlot&) = delete;
  ConnectionSlot& operator=(const ConnectionSlot&) = delete;

  ~ConnectionSlot() {
    if (shared_ != nullptr) {
      shared_->give_back_slot(address_);
    }
  }

 private:
  Shared* shared_;
  std::string address_;
};

}  // namespace

class Server::Impl {
 public:
  Impl(ServerOptions options, Admit admit, Handler handler)
      : shared_(std::move(options), std::move(admit), std::move(handler)),
        options_(shared_.options) {}

  ~Impl() { stop(); }

  Status start();
  void stop();

  std::uint16_t port() const { return port_; }

  ServerStats stats() const {
    ServerStats s;
    s.connections_live = shared_.live_connections.load(std::memory_order_relaxed);
    s.refused_connections_max = shared_.refused_connections_max.load(std::memory_order_relaxed);
    s.refused_per_address = shared_.refused_per_address.load(std::memory_order_relaxed);
    s.idle_evicted = shared_.idle_evicted.load(std::memory_order_relaxed);
    s.header_timeouts = shared_.header_timeouts.load(std::memory_order_relaxed);
    return s;
  }

 private:
  // Opens, binds and listens acceptor_ on `endpoint` (named `where` in errors) and reads the
  // bound port; on failure acceptor_ is reset.
  Status open_acceptor(const tcp::endpoint& endpoint, const std::string& where);
  void accept_next();
  void on_accept(const ErrorCode& ec, Socket socket, Worker& worker);
  void start_session(Worker& worker, Socket socket, ConnectionSlot slot);
  // On worker `index`'s thread: closes its longest-idle session, or passes the request on to
  // the next worker when it has none, until every worker was asked once.
  void evict_idle(std::size_t index, std::size_t asked);

  Shared shared_;
  const ServerOptions& options_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::optional<tcp::acceptor> acceptor_;           // on workers_[0]
  std::optional<asio::steady_timer> accept_timer_;  // on workers_[0]
  std::size_t next_worker_ = 0;                     // workers_[0]'s thread only
  std::size_t next_evict_worker_ = 0;               // workers_[0]'s thread only
  std::uint16_t port_ = 0;
  bool started_ = false;
  bool stopped_ = false;
};

namespace {

class Session : public std::enable_shared_from_this<Session> {
 public:
  Session(Shared& server, Worker& worker, Socket socket, ConnectionSlot slot)
      : server_(server), worker_(worker), stream_(std::move(socket)), slot_(std::move(slot)) {
    ErrorCode ec;
    auto remote = stream_.socket().remote_endpoint(ec);
    if (!ec) {
      remote_address_ = remote.address().to_string();
    }
    next_ = worker_.sessions_head;
    if (next_ != nullptr) {
      next_->prev_ = this;
    }
    worker_.sessions_head = this;
  }

  ~Session() {
    unlink_idle();
    if (prev_ != nullptr) {
      prev_->next_ = next_;
    } else {
      worker_.sessions_head = next_;
    }
    if (next_ != nullptr) {
      next_->prev_ = prev_;
    }
  }

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  Session* next() const { return next_; }

  Session* idle_next() const { return idle_next_; }

  // A new connection: its first head is due within the header deadline from now.
  void start() { read_header(); }

  // A response for request `seq` arrived through the Gate. Stale or duplicate ones are ignored.
  void deliver(std::uint64_t seq, Response&& response) {
    if (state_ != State::kHandling || seq != seq_) {
      return;
    }
    self_hold_.reset();  // the caller holds a reference for the duration of this call
    write_response(std::move(response), /*close_after=*/false, /*drain=*/false);
  }

  // A response given inside the handler; written when the handler returns.
  void stash(std::uint64_t seq, Response&& response) {
    if (state_ == State::kHandling && seq == seq_ && !stash_) {
      stash_.emplace(std::move(response));
    }
  }

  // A streamed body's piece number `n` arrived through the Gate. Stale ones are ignored.
  void deliver_piece(std::uint64_t n, Result<StreamPiece>&& piece) {
    if (state_ != State::kStreaming || n != piece_seq_) {
      return;
    }
    self_hold_.reset();  // the caller holds a reference for the duration of this call
    if (!piece) {
      // Not a bug (e.g. a disk error mid-export): the producer reports it itself.
      streaming_ = false;
      response_.stream = nullptr;
      close();
      return;
    }
    if (piece->data.empty() && piece->more) {
      ask_piece();  // e.g. a page whose rows were all filtered out: ask again
      return;
    }
    write_piece(std::move(piece->data), piece->more);
  }

  // The server is stopping: close now if nothing is in flight, else close after the response.
  void on_server_stop() {
    if (state_ == State::kIdle ||
        (state_ == State::kReading && !reading_body_ && buffer_.size() == 0)) {
      close();
    }
  }

  // Closes an idle session to make room for new connections. Worker thread only.
  void evict() {
    if (state_ == State::kIdle) {
      server_.idle_evicted.fetch_add(1, std::memory_order_relaxed);
      close();
    }
  }

  // Called by stop() after the worker threads have been joined.
  void release() {
    close();
    self_hold_.reset();
  }

 private:
  // kIdle: waiting for the first bytes of the next request. kReading: its head, then its body.
  // kHandling: the handler has it. kWriting: a response (or a piece of one) is being written.
  // kStreaming: waiting for a streamed body's next piece. kClosing: draining, or closed.
  enum class State { kIdle, kReading, kHandling, kWriting, kStreaming, kClosing };

  const ServerOptions& options() const { return server_.options; }

  void link_idle() {
    TALLY_DASSERT(!idle_linked_, "a session listed as idle twice");
    idle_linked_ = true;
    idle_prev_ = worker_.idle_tail;
    idle_next_ = nullptr;
    if (idle_prev_ != nullptr) {
      idle_prev_->idle_next_ = this;
    } else {
      worker_.idle_head = this;
    }
    worker_.idle_tail = this;
  }

  void unlink_idle() {
    if (!idle_linked_) {
      return;
    }
    idle_linked_ = false;
    if (idle_prev_ != nullptr) {
      idle_prev_->idle_next_ = idle_next_;
    } else {
      worker_.idle_head = idle_next_;
    }
    if (idle_next_ != nullptr) {
      idle_next_->idle_prev_ = idle_prev_;
    } else {
      worker_.idle_tail = idle_prev_;
    }
    idle_prev_ = nullptr;
    idle_next_ = nullptr;
  }

  // After a response on a kept-alive connection: the idle phase, until the next request's
  // first bytes arrive (at once when the client pipelined it).
  void wait_for_request() {
    if (worker_.stopping && buffer_.size() == 0) {
      close();
      return;
    }
    if (buffer_.size() > 0) {
      read_header();
      return;
    }
    if (buffer_.capacity() > kBufferKeepBytesMax) {
      buffer_.shrink_to_fit();
    }
    state_ = State::kIdle;
    link_idle();
    stream_.expires_after(std::chrono::milliseconds(options().idle_timeout_ms));
    stream_.async_read_some(buffer_.prepare(beast::read_size(buffer_, kBufferKeepBytesMax)),
                            [self = shared_from_this()](const ErrorCode& ec, std::size_t n) {
                              self->on_idle_read(ec, n);
                            });
  }

  void on_idle_read(const ErrorCode& ec, std::size_t n) {
    unlink_idle();
    if (ec || state_ == State::kClosing) {
      close();  // the idle timeout, the client closing, or an eviction
      return;
    }
    buffer_.commit(n);
    read_header();
  }

  void read_header() {
    state_ = State::kReading;
    reading_body_ = false;
    if (worker_.stopping && buffer_.size() == 0) {
      close();
      return;
    }
    if (buffer_.capacity() > kBufferKeepBytesMax && buffer_.size() == 0) {
      buffer_.shrink_to_fit();
    }
    parser_.emplace();
    configure_parser(*parser_, options());
    stream_.expires_after(std::chrono::milliseconds(options().header_timeout_ms));
    bhttp::async_read_header(
        stream_, buffer_, *parser_,
        [self = shared_from_this()](const ErrorCode& ec, std::size_t) { self->on_header(ec); });
  }

  void on_header(const ErrorCode& ec) {
    if (ec) {
      on_read_error(ec);
      return;
    }
    auto& message = parser_->get();
    keep_alive_ = message.keep_alive();
    version_ = message.version();
    head_request_ = message.method() == bhttp::verb::head;
    const bool body_due = !parser_->is_done();
    Request head;
    if (auto error = read_head(message, head)) {
      fail_request(std::move(*error));
      return;
    }
    head.remote_address = remote_address_;

    Admission admission;
    if (server_.admit) {
      try {
        admission = server_.admit(head);
      } catch (const std::exception& e) {
        admission.refusal =
            error_response(500, "INTERNAL_ERROR", std::string("handler failed: ") + e.what());
      } catch (...) {
        admission.refusal = error_response(500, "INTERNAL_ERROR", "handler failed");
      }
      if (!admission.refusal && !admission.handler) {
        TALLY_BUG(false, "an admission without a refusal or a handler");
        admission.refusal = error_response(500, "INTERNAL_ERROR", "the request was not handled");
      }
      if (admission.refusal) {
        // The body is never read: when one was due, close after the answer (see Admission).
        write_response(std::move(*admission.refusal), /*close_after=*/body_due,
                       /*drain=*/body_due);
        return;
      }
    }
    pending_ = std::move(head);
    pending_handler_ = std::move(admission.handler);
    if (!body_due) {
      dispatch();
      return;
    }
    reading_body_ = true;
    auto expect = message.find(bhttp::field::expect);
    if (message.version() >= 11 && expect != message.end() &&
        iequals(std::string_view(expect->value().data(), expect->value().size()), "100-continue")) {
      // The client waits for this before sending the body (curl does so above 1 KiB); it comes
      // only now that the request was admitted.
      asio::async_write(stream_, asio::buffer(kContinueResponse.data(), kContinueResponse.size()),
                        [self = shared_from_this()](const ErrorCode& write_ec, std::size_t) {
                          if (write_ec) {
                            self->close();
                          } else {
                            self->read_body();
                          }
                        });
      return;
    }
    read_body();
  }

  void read_body() {
    if (state_ == State::kClosing) {
      return;
    }
    stream_.expires_after(std::chrono::milliseconds(options().idle_timeout_ms));
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared_from_this()](const ErrorCode& ec, std::size_t) {
                        if (ec) {
                          self->on_read_error(ec);
                        } else {
                          self->dispatch();
                        }
                      });
  }

  void on_read_error(const ErrorCode& ec) {
    if (state_ == State::kClosing) {
      return;
    }
    if (auto answer = read_failure(ec, options())) {
      fail_request(std::move(*answer));
      return;
    }
    if (ec == beast::error::timeout && !reading_body_) {
      server_.header_timeouts.fetch_add(1, std::memory_order_relaxed);
    }
    close();  // the client went away, a socket error, or a deadline (the socket is closed)
  }

  // Answers a request the handler never saw, then closes: the stream position is unknown.
  void fail_request(Response&& response) {
    head_request_ = false;
    version_ = 11;
    write_response(std::move(response), /*close_after=*/true, /*drain=*/true);
  }

  void dispatch() {
    Request request = std::move(pending_);
    request.body = std::move(parser_->get().body());
    parser_.reset();
    // Moved out, so that what it holds goes when it returns, not with the next request.
    Handler admitted = std::move(pending_handler_);
    pending_handler_ = nullptr;
    const Handler& handler = admitted ? admitted : server_.handler;

    state_ = State::kHandling;
    seq_ = worker_.next_request_seq();
    auto reply = std::make_shared<Reply>(weak_from_this(), this, seq_, worker_.gate);
    tls_dispatching = this;
    try {
      handler(std::move(request),
              [reply](Response response) { reply->respond(std::move(response)); });
    } catch (const std::exception& e) {
      reply->respond(
          error_response(500, "INTERNAL_ERROR", std::string("handler failed: ") + e.what()));
    } catch (...) {
      reply->respond(error_response(500, "INTERNAL_ERROR", "handler failed"));
    }
    // If the handler kept no copy of the Responder, this runs ~Reply, which answers 500 inline.
    reply.reset();
    tls_dispatching = nullptr;

    if (stash_) {
      Response response = std::move(*stash_);
      stash_.reset();
      write_response(std::move(response), /*close_after=*/false, /*drain=*/false);
    } else if (state_ == State::kHandling) {
      self_hold_ = shared_from_this();  // nothing else owns us until the Responder is called
    }
  }

  void write_response(Response&& response, bool close_after, bool drain) {
    state_ = State::kWriting;
    response_ = std::move(response);
    close_after_ = close_after || !keep_alive_ || worker_.stopping;
    drain_ = drain;

    unsigned status = response_.status;
    if (status < 200 || status > 599) {
      TALLY_BUG(status >= 200 && status <= 599, "a handler answered with a non-final status");
      response_ = error_response(500, "INTERNAL_ERROR", "handler answered an invalid status");
      status = 500;
    }
    // 204 and 304 have no body by definition (RFC 9110 6.4.1), so no body headers either.
    const bool bodiless = status == 204 || status == 304;
    if (bodiless) {
      response_.body.clear();
    }

    head_.clear();
    head_ += "HTTP/1.1 ";
    append_decimal(head_, status);
    head_ += ' ';
    auto reason = bhttp::obsolete_reason(static_cast<bhttp::status>(status));
    head_.append(reason.data(), reason.size());
    head_ += "\r\nServer: tally\r\n";
    if (!bodiless) {
      head_ += "Content-Type: ";
      if (header_safe(response_.content_type)) {
        head_ += response_.content_type;
      } else {
        TALLY_BUG(false, "a handler set a content type containing CR, LF or NUL");
        head_ += "text/plain";
      }
      if (response_.stream) {
        response_.body.clear();
        if (version_ >= 11) {
          head_ += "\r\nTransfer-Encoding: chunked\r\n";
        } else {
          head_ += "\r\n";
          close_after_ = true;  // HTTP/1.0 has no chunks: the end of the body is the close
        }
      } else {
        head_ += "\r\nContent-Length: ";
        append_decimal(head_, response_.body.size());
        head_ += "\r\n";
      }
    }
    streaming_ = response_.stream && !bodiless && !head_request_;
    if (!streaming_) {
      response_.stream = nullptr;  // never called: release what it holds now
    }
    chunked_ = version_ >= 11;
    if (close_after_) {
      head_ += "Connection: close\r\n";
    } else if (version_ < 11) {
      head_ += "Connection: keep-alive\r\n";
    }
    for (const auto& [name, value] : response_.headers) {
      if (reserved_header(name)) {
        continue;
      }
      if (name.empty() || !header_safe(name) || !header_safe(value)) {
        TALLY_BUG(false, "a handler set a header containing CR, LF or NUL");
        continue;
      }
      head_ += name;
      head_ += ": ";
      head_ += value;
      head_ += "\r\n";
    }
    head_ += "\r\n";

    std::array<asio::const_buffer, 2> buffers{
        asio::buffer(head_), head_request_ ? asio::const_buffer() : asio::buffer(response_.body)};
    stream_.expires_after(std::chrono::milliseconds(options().idle_timeout_ms));
    asio::async_write(
        stream_, buffers,
        [self = shared_from_this()](const ErrorCode& ec, std::size_t) { self->on_write(ec); });
  }

  void on_write(const ErrorCode& ec) {
    response_.body.clear();
    response_.headers.clear();
    if (ec || state_ == State::kClosing) {
      streaming_ = false;
      response_.stream = nullptr;
      close();
      return;
    }
    if (streaming_) {
      ask_piece();
      return;
    }
    response_.stream = nullptr;
    if (close_after_) {
      ErrorCode ignored;
      stream_.socket().shutdown(tcp::socket::shutdown_send, ignored);
      if (drain_) {
        state_ = State::kClosing;
        drained_bytes_ = 0;
        buffer_.clear();
        stream_.expires_after(std::chrono::milliseconds(kDrainTimeoutMs));
        drain_some();
      } else {
        close();
      }
      return;
    }
    wait_for_request();
  }

  // Asks the response's stream for its next piece; it arrives in deliver_piece.
  void ask_piece() {
    state_ = State::kStreaming;
    const std::uint64_t n = ++piece_seq_;
    auto ready = std::make_shared<PieceReply>(weak_from_this(), n, worker_.gate);
    self_hold_ = shared_from_this();  // nothing else owns us until the piece arrives
    try {
      response_.stream([ready](Result<StreamPiece> piece) { ready->give(std::move(piece)); });
    } catch (const std::exception& e) {
      ready->give(Status::internal(std::string("stream failed: ") + e.what()));
    } catch (...) {
      ready->give(Status::internal("stream failed"));
    }
  }

  // Writes a piece as one chunk (with the final empty chunk after the last piece).
  void write_piece(std::string&& piece, bool more) {
    state_ = State::kWriting;
    response_.body = std::move(piece);  // written as the second buffer
    head_.clear();
    chunk_tail_.clear();
    if (chunked_ && !response_.body.empty()) {
      append_hex(head_, response_.body.size());
      head_ += "\r\n";
      chunk_tail_ = "\r\n";
    }
    if (!more) {
      streaming_ = false;
      response_.stream = nullptr;  // release what it holds before the connection idles
      if (chunked_) {
        chunk_tail_ += "0\r\n\r\n";
      }
    }
    std::array<asio::const_buffer, 3> buffers{asio::buffer(head_), asio::buffer(response_.body),
                                              asio::buffer(chunk_tail_)};
    stream_.expires_after(std::chrono::milliseconds(options().idle_timeout_ms));
    asio::async_write(
        stream_, buffers,
        [self = shared_from_this()](const ErrorCode& ec, std::size_t) { self->on_write(ec); });
  }

  // Reads and discards until the client closes, kDrainBytesMax, or kDrainTimeoutMs.
  void drain_some() {
    stream_.async_read_some(buffer_.prepare(kDrainChunkBytes),
                            [self = shared_from_this()](const ErrorCode& ec, std::size_t n) {
                              self->drained_bytes_ += n;
                              if (ec || self->drained_bytes_ > kDrainBytesMax) {
                                self->close();
                              } else {
                                self->drain_some();
                              }
                            });
  }

  void close() {
    state_ = State::kClosing;
    unlink_idle();
    ErrorCode ignored;
    stream_.socket().shutdown(tcp::socket::shutdown_both, ignored);
    stream_.close();
  }

  // The shared state behind every copy of one request's Responder.
  struct Reply {
    Reply(std::weak_ptr<Session> s, Session* raw, std::uint64_t n, std::shared_ptr<Gate> g)
        : session(std::move(s)), session_raw(raw), seq(n), gate(std::move(g)) {}

    ~Reply() {
      if (!called.load(std::memory_order_acquire)) {
        respond(error_response(500, "INTERNAL_ERROR", "the request was dropped without an answer"));
      }
    }

    void respond(Response response) {
      if (called.exchange(true, std::memory_order_acq_rel)) {
        return;
      }
      if (tls_dispatching == session_raw) {
        // Inside the handler, on the session's own thread: the session is alive and busy.
        session_raw->stash(seq, std::move(response));
        return;
      }
      gate->post([weak = session, n = seq, r = std::move(response)]() mutable {
        if (auto s = weak.lock()) {
          s->deliver(n, std::move(r));
        }
      });
    }

    std::weak_ptr<Session> session;
    Session* session_raw;  // compared only, dereferenced only when it is tls_dispatching
    std::uint64_t seq;
    std::shared_ptr<Gate> gate;
    std::atomic<bool> called{false};
  };

  // The shared state behind every copy of one piece's StreamReady. The piece always goes
  // through the Gate, even when given inline: the session is then inside ask_piece.
  struct PieceReply {
    PieceReply(std::weak_ptr<Session> s, std::uint64_t n, std::shared_ptr<Gate> g)
        : session(std::move(s)), seq(n), gate(std::move(g)) {}

    ~PieceReply() {
      if (!called.load(std::memory_order_acquire)) {
        give(Status::internal("a streamed body's piece was dropped without an answer"));
      }
    }

    void give(Result<StreamPiece> piece) {
      if (called.exchange(true, std::memory_order_acq_rel)) {
        return;
      }
      gate->post([weak = session, n = seq, p = std::move(piece)]() mutable {
        if (auto s = weak.lock()) {
          s->deliver_piece(n, std::move(p));
        }
      });
    }

    std::weak_ptr<Session> session;
    std::uint64_t seq;
    std::shared_ptr<Gate> gate;
    std::atomic<bool> called{false};
  };

  Shared& server_;
  Worker& worker_;
  Stream stream_;
  ConnectionSlot slot_;
  beast::flat_buffer buffer_;  // kept across requests: leftover pipelined bytes live here
  std::optional<Parser> parser_;
  Request pending_;          // the admitted head, while its body is read
  Handler pending_handler_;  // what Admit chose for it (empty: the server's handler)
  std::string remote_address_;
  State state_ = State::kReading;
  bool reading_body_ = false;
  bool keep_alive_ = false;
  bool head_request_ = false;
  bool close_after_ = false;
  bool drain_ = false;
  bool streaming_ = false;    // response_.stream has more pieces to write
  bool chunked_ = false;      // the streamed body is framed as chunks (HTTP/1.1)
  bool idle_linked_ = false;  // in worker_'s idle list
  unsigned version_ = 11;
  std::uint64_t seq_ = 0;
  std::uint64_t piece_seq_ = 0;
  std::uint64_t drained_bytes_ = 0;
  std::optional<Response> stash_;
  Response response_;       // the one being written; its body is the second write buffer
  std::string head_;        // its serialized head (or a chunk's size line); capacity reused
  std::string chunk_tail_;  // a chunk's CRLF, and the final empty chunk
  std::shared_ptr<Session> self_hold_;
  Session* prev_ = nullptr;  // in worker_.sessions_head's list
  Session* next_ = nullptr;
  Session* idle_prev_ = nullptr;  // in worker_.idle_head's list
  Session* idle_next_ = nullptr;
};

void run_worker(Worker& worker) {
  for (;;) {
    try {
      worker.ioc.run();
      return;
    } catch (const std::exception& e) {
      // Handlers catch their own exceptions; this is bad_alloc or a bug. Keep serving.
      std::fprintf(stderr, "tally: http worker caught exception: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "tally: http worker caught unknown exception\n");
    }
  }
}

// The options start() refuses, by what is wrong with them.
Status check_options(const ServerOptions& o) {
  if (o.threads < 0 || o.threads > kThreadsMax) {
    return Status::invalid_argument("http server: threads must be between 0 and " +
                                    std::to_string(kThreadsMax));
  }
  if (o.connections_max == 0 || o.connections_per_address_max == 0 || o.header_bytes_max == 0 ||
      o.idle_timeout_ms == 0 || o.header_timeout_ms == 0) {
    return Status::invalid_argument(
        "http server: connections_max, connections_per_address_max, header_bytes_max, "
        "idle_timeout_ms and header_timeout_ms must be positive");
  }
  return Status();
}

// The worker threads: as many as the options say, or one per core (at most kThreadsMax) for 0.
int thread_count(const ServerOptions& o) {
  if (o.threads != 0) {
    return o.threads;
  }
  return static_cast<int>(
      std::clamp(std::thread::hardware_concurrency(), 1u, static_cast<unsigned>(kThreadsMax)));
}

// Where to listen: the host as an address, else the first address it resolves to. `where`
// names it in the error.
Result<tcp::endpoint> listen_endpoint(const ServerOptions& o, asio::io_context& ioc,
                                      const std::string& where) {
  ErrorCode ec;
  auto address = asio::ip::make_address(o.host, ec);
  if (!ec) {
    return tcp::endpoint(address, o.port);
  }
  tcp::resolver resolver(ioc);
  auto results = resolver.resolve(o.host, std::to_string(o.port), tcp::resolver::passive, ec);
  if (ec || results.empty()) {
    return Status::io_error("http server: cannot resolve " + where + ": " +
                            (ec ? ec.message() : std::string("no addresses")));
  }
  return results.begin()->endpoint();
}

}  // namespace

Status Server::Impl::start() {
  if (started_) {
    return Status::invalid_argument("http server: start() called twice");
  }
  TALLY_TRY(check_options(options_));
  const int threads = thread_count(options_);
  const std::string where = options_.host + ":" + std::to_string(options_.port);
  for (int i = 0; i < threads; ++i) {
    workers_.push_back(std::make_unique<Worker>(static_cast<std::uint64_t>(i)));
  }
  asio::io_context& ioc0 = workers_[0]->ioc;
  Result<tcp::endpoint> endpoint = listen_endpoint(options_, ioc0, where);
  if (Status s = endpoint ? open_acceptor(*endpoint, where) : endpoint.error(); !s.ok()) {
    workers_.clear();
    return s;
  }
  accept_timer_.emplace(ioc0);
  started_ = true;
  asio::post(ioc0, [this] { accept_next(); });
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    w->thread = std::thread([w] {
      auto guard = asio::make_work_guard(w->ioc);
      run_worker(*w);
    });
  }
  return Status();
}

Status Server::Impl::open_acceptor(const tcp::endpoint& endpoint, const std::string& where) {
  ErrorCode ec;
  acceptor_.emplace(workers_[0]->ioc);
  auto fail = [&](const char* step) {
    std::string message =
        "http server: cannot " + std::string(step) + " " + where + ": " + ec.message();
    acceptor_.reset();
    return Status::io_error(std::move(message));
  };
  acceptor_->open(endpoint.protocol(), ec);
  if (ec) {
    return fail("open a socket for");
  }
  // SO_REUSEADDR only lets a restarted server bind over TIME_WAIT leftovers; on Linux it does
  // not let two live listeners share the port, so "address in use" is still reported.
  acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (ec) {
    return fail("configure");
  }
  acceptor_->bind(endpoint, ec);
  if (ec) {
    return fail("bind");
  }
  acceptor_->listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return fail("listen on");
  }
  auto local = acceptor_->local_endpoint(ec);
  if (ec) {
    return fail("read the bound address of");
  }
  port_ = local.port();
  return Status();
}

void Server::Impl::accept_next() {
  Worker& worker = *workers_[next_worker_];
  next_worker_ = (next_worker_ + 1) % workers_.size();
  acceptor_->async_accept(worker.ioc, [this, &worker](const ErrorCode& ec, Socket socket) {
    on_accept(ec, std::move(socket), worker);
  });
}

void Server::Impl::on_accept(const ErrorCode& ec, Socket socket, Worker& worker) {
  if (ec == asio::error::operation_aborted || !acceptor_->is_open()) {
    return;
  }
  if (ec) {
    accept_timer_->expires_after(std::chrono::milliseconds(kAcceptRetryMs));
    accept_timer_->async_wait([this](const ErrorCode& wait_ec) {
      if (!wait_ec && acceptor_->is_open()) {
        accept_next();
      }
    });
    return;
  }
  ErrorCode endpoint_ec;
  const tcp::endpoint remote = socket.remote_endpoint(endpoint_ec);
  if (endpoint_ec) {
    ErrorCode ignored;
    socket.close(ignored);  // the client has gone already
  } else if (std::string address = address_key(remote.address()); !shared_.take_slot(address)) {
    ErrorCode ignored;
    socket.close(ignored);  // over a bound: the client sees the connection closed at once
  } else {
    ConnectionSlot slot(&shared_, std::move(address));
    asio::post(worker.ioc,
               [this, &worker, s = std::move(socket), slot = std::move(slot)]() mutable {
                 start_session(worker, std::move(s), std::move(slot));
               });
    // Above the high-water mark, make room: one idle kept-alive connection closes for each new
    // one, so the reserve stays free for clients that are not connected yet.
    const auto reserve = static_cast<std::uint32_t>(std::uint64_t{options_.connections_max} *
                                                    kReservedPercent / 100);
    if (shared_.live_connections.load(std::memory_order_acquire) >
        options_.connections_max - reserve) {
      const std::size_t first = next_evict_worker_;
      next_evict_worker_ = (next_evict_worker_ + 1) % workers_.size();
      asio::post(workers_[first]->ioc, [this, first] { evict_idle(first, 0); });
    }
  }
  accept_next();
}

void Server::Impl::start_session(Worker& worker, Socket socket, ConnectionSlot slot) {
  ErrorCode ignored;
  socket.set_option(tcp::no_delay(true), ignored);
  auto session = std::make_shared<Session>(shared_, worker, std::move(socket), std::move(slot));
  if (worker.stopping) {
    return;  // dropping the last reference closes the socket and gives back the slot
  }
  session->start();
}

void Server::Impl::evict_idle(std::size_t index, std::size_t asked) {
  Worker& worker = *workers_[index];
  if (worker.stopping) {
    return;
  }
  if (worker.idle_head != nullptr) {
    worker.idle_head->evict();
    return;
  }
  if (asked + 1 < workers_.size()) {
    const std::size_t next = (index + 1) % workers_.size();
    asio::post(workers_[next]->ioc, [this, next, asked] { evict_idle(next, asked + 1); });
  }
}

void Server::Impl::stop() {
  if (!started_ || stopped_) {
    return;
  }
  stopped_ = true;

  asio::post(workers_[0]->ioc, [this] {
    ErrorCode ignored;
    acceptor_->close(ignored);
    accept_timer_->cancel();
  });
  for (auto& worker : workers_) {
    Worker* w = worker.get();
    asio::post(w->ioc, [w] {
      w->stopping = true;
      for (Session* s = w->sessions_head; s != nullptr;) {
        Session* next = s->next();  // on_server_stop may not unlink s, but be safe
        s->on_server_stop();
        s = next;
      }
    });
  }

  // Polling is fine here: it runs once, at shutdown, and is bounded by the grace period.
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.stop_grace_ms);
  while (shared_.live_connections.load(std::memory_order_acquire) > 0 &&
         std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }

  for (auto& worker : workers_) {
    std::lock_guard<std::mutex> lock(worker->gate->mu);
    worker->gate->open = false;
  }
  for (auto& worker : workers_) {
    worker->ioc.stop();
  }
  for (auto& worker : workers_) {
    if (worker->thread.joinable()) {
      worker->thread.join();
    }
  }

  // Single-threaded from here. Free the sessions still waiting for an answer while their
  // io_context exists; destroying each io_context frees the rest.
  for (auto& worker : workers_) {
    std::vector<std::shared_ptr<Session>> waiting;
    for (Session* s = worker->sessions_head; s != nullptr; s = s->next()) {
      if (auto p = s->weak_from_this().lock()) {
        waiting.push_back(std::move(p));
      }
    }
    for (auto& s : waiting) {
      s->release();
    }
  }
  accept_timer_.reset();
  acceptor_.reset();
  workers_.clear();
}

namespace {

// A SyncReadStream over fixed bytes, handing out at most `read_bytes_max` per read, then EOF.
class BytesStream {
 public:
  BytesStream(std::string_view bytes, std::size_t read_bytes_max)
      : rest_(bytes), read_bytes_max_(std::max<std::size_t>(read_bytes_max, 1)) {}

  template <typename MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers, ErrorCode& ec) {
    if (rest_.empty()) {
      ec = asio::error::eof;
      return 0;
    }
    ec = {};
    const std::size_t n = asio::buffer_copy(
        buffers, asio::buffer(rest_.data(), std::min(rest_.size(), read_bytes_max_)));
    rest_.remove_prefix(n);
    return n;
  }

  template <typename MutableBuffers>
  std::size_t read_some(const MutableBuffers& buffers) {
    ErrorCode ec;
    const std::size_t n = read_some(buffers, ec);
    if (ec) {
      throw boost::system::system_error(ec);
    }
    return n;
  }

 private:
  std::string_view rest_;
  const std::size_t read_bytes_max_;
};

}  // namespace

FramedStream frame_requests(std::string_view bytes, const ServerOptions& options,
                            std::size_t read_bytes_max) {
  FramedStream out;
  BytesStream stream(bytes, read_bytes_max);
  beast::flat_buffer buffer;
  auto fail = [&out](Response&& answer) {
    out.error_status = answer.status;
    out.error_body = std::move(answer.body);
  };
  // Each request consumes bytes, so this ends with the input.
  for (;;) {
    Parser parser;
    configure_parser(parser, options);
    ErrorCode ec;
    bhttp::read_header(stream, buffer, parser, ec);
    if (ec) {
      if (auto answer = read_failure(ec, options)) {
        fail(std::move(*answer));
      }
      return out;
    }
    Request request;
    if (auto error = read_head(parser.get(), request)) {
      fail(std::move(*error));
      return out;
    }
    if (!parser.is_done()) {
      bhttp::read(stream, buffer, parser, ec);
      if (ec) {
        if (auto answer = read_failure(ec, options)) {
          fail(std::move(*answer));
        }
        return out;
      }
    }
    const bool keep_alive = parser.get().keep_alive();
    request.body = std::move(parser.get().body());
    out.requests.push_back(std::move(request));
    if (!keep_alive) {
      return out;  // the server closes after answering it
    }
  }
}

const std::string* Request::header(std::string_view lower_name) const {
  for (const auto& [name, value] : headers) {
    if (name == lower_name) {
      return &value;
    }
  }
  return nullptr;
}

const std::string* Request::query_param(std::string_view name) const {
  for (const auto& [key, value] : query) {
    if (key == name) {
      return &value;
    }
  }
  return nullptr;
}

Server::Server(ServerOptions options, Handler handler)
    : impl_(std::make_unique<Impl>(std::move(options), nullptr, std::move(handler))) {}

Server::Server(ServerOptions options, Admit admit)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(admit), nullptr)) {}

Server::~Server() {
  stop();
}

Status Server::start() {
  return impl_->start();
}

std::uint16_t Server::port() const {
  return impl_->port();
}

ServerStats Server::stats() const {
  return impl_->stats();
}

void Server::stop() {
  impl_->stop();
}

}  // namespace tally::http
