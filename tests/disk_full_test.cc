// A full disk, on a small filesystem each test mounts for its data directory (a tmpfs with a
// size limit; the tests need root and skip, saying so, without it): writes are refused with
// 507 before the store fails, reads, dry-run checks and /health go on, /ready says why, the
// server recovers by itself when space is freed, and neither a disk that fills under a write
// nor a restart on a full disk aborts the process or loses an acknowledged event.
//
// The disk is filled mostly by a filler file the test writes inside the data directory (RocksDB
// ignores files it did not name), then by ingest of large events, so each test takes seconds.
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "json_test_util.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;
// Big enough for the store's files and a few dozen batches, small enough to fill in seconds
// (tmpfs pages are only taken as they are written).
constexpr std::uint64_t kFilesystemBytes = 48 * kMiB;
constexpr int kEventsPerBatch = 16;
constexpr int kPropsPerEvent = 8;
constexpr int kPropTextBytes = 8000;  // under the 8 KiB property limit: a batch is ~1 MiB

constexpr const char* kMeters = R"(
[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"
)";

// The configuration with a disk reserve of `reserve` ("8MiB", "0").
std::string config_with_reserve(const std::string& reserve) {
  return "[storage]\ndisk_reserve_bytes = \"" + reserve + "\"\ndisk_reserve_percent = 50\n" +
         kMeters;
}

class DiskFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) {
      GTEST_SKIP() << "mounting a small tmpfs for a full disk needs root; run as root to test it";
    }
    dir_ = make_temp_dir("tally-diskfull-");
    ASSERT_FALSE(dir_.empty());
    data_ = dir_ + "/data";
    ASSERT_EQ(mkdir(data_.c_str(), 0700), 0) << std::strerror(errno);
    const std::string options = "size=" + std::to_string(kFilesystemBytes) + ",mode=0700";
    if (mount("tally-test", data_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, options.c_str()) != 0) {
      const int error = errno;
      GTEST_SKIP() << "cannot mount a " << kFilesystemBytes / kMiB
                   << " MiB tmpfs for a full disk: " << std::strerror(error);
    }
    mounted_ = true;
  }

  void TearDown() override {
    server_.reset();  // killed by pid if still running, before its filesystem goes away
    if (mounted_ && umount2(data_.c_str(), 0) != 0) {
      umount2(data_.c_str(), MNT_DETACH);
    }
    if (!dir_.empty()) {
      remove_tree(dir_);
    }
  }

  std::uint64_t free_bytes() const {
    struct statvfs fs {};

    EXPECT_EQ(statvfs(data_.c_str(), &fs), 0) << std::strerror(errno);
    return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  }

  std::string filler_path() const { return data_ + "/filler.bin"; }

  // Grows the filler file until about `left` bytes are free.
  void fill_until_free(std::uint64_t left) {
    std::ofstream filler(filler_path(), std::ios::binary | std::ios::app);
    const std::string chunk(64 << 10, 'z');
    while (free_bytes() > left + chunk.size()) {
      filler.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      filler.flush();
      ASSERT_TRUE(filler.good()) << "the filler stopped at " << free_bytes() << " bytes free";
    }
  }

  void remove_filler() { ASSERT_EQ(std::remove(filler_path().c_str()), 0) << std::strerror(errno); }

  // About 1 MiB of events for customer disk-co, ids `prefix`-0..15, with random text that no
  // layer can compress.
  std::string big_batch(const std::string& prefix, std::vector<std::string>* ids) {
    static constexpr char kHex[] = "0123456789abcdef";
    std::string body = "{\"events\":[";
    for (int e = 0; e < kEventsPerBatch; ++e) {
      const std::string id = prefix + "-" + std::to_string(e);
      ids->push_back(id);
      body += std::string(e == 0 ? "" : ",") + R"({"id":")" + id +
              R"(","customer":"disk-co","type":"api_call","properties":{)";
      for (int p = 0; p < kPropsPerEvent; ++p) {
        body += std::string(p == 0 ? "" : ",") + "\"p" + std::to_string(p) + "\":\"";
        for (int i = 0; i < kPropTextBytes; i += 16) {
          const std::uint64_t r = rng_();
          for (int k = 0; k < 16; ++k) {
            body += kHex[(r >> (4 * k)) & 0xf];
          }
        }
        body += '"';
      }
      body += "}}";
    }
    body += "]}";
    return body;
  }

  // Posts one small event; its status.
  int ingest_small(HttpClient& c, const std::string& id) {
    const std::string body = R"({"id":")" + id + R"(","customer":"disk-co","type":"api_call"})";
    const auto r = c.request("POST", "/v1/events", body, key_header(kAdminKey));
    if (r.status == 202) {
      acked_.insert(id);
    }
    return r.status;
  }

  // Ingests ~1 MiB batches until one is not accepted; returns that answer.
  HttpResponse ingest_until_refused(HttpClient& c, const std::string& prefix) {
    for (int n = 0; n < 200; ++n) {
      std::vector<std::string> ids;
      const std::string body = big_batch(prefix + std::to_string(n), &ids);
      HttpResponse r = c.request("POST", "/v1/events", body, key_header(kAdminKey));
      if (r.status != 202) {
        return r;
      }
      acked_.insert(ids.begin(), ids.end());
    }
    ADD_FAILURE() << "200 batches of 1 MiB fit on a " << kFilesystemBytes / kMiB
                  << " MiB filesystem";
    return {};
  }

  // Waits up to 10 s for /ready to answer `status`.
  bool wait_ready(HttpClient& c, int status) {
    for (int i = 0; i < 100; ++i) {
      if (c.request("GET", "/ready").status == status) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
  }

  // The 507 answer of a write refused for lack of space.
  static void expect_insufficient_storage(const HttpResponse& r, const std::string& what) {
    EXPECT_EQ(r.status, 507) << what << ": " << r.body;
    Json j(r.body);
    ASSERT_TRUE(j.ok()) << what << ": " << r.body;
    EXPECT_EQ(j.str("error"), "INSUFFICIENT_STORAGE") << what << ": " << r.body;
    EXPECT_FALSE(j.str("message").empty()) << what << ": " << r.body;
  }

  // While writes are refused: reads, dry runs and /health answer, /ready and /metrics say why.
  void expect_reads_work_and_writes_refused(HttpClient& c) {
    EXPECT_EQ(c.request("GET", "/health").status, 200);
    const auto ready = c.request("GET", "/ready");
    EXPECT_EQ(ready.status, 503) << ready.body;
    Json rj(ready.body);
    EXPECT_EQ(rj.str("status"), "not_ready") << ready.body;
    EXPECT_EQ(rj.str("reason"), "disk_full") << ready.body;
    EXPECT_FALSE(rj.str("message").empty()) << ready.body;
    const auto metrics = c.request("GET", "/metrics");
    EXPECT_NE(metrics.body.find("\ntally_writes_refused 1\n"), std::string::npos) << metrics.body;
    EXPECT_NE(metrics.body.find("\ntally_disk_free_bytes "), std::string::npos) << metrics.body;

    const auto events =
        c.request("GET", "/v1/events?customer=disk-co&limit=5", {}, key_header(kAdminKey));
    EXPECT_EQ(events.status, 200) << events.body.substr(0, 300);
    const auto query =
        c.request("GET", "/v1/meters/calls/query?customer=disk-co", {}, key_header(kAdminKey));
    EXPECT_EQ(query.status, 200) << query.body;
    const auto dry =
        c.request("POST", "/v1/check", R"({"customer":"disk-co","meter":"calls","consume":false})",
                  key_header(kAdminKey));
    EXPECT_EQ(dry.status, 200) << dry.body;

    expect_insufficient_storage(
        c.request("POST", "/v1/events",
                  R"({"id":"refused-1","customer":"disk-co","type":"api_call"})",
                  key_header(kAdminKey)),
        "ingest");
    expect_insufficient_storage(
        c.request("POST", "/v1/check", R"({"customer":"disk-co","meter":"calls"})",
                  key_header(kAdminKey)),
        "a consuming check");
    expect_insufficient_storage(
        c.request("POST", "/v1/customers", R"({"id":"refused-co"})", key_header(kAdminKey)),
        "creating a customer");
    expect_insufficient_storage(
        c.request("POST", "/v1/customers/disk-co/wallet/transactions",
                  R"({"type":"top_up","amount":"10"})", key_header(kAdminKey)),
        "a wallet transaction");
  }

  // Every acknowledged event is stored exactly once, and `tally verify` agrees with the
  // aggregates. Stops the server first.
  void expect_acknowledged_events_once_and_verify() {
    ASSERT_EQ(server_->stop(), 0) << server_->log();
    server_->start();
    auto c = server_->client();
    std::map<std::string, int> stored;
    std::string cursor;
    for (int page = 0; page < 1000; ++page) {
      std::string target = "/v1/events?customer=disk-co&limit=100";
      if (!cursor.empty()) {
        target += "&cursor=" + cursor;
      }
      const auto r = c->request("GET", target, {}, key_header(kAdminKey));
      ASSERT_EQ(r.status, 200) << r.body.substr(0, 300);
      Json j(r.body);
      for (auto e : j["events"].get_array()) {
        ++stored[std::string(e["id"].get_string().value())];
      }
      if (j.is_null("next_cursor")) {
        break;
      }
      cursor = j.str("next_cursor");
    }
    for (const std::string& id : acked_) {
      auto it = stored.find(id);
      ASSERT_NE(it, stored.end()) << "acknowledged event " << id << " was lost";
    }
    for (const auto& [id, n] : stored) {
      ASSERT_EQ(n, 1) << "event " << id << " stored " << n << " times";
    }
    ASSERT_EQ(server_->stop(), 0) << server_->log();
    server_.reset();
    std::string out;
    EXPECT_EQ(run_tally({"verify", "--config", dir_ + "/tally.toml", "--data", data_}, &out, dir_),
              0)
        << out;
    EXPECT_NE(out.find("OK"), std::string::npos) << out;
  }

  std::string dir_;
  std::string data_;
  bool mounted_ = false;
  std::unique_ptr<TallyServer> server_;
  std::set<std::string> acked_;
  std::mt19937_64 rng_{20250117};
};

TEST_F(DiskFullTest, WritesAreRefusedAtTheReserveAndResumeWhenSpaceIsFreed) {
  server_ = std::make_unique<TallyServer>(config_with_reserve("8MiB"), dir_);
  auto c = server_->client();
  ASSERT_EQ(ingest_small(*c, "first"), 202);

  // Room for a few batches above the reserve: ingest runs into the reserve, not the disk.
  fill_until_free(8 * kMiB + 5 * kMiB);
  const HttpResponse refused = ingest_until_refused(*c, "r");
  expect_insufficient_storage(refused, "ingest at the reserve");
  EXPECT_NE(Json(refused.body).str("message").find("reserve"), std::string::npos) << refused.body;
  EXPECT_GE(free_bytes(), 2 * kMiB) << "the reserve must stop writes before the disk is full";
  expect_reads_work_and_writes_refused(*c);
  EXPECT_TRUE(server_->running());

  // Space is freed: within a second or so writes are accepted again, with no restart.
  remove_filler();
  ASSERT_TRUE(wait_ready(*c, 200)) << server_->log();
  EXPECT_EQ(ingest_small(*c, "after-1"), 202);
  const auto check = c->request("POST", "/v1/check", R"({"customer":"disk-co","meter":"calls"})",
                                key_header(kAdminKey));
  EXPECT_EQ(check.status, 200) << check.body;
  EXPECT_NE(c->request("GET", "/metrics").body.find("\ntally_writes_refused 0\n"),
            std::string::npos);

  expect_acknowledged_events_once_and_verify();
}

TEST_F(DiskFullTest, AWriteThatFindsTheDiskFullIsRefusedWithoutAbortingAndResumes) {
  // No reserve: writes run until the store itself finds no space, the case that aborted.
  server_ = std::make_unique<TallyServer>(config_with_reserve("0"), dir_);
  auto c = server_->client();
  ASSERT_EQ(ingest_small(*c, "first"), 202);

  fill_until_free(3 * kMiB);
  const HttpResponse refused = ingest_until_refused(*c, "f");
  expect_insufficient_storage(refused, "ingest on a full disk");
  // The store itself ran out of space (not a reserve), and said so.
  EXPECT_NE(Json(refused.body).str("message").find("No space left on device"), std::string::npos)
      << refused.body;
  // Later writes are refused too, without reaching the store, and the process lives on.
  for (int i = 0; i < 3; ++i) {
    std::vector<std::string> ids;
    expect_insufficient_storage(
        c->request("POST", "/v1/events", big_batch("again" + std::to_string(i), &ids),
                   key_header(kAdminKey)),
        "ingest after the disk filled");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // idle ticks try to write too
  ASSERT_TRUE(server_->running()) << server_->log();
  expect_reads_work_and_writes_refused(*c);

  remove_filler();
  ASSERT_TRUE(wait_ready(*c, 200)) << server_->log();
  EXPECT_EQ(ingest_small(*c, "after-1"), 202);
  std::vector<std::string> ids;
  EXPECT_EQ(
      c->request("POST", "/v1/events", big_batch("after-big", &ids), key_header(kAdminKey)).status,
      202);
  acked_.insert(ids.begin(), ids.end());
  EXPECT_EQ(ingest_small(*c, "after-2"), 202);
  ASSERT_TRUE(server_->running()) << server_->log();

  expect_acknowledged_events_once_and_verify();
}

TEST_F(DiskFullTest, ARestartOnAFullDiskServesReadsAndRefusesWritesWithoutAborting) {
  server_ = std::make_unique<TallyServer>(config_with_reserve("8MiB"), dir_);
  {
    auto c = server_->client();
    ASSERT_EQ(ingest_small(*c, "first"), 202);
    std::vector<std::string> ids;
    ASSERT_EQ(
        c->request("POST", "/v1/events", big_batch("before", &ids), key_header(kAdminKey)).status,
        202);
    acked_.insert(ids.begin(), ids.end());
  }
  ASSERT_EQ(server_->stop(), 0) << server_->log();

  // Below the reserve at start: the server starts, serves reads and refuses writes.
  fill_until_free(4 * kMiB);
  server_->start();
  auto c = server_->client();
  ASSERT_TRUE(wait_ready(*c, 503)) << server_->log();
  expect_reads_work_and_writes_refused(*c);
  const auto listed =
      c->request("GET", "/v1/events?customer=disk-co&limit=100", {}, key_header(kAdminKey));
  ASSERT_EQ(listed.status, 200);
  EXPECT_EQ(Json(listed.body)["events"].get_array().size(), acked_.size());
  ASSERT_EQ(server_->stop(), 0) << server_->log();

  // A disk with no room at all: either the server starts and refuses writes, or it cannot open
  // the store and says so with a non-zero exit; never an abort.
  fill_until_free(0);
  ProcessOptions o;
  o.executable = TALLY_BINARY;
  o.args = {"serve",       "--config",    dir_ + "/tally.toml", "--data",    data_, "--listen",
            "127.0.0.1:0", "--port-file", dir_ + "/port-full",  "--threads", "2"};
  o.env = {{"TALLY_ADMIN_KEY", kAdminKey}};
  o.log_path = dir_ + "/server-full.log";
  auto p = ChildProcess::start(o);
  ASSERT_TRUE(p.has_value()) << p.error().message();
  bool listening = false;
  for (int i = 0; i < 300 && p->running(); ++i) {
    if (wait_for_file(dir_ + "/port-full", 100)) {
      listening = true;
      break;
    }
  }
  if (listening) {
    HttpClient full("127.0.0.1",
                    static_cast<std::uint16_t>(std::stoi(*read_file(dir_ + "/port-full"))));
    EXPECT_TRUE(wait_ready(full, 503));
    expect_insufficient_storage(
        full.request("POST", "/v1/events",
                     R"({"id":"full-1","customer":"disk-co","type":"api_call"})",
                     key_header(kAdminKey)),
        "ingest after a start on a full disk");
    EXPECT_TRUE(p->running()) << read_file(o.log_path).value_or("");
    p->send_signal(SIGTERM);
    EXPECT_EQ(p->wait_exit(30000), 0) << read_file(o.log_path).value_or("");
  } else {
    const std::optional<int> code = p->wait_exit(30000);
    ASSERT_TRUE(code.has_value());
    const std::string log = read_file(o.log_path).value_or("");
    EXPECT_GT(*code, 0) << log;
    EXPECT_LT(*code, 128) << "killed by a signal: " << log;
    EXPECT_NE(log.find("cannot open data directory"), std::string::npos) << log;
    EXPECT_NE(log.find("the filesystem is full"), std::string::npos) << log;
    EXPECT_EQ(log.find("Assertion"), std::string::npos) << log;
  }
  std::cout << "[          ] on a disk with no room the server "
            << (listening ? "started and refused writes" : "exited cleanly") << "\n";

  // Space is back: everything acknowledged is there once, and verify passes.
  remove_filler();
  server_->start();
  expect_acknowledged_events_once_and_verify();
}

}  // namespace
}  // namespace tally::testing
