// Checks whose usage event could not be stored: a client told so retries, and the retry must
// count. On a store whose writes fail on demand (through Engine::Impl::open).
#include <atomic>
#include <memory>
#include <optional>

#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

#include "engine/engine_impl.h"
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

// A memory store whose writes fail, writing nothing, while `fail` is set.
class FailingWrites final : public store::Store {
 public:
  std::atomic<bool> fail{false};

  Status write(const store::WriteBatch& batch, bool sync) override {
    if (fail.load()) {
      return Status::io_error("injected write failure");
    }
    return inner_->write(batch, sync);
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
};

std::string calls_of(Engine& e, const std::string& customer) {
  MeterQuery q;
  q.meter = "calls";
  q.customer = customer;
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
  auto store = std::make_unique<FailingWrites>();
  FailingWrites* disk = store.get();
  EngineOptions o;
  o.config_toml = kConfig;
  o.clock = &clock;
  auto opened = Engine::Impl::open(o, std::move(store));
  ASSERT_TRUE(opened.has_value()) << opened.error().message();
  Engine& e = **opened;
  Customer c;
  c.id = "acme";
  ASSERT_TRUE(e.create_customer(c).has_value());

  CheckRequest req;
  req.customer = "acme";
  req.meter = "calls";
  req.event_id = "req-1";
  disk->fail = true;
  auto failed = e.check(req);
  ASSERT_FALSE(failed.has_value()) << "with check_durability = sync the failure is told";
  EXPECT_EQ(failed.error().code(), StatusCode::kIOError);
  disk->fail = false;
  EXPECT_EQ(calls_of(e, "acme"), "0");

  auto retry = e.check(req);
  ASSERT_TRUE(retry.has_value()) << retry.error().message();
  EXPECT_TRUE(retry->allowed);
  EXPECT_FALSE(retry->replayed) << "nothing of the first check was stored";
  e.flush();
  EXPECT_EQ(calls_of(e, "acme"), "1");

  // Now it is stored: a further retry is a replay and counts nothing.
  auto again = e.check(req);
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_TRUE(again->replayed);
  e.flush();
  EXPECT_EQ(calls_of(e, "acme"), "1");
  auto v = e.verify();
  ASSERT_TRUE(v.has_value());
  EXPECT_TRUE(v->ok());
}

// A reservation whose commit could not be stored stays open, its hold in place: the commit's
// retry records the usage once.
TEST(CheckFailureTest, AReservationWhoseCommitWasNotStoredStaysOpen) {
  FakeClock clock(1'768'899'600'000'000);
  auto store = std::make_unique<FailingWrites>();
  FailingWrites* disk = store.get();
  EngineOptions o;
  o.config_toml = kConfig;
  o.clock = &clock;
  auto opened = Engine::Impl::open(o, std::move(store));
  ASSERT_TRUE(opened.has_value()) << opened.error().message();
  Engine& e = **opened;
  Customer c;
  c.id = "acme";
  ASSERT_TRUE(e.create_customer(c).has_value());
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
  EXPECT_EQ(calls_of(e, "acme"), "0");
  req.amount = "3";
  req.consume = Consume::kNo;
  auto denied = e.check(req);
  ASSERT_TRUE(denied.has_value());
  EXPECT_FALSE(denied->allowed) << "the hold of 8 (of 10) is still in place";

  auto committed = e.commit_reservation(held->reservation_id, "6");
  ASSERT_TRUE(committed.has_value()) << committed.error().message();
  EXPECT_EQ(committed->amount.text(), "6");
  e.flush();
  EXPECT_EQ(calls_of(e, "acme"), "6");
  EXPECT_EQ(e.commit_reservation(held->reservation_id, "6").error().code(), StatusCode::kNotFound);
  auto v = e.verify();
  ASSERT_TRUE(v.has_value());
  EXPECT_TRUE(v->ok());
}

}  // namespace
}  // namespace tally
