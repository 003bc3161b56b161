// White-box tests of the group commit (Engine::Impl::commit_ingest), driven directly on a store
// that fails on demand, without the commit thread: what a failing store does to one commit.
#include <atomic>
#include <optional>

#include <gtest/gtest.h>

#include "engine/engine_impl.h"

namespace tally {
namespace {

// A memory store whose reads of stored events fail while `fail_event_reads` is set.
class FlakyStore final : public store::Store {
 public:
  std::atomic<bool> fail_event_reads{false};

  Status write(const store::WriteBatch& batch, bool sync) override {
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

 private:
  std::unique_ptr<store::Store> inner_ = store::make_memory_store();
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

}  // namespace
}  // namespace tally
