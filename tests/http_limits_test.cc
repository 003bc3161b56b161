// End-to-end tests of what bounds a real `tally serve` against clients that hold it up: bodies
// refused before they are read, the connection limits of [server], and long scans kept off the
// I/O threads with a time budget per page.
#include <chrono>
#include <fstream>
#include <future>
#include <set>
#include <sstream>
#include <thread>

#include <gtest/gtest.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

// The resident memory of process `pid`, in KiB (VmRSS of /proc/PID/status); -1 if unreadable.
long rss_kib(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmRSS:", 0) == 0) {
      return std::stol(line.substr(6));
    }
  }
  return -1;
}

// Ingests `n` events of customer "c" in batches: every `rare_every`-th has type "rare", the
// others "common". Returns the ids of the rare ones.
std::set<std::string> ingest_events(HttpClient& client, int n, int rare_every) {
  std::set<std::string> rare;
  constexpr int kBatch = 5000;
  for (int first = 0; first < n; first += kBatch) {
    std::string body = "[";
    for (int i = first; i < std::min(n, first + kBatch); ++i) {
      const bool is_rare = i % rare_every == 0;
      const std::string id = "ev-" + std::to_string(i);
      if (is_rare) {
        rare.insert(id);
      }
      body += std::string(i == first ? "" : ",") + R"({"id":")" + id +
              R"(","customer":"c","type":")" + (is_rare ? "rare" : "common") +
              R"(","time":"2025-01-10T09:00:00Z","properties":{"n":1}})";
    }
    body += "]";
    HttpResponse r = client.request("POST", "/v1/events", body, key_header(kAdminKey));
    EXPECT_EQ(r.status, 202) << r.body;
    if (r.status != 202) {
      break;
    }
  }
  return rare;
}

// The value of an unlabelled metric in /metrics, or -1.
long metric(HttpClient& client, const std::string& name) {
  HttpResponse m = client.request("GET", "/metrics");
  std::istringstream lines(m.body);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + " ", 0) == 0) {
      return std::stol(line.substr(name.size() + 1));
    }
  }
  return -1;
}

TEST(HttpLimitsTest, UnauthenticatedBodiesAreRefusedUnread) {
  TallyServer server("[server]\nbody_bytes_max = \"16MiB\"\n");
  auto warm = server.client();
  ASSERT_EQ(warm->request("GET", "/health").status, 200);
  const long before = rss_kib(server.pid());
  ASSERT_GT(before, 0);

  // 50 clients without a key each announce a 9 MiB ingest body and send its first 256 KiB.
  constexpr int kClients = 50;
  const std::string head =
      "POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
      "Content-Length: 9437184\r\n\r\n";
  const std::string some_body = "[" + std::string(256 * 1024, ' ');
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(std::make_unique<HttpClient>("127.0.0.1", server.port(), 5000));
    ASSERT_EQ(clients.back()->send_raw(head + some_body), "");
  }
  long peak = before;
  for (auto& c : clients) {
    HttpResponse r = c->read_response();
    ASSERT_EQ(r.status, 401) << "refused on the head, without waiting for the body: " << r.body;
    EXPECT_EQ(Json(r.body).str("error"), "UNAUTHORIZED");
    EXPECT_EQ(r.header("connection"), "close");
    peak = std::max(peak, rss_kib(server.pid()));
  }
  // Reading the bodies would take 50 x 9 MiB = 450 MiB; what arrived is 12.5 MiB, and the
  // server holds none of it beyond a read buffer per connection.
  EXPECT_LT(peak - before, 64 * 1024) << "RSS grew from " << before << " KiB to " << peak;
  for (auto& c : clients) {
    EXPECT_TRUE(c->wait_closed_by_peer(5000));
  }
  EXPECT_EQ(warm->request("GET", "/health").status, 200);
}

TEST(HttpLimitsTest, ConnectionOptionsOfTheConfigApply) {
  TallyServer server(
      "[server]\nconnections_per_address_max = 2\nheader_timeout_ms = 300\n"
      "idle_timeout_ms = 60000\n");
  std::vector<std::unique_ptr<HttpClient>> held;
  for (int i = 0; i < 2; ++i) {
    held.push_back(server.client());
    ASSERT_EQ(held.back()->request("GET", "/health").status, 200);
  }
  HttpClient third("127.0.0.1", server.port(), 2000);
  EXPECT_EQ(third.request("GET", "/health").status, 0) << "over connections_per_address_max";
  HttpClient elsewhere("127.0.0.1", server.port());
  elsewhere.set_local_address("127.0.0.9");
  EXPECT_EQ(elsewhere.request("GET", "/health").status, 200);

  HttpClient slow("127.0.0.1", server.port());
  slow.set_local_address("127.0.0.10");
  ASSERT_EQ(slow.send_raw("GET /health HTTP/1.1\r\nHost: x\r\n"), "");
  EXPECT_TRUE(slow.wait_closed_by_peer(10000)) << "header_timeout_ms closes a half-sent head";
  HttpClient metrics("127.0.0.1", server.port());
  metrics.set_local_address("127.0.0.11");
  EXPECT_EQ(metric(metrics, "tally_http_connections_refused_total{reason=\"per_address\"}"), 1);
  // Counted when the server's read completes, which may be just after the client saw the close.
  const std::string timeouts = "tally_http_connections_closed_total{reason=\"header_timeout\"}";
  for (int i = 0; i < 500 && metric(metrics, timeouts) < 1; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(metric(metrics, timeouts), 1);
}

// Enough events that a scan of all of them takes a while, on one customer.
constexpr int kScanEvents = 100'000;

TEST(HttpLimitsTest, LongScanRunsOffTheIoThreads) {
  TallyServer server(
      "[server]\nbody_bytes_max = \"16MiB\"\npage_budget_ms = 0\nscan_threads = 1\n"
      "[storage]\nfsync = false\n");
  auto client = server.client();
  ingest_events(*client, kScanEvents, 1000);

  // A listing of a type no event has scans every event in one page (no budget here). While it
  // runs on the work pool (the pool's gauge says so before and after), /health is answered.
  bool proven = false;
  for (int attempt = 0; attempt < 5 && !proven; ++attempt) {
    auto scan = std::async(std::launch::async, [port = server.port()] {
      HttpClient c("127.0.0.1", port, 60000);
      return c.request("GET", "/v1/events?type=nope&limit=1000", {}, key_header(kAdminKey));
    });
    HttpClient probe("127.0.0.1", server.port());
    while (!proven && scan.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
      if (metric(probe, "tally_http_work_pool_running") < 1) {
        continue;
      }
      HttpResponse health = probe.request("GET", "/health");
      ASSERT_EQ(health.status, 200);
      proven = metric(probe, "tally_http_work_pool_running") >= 1 &&
               scan.wait_for(std::chrono::seconds(0)) != std::future_status::ready;
    }
    HttpResponse r = scan.get();
    ASSERT_EQ(r.status, 200) << r.body;
    Json j(r.body);
    EXPECT_TRUE(j.is_null("next_cursor"));
    EXPECT_EQ(j["events"].get_array().size(), 0u);
  }
  EXPECT_TRUE(proven) << "/health must be answered while a scan is running";
}

TEST(HttpLimitsTest, PageBudgetReturnsPartialPagesThatResumeExactly) {
  TallyServer server(
      "[server]\nbody_bytes_max = \"16MiB\"\npage_budget_ms = 1\n[storage]\nfsync = false\n");
  auto client = server.client();
  const std::set<std::string> rare = ingest_events(*client, 30'000, 97);

  std::multiset<std::string> seen;
  std::string cursor;
  int pages = 0;
  int partial = 0;
  do {
    std::string target = "/v1/events?type=rare&limit=1000";
    if (!cursor.empty()) {
      target += "&cursor=" + cursor;
    }
    HttpResponse r = client->request("GET", target, {}, key_header(kAdminKey));
    ASSERT_EQ(r.status, 200) << r.body;
    Json j(r.body);
    std::size_t n = 0;
    for (auto e : j["events"].get_array()) {
      seen.insert(std::string(e["id"].get_string().value()));
      ++n;
    }
    cursor = j.is_null("next_cursor") ? std::string() : j.str("next_cursor");
    partial += (!cursor.empty() && n < 1000) ? 1 : 0;
    ++pages;
  } while (!cursor.empty() && pages < 100'000);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()), rare);
  EXPECT_EQ(seen.size(), rare.size()) << "no event twice";
  // 30,000 events cannot be scanned in a millisecond, so the budget ended pages early.
  EXPECT_GT(partial, 0);
}

}  // namespace
}  // namespace tally::testing
