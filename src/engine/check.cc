// Checks: plans and limits enforced in memory, atomically, without waiting for the disk.
//
// Every limit of a customer has a counter in memory: for calendar periods the usage of the
// current window (durable events plus consumption not yet committed), for rates a GCRA bucket.
// A check takes limits_mutex, evaluates every rule, and when allowed adds its amount to every
// counter and queues its usage event for the next group commit. When that commit is durable,
// the commit thread moves the amount from "pending" to "committed" (settle_limits) under the
// same lock, so a counter never counts an event twice or misses one.
//
// Counters are built lazily: the first check of a window sums the minute and hour aggregates of
// the window and adds the in-flight consumption of the customer. A counter whose window has
// passed is rebuilt the same way. A reset starts the windows of a meter at the reset instant
// (reset_period builds them exactly then; see calendar_counter for a later rebuild).
//
// A reservation holds its amount as in-flight consumption and in the rate buckets until it is
// committed, released or expires; freeing it gives back what is left of the hold (free_hold).
//
// The check path is kept short: a customer's limits of a meter are resolved once, with their
// texts, and reused while its plan and overrides are unchanged (resolved_rules); a counter is
// reused without recomputing its window while now is inside it and nothing the window depends
// on has changed (WindowContext); the verdict is a pure function of numbers
// (core::evaluate_limits) and the answer carries numbers (LimitState), made into text by the
// HTTP layer once; the usage event is written straight into the open check job, and scratch
// buffers are per thread, so a check allocates little more than its answer.
#include <algorithm>
#include <charconv>
#include <chrono>
#include <future>

#include "common/assert.h"
#include "common/json_writer.h"
#include "common/crypto.h"
#include "core/ids.h"
#include "engine/engine_impl.h"

namespace tally {

using engine::CustomerLimits;
using engine::InFlight;
using engine::LimitCounter;
using engine::RateCounter;

namespace {

constexpr std::size_t kRecentIdsMax = 100'000;  // per customer
constexpr std::int64_t kCountAmountMax = 10'000;  // the most one check may count on a count meter

// The state of a rule before any counter is read: its identity and limit.
LimitState rule_state(const core::LimitRule& r) {
  LimitState s;
  s.meter = r.meter;
  s.period = core::period_name(r.period);
  s.days = r.days;
  s.unlimited = r.unlimited;
  s.hard = r.hard;
  if (!r.unlimited) {
    s.limit = r.amount;
  }
  return s;
}

}  // namespace


namespace {

using core::percent_text;

core::PeriodContext period_context(const engine::CustomerState& cs) {
  core::PeriodContext p;
  p.tz = cs.tz;
  p.billing_anchor_us =
      cs.record.billing_anchor_us != 0 ? cs.record.billing_anchor_us : cs.record.created_at_us;
  p.trial_start_us = cs.record.trial_started_at_us != 0 ? cs.record.trial_started_at_us
                                                        : cs.record.created_at_us;
  return p;
}

core::TimeUs reset_at(const Customer& c, std::string_view meter) {
  core::TimeUs at = 0;
  for (const auto& [m, t] : c.resets) {
    if (m == meter) {
      at = std::max(at, t);
    }
  }
  return at;
}

// Everything a calendar window of `meter` depends on besides its rule and the time.
engine::WindowContext window_context(const engine::CustomerState& cs, const core::PeriodContext& pc,
                                     std::string_view meter) {
  engine::WindowContext w;
  w.zone = pc.tz.zone();
  w.billing_anchor_us = pc.billing_anchor_us;
  w.trial_start_us = pc.trial_start_us;
  w.reset_us = reset_at(cs.record, meter);
  return w;
}

// The value limits compare: count, sum, or the gauge's value.
core::Decimal used_value(core::Aggregation a, const core::AggState& s) {
  switch (a) {
    case core::Aggregation::kCount:  // quantities summed: see core::aggregate_value
    case core::Aggregation::kSum:
      return s.sum;
    case core::Aggregation::kMax:
      return s.count > 0 ? s.max : core::Decimal{};
    default:
      return s.count > 0 ? s.latest : core::Decimal{};
  }
}

bool is_gauge(core::Aggregation a) {
  return a == core::Aggregation::kLatest || a == core::Aggregation::kMax;
}

engine::ResolvedRule resolve_rule(const core::LimitRule& rule) {
  engine::ResolvedRule out;
  out.rule = rule;
  out.rule_text = rule_state(rule).rule();
  if (!rule.unlimited) {
    out.limit_text = core::format_decimal(rule.amount);
  }
  return out;
}

std::vector<engine::ResolvedRule> resolve_rules(const std::vector<core::LimitRule>& rules) {
  std::vector<engine::ResolvedRule> out;
  out.reserve(rules.size());
  for (const auto& r : rules) {
    out.push_back(resolve_rule(r));
  }
  return out;
}

// One limit of a check: the counter it reads (found or built under the locks).
struct Evaluated {
  const engine::ResolvedRule* resolved = nullptr;
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

LimitState state_of(const Evaluation& ev, std::size_t i) {
  LimitState s = rule_state(ev.limits[i].rule());
  const core::LimitOutcome& o = ev.out[i];
  s.used = o.used;
  if (!s.unlimited) {
    s.remaining = o.remaining;
  }
  s.window_start_us = o.window_start_us;
  s.reset_us = o.reset_us;
  return s;
}

bool same_overrides(const std::vector<LimitOverride>& a, const std::vector<LimitOverride>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const LimitOverride& x, const LimitOverride& y) {
                      return x.meter == y.meter && x.period == y.period && x.days == y.days &&
                             x.amount == y.amount && x.hard == y.hard;
                    });
}

}  // namespace

// ---- rules ----------------------------------------------------------------------------------

namespace engine {

// The plan of a customer: its own, or the default; null when it has none.
const core::Plan* plan_of(const config::Config& config, const Customer& c) {
  const std::string& key = c.plan.empty() ? config.enforcement.default_plan : c.plan;
  if (const core::Plan* plan = config.find_plan(key)) {
    return plan;
  }
  for (const auto& [removed, replacement] : config.enforcement.replaced_plans) {
    if (removed == key) {
      return config.find_plan(replacement);
    }
  }
  // Only a customer without a plan and no default plan gets here: open() refuses to start
  // while a stored customer names a plan that is neither configured nor replaced.
  return nullptr;
}

// The limits that apply to a customer: the plan's, with overrides replacing a limit on the same
// meter and period, or added. meter == "" means every meter.
std::vector<core::LimitRule> limits_of(const config::Config& config, const Customer& c,
                                       std::string_view meter) {
  std::vector<core::LimitRule> out;
  if (const core::Plan* plan = plan_of(config, c)) {
    for (const auto& l : plan->limits) {
      if (meter.empty() || l.meter == meter) {
        out.push_back(l);
      }
    }
  }
  for (const auto& o : c.overrides) {
    if (!meter.empty() && o.meter != meter) {
      continue;
    }
    Result<core::LimitRule> r = config::make_limit(o.meter, o.period, o.days, o.amount, o.hard);
    if (!r) {
      continue;  // validated when set; a config change may have made it moot
    }
    auto same = std::find_if(out.begin(), out.end(), [&](const core::LimitRule& l) {
      return l.meter == r->meter && l.period == r->period;
    });
    if (same != out.end()) {
      *same = *r;
    } else {
      out.push_back(*r);
    }
  }
  return out;
}

}  // namespace engine

namespace {

// The limits of `meter` for a customer (limits_of), resolved once and kept while the plan and
// the overrides stay the same: a plan or override change takes effect on the next check.
// REQUIRES: state_mutex held (shared or exclusive) and limits_mutex held. The reference stays
// valid until the customer's plan or overrides change.
const std::vector<engine::ResolvedRule>& resolved_rules(const Engine::Impl& d,
                                                        const engine::CustomerState& cs,
                                                        CustomerLimits& cl, std::uint32_t meter,
                                                        const core::Plan* plan) {
  engine::ResolvedRules* entry = nullptr;
  for (auto& r : cl.resolved) {
    if (r.meter == meter) {
      entry = &r;
      break;
    }
  }
  if (entry != nullptr && entry->plan == plan && same_overrides(entry->overrides, cs.record.overrides)) {
    return entry->rules;
  }
  if (entry == nullptr) {
    entry = &cl.resolved.emplace_back();
    entry->meter = meter;
  }
  entry->plan = plan;
  entry->overrides = cs.record.overrides;
  entry->rules = resolve_rules(engine::limits_of(d.config, cs.record, d.meters[meter].spec.key));
  return entry->rules;
}

// Finds or (re)builds the counter of a calendar limit. `wc` is window_context() of the meter.
// REQUIRES: state_mutex held (shared or exclusive) and limits_mutex held.
LimitCounter* calendar_counter(const Engine::Impl& d, const engine::CustomerState& cs,
                               CustomerLimits& cl, std::uint32_t meter, const core::LimitRule& rule,
                               core::TimeUs now, const core::PeriodContext& pc,
                               const engine::WindowContext& wc, bool* outside) {
  // Windows partition time: while nothing they depend on has changed, the window that holds
  // now is the counter's own, and so is its start (its reset is the same).
  for (auto& c : cl.counters) {
    if (c.meter == meter && c.period == rule.period && c.days == rule.days) {
      if (c.context == wc && now >= c.span.start && now < c.span.end) {
        *outside = false;
        return &c;
      }
      break;
    }
  }
  core::Span span;
  *outside = !core::period_span(rule, now, pc, &span);
  if (*outside) {
    return nullptr;
  }
  // A reset inside the window moves its start to the reset instant itself. Aggregates hold whole
  // minutes, so a counter built here sums from the reset's minute: the usage of that minute
  // before the reset is counted again (conservative). reset_period() builds the counters at the
  // reset with that part taken off, so the count is exact until a counter is rebuilt (a restart,
  // a customer update).
  const core::TimeUs reset = wc.reset_us;
  const core::TimeUs count_from = span.contains(reset) ? std::max(span.start, reset) : span.start;
  for (auto it = cl.counters.begin(); it != cl.counters.end(); ++it) {
    LimitCounter& c = *it;
    if (c.meter == meter && c.period == rule.period && c.days == rule.days) {
      if (c.span.start == span.start && c.span.end == span.end && c.count_from_us == count_from) {
        c.context = wc;
        return &c;
      }
      cl.counters.erase(it);
      break;
    }
  }
  LimitCounter c;
  c.meter = meter;
  c.period = rule.period;
  c.days = rule.days;
  c.span = span;
  c.count_from_us = count_from;
  c.context = wc;
  engine::combine_customer(d.meters[meter], cs.num, core::floor_to(count_from, core::kUsPerMinute), span.end, false,
                           &c.committed, nullptr);
  cl.in_flight.for_each([&](std::uint64_t, const InFlight& f) {
    if (f.meter == meter && f.time_us >= count_from && f.time_us < span.end) {
      c.pending += f.amount;
    }
  });
  cl.counters.push_back(std::move(c));
  return &cl.counters.back();
}

RateCounter* rate_counter(const Engine::Impl& d, const engine::CustomerState& cs,
                          CustomerLimits& cl, std::uint32_t meter, const core::LimitRule& rule,
                          core::TimeUs now) {
  for (auto& r : cl.rates) {
    if (r.meter == meter && r.period == rule.period) {
      return &r;
    }
  }
  // After a start, the bucket is filled conservatively with the last period's usage (minute
  // aggregates, so up to a minute more than the period) as if it had all just happened.
  RateCounter r;
  r.meter = meter;
  r.period = rule.period;
  const core::TimeUs period = core::rate_period_us(rule.period);
  core::AggState recent;
  const engine::MeterState& ms = d.meters[meter];
  engine::combine_customer(ms, cs.num, core::floor_to(now - period, core::kUsPerMinute),
                           core::floor_to(now, core::kUsPerMinute) + core::kUsPerMinute, false, &recent, nullptr);
  r.state.level = used_value(ms.spec.aggregation, recent);
  cl.in_flight.for_each([&](std::uint64_t, const InFlight& f) {
    if (f.meter == meter && f.time_us >= now - period) {
      r.state.level += f.amount;
    }
  });
  if (r.state.level > rule.amount) {
    r.state.level = rule.amount;
  }
  r.state.at_us = now;
  cl.rates.push_back(r);
  return &cl.rates.back();
}

// Finds or builds the counters of every limit of `rules` and evaluates them for `amount` at
// `now` into `ev` (cleared first). REQUIRES: locks as calendar_counter; `rules` outlives `ev`'s
// use.
void evaluate(const Engine::Impl& d, const engine::CustomerState& cs, CustomerLimits& cl,
              std::uint32_t meter, const std::vector<engine::ResolvedRule>& rules,
              const core::Decimal& amount, core::TimeUs now, Evaluation* ev) {
  ev->limits.clear();
  ev->in.clear();
  ev->verdict = core::Verdict{};
  if (rules.empty()) {
    ev->out.clear();
    return;
  }
  const core::PeriodContext pc = period_context(cs);
  const engine::WindowContext wc = window_context(cs, pc, d.meters[meter].spec.key);
  const core::Aggregation agg = d.meters[meter].spec.aggregation;
  for (const auto& resolved : rules) {
    const core::LimitRule& rule = resolved.rule;
    Evaluated& e = ev->limits.emplace_back();
    core::LimitInput& x = ev->in.emplace_back();
    e.resolved = &resolved;
    x.rule = &rule;
    if (core::period_is_rate(rule.period)) {
      if (!rule.unlimited) {
        e.rate = rate_counter(d, cs, cl, meter, rule, now);
        x.rate = &e.rate->state;
      }
      continue;
    }
    e.counter = calendar_counter(d, cs, cl, meter, rule, now, pc, wc, &x.outside);
    if (e.counter != nullptr) {
      x.used = used_value(agg, e.counter->committed) + e.counter->pending;
      x.window_start_us = e.counter->count_from_us;
      x.reset_us = e.counter->span.end == std::numeric_limits<core::TimeUs>::max()
                       ? 0
                       : e.counter->span.end;
    } else {
      core::Span span;
      core::period_span(rule, now, pc, &span);
      x.window_start_us = span.start;
      x.reset_us = 0;  // a trial does not come back
    }
  }
  ev->out.resize(ev->in.size());
  ev->verdict = core::evaluate_limits(ev->in.data(), ev->in.size(), amount, now, ev->out.data());
}

// Applies `amount` to the counters of an evaluated check and records the in-flight token.
void apply(CustomerLimits& cl, const std::vector<Evaluated>& ev, std::uint32_t meter,
           const core::Decimal& amount, core::TimeUs now, std::uint64_t token,
           core::Decimal credits = {}) {
  for (const auto& e : ev) {
    if (e.rate != nullptr) {
      e.rate->state.level = core::rate_level(e.rate->state, e.rule().amount,
                                             core::rate_period_us(e.rule().period), now) +
                            amount;
      e.rate->state.at_us = now;
    }
  }
  // Every calendar counter of the meter whose window holds now (also those of other rules).
  for (auto& c : cl.counters) {
    if (c.meter == meter && now >= c.count_from_us && now < c.span.end) {
      c.pending += amount;
    }
  }
  cl.in_flight.add(token, InFlight{meter, now, amount, credits});
  cl.credits_in_flight += credits;
}

// Takes back what apply() did (for all-or-nothing batches).
void unapply(CustomerLimits& cl, std::uint32_t meter, const core::Decimal& amount,
             std::uint64_t token, const std::vector<std::pair<RateCounter*, core::RateState>>& rates) {
  if (const InFlight* f = cl.in_flight.find(token)) {
    cl.credits_in_flight = cl.credits_in_flight - f->credits;
    for (auto& c : cl.counters) {
      if (c.meter == meter && f->time_us >= c.count_from_us && f->time_us < c.span.end) {
        c.pending = c.pending - amount;
      }
    }
  }
  for (const auto& [r, before] : rates) {
    r->state = before;
  }
  cl.in_flight.erase(token);
}

// Removes a settled or released token's amount from pending.
void drop_in_flight(CustomerLimits& cl, std::uint64_t token) {
  const InFlight* found = cl.in_flight.find(token);
  if (found == nullptr) {
    return;
  }
  const InFlight f = *found;
  cl.in_flight.erase(token);
  cl.credits_in_flight = cl.credits_in_flight - f.credits;
  for (auto& c : cl.counters) {
    if (c.meter == f.meter && f.time_us >= c.count_from_us && f.time_us < c.span.end) {
      c.pending = c.pending - f.amount;
    }
  }
}

// Frees a reservation's hold: its pending amount in the calendar counters, and what is left of
// it in the rate buckets of its meter (apply() put it there). The hold sits on top of the bucket
// as it was, but is counted as draining first, so what is given back is never more than what
// the hold still adds. REQUIRES: state_mutex held (shared or exclusive) and limits_mutex held.
void free_hold(const Engine::Impl& d, CustomerLimits& cl, const engine::Reservation& res,
               core::TimeUs now) {
  const InFlight* held = cl.in_flight.find(res.token);
  if (held == nullptr) {
    return;
  }
  const core::TimeUs held_at = held->time_us;
  auto cit = d.customers.find(res.customer_num);
  if (cit != d.customers.end() && !cl.rates.empty()) {
    const std::vector<core::LimitRule> rules =
        engine::limits_of(d.config, cit->second.record, d.meters[res.meter].spec.key);
    for (auto& r : cl.rates) {
      if (r.meter != res.meter) {
        continue;
      }
      auto rule = std::find_if(rules.begin(), rules.end(), [&](const core::LimitRule& l) {
        return l.period == r.period && !l.unlimited;
      });
      if (rule == rules.end()) {
        continue;
      }
      const core::TimeUs period = core::rate_period_us(r.period);
      const core::Decimal hold_left =
          core::rate_level(core::RateState{res.amount, held_at}, rule->amount, period, now);
      const core::Decimal level = core::rate_level(r.state, rule->amount, period, now);
      r.state.level = level > hold_left ? level - hold_left : core::Decimal{};
      r.state.at_us = now;
    }
  }
  drop_in_flight(cl, res.token);
}


// A consumption whose usage event(s) are still to be queued (enqueue_usage), once the limit
// locks are released. The pointers outlive the enqueue (the request, or the reservation).
struct Usage {
  const engine::MeterState* ms = nullptr;
  const std::string* customer = nullptr;
  const std::string* event_id = nullptr;  // null: named after the token
  const std::vector<std::pair<std::string, std::string>>* properties = nullptr;
  core::Decimal amount;
  core::Decimal gauge_value;
  core::TimeUs now = 0;
  std::uint64_t token = 0;
};

// The usage event of a consumption, appended to `job`: one record whatever the amount (a count
// meter's amount is its quantity), so one check stores one event. The texts go straight into
// the job's arena; `scratch` only builds the id.
void add_usage_event(const Engine::Impl& d, engine::IngestJob& job, const Usage& u,
                     std::string& scratch) {
  const engine::MeterState& ms = *u.ms;
  core::EventBatch& b = job.parsed.batch;
  core::Event e;
  if (ms.spec.aggregation == core::Aggregation::kCount) {
    const std::int64_t n = core::decimal_floor_int(u.amount);
    TALLY_ASSERT(n >= 1 && n <= static_cast<std::int64_t>(core::kEventQuantityMax),
                 "a check's count amount is validated to 1..kCountAmountMax");
    e.quantity = static_cast<std::uint32_t>(n);
  }
  scratch.clear();
  if (u.event_id != nullptr) {
    scratch += *u.event_id;
  } else {
    char digits[24];
    scratch += "chk_";
    scratch += d.token_prefix;
    scratch += '_';
    scratch.append(digits, std::to_chars(digits, digits + sizeof(digits), u.token).ptr);
  }
  e.id = b.add_text(scratch);
  e.customer = b.add_text(*u.customer);
  e.type = b.add_text(ms.spec.event_type);
  e.time_us = u.now;
  e.prop_begin = static_cast<std::uint32_t>(b.props().size());
  auto add_prop = [&](std::string_view k, std::string_view v, core::PropKind kind) {
    b.props().push_back(core::Prop{b.add_text(k), b.add_text(v), kind});
  };
  for (const auto& [k, v] : ms.spec.filter) {
    add_prop(k, v, core::PropKind::kString);
  }
  for (const auto& [k, v] : *u.properties) {
    if (k == ms.spec.value_property) {
      continue;
    }
    bool in_filter = false;
    for (const auto& f : ms.spec.filter) {
      in_filter = in_filter || f.first == k;
    }
    if (!in_filter) {
      add_prop(k, v, core::PropKind::kString);
    }
  }
  if (!ms.spec.value_property.empty()) {
    scratch.clear();
    core::append_decimal(scratch, is_gauge(ms.spec.aggregation) ? u.gauge_value : u.amount);
    add_prop(ms.spec.value_property, scratch, core::PropKind::kNumber);
  }
  e.prop_count = static_cast<std::uint32_t>(b.props().size()) - e.prop_begin;
  job.parsed.indexes.push_back(static_cast<std::uint32_t>(b.size()));
  b.events().push_back(e);
  // The event carries its check's token, so the commit settles it as the check's own (already
  // counted in rate buckets), not as fresh usage to add again.
  job.check_tokens.push_back(u.token);
}

}  // namespace

// ---- settle (commit thread) ------------------------------------------------------------------

void Engine::Impl::settle_limits(const std::vector<engine::LimitDelta>& deltas,
                                 const std::vector<std::pair<std::uint32_t, std::uint64_t>>& settled) {
  std::lock_guard lock(limits_mutex);
  if (limits.empty()) {
    return;
  }
  for (const auto& delta : deltas) {
    auto it = limits.find(delta.customer_num);
    if (it == limits.end()) {
      continue;
    }
    for (auto& c : it->second.counters) {
      if (c.meter == delta.meter && delta.time_us >= c.count_from_us && delta.time_us < c.span.end) {
        c.committed.add(delta.value, delta.time_us, delta.seq);
      }
    }
    if (!delta.from_check) {
      for (auto& r : it->second.rates) {
        if (r.meter == delta.meter) {
          // Usage reported by ingest fills the bucket when it arrives.
          r.state.level += delta.value;
        }
      }
    }
  }
  for (const auto& [cnum, token] : settled) {
    auto it = limits.find(cnum);
    if (it != limits.end()) {
      drop_in_flight(it->second, token);
    }
  }
}

void Engine::Impl::forget_check_ids(
    const std::vector<std::pair<std::uint32_t, std::uint64_t>>& lost) {
  std::unordered_map<std::uint32_t, std::unordered_set<std::uint64_t>> tokens;
  for (const auto& [cnum, token] : lost) {
    tokens[cnum].insert(token);
  }
  std::lock_guard lock(limits_mutex);
  for (const auto& [cnum, set] : tokens) {
    auto it = limits.find(cnum);
    if (it == limits.end()) {
      continue;
    }
    auto& ids = it->second.recent_ids;
    for (auto rit = ids.begin(); rit != ids.end();) {
      rit = set.count(rit->second) != 0 ? ids.erase(rit) : std::next(rit);
    }
  }
}

void Engine::Impl::expire_reservations(core::TimeUs now) {
  for (auto it = reservations.begin(); it != reservations.end();) {
    // One not yet durable waits for its open to be written: its close must come after it.
    if (it->second.expires_us <= now && it->second.durable) {
      auto lit = limits.find(it->second.customer_num);
      if (lit != limits.end()) {
        free_hold(*this, lit->second, it->second, now);
      }
      engine::ReservationOp op;
      op.id = it->first;
      op.record.customer_num = it->second.customer_num;
      op.record.credits = it->second.credits;
      op.reason = engine::ReservationOp::kExpiry;
      expired_reservation_ops.push_back(std::move(op));
      it = reservations.erase(it);
    } else {
      ++it;
    }
  }
}

// ---- the check -------------------------------------------------------------------------------

namespace {

struct Prepared {
  const CheckRequest* request;
  const engine::CustomerState* cs;
  std::uint32_t meter;
  core::Decimal amount;
  const core::Plan* plan;
};

// Validates a request. Returns an empty status and fills *p, or the error.
Status prepare(const Engine::Impl& d, const CheckRequest& r, Prepared* out) {
  Prepared& p = *out;
  p.request = &r;
  p.cs = d.find_customer(r.customer);
  if (p.cs == nullptr) {
    return Status::not_found("customer '" + r.customer + "' does not exist");
  }
  const engine::MeterState* ms = d.find_meter(r.meter);
  if (ms == nullptr) {
    return Status::not_found("meter '" + r.meter + "' does not exist");
  }
  p.meter = static_cast<std::uint32_t>(ms - d.meters.data());
  if (!d.meter_limited[p.meter]) {
    return Status::invalid_argument("meter '" + r.meter + "' aggregates by " +
                                    std::string(core::aggregation_name(ms->spec.aggregation)) +
                                    "; checks apply to count, sum, latest and max meters");
  }
  if (!core::try_parse_decimal(r.amount, &p.amount) || p.amount.units <= 0) {
    return Status::invalid_argument("amount must be a number greater than 0");
  }
  if (ms->spec.aggregation == core::Aggregation::kCount && r.consume != Consume::kNo) {
    if (p.amount.units % core::Decimal::kScale != 0 ||
        p.amount > core::Decimal::from_int(kCountAmountMax)) {
      return Status::invalid_argument("meter '" + r.meter +
                                      "' counts events: amount must be a whole number up to " +
                                      std::to_string(kCountAmountMax));
    }
  }
  if (r.event_id.size() > core::kEventIdBytesMax - 8) {
    return Status::invalid_argument("event_id is at most 120 bytes");
  }
  if (!r.event_id.empty()) {
    TALLY_TRY(core::check_event_id("event_id", r.event_id));
  }
  if (r.reservation_ttl_seconds < 0 || r.reservation_ttl_seconds > 7 * 86400) {
    return Status::invalid_argument("ttl_seconds must be 1..604800");
  }
  for (const auto& [k, v] : r.properties) {
    if (k.empty() || k.size() > core::kPropKeyBytesMax || v.size() > core::kPropTextBytesMax) {
      return Status::invalid_argument("property names are 1..256 bytes, values up to 8 KiB");
    }
  }
  if (r.properties.size() > 64) {
    return Status::invalid_argument("at most 64 properties");
  }
  p.plan = engine::plan_of(d.config, p.cs->record);
  return Status();
}

// REQUIRES: *out is a fresh CheckResult.
void base_result(const Prepared& p, CheckResult* out) {
  if (p.plan != nullptr) {
    out->plan = p.plan->key;
  }
  out->meter = p.request->meter;
  out->amount = p.amount;
}

// Per-thread scratch of the check path, reused so a check allocates only its answer.
struct Scratch {
  std::vector<Prepared> prepared;
  std::vector<Usage> usage;
  std::vector<engine::ReservationOp> opens;
  Evaluation evaluation;
  std::string text;
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

// The answer's limit states, the evaluation's top as its deciding rule.
static void add_limit_states(const Evaluation& ev, CheckResult* out) {
  out->limits.reserve(ev.size());
  for (std::size_t i = 0; i < ev.size(); ++i) {
    out->limits.push_back(state_of(ev, i));
  }
  if (ev.top() >= 0) {
    out->has_rule = true;
    out->rule = out->limits[static_cast<std::size_t>(ev.top())];
  }
}

// Evaluates one prepared check under the locks; on allow (and consume), applies it and, when it
// consumes, appends its usage to `usage` (queued after the locks). Returns the token applied (0
// when nothing was applied). `rates_before` (may be null) receives the rate states before.
static std::uint64_t decide(Engine::Impl& d, const Prepared& p, core::TimeUs now,
                            std::vector<Usage>* usage, Evaluation& ev,
                            CheckResult* out,
                            std::vector<std::pair<RateCounter*, core::RateState>>* rates_before) {
  const CheckRequest& r = *p.request;
  base_result(p, out);
  CustomerLimits& cl = d.limits[p.cs->num];
  // The event id names one stored event of the customer, whatever its meter: the commit drops
  // a second event with the same id as a duplicate, so a second check with it must not count.
  // A retry answers the original decision (allowed: only consumed checks record their id),
  // whatever the usage, plan or status is now, for as long as the id is remembered: in
  // recent_ids until its event commits, then in the dedup index, across restarts.
  const std::string& id_key = r.event_id;
  const bool replay = r.consume == Consume::kYes && !id_key.empty() &&
                      (cl.recent_ids.count(id_key) != 0 || d.event_id_stored(*p.cs, r.customer, id_key));
  const std::vector<engine::ResolvedRule>& rules = resolved_rules(d, *p.cs, cl, p.meter, p.plan);
  if (replay) {
    evaluate(d, *p.cs, cl, p.meter, rules, core::Decimal{}, now, &ev);
    out->allowed = true;
    out->replayed = true;
    add_limit_states(ev, out);
    return 0;
  }
  if (p.cs->record.status == "suspended") {
    out->reason = Denial::kCustomerSuspended;
    out->message = "Customer '" + r.customer + "' is suspended.";
    return 0;
  }
  if (!r.feature.empty() && p.plan != nullptr && !p.plan->has_feature(r.feature)) {
    out->reason = Denial::kFeatureNotEnabled;
    out->message = "Feature '" + r.feature + "' is not available on the " + p.plan->key + " plan.";
    return 0;
  }
  evaluate(d, *p.cs, cl, p.meter, rules, p.amount, now, &ev);
  const core::Verdict& verdict = ev.verdict;
  out->allowed = verdict.allowed;
  out->overage = verdict.overage;
  if (!verdict.allowed) {
    TALLY_ASSERT(verdict.top >= 0, "a denial names the limit that denied it");
    const auto top = static_cast<std::size_t>(verdict.top);
    const engine::ResolvedRule& rule = *ev.limits[top].resolved;
    out->reason = verdict.trial_over ? Denial::kTrialExpired : Denial::kLimitExceeded;
    out->message = verdict.trial_over ? "The trial period of customer '" + r.customer + "' is over."
                                : "Limit of " + rule.limit_text + " " + rule.rule_text +
                                      " reached: " + ev.out[top].used.text() + " used, " +
                                      p.amount.text() + " requested.";
    out->retry_after_us = verdict.retry_after_us;
  }
  // A prepaid plan also needs the credits: the wallet's balance, less what checks have counted
  // but not yet burned, must cover the request's estimated cost (and not be exhausted).
  core::Decimal credits;
  if (out->allowed && p.plan != nullptr && p.plan->prepaid) {
    core::Decimal cost;
    const core::TimeUs anchor = p.cs->record.billing_anchor_us != 0
                                    ? p.cs->record.billing_anchor_us
                                    : p.cs->record.created_at_us;
    std::vector<std::pair<std::string_view, std::string_view>> props;
    props.reserve(r.properties.size());
    for (const auto& [k, v] : r.properties) {
      props.emplace_back(k, v);
    }
    if (!d.price_of(p.meter, p.cs->num, p.cs->tz, anchor, now, p.amount, props, nullptr, &cost,
                    &credits)) {
      credits = core::Decimal{};
    }
    auto wit = d.wallets.find(p.cs->num);
    const core::Decimal balance = wit != d.wallets.end() ? wit->second.balance : core::Decimal{};
    const core::Decimal available = balance - cl.credits_in_flight;
    out->prepaid = true;
    out->credits_required = credits;
    out->credits_available = available;
    if (available.units <= 0 || available < credits) {
      out->allowed = false;
      out->overage = false;
      out->reason = Denial::kInsufficientCredits;
      out->message = "Insufficient credits: " + credits.text() + " needed, " + available.text() +
                     " available.";
    }
  }
  std::uint64_t token = 0;
  if (out->allowed && r.consume != Consume::kNo) {
    token = d.next_token++;
    const core::Aggregation agg = d.meters[p.meter].spec.aggregation;
    for (const auto& e : ev.limits) {
      if (e.rate != nullptr && rates_before != nullptr) {
        rates_before->emplace_back(e.rate, e.rate->state);
      }
    }
    // The gauge's current value: the committed value plus pending of any counter.
    core::Decimal gauge_before;
    for (const auto& e : ev.limits) {
      if (e.counter != nullptr) {
        gauge_before = used_value(agg, e.counter->committed) + e.counter->pending;
        break;
      }
    }
    apply(cl, ev.limits, p.meter, p.amount, now, token, credits);
    // The states after consumption, for the answer.
    ev.consumed(p.amount, now);
    if (r.consume == Consume::kYes) {
      Usage& u = usage->emplace_back();
      u.ms = &d.meters[p.meter];
      u.customer = &r.customer;
      u.event_id = r.event_id.empty() ? nullptr : &r.event_id;
      u.properties = &r.properties;
      u.amount = p.amount;
      u.gauge_value = gauge_before + p.amount;
      u.now = now;
      u.token = token;
      if (!id_key.empty()) {
        cl.recent_ids.emplace(id_key, token);
        cl.recent_order.push_back(id_key);
        if (cl.recent_order.size() > kRecentIdsMax) {
          cl.recent_ids.erase(cl.recent_order.front());
          cl.recent_order.pop_front();
        }
      }
    }
  }
  add_limit_states(ev, out);
  return token;
}

namespace {

// Hands usage events to the commit thread: written straight into the open check job at the end
// of the queue, or into a new one when there is none or it is full. `waiter` (may be empty) is called when they are durable.
// REQUIRES: no engine lock held.
void enqueue_usage(Engine::Impl& d, const Usage* usage, std::size_t n,
                   std::function<void(Status)> waiter,
                   std::vector<engine::ReservationOp>* ops = nullptr) {
  if (n == 0 && (ops == nullptr || ops->empty())) {
    if (waiter) {
      waiter(Status());
    }
    return;
  }
  std::string& text = scratch().text;
  bool wake = false;
  {
    std::lock_guard lock(d.queue_mutex);
    engine::IngestJob* job = d.open_check_job;
    // A full job is left to its commit: group commits stay within commit_events_max, and
    // the job's buffers stop growing (and being copied) while the commit thread catches up.
    if (job == nullptr || job->parsed.batch.size() >= d.config.storage.commit_events_max) {
      auto fresh = std::make_unique<engine::IngestJob>();
      job = fresh.get();
      job->start_us = std::chrono::duration_cast<std::chrono::microseconds>(
                          std::chrono::steady_clock::now().time_since_epoch())
                          .count();
      job->done = [job, &d](Result<IngestSummary> r) {
        d.check_events_not_durable.fetch_sub(job->parsed.batch.size(), std::memory_order_relaxed);
        const Status s = r.status();
        for (auto& w : job->check_waiters) {
          w(s);
        }
      };
      ++d.jobs_submitted;
      engine::Job j;
      j.ingest = std::move(fresh);
      d.queue.push_back(std::move(j));
      d.open_check_job = job;
      wake = true;
    }
    const std::size_t before = job->parsed.batch.size();
    for (std::size_t i = 0; i < n; ++i) {
      add_usage_event(d, *job, usage[i], text);
    }
    d.queued_events += job->parsed.batch.size() - before;
    d.check_events_not_durable.fetch_add(job->parsed.batch.size() - before,
                                         std::memory_order_relaxed);
    if (ops != nullptr) {
      for (auto& op : *ops) {
        job->reservation_ops.push_back(std::move(op));
      }
      ops->clear();
    }
    if (waiter) {
      job->check_waiters.push_back(std::move(waiter));
    }
  }
  if (wake) {
    d.queue_cv.notify_one();
  }
}

// enqueue_usage, then waits until the commit that takes them is durable; its status.
// REQUIRES: no engine lock held.
Status enqueue_and_wait(Engine::Impl& d, const Usage* usage, std::size_t n,
                        std::vector<engine::ReservationOp>* ops) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  enqueue_usage(d, usage, n, [promise](Status s) { promise->set_value(std::move(s)); }, ops);
  return future.get();
}

// The record of an open reservation, as written by its commit.
engine::ReservationOp open_op(const Engine::Impl& d, const std::string& id,
                              const engine::Reservation& res) {
  engine::ReservationOp op;
  op.open = true;
  op.id = id;
  op.record.customer_num = res.customer_num;
  op.record.meter = d.meters[res.meter].spec.key;
  op.record.amount = res.amount;
  op.record.credits = res.credits;
  op.record.created_us = res.created_us;
  op.record.expires_us = res.expires_us;
  op.record.event_id = res.event_id;
  op.record.properties = res.properties;
  return op;
}

// Puts a reservation whose close could not be written back in memory, holding again.
// REQUIRES: no engine lock held.
void restore_reservation(Engine::Impl& d, const std::string& id, engine::Reservation res,
                         core::TimeUs now) {
  std::shared_lock state_lock(d.state_mutex);
  std::lock_guard limits_lock(d.limits_mutex);
  res.token = d.next_token++;
  const std::vector<Evaluated> no_rates;  // rate buckets are not given back their hold
  apply(d.limits[res.customer_num], no_rates, res.meter, res.amount, now, res.token, res.credits);
  d.reservations.emplace(id, std::move(res));
}

}  // namespace

// The checks of check() and check_batch(): all or nothing when there are several.
static Status run_checks(Engine::Impl& d, core::TimeUs now, const CheckRequest* requests,
                         std::size_t n, CheckResult* results) {
  Scratch& sc = scratch();
  std::vector<Usage>& usage = sc.usage;
  usage.clear();
  // Consuming checks queue usage events: refuse them while the queue is full, before anything
  // is counted, as ingest does.
  if (std::any_of(requests, requests + n, [](const CheckRequest& r) { return r.consume != Consume::kNo; })) {
    // A consumption must reach the disk: refused while the disk reserve refuses writes (a
    // dry run, which consumes nothing, is still answered).
    TALLY_TRY(d.writes_allowed());
    std::lock_guard lock(d.queue_mutex);
    if (d.queued_events >= Engine::Impl::kQueuedEventsMax) {
      return Status::unavailable("the usage queue is full; retry shortly");
    }
  }
  {
    std::shared_lock state_lock(d.state_mutex);
    std::vector<Prepared>& prepared = sc.prepared;
    prepared.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      Status s = prepare(d, requests[i], &prepared[i]);
      if (!s.ok()) {
        return s;
      }
    }
    std::lock_guard limits_lock(d.limits_mutex);
    if (!d.reservations.empty()) {
      d.expire_reservations(now);
    }
    struct Undo {
      std::uint32_t cnum;
      std::uint32_t meter;
      core::Decimal amount;
      std::uint64_t token;
      std::vector<std::pair<RateCounter*, core::RateState>> rates;
    };
    std::vector<Undo> undo;
    bool any_denied = false;
    for (std::size_t i = 0; i < n; ++i) {
      Undo u;
      const std::uint64_t token = decide(d, prepared[i], now, &usage, sc.evaluation, &results[i],
                                         n > 1 ? &u.rates : nullptr);
      if (!results[i].allowed) {
        any_denied = true;
        d.denials.record(prepared[i].cs->num, now);
      }
      if (token != 0 && n > 1) {
        u.cnum = prepared[i].cs->num;
        u.meter = prepared[i].meter;
        u.amount = prepared[i].amount;
        u.token = token;
        undo.push_back(std::move(u));
      }
      if (requests[i].consume == Consume::kReserve && token != 0) {
        engine::Reservation res;
        res.customer_num = prepared[i].cs->num;
        res.customer = requests[i].customer;
        res.meter = prepared[i].meter;
        res.amount = prepared[i].amount;
        const std::int64_t ttl = requests[i].reservation_ttl_seconds > 0
                                     ? requests[i].reservation_ttl_seconds
                                     : d.config.enforcement.reservation_ttl_seconds;
        res.expires_us = now + ttl * core::kUsPerSecond;
        res.token = token;
        res.properties = requests[i].properties;
        res.event_id = requests[i].event_id;
        res.created_us = now;
        if (const InFlight* f = d.limits[res.customer_num].in_flight.find(token)) {
          res.credits = f->credits;
        }
        // The id is the only credential for commit and release (any key with the check scope
        // may call them), so it carries 64 random bits: another customer cannot guess it from
        // its own ids.
        results[i].reservation_id = "res_" + d.token_prefix + "_" + std::to_string(token) + "_" +
                                    common::to_hex(common::random_bytes(8));
        results[i].reservation_expires_us = res.expires_us;
        d.reservations.emplace(results[i].reservation_id, std::move(res));
      }
    }
    if (any_denied && n > 1) {
      // All or nothing: take back what the allowed ones applied.
      for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
        CustomerLimits& cl = d.limits[it->cnum];
        unapply(cl, it->meter, it->amount, it->token, it->rates);
        for (auto rit = cl.recent_ids.begin(); rit != cl.recent_ids.end();) {
          rit = rit->second == it->token ? cl.recent_ids.erase(rit) : std::next(rit);
        }
      }
      for (std::size_t i = 0; i < n; ++i) {
        CheckResult& res = results[i];
        if (!res.reservation_id.empty()) {
          d.reservations.erase(res.reservation_id);
          res.reservation_id.clear();
          res.reservation_expires_us = 0;
        }
      }
      usage.clear();
      for (std::size_t i = 0; i < n; ++i) {
        if (results[i].allowed) {
          results[i].allowed = false;
          results[i].reason = Denial::kBatchDenied;
          results[i].message = "Not consumed: another check of the batch was denied.";
        }
      }
    }
  }
  // A reservation is answered once its record (and hold) is durable, whatever check_sync.
  std::vector<engine::ReservationOp>& opens = sc.opens;
  opens.clear();
  for (std::size_t i = 0; i < n; ++i) {
    if (!results[i].reservation_id.empty()) {
      std::shared_lock state_lock(d.state_mutex);
      std::lock_guard limits_lock(d.limits_mutex);
      auto it = d.reservations.find(results[i].reservation_id);
      if (it != d.reservations.end()) {
        opens.push_back(open_op(d, it->first, it->second));
      }
    }
  }
  if (!opens.empty()) {
    std::vector<std::string> ids;
    for (const auto& op : opens) {
      ids.push_back(op.id);
    }
    Status s = enqueue_and_wait(d, usage.data(), usage.size(), &opens);
    usage.clear();
    if (!s.ok()) {
      // Not durable: the reservations are taken back, their holds freed.
      std::shared_lock state_lock(d.state_mutex);
      std::lock_guard limits_lock(d.limits_mutex);
      for (const auto& id : ids) {
        auto it = d.reservations.find(id);
        if (it != d.reservations.end()) {
          free_hold(d, d.limits[it->second.customer_num], it->second, now);
          d.reservations.erase(it);
        }
      }
      return s;
    }
  } else if (d.config.enforcement.check_sync && !usage.empty()) {
    Status s = enqueue_and_wait(d, usage.data(), usage.size(), nullptr);
    usage.clear();
    if (!s.ok()) {
      return s;
    }
  } else {
    enqueue_usage(d, usage.data(), usage.size(), nullptr);
    usage.clear();
  }
  return Status();
}

Result<std::vector<CheckResult>> Engine::check_batch(const std::vector<CheckRequest>& requests) {
  Impl& d = *impl_;
  if (requests.empty() || requests.size() > 100) {
    return Status::invalid_argument("a batch holds 1 to 100 checks");
  }
  if (d.read_only) {
    return Status::unavailable("the engine is open read-only");
  }
  std::vector<CheckResult> results(requests.size());
  Status s = run_checks(d, clock().now_us(), requests.data(), requests.size(), results.data());
  if (!s.ok()) {
    return s;
  }
  return results;
}

Result<CheckResult> Engine::check(const CheckRequest& request) {
  Impl& d = *impl_;
  if (d.read_only) {
    return Status::unavailable("the engine is open read-only");
  }
  CheckResult result;
  Status s = run_checks(d, clock().now_us(), &request, 1, &result);
  if (!s.ok()) {
    return s;
  }
  return result;
}

// ---- reservations ------------------------------------------------------------------------------

Result<CheckResult> Engine::commit_reservation(const std::string& id, const std::string& amount_text,
                                               const std::string& restrict_customer) {
  Impl& d = *impl_;
  // Its usage must reach the disk: refused, the reservation kept, while the disk reserve
  // refuses writes.
  TALLY_TRY(d.writes_allowed());
  const core::TimeUs now = clock().now_us();
  CheckResult out;
  // The usage event is queued after the locks; it points into these.
  engine::Reservation res;
  std::string event_id;
  Usage usage;
  bool consumed = false;
  {
    std::shared_lock state_lock(d.state_mutex);
    std::lock_guard limits_lock(d.limits_mutex);
    d.expire_reservations(now);
    auto it = d.reservations.find(id);
    if (it == d.reservations.end() ||
        (!restrict_customer.empty() && it->second.customer != restrict_customer)) {
      return Status::not_found("reservation '" + id + "' does not exist or has expired");
    }
    res = it->second;
    core::Decimal amount = res.amount;
    if (!amount_text.empty() &&
        (!core::try_parse_decimal(amount_text, &amount) || amount.units < 0)) {
      return Status::invalid_argument("amount must be a number >= 0");
    }
    const engine::MeterState& ms = d.meters[res.meter];
    if (ms.spec.aggregation == core::Aggregation::kCount &&
        (amount.units % core::Decimal::kScale != 0 || amount > core::Decimal::from_int(kCountAmountMax))) {
      return Status::invalid_argument("this meter counts events: amount must be a whole number");
    }
    d.reservations.erase(it);
    CustomerLimits& cl = d.limits[res.customer_num];
    free_hold(d, cl, res, now);
    const auto* cs = d.find_customer(res.customer);
    out.allowed = true;
    out.meter = ms.spec.key;
    out.amount = amount;
    out.reservation_id = id;
    if (cs != nullptr) {
      out.plan = engine::plan_of(d.config, cs->record) != nullptr ? engine::plan_of(d.config, cs->record)->key : "";
    }
    if (amount.units > 0 && cs != nullptr) {
      // The work is done: its actual usage is recorded whatever the limits say now.
      const std::uint64_t token = d.next_token++;
      const std::vector<engine::ResolvedRule> rules =
          resolve_rules(engine::limits_of(d.config, cs->record, ms.spec.key));
      Evaluation ev;
      evaluate(d, *cs, cl, res.meter, rules, amount, now, &ev);
      core::Decimal gauge_before;
      for (const auto& e : ev.limits) {
        if (e.counter != nullptr) {
          gauge_before = used_value(ms.spec.aggregation, e.counter->committed) + e.counter->pending;
          break;
        }
      }
      apply(cl, ev.limits, res.meter, amount, now, token);
      event_id = res.event_id.empty() ? id : res.event_id;
      usage.ms = &ms;
      usage.customer = &res.customer;
      usage.event_id = &event_id;
      usage.properties = &res.properties;
      usage.amount = amount;
      usage.gauge_value = gauge_before + amount;
      usage.now = now;
      usage.token = token;
      consumed = true;
      Evaluation after;
      evaluate(d, *cs, cl, res.meter, rules, core::Decimal{}, now, &after);
      for (std::size_t i = 0; i < after.size(); ++i) {
        out.overage = out.overage || (!after.limits[i].rule().unlimited && after.out[i].headroom.units < 0);
      }
      add_limit_states(after, &out);
    }
  }
  // The usage event and the close are one write: committed once, even across a crash.
  std::vector<engine::ReservationOp> close(1);
  close[0].id = id;
  close[0].record.customer_num = res.customer_num;
  close[0].record.credits = res.credits;
  close[0].usage_token = consumed ? usage.token : 0;
  close[0].reason = engine::ReservationOp::kCommit;
  if (Status s = enqueue_and_wait(d, &usage, consumed ? 1 : 0, &close); !s.ok()) {
    restore_reservation(d, id, std::move(res), now);
    return s;
  }
  return out;
}

Status Engine::release_reservation(const std::string& id, const std::string& restrict_customer) {
  Impl& d = *impl_;
  const core::TimeUs now = clock().now_us();
  engine::Reservation res;
  {
    std::shared_lock state_lock(d.state_mutex);
    std::lock_guard limits_lock(d.limits_mutex);
    d.expire_reservations(now);
    auto it = d.reservations.find(id);
    if (it == d.reservations.end() ||
        (!restrict_customer.empty() && it->second.customer != restrict_customer)) {
      return Status::not_found("reservation '" + id + "' does not exist or has expired");
    }
    auto lit = d.limits.find(it->second.customer_num);
    if (lit != d.limits.end()) {
      free_hold(d, lit->second, it->second, now);
    }
    res = std::move(it->second);
    d.reservations.erase(it);
  }
  std::vector<engine::ReservationOp> close(1);
  close[0].id = id;
  close[0].record.customer_num = res.customer_num;
  close[0].record.credits = res.credits;
  close[0].reason = engine::ReservationOp::kRelease;
  if (Status s = enqueue_and_wait(d, nullptr, 0, &close); !s.ok()) {
    restore_reservation(d, id, std::move(res), now);
    return s;
  }
  return Status();
}

// ---- reports ------------------------------------------------------------------------------------

Result<LimitsReport> Engine::limits_report(const std::string& customer) {
  Impl& d = *impl_;
  const core::TimeUs now = clock().now_us();
  std::shared_lock state_lock(d.state_mutex);
  const engine::CustomerState* cs = d.find_customer(customer);
  if (cs == nullptr) {
    return Status::not_found("customer '" + customer + "' does not exist");
  }
  LimitsReport out;
  out.customer = customer;
  const core::Plan* plan = engine::plan_of(d.config, cs->record);
  if (plan != nullptr) {
    out.plan = plan->key;
    out.features = plan->features;
  }
  {
    // The same choice as the alerts' evaluation (alerts.cc): the plan's own, else [alerts]'s.
    const bool own = plan != nullptr && !plan->alert_thresholds.empty();
    const std::vector<std::int64_t>& thresholds =
        own ? plan->alert_thresholds : d.config.alerts.thresholds;
    const std::vector<std::string>& levels = own ? plan->alert_levels : d.config.alerts.levels;
    for (std::size_t i = 0; i < thresholds.size(); ++i) {
      out.alert_thresholds.push_back(
          AlertThreshold{thresholds[i], std::string(core::alert_level(thresholds, levels, i))});
    }
  }
  const std::vector<core::LimitRule> rules = engine::limits_of(d.config, cs->record, "");
  std::lock_guard limits_lock(d.limits_mutex);
  d.expire_reservations(now);
  CustomerLimits& cl = d.limits[cs->num];
  for (const auto& rule : rules) {
    const engine::MeterState* ms = d.find_meter(rule.meter);
    if (ms == nullptr) {
      continue;
    }
    const auto m = static_cast<std::uint32_t>(ms - d.meters.data());
    const std::vector<engine::ResolvedRule> one{resolve_rule(rule)};
    Evaluation ev;
    evaluate(d, *cs, cl, m, one, core::Decimal{}, now, &ev);
    for (std::size_t i = 0; i < ev.size(); ++i) {
      LimitState state = state_of(ev, i);
      const std::string percent = state.percent();
      core::Decimal pct;
      if (!percent.empty() && core::try_parse_decimal(percent, &pct) &&
          pct > core::Decimal::from_int(80)) {
        out.warnings.push_back(state.rule() + " at " + percent + "%");
      }
      out.limits.push_back(std::move(state));
    }
  }
  return out;
}

Result<CustomerSummaryPage> Engine::customer_summaries(const CustomerSummaryQuery& q) {
  Impl& d = *impl_;
  if (q.sort != "id" && q.sort != "name" && q.sort != "plan" && q.sort != "status" &&
      q.sort != "usage") {
    return Status::invalid_argument("sort must be id, name, plan, status or usage");
  }
  if (q.limit == 0 || q.limit > 1000) {
    return Status::invalid_argument("limit must be 1..1000");
  }
  auto lower = [](std::string_view s) {
    std::string out(s);
    for (char& c : out) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out;
  };
  const std::string needle = lower(q.search);
  std::vector<CustomerSummary> rows;
  {
    std::shared_lock lock(d.state_mutex);
    for (const auto& [num, cs] : d.customers) {
      const Customer& c = cs.record;
      if (!needle.empty() && lower(c.id).find(needle) == std::string::npos &&
          lower(c.name).find(needle) == std::string::npos) {
        continue;
      }
      CustomerSummary s;
      s.id = c.id;
      s.name = c.name;
      const core::Plan* plan = engine::plan_of(d.config, c);
      s.plan = plan != nullptr ? plan->key : "";
      s.status = c.status;
      s.organization = c.organization;
      rows.push_back(std::move(s));
    }
  }
  // The highest limit percent of a customer now (its limits report's, exactly as shown there).
  auto fill_usage = [this](CustomerSummary& s) {
    Result<LimitsReport> r = limits_report(s.id);
    if (!r) {
      return;  // removed meanwhile: shown without usage
    }
    core::Decimal best;
    for (const LimitState& l : r->limits) {
      const std::string percent = l.percent();
      core::Decimal p;
      if (percent.empty() || !core::try_parse_decimal(percent, &p)) {
        continue;
      }
      if (s.max_percent.empty() || p > best) {
        best = p;
        s.max_percent = percent;
        s.max_rule = l.rule();
      }
    }
  };
  const bool by_usage = q.sort == "usage";
  if (by_usage) {
    for (auto& s : rows) {
      fill_usage(s);
    }
  }
  auto key_less = [&q](const CustomerSummary& a, const CustomerSummary& b) {
    if (q.sort == "name" && a.name != b.name) return a.name < b.name;
    if (q.sort == "plan" && a.plan != b.plan) return a.plan < b.plan;
    if (q.sort == "status" && a.status != b.status) return a.status < b.status;
    if (q.sort == "usage" && a.max_percent != b.max_percent) {
      // No limit sorts lowest; percents compare as exact decimals.
      if (a.max_percent.empty() || b.max_percent.empty()) return a.max_percent.empty();
      core::Decimal x;
      core::Decimal y;
      const bool ok = core::try_parse_decimal(a.max_percent, &x) &&
                      core::try_parse_decimal(b.max_percent, &y);
      if (ok && x != y) return x < y;
    }
    return false;
  };
  std::sort(rows.begin(), rows.end(), [&](const CustomerSummary& a, const CustomerSummary& b) {
    if (key_less(a, b)) return !q.descending;
    if (key_less(b, a)) return q.descending;
    return a.id < b.id;  // ties by id, always ascending, so pages are stable
  });
  CustomerSummaryPage out;
  out.total = rows.size();
  const std::size_t from = std::min<std::size_t>(q.offset, rows.size());
  const std::size_t to = std::min<std::size_t>(from + q.limit, rows.size());
  for (std::size_t i = from; i < to; ++i) {
    if (!by_usage) {
      fill_usage(rows[i]);
    }
    out.customers.push_back(std::move(rows[i]));
  }
  return out;
}

void Engine::Impl::limit_usages(const engine::CustomerState& cs, std::uint32_t meter,
                                core::TimeUs now, std::vector<engine::LimitUsage>* out) {
  std::lock_guard limits_lock(limits_mutex);
  CustomerLimits& cl = limits[cs.num];
  const auto& rules = resolved_rules(*this, cs, cl, meter, engine::plan_of(config, cs.record));
  const core::PeriodContext pc = period_context(cs);
  const engine::WindowContext wc = window_context(cs, pc, meters[meter].spec.key);
  const core::Aggregation agg = meters[meter].spec.aggregation;
  for (const auto& resolved : rules) {
    const core::LimitRule& rule = resolved.rule;
    if (rule.unlimited || core::period_is_rate(rule.period)) {
      continue;
    }
    bool outside = false;
    const LimitCounter* c = calendar_counter(*this, cs, cl, meter, rule, now, pc, wc, &outside);
    if (c == nullptr) {
      continue;
    }
    out->push_back(engine::LimitUsage{&resolved, used_value(agg, c->committed) + c->pending,
                                      c->span});
  }
}

// ---- admin: overrides and resets -----------------------------------------------------------------

namespace {

std::string audit_key(core::TimeUs at, std::uint64_t n) {
  std::string k;
  engine::put_be64(k, static_cast<std::uint64_t>(at));
  engine::put_be64(k, n);
  return k;
}

// {"action":..., "customer":..., <extra fields>, "at":...}: one audit record.
std::string audit_record(std::string_view action, std::string_view customer,
                         const std::function<void(common::JsonWriter&)>& extra, core::TimeUs at) {
  common::JsonWriter w;
  w.begin_object().key("action").value(action).key("customer").value(customer);
  extra(w);
  w.key("at").value(core::format_rfc3339(at)).end_object();
  return w.take();
}

}  // namespace

Result<Customer> Engine::set_overrides(const std::string& customer,
                                       const std::vector<LimitOverride>& overrides) {
  Impl& d = *impl_;
  if (overrides.size() > 64) {
    return Status::invalid_argument("at most 64 overrides");
  }
  for (std::size_t i = 0; i < overrides.size(); ++i) {
    const LimitOverride& o = overrides[i];
    const core::MeterSpec* m = d.config.find_meter(o.meter);
    if (m == nullptr) {
      return Status::invalid_argument("overrides[" + std::to_string(i) + "].meter: '" + o.meter +
                                      "' is not a configured meter");
    }
    const auto idx = static_cast<std::size_t>(m - d.config.meters.data());
    if (!d.meter_limited[idx]) {
      return Status::invalid_argument("overrides[" + std::to_string(i) + "].meter: limits apply "
                                      "to count, sum, latest and max meters");
    }
    Result<core::LimitRule> r = config::make_limit(o.meter, o.period, o.days, o.amount, o.hard);
    if (!r) {
      return Status::invalid_argument("overrides[" + std::to_string(i) + "]: " + r.error().message());
    }
  }
  auto updated = std::make_shared<Customer>();
  auto num = std::make_shared<std::uint32_t>(0);
  const core::TimeUs now = clock().now_us();
  Status s = engine::run_admin(
      d,
      [&d, customer, overrides, updated, num, now](store::WriteBatch& wb) -> Status {
        const engine::CustomerState* cs = d.find_customer(customer);
        if (cs == nullptr) {
          return Status::not_found("customer '" + customer + "' does not exist");
        }
        *num = cs->num;
        Customer c = cs->record;
        c.overrides = overrides;
        c.updated_at_us = now;
        *updated = c;
        wb.put(store::Space::kCustomers, c.id, engine::encode_customer(*num, c));
        std::string audit = audit_record(
            "overrides", customer,
            [&](common::JsonWriter& w) { w.key("count").value(std::uint64_t{overrides.size()}); }, now);
        wb.put(store::Space::kAudit, audit_key(now, d.next_seq), audit);
        return Status();
      },
      [&d, updated, num]() {
        d.customers.at(*num).record = *updated;
        // Calendar counters measure usage, whatever the amounts: they stay (rebuilding one
        // would lose the exactness of a reset, see reset_period). Rate buckets drain at the
        // limit's rate, so they are refilled from the recent usage under the new limits.
        std::lock_guard lock(d.limits_mutex);
        auto it = d.limits.find(*num);
        if (it != d.limits.end()) {
          it->second.rates.clear();
        }
      });
  if (!s.ok()) {
    return s;
  }
  return *updated;
}

Result<Customer> Engine::reset_period(const std::string& customer, const std::string& meter,
                                      const std::string& actor) {
  Impl& d = *impl_;
  if (d.config.find_meter(meter) == nullptr) {
    return Status::invalid_argument("'" + meter + "' is not a configured meter");
  }
  const auto meter_index =
      static_cast<std::uint32_t>(d.config.find_meter(meter) - d.config.meters.data());
  auto updated = std::make_shared<Customer>();
  auto num = std::make_shared<std::uint32_t>(0);
  // The reset instant is read on the commit thread, in prepare: every event committed before it
  // is then older than the reset, so the reset minute's aggregate at install time holds exactly
  // the usage to take off (see below).
  auto reset_us = std::make_shared<core::TimeUs>(0);
  Status s = engine::run_admin(
      d,
      [&d, customer, meter, actor, updated, num, reset_us](store::WriteBatch& wb) -> Status {
        const engine::CustomerState* cs = d.find_customer(customer);
        if (cs == nullptr) {
          return Status::not_found("customer '" + customer + "' does not exist");
        }
        const core::TimeUs now = d.clock->now_us();
        *reset_us = now;
        *num = cs->num;
        Customer c = cs->record;
        bool replaced = false;
        for (auto& [m, at] : c.resets) {
          if (m == meter) {
            at = now;
            replaced = true;
          }
        }
        if (!replaced) {
          c.resets.emplace_back(meter, now);
        }
        c.updated_at_us = now;
        *updated = c;
        wb.put(store::Space::kCustomers, c.id, engine::encode_customer(*num, c));
        std::string audit =
            audit_record(
            "reset", customer,
            [&](common::JsonWriter& w) { w.key("meter").value(meter).key("actor").value(actor); }, now);
        wb.put(store::Space::kAudit, audit_key(now, d.next_seq), audit);
        return Status();
      },
      [&d, updated, num, meter_index, reset_us]() {
        engine::CustomerState& cs = d.customers.at(*num);
        cs.record = *updated;
        std::lock_guard lock(d.limits_mutex);
        CustomerLimits& cl = d.limits[*num];
        std::erase_if(cl.counters, [&](const LimitCounter& c) { return c.meter == meter_index; });
        std::erase_if(cl.rates, [&](const RateCounter& r) { return r.meter == meter_index; });
        // Build the meter's counters now, exactly: a counter sums whole minutes, so the usage
        // of the reset's minute before the reset (all of that minute's committed usage: nothing
        // newer is committed yet) is taken off. Check usage still in flight from before the
        // reset is older than the counter's start and never counts in it.
        const engine::MeterState& ms = d.meters[meter_index];
        const core::TimeUs at = *reset_us;
        core::Decimal before_reset;
        const core::Aggregation agg = ms.spec.aggregation;
        if (core::floor_to(at, core::kUsPerMinute) != at &&
            (agg == core::Aggregation::kCount || agg == core::Aggregation::kSum)) {
          core::AggState minute;
          engine::combine_customer(ms, cs.num, core::floor_to(at, core::kUsPerMinute),
                                   core::floor_to(at, core::kUsPerMinute) + core::kUsPerMinute, false, &minute, nullptr);
          before_reset = used_value(agg, minute);
        }
        const core::PeriodContext pc = period_context(cs);
        const engine::WindowContext wc = window_context(cs, pc, ms.spec.key);
        std::vector<const LimitCounter*> built;
        for (const auto& rule : engine::limits_of(d.config, cs.record, ms.spec.key)) {
          if (core::period_is_rate(rule.period)) {
            continue;
          }
          bool outside = false;
          LimitCounter* c = calendar_counter(d, cs, cl, meter_index, rule, at, pc, wc, &outside);
          if (c == nullptr || c->count_from_us != at ||
              std::find(built.begin(), built.end(), c) != built.end()) {
            continue;
          }
          built.push_back(c);
          c->pending = c->pending - before_reset;
        }
      });
  if (!s.ok()) {
    return s;
  }
  return *updated;
}

std::vector<std::string> Engine::audit_log(std::size_t limit) const {
  std::vector<std::string> out;
  impl_->store
      ->scan(store::Space::kAudit, "", "",
             [&](std::string_view, std::string_view v) {
               out.emplace_back(v);
               return true;
             })
      .ignore_error();
  if (out.size() > limit) {
    out.erase(out.begin(), out.end() - static_cast<std::ptrdiff_t>(limit));
  }
  return out;
}

}  // namespace tally
