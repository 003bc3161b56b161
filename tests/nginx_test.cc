// nginx in front of Tally: a real nginx (the Debian package) on loopback asks `tally serve` at
// GET /v1/authorize (auth_request) before it proxies a request to a small upstream, and turns
// Tally's 403 denials into the client's 429 (or 401/403) with the rate-limit headers.
//
// The nginx configuration below is the one docs/nginx.md explains; keep the two alike. Every
// file nginx writes (pid, logs, temp dirs) lives in the test's temp dir, and nginx runs in the
// foreground as one process (daemon off, master_process off), a child of the test stopped by
// its pid. The test is skipped only when no nginx binary is installed (scripts/setup.sh
// installs one).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

constexpr const char* kTallyConfig = R"(
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[enforcement]
default_plan = "small"

[[plans]]
key = "small"
features = ["chat"]
limits = [{ meter = "api_calls", period = "day", amount = 3 }]

[[routes]]
path = "/api/v1/llm/*"
meter = "api_calls"
feature = "chat"

[[routes]]
path = "/api/v1/tts/*"
meter = "api_calls"
feature = "tts"

[[customers]]
id = "acme"
plan = "small"
)";

// The nginx configuration of docs/nginx.md, with the test's paths and ports filled in
// ({{DIR}}, {{PORT}}, {{TALLY_PORT}}, {{APP_PORT}}).
constexpr const char* kNginxConfig = R"(
daemon off;
master_process off;
worker_processes 1;
pid {{DIR}}/nginx.pid;
error_log {{DIR}}/error.log notice;

events {
  worker_connections 64;
}

http {
  access_log {{DIR}}/access.log;
  client_body_temp_path {{DIR}}/client_body;
  proxy_temp_path {{DIR}}/proxy;
  fastcgi_temp_path {{DIR}}/fastcgi;
  uwsgi_temp_path {{DIR}}/uwsgi;
  scgi_temp_path {{DIR}}/scgi;

  upstream tally {
    server 127.0.0.1:{{TALLY_PORT}};
    keepalive 16;
  }
  upstream app {
    server 127.0.0.1:{{APP_PORT}};
  }

  server {
    listen 127.0.0.1:{{PORT}};

    # Tally's answer headers, copied into the client's answer (allowed or denied). add_header
    # skips a header whose value is empty, so only the headers Tally sent appear.
    add_header X-RateLimit-Limit $tally_limit always;
    add_header X-RateLimit-Remaining $tally_remaining always;
    add_header X-RateLimit-Reset $tally_reset always;
    add_header RateLimit-Policy $tally_policy always;
    add_header RateLimit $tally_ratelimit always;
    add_header Retry-After $tally_retry_after always;
    add_header X-Tally-Reason $tally_reason always;

    location /api/ {
      auth_request /_tally;
      auth_request_set $tally_status $upstream_http_x_tally_status;
      auth_request_set $tally_reason $upstream_http_x_tally_reason;
      auth_request_set $tally_limit $upstream_http_x_ratelimit_limit;
      auth_request_set $tally_remaining $upstream_http_x_ratelimit_remaining;
      auth_request_set $tally_reset $upstream_http_x_ratelimit_reset;
      auth_request_set $tally_policy $upstream_http_ratelimit_policy;
      auth_request_set $tally_ratelimit $upstream_http_ratelimit;
      auth_request_set $tally_retry_after $upstream_http_retry_after;
      error_page 403 = @tally_denied;

      proxy_pass http://app;
    }

    location = /_tally {
      internal;
      proxy_pass http://tally/v1/authorize;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URI $request_uri;
      proxy_set_header X-Original-Method $request_method;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }

    location @tally_denied {
      default_type application/json;
      if ($tally_status = 429) {
        return 429 '{"error":"Rate Limit Exceeded","reason":"$tally_reason"}\n';
      }
      if ($tally_status = 401) {
        return 401 '{"error":"Unauthorized","reason":"$tally_reason"}\n';
      }
      return 403 '{"error":"Forbidden","reason":"$tally_reason"}\n';
    }
  }
}
)";

std::string fill(std::string text, const std::vector<std::pair<std::string, std::string>>& vars) {
  for (const auto& [name, value] : vars) {
    const std::string mark = "{{" + name + "}}";
    for (std::size_t at = text.find(mark); at != std::string::npos; at = text.find(mark, at)) {
      text.replace(at, mark.size(), value);
      at += value.size();
    }
  }
  return text;
}

// The nginx binary: $TALLY_NGINX, else the first `nginx` on PATH, /usr/sbin or /usr/local/sbin.
std::string find_nginx() {
  if (const char* env = std::getenv("TALLY_NGINX"); env != nullptr && *env != '\0') {
    return ::access(env, X_OK) == 0 ? env : "";
  }
  std::string dirs = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  dirs += ":/usr/sbin:/usr/local/sbin:/sbin";
  std::stringstream ss(dirs);
  for (std::string dir; std::getline(ss, dir, ':');) {
    if (dir.empty()) {
      continue;
    }
    const std::string path = dir + "/nginx";
    if (::access(path.c_str(), X_OK) == 0) {
      return path;
    }
  }
  return "";
}

// A tiny HTTP upstream on a loopback port: answers every request 200 with a JSON body naming
// the path, one connection at a time (nginx speaks HTTP/1.0 with Connection: close to an
// upstream without keepalive), and counts what reached it.
class StubUpstream {
 public:
  StubUpstream() : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    port_ = acceptor_.local_endpoint().port();
    thread_ = std::thread([this] { run(); });
  }

  ~StubUpstream() {
    stopping_ = true;
    // Wake the blocking accept with a connection of our own.
    boost::system::error_code ec;
    asio::io_context ioc;
    tcp::socket s(ioc);
    s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port_), ec);
    thread_.join();
  }

  StubUpstream(const StubUpstream&) = delete;
  StubUpstream& operator=(const StubUpstream&) = delete;

  std::uint16_t port() const { return port_; }

  int hits() const { return hits_.load(); }

  std::vector<std::string> paths() const {
    std::lock_guard lock(mutex_);
    return paths_;
  }

 private:
  void run() {
    while (!stopping_) {
      boost::system::error_code ec;
      tcp::socket socket(ioc_);
      acceptor_.accept(socket, ec);
      if (ec || stopping_) {
        continue;
      }
      asio::streambuf buf;
      asio::read_until(socket, buf, "\r\n\r\n", ec);
      if (ec) {
        continue;
      }
      std::istream in(&buf);
      std::string method, target, line;
      in >> method >> target;
      // Read the body too (Content-Length only: nginx sends no chunked body to an HTTP/1.0
      // upstream), so closing the socket does not reset the connection under nginx.
      std::size_t body_bytes = 0;
      while (std::getline(in, line) && line != "\r") {
        const auto colon = line.find(':');
        std::string name = line.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        if (colon != std::string::npos && name == "content-length") {
          body_bytes = std::stoul(line.substr(colon + 1));
        }
      }
      if (body_bytes > buf.size()) {
        asio::read(socket, buf, asio::transfer_exactly(body_bytes - buf.size()), ec);
      }
      ++hits_;
      {
        std::lock_guard lock(mutex_);
        paths_.push_back(target);
      }
      const std::string body = "{\"upstream\":true,\"path\":\"" + target + "\"}";
      const std::string response =
          "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
          "Content-Length: " +
          std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
      asio::write(socket, asio::buffer(response), ec);
      socket.shutdown(tcp::socket::shutdown_both, ec);
    }
  }

  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::uint16_t port_ = 0;
  std::thread thread_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> hits_{0};
  mutable std::mutex mutex_;
  std::vector<std::string> paths_;
};

class NginxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    nginx_ = find_nginx();
    if (nginx_.empty()) {
      GTEST_SKIP() << "no nginx binary (PATH, /usr/sbin; or set TALLY_NGINX): "
                      "run scripts/setup.sh to install Debian's nginx";
    }
    tally_ = std::make_unique<TallyServer>(kTallyConfig);
    if (HasFatalFailure()) {
      return;
    }
    admin_ = tally_->client();
    auto key = admin_->request("POST", "/v1/keys", R"({"customer":"acme"})", key_header(kAdminKey));
    ASSERT_EQ(key.status, 201) << key.body;
    key_ = Json(key.body).str("key");
    upstream_ = std::make_unique<StubUpstream>();
    dir_ = make_temp_dir("tally-nginx-");
    ASSERT_FALSE(dir_.empty());
    start_nginx();
  }

  void TearDown() override {
    if (nginx_process_ != nullptr) {
      // Graceful stop, by pid; SIGKILL (in ~ChildProcess) only if it does not go.
      nginx_process_->send_signal(SIGQUIT);
      EXPECT_TRUE(nginx_process_->wait_exit(10000).has_value()) << "nginx did not stop";
      nginx_process_.reset();
    }
    upstream_.reset();
    tally_.reset();
    if (!dir_.empty()) {
      remove_tree(dir_);
    }
  }

  // Writes nginx.conf for a free port and starts nginx; a port taken meanwhile by someone else
  // makes nginx exit at once, and another port is tried.
  void start_nginx() {
    for (int attempt = 0; attempt < 5; ++attempt) {
      port_ = pick_unused_port();
      ASSERT_NE(port_, 0);
      std::ofstream(dir_ + "/nginx.conf")
          << fill(kNginxConfig, {{"DIR", dir_},
                                 {"PORT", std::to_string(port_)},
                                 {"TALLY_PORT", std::to_string(tally_->port())},
                                 {"APP_PORT", std::to_string(upstream_->port())}});
      ProcessOptions o;
      o.executable = nginx_;
      // -e: the error log before the config is read (else the compiled-in /var/log/nginx).
      o.args = {"-p", dir_ + "/", "-c", dir_ + "/nginx.conf", "-e", dir_ + "/error.log"};
      o.log_path = dir_ + "/nginx.out";
      auto p = ChildProcess::start(o);
      ASSERT_TRUE(p.has_value()) << p.error().message();
      nginx_process_ = std::make_unique<ChildProcess>(std::move(*p));
      // Ready when it answers: /_tally is internal, so nginx itself answers 404.
      client_ = std::make_unique<HttpClient>("127.0.0.1", port_, 2000);
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
      while (std::chrono::steady_clock::now() < deadline && nginx_process_->running()) {
        if (client_->request("GET", "/_tally").status == 404) {
          return;
        }
        client_->close();
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      const std::string log =
          read_file(dir_ + "/error.log").value_or("") + read_file(dir_ + "/nginx.out").value_or("");
      nginx_process_->kill_hard();
      nginx_process_->wait_exit(5000);
      nginx_process_.reset();
      if (log.find("Address already in use") == std::string::npos) {
        FAIL() << "nginx did not start:\n" << log;
      }
    }
    FAIL() << "nginx found no free port";
  }

  HttpResponse get(const std::string& target, const std::string& key) {
    std::vector<std::pair<std::string, std::string>> headers;
    if (!key.empty()) {
      headers.emplace_back("x-api-key", key);
    }
    return client_->request("GET", target, {}, headers);
  }

  // The customer's api_calls this month, as Tally's usage API reports it once `expected` is
  // reached or 10 s have passed. Usage is read from committed aggregates, and a check's usage
  // event joins the next group commit after the check is answered (check_durability "async"),
  // so it may lag the answer by a commit.
  std::int64_t usage_api_calls(std::int64_t expected) {
    std::int64_t value = -1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    do {
      auto r = admin_->request("GET", "/v1/customers/acme/usage", {}, key_header(kAdminKey));
      EXPECT_EQ(r.status, 200) << r.body;
      Json j(r.body);
      for (auto m : j["meters"].get_array()) {
        if (m["meter"].get_string().value() == "api_calls") {
          value = m["value"].get_int64().value();
        }
      }
      if (value == expected) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    } while (std::chrono::steady_clock::now() < deadline);
    return value;
  }

  // What the day limit counts now, committed or not (GET /v1/customers/{id}/limits): exact at
  // once, so a request counted by mistake cannot hide behind the commit lag.
  std::int64_t limit_used() {
    auto r = admin_->request("GET", "/v1/customers/acme/limits", {}, key_header(kAdminKey));
    EXPECT_EQ(r.status, 200) << r.body;
    Json j(r.body);
    return j["limits"].at(0)["used"].get_int64().value();
  }

  std::string nginx_;
  std::unique_ptr<TallyServer> tally_;
  std::unique_ptr<HttpClient> admin_;
  std::string key_;
  std::unique_ptr<StubUpstream> upstream_;
  std::string dir_;
  std::uint16_t port_ = 0;
  std::unique_ptr<ChildProcess> nginx_process_;
  std::unique_ptr<HttpClient> client_;
};

TEST_F(NginxTest, LimitBecomes429WithHeadersAndStopsAtNginx) {
  const std::int64_t now_s = std::chrono::duration_cast<std::chrono::seconds>(
                                 std::chrono::system_clock::now().time_since_epoch())
                                 .count();
  for (int i = 0; i < 3; ++i) {
    auto r = get("/api/v1/llm/chat?n=" + std::to_string(i), key_);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(Json(r.body).str("path"), "/api/v1/llm/chat?n=" + std::to_string(i)) << r.body;
    EXPECT_EQ(r.header("X-RateLimit-Limit"), "3");
    EXPECT_EQ(r.header("X-RateLimit-Remaining"), std::to_string(2 - i));
    const std::int64_t reset = std::stoll("0" + r.header("X-RateLimit-Reset"));
    EXPECT_GT(reset, now_s);
    EXPECT_LE(reset, now_s + 86400 + 1);
    EXPECT_EQ(r.header("RateLimit-Policy"), "\"api_calls-day\";q=3;w=86400");
    EXPECT_NE(r.header("RateLimit").find("\"api_calls-day\";r=" + std::to_string(2 - i) + ";t="),
              std::string::npos)
        << r.header("RateLimit");
    EXPECT_EQ(r.header("X-Tally-Reason"), "allowed");
    EXPECT_FALSE(r.has_header("Retry-After"));
  }
  EXPECT_EQ(upstream_->hits(), 3);

  auto denied = get("/api/v1/llm/chat?n=3", key_);
  EXPECT_EQ(denied.status, 429) << denied.body;
  Json body(denied.body);
  ASSERT_TRUE(body.ok()) << denied.body;
  EXPECT_EQ(body.str("error"), "Rate Limit Exceeded");
  EXPECT_EQ(body.str("reason"), "limit_exceeded");
  EXPECT_NE(denied.header("Content-Type").find("application/json"), std::string::npos);
  EXPECT_EQ(denied.header("X-RateLimit-Limit"), "3");
  EXPECT_EQ(denied.header("X-RateLimit-Remaining"), "0");
  EXPECT_FALSE(denied.header("X-RateLimit-Reset").empty());
  EXPECT_FALSE(denied.header("RateLimit").empty());
  EXPECT_EQ(denied.header("X-Tally-Reason"), "limit_exceeded");
  const std::int64_t retry_after = std::stoll("0" + denied.header("Retry-After"));
  EXPECT_GE(retry_after, 1) << "Retry-After: " << denied.header("Retry-After");
  EXPECT_LE(retry_after, 86400);
  // nginx answered it: the upstream never saw the fourth request.
  EXPECT_EQ(upstream_->hits(), 3);

  // A denied request consumes nothing: Tally counted exactly the three that passed.
  EXPECT_EQ(limit_used(), 3);
  EXPECT_EQ(usage_api_calls(3), 3);
  EXPECT_EQ(limit_used(), 3);
}

// nginx's auth subrequest is a GET without the body whatever the original method; Tally reads
// the original method from X-Original-Method. The upstream still gets the whole POST.
TEST_F(NginxTest, PostIsCheckedAndForwardedWithItsBody) {
  const std::string body(20000, 'x');
  auto r = client_->request("POST", "/api/v1/llm/complete", body,
                            {{"x-api-key", key_}, {"content-type", "text/plain"}});
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("X-RateLimit-Remaining"), "2");
  EXPECT_EQ(upstream_->hits(), 1);
  EXPECT_EQ(limit_used(), 1);
  EXPECT_EQ(usage_api_calls(1), 1);
  auto events = admin_->request("GET", "/v1/events?customer=acme", {}, key_header(kAdminKey));
  ASSERT_EQ(events.status, 200) << events.body;
  EXPECT_NE(events.body.find("\"method\":\"POST\""), std::string::npos) << events.body;
  EXPECT_NE(events.body.find("\"route\":\"/api/v1/llm/*\""), std::string::npos) << events.body;
}

TEST_F(NginxTest, RequestWithoutAValidKeyIsRefused) {
  auto none = get("/api/v1/llm/chat", "");
  EXPECT_EQ(none.status, 401) << none.body;
  EXPECT_EQ(Json(none.body).str("reason"), "missing_key") << none.body;

  auto wrong = get("/api/v1/llm/chat", "tk_not_a_real_key_0123456789");
  EXPECT_EQ(wrong.status, 401) << wrong.body;
  EXPECT_EQ(Json(wrong.body).str("reason"), "invalid_key") << wrong.body;

  // Authorization: Bearer is read as well.
  auto bearer =
      client_->request("GET", "/api/v1/llm/chat", {}, {{"Authorization", "Bearer " + key_}});
  EXPECT_EQ(bearer.status, 200) << bearer.body;

  EXPECT_EQ(upstream_->hits(), 1);
  EXPECT_EQ(limit_used(), 1);
  EXPECT_EQ(usage_api_calls(1), 1);
}

TEST_F(NginxTest, FeatureOutsideThePlanIs403) {
  auto r = get("/api/v1/tts/speak", key_);
  EXPECT_EQ(r.status, 403) << r.body;
  EXPECT_EQ(Json(r.body).str("reason"), "feature_not_enabled") << r.body;
  EXPECT_EQ(r.header("X-Tally-Reason"), "feature_not_enabled");
  EXPECT_FALSE(r.has_header("Retry-After"));
  EXPECT_EQ(upstream_->hits(), 0);
  EXPECT_EQ(limit_used(), 0);
  EXPECT_EQ(usage_api_calls(0), 0);
}

TEST_F(NginxTest, UnmeteredPathPassesWithoutCounting) {
  for (int i = 0; i < 5; ++i) {
    auto r = get("/api/v1/status", key_);
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.header("X-Tally-Reason"), "unmetered");
    EXPECT_FALSE(r.has_header("X-RateLimit-Limit"));
  }
  EXPECT_EQ(upstream_->hits(), 5);
  EXPECT_EQ(limit_used(), 0);
  EXPECT_EQ(usage_api_calls(0), 0);
  // The metered route still has its whole quota.
  auto r = get("/api/v1/llm/chat", key_);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("X-RateLimit-Remaining"), "2");
  EXPECT_EQ(upstream_->paths().back(), "/api/v1/llm/chat");
}

}  // namespace
}  // namespace tally::testing
