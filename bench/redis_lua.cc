// The baseline of issue #3: the check most teams write today (001_*.txt), a Redis Lua script
// doing check-and-increment per request, driven like tally_loadgen drives Tally: N keep-alive
// connections on one event-loop thread, closed loop, one request in flight per connection.
//
//   tally_redis_bench --port P [--connections 32] [--duration-s 10] [--customers 100]
//
// Prints one JSON object with checks/s and latency percentiles (microseconds).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <boost/asio.hpp>

namespace asio = boost::asio;
using asio::ip::tcp;

namespace {

// The script: deny at the limit, otherwise increment, and start the day's expiry on first use.
constexpr const char* kScript =
    "local c = tonumber(redis.call('GET', KEYS[1]) or '0') "
    "if c >= tonumber(ARGV[1]) then return 0 end "
    "local v = redis.call('INCR', KEYS[1]) "
    "if v == 1 then redis.call('EXPIRE', KEYS[1], ARGV[2]) end "
    "return 1";

std::string bulk(std::string_view s) {
  return "$" + std::to_string(s.size()) + "\r\n" + std::string(s) + "\r\n";
}

std::string command(const std::vector<std::string>& parts) {
  std::string out = "*" + std::to_string(parts.size()) + "\r\n";
  for (const auto& p : parts)
    out += bulk(p);
  return out;
}

std::int64_t now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

struct Conn : std::enable_shared_from_this<Conn> {
  tcp::socket sock;
  std::vector<std::string> requests;  // one per customer
  std::size_t next = 0;
  asio::streambuf in;
  std::int64_t sent_at = 0;
  std::int64_t deadline = 0;
  std::vector<std::uint32_t>* lat = nullptr;
  std::uint64_t* allowed = nullptr;

  explicit Conn(asio::io_context& io) : sock(io) {}

  void send() {
    if (now_us() >= deadline) {
      return;
    }
    sent_at = now_us();
    const std::string& r = requests[next++ % requests.size()];
    asio::async_write(sock, asio::buffer(r), [self = shared_from_this()](auto ec, std::size_t) {
      if (!ec)
        self->receive();
    });
  }

  void receive() {
    asio::async_read_until(sock, in, "\r\n", [self = shared_from_this()](auto ec, std::size_t n) {
      if (ec)
        return;
      std::string line(asio::buffers_begin(self->in.data()),
                       asio::buffers_begin(self->in.data()) + static_cast<std::ptrdiff_t>(n));
      self->in.consume(n);
      self->lat->push_back(static_cast<std::uint32_t>(now_us() - self->sent_at));
      if (line.rfind(":1", 0) == 0)
        ++*self->allowed;
      self->send();
    });
  }
};

}  // namespace

int main(int argc, char** argv) {
  int port = 6379, connections = 32, duration = 10, customers = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string f = argv[i];
    const int v = std::atoi(argv[i + 1]);
    if (f == "--port")
      port = v;
    else if (f == "--connections")
      connections = v;
    else if (f == "--duration-s")
      duration = v;
    else if (f == "--customers")
      customers = v;
  }
  asio::io_context io;
  const tcp::endpoint ep(asio::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port));
  // Load the script once and learn its SHA-1.
  std::string sha;
  {
    tcp::socket s(io);
    s.connect(ep);
    asio::write(s, asio::buffer(command({"SCRIPT", "LOAD", kScript})));
    asio::streambuf b;
    asio::read_until(s, b, "\r\n");
    std::string head(asio::buffers_begin(b.data()), asio::buffers_end(b.data()));
    if (head.empty() || head[0] != '$') {
      std::fprintf(stderr, "SCRIPT LOAD failed: %s\n", head.c_str());
      return 1;
    }
    if (head.find("\r\n", head.find("\r\n") + 2) == std::string::npos) {
      asio::read_until(s, b, "\r\n");  // the bulk string's body
      head.assign(asio::buffers_begin(b.data()), asio::buffers_end(b.data()));
    }
    const std::size_t body = head.find("\r\n") + 2;
    sha = head.substr(body, 40);
  }
  std::vector<std::string> reqs;
  for (int c = 0; c < customers; ++c) {
    reqs.push_back(command({"EVALSHA", sha, "1", "usage:cust-" + std::to_string(c) + ":day",
                            "1000000000000", "86400"}));
  }
  std::vector<std::uint32_t> lat;
  lat.reserve(10'000'000);
  std::uint64_t allowed = 0;
  const std::int64_t start = now_us();
  const std::int64_t deadline = start + static_cast<std::int64_t>(duration) * 1'000'000;
  std::vector<std::shared_ptr<Conn>> conns;
  for (int i = 0; i < connections; ++i) {
    auto c = std::make_shared<Conn>(io);
    c->sock.connect(ep);
    c->sock.set_option(tcp::no_delay(true));
    c->requests = reqs;
    c->next = static_cast<std::size_t>(i);
    c->deadline = deadline;
    c->lat = &lat;
    c->allowed = &allowed;
    conns.push_back(c);
    c->send();
  }
  io.run();
  const double secs = static_cast<double>(now_us() - start) / 1e6;
  std::sort(lat.begin(), lat.end());
  auto pct = [&](double p) {
    return lat.empty()
               ? 0u
               : lat[std::min(lat.size() - 1,
                              static_cast<std::size_t>(p * static_cast<double>(lat.size())))];
  };
  std::printf(
      "{\"target\":\"redis+lua\",\"connections\":%d,\"requests\":%zu,\"allowed\":%llu,\"seconds\":%"
      ".2f,"
      "\"rps\":%.0f,\"p50_us\":%u,\"p90_us\":%u,\"p99_us\":%u,\"max_us\":%u}\n",
      connections, lat.size(), static_cast<unsigned long long>(allowed), secs,
      static_cast<double>(lat.size()) / secs, pct(0.5), pct(0.9), pct(0.99),
      lat.empty() ? 0u : lat.back());
  return 0;
}
