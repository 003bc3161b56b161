// Periods, windows and GCRA for limits (see limits.h).
#include "core/limits.h"

#include <algorithm>
#include <array>

namespace tally::core {
namespace {

struct PeriodName {
  PeriodKind kind;
  std::string_view name;
};

constexpr std::array<PeriodName, 9> kPeriods = {{
    {PeriodKind::kSecond, "second"},
    {PeriodKind::kMinute, "minute"},
    {PeriodKind::kHour, "hour"},
    {PeriodKind::kDay, "day"},
    {PeriodKind::kWeek, "week"},
    {PeriodKind::kMonth, "month"},
    {PeriodKind::kBillingPeriod, "billing_period"},
    {PeriodKind::kTrial, "trial"},
    {PeriodKind::kLifetime, "lifetime"},
}};

// Above this many units a limit times a drain interval could overflow 128 bits; such limits
// (beyond 1e15 per period) drain in coarser steps.
constexpr __int128 kPreciseUnitsMax = static_cast<__int128>(1'000'000'000'000'000) * Decimal::kScale;

// units * num / den without overflow for the ranges used here. REQUIRES: den > 0.
__int128 mul_div(__int128 units, TimeUs num, TimeUs den) {
  if (units <= kPreciseUnitsMax && units >= -kPreciseUnitsMax) {
    return units * num / den;
  }
  return units / den * num;
}

}  // namespace

Result<PeriodKind> parse_period(std::string_view name) {
  for (const auto& p : kPeriods) {
    if (p.name == name) {
      return p.kind;
    }
  }
  return Status::invalid_argument(
      "unknown period '" + std::string(name) +
      "' (expected second, minute, hour, day, week, month, billing_period, trial or lifetime)");
}

std::string_view period_name(PeriodKind p) {
  return kPeriods[static_cast<std::size_t>(p)].name;
}

bool period_is_rate(PeriodKind p) {
  return p == PeriodKind::kSecond || p == PeriodKind::kMinute || p == PeriodKind::kHour;
}

TimeUs rate_period_us(PeriodKind p) {
  switch (p) {
    case PeriodKind::kSecond:
      return kUsPerSecond;
    case PeriodKind::kMinute:
      return kUsPerMinute;
    default:
      return kUsPerHour;
  }
}

bool Plan::has_feature(std::string_view f) const {
  return std::find(features.begin(), features.end(), f) != features.end();
}

bool period_span(const LimitRule& rule, TimeUs t, const PeriodContext& ctx, Span* out) {
  switch (rule.period) {
    case PeriodKind::kDay:
    case PeriodKind::kWeek:
    case PeriodKind::kMonth: {
      const Window w = rule.period == PeriodKind::kDay    ? Window::kDay
                       : rule.period == PeriodKind::kWeek ? Window::kWeek
                                                          : Window::kMonth;
      out->start = window_start(t, w, ctx.tz);
      out->end = window_next(out->start, w, ctx.tz);
      return true;
    }
    case PeriodKind::kBillingPeriod:
      billing_period_span(t, ctx.billing_anchor_us, ctx.tz, &out->start, &out->end);
      return true;
    case PeriodKind::kTrial: {
      const TimeUs start = ctx.trial_start_us - (((ctx.trial_start_us % kUsPerMinute) + kUsPerMinute) % kUsPerMinute);
      const TimeUs end = start + rule.days * kUsPerDay;
      out->start = start;
      out->end = end;
      return t >= start && t < end;
    }
    case PeriodKind::kLifetime:
      *out = Span{};
      out->start = 0;
      return true;
    default:
      return false;
  }
}

Decimal rate_level(const RateState& s, const Decimal& limit, TimeUs period_us, TimeUs now_us) {
  if (limit.units <= 0) {
    return s.level;
  }
  const TimeUs elapsed = std::clamp<TimeUs>(now_us - s.at_us, 0, 1000 * period_us);
  const Decimal drained{mul_div(limit.units, elapsed, period_us)};
  return s.level > drained ? s.level - drained : Decimal{};
}

RateDecision rate_evaluate(const RateState& s, const Decimal& limit, TimeUs period_us,
                           const Decimal& amount, TimeUs now_us) {
  RateDecision d;
  const Decimal level = rate_level(s, limit, period_us, now_us);
  const Decimal after = level + amount;
  d.allowed = after <= limit;
  d.level_after = d.allowed ? after : level;
  d.remaining = limit > d.level_after ? limit - d.level_after : Decimal{};
  auto drain_time = [&](const Decimal& x) -> TimeUs {
    if (x.units <= 0 || limit.units <= 0) {
      return 0;
    }
    // ceil(x * period / limit)
    const __int128 num = mul_div(x.units, period_us, 1);
    return static_cast<TimeUs>((num + limit.units - 1) / limit.units);
  };
  d.reset_us = now_us + drain_time(d.level_after);
  if (!d.allowed) {
    d.retry_after_us = drain_time(after - limit);
  }
  return d;
}

std::int64_t decimal_floor_int(const Decimal& d) {
  __int128 q = d.units / Decimal::kScale;
  if (d.units < 0 && d.units % Decimal::kScale != 0) {
    --q;
  }
  return static_cast<std::int64_t>(q);
}

std::int64_t decimal_ceil_int(const Decimal& d) {
  __int128 q = d.units / Decimal::kScale;
  if (d.units > 0 && d.units % Decimal::kScale != 0) {
    ++q;
  }
  return static_cast<std::int64_t>(q);
}

std::string_view alert_level(const std::vector<std::int64_t>& thresholds,
                             const std::vector<std::string>& levels, std::size_t i) {
  if (i < levels.size()) {
    return levels[i];
  }
  if (thresholds[i] >= 100) {
    return "exceeded";
  }
  std::size_t below = 0;
  std::int64_t highest_below = 0;
  for (std::int64_t t : thresholds) {
    if (t < 100) {
      ++below;
      highest_below = std::max(highest_below, t);
    }
  }
  return below >= 2 && thresholds[i] == highest_below ? "critical" : "warning";
}

bool threshold_reached(const Decimal& used, const Decimal& limit, std::int64_t percent) {
  if (limit.units <= 0) {
    return used.units > 0 || percent <= 0;
  }
  return used.units * 100 >= static_cast<__int128>(percent) * limit.units;
}

WindowDecision window_decide(const WindowCount& count, std::int64_t limit, TimeUs duration_us,
                             std::int64_t cost, TimeUs now_us) {
  WindowDecision d;
  const TimeUs offset = ((now_us % duration_us) + duration_us) % duration_us;
  d.window_start_us = now_us - offset;
  d.reset_us = d.window_start_us + duration_us;
  const std::int64_t used = count.start_us == d.window_start_us ? count.used : 0;
  // cost <= limit - used, written so that nothing overflows whatever the inputs.
  d.allowed = used <= limit && cost <= limit - used;
  d.used_after = d.allowed ? used + cost : used;
  d.remaining = limit > d.used_after ? limit - d.used_after : 0;
  return d;
}

}  // namespace tally::core
