// White-box tests of the group commit (Engine::Impl::commit_ingest), driven directly on a store
// that fails on demand, without the commit thread: what a failing store does to one commit. And
// of the commit queue's gathering of answered checks (CommitQueue::take).
#include <atomic>
#include <chrono>
#include <filesystem>
#include <optional>
#include <thread>

#include <gtest/gtest.h>

#include "engine/engine_impl.h"

namespace tally {
namespace {

// A memory store whose reads of stored events fail while `fail_event_reads` is set, that reports
// the free space it is told to, and whose writes find no space while `no_space` is set. Like
// RocksDB, after a write that found no space it must not be written again before resume().
class FlakyStore final : public store::Store {
 public:
  std::atomic<bool> fail_event_reads{false};
  std::atomic<std::uint64_t> free_bytes{1ull << 30};
  std::atomic<std::uint64_t> total_bytes{4ull << 30};
  std::atomic<bool> no_space{false};               // writes fail with kInsufficientStorage
  std::atomic<bool> resume_fails{false};           // resume() fails with kInsufficientStorage
  std::atomic<int> writes{0};                      // write() calls
  std::atomic<int> resumes{0};                     // resume() calls
  std::atomic<bool> written_before_resume{false};  // a write reached a store that must resume

  Status write(const store::WriteBatch& batch, bool sync) override {
    ++writes;
    if (needs_resume_) {
      written_before_resume = true;
    }
    if (no_space.load()) {
      needs_resume_ = true;
      return Status::insufficient_storage("injected: no space left on device");
    }
    return inner_->write(batch, sync);
  }

  Result<std::optional<std::string>> get(store::Space space, std::string_view key) const override {
    return inner_->get(space, key);
  }

  Status scan(store::Space space, std::string_view begin, std::string_view end,
              const store::ScanFn& fn) const override {
    if (space == store::Space::kEvents && fail_event_reads.load()) {
      return Status::io_error("injected read error");
    }
    return inner_->scan(space, begin, end, fn);
  }

  std::uint64_t size_bytes() const override { return 0; }

  std::string_view name() const override { return "flaky"; }

  Result<std::optional<store::DiskSpace>> disk_space() const override {
    return std::optional<store::DiskSpace>(store::DiskSpace{free_bytes.load(), total_bytes.load()});
  }

  Status resume() override {
    ++resumes;
    if (resume_fails.load()) {
      return Status::insufficient_storage("injected: resume found no space");
    }
    needs_resume_ = false;
    return Status();
  }

 private:
  std::unique_ptr<store::Store> inner_ = store::make_memory_store();
  bool needs_resume_ = false;
};

class CommitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = std::make_unique<FlakyStore>();
    store_ = s.get();
    d_.store = std::move(s);
    d_.clock = &clock_;
    ASSERT_TRUE(d_.load().ok());
  }

  // A job for `body`; its answer lands in `*answer`.
  std::unique_ptr<engine::IngestJob> job(std::string body,
                                         std::optional<Result<IngestSummary>>* answer) {
    auto j = std::make_unique<engine::IngestJob>();
    core::ParseOptions po;
    po.now_us = clock_.now_us();
    EXPECT_TRUE(core::parse_events(body, po, &j->parsed).ok());
    j->done = [answer](Result<IngestSummary> r) {
      answer->emplace(std::move(r));
    };
    return j;
  }

  void commit(std::vector<std::unique_ptr<engine::IngestJob>> jobs) { d_.commit_ingest(jobs); }

  // Every stored event, and whether any id is stored twice.
  engine::Recomputed stored() {
    std::unordered_map<std::uint32_t, std::string> ids;
    for (const auto& [num, cs] : d_.customers) {
      ids[num] = cs.record.id;
    }
    engine::Recomputed r;
    EXPECT_TRUE(engine::recompute(*d_.store, {}, ids, &r).ok());
    return r;
  }

  FakeClock clock_{1'737'000'000'000'000};
  Engine::Impl d_;
  FlakyStore* store_ = nullptr;
};

TEST_F(CommitTest, FailedDuplicateReadFailsThatJobAloneAndWritesNothingOfIt) {
  std::optional<Result<IngestSummary>> first, failing, other, retry, again;
  std::vector<std::unique_ptr<engine::IngestJob>> jobs;
  jobs.push_back(job(R"({"id":"a","customer":"c","type":"t"})", &first));
  commit(std::move(jobs));
  ASSERT_TRUE(first.has_value() && first->has_value());
  ASSERT_EQ((*first)->accepted, 1u);

  // "a" hits the dedup index, so its stored copy must be read, and that read fails. The job
  // fails as a whole ("b" is not stored either); a job sharing the commit is not touched.
  store_->fail_event_reads = true;
  jobs.clear();
  jobs.push_back(job(
      R"([{"id":"a","customer":"c","type":"t"},{"id":"b","customer":"c","type":"t"}])", &failing));
  jobs.push_back(job(R"({"id":"z","customer":"new","type":"t"})", &other));
  commit(std::move(jobs));
  ASSERT_TRUE(failing.has_value());
  ASSERT_FALSE(failing->has_value()) << "a failed read must not count as 'not a duplicate'";
  EXPECT_EQ(failing->error().code(), StatusCode::kIOError);
  EXPECT_NE(failing->error().message().find("injected read error"), std::string::npos);
  ASSERT_TRUE(other.has_value() && other->has_value()) << other->error().message();
  EXPECT_EQ((*other)->accepted, 1u);

  // Reads work again: the client's retry stores "b" once and finds "a" a duplicate.
  store_->fail_event_reads = false;
  jobs.clear();
  jobs.push_back(job(
      R"([{"id":"a","customer":"c","type":"t"},{"id":"b","customer":"c","type":"t"}])", &retry));
  commit(std::move(jobs));
  ASSERT_TRUE(retry.has_value() && retry->has_value()) << retry->error().message();
  EXPECT_EQ((*retry)->accepted, 1u);
  EXPECT_EQ((*retry)->duplicates, 1u);

  engine::Recomputed r = stored();
  EXPECT_EQ(r.events, 3u);  // a, z, b: once each
  EXPECT_TRUE(r.problems.empty()) << r.problems[0];
}

constexpr std::uint64_t kMiB = 1ull << 20;

TEST(DiskReserveTest, IsTheSmallerOfBytesAndPercentOfTheFilesystem) {
  config::StorageConfig storage;  // defaults: 256 MiB, 5 %
  EXPECT_EQ(engine::disk_reserve_for(storage, 64 * kMiB), 64 * kMiB / 100 * 5);
  EXPECT_EQ(engine::disk_reserve_for(storage, 1ull << 40), 256 * kMiB);
  storage.disk_reserve_bytes = 0;
  EXPECT_EQ(engine::disk_reserve_for(storage, 1ull << 40), 0u);
  storage.disk_reserve_bytes = 256 * kMiB;
  storage.disk_reserve_percent = 0;
  EXPECT_EQ(engine::disk_reserve_for(storage, 1ull << 40), 0u);
}

TEST_F(CommitTest, BelowTheDiskReserveACommitIsRefusedBeforeTheStoreAndResumesWhenSpaceReturns) {
  d_.config.storage.disk_reserve_bytes = 8 * kMiB;  // of 4 GiB: 8 MiB, less than 5 %
  std::optional<Result<IngestSummary>> first, refused, retry;
  std::vector<std::unique_ptr<engine::IngestJob>> jobs;
  jobs.push_back(job(R"({"id":"a","customer":"c","type":"t"})", &first));
  commit(std::move(jobs));
  ASSERT_TRUE(first.has_value() && first->has_value()) << first->error().message();
  EXPECT_FALSE(d_.disk.refusing());
  EXPECT_TRUE(d_.writes_allowed().ok());

  // Free space drops under the reserve: the commit is refused, and nothing reaches the store.
  store_->free_bytes = 8 * kMiB - 1;
  const int writes_before = store_->writes.load();
  jobs.clear();
  jobs.push_back(job(R"({"id":"b","customer":"c","type":"t"})", &refused));
  commit(std::move(jobs));
  ASSERT_TRUE(refused.has_value());
  ASSERT_FALSE(refused->has_value()) << "a commit below the reserve must not be acknowledged";
  EXPECT_EQ(refused->error().code(), StatusCode::kInsufficientStorage);
  EXPECT_NE(refused->error().message().find("less than the reserve of 8388608 bytes"),
            std::string::npos)
      << refused->error().message();
  EXPECT_EQ(store_->writes.load(), writes_before);
  EXPECT_TRUE(d_.disk.refusing());
  // What request threads ask before queuing anything that writes.
  EXPECT_EQ(d_.writes_allowed().code(), StatusCode::kInsufficientStorage);
  const engine::DiskState state = d_.disk.state();
  EXPECT_TRUE(state.known);
  EXPECT_EQ(state.free_bytes, 8 * kMiB - 1);
  EXPECT_EQ(state.reserve_bytes, 8 * kMiB);
  EXPECT_TRUE(state.refusing);

  // Space is back: the next look lifts the refusal, and the retry is stored.
  store_->free_bytes = 8 * kMiB;
  jobs.clear();
  jobs.push_back(job(R"({"id":"b","customer":"c","type":"t"})", &retry));
  commit(std::move(jobs));
  ASSERT_TRUE(retry.has_value() && retry->has_value()) << retry->error().message();
  EXPECT_EQ((*retry)->accepted, 1u);
  EXPECT_FALSE(d_.disk.refusing());
  EXPECT_TRUE(d_.writes_allowed().ok());

  engine::Recomputed r = stored();
  EXPECT_EQ(r.events, 2u);
  EXPECT_TRUE(r.problems.empty()) << r.problems[0];
}

// The periodic checkpoint's step (checkpoint.cc): it covers the sequence numbers installed, none
// of a commit rolled back, and writes nothing while the disk reserve refuses writes or when
// nothing was installed since the last file.
TEST_F(CommitTest, ACheckpointCoversWhatWasInstalledAndWaitsWhileTheDiskReserveRefuses) {
  char tmpl[] = "/tmp/tally-commit-ckpt-XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  d_.checkpoint_path = dir + "/aggregates.checkpoint";
  d_.config.storage.disk_reserve_bytes = 8 * kMiB;
  EXPECT_EQ(d_.installed_seq, 1u);
  std::optional<Result<IngestSummary>> first, refused, retry;
  std::vector<std::unique_ptr<engine::IngestJob>> jobs;
  jobs.push_back(job(
      R"([{"id":"a","customer":"c","type":"t"},{"id":"b","customer":"c","type":"t"}])", &first));
  commit(std::move(jobs));
  ASSERT_TRUE(first.has_value() && first->has_value());
  EXPECT_EQ(d_.installed_seq, 3u);

  store_->free_bytes = 8 * kMiB - 1;
  jobs.clear();
  jobs.push_back(job(R"({"id":"c","customer":"c","type":"t"})", &refused));
  commit(std::move(jobs));
  ASSERT_TRUE(refused.has_value() && !refused->has_value());
  EXPECT_EQ(d_.installed_seq, 3u) << "a rolled-back commit installs nothing";
  EXPECT_TRUE(d_.write_checkpoint_now().ok());
  EXPECT_FALSE(std::filesystem::exists(d_.checkpoint_path)) << "the reserve refuses writes";

  store_->free_bytes = 8 * kMiB;
  jobs.clear();
  jobs.push_back(job(R"({"id":"c","customer":"c","type":"t"})", &retry));
  commit(std::move(jobs));
  ASSERT_TRUE(retry.has_value() && retry->has_value()) << retry->error().message();
  EXPECT_EQ(d_.installed_seq, 4u);
  EXPECT_TRUE(d_.write_checkpoint_now().ok());
  EXPECT_TRUE(std::filesystem::exists(d_.checkpoint_path));
  EXPECT_EQ(d_.checkpoint_written_seq, 4u);
  std::filesystem::remove(d_.checkpoint_path);
  EXPECT_TRUE(d_.write_checkpoint_now().ok());
  EXPECT_FALSE(std::filesystem::exists(d_.checkpoint_path)) << "nothing new since the last one";
  std::filesystem::remove_all(dir);
}

TEST_F(CommitTest, AWriteThatFindsNoSpaceFailsEveryWaiterAndNothingWritesUntilTheStoreResumes) {
  d_.config.storage.disk_reserve_bytes = 0;  // no reserve: the store itself runs out
  std::optional<Result<IngestSummary>> one, two, still_full, after;
  store_->no_space = true;
  std::vector<std::unique_ptr<engine::IngestJob>> jobs;
  jobs.push_back(job(R"({"id":"a","customer":"c","type":"t"})", &one));
  jobs.push_back(job(R"({"id":"b","customer":"d","type":"t"})", &two));
  commit(std::move(jobs));
  // One commit, two waiters: neither is acknowledged.
  for (auto* answer : {&one, &two}) {
    ASSERT_TRUE(answer->has_value());
    ASSERT_FALSE((*answer)->has_value());
    EXPECT_EQ((*answer)->error().code(), StatusCode::kInsufficientStorage);
  }
  EXPECT_TRUE(d_.disk.refusing());
  EXPECT_EQ(d_.writes_allowed().code(), StatusCode::kInsufficientStorage);

  // Hardly any space is back: refused without even trying to resume the store.
  store_->no_space = false;
  store_->free_bytes = engine::DiskGuard::kResumeFreeBytesMin - 1;
  const int writes_before = store_->writes.load();
  std::optional<Result<IngestSummary>> barely;
  jobs.clear();
  jobs.push_back(job(R"({"id":"a","customer":"c","type":"t"})", &barely));
  commit(std::move(jobs));
  ASSERT_TRUE(barely.has_value());
  ASSERT_FALSE(barely->has_value());
  EXPECT_EQ(barely->error().code(), StatusCode::kInsufficientStorage);
  EXPECT_EQ(store_->resumes.load(), 0);
  EXPECT_EQ(store_->writes.load(), writes_before);

  // Space is back but the store cannot resume yet: refused, and no write reaches the store.
  store_->free_bytes = engine::DiskGuard::kResumeFreeBytesMin;
  store_->resume_fails = true;
  jobs.clear();
  jobs.push_back(job(R"({"id":"a","customer":"c","type":"t"})", &still_full));
  commit(std::move(jobs));
  ASSERT_TRUE(still_full.has_value());
  ASSERT_FALSE(still_full->has_value());
  EXPECT_EQ(still_full->error().code(), StatusCode::kInsufficientStorage);
  EXPECT_NE(still_full->error().message().find("resume found no space"), std::string::npos)
      << still_full->error().message();
  EXPECT_GE(store_->resumes.load(), 1);
  EXPECT_EQ(store_->writes.load(), writes_before);

  // The store resumes: writing goes on, and the retried events are stored once each.
  store_->resume_fails = false;
  jobs.clear();
  jobs.push_back(job(
      R"([{"id":"a","customer":"c","type":"t"},{"id":"b","customer":"d","type":"t"}])", &after));
  commit(std::move(jobs));
  ASSERT_TRUE(after.has_value() && after->has_value()) << after->error().message();
  EXPECT_EQ((*after)->accepted, 2u);
  EXPECT_FALSE(d_.disk.refusing());
  EXPECT_FALSE(store_->written_before_resume.load())
      << "a write reached the store after it found no space and before it resumed";

  engine::Recomputed r = stored();
  EXPECT_EQ(r.events, 2u);
  EXPECT_TRUE(r.problems.empty()) << r.problems[0];
}

std::int64_t steady_now_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// Queues the usage of one answered check in a job begun at `start_us` (made when the queue has
// no open check job); `waiter` makes a caller wait on it (check_durability = "sync").
void queue_check(engine::CommitQueue& q, std::int64_t start_us, bool waiter) {
  q.append_check_usage(
      1000,
      [start_us] {
        auto job = std::make_unique<engine::IngestJob>();
        job->start_us = start_us;
        return job;
      },
      [waiter](engine::IngestJob& job) {
        job.checks += 1;
        if (waiter) {
          job.check_waiters.emplace_back([](Status) {});
        }
      });
}

// Answered checks' usage waits up to kCheckGather from its first check for more to join its
// commit, and nothing else ever waits for it: a request queued behind it, or a caller waiting
// on it, ends the wait at once (the jobs below begin an hour ahead, so a wait that did not end
// would hold the test for an hour).
TEST(CommitQueueTest, AnsweredChecksWaitForMoreButHoldUpNothingElse) {
  using Taken = engine::CommitQueue::Taken;
  constexpr std::chrono::milliseconds kIdle{1000};
  constexpr std::int64_t kHourUs = 3'600'000'000;
  engine::CommitQueue q;
  q.start();
  engine::CommitQueue::Group group;

  const std::int64_t start = steady_now_us();
  queue_check(q, start, false);
  queue_check(q, start, false);
  ASSERT_EQ(q.take(kIdle, std::chrono::microseconds(0), 50'000, &group), Taken::kGroup);
  EXPECT_GE(steady_now_us() - start, engine::CommitQueue::kCheckGather.count());
  ASSERT_EQ(group.ingest.size(), 1u);
  EXPECT_EQ(group.ingest[0]->checks, 2u) << "both checks in the one job";
  q.finished(group.jobs());

  // An ingest request queued behind the checks.
  queue_check(q, steady_now_us() + kHourUs, false);
  std::thread request([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    auto job = std::make_unique<engine::IngestJob>();
    ASSERT_TRUE(q.push_ingest(job, 0).ok());
  });
  ASSERT_EQ(q.take(kIdle, std::chrono::microseconds(0), 50'000, &group), Taken::kGroup);
  request.join();
  EXPECT_EQ(group.ingest.size(), 2u) << "the checks and the request, in one commit";
  q.finished(group.jobs());

  // A caller waiting on the checks' commit.
  queue_check(q, steady_now_us() + kHourUs, true);
  ASSERT_EQ(q.take(kIdle, std::chrono::microseconds(0), 50'000, &group), Taken::kGroup);
  ASSERT_EQ(group.ingest.size(), 1u);
  q.finished(group.jobs());

  // A check that joins a gathering job with a caller waiting on it ends the wait too.
  queue_check(q, steady_now_us() + kHourUs, false);
  std::thread sync_check([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    queue_check(q, 0, true);
  });
  ASSERT_EQ(q.take(kIdle, std::chrono::microseconds(0), 50'000, &group), Taken::kGroup);
  sync_check.join();
  ASSERT_EQ(group.ingest.size(), 1u);
  EXPECT_EQ(group.ingest[0]->checks, 2u);
  q.finished(group.jobs());
  q.stop();
  EXPECT_EQ(q.take(kIdle, std::chrono::microseconds(0), 50'000, &group), Taken::kStop);
}

}  // namespace
}  // namespace tally
