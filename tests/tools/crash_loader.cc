// tally_crash_loader: the load and the bookkeeping of scripts/crash-loop.sh.
//
//   tally_crash_loader load --port P --key K --state DIR --cycle N [--threads 3] [--batch 5]
//                          [--rate 50] [--customers 20] [--seed S] [--seconds-max 120]
//   tally_crash_loader verify --state DIR --export FILE
//
// `load` sends mixed traffic to a server that the script will SIGKILL at a random moment:
// ingest batches of events with ids unique to (cycle, thread, request), consuming checks with an
// event_id, and retries. Every event the server acknowledged (202/200 to a batch; 200 with
// "allowed": true to a consuming check, which the script's config makes durable before it
// answers) is appended to DIR/acked-<cycle>.txt as "customer id". A request that got no answer
// (the server died under it, or 503) might or might not have been stored: it goes to
// DIR/pending-<cycle>.txt and the next cycle sends it again first, so every cycle also retries
// requests whose fate is unknown. One acknowledged batch in ten is sent again at once and must
// answer that all its events were duplicates; one allowed check in ten likewise must answer
// "replayed" (also on a meter that has reached its limit since). A wrong answer is counted in
// DIR/errors-<cycle>.txt. It stops when every thread
// has lost the server (or after --seconds-max) and prints one line of counts.
//
// `verify` reads every acked-*.txt and an export of all stored events (JSON Lines from
// `tally export --format jsonl`), and prints "acknowledged N lost N doubled N online_errors N":
// lost = acknowledged (customer, id) pairs not stored, doubled = (customer, id) pairs stored
// more than once, online_errors = the wrong answers the load saw. Exit 1 when any is non-zero.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include <simdjson.h>

#include "support/http_client.h"

namespace {

using tally::testing::HttpClient;
using tally::testing::HttpResponse;

struct LoadOptions {
  std::uint16_t port = 0;
  std::string key;
  std::string state;
  int cycle = 0;
  int threads = 3;
  int batch = 5;
  int rate = 50;  // requests per second per thread
  int customers = 20;
  std::uint64_t seed = 1;
  int seconds_max = 120;
};

// One request whose answer decides what is acknowledged.
struct Pending {
  char kind = 'E';       // 'E' ingest batch, 'C' consuming check
  std::string customer;  // of every event in it
  std::vector<std::string> ids;
  std::string body;
};

// Pending requests are stored one per line: kind, customer, ids (comma-separated), body.
std::string encode_pending(const Pending& p) {
  std::string ids;
  for (const auto& id : p.ids) {
    ids += (ids.empty() ? "" : ",") + id;
  }
  return std::string(1, p.kind) + "\t" + p.customer + "\t" + ids + "\t" + p.body;
}

bool decode_pending(const std::string& line, Pending* p) {
  const auto t1 = line.find('\t');
  const auto t2 = t1 == std::string::npos ? t1 : line.find('\t', t1 + 1);
  const auto t3 = t2 == std::string::npos ? t2 : line.find('\t', t2 + 1);
  if (t3 == std::string::npos || t1 != 1) {
    return false;
  }
  p->kind = line[0];
  p->customer = line.substr(t1 + 1, t2 - t1 - 1);
  p->ids.clear();
  std::string ids = line.substr(t2 + 1, t3 - t2 - 1);
  for (std::size_t start = 0; start <= ids.size();) {
    const auto comma = ids.find(',', start);
    const auto end = comma == std::string::npos ? ids.size() : comma;
    if (end > start) {
      p->ids.push_back(ids.substr(start, end - start));
    }
    start = end + 1;
  }
  p->body = line.substr(t3 + 1);
  return true;
}

std::vector<std::string> files_with_prefix(const std::string& dir, const std::string& prefix) {
  std::vector<std::string> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    const std::string name = entry.path().filename().string();
    if (name.rfind(prefix, 0) == 0) {
      out.push_back(entry.path().string());
    }
  }
  return out;
}

class Loader {
 public:
  explicit Loader(LoadOptions o) : o_(std::move(o)) {}

  int run() {
    // The requests earlier cycles left without an answer, sent again first.
    std::vector<Pending> retries;
    for (const auto& path : files_with_prefix(o_.state, "pending-")) {
      std::ifstream in(path);
      std::string line;
      while (std::getline(in, line)) {
        Pending p;
        if (decode_pending(line, &p)) {
          retries.push_back(std::move(p));
        }
      }
    }
    for (const auto& path : files_with_prefix(o_.state, "pending-")) {
      std::filesystem::remove(path);  // rewritten below with what is still unanswered
    }
    const std::string suffix = std::to_string(o_.cycle) + ".txt";
    acked_.open(o_.state + "/acked-" + suffix, std::ios::app);
    pending_out_.open(o_.state + "/pending-" + suffix, std::ios::app);
    errors_.open(o_.state + "/errors-" + suffix, std::ios::app);
    deadline_ = std::chrono::steady_clock::now() + std::chrono::seconds(o_.seconds_max);

    std::vector<std::thread> threads;
    for (int t = 0; t < o_.threads; ++t) {
      std::vector<Pending> mine;
      for (std::size_t i = static_cast<std::size_t>(t); i < retries.size();
           i += static_cast<std::size_t>(o_.threads)) {
        mine.push_back(retries[i]);
      }
      threads.emplace_back(
          [this, t, mine = std::move(mine)]() mutable { work(t, std::move(mine)); });
    }
    for (auto& t : threads) {
      t.join();
    }
    std::printf(
        "cycle %d sent %llu acknowledged_events %llu retried %zu unanswered %llu denied %llu "
        "online_errors %llu\n",
        o_.cycle, ull(sent_), ull(acked_events_), retries.size(), ull(unanswered_), ull(denied_),
        ull(online_errors_));
    return 0;
  }

 private:
  static unsigned long long ull(const std::atomic<std::uint64_t>& v) { return v.load(); }

  void work(int t, std::vector<Pending> retries) {
    HttpClient client("127.0.0.1", o_.port, 5000);
    std::mt19937_64 rng(o_.seed * 1000003u + static_cast<std::uint64_t>(o_.cycle) * 131u +
                        static_cast<std::uint64_t>(t));
    const auto gap = std::chrono::microseconds(o_.rate > 0 ? 1'000'000 / o_.rate : 0);
    auto next = std::chrono::steady_clock::now();
    std::uint64_t n = 0;
    for (;;) {
      if (std::chrono::steady_clock::now() > deadline_) {
        return;
      }
      Pending p;
      if (!retries.empty()) {
        p = std::move(retries.back());
        retries.pop_back();
      } else {
        p = make_request(t, n++, rng);
      }
      if (!send(client, p, rng)) {
        // The server is gone: this request and every retry not yet sent stay pending.
        std::lock_guard<std::mutex> lock(mu_);
        pending_out_ << encode_pending(p) << '\n';
        for (const auto& r : retries) {
          pending_out_ << encode_pending(r) << '\n';
        }
        pending_out_.flush();
        return;
      }
      next += gap;
      std::this_thread::sleep_until(next);
    }
  }

  Pending make_request(int t, std::uint64_t n, std::mt19937_64& rng) {
    Pending p;
    p.customer = "c" + std::to_string(rng() % static_cast<std::uint64_t>(o_.customers));
    const std::string base =
        "y" + std::to_string(o_.cycle) + "-t" + std::to_string(t) + "-" + std::to_string(n);
    if (rng() % 10 < 7) {
      p.kind = 'E';
      p.body = "{\"events\":[";
      for (int i = 0; i < o_.batch; ++i) {
        const std::string id = base + "-" + std::to_string(i);
        p.ids.push_back(id);
        p.body += std::string(i ? "," : "") + R"({"id":")" + id + R"(","customer":")" + p.customer +
                  R"(","type":"api_call","properties":{"bytes":)" + std::to_string(rng() % 1000) +
                  R"(,"route":"r)" + std::to_string(i % 3) + "\"}}";
      }
      p.body += "]}";
    } else {
      p.kind = 'C';
      const std::string id = base + "-chk";
      p.ids.push_back(id);
      // "premium" has a small daily limit, so some checks are denied (and must store nothing).
      const char* meter = rng() % 4 == 0 ? "premium" : "calls";
      p.body = R"({"customer":")" + p.customer + R"(","meter":")" + meter +
               R"(","amount":1,"consume":true,"event_id":")" + id + "\"}";
    }
    return p;
  }

  void online_error(const std::string& what) {
    ++online_errors_;
    std::lock_guard<std::mutex> lock(mu_);
    errors_ << what << '\n';
    errors_.flush();
  }

  void acknowledge(const Pending& p) {
    acked_events_ += p.ids.size();
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& id : p.ids) {
      acked_ << p.customer << ' ' << id << '\n';
    }
    acked_.flush();
  }

  // Sends one request (and maybe its deliberate retry). False when the server did not answer.
  bool send(HttpClient& client, const Pending& p, std::mt19937_64& rng) {
    const std::vector<std::pair<std::string, std::string>> headers = {
        {"x-api-key", o_.key}, {"content-type", "application/json"}};
    const char* path = p.kind == 'E' ? "/v1/events" : "/v1/check";
    ++sent_;
    HttpResponse r = client.request("POST", path, p.body, headers);
    if (r.status == 0 || r.status == 503) {
      ++unanswered_;
      return false;
    }
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (parser.parse(r.body).get(root) != simdjson::SUCCESS) {
      online_error("answer not JSON: " + std::to_string(r.status) + " " + r.body);
      return true;
    }
    if (p.kind == 'E') {
      std::int64_t accepted = 0;
      std::int64_t duplicates = 0;
      if ((r.status != 200 && r.status != 202) ||
          root["accepted"].get_int64().get(accepted) != simdjson::SUCCESS ||
          root["duplicates"].get_int64().get(duplicates) != simdjson::SUCCESS ||
          accepted + duplicates != static_cast<std::int64_t>(p.ids.size())) {
        online_error("ingest answered " + std::to_string(r.status) + " " + r.body);
        return true;
      }
      acknowledge(p);
      if (rng() % 10 == 0) {
        HttpResponse again = client.request("POST", path, p.body, headers);
        if (again.status == 0 || again.status == 503) {
          ++unanswered_;
          return false;  // pending: resent next cycle, all duplicates then
        }
        simdjson::dom::element root2;
        if (parser.parse(again.body).get(root2) != simdjson::SUCCESS ||
            root2["accepted"].get_int64().get(accepted) != simdjson::SUCCESS || accepted != 0) {
          online_error("a retried batch was accepted again: " + again.body);
        }
      }
      return true;
    }
    bool allowed = false;
    if (root["allowed"].get_bool().get(allowed) != simdjson::SUCCESS) {
      online_error("check answered " + std::to_string(r.status) + " " + r.body);
      return true;
    }
    if (!allowed) {
      ++denied_;  // stores nothing; not retried
      return true;
    }
    if (r.status != 200) {
      online_error("allowed check answered " + std::to_string(r.status) + " " + r.body);
      return true;
    }
    acknowledge(p);
    // On both meters: a retry answers the original decision even once "premium" is at its limit.
    if (rng() % 10 == 0) {
      HttpResponse again = client.request("POST", path, p.body, headers);
      if (again.status == 0 || again.status == 503) {
        ++unanswered_;
        return false;
      }
      bool replayed = false;
      simdjson::dom::element root2;
      if (parser.parse(again.body).get(root2) != simdjson::SUCCESS ||
          root2["replayed"].get_bool().get(replayed) != simdjson::SUCCESS || !replayed) {
        online_error("a retried check was not replayed: " + std::to_string(again.status) + " " +
                     again.body);
      }
    }
    return true;
  }

  const LoadOptions o_;
  std::chrono::steady_clock::time_point deadline_;
  std::mutex mu_;  // guards the three files
  std::ofstream acked_;
  std::ofstream pending_out_;
  std::ofstream errors_;
  std::atomic<std::uint64_t> sent_{0};
  std::atomic<std::uint64_t> acked_events_{0};
  std::atomic<std::uint64_t> unanswered_{0};
  std::atomic<std::uint64_t> denied_{0};
  std::atomic<std::uint64_t> online_errors_{0};
};

int verify(const std::string& state, const std::string& export_path) {
  std::unordered_set<std::string> acked;  // "customer id"
  for (const auto& path : files_with_prefix(state, "acked-")) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) {
        acked.insert(line);
      }
    }
  }
  std::uint64_t online_errors = 0;
  for (const auto& path : files_with_prefix(state, "errors-")) {
    std::ifstream in(path);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) {
        ++online_errors;
        if (online_errors <= 5) {
          std::fprintf(stderr, "online error: %s\n", line.c_str());
        }
      }
    }
  }
  std::unordered_map<std::string, int> stored;
  std::ifstream in(export_path);
  if (!in) {
    std::fprintf(stderr, "verify: cannot read %s\n", export_path.c_str());
    return 2;
  }
  simdjson::dom::parser parser;
  std::string line;
  std::uint64_t bad_lines = 0;
  while (std::getline(in, line)) {
    if (line.empty()) {
      continue;
    }
    simdjson::dom::element e;
    std::string_view customer;
    std::string_view id;
    if (parser.parse(line).get(e) != simdjson::SUCCESS ||
        e["customer"].get_string().get(customer) != simdjson::SUCCESS ||
        e["id"].get_string().get(id) != simdjson::SUCCESS) {
      ++bad_lines;
      continue;
    }
    ++stored[std::string(customer) + " " + std::string(id)];
  }
  std::uint64_t lost = 0;
  std::uint64_t doubled = 0;
  for (const auto& a : acked) {
    if (stored.find(a) == stored.end()) {
      if (++lost <= 5) {
        std::fprintf(stderr, "lost: %s\n", a.c_str());
      }
    }
  }
  for (const auto& [key, count] : stored) {
    if (count > 1) {
      if (++doubled <= 5) {
        std::fprintf(stderr, "doubled (%d times): %s\n", count, key.c_str());
      }
    }
  }
  if (bad_lines > 0) {
    std::fprintf(stderr, "verify: %llu export lines without customer and id\n",
                 static_cast<unsigned long long>(bad_lines));
  }
  std::printf("acknowledged %zu lost %llu doubled %llu online_errors %llu stored %zu\n",
              acked.size(), static_cast<unsigned long long>(lost),
              static_cast<unsigned long long>(doubled),
              static_cast<unsigned long long>(online_errors), stored.size());
  return lost + doubled + online_errors + bad_lines == 0 ? 0 : 1;
}

int usage() {
  std::fprintf(stderr,
               "usage: tally_crash_loader load --port P --key K --state DIR --cycle N [--threads N]"
               " [--batch N] [--rate N] [--customers N] [--seed N] [--seconds-max N]\n"
               "       tally_crash_loader verify --state DIR --export FILE\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    return usage();
  }
  const std::string mode = argv[1];
  std::map<std::string, std::string> flags;
  for (int i = 2; i + 1 < argc; i += 2) {
    const std::string name = argv[i];
    if (name.rfind("--", 0) != 0) {
      return usage();
    }
    flags[name.substr(2)] = argv[i + 1];
  }
  if ((argc - 2) % 2 != 0) {
    return usage();
  }
  try {
    if (mode == "verify") {
      if (!flags.count("state") || !flags.count("export")) {
        return usage();
      }
      return verify(flags["state"], flags["export"]);
    }
    if (mode != "load" || !flags.count("port") || !flags.count("key") || !flags.count("state") ||
        !flags.count("cycle")) {
      return usage();
    }
    LoadOptions o;
    o.port = static_cast<std::uint16_t>(std::stoi(flags["port"]));
    o.key = flags["key"];
    o.state = flags["state"];
    o.cycle = std::stoi(flags["cycle"]);
    if (flags.count("threads"))
      o.threads = std::stoi(flags["threads"]);
    if (flags.count("batch"))
      o.batch = std::stoi(flags["batch"]);
    if (flags.count("rate"))
      o.rate = std::stoi(flags["rate"]);
    if (flags.count("customers"))
      o.customers = std::stoi(flags["customers"]);
    if (flags.count("seed"))
      o.seed = std::stoull(flags["seed"]);
    if (flags.count("seconds-max"))
      o.seconds_max = std::stoi(flags["seconds-max"]);
    if (o.threads < 1 || o.batch < 1 || o.customers < 1 || o.rate < 0) {
      return usage();
    }
    return Loader(o).run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tally_crash_loader: %s\n", e.what());
    return 2;
  }
}
