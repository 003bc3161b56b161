// The HTTP/1.1 server: sockets, framing and connection lifetime, nothing about Tally's API.
//
// It parses requests and hands each one over in two stages. First its head (request line and
// headers, no body) goes to the Admit callback, which may refuse it at once: the body of a
// refused request is never read, so a client without a valid key cannot make the server hold
// megabytes for it. An admitted request's body is then read (after "100 Continue", when the
// client asked for it) and the complete request goes to the Handler the admission named.
// Routing, JSON and authentication live above it (src/http/api.cc, handlers); the server only
// answers on its own when the request never reaches a handler (malformed framing: 400, a
// transfer coding other than chunked: 501, body too large: 413, header too large: 431) or when
// a callback throws (500).
//
// Design. One io_context per worker thread, each run by exactly one thread, so a connection's
// callbacks never run concurrently and need no strand. A single acceptor (on worker 0) deals new
// connections round-robin to the workers. Each connection serves one request at a time (no
// pipelined overlap), keeps the connection alive per HTTP/1.1 rules, and closes after an idle
// timeout. Boost.Asio/Beast stay behind a pimpl so this header is cheap to include.
//
// Connections are bounded three ways, so that idle or slow clients cannot lock others out: a
// total (connections_max), a share per client address (connections_per_address_max; IPv6
// clients are counted per /64), and time: a request head must arrive whole within
// header_timeout_ms of its first byte (or of the connection's opening), a kept-alive
// connection may wait idle_timeout_ms for its next request. Once the live connections reach
// 90% of connections_max, each new connection closes the longest-idle kept-alive connection of
// some worker, so the last tenth stays free for new clients as long as idle ones exist.
//
// Thread safety. start(), port() and stop() are called from one controlling thread; stats()
// from any thread. Admit and the Handlers are called concurrently from the worker threads. A
// Responder or a StreamReady may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tally/status.h"

namespace tally::http {

struct Request {
  std::string method;  // as sent, e.g. "GET"
  // The target in origin form, e.g. "/v1/customers/a%20b?limit=10": as sent, except that an
  // absolute-form target ("http://host:8080/v1/x?q", RFC 9112 3.2.2) keeps only its path and
  // query ("/v1/x?q").
  std::string target;
  std::string path;  // percent-decoded path without the query, e.g. "/v1/customers/a b"
  // Decoded query parameters in the order sent; '+' decodes to a space.
  std::vector<std::pair<std::string, std::string>> query;
  // Header names lower-cased; repeated headers stay separate entries, in order.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;            // empty in the head given to Admit
  std::string remote_address;  // peer IP address, e.g. "127.0.0.1"

  // The first header named `lower_name` (which must be lower case), or nullptr.
  const std::string* header(std::string_view lower_name) const;
  // The first query parameter named `name` (exact match), or nullptr.
  const std::string* query_param(std::string_view name) const;
};

// One piece of a streamed body (see Response::stream).
struct StreamPiece {
  std::string data;   // may be empty
  bool more = false;  // false: this is the last piece
};

// Hands the server the next piece of a streamed body. Call it exactly once, from any thread;
// later calls are ignored, as are calls after the connection closed. An error cuts the response
// short: the status was already sent, so the server closes the connection without the final
// empty chunk, and the client sees a truncated response, never a complete-looking one.
// Dropping every copy without calling it counts as an error.
using StreamReady = std::function<void(Result<StreamPiece>)>;

struct Response {
  unsigned status = 200;
  std::string body;
  std::string content_type = "application/json";
  // Extra headers. The server writes Server, Content-Type, Content-Length, Transfer-Encoding and
  // Connection itself and skips handler-supplied headers with those names.
  std::vector<std::pair<std::string, std::string>> headers;
  // A streamed body, for answers too large to hold in memory. When set, `body` is ignored and
  // the body is sent with chunked transfer encoding (to an HTTP/1.0 client: unframed, and the
  // connection closes after it). The server calls it on the connection's worker thread, once
  // per piece and only after the previous piece was written (so a slow client slows it, and
  // memory stays at one piece), and it answers through `ready`, at once or later from another
  // thread: producing a piece that takes more than a moment belongs on another thread, never
  // on the worker, which serves many connections. Calls are never concurrent. It is destroyed
  // once the body is done or the connection closes.
  std::function<void(StreamReady ready)> stream;
};

// Delivers the response to a request. Call it exactly once, from any thread; later calls are
// ignored, as are calls after the client went away or the server stopped. Dropping every copy
// without calling it answers 500, so a lost request cannot hang its connection.
using Responder = std::function<void(Response)>;

// Called on a worker thread for each complete request. It may answer inline or keep `respond`
// and answer later from another thread; it must not block for long, since it holds up every
// connection on its worker. An exception escaping it is answered with 500.
using Handler = std::function<void(Request&& request, Responder respond)>;

// What the head stage decided about a request (see Admit).
struct Admission {
  // Set: the request is answered with it at once and its body is never read. When a body was
  // still due, the answer says "Connection: close", and the connection is closed after it
  // (what arrives meanwhile is read and discarded, within bounds, so the answer is not lost to
  // a reset).
  std::optional<Response> refusal;
  // Otherwise: called with the complete request once its body has been read. REQUIRES: set.
  Handler handler;
};

// Called on a worker thread with each request's head, before any of its body is read (`body`
// is empty). It must be quick: it decides from the method, target and headers alone. An
// exception escaping it is answered with 500.
using Admit = std::function<Admission(const Request& head)>;

struct ServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;  // 0 = an ephemeral port, see Server::port()
  int threads = 0;            // worker threads; 0 = std::thread::hardware_concurrency()
  std::uint64_t body_bytes_max = 10 << 20;  // larger bodies are answered 413 and closed
  std::uint32_t header_bytes_max = 16384;   // larger request heads are answered 431 and closed
  // A connection waiting this long for its next request is closed.
  std::uint32_t idle_timeout_ms = 60000;
  // A request head that has not arrived whole this long after its first byte (for a new
  // connection: after the connection opened) is dropped with its connection.
  std::uint32_t header_timeout_ms = 10000;
  std::uint32_t connections_max = 10000;  // beyond it, new connections are closed at once
  // Beyond it, a client address's new connections are closed at once (IPv6: per /64 prefix).
  // Behind a reverse proxy every connection comes from the proxy's address.
  std::uint32_t connections_per_address_max = 1000;
  std::uint32_t stop_grace_ms = 3000;  // how long stop() waits for in-flight requests
};

// Counters of the connection limits at work, for metrics. Totals since start().
struct ServerStats {
  std::uint64_t connections_live = 0;
  std::uint64_t refused_connections_max = 0;  // closed at once: connections_max reached
  std::uint64_t refused_per_address = 0;      // closed at once: the address had its share
  std::uint64_t idle_evicted = 0;             // idle keep-alive connections closed to make room
  std::uint64_t header_timeouts = 0;          // connections closed with no complete head in time
};

// How a connection frames a byte stream into requests, without a socket: the same parser
// settings, read algorithm, framing checks, error answers and target decoding as the server's
// connections (of a server whose every request is admitted), over `bytes` delivered at most
// `read_bytes_max` bytes per read (so requests split across reads are framed as they would
// be). For tests and fuzzing (tests/fuzz/http_request_fuzz.cc); the server itself reads sockets.
struct FramedStream {
  std::vector<Request> requests;  // what the handler would be given, in order
  // What the server answers on its own before closing (400 malformed, 413 body too large,
  // 431 header too large, 501 a transfer coding it does not implement) after the last request;
  // 0 when the stream just ends or the last request asked to close.
  unsigned error_status = 0;
  std::string error_body;
};

FramedStream frame_requests(std::string_view bytes, const ServerOptions& options,
                            std::size_t read_bytes_max);

class Server {
 public:
  // Every request is admitted and its whole request handed to `handler`.
  Server(ServerOptions options, Handler handler);
  // Each request's head goes to `admit` first (see Admit).
  Server(ServerOptions options, Admit admit);
  // Stops the server if it is running.
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds, listens and starts the worker threads. Returns kInvalidArgument for bad options,
  // kIOError naming host:port when the address cannot be resolved or bound (e.g. in use).
  // REQUIRES: called at most once.
  Status start();

  // The bound port (the actual one when options.port was 0). 0 before a successful start().
  std::uint16_t port() const;

  // The connection counters. Thread-safe.
  ServerStats stats() const;

  // Stops accepting, closes idle connections, lets in-flight requests finish for up to
  // options.stop_grace_ms, then closes the rest and joins the worker threads. Idempotent.
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally::http
