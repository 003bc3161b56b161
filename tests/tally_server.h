// Test fixture support: a real `tally serve` process on a loopback port with a temporary data
// directory, started and stopped by its process id.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>

#include <fstream>
#include <memory>
#include <string>

#include "support/http_client.h"
#include "support/process.h"

namespace tally::testing {

inline constexpr const char* kAdminKey = "test-admin-key-0123456789abcdef";

class TallyServer {
 public:
  // Writes `config_toml` to the data dir's parent and starts the server, with `env` added to
  // its environment.
  explicit TallyServer(std::string config_toml, std::string dir = {},
                       std::vector<std::pair<std::string, std::string>> env = {})
      : config_(std::move(config_toml)), dir_(dir.empty() ? make_temp_dir("tally-e2e-") : dir),
        owns_dir_(dir.empty()), env_(std::move(env)) {
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
    o.args = {"serve", "--config", dir_ + "/tally.toml", "--data", dir_ + "/data",
              "--listen", "127.0.0.1:0", "--port-file", dir_ + "/port", "--threads", "2"};
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

}  // namespace tally::testing
