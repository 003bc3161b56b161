// In-process check throughput and latency: tally::Engine::check() called in a loop, consuming,
// against a plan with a daily limit and a per-minute rate limit that never deny (so every call
// takes the full path: evaluate, apply, queue the usage event).
//
//   tally_check_bench [--checks N] [--customers N] [--threads N] [--data DIR]
//
// --threads (default 1) callers share the customers (thread t checks customers t, t + N, ...),
// each making --checks / N calls. Without --data the engine runs on its in-memory store; with
// it, on RocksDB in DIR (fsync on). Prints one JSON object: checks/s over all threads and the
// latency percentiles of single calls.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
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
  int threads = 1;
  std::string data;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--checks") == 0) {
      checks = std::stoull(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--customers") == 0) {
      customers = std::stoi(argv[i + 1]);
    } else if (std::strcmp(argv[i], "--threads") == 0) {
      threads = std::max(1, std::stoi(argv[i + 1]));
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
  const std::uint64_t per_thread = checks / static_cast<std::uint64_t>(threads);
  checks = per_thread * static_cast<std::uint64_t>(threads);
  std::vector<std::vector<std::uint32_t>> lat(static_cast<std::size_t>(threads));
  std::vector<std::uint64_t> allowed_by(static_cast<std::size_t>(threads), 0);
  auto run = [&](int t) {
    std::vector<std::uint32_t>& lat_ns = lat[static_cast<std::size_t>(t)];
    lat_ns.reserve(per_thread);
    const auto stride = static_cast<std::size_t>(threads);
    const std::size_t mine = (reqs.size() - static_cast<std::size_t>(t) + stride - 1) / stride;
    for (std::uint64_t i = 0; i < per_thread; ++i) {
      const std::size_t c = static_cast<std::size_t>(t) + (i % mine) * stride;
      const std::int64_t t0 = now_ns();
      auto r = (*engine)->check(reqs[c]);
      const std::int64_t t1 = now_ns();
      allowed_by[static_cast<std::size_t>(t)] += r && r->allowed ? 1 : 0;
      lat_ns.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(t1 - t0, UINT32_MAX)));
    }
  };
  const std::int64_t start = now_ns();
  std::vector<std::thread> callers;
  for (int t = 1; t < threads; ++t) {
    callers.emplace_back(run, t);
  }
  run(0);
  for (auto& c : callers) {
    c.join();
  }
  const double secs = static_cast<double>(now_ns() - start) / 1e9;
  std::vector<std::uint32_t> lat_ns;
  std::uint64_t allowed = 0;
  for (int t = 0; t < threads; ++t) {
    lat_ns.insert(lat_ns.end(), lat[static_cast<std::size_t>(t)].begin(),
                  lat[static_cast<std::size_t>(t)].end());
    allowed += allowed_by[static_cast<std::size_t>(t)];
  }
  (*engine)->flush();
  std::sort(lat_ns.begin(), lat_ns.end());
  auto pct = [&](double p) {
    return lat_ns[std::min(lat_ns.size() - 1,
                           static_cast<std::size_t>(p * static_cast<double>(lat_ns.size())))];
  };
  std::printf(
      "{\"checks\":%llu,\"threads\":%d,\"allowed\":%llu,\"seconds\":%.3f,\"checks_per_s\":%.0f,"
      "\"p50_ns\":%u,\"p90_ns\":%u,\"p99_ns\":%u,\"p999_ns\":%u,\"max_ns\":%u,\"store\":\"%s\"}\n",
      static_cast<unsigned long long>(checks), threads, static_cast<unsigned long long>(allowed),
      secs, static_cast<double>(checks) / secs, pct(0.5), pct(0.9), pct(0.99), pct(0.999),
      lat_ns.back(), data.empty() ? "memory" : "rocksdb");
  return allowed == checks ? 0 : 2;
}
