// The denied checks of the last hour (denials.h): the ring by minute, sliding as the fake clock
// moves, counted where checks are denied (single and batch), and unknown customers refused.
#include "engine/denials.h"

#include <gtest/gtest.h>

#include <tally/engine.h>

#include "core/time.h"

namespace tally {
namespace {

TimeUs at(const char* rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

TEST(DenialCounterTest, SlidesByMinuteOverAnHour) {
  engine::DenialCounter d;
  const TimeUs t0 = at("2025-01-20T12:00:10Z");
  d.record(7, t0);
  d.record(7, t0 + 30 * core::kUsPerSecond);
  d.record(7, t0 + 5 * core::kUsPerMinute);
  d.record(8, t0);
  auto h = d.last_hour(7, t0 + 5 * core::kUsPerMinute);
  EXPECT_EQ(h[59], 1u);  // the current minute, 12:05
  EXPECT_EQ(h[54], 2u);  // 12:00
  std::uint64_t sum = 0;
  for (auto n : h)
    sum += n;
  EXPECT_EQ(sum, 3u);
  // 12:59: the 12:00 minute is the oldest of the hour, still in.
  h = d.last_hour(7, at("2025-01-20T12:59:59Z"));
  EXPECT_EQ(h[0], 2u);
  EXPECT_EQ(h[5], 1u);
  // 13:00: it has slid out; 13:05 takes the 12:05 minute out too.
  h = d.last_hour(7, at("2025-01-20T13:00:00Z"));
  EXPECT_EQ(h[0], 0u);
  EXPECT_EQ(h[4], 1u);
  h = d.last_hour(7, at("2025-01-20T13:05:00Z"));
  sum = 0;
  for (auto n : h)
    sum += n;
  EXPECT_EQ(sum, 0u);
  // A minute's bucket reused an hour later starts from zero.
  d.record(7, at("2025-01-20T13:00:20Z"));
  h = d.last_hour(7, at("2025-01-20T13:00:30Z"));
  EXPECT_EQ(h[59], 1u);
  EXPECT_EQ(d.last_hour(8, t0)[59], 1u);
  EXPECT_EQ(d.last_hour(9, t0)[59], 0u);  // never denied
  // Before the epoch (the fake clock may be anywhere).
  d.record(10, -90 * core::kUsPerSecond);
  EXPECT_EQ(d.last_hour(10, -61 * core::kUsPerSecond)[59], 1u);
}

constexpr const char* kConfig = R"(
[enforcement]
default_plan = "basic"

[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[plans]]
key = "basic"
limits = [{ meter = "api_calls", period = "day", amount = 2 }]
)";

TEST(EngineDenialsTest, DeniedChecksOfTheLastHourByMinute) {
  FakeClock clock(at("2025-01-20T12:00:00Z"));
  EngineOptions o;
  o.in_memory = true;
  o.config_toml = kConfig;
  o.clock = &clock;
  auto e = Engine::open(o);
  ASSERT_TRUE(e.has_value()) << e.error().message();
  Engine& eng = **e;
  for (const char* id : {"acme", "other"}) {
    Customer c;
    c.id = id;
    ASSERT_TRUE(eng.create_customer(c).has_value());
  }
  CheckRequest r;
  r.customer = "acme";
  r.meter = "api_calls";
  r.amount = "1";
  int denied = 0;
  for (int i = 0; i < 5; ++i) {
    auto out = eng.check(r);
    ASSERT_TRUE(out.has_value());
    denied += out->allowed ? 0 : 1;
  }
  EXPECT_EQ(denied, 3);
  auto h = eng.denials_last_hour("acme");
  ASSERT_TRUE(h.has_value());
  EXPECT_EQ(h->total, 3u);
  ASSERT_EQ(h->per_minute.size(), 60u);
  EXPECT_EQ(h->per_minute.back(), 3u);
  EXPECT_EQ(core::format_rfc3339(h->to_us), "2025-01-20T12:01:00Z");
  EXPECT_EQ(core::format_rfc3339(h->from_us), "2025-01-20T11:01:00Z");
  // A batch with one denied check counts that one (its allowed sibling is not consumed and not
  // denied by a limit).
  clock.advance_us(10 * core::kUsPerMinute);
  CheckRequest other = r;
  other.customer = "other";
  auto b = eng.check_batch({other, r});
  ASSERT_TRUE(b.has_value());
  EXPECT_FALSE((*b)[1].allowed);
  h = eng.denials_last_hour("acme");
  EXPECT_EQ(h->total, 4u);
  EXPECT_EQ(h->per_minute[49], 3u);
  EXPECT_EQ(h->per_minute[59], 1u);
  EXPECT_EQ(eng.denials_last_hour("other")->total, 0u);
  // An allowed check changes nothing; an hour later it is all gone.
  clock.advance_us(core::kUsPerHour);
  EXPECT_EQ(eng.denials_last_hour("acme")->total, 0u);
  EXPECT_EQ(eng.denials_last_hour("ghost").error().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace tally
