// The counters of a customer's limits (see check.cc for how checks use them): rules resolved
// from the plan and overrides, a counter per calendar window and a GCRA bucket per rate,
// evaluated and applied under limits_mutex by checks, settled by the commit thread when the
// consumption they hold is durable (settle_limits), and given back when it is lost or released.
#include <algorithm>
#include <limits>
#include <unordered_set>

#include <spdlog/spdlog.h>

#include "common/assert.h"
#include "engine/admin_rules.h"
#include "engine/limits_impl.h"

namespace tally {

namespace engine {

namespace {

bool same_overrides(const std::vector<LimitOverride>& a, const std::vector<LimitOverride>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const LimitOverride& x, const LimitOverride& y) {
                      return x.meter == y.meter && x.period == y.period && x.days == y.days &&
                             x.amount == y.amount && x.hard == y.hard;
                    });
}

RateCounter* rate_counter(const Engine::Impl& d, const CustomerState& cs, CustomerLimits& cl,
                          std::uint32_t meter, const core::LimitRule& rule, core::TimeUs now);

}  // namespace

// The state of a rule before any counter is read: its identity and limit.
LimitState rule_state(const core::LimitRule& r) {
  LimitState s;
  s.meter = r.meter;
  s.period = r.period;
  s.days = r.days;
  s.unlimited = r.unlimited;
  s.hard = r.hard;
  if (!r.unlimited) {
    s.limit = r.amount;
  }
  return s;
}

core::PeriodContext period_context(const engine::CustomerState& cs) {
  core::PeriodContext p;
  p.tz = cs.tz;
  p.billing_anchor_us =
      cs.record.billing_anchor_us != 0 ? cs.record.billing_anchor_us : cs.record.created_at_us;
  p.trial_start_us =
      cs.record.trial_started_at_us != 0 ? cs.record.trial_started_at_us : cs.record.created_at_us;
  return p;
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

LimitState limit_state(const core::LimitRule& rule, const core::LimitOutcome& o) {
  LimitState s = rule_state(rule);
  s.used = o.used;
  if (!s.unlimited) {
    s.remaining = o.remaining;
  }
  s.window_start_us = o.window_start_us;
  s.reset_us = o.reset_us;
  return s;
}

LimitState state_of(const Evaluation& ev, std::size_t i) {
  return limit_state(ev.limits[i].rule(), ev.out[i]);
}

// The answer's limit states, the evaluation's top as its deciding rule.
void add_limit_states(const Evaluation& ev, CheckResult* out) {
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

bool denied_by_status_or_feature(const CheckRequest& r, const Customer& c, const core::Plan* plan,
                                 CheckResult* out) {
  if (c.status == CustomerStatus::kSuspended) {
    out->reason = Denial::kCustomerSuspended;
    out->message = "Customer '" + r.customer + "' is suspended.";
    return true;
  }
  if (!r.feature.empty() && plan != nullptr && !plan->has_feature(r.feature)) {
    out->reason = Denial::kFeatureNotEnabled;
    out->message = "Feature '" + r.feature + "' is not available on the " + plan->key + " plan.";
    return true;
  }
  return false;
}

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
  if (entry != nullptr && entry->plan == plan &&
      same_overrides(entry->overrides, cs.record.overrides)) {
    return entry->rules;
  }
  if (entry == nullptr) {
    entry = &cl.resolved.emplace_back();
    entry->meter = meter;
  }
  entry->plan = plan;
  entry->overrides = cs.record.overrides;
  entry->rules =
      resolve_rules(engine::limits_of(d.config, cs.record, d.catalog->meters[meter].spec.key));
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
  // A window's start before the minute horizon, off an hour (a zone at +05:30), reads its
  // first minutes from the store; a failed read counts what was read (and is logged).
  if (Status read = engine::combine_customer(d.meter_aggregates[meter], cs.num,
                                             core::floor_to(count_from, core::kUsPerMinute),
                                             span.end, false, &c.committed, nullptr);
      !read.ok()) {
    spdlog::error("a limit counter could not read old minutes from the store: {}", read.message());
  }
  cl.in_flight.for_each([&](std::uint64_t, const InFlight& f) {
    if (f.meter == meter && f.time_us >= count_from && f.time_us < span.end) {
      c.pending += f.amount;
    }
  });
  cl.counters.push_back(std::move(c));
  return &cl.counters.back();
}

namespace {

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
  if (Status read = engine::combine_customer(
          d.meter_aggregates[meter], cs.num, core::floor_to(now - period, core::kUsPerMinute),
          core::floor_to(now, core::kUsPerMinute) + core::kUsPerMinute, false, &recent, nullptr);
      !read.ok()) {
    spdlog::error("a rate counter could not read old minutes from the store: {}", read.message());
  }
  r.state.level = used_value(d.catalog->meters[meter].spec.aggregation, recent);
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

}  // namespace

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
  const engine::WindowContext wc = window_context(cs, pc, d.catalog->meters[meter].spec.key);
  const core::Aggregation agg = d.catalog->meters[meter].spec.aggregation;
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
      x.reset_us =
          e.counter->span.end == std::numeric_limits<core::TimeUs>::max() ? 0 : e.counter->span.end;
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
           core::Decimal credits) {
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
             std::uint64_t token,
             const std::vector<std::pair<RateCounter*, core::RateState>>& rates) {
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

std::pair<core::TimeUs, core::TimeUs> settle_span(const CustomerLimits& cl, std::uint32_t meter,
                                                  core::TimeUs now) {
  core::TimeUs lo = core::floor_to(now, core::kUsPerMinute);
  core::TimeUs hi = lo + core::kUsPerMinute;
  for (const auto& c : cl.counters) {
    if (c.meter != meter) {
      continue;
    }
    if (now < c.count_from_us) {
      hi = std::min(hi, c.count_from_us);
    } else if (now >= c.span.end) {
      lo = std::max(lo, c.span.end);
    } else {
      lo = std::max(lo, c.count_from_us);
      hi = std::min(hi, c.span.end);
    }
  }
  return {lo, hi};
}

// Removes a settled or released token's amount from pending.
bool drop_in_flight(CustomerLimits& cl, std::uint64_t token) {
  const InFlight* found = cl.in_flight.find(token);
  if (found == nullptr) {
    return false;
  }
  const InFlight f = *found;
  cl.in_flight.erase(token);
  cl.credits_in_flight = cl.credits_in_flight - f.credits;
  for (auto& c : cl.counters) {
    if (c.meter == f.meter && f.time_us >= c.count_from_us && f.time_us < c.span.end) {
      c.pending = c.pending - f.amount;
    }
  }
  return true;
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
        engine::limits_of(d.config, cit->second.record, d.catalog->meters[res.meter].spec.key);
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

}  // namespace engine

using engine::CustomerLimits;
using engine::InFlight;
using engine::LimitCounter;
using engine::used_value;

// ---- settle (commit thread) ------------------------------------------------------------------

void Engine::Impl::settle_limits(
    const std::vector<engine::LimitDelta>& deltas,
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
      if (c.meter == delta.meter && delta.time_us >= c.count_from_us &&
          delta.time_us < c.span.end) {
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
      [[maybe_unused]] const bool was_in_flight = drop_in_flight(it->second, token);
      TALLY_DASSERT(was_in_flight, "a check's consumption is settled once, after it was applied");
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

// ---- alerts ------------------------------------------------------------------------------------

void Engine::Impl::limit_usages(const engine::CustomerState& cs, std::uint32_t meter,
                                core::TimeUs now, std::vector<engine::LimitUsage>* out) {
  std::lock_guard limits_lock(limits_mutex);
  CustomerLimits& cl = limits[cs.num];
  const auto& rules = resolved_rules(*this, cs, cl, meter, engine::plan_of(config, cs.record));
  const core::PeriodContext pc = period_context(cs);
  const engine::WindowContext wc = window_context(cs, pc, catalog->meters[meter].spec.key);
  const core::Aggregation agg = catalog->meters[meter].spec.aggregation;
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
    out->push_back(
        engine::LimitUsage{&resolved, used_value(agg, c->committed) + c->pending, c->span});
  }
}

}  // namespace tally
