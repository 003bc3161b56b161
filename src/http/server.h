// The HTTP/1.1 server: sockets, framing and connection lifetime, nothing about Tally's API.
//
// It parses requests, hands each one to a single Handler, and writes whatever Response the
// handler's Responder is given. Routing, JSON and authentication live above it (src/http/router,
// handlers); the server only answers on its own when the request never reaches a handler
// (malformed: 400, body too large: 413, header too large: 431) or when the handler throws (500).
//
// Design. One io_context per worker thread, each run by exactly one thread, so a connection's
// handlers never run concurrently and need no strand. A single acceptor (on worker 0) deals new
// connections round-robin to the workers. Each connection serves one request at a time (no
// pipelined overlap), keeps the connection alive per HTTP/1.1 rules, and closes after an idle
// timeout. Boost.Asio/Beast stay behind a pimpl so this header is cheap to include.
//
// Thread safety. start(), port() and stop() are called from one controlling thread. The Handler
// is called concurrently from the worker threads. A Responder may be called from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tally/status.h"

namespace tally::http {

struct Request {
  std::string method;  // as sent, e.g. "GET"
  std::string target;  // as sent, e.g. "/v1/customers/a%20b?limit=10"
  std::string path;    // percent-decoded path without the query, e.g. "/v1/customers/a b"
  // Decoded query parameters in the order sent; '+' decodes to a space.
  std::vector<std::pair<std::string, std::string>> query;
  // Header names lower-cased; repeated headers stay separate entries, in order.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::string remote_address;  // peer IP address, e.g. "127.0.0.1"

  // The first header named `lower_name` (which must be lower case), or nullptr.
  const std::string* header(std::string_view lower_name) const;
  // The first query parameter named `name` (exact match), or nullptr.
  const std::string* query_param(std::string_view name) const;
};

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
  // per chunk and only after the previous chunk was written (so a slow client slows it, and
  // memory stays at one chunk): it appends the next piece to `out` and returns true while more
  // follows, false with the last piece. Each call holds up its worker, so it should take
  // milliseconds, not seconds. An error (or exception) comes after the status was sent: the
  // server closes the connection without the final empty chunk, so the client sees a truncated
  // response, never a complete-looking one. It is destroyed once the body is done or the
  // connection closes.
  std::function<Result<bool>(std::string* out)> stream;
};

// Delivers the response to a request. Call it exactly once, from any thread; later calls are
// ignored, as are calls after the client went away or the server stopped. Dropping every copy
// without calling it answers 500, so a lost request cannot hang its connection.
using Responder = std::function<void(Response)>;

// Called on a worker thread for each complete request. It may answer inline or keep `respond`
// and answer later from another thread; it must not block for long, since it holds up every
// connection on its worker. An exception escaping it is answered with 500.
using Handler = std::function<void(Request&& request, Responder respond)>;

struct ServerOptions {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;  // 0 = an ephemeral port, see Server::port()
  int threads = 0;            // worker threads; 0 = std::thread::hardware_concurrency()
  std::uint64_t body_bytes_max = 10 << 20;  // larger bodies are answered 413 and closed
  std::uint32_t header_bytes_max = 16384;   // larger request heads are answered 431 and closed
  std::uint32_t idle_timeout_ms = 60000;    // a connection silent this long is closed
  std::uint32_t connections_max = 10000;    // beyond it, new connections are closed at once
  std::uint32_t stop_grace_ms = 3000;       // how long stop() waits for in-flight requests
};

class Server {
 public:
  Server(ServerOptions options, Handler handler);
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

  // Stops accepting, closes idle connections, lets in-flight requests finish for up to
  // options.stop_grace_ms, then closes the rest and joins the worker threads. Idempotent.
  void stop();

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tally::http
