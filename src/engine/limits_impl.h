// What the files of checks and limits share (engine-internal):
//   limit_counters.cc  the counters of a customer's limits: resolving the rules, finding or
//                      building counters, evaluating and applying a consumption, settling it
//                      when its commit is durable, freeing holds;
//   check.cc           the check itself, and the queueing of its usage events;
//   reservations.cc    committing and releasing a reservation;
//   limit_reports.cc   the limits report, the admin's customer summaries and the highest
//                      limit of a report (which organizations.cc's roll-up shares);
//   overrides.cc       overrides, resets and their audit records.
// Locks: every function taking a CustomerLimits& REQUIRES state_mutex held (shared or
// exclusive) and limits_mutex held, unless it says otherwise.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine_impl.h"

namespace tally::engine {

// Bounds of a check, enforced by the engine (the HTTP layer does not repeat them).
inline constexpr std::size_t kCheckBatchMax = 100;  // checks in one batch
inline constexpr std::int64_t kReservationTtlSecondsMax = 7 * 86400;
inline constexpr std::size_t kCheckPropertiesMax = 64;
inline constexpr std::int64_t kCountAmountMax = 10'000;  // the most a check counts on a count meter
inline constexpr std::size_t kRecentIdsMax = 100'000;    // consumed check ids kept per customer

// ---- limit_counters.cc: rules and counters ----------------------------------------------------

// The plan of a customer: its own, or the default; null when it has none (plan_of, in
// engine_impl.h). The limits that apply to a customer: the plan's, with overrides replacing a
// limit on the same meter and period, or added. meter == "" means every meter.
std::vector<core::LimitRule> limits_of(const config::Config& config, const Customer& c,
                                       std::string_view meter);

// A check's event_id: at most kCheckEventIdBytesMax bytes (docs/api.md), an event id's rules
// otherwise. Errors: kInvalidArgument. Both modes' checks.
inline constexpr std::size_t kCheckEventIdBytesMax = core::kEventIdBytesMax - 8;
Status check_check_event_id(const std::string& id);

// ---- overrides.cc: a customer's limit overrides, both modes ---------------------------------

inline constexpr std::size_t kOverridesMax = 64;
// Why `overrides` cannot be set, naming the one at fault (kInvalidArgument); OK when there are
// at most kOverridesMax and each is a limit on a limitable meter.
Status check_overrides(const config::Config& config, const Catalog& catalog,
                       const std::vector<LimitOverride>& overrides);

// ---- limit_reports.cc: the limits report, both modes ---------------------------------------

// A limit past this percentage of its amount is named in the report's warnings.
inline constexpr std::int64_t kReportWarningPercent = 80;
// The thresholds at which the customer's calendar limits alert (the plan's own, else
// [alerts]'s) into out->alert_thresholds.
void add_alert_thresholds(const config::Config& config, const core::Plan* plan, LimitsReport* out);
// Appends `state` to out->limits, and a warning ("api_calls per day at 85.00%") when it is past
// kReportWarningPercent of its limit.
void add_report_limit(LimitState state, LimitsReport* out);

// A reservation that is not there (unknown, closed, expired or another customer's): kNotFound.
Status reservation_not_found(const std::string& id);

// The amount a reservation's commit records: `amount_text`, or *amount (the reserved amount)
// when that is empty. Errors: kInvalidArgument for a negative or malformed number, or one that
// is not whole on a count meter.
Status commit_amount(const MeterDef& ms, const std::string& amount_text, core::Decimal* amount);

// The denial of a check by its customer's status (suspended) or its plan's features, before any
// limit, into *out; false when neither denies it. Both modes' checks.
bool denied_by_status_or_feature(const CheckRequest& r, const Customer& c, const core::Plan* plan,
                                 CheckResult* out);

// The state of a rule before any counter is read: its identity and limit.
LimitState rule_state(const core::LimitRule& r);
core::PeriodContext period_context(const CustomerState& cs);
// Everything a calendar window of `meter` depends on besides its rule and the time.
WindowContext window_context(const CustomerState& cs, const core::PeriodContext& pc,
                             std::string_view meter);
// The value limits compare: count, sum, or the gauge's value.
core::Decimal used_value(core::Aggregation a, const core::AggState& s);
bool is_gauge(core::Aggregation a);
ResolvedRule resolve_rule(const core::LimitRule& rule);
std::vector<ResolvedRule> resolve_rules(const std::vector<core::LimitRule>& rules);

// One limit of a check: the counter it reads (found or built under the locks).
struct Evaluated {
  const ResolvedRule* resolved = nullptr;
  LimitCounter* counter = nullptr;  // calendar windows; null outside any window
  RateCounter* rate = nullptr;      // rates (not when unlimited)

  const core::LimitRule& rule() const { return resolved->rule; }
};

// The limits of one check: their counters, what core::evaluate_limits was given and said.
struct Evaluation {
  std::vector<Evaluated> limits;
  std::vector<core::LimitInput> in;
  std::vector<core::LimitOutcome> out;
  core::Verdict verdict;

  std::size_t size() const { return limits.size(); }

  // The most restrictive limit's index, -1 when there is none.
  int top() const { return verdict.top; }

  // After consumption (apply()): the outcomes as they stand now, and the new top.
  void consumed(const core::Decimal& amount, core::TimeUs now) {
    verdict.top = core::outcomes_after(in.data(), in.size(), amount, now, out.data());
  }
};

// The state of limit i of an evaluation, as answers carry it.
// The state of `rule` as an outcome `o` gives it (used, remaining unless unlimited, the window
// and its reset): both modes' answers.
LimitState limit_state(const core::LimitRule& rule, const core::LimitOutcome& o);
LimitState state_of(const Evaluation& ev, std::size_t i);
// The answer's limit states, the evaluation's top as its deciding rule.
void add_limit_states(const Evaluation& ev, CheckResult* out);

// The limits of `meter` for a customer (limits_of), resolved once and kept while the plan and
// the overrides stay the same: a plan or override change takes effect on the next check. The
// reference stays valid until the customer's plan or overrides change.
const std::vector<ResolvedRule>& resolved_rules(const Engine::Impl& d, const CustomerState& cs,
                                                CustomerLimits& cl, std::uint32_t meter,
                                                const core::Plan* plan);
// Finds or (re)builds the counter of a calendar limit. `wc` is window_context() of the meter.
// Null, with *outside set, when now is outside every window of the rule (a trial that ended).
LimitCounter* calendar_counter(const Engine::Impl& d, const CustomerState& cs, CustomerLimits& cl,
                               std::uint32_t meter, const core::LimitRule& rule, core::TimeUs now,
                               const core::PeriodContext& pc, const WindowContext& wc,
                               bool* outside);
// Finds or builds the counters of every limit of `rules` and evaluates them for `amount` at
// `now` into `ev` (cleared first). `rules` outlives `ev`'s use.
void evaluate(const Engine::Impl& d, const CustomerState& cs, CustomerLimits& cl,
              std::uint32_t meter, const std::vector<ResolvedRule>& rules,
              const core::Decimal& amount, core::TimeUs now, Evaluation* ev);
// Applies `amount` to the counters of an evaluated check and records the in-flight token.
void apply(CustomerLimits& cl, const std::vector<Evaluated>& ev, std::uint32_t meter,
           const core::Decimal& amount, core::TimeUs now, std::uint64_t token,
           core::Decimal credits = {});
// Takes back what apply() did (for all-or-nothing batches): `rates` holds the rate states
// before it.
void unapply(CustomerLimits& cl, std::uint32_t meter, const core::Decimal& amount,
             std::uint64_t token,
             const std::vector<std::pair<RateCounter*, core::RateState>>& rates);
// Removes a settled or released token's amount from pending; false when it was not in flight.
bool drop_in_flight(CustomerLimits& cl, std::uint64_t token);
// Frees a reservation's hold: its pending amount in the calendar counters, and what is left of
// it in the rate buckets of its meter.
void free_hold(const Engine::Impl& d, CustomerLimits& cl, const Reservation& res, core::TimeUs now);

// ---- check.cc: usage of consumptions, into the commit queue ---------------------------------

// A consumption whose usage event(s) are still to be queued (enqueue_usage), once the limit
// locks are released. The pointers outlive the enqueue (the request, or the reservation).
struct Usage {
  const MeterDef* ms = nullptr;
  const std::string* customer = nullptr;
  const std::string* event_id = nullptr;  // null: named after the token
  const std::vector<std::pair<std::string, std::string>>* properties = nullptr;
  core::Decimal amount;
  core::Decimal gauge_value;
  core::TimeUs now = 0;
  std::uint64_t token = 0;
  // Set when the usage may share an event with other checks of the customer and meter
  // (MeterDef::merges_check_usage, no event id, no properties): those of the same settle span.
  bool merges = false;
  std::uint32_t customer_num = 0;
  std::uint32_t meter = 0;
  core::TimeUs span_lo = 0;  // settle_span
  core::TimeUs span_hi = 0;
};

// The widest interval [lo, hi) around `now`, inside its minute, in which every calendar counter
// of `meter` holds the same instants as `now` does (a window or reset boundary ends it). Checks
// in one such interval can share a usage event dated at the first of them: settle_limits counts
// it into the windows each of them was counted in. REQUIRES: limits_mutex held.
std::pair<core::TimeUs, core::TimeUs> settle_span(const CustomerLimits& cl, std::uint32_t meter,
                                                  core::TimeUs now);

// Hands usage events to the commit thread (CommitQueue::append_check_usage), with the
// reservation ops `ops` (moved out); `waiter` (may be empty) is called when they are durable.
// REQUIRES: no engine lock held.
void enqueue_usage(Engine::Impl& d, const Usage* usage, std::size_t n,
                   std::function<void(Status)> waiter, std::vector<ReservationOp>* ops = nullptr);
// enqueue_usage, then waits until the commit that takes them is durable; its status.
// REQUIRES: no engine lock held.
Status enqueue_and_wait(Engine::Impl& d, const Usage* usage, std::size_t n,
                        std::vector<ReservationOp>* ops);
// The record of an open reservation, as written by its commit.
ReservationOp open_op(const Engine::Impl& d, const std::string& id, const Reservation& res);
// Puts a reservation whose close could not be written back in memory, holding again.
// REQUIRES: no engine lock held.
void restore_reservation(Engine::Impl& d, const std::string& id, Reservation res, core::TimeUs now);

// ---- limit_reports.cc -------------------------------------------------------------------------

// The first limit of `report` with the highest percent now, its percent in *percent; null when
// none has a percent (an unlimited limit has none). Reads only the report: no lock needed.
const LimitState* highest_limit(const LimitsReport& report, core::Decimal* percent);

// Every customer, ordered by id, for the summaries (customer_summaries, organization_summaries):
// the scale-out mode's from every shard, whose failure is the answer (Engine::list_customers
// would log it and list none), else e.list_customers().
Result<std::vector<Customer>> every_customer(const Engine::Impl& d, const Engine& e);

// Whether a summary goes on without a customer's read that failed with `s`: a customer removed
// meanwhile (kNotFound) is shown without usage; any other failure (a shard or Redis down, a
// limit the scale-out mode cannot report) is the summary's answer.
inline bool removed_meanwhile(const Status& s) {
  return s.code() == StatusCode::kNotFound;
}

}  // namespace tally::engine
