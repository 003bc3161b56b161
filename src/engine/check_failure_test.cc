// Checks and the commits of their usage, on a store whose writes fail or wait on demand (through
// Engine::Impl::open): a check whose usage event could not be stored is retried by its client,
// and the retry must count; checks queued while a commit is in flight share usage events
// (MeterDef::merges_check_usage) and count exactly what each would have.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

#include "core/time.h"
#include "engine/engine_impl.h"
#include "engine/limits_impl.h"
#include "store/store.h"

namespace tally {
namespace {

constexpr const char* kConfig = R"(
[enforcement]
default_plan = "basic"
check_durability = "sync"

[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"

[[plans]]
key = "basic"
limits = [{ meter = "calls", period = "day", amount = 10 }]
)";

// A memory store whose writes fail, writing nothing, while `fail` is set, and wait while
// `hold()` holds them (until release()).
class FailingWrites final : public store::Store {
 public:
  std::atomic<bool> fail{false};

  Status write(const store::WriteBatch& batch, bool sync) override {
    {
      std::unique_lock lock(mutex_);
      ++waiting_;
      waiting_cv_.notify_all();
      released_cv_.wait(lock, [this] { return !held_; });
      --waiting_;
    }
    if (fail.load()) {
      return Status::io_error("injected write failure");
    }
    return inner_->write(batch, sync);
  }

  void hold() {
    std::lock_guard lock(mutex_);
    held_ = true;
  }

  // Returns once a write waits on the hold.
  void wait_for_writer() {
    std::unique_lock lock(mutex_);
    waiting_cv_.wait(lock, [this] { return waiting_ > 0; });
  }

  void release() {
    {
      std::lock_guard lock(mutex_);
      held_ = false;
    }
    released_cv_.notify_all();
  }

  Result<std::optional<std::string>> get(store::Space space, std::string_view key) const override {
    return inner_->get(space, key);
  }

  Status scan(store::Space space, std::string_view begin, std::string_view end,
              const store::ScanFn& fn) const override {
    return inner_->scan(space, begin, end, fn);
  }

  std::uint64_t size_bytes() const override { return 0; }

  std::string_view name() const override { return "failing-writes"; }

 private:
  std::unique_ptr<store::Store> inner_ = store::make_memory_store();
  std::mutex mutex_;
  std::condition_variable waiting_cv_;
  std::condition_variable released_cv_;
  bool held_ = false;
  int waiting_ = 0;
};

// An engine on a FailingWrites store (*disk) and `clock`, with the customer "acme"; null (and a
// failure) when it cannot be opened.
std::unique_ptr<Engine> open_with_acme(const char* config, FakeClock& clock, FailingWrites** disk) {
  auto store = std::make_unique<FailingWrites>();
  *disk = store.get();
  EngineOptions o;
  o.config_toml = config;
  o.clock = &clock;
  auto opened = Engine::Impl::open(o, std::move(store));
  if (!opened) {
    ADD_FAILURE() << opened.error().message();
    return nullptr;
  }
  Customer c;
  c.id = "acme";
  EXPECT_TRUE((*opened)->create_customer(c).has_value());
  return std::move(*opened);
}

// The meter's usage of "acme" over all time ("0" when none).
std::string usage_of(Engine& e, const std::string& meter) {
  MeterQuery q;
  q.meter = meter;
  q.customer = "acme";
  q.from_us = 0;
  q.to_us = 4'000'000'000'000'000;
  auto r = e.query(q);
  EXPECT_TRUE(r.has_value()) << r.error().message();
  return r && !r->rows.empty() ? r->rows[0].value : "0";
}

// Found by the simulation (tests/simulation): the id of a check whose commit failed stayed in
// the ids of consumed checks, so its retry was answered "replayed" and never counted.
TEST(CheckFailureTest, TheRetryOfACheckWhoseUsageWasNotStoredCounts) {
  FakeClock clock(1'768'899'600'000'000);
  FailingWrites* disk = nullptr;
  std::unique_ptr<Engine> engine = open_with_acme(kConfig, clock, &disk);
  ASSERT_NE(engine, nullptr);
  Engine& e = *engine;

  CheckRequest req;
  req.customer = "acme";
  req.meter = "calls";
  req.event_id = "req-1";
  disk->fail = true;
  auto failed = e.check(req);
  ASSERT_FALSE(failed.has_value()) << "with check_durability = sync the failure is told";
  EXPECT_EQ(failed.error().code(), StatusCode::kIOError);
  disk->fail = false;
  EXPECT_EQ(usage_of(e, "calls"), "0");

  auto retry = e.check(req);
  ASSERT_TRUE(retry.has_value()) << retry.error().message();
  EXPECT_TRUE(retry->allowed);
  EXPECT_FALSE(retry->replayed) << "nothing of the first check was stored";
  e.flush();
  EXPECT_EQ(usage_of(e, "calls"), "1");

  // Now it is stored: a further retry is a replay and counts nothing.
  auto again = e.check(req);
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_TRUE(again->replayed);
  e.flush();
  EXPECT_EQ(usage_of(e, "calls"), "1");
  auto v = e.verify();
  ASSERT_TRUE(v.has_value());
  EXPECT_TRUE(v->ok());
}

// A reservation whose commit could not be stored stays open, its hold in place: the commit's
// retry records the usage once.
TEST(CheckFailureTest, AReservationWhoseCommitWasNotStoredStaysOpen) {
  FakeClock clock(1'768'899'600'000'000);
  FailingWrites* disk = nullptr;
  std::unique_ptr<Engine> engine = open_with_acme(kConfig, clock, &disk);
  ASSERT_NE(engine, nullptr);
  Engine& e = *engine;
  CheckRequest req;
  req.customer = "acme";
  req.meter = "calls";
  req.amount = "8";
  req.consume = Consume::kReserve;
  auto held = e.check(req);
  ASSERT_TRUE(held.has_value()) << held.error().message();
  ASSERT_TRUE(held->allowed);

  disk->fail = true;
  auto failed = e.commit_reservation(held->reservation_id, "6");
  ASSERT_FALSE(failed.has_value());
  EXPECT_EQ(failed.error().code(), StatusCode::kIOError);
  disk->fail = false;
  e.flush();
  EXPECT_EQ(usage_of(e, "calls"), "0");
  req.amount = "3";
  req.consume = Consume::kNo;
  auto denied = e.check(req);
  ASSERT_TRUE(denied.has_value());
  EXPECT_FALSE(denied->allowed) << "the hold of 8 (of 10) is still in place";

  auto committed = e.commit_reservation(held->reservation_id, "6");
  ASSERT_TRUE(committed.has_value()) << committed.error().message();
  EXPECT_EQ(committed->amount.text(), "6");
  e.flush();
  EXPECT_EQ(usage_of(e, "calls"), "6");
  EXPECT_EQ(e.commit_reservation(held->reservation_id, "6").error().code(), StatusCode::kNotFound);
  auto v = e.verify();
  ASSERT_TRUE(v.has_value());
  EXPECT_TRUE(v->ok());
}

constexpr const char* kMergeConfig = R"(
[enforcement]
default_plan = "basic"

[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"

[[meters]]
key = "tokens"
event_type = "llm"
aggregation = "sum"
value = "$.n"

# Two meters of one type: their checks' events are never merged (a max is not a sum).
[[meters]]
key = "gpu"
event_type = "gpu"
aggregation = "sum"
value = "$.s"

[[meters]]
key = "gpu_peak"
event_type = "gpu"
aggregation = "max"
value = "$.s"

[[plans]]
key = "basic"
limits = [
  { meter = "calls", period = "day", amount = 10 },
  { meter = "tokens", period = "month", amount = 100 },
  { meter = "gpu", period = "day", amount = 100 },
]
)";

// The quantity of each stored event of `type`, and the text of its property `key` ("" = none).
std::vector<std::pair<std::uint32_t, std::string>> stored(Engine& e, const std::string& type,
                                                          const std::string& key) {
  EventListQuery q;
  q.customer = "acme";
  q.type = type;
  q.limit = 1000;
  auto page = e.list_events(q);
  EXPECT_TRUE(page.has_value()) << page.error().message();
  std::vector<std::pair<std::uint32_t, std::string>> out;
  for (const auto& ev : page ? page->events : std::vector<StoredEvent>{}) {
    std::string text;
    for (const auto& p : ev.properties) {
      text = p.key == key ? p.text : text;
    }
    out.emplace_back(ev.quantity, text);
  }
  std::sort(out.begin(), out.end());
  return out;
}

CheckRequest consume(const std::string& meter, const std::string& amount) {
  CheckRequest r;
  r.customer = "acme";
  r.meter = meter;
  r.amount = amount;
  return r;
}

// While one commit is in flight, the consuming checks queued behind it share one usage event
// per customer and meter, its quantity or value their sum: counted, limited and verified exactly
// as their own events would be. Checks with an event id or properties, and meters whose type
// feeds another meter, keep an event each.
TEST(CheckMergeTest, ChecksQueuedBehindACommitShareOneUsageEventAndCountExactly) {
  FakeClock clock(1'768'899'600'000'000);
  FailingWrites* disk = nullptr;
  std::unique_ptr<Engine> engine = open_with_acme(kMergeConfig, clock, &disk);
  ASSERT_NE(engine, nullptr);
  Engine& e = *engine;

  disk->hold();
  ASSERT_TRUE(e.check(consume("calls", "1"))->allowed);
  disk->wait_for_writer();  // its commit waits; what follows queues behind it
  for (const char* amount : {"1", "1", "2", "1"}) {
    clock.advance_us(1'000);
    ASSERT_TRUE(e.check(consume("calls", amount))->allowed);
  }
  CheckRequest with_id = consume("calls", "1");
  with_id.event_id = "req-7";
  ASSERT_TRUE(e.check(with_id)->allowed);
  CheckRequest with_props = consume("calls", "1");
  with_props.properties = {{"route", "/v1/chat"}};
  ASSERT_TRUE(e.check(with_props)->allowed);
  for (const char* amount : {"1.5", "2", "0.25"}) {
    ASSERT_TRUE(e.check(consume("tokens", amount))->allowed);
  }
  for (const char* amount : {"3", "5"}) {
    ASSERT_TRUE(e.check(consume("gpu", amount))->allowed);
  }
  // Counted in memory before any of it is stored: 8 of 10.
  EXPECT_FALSE(e.check(consume("calls", "3"))->allowed);
  disk->release();
  e.flush();

  EXPECT_EQ(usage_of(e, "calls"), "8");
  EXPECT_EQ(usage_of(e, "tokens"), "3.75");
  EXPECT_EQ(usage_of(e, "gpu"), "8");
  EXPECT_EQ(usage_of(e, "gpu_peak"), "5") << "each gpu check kept its own event";
  using Stored = std::vector<std::pair<std::uint32_t, std::string>>;
  EXPECT_EQ(stored(e, "api_call", "route"), (Stored{{1, ""}, {1, ""}, {1, "/v1/chat"}, {5, ""}}));
  EXPECT_EQ(stored(e, "llm", "n"), (Stored{{1, "3.75"}}));
  EXPECT_EQ(stored(e, "gpu", "s"), (Stored{{1, "3"}, {1, "5"}}));

  // Settled: the limit counts what was stored, no more and no less.
  CheckResult last = *e.check(consume("calls", "2"));
  EXPECT_TRUE(last.allowed);
  EXPECT_EQ(last.rule.used.text(), "10");
  EXPECT_FALSE(e.check(consume("calls", "1"))->allowed);
  EXPECT_TRUE(e.check(with_id)->replayed);
  e.flush();
  EXPECT_EQ(usage_of(e, "calls"), "10");
  auto v = e.verify();
  ASSERT_TRUE(v.has_value()) << v.error().message();
  EXPECT_TRUE(v->ok());
}

// A merged event's commit that fails frees every merged check's hold, as it does a single one.
TEST(CheckMergeTest, AFailedCommitOfAMergedEventFreesEveryCheckInIt) {
  FakeClock clock(1'768'899'600'000'000);
  FailingWrites* disk = nullptr;
  std::unique_ptr<Engine> engine = open_with_acme(kMergeConfig, clock, &disk);
  ASSERT_NE(engine, nullptr);
  Engine& e = *engine;

  disk->hold();
  ASSERT_TRUE(e.check(consume("calls", "1"))->allowed);
  disk->wait_for_writer();
  for (int i = 0; i < 6; ++i) {
    ASSERT_TRUE(e.check(consume("calls", "1"))->allowed);
  }
  disk->fail = true;
  disk->release();
  e.flush();
  disk->fail = false;
  EXPECT_EQ(usage_of(e, "calls"), "0");
  CheckResult all = *e.check(consume("calls", "10"));
  EXPECT_TRUE(all.allowed) << "nothing was stored, so nothing is held: " << all.message;
  e.flush();
  EXPECT_EQ(usage_of(e, "calls"), "10");
}

// The span a check's usage may share an event in: its minute, cut by any window or reset
// boundary of the meter's counters, so every check in it settles into the same windows.
TEST(CheckMergeTest, TheSettleSpanEndsAtEveryWindowBoundaryOfTheMeter) {
  constexpr core::TimeUs kMinute = core::kUsPerMinute;
  const core::TimeUs m0 = 1'000 * kMinute;
  engine::CustomerLimits cl;
  const core::TimeUs now = m0 + 20'000'000;
  EXPECT_EQ(engine::settle_span(cl, 0, now), std::make_pair(m0, m0 + kMinute));

  engine::LimitCounter& day = cl.counters.emplace_back();
  day.meter = 0;
  day.span = core::Span{m0 - 600 * kMinute, m0 + 840 * kMinute};
  day.count_from_us = m0 + 10'000'000;  // reset 10 s into the minute
  EXPECT_EQ(engine::settle_span(cl, 0, now), std::make_pair(m0 + 10'000'000, m0 + kMinute));
  EXPECT_EQ(engine::settle_span(cl, 0, m0 + 5'000'000), std::make_pair(m0, m0 + 10'000'000));

  engine::LimitCounter& trial = cl.counters.emplace_back();
  trial.meter = 0;
  trial.span = core::Span{m0 - 100 * kMinute, m0 + 30'500'000};  // ends mid-minute
  trial.count_from_us = trial.span.start;
  EXPECT_EQ(engine::settle_span(cl, 0, now), std::make_pair(m0 + 10'000'000, m0 + 30'500'000));
  EXPECT_EQ(engine::settle_span(cl, 0, m0 + 40'000'000),
            std::make_pair(m0 + 30'500'000, m0 + kMinute));

  engine::LimitCounter& other = cl.counters.emplace_back();
  other.meter = 1;  // another meter's windows do not matter
  other.span = core::Span{m0 + 25'000'000, m0 + 26'000'000};
  other.count_from_us = other.span.start;
  EXPECT_EQ(engine::settle_span(cl, 0, now), std::make_pair(m0 + 10'000'000, m0 + 30'500'000));
}

}  // namespace
}  // namespace tally
