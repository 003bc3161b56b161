// Tests for core/limits: period names, calendar windows of limits in a zone with DST, billing
// periods anchored on the 31st, the trial window, lifetime, and GCRA rate limits (exact burst,
// steady drain, no doubling at a window boundary, retry-after).
#include "core/limits.h"

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace tally::core {
namespace {

TimeUs at(std::string_view text) {
  Result<TimeUs> r = parse_rfc3339(text);
  EXPECT_TRUE(r.has_value()) << text << ": " << r.status().to_string();
  return r.has_value() ? *r : 0;
}

TimeZone zone(std::string_view name) {
  Result<TimeZone> r = TimeZone::find(name);
  EXPECT_TRUE(r.has_value()) << name << ": " << r.status().to_string();
  return r.has_value() ? *r : TimeZone();
}

LimitRule rule(PeriodKind p, std::int64_t amount, std::int64_t days = 0) {
  LimitRule r;
  r.meter = "api_calls";
  r.period = p;
  r.days = days;
  r.amount = Decimal::from_int(amount);
  return r;
}

// The window of `p` containing t, as RFC 3339 text "start..end", or "outside".
std::string span_text(PeriodKind p, std::string_view t, const PeriodContext& ctx,
                      std::int64_t days = 0) {
  Span s;
  if (!period_span(rule(p, 1, days), at(t), ctx, &s)) {
    return "outside";
  }
  return format_rfc3339(s.start) + ".." + format_rfc3339(s.end);
}

PeriodContext in_zone(std::string_view name) {
  PeriodContext c;
  c.tz = zone(name);
  return c;
}

// ---- period names ----------------------------------------------------------------------------

TEST(ParsePeriod, EveryNameRoundTrips) {
  for (const char* name : {"second", "minute", "hour", "day", "week", "month", "billing_period",
                           "trial", "lifetime"}) {
    Result<PeriodKind> p = parse_period(name);
    ASSERT_TRUE(p.has_value()) << name;
    EXPECT_EQ(period_name(*p), name);
  }
  EXPECT_TRUE(period_is_rate(PeriodKind::kSecond));
  EXPECT_TRUE(period_is_rate(PeriodKind::kMinute));
  EXPECT_TRUE(period_is_rate(PeriodKind::kHour));
  EXPECT_FALSE(period_is_rate(PeriodKind::kDay));
  EXPECT_FALSE(period_is_rate(PeriodKind::kLifetime));
  EXPECT_EQ(rate_period_us(PeriodKind::kSecond), kUsPerSecond);
  EXPECT_EQ(rate_period_us(PeriodKind::kMinute), kUsPerMinute);
  EXPECT_EQ(rate_period_us(PeriodKind::kHour), kUsPerHour);
}

TEST(ParsePeriod, RefusesUnknownNames) {
  for (const char* name : {"", "days", "Minute", "monthly", "year", "billing", " day"}) {
    Result<PeriodKind> p = parse_period(name);
    ASSERT_FALSE(p.has_value()) << "'" << name << "' parsed";
    EXPECT_EQ(p.error().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(p.error().message().find("unknown period"), std::string::npos) << p.error().message();
    EXPECT_NE(p.error().message().find("billing_period"), std::string::npos)
        << "the message lists the valid names: " << p.error().message();
  }
}

// ---- calendar windows in America/New_York -----------------------------------------------------

TEST(PeriodSpanNewYork, DayWeekMonthOnAnOrdinaryDay) {
  const PeriodContext ny = in_zone("America/New_York");
  // 2025-01-17 12:00 EST.
  EXPECT_EQ(span_text(PeriodKind::kDay, "2025-01-17T17:00:00Z", ny),
            "2025-01-17T05:00:00Z..2025-01-18T05:00:00Z");
  // Local 23:59:59 still belongs to the 17th; local midnight starts the 18th.
  EXPECT_EQ(span_text(PeriodKind::kDay, "2025-01-18T04:59:59Z", ny),
            "2025-01-17T05:00:00Z..2025-01-18T05:00:00Z");
  EXPECT_EQ(span_text(PeriodKind::kDay, "2025-01-18T05:00:00Z", ny),
            "2025-01-18T05:00:00Z..2025-01-19T05:00:00Z");
  // Friday the 17th: the ISO week began on Monday the 13th.
  EXPECT_EQ(span_text(PeriodKind::kWeek, "2025-01-17T17:00:00Z", ny),
            "2025-01-13T05:00:00Z..2025-01-20T05:00:00Z");
  EXPECT_EQ(span_text(PeriodKind::kMonth, "2025-01-17T17:00:00Z", ny),
            "2025-01-01T05:00:00Z..2025-02-01T05:00:00Z");
  // 2025-02-01T03:00Z is still January 31st in New York.
  EXPECT_EQ(span_text(PeriodKind::kMonth, "2025-02-01T03:00:00Z", ny),
            "2025-01-01T05:00:00Z..2025-02-01T05:00:00Z");
}

TEST(PeriodSpanNewYork, SpringForwardDayIs23Hours) {
  const PeriodContext ny = in_zone("America/New_York");
  Span s;
  ASSERT_TRUE(period_span(rule(PeriodKind::kDay, 1), at("2025-03-09T12:00:00Z"), ny, &s));
  EXPECT_EQ(format_rfc3339(s.start), "2025-03-09T05:00:00Z");  // midnight EST
  EXPECT_EQ(format_rfc3339(s.end), "2025-03-10T04:00:00Z");    // midnight EDT
  EXPECT_EQ(s.end - s.start, 23 * kUsPerHour);
  // The week holding the change is an hour short; the month too.
  EXPECT_EQ(span_text(PeriodKind::kWeek, "2025-03-09T12:00:00Z", ny),
            "2025-03-03T05:00:00Z..2025-03-10T04:00:00Z");
  EXPECT_EQ(span_text(PeriodKind::kMonth, "2025-03-09T12:00:00Z", ny),
            "2025-03-01T05:00:00Z..2025-04-01T04:00:00Z");
}

TEST(PeriodSpanNewYork, FallBackDayIs25Hours) {
  const PeriodContext ny = in_zone("America/New_York");
  Span s;
  // 01:30 local happens twice on 2025-11-02; both belong to the same day.
  for (const char* t : {"2025-11-02T05:30:00Z", "2025-11-02T06:30:00Z", "2025-11-03T04:59:59Z"}) {
    ASSERT_TRUE(period_span(rule(PeriodKind::kDay, 1), at(t), ny, &s)) << t;
    EXPECT_EQ(format_rfc3339(s.start), "2025-11-02T04:00:00Z") << t;
    EXPECT_EQ(format_rfc3339(s.end), "2025-11-03T05:00:00Z") << t;
    EXPECT_EQ(s.end - s.start, 25 * kUsPerHour) << t;
  }
  EXPECT_EQ(span_text(PeriodKind::kMonth, "2025-11-15T12:00:00Z", ny),
            "2025-11-01T04:00:00Z..2025-12-01T05:00:00Z");
}

TEST(PeriodSpan, SpansTileTimeAcrossAYearInNewYork) {
  const PeriodContext ny = in_zone("America/New_York");
  for (PeriodKind p : {PeriodKind::kDay, PeriodKind::kWeek, PeriodKind::kMonth}) {
    Span s;
    ASSERT_TRUE(period_span(rule(p, 1), at("2025-01-01T12:00:00Z"), ny, &s));
    for (int i = 0; i < 60; ++i) {
      Span next;
      ASSERT_TRUE(period_span(rule(p, 1), s.end, ny, &next));
      EXPECT_EQ(next.start, s.end) << period_name(p) << " at " << format_rfc3339(s.end);
      Span last;
      ASSERT_TRUE(period_span(rule(p, 1), s.end - 1, ny, &last));
      EXPECT_EQ(last.start, s.start) << period_name(p);
      s = next;
    }
  }
}

// ---- billing periods -----------------------------------------------------------------------

TEST(BillingPeriod, AnchorOnThe31stClampsToShortMonthsInALeapYear) {
  PeriodContext c;
  c.billing_anchor_us = at("2024-01-31T15:00:00Z");
  auto span = [&](const char* t) {
    return span_text(PeriodKind::kBillingPeriod, t, c);
  };
  EXPECT_EQ(span("2024-01-31T15:00:00Z"), "2024-01-31T00:00:00Z..2024-02-29T00:00:00Z");
  EXPECT_EQ(span("2024-02-15T00:00:00Z"), "2024-01-31T00:00:00Z..2024-02-29T00:00:00Z");
  EXPECT_EQ(span("2024-02-28T23:59:59Z"), "2024-01-31T00:00:00Z..2024-02-29T00:00:00Z");
  EXPECT_EQ(span("2024-02-29T00:00:00Z"), "2024-02-29T00:00:00Z..2024-03-31T00:00:00Z");
  EXPECT_EQ(span("2024-03-30T12:00:00Z"), "2024-02-29T00:00:00Z..2024-03-31T00:00:00Z");
  EXPECT_EQ(span("2024-03-31T00:00:00Z"), "2024-03-31T00:00:00Z..2024-04-30T00:00:00Z");
  EXPECT_EQ(span("2024-04-30T00:00:00Z"), "2024-04-30T00:00:00Z..2024-05-31T00:00:00Z");
  EXPECT_EQ(span("2024-12-31T10:00:00Z"), "2024-12-31T00:00:00Z..2025-01-31T00:00:00Z");
}

TEST(BillingPeriod, AnchorOnThe31stInACommonYear) {
  PeriodContext c;
  c.billing_anchor_us = at("2025-01-31T00:00:00Z");
  auto span = [&](const char* t) {
    return span_text(PeriodKind::kBillingPeriod, t, c);
  };
  EXPECT_EQ(span("2025-02-27T23:59:59Z"), "2025-01-31T00:00:00Z..2025-02-28T00:00:00Z");
  EXPECT_EQ(span("2025-02-28T00:00:00Z"), "2025-02-28T00:00:00Z..2025-03-31T00:00:00Z");
  EXPECT_EQ(span("2025-03-01T00:00:00Z"), "2025-02-28T00:00:00Z..2025-03-31T00:00:00Z");
  EXPECT_EQ(span("2025-04-01T00:00:00Z"), "2025-03-31T00:00:00Z..2025-04-30T00:00:00Z");
}

TEST(BillingPeriod, AnchorDayIsTheLocalDayInTheCustomersZone) {
  PeriodContext c = in_zone("America/New_York");
  // 03:00Z on Feb 1st is still January 31st (22:00 EST) in New York: the anchor day is 31.
  c.billing_anchor_us = at("2024-02-01T03:00:00Z");
  auto span = [&](const char* t) {
    return span_text(PeriodKind::kBillingPeriod, t, c);
  };
  EXPECT_EQ(span("2024-02-10T12:00:00Z"), "2024-01-31T05:00:00Z..2024-02-29T05:00:00Z");
  EXPECT_EQ(span("2024-03-05T12:00:00Z"), "2024-02-29T05:00:00Z..2024-03-31T04:00:00Z");
  EXPECT_EQ(span("2024-04-10T12:00:00Z"), "2024-03-31T04:00:00Z..2024-04-30T04:00:00Z");
}

TEST(BillingPeriod, MidMonthAnchorAcrossDst) {
  PeriodContext c = in_zone("America/New_York");
  c.billing_anchor_us = at("2025-01-09T15:00:00Z");  // the 9th
  // The period holding the spring-forward day starts at midnight EST and ends at midnight EDT.
  EXPECT_EQ(span_text(PeriodKind::kBillingPeriod, "2025-03-09T12:00:00Z", c),
            "2025-03-09T05:00:00Z..2025-04-09T04:00:00Z");
  EXPECT_EQ(span_text(PeriodKind::kBillingPeriod, "2025-03-09T04:59:59Z", c),
            "2025-02-09T05:00:00Z..2025-03-09T05:00:00Z");
}

// ---- trial and lifetime -----------------------------------------------------------------------

TEST(TrialPeriod, RunsDaysFromTheMinuteOfTheTrialStart) {
  PeriodContext c;
  c.trial_start_us = at("2025-01-10T10:30:45Z");
  auto trial = [&](const char* t) {
    return span_text(PeriodKind::kTrial, t, c, 7);
  };
  EXPECT_EQ(trial("2025-01-10T10:30:00Z"), "2025-01-10T10:30:00Z..2025-01-17T10:30:00Z");
  EXPECT_EQ(trial("2025-01-13T00:00:00Z"), "2025-01-10T10:30:00Z..2025-01-17T10:30:00Z");
  EXPECT_EQ(trial("2025-01-17T10:29:59.999999Z"), "2025-01-10T10:30:00Z..2025-01-17T10:30:00Z");
  // Before and after it there is no window.
  EXPECT_EQ(trial("2025-01-10T10:29:59Z"), "outside");
  EXPECT_EQ(trial("2025-01-17T10:30:00Z"), "outside");
  EXPECT_EQ(trial("2025-03-01T00:00:00Z"), "outside");
  // The span is still reported when outside (for window_start).
  Span s;
  EXPECT_FALSE(period_span(rule(PeriodKind::kTrial, 1, 7), at("2025-02-01T00:00:00Z"), c, &s));
  EXPECT_EQ(format_rfc3339(s.start), "2025-01-10T10:30:00Z");
  EXPECT_EQ(format_rfc3339(s.end), "2025-01-17T10:30:00Z");
}

TEST(TrialPeriod, IsSevenTimes24HoursEvenAcrossDst) {
  PeriodContext c = in_zone("America/New_York");
  c.trial_start_us = at("2025-03-05T17:00:00Z");
  Span s;
  ASSERT_TRUE(period_span(rule(PeriodKind::kTrial, 1, 7), at("2025-03-10T12:00:00Z"), c, &s));
  EXPECT_EQ(s.end - s.start, 7 * kUsPerDay);
}

TEST(LifetimePeriod, CoversAllTime) {
  PeriodContext c = in_zone("America/New_York");
  for (const char* t : {"1970-01-01T00:00:00Z", "2025-01-17T12:00:00Z", "2099-12-31T23:59:59Z"}) {
    Span s;
    ASSERT_TRUE(period_span(rule(PeriodKind::kLifetime, 1), at(t), c, &s)) << t;
    EXPECT_EQ(s.start, 0);
    EXPECT_EQ(s.end, std::numeric_limits<TimeUs>::max());
    EXPECT_TRUE(s.contains(at(t)));
  }
}

// ---- GCRA ------------------------------------------------------------------------------------

// A GCRA bucket driven like the engine drives it: evaluate, and on allow keep the new level.
class Bucket {
 public:
  Bucket(std::int64_t limit, TimeUs period_us)
      : limit_(Decimal::from_int(limit)), period_(period_us) {}

  RateDecision take(TimeUs now, std::int64_t amount = 1) {
    RateDecision d = rate_evaluate(s_, limit_, period_, Decimal::from_int(amount), now);
    if (d.allowed) {
      s_.level = d.level_after;
      s_.at_us = now;
    }
    return d;
  }

  // How many single units are admitted when asked for one by one at `now`.
  int burst(TimeUs now, int attempts) {
    int n = 0;
    for (int i = 0; i < attempts; ++i) {
      n += take(now).allowed ? 1 : 0;
    }
    return n;
  }

  const RateState& state() const { return s_; }

 private:
  Decimal limit_;
  TimeUs period_;
  RateState s_;
};

TEST(Gcra, ExactlyLimitInABurstThenOnePerIntervalPerUnit) {
  const TimeUs t0 = at("2025-01-17T14:00:00Z");
  Bucket b(60, kUsPerMinute);
  EXPECT_EQ(b.burst(t0, 100), 60);
  // Full: the next unit fits after one emission interval (60 s / 60 = 1 s), not before.
  RateDecision d = b.take(t0);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_us, kUsPerSecond);
  EXPECT_EQ(d.remaining, Decimal{});
  EXPECT_EQ(d.reset_us, t0 + kUsPerMinute);  // empty a minute after the burst
  d = b.take(t0 + kUsPerSecond / 2);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_us, kUsPerSecond / 2);
  EXPECT_EQ(b.burst(t0 + kUsPerSecond - 1, 5), 0);
  EXPECT_EQ(b.burst(t0 + kUsPerSecond, 5), 1);
  // Steady state: one per second, for a minute.
  for (int i = 2; i <= 61; ++i) {
    EXPECT_EQ(b.burst(t0 + i * kUsPerSecond, 3), 1) << "second " << i;
  }
  // After a quiet minute the whole burst is available again.
  EXPECT_EQ(b.burst(t0 + 200 * kUsPerSecond, 100), 60);
}

TEST(Gcra, RetryAfterForALargerAmount) {
  const TimeUs t0 = at("2025-01-17T14:00:00Z");
  Bucket b(10, kUsPerSecond);  // 10 per second: a unit drains every 100 ms
  EXPECT_TRUE(b.take(t0, 8).allowed);
  RateDecision d = b.take(t0, 5);  // 13 > 10: 3 units must drain first
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.retry_after_us, 300'000);
  EXPECT_EQ(d.remaining, Decimal::from_int(2));
  EXPECT_FALSE(b.take(t0 + 299'999, 5).allowed);
  EXPECT_TRUE(b.take(t0 + 300'000, 5).allowed);
  // An amount above the limit never fits; asking does not change the bucket.
  const RateState before = b.state();
  EXPECT_FALSE(b.take(t0 + 10 * kUsPerSecond, 11).allowed);
  EXPECT_EQ(b.state().level, before.level);
  EXPECT_EQ(b.state().at_us, before.at_us);
}

TEST(Gcra, NoDoublingAtAMinuteBoundary) {
  // A fixed-window counter would admit 60 at 14:00:59.999 and 60 more at 14:01:00.000.
  const TimeUs boundary = at("2025-01-17T14:01:00Z");
  Bucket b(60, kUsPerMinute);
  EXPECT_EQ(b.burst(boundary - 1000, 100), 60);
  EXPECT_EQ(b.burst(boundary, 100), 0);  // 1 ms drained 0.001 units
  // In the minute after the burst began, at most the limit plus what drained in between.
  int later = 0;
  for (TimeUs t = boundary; t < boundary - 1000 + kUsPerMinute; t += 100'000) {
    later += b.burst(t, 10);
  }
  EXPECT_LE(60 + later, 60 + 60);  // 60 + drained(60 s) is the GCRA bound
  EXPECT_EQ(later, 59);            // one per second: the first unit drained at 14:01:00.999
}

TEST(Gcra, AnyIntervalAdmitsAtMostLimitPlusDrained) {
  // Random arrivals: for every pair of admitted units, the count between them is bounded by
  // limit + limit * (t_j - t_i) / period (+1 for the unit at t_j on a whole emission boundary).
  constexpr std::int64_t kLimit = 20;
  const TimeUs period = kUsPerMinute;
  std::mt19937_64 rng(42);
  std::uniform_int_distribution<TimeUs> gap(0, 2 * kUsPerSecond);
  std::uniform_int_distribution<int> burst(1, 30);
  Bucket b(kLimit, period);
  std::vector<TimeUs> admitted;
  TimeUs t = at("2025-01-17T14:00:00Z");
  for (int i = 0; i < 3000; ++i) {
    t += gap(rng);
    const int n = burst(rng);
    for (int k = 0; k < n; ++k) {
      if (b.take(t).allowed) {
        admitted.push_back(t);
      }
    }
  }
  ASSERT_GT(admitted.size(), 100u);
  for (std::size_t i = 0; i < admitted.size(); ++i) {
    for (std::size_t j = i; j < admitted.size() && admitted[j] - admitted[i] <= 3 * period; ++j) {
      const TimeUs span = admitted[j] - admitted[i];
      const auto count = static_cast<std::int64_t>(j - i + 1);
      const std::int64_t bound = kLimit + kLimit * span / period;
      ASSERT_LE(count, bound) << "between " << format_rfc3339(admitted[i]) << " and "
                              << format_rfc3339(admitted[j]);
    }
  }
}

TEST(Gcra, FractionalAmountsAndClockGoingBackwards) {
  const TimeUs t0 = at("2025-01-17T14:00:00Z");
  RateState s;
  const Decimal limit = Decimal::from_int(1);
  RateDecision d = rate_evaluate(s, limit, kUsPerSecond, Decimal{Decimal::kScale / 4}, t0);
  ASSERT_TRUE(d.allowed);
  EXPECT_EQ(format_decimal(d.remaining), "0.75");
  s.level = d.level_after;
  s.at_us = t0;
  // A clock that steps back drains nothing (and never fills).
  EXPECT_EQ(rate_level(s, limit, kUsPerSecond, t0 - kUsPerSecond), s.level);
  EXPECT_EQ(rate_level(s, limit, kUsPerSecond, t0 + kUsPerSecond / 8),
            Decimal{Decimal::kScale / 8});
  EXPECT_EQ(rate_level(s, limit, kUsPerSecond, t0 + kUsPerSecond), Decimal{});
}

TEST(DecimalRounding, FloorAndCeil) {
  auto dec = [](const char* t) {
    return *parse_decimal(t);
  };
  EXPECT_EQ(decimal_floor_int(dec("2.9")), 2);
  EXPECT_EQ(decimal_floor_int(dec("-1.5")), -2);
  EXPECT_EQ(decimal_floor_int(dec("7")), 7);
  EXPECT_EQ(decimal_ceil_int(dec("1.2")), 2);
  EXPECT_EQ(decimal_ceil_int(dec("-1.5")), -1);
  EXPECT_EQ(decimal_ceil_int(dec("7")), 7);
}

// ---- ad-hoc limits ----------------------------------------------------------------------------

TEST(WindowDecide, CountsUpToTheLimitWithinOneAlignedWindow) {
  const TimeUs minute = 60'000'000;
  const TimeUs now = 10 * minute + 5'000'000;  // 5 s into a window
  WindowCount c;
  WindowDecision d = window_decide(c, 3, minute, 2, now);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.window_start_us, 10 * minute);
  EXPECT_EQ(d.reset_us, 11 * minute);
  EXPECT_EQ(d.used_after, 2);
  EXPECT_EQ(d.remaining, 1);
  c = WindowCount{d.window_start_us, d.used_after};
  d = window_decide(c, 3, minute, 2, now + 1);
  EXPECT_FALSE(d.allowed) << "2 more would make 4 of 3";
  EXPECT_EQ(d.used_after, 2) << "a denial counts nothing";
  EXPECT_EQ(d.remaining, 1);
  d = window_decide(c, 3, minute, 1, now + 2);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.remaining, 0);
  c = WindowCount{d.window_start_us, d.used_after};
  EXPECT_TRUE(window_decide(c, 3, minute, 0, now).allowed) << "a cost of 0 only asks";
  // The next window starts from zero, exactly at its boundary.
  d = window_decide(c, 3, minute, 3, 11 * minute);
  EXPECT_TRUE(d.allowed);
  EXPECT_EQ(d.window_start_us, 11 * minute);
  EXPECT_FALSE(window_decide(c, 3, minute, 1, 11 * minute - 1).allowed);
}

TEST(WindowDecide, ExtremesNeitherOverflowNorAdmitTooMuch) {
  const TimeUs hour = 3'600'000'000;
  WindowCount c{0, INT64_MAX - 1};
  EXPECT_FALSE(window_decide(c, INT64_MAX, hour, 2, 5).allowed);
  EXPECT_TRUE(window_decide(c, INT64_MAX, hour, 1, 5).allowed);
  EXPECT_FALSE(window_decide(WindowCount{}, 0, hour, 1, 5).allowed)
      << "a limit of 0 admits nothing";
  EXPECT_FALSE(window_decide(WindowCount{}, 5, hour, INT64_MAX, 5).allowed);
  // Negative times (before 1970) align the same way.
  const WindowDecision d = window_decide(WindowCount{}, 1, hour, 1, -1);
  EXPECT_EQ(d.window_start_us, -hour);
  EXPECT_EQ(d.reset_us, 0);
}

// ---- a check's verdict (evaluate_limits, outcomes_after): a pure function of numbers, tested
// the way Envoy tests its local rate limiter: inputs at an instant, the decision and every
// number of the answer.

Decimal dec(std::string_view text) {
  return *parse_decimal(text);
}

LimitInput calendar(const LimitRule& r, std::string_view used, TimeUs start, TimeUs reset) {
  LimitInput x;
  x.rule = &r;
  x.used = dec(used);
  x.window_start_us = start;
  x.reset_us = reset;
  return x;
}

TEST(EvaluateLimits, AFittingAmountIsAllowedWithItsNumbersBeforeConsumption) {
  const LimitRule day = rule(PeriodKind::kDay, 1000);
  const TimeUs now = at("2025-01-20T12:00:00Z");
  const LimitInput in[] = {
      calendar(day, "998", at("2025-01-20T00:00:00Z"), at("2025-01-21T00:00:00Z"))};
  LimitOutcome out[1];
  const Verdict v = evaluate_limits(in, 1, dec("2"), now, out);
  EXPECT_TRUE(v.allowed);
  EXPECT_FALSE(v.overage);
  EXPECT_EQ(v.top, 0);
  EXPECT_TRUE(out[0].fits);
  EXPECT_EQ(out[0].used, dec("998"));
  EXPECT_EQ(out[0].remaining, dec("2"));
  EXPECT_EQ(out[0].headroom, dec("2"));
  EXPECT_EQ(out[0].reset_us, at("2025-01-21T00:00:00Z"));
  EXPECT_EQ(out[0].retry_after_us, 0);
  // Consumed: the window's usage grows by the amount.
  EXPECT_EQ(outcomes_after(in, 1, dec("2"), now, out), 0);
  EXPECT_EQ(out[0].used, dec("1000"));
  EXPECT_EQ(out[0].remaining, Decimal{});
}

TEST(EvaluateLimits, OneUnitOverAHardLimitIsDeniedUntilTheWindowEnds) {
  const LimitRule day = rule(PeriodKind::kDay, 1000);
  const TimeUs now = at("2025-01-20T12:00:00Z");
  const LimitInput in[] = {
      calendar(day, "999.5", at("2025-01-20T00:00:00Z"), at("2025-01-21T00:00:00Z"))};
  LimitOutcome out[1];
  const Verdict v = evaluate_limits(in, 1, dec("1"), now, out);
  EXPECT_FALSE(v.allowed);
  EXPECT_FALSE(v.trial_over);
  EXPECT_EQ(v.top, 0);
  EXPECT_EQ(v.retry_after_us, 12 * kUsPerHour);
  EXPECT_EQ(out[0].remaining, dec("0.5"));
  // Only asking (amount 0) at the same usage fits.
  EXPECT_TRUE(evaluate_limits(in, 1, Decimal{}, now, out).allowed);
}

TEST(EvaluateLimits, ASoftLimitAllowsWithOverageAndAHardOneStillDecides) {
  LimitRule soft = rule(PeriodKind::kDay, 10);
  soft.hard = false;
  const LimitRule month = rule(PeriodKind::kMonth, 100);
  const TimeUs now = at("2025-01-20T12:00:00Z");
  LimitInput in[] = {calendar(soft, "10", 0, at("2025-01-21T00:00:00Z")),
                     calendar(month, "50", 0, at("2025-02-01T00:00:00Z"))};
  LimitOutcome out[2];
  Verdict v = evaluate_limits(in, 2, dec("1"), now, out);
  EXPECT_TRUE(v.allowed);
  EXPECT_TRUE(v.overage);
  EXPECT_EQ(v.top, 0) << "the soft limit past its amount has the least headroom";
  EXPECT_FALSE(out[0].fits);
  EXPECT_EQ(out[0].remaining, Decimal{}) << "never below zero";
  EXPECT_EQ(out[0].headroom, dec("0"));
  // The month full too: denied by it, the soft limit's overage still reported.
  in[1].used = dec("100");
  v = evaluate_limits(in, 2, dec("1"), now, out);
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.top, 1);
  EXPECT_EQ(v.retry_after_us, at("2025-02-01T00:00:00Z") - now);
}

TEST(EvaluateLimits, TheFailingHardLimitThatFreesLastDecides) {
  const LimitRule day = rule(PeriodKind::kDay, 10);
  const LimitRule month = rule(PeriodKind::kMonth, 10);
  const TimeUs now = at("2025-01-20T12:00:00Z");
  const LimitInput in[] = {calendar(day, "10", 0, at("2025-01-21T00:00:00Z")),
                           calendar(month, "10", 0, at("2025-02-01T00:00:00Z"))};
  LimitOutcome out[2];
  const Verdict v = evaluate_limits(in, 2, dec("1"), now, out);
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.top, 1);
  EXPECT_EQ(v.retry_after_us, at("2025-02-01T00:00:00Z") - now);
}

TEST(EvaluateLimits, ATrialOutsideItsWindowDeniesAsOverAndNeverComesBack) {
  const LimitRule trial = rule(PeriodKind::kTrial, 100, 14);
  const LimitRule month = rule(PeriodKind::kMonth, 1);
  const TimeUs now = at("2025-03-01T00:00:00Z");
  LimitInput in[] = {calendar(trial, "0", at("2025-01-01T00:00:00Z"), 0),
                     calendar(month, "5", 0, at("2025-04-01T00:00:00Z"))};
  in[0].outside = true;
  LimitOutcome out[2];
  const Verdict v = evaluate_limits(in, 2, dec("1"), now, out);
  EXPECT_FALSE(v.allowed);
  EXPECT_TRUE(v.trial_over);
  EXPECT_EQ(v.top, 0) << "a trial that is over ranks before a window that ends";
  EXPECT_EQ(v.retry_after_us, 0);
  EXPECT_EQ(out[0].remaining, Decimal{});
}

TEST(EvaluateLimits, UnlimitedRulesFitAndNeverDecide) {
  LimitRule open = rule(PeriodKind::kDay, 0);
  open.unlimited = true;
  LimitRule open_rate = rule(PeriodKind::kMinute, 0);
  open_rate.unlimited = true;
  LimitInput in[] = {calendar(open, "123", 0, at("2025-01-21T00:00:00Z")), LimitInput{}};
  in[1].rule = &open_rate;  // no bucket: an unlimited rate has none
  LimitOutcome out[2];
  const Verdict v = evaluate_limits(in, 2, dec("1000000"), at("2025-01-20T12:00:00Z"), out);
  EXPECT_TRUE(v.allowed);
  EXPECT_FALSE(v.overage);
  EXPECT_EQ(v.top, -1);
  EXPECT_EQ(out[0].used, dec("123")) << "usage is still reported";
  EXPECT_EQ(out[0].remaining, Decimal{});
}

TEST(EvaluateLimits, ARateLimitIsTheGcraBucketAndItsResetMovesWithConsumption) {
  const LimitRule minute = rule(PeriodKind::kMinute, 60);
  const TimeUs now = at("2025-01-20T12:00:00Z");
  const RateState bucket{dec("59"), now};
  LimitInput x;
  x.rule = &minute;
  x.rate = &bucket;
  LimitOutcome out[1];
  Verdict v = evaluate_limits(&x, 1, dec("1"), now, out);
  EXPECT_TRUE(v.allowed);
  EXPECT_EQ(out[0].used, dec("59"));
  EXPECT_EQ(out[0].remaining, dec("1"));
  EXPECT_EQ(out[0].window_start_us, now - kUsPerMinute);
  EXPECT_EQ(out[0].reset_us, now + 59 * kUsPerSecond) << "the bucket empties one unit a second";
  EXPECT_EQ(outcomes_after(&x, 1, dec("1"), now, out), 0);
  EXPECT_EQ(out[0].used, dec("60"));
  EXPECT_EQ(out[0].remaining, Decimal{});
  EXPECT_EQ(out[0].reset_us, now + 60 * kUsPerSecond);
  // Two more do not fit; one second later one does.
  v = evaluate_limits(&x, 1, dec("2"), now, out);
  EXPECT_FALSE(v.allowed);
  EXPECT_EQ(v.retry_after_us, kUsPerSecond);
  EXPECT_TRUE(evaluate_limits(&x, 1, dec("2"), now + kUsPerSecond, out).allowed);
}

TEST(EvaluateLimits, AnyOrderOfTheSameLimitsGivesTheSameDecision) {
  // The verdict depends on the limits, not on the order the plan lists them in.
  std::mt19937_64 rng(7);
  const TimeUs now = at("2025-01-20T12:00:00Z");
  for (int round = 0; round < 500; ++round) {
    std::vector<LimitRule> rules;
    for (PeriodKind p : {PeriodKind::kDay, PeriodKind::kWeek, PeriodKind::kMonth}) {
      LimitRule r = rule(p, static_cast<std::int64_t>(rng() % 20));
      r.hard = rng() % 3 != 0;
      rules.push_back(r);
    }
    std::vector<LimitInput> in;
    TimeUs reset = now + kUsPerHour;
    for (const auto& r : rules) {
      in.push_back(calendar(r, std::to_string(rng() % 20), 0, reset));
      reset += kUsPerHour * static_cast<TimeUs>(1 + rng() % 48);
    }
    const Decimal amount = Decimal::from_int(static_cast<std::int64_t>(1 + rng() % 3));
    std::vector<LimitOutcome> out(in.size());
    const Verdict a = evaluate_limits(in.data(), in.size(), amount, now, out.data());
    std::vector<LimitInput> reversed(in.rbegin(), in.rend());
    const Verdict b = evaluate_limits(reversed.data(), reversed.size(), amount, now, out.data());
    ASSERT_EQ(a.allowed, b.allowed) << round;
    ASSERT_EQ(a.overage, b.overage) << round;
    if (!a.allowed) {
      ASSERT_EQ(a.retry_after_us, b.retry_after_us) << round;
    }
    // Allowed exactly when every hard limit has room for the amount.
    bool room = true;
    for (const auto& x : in) {
      room = room && (!x.rule->hard || x.used + amount <= x.rule->amount);
    }
    ASSERT_EQ(a.allowed, room) << round;
  }
}

TEST(PercentText, TwoDecimalsHalfEvenAndZeroLimits) {
  EXPECT_EQ(percent_text(dec("0"), dec("34")), "0.00");
  EXPECT_EQ(percent_text(dec("1"), dec("3")), "33.33");
  EXPECT_EQ(percent_text(dec("2"), dec("3")), "66.67");
  EXPECT_EQ(percent_text(dec("1"), dec("20000")), "0.00");  // 0.005: half to even
  EXPECT_EQ(percent_text(dec("3"), dec("20000")), "0.02");  // 0.015: half to even
  EXPECT_EQ(percent_text(dec("5"), dec("0")), "100.00");
}

}  // namespace
}  // namespace tally::core
