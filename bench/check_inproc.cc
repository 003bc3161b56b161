// In-process check throughput and latency: tally::Engine::check() called in a loop on one
// thread, consuming, against a plan with a daily limit and a per-minute rate limit that never
// deny (so every call takes the full path: evaluate, apply, queue the usage event).
//
//   tally_check_bench [--checks N] [--customers N] [--data DIR]
//
// Without --data the engine runs on its in-memory store; with it, on RocksDB in DIR (fsync on).
// Prints one JSON object: checks/s and the latency percentiles of single calls.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <tally/engine.h>

namespace {

constexpr const char* kConfig = R"(
[storage]
fsync = true

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[plans]]
key = "bench"
features = ["chat"]
limits = [
  { meter = "api_calls", period = "day", amount = 1000000000000 },
  { meter = "api_calls", period = "minute", amount = 1000000000000 },
]

[enforcement]
default_plan = "bench"
)";

std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t checks = 2'000'000;
  int customers = 1000;
  std::string data;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--checks") == 0) {
      checks = std::stoull(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--customers") == 0) {
      customers = std::stoi(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--data") == 0) {
      data = argv[i + 1];
    }
  }
  tally::EngineOptions o;
  o.config_toml = kConfig;
  o.in_memory = data.empty();
  o.data_dir = data;
  auto engine = tally::Engine::open(o);
  if (!engine) {
    std::fprintf(stderr, "open: %s\n", engine.error().message().c_str());
    return 1;
  }
  std::vector<tally::CheckRequest> reqs(static_cast<std::size_t>(customers));
  for (int c = 0; c < customers; ++c) {
    tally::Customer cu;
    cu.id = "cust-" + std::to_string(c);
    (void)(*engine)->create_customer(cu);
    reqs[static_cast<std::size_t>(c)].customer = cu.id;
    reqs[static_cast<std::size_t>(c)].meter = "api_calls";
  }
  // Warm up: build every customer's counters.
  for (auto& r : reqs) {
    (void)(*engine)->check(r);
  }
  std::vector<std::uint32_t> lat_ns;
  lat_ns.reserve(checks);
  std::uint64_t allowed = 0;
  const std::int64_t start = now_ns();
  for (std::uint64_t i = 0; i < checks; ++i) {
    const std::int64_t t0 = now_ns();
    auto r = (*engine)->check(reqs[i % reqs.size()]);
    const std::int64_t t1 = now_ns();
    allowed += r && r->allowed ? 1 : 0;
    lat_ns.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(t1 - t0, UINT32_MAX)));
  }
  const double secs = static_cast<double>(now_ns() - start) / 1e9;
  (*engine)->flush();
  std::sort(lat_ns.begin(), lat_ns.end());
  auto pct = [&](double p) {
    return lat_ns[std::min(lat_ns.size() - 1,
                           static_cast<std::size_t>(p * static_cast<double>(lat_ns.size())))];
  };
  std::printf(
      "{\"checks\":%llu,\"allowed\":%llu,\"seconds\":%.3f,\"checks_per_s\":%.0f,"
      "\"p50_ns\":%u,\"p90_ns\":%u,\"p99_ns\":%u,\"p999_ns\":%u,\"max_ns\":%u,\"store\":\"%s\"}\n",
      static_cast<unsigned long long>(checks), static_cast<unsigned long long>(allowed), secs,
      static_cast<double>(checks) / secs, pct(0.5), pct(0.9), pct(0.99), pct(0.999), lat_ns.back(),
      data.empty() ? "memory" : "rocksdb");
  return allowed == checks ? 0 : 2;
}
