// tally_loadgen: an HTTP/1.1 load generator for Tally (and any HTTP server).
//
// It runs on the same small machine as the server it measures, so it is built to spend as
// little CPU as possible per request:
//   * each thread owns an io_context (run by that thread only) and a share of the connections;
//   * request bytes are prepared once; ingest bodies are a per-connection template whose event
//     ids and timestamps are overwritten in place (fixed-width fields), never re-serialised;
//   * responses are framed by a minimal parser that reads the status line and Content-Length
//     and discards the body without storing it;
//   * latency goes into a log-linear histogram (64 sub-buckets per power of two, so about 1.6%
//     resolution) instead of a vector of samples; per-thread histograms are merged at the end;
//   * request timeouts are enforced by one sweep timer per thread, not a timer per request.
//
// Closed loop (--rate 0): each connection sends its next request as soon as the previous
// response arrives. Open loop (--rate R): sends are scheduled at R per second across all
// connections, and latency is measured from the *scheduled* time, so a server that falls behind
// is charged for the queueing it causes (no coordinated omission). If every connection is busy
// when a send is due, the send happens late and that lateness counts as latency.
//
// Output: one JSON object on stdout (see bench/README.md). Progress and errors go to stderr.
#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <charconv>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/write.hpp>
#include <unistd.h>

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;
using ErrorCode = boost::system::error_code;
using Clock = std::chrono::steady_clock;

constexpr int kThreadsMax = 64;
constexpr int kConnectionsMax = 20000;
constexpr int kBatchMax = 100000;
constexpr std::size_t kResponseHeadBytesMax = 64 * 1024;
constexpr std::size_t kReadChunkBytes = 64 * 1024;
constexpr auto kSweepInterval = std::chrono::milliseconds(250);
constexpr auto kConnectRetryDelay = std::chrono::milliseconds(100);
// After the run's end, in-flight requests get this long before their connections are closed.
constexpr auto kDrainGrace = std::chrono::seconds(5);
constexpr int kIdDigits = 12;   // per-connection event counter, zero-padded
constexpr int kTimeChars = 20;  // "2025-01-02T03:04:05Z"
constexpr int kStatusMax = 599;

enum class Mode { kIngest, kGet, kPost };

struct Options {
  std::string host = "127.0.0.1";
  std::uint16_t port = 8080;
  std::vector<std::uint16_t> ports;  // --ports: connection i goes to ports[i % size]; else {port}
  int connections = 64;
  int threads = 1;
  double duration_s = 10;
  std::int64_t requests = 0;  // > 0: stop after this many requests instead of after duration_s
  Mode mode = Mode::kGet;
  int batch = 1000;
  int customers = 100;
  std::string path;  // default depends on mode
  std::string body;
  std::string key;
  double rate = 0;  // requests/s across all connections; 0 = closed loop
  std::uint32_t timeout_ms = 30000;
  std::string run_id;
};

void usage() {
  std::fprintf(stderr,
               "usage: tally_loadgen [flags]\n"
               "  --host H            server address (127.0.0.1)\n"
               "  --port P            server port (8080)\n"
               "  --ports P1,P2,...   or: several servers; connection i goes to the (i mod N)th\n"
               "  --connections N     concurrent keep-alive connections (64)\n"
               "  --threads N         generator threads (1)\n"
               "  --duration-s S      run for S seconds (10)\n"
               "  --requests N        or: stop after N requests in total\n"
               "  --mode M            ingest | get | post (get)\n"
               "  --path P            target (ingest: /v1/events, else /)\n"
               "  --body STRING       body for --mode post; {customer} becomes cust-<i mod\n"
               "                      customers> on connection i\n"
               "  --batch N           events per ingest request (1000)\n"
               "  --customers N       distinct customers in ingest events (100)\n"
               "  --key KEY           sent as x-api-key\n"
               "  --rate R            open loop at R requests/s in total; 0 = closed loop (0)\n"
               "  --timeout-ms T      a response slower than this is an error (30000)\n"
               "  --run-id ID         prefix of event ids (random per run)\n");
}

template <typename T>
bool parse_number(std::string_view text, T& out) {
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(text.data(), end, out);
  return ec == std::errc() && ptr == end;
}

bool parse_double(const std::string& text, double& out) {
  char* end = nullptr;
  out = std::strtod(text.c_str(), &end);
  return end != nullptr && *end == '\0' && !text.empty() && out >= 0;
}

// Returns nullopt (after printing why) when the command line is unusable.
std::optional<Options> parse_args(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string flag = argv[i];
    std::string value;
    if (flag == "--help" || flag == "-h") {
      usage();
      return std::nullopt;
    }
    if (auto eq = flag.find('='); eq != std::string::npos) {
      value = flag.substr(eq + 1);
      flag.resize(eq);
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      std::fprintf(stderr, "tally_loadgen: %s needs a value\n", flag.c_str());
      return std::nullopt;
    }
    bool ok = true;
    if (flag == "--host") {
      o.host = value;
    } else if (flag == "--port") {
      ok = parse_number(value, o.port);
    } else if (flag == "--ports") {
      std::string_view rest = value;
      while (ok && !rest.empty()) {
        std::size_t comma = rest.find(',');
        std::uint16_t p = 0;
        ok = parse_number(rest.substr(0, comma), p) && p != 0;
        o.ports.push_back(p);
        rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      }
      ok = ok && !o.ports.empty();
    } else if (flag == "--connections") {
      ok = parse_number(value, o.connections) && o.connections >= 1 &&
           o.connections <= kConnectionsMax;
    } else if (flag == "--threads") {
      ok = parse_number(value, o.threads) && o.threads >= 1 && o.threads <= kThreadsMax;
    } else if (flag == "--duration-s") {
      ok = parse_double(value, o.duration_s) && o.duration_s > 0;
    } else if (flag == "--requests") {
      ok = parse_number(value, o.requests) && o.requests >= 1;
    } else if (flag == "--mode") {
      if (value == "ingest") {
        o.mode = Mode::kIngest;
      } else if (value == "get") {
        o.mode = Mode::kGet;
      } else if (value == "post") {
        o.mode = Mode::kPost;
      } else {
        ok = false;
      }
    } else if (flag == "--path") {
      o.path = value;
      ok = !value.empty() && value.front() == '/';
    } else if (flag == "--body") {
      o.body = value;
    } else if (flag == "--batch") {
      ok = parse_number(value, o.batch) && o.batch >= 1 && o.batch <= kBatchMax;
    } else if (flag == "--customers") {
      ok = parse_number(value, o.customers) && o.customers >= 1;
    } else if (flag == "--key") {
      o.key = value;
    } else if (flag == "--rate") {
      ok = parse_double(value, o.rate);
    } else if (flag == "--timeout-ms") {
      ok = parse_number(value, o.timeout_ms) && o.timeout_ms >= 1;
    } else if (flag == "--run-id") {
      o.run_id = value;
      ok = !value.empty() && value.find_first_of("\"\\") == std::string::npos;
    } else {
      std::fprintf(stderr, "tally_loadgen: unknown flag %s\n", flag.c_str());
      usage();
      return std::nullopt;
    }
    if (!ok) {
      std::fprintf(stderr, "tally_loadgen: bad value for %s: %s\n", flag.c_str(), value.c_str());
      return std::nullopt;
    }
  }
  if (o.ports.empty()) {
    o.ports.push_back(o.port);
  }
  if (o.threads > o.connections) {
    o.threads = o.connections;
  }
  if (o.path.empty()) {
    o.path = o.mode == Mode::kIngest ? "/v1/events" : "/";
  }
  if (o.run_id.empty()) {
    auto seed =
        static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch().count()) ^
        (static_cast<std::uint64_t>(::getpid()) << 32);
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%08llx",
                  static_cast<unsigned long long>((seed ^ (seed >> 29)) & 0xffffffffull));
    o.run_id = hex;
  }
  return o;
}

// Log-linear latency histogram in microseconds: exact below 64, then 64 sub-buckets per power
// of two. Fixed size, so recording never allocates.
class Histogram {
 public:
  void record(std::uint64_t us) {
    ++counts_[index(us)];
    ++count_;
    max_ = std::max(max_, us);
  }

  void merge(const Histogram& other) {
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      counts_[i] += other.counts_[i];
    }
    count_ += other.count_;
    max_ = std::max(max_, other.max_);
  }

  // The value at quantile q (0..1): the middle of the bucket holding it, capped at the max.
  std::uint64_t quantile(double q) const {
    if (count_ == 0) {
      return 0;
    }
    auto rank = static_cast<std::uint64_t>(q * static_cast<double>(count_));
    rank = std::clamp<std::uint64_t>(rank, 1, count_);
    std::uint64_t seen = 0;
    for (std::size_t i = 0; i < counts_.size(); ++i) {
      seen += counts_[i];
      if (seen >= rank) {
        return std::min(midpoint(i), max_);
      }
    }
    return max_;
  }

  std::uint64_t max() const { return max_; }

 private:
  static constexpr int kSubBits = 6;
  static constexpr std::uint64_t kSub = 1u << kSubBits;
  static constexpr std::size_t kBuckets = kSub + (64 - kSubBits) * kSub;

  static std::size_t index(std::uint64_t v) {
    if (v < kSub) {
      return static_cast<std::size_t>(v);
    }
    int k = 63 - std::countl_zero(v);  // >= kSubBits
    std::uint64_t sub = (v >> (k - kSubBits)) - kSub;
    return static_cast<std::size_t>(kSub + static_cast<std::uint64_t>(k - kSubBits) * kSub + sub);
  }

  static std::uint64_t midpoint(std::size_t i) {
    if (i < kSub) {
      return i;
    }
    std::uint64_t k = (i - kSub) / kSub + kSubBits;
    std::uint64_t sub = (i - kSub) % kSub;
    std::uint64_t width = std::uint64_t{1} << (k - kSubBits);
    return ((kSub + sub) << (k - kSubBits)) + width / 2;
  }

  std::array<std::uint64_t, kBuckets> counts_{};
  std::uint64_t count_ = 0;
  std::uint64_t max_ = 0;
};

struct Stats {
  std::uint64_t requests = 0;  // complete responses, any status
  std::uint64_t events = 0;    // events in 2xx ingest responses
  std::uint64_t connect_errors = 0;
  std::uint64_t transport_errors = 0;  // resets, EOF mid-response, unparseable responses
  std::uint64_t timeouts = 0;
  std::array<std::uint64_t, kStatusMax + 1> status{};
  Histogram latency;

  void merge(const Stats& o) {
    requests += o.requests;
    events += o.events;
    connect_errors += o.connect_errors;
    transport_errors += o.transport_errors;
    timeouts += o.timeouts;
    for (std::size_t i = 0; i < status.size(); ++i) {
      status[i] += o.status[i];
    }
    latency.merge(o.latency);
  }
};

// Writes `v` zero-padded into exactly `width` chars at `out`.
void write_padded(char* out, int width, std::uint64_t v) {
  for (int i = width - 1; i >= 0; --i) {
    out[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
}

// "YYYY-MM-DDTHH:MM:SSZ" for the given UNIX second.
void format_rfc3339(std::time_t t, char* out) {
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  write_padded(out, 4, static_cast<std::uint64_t>(tm.tm_year + 1900));
  out[4] = '-';
  write_padded(out + 5, 2, static_cast<std::uint64_t>(tm.tm_mon + 1));
  out[7] = '-';
  write_padded(out + 8, 2, static_cast<std::uint64_t>(tm.tm_mday));
  out[10] = 'T';
  write_padded(out + 11, 2, static_cast<std::uint64_t>(tm.tm_hour));
  out[13] = ':';
  write_padded(out + 14, 2, static_cast<std::uint64_t>(tm.tm_min));
  out[16] = ':';
  write_padded(out + 17, 2, static_cast<std::uint64_t>(tm.tm_sec));
  out[19] = 'Z';
}

bool iprefix(std::string_view s, std::string_view lower_prefix) {
  if (s.size() < lower_prefix.size()) {
    return false;
  }
  for (std::size_t i = 0; i < lower_prefix.size(); ++i) {
    char c = s[i];
    if (c >= 'A' && c <= 'Z') {
      c = static_cast<char>(c - 'A' + 'a');
    }
    if (c != lower_prefix[i]) {
      return false;
    }
  }
  return true;
}

struct Run;  // shared, read-only after setup, plus the request budget

// The bytes of a get or post request with `body` (post only).
std::string fixed_request_for(const Options& o, std::string_view body) {
  std::string r = (o.mode == Mode::kGet ? "GET " : "POST ") + o.path +
                  " HTTP/1.1\r\nHost: " + o.host + ":" + std::to_string(o.port) + "\r\n";
  if (!o.key.empty()) {
    r += "x-api-key: " + o.key + "\r\n";
  }
  if (o.mode == Mode::kPost) {
    r += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
         "\r\n\r\n";
    r += body;
  } else {
    r += "\r\n";
  }
  return r;
}

class Worker;

// One keep-alive connection with at most one request in flight.
class Connection {
 public:
  Connection(Worker& worker, int id);

  void start() { connect(); }

  // Closes the socket if a response is overdue or the run is over (called by the sweep).
  void sweep(Clock::time_point now);

 private:
  enum class State { kConnecting, kWaitingToSend, kAwaiting, kDone };

  void connect();
  void issue();
  void send(Clock::time_point intended);
  void read_more();
  void on_read(std::size_t n);
  void complete(int status, bool server_closes);
  void fail(bool timeout);
  void reconnect();
  void finish();
  void build_ingest_template();
  void fill_ingest_body();

  Worker& worker_;
  const int id_;
  tcp::socket socket_;
  asio::steady_timer timer_;
  State state_ = State::kConnecting;
  Clock::time_point sent_at_{};         // what latency is measured from (see file comment)
  Clock::time_point really_sent_at_{};  // what the timeout is measured from
  bool timed_out_ = false;
  bool writing_ = false;
  std::uint64_t generation_ = 0;  // bumped per connection attempt; stale handlers compare it

  // Post with "{customer}" in the body: this connection's own request (else empty).
  std::string own_request_;

  // Ingest only: this connection's head and body, rewritten in place per request.
  std::string ingest_head_;
  std::string ingest_body_;
  std::vector<std::size_t> id_offsets_;
  std::vector<std::size_t> time_offsets_;
  std::uint64_t next_event_ = 0;
  std::time_t body_time_ = 0;

  // Response framing.
  std::vector<char> buffer_;
  std::size_t buffered_ = 0;  // bytes of the response head in buffer_
  bool in_body_ = false;
  std::uint64_t body_left_ = 0;  // body bytes still to discard
  int status_ = 0;
  bool server_closes_ = false;
};

struct Run {
  Options options;
  std::vector<tcp::endpoint> endpoints;  // one per --ports entry
  std::string fixed_request;  // get and post: the same bytes on every connection (but see below)
  Clock::time_point start;
  Clock::time_point issue_until;        // duration mode: no new request is scheduled after this
  std::atomic<std::int64_t> budget{0};  // requests mode: requests not yet issued
};

class Worker {
 public:
  Worker(Run& run, const std::vector<int>& connection_ids) : run_(run), sweep_timer_(ioc_) {
    for (int id : connection_ids) {
      connections_.push_back(std::make_unique<Connection>(*this, id));
    }
  }

  void run() {
    active_ = static_cast<int>(connections_.size());
    for (auto& c : connections_) {
      c->start();
    }
    arm_sweep();
    ioc_.run();
    if (finished_at_ == Clock::time_point{}) {
      finished_at_ = Clock::now();
    }
  }

  asio::io_context& ioc() { return ioc_; }

  Run& run_state() { return run_; }

  Stats& stats() { return stats_; }

  const Stats& stats() const { return stats_; }

  Clock::time_point finished_at() const { return finished_at_; }

  // Claims the right to send one more request. For open loop, also its scheduled time.
  bool claim(Clock::time_point& intended) {
    const Options& o = run_.options;
    if (o.requests > 0) {
      if (run_.budget.fetch_sub(1, std::memory_order_relaxed) <= 0) {
        return false;
      }
    }
    if (o.rate > 0) {
      intended = run_.start + std::chrono::nanoseconds(static_cast<std::int64_t>(
                                  static_cast<double>(ticket_++) * interval_ns()));
      if (o.requests == 0 && intended >= run_.issue_until) {
        return false;
      }
      return true;
    }
    intended = Clock::now();
    return o.requests > 0 || intended < run_.issue_until;
  }

  void connection_done() {
    if (--active_ == 0) {
      finished_at_ = Clock::now();
      sweep_timer_.cancel();
    }
  }

  // "YYYY-MM-DDTHH:MM:SSZ" for now, recomputed at most once per second.
  const char* now_rfc3339(std::time_t& second) {
    std::time_t t = std::time(nullptr);
    if (t != now_second_) {
      now_second_ = t;
      format_rfc3339(t, now_text_);
    }
    second = t;
    return now_text_;
  }

 private:
  double interval_ns() const {
    // Each thread paces its own share of the total rate.
    return 1e9 * static_cast<double>(run_.options.threads) / run_.options.rate;
  }

  void arm_sweep() {
    sweep_timer_.expires_after(kSweepInterval);
    sweep_timer_.async_wait([this](const ErrorCode& ec) {
      if (ec || active_ == 0) {
        return;
      }
      auto now = Clock::now();
      for (auto& c : connections_) {
        c->sweep(now);
      }
      arm_sweep();
    });
  }

  Run& run_;
  asio::io_context ioc_{1};
  asio::steady_timer sweep_timer_;
  std::vector<std::unique_ptr<Connection>> connections_;
  Stats stats_;
  int active_ = 0;
  std::uint64_t ticket_ = 0;
  Clock::time_point finished_at_{};
  std::time_t now_second_ = 0;
  char now_text_[kTimeChars + 1] = {};
};

Connection::Connection(Worker& worker, int id)
    : worker_(worker), id_(id), socket_(worker.ioc()), timer_(worker.ioc()) {
  buffer_.resize(kReadChunkBytes);
  const Options& o = worker_.run_state().options;
  if (o.mode == Mode::kIngest) {
    build_ingest_template();
  }
  static constexpr std::string_view kCustomerMark = "{customer}";
  if (o.mode == Mode::kPost && o.body.find(kCustomerMark) != std::string::npos) {
    std::string body = o.body;
    const std::string customer = "cust-" + std::to_string(id_ % o.customers);
    for (std::size_t at = body.find(kCustomerMark); at != std::string::npos;
         at = body.find(kCustomerMark, at + customer.size())) {
      body.replace(at, kCustomerMark.size(), customer);
    }
    own_request_ = fixed_request_for(o, body);
  }
}

void Connection::build_ingest_template() {
  const Options& o = worker_.run_state().options;
  std::string prefix = o.run_id + "-" + std::to_string(id_) + "-";
  ingest_body_.reserve(static_cast<std::size_t>(o.batch) * 240 + 16);
  ingest_body_ = "{\"events\":[";
  for (int i = 0; i < o.batch; ++i) {
    if (i > 0) {
      ingest_body_ += ',';
    }
    ingest_body_ += "{\"id\":\"";
    ingest_body_ += prefix;
    id_offsets_.push_back(ingest_body_.size());
    ingest_body_.append(kIdDigits, '0');
    ingest_body_ += "\",\"customer\":\"cust-";
    // Spread each request over all customers; the slot-to-customer map differs per connection.
    std::int64_t customer =
        (static_cast<std::int64_t>(id_) * o.batch + i) % static_cast<std::int64_t>(o.customers);
    ingest_body_ += std::to_string(customer);
    ingest_body_ += "\",\"type\":\"TOKEN_USAGE\",\"time\":\"";
    time_offsets_.push_back(ingest_body_.size());
    ingest_body_.append(kTimeChars, '0');
    ingest_body_ +=
        "\",\"properties\":{\"provider\":\"OPENAI\",\"model\":\"gpt-4-turbo\","
        "\"input_tokens\":1000,\"output_tokens\":500}}";
  }
  ingest_body_ += "]}";

  ingest_head_ = "POST " + o.path + " HTTP/1.1\r\nHost: " + o.host + ":" + std::to_string(o.port) +
                 "\r\nContent-Type: application/json\r\n";
  if (!o.key.empty()) {
    ingest_head_ += "x-api-key: " + o.key + "\r\n";
  }
  ingest_head_ += "Content-Length: " + std::to_string(ingest_body_.size()) + "\r\n\r\n";
}

void Connection::fill_ingest_body() {
  for (std::size_t offset : id_offsets_) {
    write_padded(ingest_body_.data() + offset, kIdDigits, next_event_++);
  }
  std::time_t second = 0;
  const char* now = worker_.now_rfc3339(second);
  if (second != body_time_) {
    body_time_ = second;
    for (std::size_t offset : time_offsets_) {
      std::memcpy(ingest_body_.data() + offset, now, kTimeChars);
    }
  }
}

void Connection::connect() {
  state_ = State::kConnecting;
  socket_.async_connect(
      worker_.run_state()
          .endpoints[static_cast<std::size_t>(id_) % worker_.run_state().endpoints.size()],
      [this, gen = generation_](const ErrorCode& ec) {
        if (state_ == State::kDone || gen != generation_) {
          return;
        }
        if (ec) {
          if (worker_.stats().connect_errors++ == 0) {
            std::fprintf(stderr, "tally_loadgen: connect failed (retrying every %lld ms): %s\n",
                         static_cast<long long>(kConnectRetryDelay.count()), ec.message().c_str());
          }
          ErrorCode ignored;
          socket_.close(ignored);
          // Stop retrying once the run is over; otherwise back off and try again.
          const Run& run = worker_.run_state();
          if (run.options.requests == 0 && Clock::now() >= run.issue_until) {
            finish();
            return;
          }
          if (run.options.requests > 0 && run.budget.load(std::memory_order_relaxed) <= 0) {
            finish();
            return;
          }
          timer_.expires_after(kConnectRetryDelay);
          timer_.async_wait([this](const ErrorCode& wait_ec) {
            if (!wait_ec && state_ != State::kDone) {
              connect();
            }
          });
          return;
        }
        ErrorCode ignored;
        socket_.set_option(tcp::no_delay(true), ignored);
        issue();
      });
}

void Connection::issue() {
  Clock::time_point intended;
  if (!worker_.claim(intended)) {
    finish();
    return;
  }
  if (worker_.run_state().options.rate > 0 && intended > Clock::now()) {
    state_ = State::kWaitingToSend;
    timer_.expires_at(intended);
    timer_.async_wait([this, intended](const ErrorCode& ec) {
      if (!ec && state_ == State::kWaitingToSend) {
        send(intended);
      }
    });
    return;
  }
  send(intended);
}

void Connection::send(Clock::time_point intended) {
  state_ = State::kAwaiting;
  sent_at_ = intended;
  really_sent_at_ = Clock::now();
  timed_out_ = false;
  buffered_ = 0;
  in_body_ = false;
  const Run& run = worker_.run_state();
  writing_ = true;
  auto on_written = [this, gen = generation_](const ErrorCode& ec, std::size_t) {
    if (gen != generation_) {
      return;
    }
    writing_ = false;
    if (ec) {
      fail(false);
    }
  };
  // The read is started together with the write: a small response can arrive before the write
  // handler runs, and this saves one trip through the event loop per request.
  if (run.options.mode == Mode::kIngest) {
    fill_ingest_body();
    std::array<asio::const_buffer, 2> buffers{asio::buffer(ingest_head_),
                                              asio::buffer(ingest_body_)};
    asio::async_write(socket_, buffers, on_written);
  } else {
    asio::async_write(
        socket_, asio::buffer(own_request_.empty() ? run.fixed_request : own_request_), on_written);
  }
  read_more();
}

void Connection::read_more() {
  std::size_t offset = in_body_ ? 0 : buffered_;
  if (offset == buffer_.size()) {
    fail(false);  // response head larger than kResponseHeadBytesMax
    return;
  }
  socket_.async_read_some(asio::buffer(buffer_.data() + offset, buffer_.size() - offset),
                          [this, gen = generation_](const ErrorCode& ec, std::size_t n) {
                            if (state_ != State::kAwaiting || gen != generation_) {
                              return;
                            }
                            if (ec) {
                              fail(timed_out_);
                              return;
                            }
                            on_read(n);
                          });
}

void Connection::on_read(std::size_t n) {
  if (in_body_) {
    body_left_ -= std::min<std::uint64_t>(body_left_, n);
    if (body_left_ == 0) {
      complete(status_, server_closes_);
    } else {
      read_more();
    }
    return;
  }
  buffered_ += n;
  std::string_view data(buffer_.data(), buffered_);
  std::size_t head_end = data.find("\r\n\r\n");
  if (head_end == std::string_view::npos) {
    if (buffered_ >= kResponseHeadBytesMax) {
      fail(false);
    } else {
      read_more();
    }
    return;
  }
  // Status line: "HTTP/1.1 200 OK".
  int status = 0;
  if (data.size() < 12 || !iprefix(data, "http/1.") ||
      std::from_chars(data.data() + 9, data.data() + 12, status).ec != std::errc()) {
    fail(false);
    return;
  }
  std::uint64_t content_length = 0;
  bool server_closes = false;
  std::string_view head = data.substr(0, head_end + 2);
  std::size_t line_start = head.find("\r\n") + 2;
  while (line_start < head.size()) {
    std::size_t line_end = head.find("\r\n", line_start);
    std::string_view line = head.substr(line_start, line_end - line_start);
    line_start = line_end + 2;
    auto value_of = [&](std::size_t name_size) {
      std::string_view v = line.substr(name_size);
      while (!v.empty() && (v.front() == ' ' || v.front() == '\t')) {
        v.remove_prefix(1);
      }
      return v;
    };
    if (iprefix(line, "content-length:")) {
      std::string_view v = value_of(15);
      if (std::from_chars(v.data(), v.data() + v.size(), content_length).ec != std::errc()) {
        fail(false);
        return;
      }
    } else if (iprefix(line, "connection:")) {
      server_closes = iprefix(value_of(11), "close");
    } else if (iprefix(line, "transfer-encoding:")) {
      fail(false);  // Tally always sends Content-Length; chunked responses are not supported
      return;
    }
  }
  if (status == 100) {
    // An interim response (only if the server sends one unasked): drop it and keep reading.
    std::size_t rest = buffered_ - (head_end + 4);
    std::memmove(buffer_.data(), buffer_.data() + head_end + 4, rest);
    buffered_ = 0;
    on_read(rest);
    return;
  }
  std::uint64_t body_here = buffered_ - (head_end + 4);
  if (body_here >= content_length) {
    complete(status, server_closes);
    return;
  }
  status_ = status;
  server_closes_ = server_closes;
  body_left_ = content_length - body_here;
  in_body_ = true;
  read_more();
}

void Connection::complete(int status, bool server_closes) {
  Stats& stats = worker_.stats();
  auto latency = Clock::now() - sent_at_;
  stats.latency.record(static_cast<std::uint64_t>(std::max<std::int64_t>(
      0, std::chrono::duration_cast<std::chrono::microseconds>(latency).count())));
  stats.requests++;
  stats.status[static_cast<std::size_t>(std::clamp(status, 0, kStatusMax))]++;
  const Options& o = worker_.run_state().options;
  if (o.mode == Mode::kIngest && status >= 200 && status < 300) {
    stats.events += static_cast<std::uint64_t>(o.batch);
  }
  state_ = State::kWaitingToSend;
  // A response that overtook our own write (the server answered early): the connection's byte
  // stream is no longer in step, so start a fresh one.
  if (server_closes || writing_) {
    reconnect();
  } else {
    issue();
  }
}

void Connection::fail(bool timeout) {
  if (state_ != State::kAwaiting) {
    return;
  }
  if (timeout) {
    worker_.stats().timeouts++;
  } else {
    worker_.stats().transport_errors++;
  }
  state_ = State::kWaitingToSend;
  reconnect();
}

void Connection::reconnect() {
  ErrorCode ignored;
  socket_.close(ignored);
  // Handlers still pending on the old connection carry the old generation and do nothing.
  ++generation_;
  writing_ = false;
  connect();
}

void Connection::sweep(Clock::time_point now) {
  if (state_ == State::kDone) {
    return;
  }
  const Run& run = worker_.run_state();
  if (run.options.requests == 0 && now > run.issue_until + kDrainGrace) {
    if (state_ == State::kAwaiting) {
      worker_.stats().timeouts++;
    }
    finish();
    return;
  }
  if (state_ == State::kAwaiting &&
      now - really_sent_at_ > std::chrono::milliseconds(run.options.timeout_ms)) {
    timed_out_ = true;
    ErrorCode ignored;
    socket_.close(ignored);  // the pending read fails and counts a timeout
  }
}

void Connection::finish() {
  if (state_ == State::kDone) {
    return;
  }
  state_ = State::kDone;
  ErrorCode ignored;
  socket_.close(ignored);
  timer_.cancel();
  worker_.connection_done();
}

std::string json_number(double v) {
  char text[64];
  std::snprintf(text, sizeof(text), "%.3f", v);
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<Options> parsed = parse_args(argc, argv);
  if (!parsed) {
    return 2;
  }
  Run run;
  run.options = *parsed;
  const Options& o = run.options;

  for (std::uint16_t port : o.ports) {
    asio::io_context ioc;
    tcp::resolver resolver(ioc);
    ErrorCode ec;
    auto results = resolver.resolve(o.host, std::to_string(port), ec);
    if (ec || results.empty()) {
      std::fprintf(stderr, "tally_loadgen: cannot resolve %s: %s\n", o.host.c_str(),
                   ec.message().c_str());
      return 1;
    }
    run.endpoints.push_back(results.begin()->endpoint());
  }

  if (o.mode != Mode::kIngest) {
    run.fixed_request = fixed_request_for(o, o.body);
  }
  run.budget.store(o.requests, std::memory_order_relaxed);

  // Connection i goes to thread i % threads.
  std::vector<std::unique_ptr<Worker>> workers;
  for (int t = 0; t < o.threads; ++t) {
    std::vector<int> ids;
    for (int c = t; c < o.connections; c += o.threads) {
      ids.push_back(c);
    }
    workers.push_back(std::make_unique<Worker>(run, ids));
  }

  run.start = Clock::now();
  run.issue_until =
      run.start + std::chrono::duration_cast<Clock::duration>(
                      std::chrono::duration<double>(o.requests > 0 ? 1e9 : o.duration_s));
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    threads.emplace_back([&w] { w->run(); });
  }
  for (auto& t : threads) {
    t.join();
  }

  Stats total;
  Clock::time_point end = run.start;
  for (auto& w : workers) {
    total.merge(w->stats());
    end = std::max(end, w->finished_at());
  }
  double seconds = std::chrono::duration<double>(end - run.start).count();
  if (seconds <= 0) {
    seconds = 1e-9;
  }

  std::string out = "{";
  out += "\"mode\":\"";
  out += o.mode == Mode::kIngest ? "ingest" : (o.mode == Mode::kGet ? "get" : "post");
  out += "\",\"connections\":" + std::to_string(o.connections);
  out += ",\"threads\":" + std::to_string(o.threads);
  out += ",\"target_rate\":" + json_number(o.rate);
  out += ",\"requests\":" + std::to_string(total.requests);
  out += ",\"events\":" + std::to_string(total.events);
  out += ",\"seconds\":" + json_number(seconds);
  out += ",\"requests_per_s\":" + json_number(static_cast<double>(total.requests) / seconds);
  out += ",\"events_per_s\":" + json_number(static_cast<double>(total.events) / seconds);
  out += ",\"status_counts\":{";
  bool first = true;
  for (std::size_t s = 0; s < total.status.size(); ++s) {
    if (total.status[s] == 0) {
      continue;
    }
    out += first ? "" : ",";
    first = false;
    out += "\"" + std::to_string(s) + "\":" + std::to_string(total.status[s]);
  }
  out += "},\"errors\":{\"connect\":" + std::to_string(total.connect_errors);
  out += ",\"transport\":" + std::to_string(total.transport_errors);
  out += ",\"timeout\":" + std::to_string(total.timeouts) + "}";
  auto ms = [&](std::uint64_t us) {
    return json_number(static_cast<double>(us) / 1000.0);
  };
  out += ",\"latency_ms\":{\"p50\":" + ms(total.latency.quantile(0.50));
  out += ",\"p90\":" + ms(total.latency.quantile(0.90));
  out += ",\"p99\":" + ms(total.latency.quantile(0.99));
  out += ",\"p999\":" + ms(total.latency.quantile(0.999));
  out += ",\"max\":" + ms(total.latency.max()) + "}";
  out += "}\n";
  std::fwrite(out.data(), 1, out.size(), stdout);
  return total.requests > 0 ? 0 : 1;
}
