// tally_pg_seed: the seeds' way of writing usage into PostgreSQL (issue #11, "Performance"),
// measured beside the cluster mode by `bash bench/run.sh cluster`.
//
//   tally_pg_seed --conninfo C --mode insert|copy [--connections 16] [--duration-s 10]
//                 [--batch 1000] [--customers 100]
//
// Each connection is one thread with one blocking connection (src/pg, so values travel as
// parameters or COPY rows), closed loop:
//   insert  one `INSERT` per event, each its own transaction (what 002_*.txt's trackUsage does);
//   copy    one `COPY ... FROM STDIN` of --batch events per transaction (004_*.txt's flush).
// Both write the same rows as tally_loadgen's ingest events (customer, id, type, time, the four
// properties as jsonb) into `seed_events`, a plain table with a bigserial key and no unique
// constraint and no aggregates: the seeds deduplicate nothing and aggregate at read time. The
// server's settings (fsync, synchronous_commit) are whatever it runs with.
//
// Prints one JSON object: events/s and the latency of one write (an INSERT or a COPY) in ms.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "pg/connection.h"

namespace {

using Clock = std::chrono::steady_clock;
using tally::pg::Connection;
using tally::pg::Value;

constexpr int kConnectionsMax = 256;
constexpr int kBatchMax = 100000;

constexpr const char* kCreateTable =
    "CREATE TABLE IF NOT EXISTS seed_events (id bigserial PRIMARY KEY, customer_id text NOT NULL, "
    "event_id text NOT NULL, type text NOT NULL, time timestamptz NOT NULL, "
    "properties jsonb NOT NULL)";
constexpr const char* kInsert =
    "INSERT INTO seed_events (customer_id, event_id, type, time, properties) "
    "VALUES ($1, $2, $3, $4, $5)";
constexpr const char* kCopy =
    "COPY seed_events (customer_id, event_id, type, time, properties) FROM STDIN";
constexpr const char* kProperties =
    R"({"provider":"OPENAI","model":"gpt-4-turbo","input_tokens":1000,"output_tokens":500})";

struct Options {
  std::string conninfo;
  bool copy = false;
  int connections = 16;
  double duration_s = 10;
  int batch = 1000;
  int customers = 100;
};

struct Totals {
  std::mutex mu;
  std::uint64_t events = 0;
  std::uint64_t errors = 0;
  std::vector<std::uint32_t> latency_us;  // one per write
  std::string first_error;
};

std::string now_rfc3339() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return text;
}

void run_connection(const Options& o, int index, Clock::time_point until, Totals& totals) {
  std::uint64_t events = 0;
  std::uint64_t errors = 0;
  std::string first_error;
  std::vector<std::uint32_t> latency_us;
  auto conn = Connection::connect({.conninfo = o.conninfo});
  if (!conn.has_value()) {
    std::lock_guard lock(totals.mu);
    totals.errors++;
    totals.first_error = conn.error().message();
    return;
  }
  const std::string prefix = "seed-" + std::to_string(::getpid()) + "-" + std::to_string(index);
  std::uint64_t next = 0;
  std::vector<std::vector<Value>> rows;
  while (Clock::now() < until) {
    const std::string time = now_rfc3339();
    const auto started = Clock::now();
    bool ok = true;
    int written = 0;
    if (o.copy) {
      rows.clear();
      for (int i = 0; i < o.batch; ++i, ++next) {
        rows.push_back({"cust-" + std::to_string(next % static_cast<std::uint64_t>(o.customers)),
                        prefix + "-" + std::to_string(next), "TOKEN_USAGE", time, kProperties});
      }
      auto copied = (*conn)->copy_from(kCopy, rows);
      ok = copied.has_value();
      if (!ok && first_error.empty()) {
        first_error = copied.error().message();
      }
      written = ok ? o.batch : 0;
    } else {
      auto inserted = (*conn)->exec(
          kInsert, {"cust-" + std::to_string(next % static_cast<std::uint64_t>(o.customers)),
                    prefix + "-" + std::to_string(next), "TOKEN_USAGE", time, kProperties});
      ++next;
      ok = inserted.has_value();
      if (!ok && first_error.empty()) {
        first_error = inserted.error().message();
      }
      written = ok ? 1 : 0;
    }
    latency_us.push_back(static_cast<std::uint32_t>(
        std::chrono::duration_cast<std::chrono::microseconds>(Clock::now() - started).count()));
    events += static_cast<std::uint64_t>(written);
    errors += ok ? 0 : 1;
    if (!ok && !(*conn)->alive()) {
      break;
    }
  }
  std::lock_guard lock(totals.mu);
  totals.events += events;
  totals.errors += errors;
  totals.latency_us.insert(totals.latency_us.end(), latency_us.begin(), latency_us.end());
  if (totals.first_error.empty()) {
    totals.first_error = first_error;
  }
}

bool parse_args(int argc, char** argv, Options& o) {
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--conninfo") {
      o.conninfo = value;
    } else if (flag == "--mode" && (value == "insert" || value == "copy")) {
      o.copy = value == "copy";
    } else if (flag == "--connections") {
      o.connections = std::atoi(value.c_str());
    } else if (flag == "--duration-s") {
      o.duration_s = std::atof(value.c_str());
    } else if (flag == "--batch") {
      o.batch = std::atoi(value.c_str());
    } else if (flag == "--customers") {
      o.customers = std::atoi(value.c_str());
    } else {
      std::fprintf(stderr, "tally_pg_seed: bad flag %s %s\n", flag.c_str(), value.c_str());
      return false;
    }
  }
  if (argc % 2 != 1 || o.conninfo.empty() || o.connections < 1 || o.connections > kConnectionsMax ||
      o.duration_s <= 0 || o.batch < 1 || o.batch > kBatchMax || o.customers < 1) {
    std::fprintf(stderr,
                 "usage: tally_pg_seed --conninfo C --mode insert|copy [--connections 1..%d] "
                 "[--duration-s S] [--batch 1..%d] [--customers N]\n",
                 kConnectionsMax, kBatchMax);
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!parse_args(argc, argv, o)) {
    return 2;
  }
  {
    auto conn = Connection::connect({.conninfo = o.conninfo});
    if (!conn.has_value()) {
      std::fprintf(stderr, "tally_pg_seed: %s\n", conn.error().message().c_str());
      return 1;
    }
    auto created = (*conn)->exec_script(kCreateTable);
    if (!created.has_value()) {
      std::fprintf(stderr, "tally_pg_seed: %s\n", created.error().message().c_str());
      return 1;
    }
  }
  Totals totals;
  const auto start = Clock::now();
  const auto until = start + std::chrono::duration_cast<Clock::duration>(
                                 std::chrono::duration<double>(o.duration_s));
  std::vector<std::thread> threads;
  for (int i = 0; i < o.connections; ++i) {
    threads.emplace_back([&o, i, until, &totals] { run_connection(o, i, until, totals); });
  }
  for (auto& t : threads) {
    t.join();
  }
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  std::vector<std::uint32_t>& lat = totals.latency_us;
  std::sort(lat.begin(), lat.end());
  auto ms = [&](double q) {
    if (lat.empty()) {
      return 0.0;
    }
    const auto at =
        std::min(lat.size() - 1, static_cast<std::size_t>(q * static_cast<double>(lat.size())));
    return static_cast<double>(lat[at]) / 1000.0;
  };
  std::printf(
      "{\"target\":\"%s\",\"connections\":%d,\"batch\":%d,\"writes\":%zu,\"events\":%llu,"
      "\"errors\":%llu,\"seconds\":%.3f,\"events_per_s\":%.0f,\"latency_ms\":{\"p50\":%.3f,"
      "\"p99\":%.3f,\"max\":%.3f}}\n",
      o.copy ? "pg-copy" : "pg-insert", o.connections, o.copy ? o.batch : 1, lat.size(),
      static_cast<unsigned long long>(totals.events),
      static_cast<unsigned long long>(totals.errors), seconds,
      static_cast<double>(totals.events) / seconds, ms(0.5), ms(0.99),
      lat.empty() ? 0.0 : static_cast<double>(lat.back()) / 1000.0);
  if (!totals.first_error.empty()) {
    std::fprintf(stderr, "tally_pg_seed: first error: %s\n", totals.first_error.c_str());
  }
  return totals.events > 0 ? 0 : 1;
}
