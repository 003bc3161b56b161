// Periods, windows and GCRA for limits (see limits.h).
#include "core/limits.h"

#include <algorithm>
#include <optional>
#include <string>

#include <tally/types.h>

namespace tally::core {
namespace {

// Above this many units a limit times a drain interval could overflow 128 bits; such limits
// (beyond 1e15 per period) drain in coarser steps.
constexpr __int128 kPreciseUnitsMax =
    static_cast<__int128>(1'000'000'000'000'000) * Decimal::kScale;

// units * num / den without overflow for the ranges used here. REQUIRES: den > 0.
__int128 mul_div(__int128 units, TimeUs num, TimeUs den) {
  if (units <= kPreciseUnitsMax && units >= -kPreciseUnitsMax) {
    return units * num / den;
  }
  return units / den * num;
}

}  // namespace

Result<PeriodKind> parse_period(std::string_view name) {
  if (std::optional<PeriodKind> p = parse_limit_period(name)) {
    return *p;
  }
  return Status::invalid_argument(
      "unknown period '" + std::string(name) +
      "' (expected second, minute, hour, day, week, month, billing_period, trial or lifetime)");
}

std::string_view period_name(PeriodKind p) {
  return to_string(p);
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
      const TimeUs start = floor_to(ctx.trial_start_us, kUsPerMinute);
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

AlertLevel alert_level(const std::vector<std::int64_t>& thresholds,
                       const std::vector<AlertLevel>& levels, std::size_t i) {
  if (i < levels.size()) {
    return levels[i];
  }
  if (thresholds[i] >= 100) {
    return AlertLevel::kExceeded;
  }
  std::size_t below = 0;
  std::int64_t highest_below = 0;
  for (std::int64_t t : thresholds) {
    if (t < 100) {
      ++below;
      highest_below = std::max(highest_below, t);
    }
  }
  return below >= 2 && thresholds[i] == highest_below ? AlertLevel::kCritical
                                                      : AlertLevel::kWarning;
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

// ---- a check's verdict -----------------------------------------------------------------------

namespace {

// Whether limit a ranks before b (both limited): a failing hard limit first, the one that frees
// last (a trial outside its window before all), then the least headroom.
bool more_restrictive(const LimitInput& ai, const LimitOutcome& a, const LimitInput& bi,
                      const LimitOutcome& b) {
  const bool a_blocks = !a.fits && ai.rule->hard;
  const bool b_blocks = !b.fits && bi.rule->hard;
  if (a_blocks != b_blocks) {
    return a_blocks;
  }
  if (a_blocks) {
    return ai.outside || (a.retry_after_us > b.retry_after_us && !bi.outside);
  }
  return a.headroom < b.headroom;
}

int most_restrictive(const LimitInput* in, std::size_t n, const LimitOutcome* out) {
  int top = -1;
  for (std::size_t i = 0; i < n; ++i) {
    if (in[i].rule->unlimited) {
      continue;
    }
    if (top < 0 || more_restrictive(in[i], out[i], in[top], out[top])) {
      top = static_cast<int>(i);
    }
  }
  return top;
}

}  // namespace

Verdict evaluate_limits(const LimitInput* in, std::size_t n, const Decimal& amount, TimeUs now_us,
                        LimitOutcome* out) {
  Verdict v;
  for (std::size_t i = 0; i < n; ++i) {
    const LimitInput& x = in[i];
    const LimitRule& rule = *x.rule;
    LimitOutcome& o = out[i];
    o = LimitOutcome{};
    if (period_is_rate(rule.period)) {
      if (rule.unlimited) {
        continue;  // used 0, window and reset unknown
      }
      const TimeUs period = rate_period_us(rule.period);
      const RateDecision d = rate_evaluate(*x.rate, rule.amount, period, amount, now_us);
      const Decimal level = rate_level(*x.rate, rule.amount, period, now_us);
      o.fits = d.allowed;
      o.used = level;
      o.headroom = rule.amount - level;
      o.remaining = rule.amount > level ? rule.amount - level : Decimal{};
      o.retry_after_us = d.retry_after_us;
      o.window_start_us = now_us - period;
      o.reset_us = amount.units == 0
                       ? d.reset_us
                       : rate_evaluate(*x.rate, rule.amount, period, Decimal{}, now_us).reset_us;
    } else {
      o.used = x.used;
      o.window_start_us = x.window_start_us;
      o.reset_us = x.reset_us;
      if (rule.unlimited) {
        continue;
      }
      o.fits = !x.outside && x.used + amount <= rule.amount;
      o.headroom = x.outside ? Decimal{} : rule.amount - x.used;
      o.remaining = x.outside || x.used > rule.amount ? Decimal{} : rule.amount - x.used;
      if (!o.fits && !x.outside) {
        o.retry_after_us = x.reset_us == 0 ? 0 : x.reset_us - now_us;
      }
    }
    if (!o.fits) {
      if (rule.hard) {
        v.allowed = false;
      } else {
        v.overage = true;
      }
    }
  }
  v.top = most_restrictive(in, n, out);
  if (!v.allowed) {
    v.trial_over = in[v.top].outside;
    v.retry_after_us = out[v.top].retry_after_us;
  }
  return v;
}

int outcomes_after(const LimitInput* in, std::size_t n, const Decimal& amount, TimeUs now_us,
                   LimitOutcome* out) {
  for (std::size_t i = 0; i < n; ++i) {
    const LimitInput& x = in[i];
    const LimitRule& rule = *x.rule;
    if (rule.unlimited) {
      continue;
    }
    LimitOutcome& o = out[i];
    Decimal used;  // a window now is outside counts nothing
    if (period_is_rate(rule.period)) {
      const TimeUs period = rate_period_us(rule.period);
      const RateState after{rate_level(*x.rate, rule.amount, period, now_us) + amount, now_us};
      used = after.level;
      o.reset_us = rate_evaluate(after, rule.amount, period, Decimal{}, now_us).reset_us;
    } else if (!x.outside) {
      used = x.used + amount;
    }
    o.used = used;
    o.remaining = rule.amount > used ? rule.amount - used : Decimal{};
    o.headroom = rule.amount - used;
  }
  return most_restrictive(in, n, out);
}

std::string percent_text(const core::Decimal& used, const core::Decimal& limit) {
  if (limit.units <= 0) {
    return used.units > 0 ? "100.00" : "0.00";
  }
  // |used| / limit x 100 with two decimals, half-even, by long division on unsigned 128-bit
  // integers: the whole quotient, then four more digits one at a time. No product can overflow
  // whatever the magnitudes (usage is a sum, so it may exceed any one amount), and the result
  // is written from 128 bits, not cut to 64.
  using U = unsigned __int128;
  const bool negative = used.units < 0;
  U n = negative ? U(0) - static_cast<U>(used.units) : static_cast<U>(used.units);
  U d = static_cast<U>(limit.units);
  // rest x 10 below needs d <= max / 10; a limit that large (over 3e28) drops a last digit of
  // both, which cannot change two decimals of a percentage.
  while (d > ~U(0) / 20) {
    n /= 10;
    d /= 10;
  }
  const U whole = n / d;  // percent / 100
  U rest = n % d;
  unsigned fraction = 0;  // the next four digits: hundredths of a percent
  for (int i = 0; i < 4; ++i) {
    rest *= 10;
    fraction = fraction * 10 + static_cast<unsigned>(rest / d);
    rest %= d;
  }
  U whole_rounded = whole;
  if (rest * 2 > d || (rest * 2 == d && fraction % 2 != 0)) {
    if (++fraction == 10000) {
      fraction = 0;
      ++whole_rounded;
    }
  }
  // Written backwards: two decimals, the point, the percentage's last two digits (no leading
  // zero when there is nothing before them), then whole_rounded's digits before those.
  const unsigned decimals = fraction % 100;
  const unsigned low = fraction / 100;
  char digits[48];  // whole_rounded has at most 39 digits
  char* p = digits + sizeof(digits);
  *--p = static_cast<char>('0' + decimals % 10);
  *--p = static_cast<char>('0' + decimals / 10);
  *--p = '.';
  *--p = static_cast<char>('0' + low % 10);
  if (whole_rounded != 0 || low >= 10) {
    *--p = static_cast<char>('0' + low / 10);
  }
  for (U w = whole_rounded; w != 0; w /= 10) {
    *--p = static_cast<char>('0' + static_cast<int>(w % 10));
  }
  std::string out;
  if (negative && (whole_rounded != 0 || fraction != 0)) {
    out += '-';
  }
  out.append(p, static_cast<std::size_t>(digits + sizeof(digits) - p));
  return out;
}

}  // namespace tally::core

// ---- the public limit and check types (include/tally/types.h) --------------------------------

namespace tally {

std::string LimitState::rule() const {
  std::string out = meter;
  if (period == LimitPeriod::kTrial) {
    out += " per trial (" + std::to_string(days) + " days)";
  } else if (period == LimitPeriod::kLifetime) {
    out += " (lifetime)";
  } else {
    out += " per ";
    out += to_string(period);
  }
  if (per_key) {
    out += " (per key)";
  }
  return out;
}

std::string LimitState::percent() const {
  return unlimited ? std::string() : core::percent_text(used, limit);
}

}  // namespace tally
