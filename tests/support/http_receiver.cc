#include "support/http_receiver.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstring>
#include <stdexcept>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace tally::testing {

namespace {

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return s;
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

}  // namespace

std::string ReceivedRequest::header(const std::string& lower_name) const {
  for (const auto& [k, v] : headers) {
    if (k == lower_name) {
      return v;
    }
  }
  return "";
}

HttpReceiver::HttpReceiver(std::function<int(std::size_t)> status_for, std::uint16_t port)
    : status_for_(std::move(status_for)) {
  listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(port);
  if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::listen(listen_fd_, 64) != 0) {
    ::close(listen_fd_);
    throw std::runtime_error(std::string("receiver: cannot listen: ") + std::strerror(errno));
  }
  socklen_t len = sizeof(addr);
  ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len);
  port_ = ntohs(addr.sin_port);
  thread_ = std::thread([this] { serve(); });
}

HttpReceiver::~HttpReceiver() {
  stopping_ = true;
  thread_.join();
  ::close(listen_fd_);
}

std::string HttpReceiver::url(const std::string& path) const {
  return "http://127.0.0.1:" + std::to_string(port_) + path;
}

std::vector<ReceivedRequest> HttpReceiver::requests() const {
  std::lock_guard lock(mutex_);
  return requests_;
}

bool HttpReceiver::wait_for(std::size_t n, int timeout_ms) const {
  std::unique_lock lock(mutex_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return requests_.size() >= n; });
}

void HttpReceiver::serve() {
  while (!stopping_) {
    pollfd p{listen_fd_, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) {
      continue;
    }
    const int fd = ::accept(listen_fd_, nullptr, nullptr);
    if (fd >= 0) {
      handle(fd);
      ::close(fd);
    }
  }
}

void HttpReceiver::handle(int fd) {
  std::string in;
  char buf[4096];
  std::size_t head_end = std::string::npos;
  std::size_t content_length = 0;
  ReceivedRequest req;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while (std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 50) <= 0) {
      continue;
    }
    const ssize_t n = ::recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) {
      return;
    }
    in.append(buf, static_cast<std::size_t>(n));
    if (head_end == std::string::npos) {
      head_end = in.find("\r\n\r\n");
      if (head_end == std::string::npos) {
        continue;
      }
      std::size_t line_end = in.find("\r\n");
      const std::string request_line = in.substr(0, line_end);
      const auto sp1 = request_line.find(' ');
      const auto sp2 = request_line.find(' ', sp1 + 1);
      req.method = request_line.substr(0, sp1);
      req.target = request_line.substr(sp1 + 1, sp2 - sp1 - 1);
      std::size_t pos = line_end + 2;
      while (pos < head_end) {
        const std::size_t e = in.find("\r\n", pos);
        const std::string line = in.substr(pos, e - pos);
        const auto colon = line.find(':');
        if (colon != std::string::npos) {
          req.headers.emplace_back(lower(line.substr(0, colon)), trim(line.substr(colon + 1)));
        }
        pos = e + 2;
      }
      const std::string cl = req.header("content-length");
      content_length = cl.empty() ? 0 : std::stoul(cl);
    }
    if (in.size() >= head_end + 4 + content_length) {
      req.body = in.substr(head_end + 4, content_length);
      break;
    }
  }
  if (head_end == std::string::npos) {
    return;
  }
  std::size_t index = 0;
  {
    std::lock_guard lock(mutex_);
    index = requests_.size();
  }
  req.answered = status_for_(index);
  const std::string body = req.answered >= 200 && req.answered < 300 ? "ok" : "not now";
  const std::string resp = "HTTP/1.1 " + std::to_string(req.answered) +
                           " X\r\nContent-Length: " + std::to_string(body.size()) +
                           "\r\nConnection: close\r\n\r\n" + body;
  ::send(fd, resp.data(), resp.size(), MSG_NOSIGNAL);
  {
    std::lock_guard lock(mutex_);
    requests_.push_back(std::move(req));
  }
  cv_.notify_all();
}

}  // namespace tally::testing
