#include "notify/smtp.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <memory>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include "common/crypto.h"

namespace tally::notify {

namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
namespace beast = boost::beast;
using tcp = net::ip::tcp;
using boost::system::error_code;

namespace {

constexpr std::size_t kReplyBytesMax = 64 * 1024;
constexpr std::size_t kErrorTextMax = 300;

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

std::string clip(std::string s) {
  for (char& c : s) {
    if (static_cast<unsigned char>(c) < 0x20) {
      c = ' ';
    }
  }
  if (s.size() > kErrorTextMax) {
    s.resize(kErrorTextMax);
    s += "...";
  }
  return s;
}

std::string upper(std::string s) {
  for (char& c : s) {
    c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  }
  return s;
}

// One SMTP conversation over a socket that may turn into TLS (STARTTLS).
class Session {
 public:
  explicit Session(const SmtpServer& server)
      : server_(server), tls_context_(ssl::context::tls_client) {}

  SmtpResult send(const std::string& from, const std::vector<std::string>& to,
                  std::string_view message) {
    // The TLS settings go on the context before the stream (and its SSL object) exists.
    if (server_.starttls == StartTls::kRequired) {
      tls_context_.set_verify_mode(ssl::verify_peer);
      error_code ec;
      if (server_.ca_file.empty()) {
        tls_context_.set_default_verify_paths(ec);
      } else {
        tls_context_.load_verify_file(server_.ca_file, ec);
      }
      if (ec) {
        return fail(0, false, io_error("cannot load the trusted certificates", ec));
      }
    }
    stream_ = std::make_unique<beast::ssl_stream<beast::tcp_stream>>(ioc_, tls_context_);
    stream_->next_layer().expires_after(std::chrono::seconds(server_.timeout_seconds));
    if (!connect()) {
      return result_;
    }
    SmtpReply r;
    if (!read_reply(&r) || !expect(r, 220, "the greeting", false)) {
      return result_;
    }
    if (!hello()) {
      return result_;
    }
    if (server_.starttls == StartTls::kRequired) {
      if (!has_extension("STARTTLS")) {
        return fail(0, false,
                    "the server does not offer STARTTLS, which starttls = \"required\" "
                    "needs");
      }
      if (!command("STARTTLS", &r) || !expect(r, 220, "STARTTLS", false) || !handshake() ||
          !hello()) {
        return result_;
      }
    }
    if (!server_.user.empty() && !authenticate()) {
      return result_;
    }
    // The body is UTF-8 text: say so where the server understands it (RFC 6152).
    const std::string body_param = has_extension("8BITMIME") ? " BODY=8BITMIME" : "";
    if (!command("MAIL FROM:<" + from + ">" + body_param, &r) ||
        !expect(r, 250, "MAIL FROM", true)) {
      return result_;
    }
    std::size_t accepted = 0;
    for (const std::string& rcpt : to) {
      if (!command("RCPT TO:<" + rcpt + ">", &r)) {
        return result_;
      }
      if (r.code == 250 || r.code == 251) {
        ++accepted;
      } else if (r.code >= 500) {
        result_.refused.push_back(rcpt);
        last_refusal_ = r;
      } else {
        return fail(r.code, false, "RCPT TO <" + rcpt + ">: " + reply_text(r));
      }
    }
    if (accepted == 0) {
      return fail(last_refusal_.code, true,
                  "every recipient was refused: " + reply_text(last_refusal_));
    }
    if (!command("DATA", &r) || !expect(r, 354, "DATA", true)) {
      return result_;
    }
    if (!write(dot_stuff(message)) || !read_reply(&r) || !expect(r, 250, "the message", true)) {
      return result_;
    }
    result_.delivered = true;
    result_.code = r.code;
    if (!result_.refused.empty()) {
      std::string names;
      for (const auto& n : result_.refused) {
        names += (names.empty() ? "" : ", ") + n;
      }
      result_.error = clip("refused recipients " + names + ": " + reply_text(last_refusal_));
    }
    // The message is stored; how QUIT goes does not matter.
    if (command("QUIT", &r)) {
      error_code ignored;
      stream_->next_layer().socket().shutdown(tcp::socket::shutdown_both, ignored);
    }
    return result_;
  }

 private:
  // Runs one asynchronous operation to its end; the stream's deadline bounds it.
  template <typename Start>
  error_code run(Start start) {
    error_code result;
    start([&result](error_code e, auto&&...) { result = e; });
    ioc_.restart();
    ioc_.run();
    return result;
  }

  SmtpResult fail(int code, bool permanent, std::string error) {
    result_.delivered = false;
    result_.code = code;
    result_.permanent = permanent;
    result_.error = clip(std::move(error));
    return result_;
  }

  std::string io_error(std::string_view what, const error_code& ec) {
    if (ec == beast::error::timeout) {
      return std::string(what) + ": timed out (the exchange may take " +
             std::to_string(server_.timeout_seconds) + "s)";
    }
    return std::string(what) + ": " + ec.message();
  }

  bool connect() {
    tcp::resolver resolver(ioc_);
    tcp::resolver::results_type endpoints;
    error_code ec = run([&](auto handler) {
      resolver.async_resolve(server_.host, std::to_string(server_.port),
                             [&endpoints, handler](error_code e, tcp::resolver::results_type r) {
                               endpoints = std::move(r);
                               handler(e);
                             });
    });
    if (ec) {
      fail(0, false, io_error("cannot resolve " + server_.host, ec));
      return false;
    }
    ec = run([&](auto handler) { stream_->next_layer().async_connect(endpoints, handler); });
    if (ec) {
      fail(0, false,
           io_error("cannot connect to " + server_.host + ":" + std::to_string(server_.port), ec));
      return false;
    }
    return true;
  }

  bool handshake() {
    stream_->set_verify_callback(ssl::host_name_verification(server_.host));
    // SNI, so a server with several names presents the right certificate.
    if (SSL_set_tlsext_host_name(stream_->native_handle(), server_.host.c_str()) != 1) {
      fail(0, false, "cannot set the TLS server name");
      return false;
    }
    const error_code ec =
        run([&](auto handler) { stream_->async_handshake(ssl::stream_base::client, handler); });
    if (ec) {
      fail(0, false, io_error("TLS handshake with " + server_.host, ec));
      return false;
    }
    tls_ = true;
    return true;
  }

  bool write(const std::string& bytes) {
    const error_code ec = run([&](auto handler) {
      if (tls_) {
        net::async_write(*stream_, net::buffer(bytes), handler);
      } else {
        net::async_write(stream_->next_layer(), net::buffer(bytes), handler);
      }
    });
    if (ec) {
      fail(0, false, io_error("cannot send", ec));
      return false;
    }
    return true;
  }

  bool read_reply(SmtpReply* reply) {
    for (;;) {
      const long used = parse_reply(buffer_, reply);
      if (used > 0) {
        buffer_.erase(0, static_cast<std::size_t>(used));
        return true;
      }
      if (used < 0) {
        fail(0, false, "the server's reply is not SMTP: " + buffer_.substr(0, 80));
        return false;
      }
      if (buffer_.size() > kReplyBytesMax) {
        fail(0, false, "the server's reply is longer than 64 KiB");
        return false;
      }
      char chunk[4096];
      std::size_t got = 0;
      const error_code ec = run([&](auto handler) {
        auto done = [&got, handler](error_code e, std::size_t n) {
          got = n;
          handler(e);
        };
        if (tls_) {
          stream_->async_read_some(net::buffer(chunk), done);
        } else {
          stream_->next_layer().async_read_some(net::buffer(chunk), done);
        }
      });
      buffer_.append(chunk, got);
      if (ec && got == 0) {
        fail(0, false, io_error("no answer", ec));
        return false;
      }
    }
  }

  bool command(const std::string& line, SmtpReply* reply) {
    return write(line + "\r\n") && read_reply(reply);
  }

  static std::string reply_text(const SmtpReply& r) {
    std::string out = std::to_string(r.code);
    for (const auto& l : r.lines) {
      out += ' ';
      out += l;
    }
    return out;
  }

  // True when `r` has code `want`. Otherwise records the failure: permanent for a 5xx when
  // `permanent_on_5xx` (the message is refused), else to retry.
  bool expect(const SmtpReply& r, int want, std::string_view step, bool permanent_on_5xx) {
    if (r.code == want) {
      return true;
    }
    fail(r.code, permanent_on_5xx && r.code >= 500,
         std::string(step) + " answered " + reply_text(r));
    return false;
  }

  bool hello() {
    SmtpReply r;
    if (!command("EHLO " + server_.helo_name, &r)) {
      return false;
    }
    extensions_.clear();
    if (r.code == 250) {
      for (std::size_t i = 1; i < r.lines.size(); ++i) {
        extensions_.push_back(upper(r.lines[i]));
      }
      return true;
    }
    // A server without ESMTP: HELO, and no extensions.
    return command("HELO " + server_.helo_name, &r) && expect(r, 250, "HELO", false);
  }

  // The extension line starting with `keyword` ("AUTH PLAIN LOGIN"), or null.
  const std::string* extension(std::string_view keyword) const {
    for (const auto& e : extensions_) {
      if (e.compare(0, keyword.size(), keyword) == 0 &&
          (e.size() == keyword.size() || e[keyword.size()] == ' ' || e[keyword.size()] == '=')) {
        return &e;
      }
    }
    return nullptr;
  }

  bool has_extension(std::string_view keyword) const { return extension(keyword) != nullptr; }

  bool authenticate() {
    const std::string* auth = extension("AUTH");
    auto offers = [auth](std::string_view mechanism) {
      if (auth == nullptr) {
        return false;
      }
      const std::string padded = " " + auth->substr(5) + " ";
      return padded.find(" " + std::string(mechanism) + " ") != std::string::npos;
    };
    SmtpReply r;
    if (offers("PLAIN")) {
      std::string credentials;
      credentials += '\0';
      credentials += server_.user;
      credentials += '\0';
      credentials += server_.password;
      return command("AUTH PLAIN " + common::base64_encode(credentials), &r) &&
             expect(r, 235, "AUTH PLAIN", false);
    }
    if (offers("LOGIN")) {
      return command("AUTH LOGIN", &r) && expect(r, 334, "AUTH LOGIN", false) &&
             command(common::base64_encode(server_.user), &r) &&
             expect(r, 334, "AUTH LOGIN (user)", false) &&
             command(common::base64_encode(server_.password), &r) &&
             expect(r, 235, "AUTH LOGIN", false);
    }
    fail(0, false,
         auth == nullptr ? "a user is set but the server offers no AUTH" +
                               std::string(tls_ ? "" : " (many offer it only after STARTTLS)")
                         : "the server offers neither AUTH PLAIN nor LOGIN: " + *auth);
    return false;
  }

  const SmtpServer& server_;
  net::io_context ioc_;
  ssl::context tls_context_;
  std::unique_ptr<beast::ssl_stream<beast::tcp_stream>> stream_;
  bool tls_ = false;
  std::string buffer_;
  std::vector<std::string> extensions_;
  SmtpReply last_refusal_;
  SmtpResult result_;
};

}  // namespace

SmtpResult send_mail(const SmtpServer& server, const std::string& from,
                     const std::vector<std::string>& to, std::string_view message) {
  try {
    Session session(server);
    return session.send(from, to, message);
  } catch (const std::exception& e) {
    // Asio and OpenSSL throw only when the process runs out of resources (a context that
    // cannot be created); that is a failure of this attempt like any other.
    SmtpResult r;
    r.error = clip(std::string("cannot send: ") + e.what());
    return r;
  }
}

std::string dot_stuff(std::string_view message) {
  std::string out;
  out.reserve(message.size() + message.size() / 32 + 8);
  bool line_start = true;
  for (std::size_t i = 0; i < message.size(); ++i) {
    const char c = message[i];
    if (c == '\r' || c == '\n') {
      if (c == '\r' && i + 1 < message.size() && message[i + 1] == '\n') {
        ++i;
      }
      out += "\r\n";
      line_start = true;
      continue;
    }
    if (line_start && c == '.') {
      out += '.';
    }
    out += c;
    line_start = false;
  }
  if (!line_start) {
    out += "\r\n";
  }
  out += ".\r\n";
  return out;
}

long parse_reply(std::string_view text, SmtpReply* reply) {
  reply->code = 0;
  reply->lines.clear();
  std::size_t pos = 0;
  for (;;) {
    const std::size_t end = text.find("\r\n", pos);
    if (end == std::string_view::npos) {
      return 0;
    }
    const std::string_view line = text.substr(pos, end - pos);
    if (line.size() < 3 || !is_digit(line[0]) || !is_digit(line[1]) || !is_digit(line[2]) ||
        (line.size() > 3 && line[3] != ' ' && line[3] != '-')) {
      return -1;
    }
    const int code = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
    if (reply->code != 0 && code != reply->code) {
      return -1;
    }
    reply->code = code;
    reply->lines.emplace_back(line.size() > 4 ? line.substr(4) : std::string_view());
    pos = end + 2;
    if (line.size() == 3 || line[3] == ' ') {
      return static_cast<long>(pos);
    }
  }
}

}  // namespace tally::notify
