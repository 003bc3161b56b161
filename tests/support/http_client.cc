// The blocking test client (see http_client.h). Each exchange runs Asio's asynchronous operations
// on a private io_context for at most the timeout, then closes the socket if they have not
// finished: Asio's synchronous calls have no timeout of their own.
#include "support/http_client.h"

#include <algorithm>
#include <chrono>
#include <functional>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>

namespace tally::testing {

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;

constexpr std::uint64_t kResponseBodyBytesMax = 256ull << 20;
constexpr std::uint32_t kResponseHeaderBytesMax = 1 << 20;

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           auto lower = [](char c) {
             return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
           };
           return lower(x) == lower(y);
         });
}

HttpResponse failure(std::string what) {
  HttpResponse r;
  r.status = 0;
  r.body = std::move(what);
  return r;
}

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
  for (const auto& [key, value] : headers) {
    if (iequals(key, name)) {
      return value;
    }
  }
  return {};
}

bool HttpResponse::has_header(std::string_view name) const {
  return std::any_of(headers.begin(), headers.end(),
                     [&](const auto& h) { return iequals(h.first, name); });
}

class HttpClient::Impl {
 public:
  Impl(std::string host, std::uint16_t port, std::uint32_t timeout_ms)
      : host_(std::move(host)), port_(port), timeout_ms_(timeout_ms) {}

  HttpResponse request(std::string_view method, std::string_view target, std::string_view body,
                       const std::vector<std::pair<std::string, std::string>>& headers) {
    std::string bytes;
    bytes.reserve(128 + target.size() + body.size());
    bytes.append(method).append(" ").append(target).append(" HTTP/1.1\r\n");
    auto has = [&](std::string_view name) {
      return std::any_of(headers.begin(), headers.end(),
                         [&](const auto& h) { return iequals(h.first, name); });
    };
    if (!has("host")) {
      bytes.append("Host: ").append(host_).append(":").append(std::to_string(port_)).append("\r\n");
    }
    const bool body_method = method == "POST" || method == "PUT" || method == "PATCH";
    if ((!body.empty() || body_method) && !has("content-length") && !has("transfer-encoding")) {
      bytes.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
    }
    for (const auto& [name, value] : headers) {
      bytes.append(name).append(": ").append(value).append("\r\n");
    }
    bytes.append("\r\n").append(body);

    const bool head = method == "HEAD";
    const bool reused = is_open() && responses_on_connection_ > 0 && !peer_will_close_;
    std::string error = send_raw(bytes);
    if (error.empty()) {
      HttpResponse response = read_final(head);
      if (response.status != 0 || !reused || got_some_) {
        return response;
      }
    } else if (!reused) {
      return failure(error);
    }
    // A reused connection the server had closed before our request reached it: try once more
    // on a fresh one.
    close();
    error = send_raw(bytes);
    if (!error.empty()) {
      return failure(error);
    }
    return read_final(head);
  }

  // Reads past interim (1xx) responses, as a client that sent "Expect: 100-continue" must.
  HttpResponse read_final(bool head_request) {
    for (int interim = 0;; ++interim) {
      HttpResponse response = read_one(head_request);
      if (response.status < 100 || response.status >= 200 || interim >= 8) {
        return response;
      }
    }
  }

  std::string send_raw(std::string_view bytes) {
    if (peer_will_close_) {
      close();
    }
    if (!is_open()) {
      std::string error = connect();
      if (!error.empty()) {
        return error;
      }
    }
    ErrorCode result;
    bool done = false;
    asio::async_write(socket_, asio::buffer(bytes.data(), bytes.size()),
                      [&](const ErrorCode& ec, std::size_t) {
                        result = ec;
                        done = true;
                      });
    if (!run(done)) {
      close();
      return "timeout writing the request";
    }
    if (result) {
      close();
      return "write failed: " + result.message();
    }
    return {};
  }

  HttpResponse read_one(bool head_request) {
    got_some_ = false;
    if (!is_open()) {
      return failure("not connected");
    }
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(kResponseBodyBytesMax);
    parser.header_limit(kResponseHeaderBytesMax);
    if (head_request) {
      parser.skip(true);
    }
    ErrorCode result;
    bool done = false;
    bhttp::async_read(socket_, buffer_, parser, [&](const ErrorCode& ec, std::size_t) {
      result = ec;
      done = true;
    });
    const bool finished = run(done);
    got_some_ = parser.got_some();
    if (!finished) {
      close();
      return failure("timeout reading the response");
    }
    if (result) {
      close();
      return failure("read failed: " + result.message());
    }
    auto& message = parser.get();
    HttpResponse response;
    response.status = static_cast<int>(message.result_int());
    for (const auto& field : message) {
      auto name = field.name_string();
      auto value = field.value();
      response.headers.emplace_back(std::string(name.data(), name.size()),
                                    std::string(value.data(), value.size()));
    }
    response.body = std::move(message.body());
    if (response.status >= 200) {
      ++responses_on_connection_;
      if (!message.keep_alive()) {
        // Leave the socket open so wait_closed_by_peer() can observe the server closing it;
        // the next send reconnects.
        peer_will_close_ = true;
      }
    }
    return response;
  }

  bool wait_closed_by_peer(std::uint32_t timeout_ms) {
    if (!is_open()) {
      return false;
    }
    char scratch[4096];
    bool closed = false;
    bool done = false;
    std::function<void()> read_more;
    read_more = [&] {
      socket_.async_read_some(asio::buffer(scratch), [&](const ErrorCode& ec, std::size_t) {
        if (ec) {
          closed = ec != asio::error::operation_aborted;
          done = true;
        } else {
          read_more();
        }
      });
    };
    buffer_.clear();
    read_more();
    run(done, timeout_ms);
    close();
    return closed;
  }

  void close() {
    ErrorCode ignored;
    socket_.shutdown(tcp::socket::shutdown_both, ignored);
    socket_.close(ignored);
    buffer_.clear();
    peer_will_close_ = false;
    responses_on_connection_ = 0;
  }

  int connections_opened() const { return connections_opened_; }

  void set_local_address(std::string address) { local_address_ = std::move(address); }

 private:
  bool is_open() const { return socket_.is_open(); }

  std::string connect() {
    ErrorCode ec;
    tcp::resolver resolver(ioc_);
    auto endpoints = resolver.resolve(host_, std::to_string(port_), ec);
    if (ec) {
      return "cannot resolve " + host_ + ": " + ec.message();
    }
    ErrorCode result;
    bool done = false;
    if (local_address_.empty()) {
      asio::async_connect(socket_, endpoints,
                          [&](const ErrorCode& connect_ec, const tcp::endpoint&) {
                            result = connect_ec;
                            done = true;
                          });
    } else {
      // A range connect reopens the socket for each endpoint, losing the bind: one endpoint.
      const tcp::endpoint remote = endpoints.begin()->endpoint();
      socket_.open(remote.protocol(), ec);
      asio::ip::address local;
      if (!ec) {
        local = asio::ip::make_address(local_address_, ec);
      }
      if (!ec) {
        socket_.bind(tcp::endpoint(local, 0), ec);
      }
      if (ec) {
        close();
        return "cannot bind to " + local_address_ + ": " + ec.message();
      }
      socket_.async_connect(remote, [&](const ErrorCode& connect_ec) {
        result = connect_ec;
        done = true;
      });
    }
    if (!run(done)) {
      close();
      return "timeout connecting to " + host_ + ":" + std::to_string(port_);
    }
    if (result) {
      close();
      return "cannot connect to " + host_ + ":" + std::to_string(port_) + ": " + result.message();
    }
    socket_.set_option(tcp::no_delay(true), ec);
    ++connections_opened_;
    responses_on_connection_ = 0;
    peer_will_close_ = false;
    return {};
  }

  // Runs the io_context until `done` or the timeout. On timeout it cancels the outstanding
  // operations and lets their handlers run, so no handler outlives the locals it captured.
  bool run(const bool& done, std::uint32_t timeout_ms = 0) {
    ioc_.restart();
    ioc_.run_for(std::chrono::milliseconds(timeout_ms == 0 ? timeout_ms_ : timeout_ms));
    if (done) {
      return true;
    }
    ErrorCode ignored;
    socket_.cancel(ignored);
    ioc_.restart();
    ioc_.run();
    return false;
  }

  std::string local_address_;  // empty: the kernel's choice

  const std::string host_;
  const std::uint16_t port_;
  const std::uint32_t timeout_ms_;
  asio::io_context ioc_{1};
  tcp::socket socket_{ioc_};
  beast::flat_buffer buffer_;
  int connections_opened_ = 0;
  int responses_on_connection_ = 0;
  bool peer_will_close_ = false;
  bool got_some_ = false;
};

HttpClient::HttpClient(std::string host, std::uint16_t port, std::uint32_t timeout_ms)
    : impl_(std::make_unique<Impl>(std::move(host), port, timeout_ms)) {}

HttpClient::~HttpClient() = default;

HttpResponse HttpClient::request(std::string_view method, std::string_view target,
                                 std::string_view body,
                                 std::vector<std::pair<std::string, std::string>> headers) {
  return impl_->request(method, target, body, headers);
}

std::string HttpClient::send_raw(std::string_view bytes) {
  return impl_->send_raw(bytes);
}

HttpResponse HttpClient::read_response(bool head_request) {
  return impl_->read_one(head_request);
}

bool HttpClient::wait_closed_by_peer(std::uint32_t timeout_ms) {
  return impl_->wait_closed_by_peer(timeout_ms);
}

void HttpClient::set_local_address(std::string address) {
  impl_->set_local_address(std::move(address));
}

void HttpClient::close() {
  impl_->close();
}

int HttpClient::connections_opened() const {
  return impl_->connections_opened();
}

std::uint16_t pick_unused_port() {
  asio::io_context ioc;
  tcp::acceptor acceptor(ioc);
  ErrorCode ec;
  tcp::endpoint endpoint(asio::ip::make_address("127.0.0.1"), 0);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) {
    acceptor.bind(endpoint, ec);
  }
  if (ec) {
    return 0;
  }
  auto local = acceptor.local_endpoint(ec);
  return ec ? 0 : local.port();
}

}  // namespace tally::testing
