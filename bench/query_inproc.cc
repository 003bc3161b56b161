// Queries, statistics and exports over a large store, in process: the figures of issue #5
// against seed 004 (sum by service over 1M records ~100 ms, daily aggregation ~200 ms, hourly
// ~500 ms, CSV export of 1M records 2-3 s).
//
//   tally_query_bench [--events N] [--customers N] [--big N] [--data DIR] [--keep]
//
// Loads N events (default 10,000,000) over 90 days into a RocksDB store in DIR (a temporary
// directory by default; fsync off while loading): customer "big" gets --big of them (default
// 1,000,000), the rest are spread over --customers others. Each event is an api_call with a
// service (chat, search, tts, stt) and a token count, read by a count and a sum meter grouped by
// service. With --data pointing at a directory loaded before (and --keep), loading is skipped.
//
// The engine's clock stands at the end of the data (2025-12-01T00:00Z), so the minute horizon
// (storage.memory_minutes_hours, default 48) holds the data's last two days of minutes.
//
// Opening a directory loaded before is a restart: `"figure":"open"` says how long it took, and
// `"figure":"memory"` the resident size then, the minute aggregates held and the bytes per
// aggregate (RSS over aggregates, so it counts everything the process holds).
//
// Then times, each 20 times (p50 and max, milliseconds): month queries of one customer (a total
// by service, daily and hourly windows), the same over every customer, statistics of daily and
// hourly values of a month, and a CSV export of the big customer's events to a file. Prints one
// JSON object per figure.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

#include <tally/clock.h>
#include <tally/engine.h>

#include "export/export.h"

namespace {

constexpr const char* kConfig = R"(
[server]
batch_events_max = 10000
[storage]
fsync = false
commit_events_max = 100000

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]

[[meters]]
key = "tokens"
event_type = "api_call"
aggregation = "sum"
value = "$.tokens"
group_by = ["service"]
)";

constexpr std::int64_t kUsPerDay = 86'400'000'000;
constexpr std::int64_t kEnd = 1'764'547'200'000'000;  // 2025-12-01T00:00:00Z
constexpr std::int64_t kStart = kEnd - 90 * kUsPerDay;
constexpr std::int64_t kMonthFrom = 1'761'955'200'000'000;  // 2025-11-01T00:00:00Z
constexpr const char* kServices[] = {"chat", "search", "tts", "stt"};

// The process's resident set size in bytes (VmRSS of /proc/self/status), 0 when unreadable.
std::uint64_t rss_bytes() {
  std::FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr)
    return 0;
  char line[256];
  std::uint64_t kb = 0;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) {
      kb = std::strtoull(line + 6, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kb * 1024;
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

void load(tally::Engine& engine, std::uint64_t events, std::uint64_t customers, std::uint64_t big) {
  const auto t0 = std::chrono::steady_clock::now();
  constexpr std::uint64_t kBatch = 10'000;
  std::uint64_t x = 88172645463325252ull;  // xorshift: the same data on every run
  auto next = [&] {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
  };
  std::string body;
  for (std::uint64_t i = 0; i < events; i += kBatch) {
    body.clear();
    body += R"({"events":[)";
    const std::uint64_t n = std::min(kBatch, events - i);
    for (std::uint64_t j = 0; j < n; ++j) {
      const std::uint64_t k = i + j;
      const std::uint64_t r = next();
      const std::string customer =
          k % (events / big) == 0 ? "big" : "c" + std::to_string(r % customers);
      // Spread over the 90 days in event order, so each customer's events are in time order.
      const std::int64_t t =
          kStart + static_cast<std::int64_t>((static_cast<__int128>(k) * 90 * kUsPerDay) / events);
      const std::int64_t seconds = t / 1'000'000;
      char stamp[32];
      std::time_t s = seconds;
      std::tm tm{};
      gmtime_r(&s, &tm);
      std::strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
      if (j > 0)
        body += ',';
      body += R"({"id":"e)" + std::to_string(k) + R"(","customer":")" + customer +
              R"(","type":"api_call","timestamp":")" + stamp + R"(","properties":{"service":")" +
              kServices[r % 4] + R"(","tokens":)" + std::to_string(r % 1000) + "}}";
    }
    body += "]}";
    auto s = engine.ingest_json(body);
    if (!s || s->accepted != n) {
      std::fprintf(stderr, "load: %s\n", s ? "events rejected" : s.error().message().c_str());
      std::exit(1);
    }
  }
  engine.flush();
  std::printf("{\"figure\":\"load\",\"events\":%llu,\"seconds\":%.1f}\n",
              static_cast<unsigned long long>(events), ms_since(t0) / 1000);
  std::fflush(stdout);
}

void time_it(const char* name, const std::function<std::size_t()>& fn, int runs = 20) {
  std::vector<double> ms;
  std::size_t rows = 0;
  for (int i = 0; i < runs; ++i) {
    const auto t = std::chrono::steady_clock::now();
    rows = fn();
    ms.push_back(ms_since(t));
  }
  std::sort(ms.begin(), ms.end());
  std::printf("{\"figure\":\"%s\",\"rows\":%zu,\"p50_ms\":%.2f,\"max_ms\":%.2f}\n", name, rows,
              ms[ms.size() / 2], ms.back());
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t events = 10'000'000;
  std::uint64_t customers = 1000;
  std::uint64_t big = 1'000'000;
  std::string data;
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&] {
      return i + 1 < argc ? std::string(argv[++i]) : std::string();
    };
    if (a == "--events")
      events = std::stoull(value());
    else if (a == "--customers")
      customers = std::stoull(value());
    else if (a == "--big")
      big = std::stoull(value());
    else if (a == "--data")
      data = value();
    else if (a == "--keep")
      keep = true;
    else {
      std::fprintf(stderr,
                   "usage: tally_query_bench [--events N] [--customers N] [--big N] "
                   "[--data DIR] [--keep]\n");
      return 2;
    }
  }
  if (big == 0 || big > events)
    big = events;
  const bool temporary = data.empty();
  if (temporary) {
    data = (std::filesystem::temp_directory_path() / "tally-query-bench").string();
    std::filesystem::remove_all(data);
  }
  const bool loaded = std::filesystem::exists(data + "/CURRENT");
  tally::EngineOptions o;
  o.config_toml = kConfig;
  o.data_dir = data;
  tally::FakeClock clock(kEnd);
  o.clock = &clock;
  const auto opened = std::chrono::steady_clock::now();
  auto engine = tally::Engine::open(o);
  if (!engine) {
    std::fprintf(stderr, "open: %s\n", engine.error().message().c_str());
    return 1;
  }
  tally::Engine& e = **engine;
  if (loaded) {
    std::printf("{\"figure\":\"open\",\"seconds\":%.2f}\n", ms_since(opened) / 1000);
  } else {
    load(e, events, customers, big);
  }
  {
    const std::uint64_t rss = rss_bytes();
    const std::uint64_t live = e.stats().aggregates_live;
    std::printf(
        "{\"figure\":\"memory\",\"rss_mb\":%.1f,\"minute_aggregates\":%llu,"
        "\"bytes_per_aggregate\":%.0f}\n",
        static_cast<double>(rss) / 1e6, static_cast<unsigned long long>(live),
        live == 0 ? 0.0 : static_cast<double>(rss) / static_cast<double>(live));
    std::fflush(stdout);
  }

  auto query = [&](const std::string& meter, const std::string& customer, const std::string& window,
                   bool by_service) {
    tally::MeterQuery q;
    q.meter = meter;
    q.customer = customer;
    q.window = tally::parse_window_name(window);  // "" = none: one total row
    q.timezone = "UTC";
    q.from_us = kMonthFrom;
    q.to_us = kEnd;
    if (by_service)
      q.group_by = {"service"};
    auto r = e.query(q);
    if (!r) {
      std::fprintf(stderr, "query: %s\n", r.error().message().c_str());
      std::exit(1);
    }
    return r->rows.size();
  };
  time_it("month_sum_by_service_one_customer", [&] { return query("tokens", "big", "", true); });
  time_it("month_daily_one_customer", [&] { return query("tokens", "big", "day", true); });
  time_it("month_hourly_one_customer", [&] { return query("tokens", "big", "hour", true); });
  time_it("month_sum_by_service_all_customers", [&] { return query("tokens", "", "", true); });
  time_it("month_daily_all_customers", [&] { return query("api_calls", "", "day", false); });

  auto stats = [&](const std::string& customer, const std::string& window) {
    tally::StatsQuery q;
    q.meter = "tokens";
    q.customer = customer;
    q.window = tally::parse_window_name(window).value();
    q.timezone = "UTC";
    q.from_us = kMonthFrom;
    q.to_us = kEnd;
    auto r = e.meter_stats(q);
    if (!r) {
      std::fprintf(stderr, "stats: %s\n", r.error().message().c_str());
      std::exit(1);
    }
    return static_cast<std::size_t>(r->count);
  };
  time_it("stats_daily_one_customer", [&] { return stats("big", "day"); });
  time_it("stats_hourly_one_customer", [&] { return stats("big", "hour"); });
  time_it("stats_daily_all_customers", [&] { return stats("", "day"); });
  time_it("stats_hourly_all_customers", [&] { return stats("", "hour"); });

  const std::string csv = data + "-export.csv";
  time_it(
      "export_csv_big_customer_to_file",
      [&] {
        tally::exporter::ExportRequest r;
        r.customer = "big";
        auto x = tally::exporter::TextExport::open(e, r);
        if (!x) {
          std::fprintf(stderr, "export: %s\n", x.error().message().c_str());
          std::exit(1);
        }
        std::FILE* f = std::fopen(csv.c_str(), "wb");
        std::string out;
        for (;;) {
          out.clear();
          auto more = (*x)->next(&out);
          if (!more) {
            std::fprintf(stderr, "export: %s\n", more.error().message().c_str());
            std::exit(1);
          }
          std::fwrite(out.data(), 1, out.size(), f);
          if (!*more)
            break;
        }
        std::fclose(f);
        return static_cast<std::size_t>((*x)->rows());
      },
      3);
  std::filesystem::remove(csv);
  engine->reset();
  if (temporary && !keep) {
    std::filesystem::remove_all(data);
  }
  return 0;
}
