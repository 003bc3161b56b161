// Test fixture support: a real `tally serve` process on a loopback port with a temporary data
// directory, started and stopped by its process id.
#pragma once

#include <fstream>
#include <memory>
#include <string>

#include <gtest/gtest.h>
#include <signal.h>

#include "json_test_util.h"
#include "support/http_client.h"
#include "support/process.h"

namespace tally::testing {

inline constexpr const char* kAdminKey = "test-admin-key-0123456789abcdef";

// The meter most API suites count requests with: api_call events, by service.
inline constexpr const char* kApiCallsMeterToml = R"(
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]
)";

class TallyServer {
 public:
  // Writes `config_toml` to the data dir's parent and starts the server, with `env` added to
  // its environment.
  explicit TallyServer(std::string config_toml, std::string dir = {},
                       std::vector<std::pair<std::string, std::string>> env = {})
      : config_(std::move(config_toml)),
        dir_(dir.empty() ? make_temp_dir("tally-e2e-") : dir),
        owns_dir_(dir.empty()),
        env_(std::move(env)) {
    std::ofstream(dir_ + "/tally.toml") << config_;
    start();
  }

  ~TallyServer() {
    process_.reset();
    if (owns_dir_) {
      remove_tree(dir_);
    }
  }

  void start() {
    std::remove((dir_ + "/port").c_str());
    ProcessOptions o;
    o.executable = TALLY_BINARY;
    o.args = {"serve",    "--config",    dir_ + "/tally.toml", "--data",       dir_ + "/data",
              "--listen", "127.0.0.1:0", "--port-file",        dir_ + "/port", "--threads",
              "2"};
    o.env = env_;
    o.env.emplace_back("TALLY_ADMIN_KEY", kAdminKey);
    o.log_path = dir_ + "/server.log";
    auto p = ChildProcess::start(o);
    ASSERT_TRUE(p.has_value()) << p.error().message();
    process_ = std::make_unique<ChildProcess>(std::move(*p));
    ASSERT_TRUE(wait_for_file(dir_ + "/port", 30000)) << "server did not start: " << log();
    port_ = static_cast<std::uint16_t>(std::stoi(*read_file(dir_ + "/port")));
  }

  // SIGTERM and wait; returns the exit code.
  int stop() {
    process_->send_signal(SIGTERM);
    auto code = process_->wait_exit(30000);
    process_.reset();
    return code.value_or(-1);
  }

  void kill_hard() {
    process_->kill_hard();
    process_->wait_exit(10000);
    process_.reset();
  }

  // True while the process has not been seen to exit (it did not crash or abort).
  bool running() { return process_ != nullptr && process_->running(); }

  std::uint16_t port() const { return port_; }

  pid_t pid() const { return process_ ? process_->pid() : -1; }

  const std::string& dir() const { return dir_; }

  std::string log() const { return read_file(dir_ + "/server.log").value_or(""); }

  std::unique_ptr<HttpClient> client() const {
    return std::make_unique<HttpClient>("127.0.0.1", port_);
  }

 private:
  std::string config_;
  std::string dir_;
  bool owns_dir_;
  std::vector<std::pair<std::string, std::string>> env_;
  std::unique_ptr<ChildProcess> process_;
  std::uint16_t port_ = 0;
};

using Headers = std::vector<std::pair<std::string, std::string>>;

inline Headers key_header(const std::string& key) {
  return {{"x-api-key", key}, {"content-type", "application/json"}};
}

// Runs `tally ARGS...` to completion; returns the exit code and fills `output`.
inline int run_tally(const std::vector<std::string>& args, std::string* output,
                     const std::string& dir) {
  ProcessOptions o;
  o.executable = TALLY_BINARY;
  o.args = args;
  o.log_path = dir + "/cli.log";
  auto p = ChildProcess::start(o);
  if (!p) {
    return -1;
  }
  auto code = p->wait_exit(120000);
  *output = read_file(o.log_path).value_or("");
  return code.value_or(-1);
}

// The fixture of the HTTP API tests: one server per test suite, a client per test, and the
// requests every suite makes. A suite derives from it and starts its server with its own
// configuration:
//
//   class WalletApiTest : public ApiTest {
//    protected:
//     static void SetUpTestSuite() { start_server(kConfig); }
//   };
class ApiTest : public ::testing::Test {
 protected:
  static void start_server(const std::string& config_toml) {
    server_ = new TallyServer(config_toml);
  }

  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }

  void SetUp() override { client_ = server_->client(); }

  HttpResponse admin(std::string_view method, std::string_view target, std::string_view body = {}) {
    return client_->request(method, target, body, key_header(kAdminKey));
  }

  HttpResponse as(const std::string& key, std::string_view method, std::string_view target,
                  std::string_view body = {}) {
    return client_->request(method, target, body, key_header(key));
  }

  // A GET with `key`.
  HttpResponse as(const std::string& key, std::string_view target) {
    return as(key, "GET", target);
  }

  // A new key for `customer` (ingest, check and read scopes).
  std::string customer_key(const std::string& customer) {
    auto r = admin("POST", "/v1/keys", "{\"customer\":\"" + customer + "\"}");
    EXPECT_EQ(r.status, 201) << r.body;
    return Json(r.body).str("key");
  }

  // Asserts a JSON error answer: its status, its code and a part of its message.
  void expect_error(const HttpResponse& r, int status, const std::string& code,
                    const std::string& message_part = "") {
    EXPECT_EQ(r.status, status) << r.body;
    Json j(r.body);
    EXPECT_EQ(j.str("error"), code) << r.body;
    EXPECT_NE(j.str("message").find(message_part), std::string::npos) << r.body;
  }

  // One server per suite: suites run one after another, each starting its own.
  static inline TallyServer* server_ = nullptr;
  std::unique_ptr<HttpClient> client_;
};

}  // namespace tally::testing
