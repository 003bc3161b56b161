// A webhook receiver for tests: a real HTTP/1.1 server on a loopback port, on its own thread,
// that records every request and answers each with the status a test chose (e.g. 500 for the
// first two, then 200). One request per connection.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace tally::testing {

struct ReceivedRequest {
  std::string method;
  std::string target;
  std::vector<std::pair<std::string, std::string>> headers;  // names lower-cased
  std::string body;
  int answered = 0;  // the status it was given

  std::string header(const std::string& lower_name) const;
};

class HttpReceiver {
 public:
  // `status_for(n)` gives the status of the n-th request (0-based). `port` 0 = any free one.
  explicit HttpReceiver(std::function<int(std::size_t)> status_for, std::uint16_t port = 0);
  ~HttpReceiver();
  HttpReceiver(const HttpReceiver&) = delete;
  HttpReceiver& operator=(const HttpReceiver&) = delete;

  std::uint16_t port() const { return port_; }

  std::string url(const std::string& path = "/hook") const;
  std::vector<ReceivedRequest> requests() const;
  // Waits until at least `n` requests arrived; false after `timeout_ms`.
  bool wait_for(std::size_t n, int timeout_ms) const;

 private:
  void serve();
  void handle(int fd);

  std::function<int(std::size_t)> status_for_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopping_{false};
  mutable std::mutex mutex_;
  mutable std::condition_variable cv_;
  std::vector<ReceivedRequest> requests_;
  std::thread thread_;
};

}  // namespace tally::testing
