// Plans and limits: the pure rules behind a check.
//
// A limit caps a meter's value over a period. Calendar periods (day, week, month,
// billing_period, trial, lifetime) are fixed windows in the customer's time zone: usage in the
// window is compared with the amount. Rate periods (second, minute, hour) use GCRA (the generic
// cell rate algorithm, equivalently a leaky bucket that drains at amount/period): a bucket holds
// at most `amount` units and drains continuously, so no sliding interval of one period ever
// admits more than `amount` units plus what drained within it. A burst at a window boundary
// therefore cannot double the rate, as it can with fixed windows.
//
// Nothing here reads a clock or does I/O: "now" and the usage arrive as parameters.
#pragma once

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <tally/status.h>
#include <tally/types.h>

#include "core/decimal.h"
#include "core/time.h"

namespace tally::core {

// The public limit period (include/tally/types.h), whose texts are tally::to_string and
// tally::parse_limit_period.
using PeriodKind = tally::LimitPeriod;

// "second" | "minute" | "hour" | "day" | "week" | "month" | "billing_period" | "trial" |
// "lifetime". Errors: kInvalidArgument naming the text.
Result<PeriodKind> parse_period(std::string_view name);
// The same as tally::to_string(p).
std::string_view period_name(PeriodKind p);
// Second, minute and hour limits are rates (GCRA); the others are calendar windows.
bool period_is_rate(PeriodKind p);
// The length of a rate period. REQUIRES: period_is_rate(p).
TimeUs rate_period_us(PeriodKind p);

struct LimitRule {
  std::string meter;
  PeriodKind period = PeriodKind::kMonth;
  std::int64_t days = 0;   // the length of a trial period
  bool unlimited = false;  // amount -1 or "unlimited"
  Decimal amount;
  bool hard = true;  // false: allow and flag the overage

  friend bool operator==(const LimitRule&, const LimitRule&) = default;
};

struct Plan {
  std::string key;
  std::string name;
  std::vector<std::string> features;
  std::vector<LimitRule> limits;
  std::vector<std::int64_t> alert_thresholds;  // percent of each limit, ascending; [] = [alerts]'s
  std::vector<AlertLevel> alert_levels;        // of the thresholds; [] = alert_level()'s
  bool has_alert_balance_below = false;        // false = [alerts] balance_below applies
  Decimal alert_balance_below;                 // a low-balance alert below this many credits
  bool prepaid = false;  // checks also need credits in the wallet for the estimated cost

  bool has_feature(std::string_view f) const;
  friend bool operator==(const Plan&, const Plan&) = default;
};

// What a customer's calendar periods hang on.
struct PeriodContext {
  TimeZone tz;
  TimeUs billing_anchor_us = 0;  // the billing period repeats monthly from this instant's date
  TimeUs trial_start_us = 0;     // the trial period starts at this instant's minute
};

struct Span {
  TimeUs start = 0;
  TimeUs end = std::numeric_limits<TimeUs>::max();  // exclusive

  bool contains(TimeUs t) const { return t >= start && t < end; }
};

// The calendar window of `rule` that contains t. The billing period runs from the anchor's
// day of month (clamped to the length of short months: an anchor on the 31st renews on the
// 30th of April and on the 28th or 29th of February) at midnight in the zone. The trial runs
// `days` days from the minute of the trial start; before or after it there is no window and
// this returns false. REQUIRES: !period_is_rate(rule.period).
bool period_span(const LimitRule& rule, TimeUs t, const PeriodContext& ctx, Span* out);

// GCRA state of one rate limit. `level` is the bucket's fill at `at_us`.
struct RateState {
  Decimal level;
  TimeUs at_us = 0;
};

struct RateDecision {
  bool allowed = false;
  Decimal level_after;        // the fill after admitting `amount` (when allowed) at now
  Decimal remaining;          // units that could still be admitted now
  TimeUs reset_us = 0;        // when the bucket will be empty
  TimeUs retry_after_us = 0;  // when denied: wait this long before `amount` fits
};

// Evaluates admitting `amount` at `now_us` against `limit` per `period_us`.
RateDecision rate_evaluate(const RateState& s, const Decimal& limit, TimeUs period_us,
                           const Decimal& amount, TimeUs now_us);
// The bucket's fill at now_us after draining since s.at_us.
Decimal rate_level(const RateState& s, const Decimal& limit, TimeUs period_us, TimeUs now_us);

// ---- a check's verdict ---------------------------------------------------------------------
// The rules of a plan evaluated on their counters at one instant: a pure function of numbers.
// The engine finds or builds the counters and holds the locks; this decides.

// One limit as the engine hands it over: the rule and where its counter stands now.
struct LimitInput {
  const LimitRule* rule = nullptr;
  // Calendar windows: the usage counted in the window (committed and in flight), the instant
  // counting starts (the window's start, or a reset inside it) and when the window ends (0 =
  // never); `outside` when now is in no window (a trial that is over, or not yet begun).
  Decimal used;
  bool outside = false;
  TimeUs window_start_us = 0;
  TimeUs reset_us = 0;
  // Rates (period_is_rate): the GCRA bucket. REQUIRES: non-null for a rate rule that is not
  // unlimited.
  const RateState* rate = nullptr;
};

// One limit evaluated for an amount.
struct LimitOutcome {
  bool fits = true;   // used + amount fits (always for an unlimited rule)
  Decimal used;       // as reported
  Decimal remaining;  // never below 0; 0 when unlimited
  Decimal headroom;   // limit - used (for ranking; may be negative)
  TimeUs window_start_us = 0;
  TimeUs reset_us = 0;        // when the window ends or the bucket is empty; 0 = never
  TimeUs retry_after_us = 0;  // when it does not fit: how long until it may; 0 = unknown
};

struct Verdict {
  bool allowed = true;        // no hard limit fails
  bool overage = false;       // a soft limit fails (allowed past it)
  bool trial_over = false;    // denied by a trial limit outside its window
  int top = -1;               // the most restrictive limit; -1 when every limit is unlimited
  TimeUs retry_after_us = 0;  // when denied: the deciding limit's
};

// Evaluates limits in[0..n) for `amount` (0 = only ask) at `now_us` into out[0..n) and decides:
// denied when a hard limit does not fit. The most restrictive limit is a failing hard one first
// (the one that frees last, a trial outside its window before all), then the least headroom.
Verdict evaluate_limits(const LimitInput* in, std::size_t n, const Decimal& amount, TimeUs now_us,
                        LimitOutcome* out);

// The outcomes once `amount` is consumed at `now_us` (what apply() does to the counters: a
// bucket drained to now, then filled by the amount; a window's usage grown by it): used,
// remaining, headroom and a bucket's reset. Returns the most restrictive limit after.
int outcomes_after(const LimitInput* in, std::size_t n, const Decimal& amount, TimeUs now_us,
                   LimitOutcome* out);

// used / limit x 100 with two decimals, half-even ("33.33"); "100.00" (or "0.00" for no use)
// when the limit is 0 or less.
std::string percent_text(const Decimal& used, const Decimal& limit);

// ---- ad-hoc limits ----------------------------------------------------------------------------
// A limit given by the caller with each request (Unkey- or Gubernator-style): at most `limit`
// units per fixed window of `duration_us`, the windows aligned to multiples of the duration
// since the epoch, counted per namespace and identifier. No plan, no customer.

// What one window has counted.
struct WindowCount {
  TimeUs start_us = 0;
  std::int64_t used = 0;
};

struct WindowDecision {
  bool allowed = false;
  std::int64_t used_after = 0;  // the window's count after this request (unchanged if denied)
  std::int64_t remaining = 0;   // units left in the window after this request
  TimeUs window_start_us = 0;
  TimeUs reset_us = 0;  // when the window ends
};

// Decides admitting `cost` (>= 0) at `now_us` against `limit` (>= 0) per window of
// `duration_us` (> 0), given what `count` holds (a count of an earlier window counts nothing).
WindowDecision window_decide(const WindowCount& count, std::int64_t limit, TimeUs duration_us,
                             std::int64_t cost, TimeUs now_us);

// ---- alerts ---------------------------------------------------------------------------------

// The level of threshold `i` of ascending `thresholds` (percent of a limit): `levels[i]` when
// levels are given; otherwise "exceeded" at 100 or more, "critical" for the highest threshold below
// 100 when two or more are below it, and "warning" for the rest. So [50, 80, 95] names warning,
// warning, critical and [75, 90, 100] warning, critical, exceeded.
AlertLevel alert_level(const std::vector<std::int64_t>& thresholds,
                       const std::vector<AlertLevel>& levels, std::size_t i);

// Whether `used` has reached `percent` percent of `limit` (used x 100 >= percent x limit,
// exactly). A limit of zero or less is reached by any use.
bool threshold_reached(const Decimal& used, const Decimal& limit, std::int64_t percent);

// Rounds toward zero to a whole number (for remaining counts in headers).
std::int64_t decimal_floor_int(const Decimal& d);
// Rounds up to a whole number.
std::int64_t decimal_ceil_int(const Decimal& d);

}  // namespace tally::core
