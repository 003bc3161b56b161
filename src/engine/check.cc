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
#include "common/crypto.h"
#include "common/json_writer.h"
#include "core/ids.h"
#include "engine/limits_impl.h"

namespace tally {

using engine::CustomerLimits;
using engine::Evaluation;
using engine::InFlight;
using engine::is_gauge;
using engine::kCheckBatchMax;
using engine::kCheckPropertiesMax;
using engine::kCountAmountMax;
using engine::kRecentIdsMax;
using engine::kReservationTtlSecondsMax;
using engine::LimitCounter;
using engine::RateCounter;
using engine::Usage;
using engine::used_value;

namespace engine {

namespace {

// The usage event of a consumption, appended to `job`: one record whatever the amount (a count
// meter's amount is its quantity), so one check stores one event. The texts go straight into
// the job's arena; `scratch` only builds the id.
void add_usage_event(const Engine::Impl& d, engine::IngestJob& job, const Usage& u,
                     std::string& scratch) {
  const engine::MeterDef& ms = *u.ms;
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
  job.hashes.push_back(engine::dedup_hash(*u.customer, b.text(e.id)));
  job.parsed.indexes.push_back(static_cast<std::uint32_t>(b.size()));
  b.events().push_back(e);
  // The event carries its check's token, so the commit settles it as the check's own (already
  // counted in rate buckets), not as fresh usage to add again.
  job.check_tokens.push_back(u.token);
}

}  // namespace

// Hands usage events to the commit thread: written straight into the open check job at the end
// of the queue, or into a new one when there is none or it is full (CommitQueue). `waiter`
// (may be empty) is called when they are durable.
// REQUIRES: no engine lock held.
void enqueue_usage(Engine::Impl& d, const Usage* usage, std::size_t n,
                   std::function<void(Status)> waiter, std::vector<engine::ReservationOp>* ops) {
  if (n == 0 && (ops == nullptr || ops->empty())) {
    if (waiter) {
      waiter(Status());
    }
    return;
  }
  thread_local std::string text;  // builds event ids
  auto make_job = [&d] {
    auto job = std::make_unique<engine::IngestJob>();
    job->start_us = std::chrono::duration_cast<std::chrono::microseconds>(
                        std::chrono::steady_clock::now().time_since_epoch())
                        .count();
    job->done = [raw = job.get(), &d](Result<IngestSummary> r) {
      d.check_events_not_durable.fetch_sub(raw->parsed.batch.size(), std::memory_order_relaxed);
      const Status s = r.status();
      for (auto& w : raw->check_waiters) {
        w(s);
      }
    };
    return job;
  };
  auto fill = [&](engine::IngestJob& job) {
    for (std::size_t i = 0; i < n; ++i) {
      add_usage_event(d, job, usage[i], text);
    }
    d.check_events_not_durable.fetch_add(n, std::memory_order_relaxed);
    if (ops != nullptr) {
      for (auto& op : *ops) {
        job.reservation_ops.push_back(std::move(op));
      }
      ops->clear();
    }
    if (waiter) {
      job.check_waiters.push_back(std::move(waiter));
    }
  };
  d.commit_queue.append_check_usage(d.config.storage.commit_events_max, make_job, fill);
}

// enqueue_usage, then waits until the commit that takes them is durable; its status.
// REQUIRES: no engine lock held.
Status enqueue_and_wait(Engine::Impl& d, const Usage* usage, std::size_t n,
                        std::vector<engine::ReservationOp>* ops) {
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  enqueue_usage(
      d, usage, n, [promise](Status s) { promise->set_value(std::move(s)); }, ops);
  return future.get();
}

// The record of an open reservation, as written by its commit.
engine::ReservationOp open_op(const Engine::Impl& d, const std::string& id,
                              const engine::Reservation& res) {
  engine::ReservationOp op;
  op.open = true;
  op.id = id;
  op.record.customer_num = res.customer_num;
  op.record.meter = d.catalog->meters[res.meter].spec.key;
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

}  // namespace engine

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
  const engine::MeterDef* ms = d.catalog->find(r.meter);
  if (ms == nullptr) {
    return Status::not_found("meter '" + r.meter + "' does not exist");
  }
  p.meter = d.catalog->index_of(ms);
  if (!ms->limitable) {
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
  if (r.reservation_ttl_seconds < 0 || r.reservation_ttl_seconds > kReservationTtlSecondsMax) {
    return Status::invalid_argument("ttl_seconds must be 1.." +
                                    std::to_string(kReservationTtlSecondsMax));
  }
  for (const auto& [k, v] : r.properties) {
    if (k.empty() || k.size() > core::kPropKeyBytesMax || v.size() > core::kPropTextBytesMax) {
      return Status::invalid_argument("property names are 1..256 bytes, values up to 8 KiB");
    }
  }
  if (r.properties.size() > kCheckPropertiesMax) {
    return Status::invalid_argument("at most " + std::to_string(kCheckPropertiesMax) +
                                    " properties");
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
};

Scratch& scratch() {
  thread_local Scratch s;
  return s;
}

}  // namespace

// consumes, appends its usage to `usage` (queued after the locks). Returns the token applied (0
// when nothing was applied). `rates_before` (may be null) receives the rate states before.
static std::uint64_t decide(Engine::Impl& d, const Prepared& p, core::TimeUs now,
                            std::vector<Usage>* usage, Evaluation& ev, CheckResult* out,
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
  const bool replay =
      r.consume == Consume::kYes && !id_key.empty() &&
      (cl.recent_ids.count(id_key) != 0 || d.event_id_stored(*p.cs, r.customer, id_key));
  const std::vector<engine::ResolvedRule>& rules = resolved_rules(d, *p.cs, cl, p.meter, p.plan);
  if (replay) {
    evaluate(d, *p.cs, cl, p.meter, rules, core::Decimal{}, now, &ev);
    out->allowed = true;
    out->replayed = true;
    add_limit_states(ev, out);
    return 0;
  }
  if (p.cs->record.status == CustomerStatus::kSuspended) {
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
    const core::TimeUs anchor = p.cs->record.billing_anchor_us != 0 ? p.cs->record.billing_anchor_us
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
    const core::Aggregation agg = d.catalog->meters[p.meter].spec.aggregation;
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
      u.ms = &d.catalog->meters[p.meter];
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

// The checks of check() and check_batch(): all or nothing when there are several.
static Status run_checks(Engine::Impl& d, core::TimeUs now, const CheckRequest* requests,
                         std::size_t n, CheckResult* results) {
  Scratch& sc = scratch();
  std::vector<Usage>& usage = sc.usage;
  usage.clear();
  // Consuming checks queue usage events: refuse them while the queue is full, before anything
  // is counted, as ingest does.
  if (std::any_of(requests, requests + n,
                  [](const CheckRequest& r) { return r.consume != Consume::kNo; })) {
    // A consumption must reach the disk: refused while the disk reserve refuses writes (a
    // dry run, which consumes nothing, is still answered).
    TALLY_TRY(d.writes_allowed());
    if (d.commit_queue.full()) {
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
  if (requests.empty() || requests.size() > kCheckBatchMax) {
    return Status::invalid_argument("a batch holds 1 to " + std::to_string(kCheckBatchMax) +
                                    " checks");
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

}  // namespace tally
