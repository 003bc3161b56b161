// A small blocking HTTP/1.1 client for tests: one keep-alive connection, reopened when the server
// closed it, and a timeout on every exchange so a broken server fails a test instead of hanging
// it. Errors are reported in the response (status 0, body = what went wrong) rather than as a
// Status, so a test reads `EXPECT_EQ(r.status, 200) << r.body`.
//
// Besides request(), it can write raw bytes and read responses one at a time, for tests of
// malformed requests, pipelining and "Expect: 100-continue".
//
// Thread safety: none; use one client per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tally::testing {

struct HttpResponse {
  int status = 0;  // 0 when no response arrived; `body` then says why
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // names as sent by the server

  // The first header with this name (case-insensitive), or "" when absent.
  std::string header(std::string_view name) const;
  bool has_header(std::string_view name) const;
};

class HttpClient {
 public:
  HttpClient(std::string host, std::uint16_t port, std::uint32_t timeout_ms = 10000);
  ~HttpClient();

  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Sends one request and reads its response. Adds Host and Content-Length (when there is a body
  // or the method is POST, PUT or PATCH) unless `headers` has them. If a reused keep-alive
  // connection turns out closed before any response byte arrives, it reconnects and sends once
  // more, the way browsers do; a fresh connection is never retried.
  HttpResponse request(std::string_view method, std::string_view target, std::string_view body = {},
                       std::vector<std::pair<std::string, std::string>> headers = {});

  // Writes `bytes` verbatim, connecting first if needed. Returns "" on success, else the error.
  std::string send_raw(std::string_view bytes);
  // Reads one response from the current connection (a 100 Continue counts as one). Set
  // `head_request` when it answers a HEAD, whose response has headers but no body.
  HttpResponse read_response(bool head_request = false);
  // True when the server closes the connection (EOF or reset) within `timeout_ms`; bytes that
  // arrive meanwhile are discarded. False when no connection is open.
  bool wait_closed_by_peer(std::uint32_t timeout_ms);

  // Connects from this local IP address (e.g. "127.0.0.2": Linux routes all of 127.0.0.0/8 to
  // the loopback, so tests can be several clients) instead of the one the kernel picks. Takes
  // effect at the next connection.
  void set_local_address(std::string address);

  // Closes the connection; the next request opens a new one.
  void close();
  // How many TCP connections this client has opened so far.
  int connections_opened() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// A port that was free a moment ago (bound to port 0, then released). Prefer passing port 0 to
// the server and reading the port back; this is for processes that cannot report theirs.
std::uint16_t pick_unused_port();

}  // namespace tally::testing
