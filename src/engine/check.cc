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
#include <tuple>

#include "common/assert.h"
#include "common/crypto.h"
#include "common/json_writer.h"
#include "core/ids.h"
#include "engine/cluster_mode.h"
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

// The key of IngestJob::merged_usage: the customer number and the meter.
std::uint64_t merge_key(const Usage& u) {
  return std::uint64_t{u.customer_num} << 32 | u.meter;
}

// Adds a mergeable consumption to the job's open event of its customer and meter when it has
// one of the same settle span with room for it: its quantity (count) or value (sum) grows by the
// amount, and the check's token joins it. False when there is none.
bool merge_usage(engine::IngestJob& job, const Usage& u, std::string& scratch) {
  auto it = job.merged_usage.find(merge_key(u));
  if (it == job.merged_usage.end() || it->second.lo != u.span_lo || it->second.hi != u.span_hi) {
    return false;
  }
  engine::IngestJob::MergedUsage& m = it->second;
  core::EventBatch& b = job.parsed.batch;
  core::Event& e = b.events()[m.event];
  if (u.ms->spec.aggregation == core::Aggregation::kCount) {
    const std::int64_t n = core::decimal_floor_int(u.amount);
    if (e.quantity + n > core::kEventQuantityMax) {
      return false;
    }
    e.quantity += static_cast<std::uint32_t>(n);
  } else {
    scratch.clear();
    core::append_decimal(scratch, m.amount + u.amount);
    b.props()[m.value_prop].text = b.add_text(scratch);
  }
  m.amount += u.amount;
  job.merged_tokens.emplace_back(m.event, u.token);
  return true;
}

// The usage event of a consumption, appended to `job`: one record whatever the amount (a count
// meter's amount is its quantity), or the check's share of the job's open merged event
// (merge_usage). The texts go straight into the job's arena; `scratch` only builds the id.
void add_usage_event(const Engine::Impl& d, engine::IngestJob& job, const Usage& u,
                     std::string& scratch) {
  if (u.merges && merge_usage(job, u, scratch)) {
    return;
  }
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
  if (u.merges) {
    // The customer's open merged event from now on (a full one or another span's is left).
    engine::IngestJob::MergedUsage& m = job.merged_usage[merge_key(u)];
    m.event = static_cast<std::uint32_t>(b.size());
    m.value_prop = static_cast<std::uint32_t>(b.props().size()) - 1;  // a sum meter's value
    m.lo = u.span_lo;
    m.hi = u.span_hi;
    m.amount = u.amount;
  }
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
      d.check_events_not_durable.fetch_sub(raw->checks, std::memory_order_relaxed);
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
    job.checks += n;
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

Status check_check_event_id(const std::string& id) {
  if (id.size() > kCheckEventIdBytesMax) {
    return Status::invalid_argument("event_id is at most " + std::to_string(kCheckEventIdBytesMax) +
                                    " bytes");
  }
  return id.empty() ? Status() : core::check_event_id("event_id", id);
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
    return core::customer_not_found(r.customer);
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
  TALLY_TRY(engine::check_check_event_id(r.event_id));
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

// A consuming check that repeats the event id of an earlier consumed one: the commit drops a
// second event with the same id as a duplicate, so it must not count again. The id names one
// stored event of the customer, whatever its meter; it is remembered in recent_ids until its
// event commits, then in the dedup index, across restarts.
static bool is_replay(const Engine::Impl& d, const Prepared& p, const CustomerLimits& cl) {
  const CheckRequest& r = *p.request;
  return r.consume == Consume::kYes && !r.event_id.empty() &&
         (cl.recent_ids.count(r.event_id) != 0 || d.event_id_stored(*p.cs, r.customer, r.event_id));
}

// The denial of a check by the customer's status or plan features, before any limit; false when
// neither denies it.
static bool denied_before_limits(const Prepared& p, CheckResult* out) {
  return engine::denied_by_status_or_feature(*p.request, p.cs->record, p.plan, out);
}

// The limits' verdict in the answer, with the denying limit's reason and message.
static void answer_verdict(const Prepared& p, const Evaluation& ev, CheckResult* out) {
  const core::Verdict& verdict = ev.verdict;
  out->allowed = verdict.allowed;
  out->overage = verdict.overage;
  if (verdict.allowed) {
    return;
  }
  TALLY_ASSERT(verdict.top >= 0, "a denial names the limit that denied it");
  const auto top = static_cast<std::size_t>(verdict.top);
  const engine::ResolvedRule& rule = *ev.limits[top].resolved;
  out->reason = verdict.trial_over ? Denial::kTrialExpired : Denial::kLimitExceeded;
  out->message = verdict.trial_over
                     ? "The trial period of customer '" + p.request->customer + "' is over."
                     : "Limit of " + rule.limit_text + " " + rule.rule_text +
                           " reached: " + ev.out[top].used.text() + " used, " + p.amount.text() +
                           " requested.";
  out->retry_after_us = verdict.retry_after_us;
}

// A prepaid plan also needs the credits: the wallet's balance, less what checks have counted but
// not yet burned, must cover the request's estimated cost (and not be exhausted). Denies the
// check when it does not; returns the estimated credits.
static core::Decimal check_credits(const Engine::Impl& d, const Prepared& p,
                                   const CustomerLimits& cl, core::TimeUs now, CheckResult* out) {
  const CheckRequest& r = *p.request;
  core::Decimal cost;
  core::Decimal credits;
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
    out->message =
        "Insufficient credits: " + credits.text() + " needed, " + available.text() + " available.";
  }
  return credits;
}

// Counts an allowed check: its amount into every counter of its limits (apply), the states after
// it into the evaluation, and for a consuming (not reserving) check its usage event into
// `usage`, its event id into the customer's recent ids. Returns the check's token.
static std::uint64_t consume(Engine::Impl& d, const Prepared& p, CustomerLimits& cl,
                             core::TimeUs now, const core::Decimal& credits,
                             std::vector<Usage>* usage, Evaluation& ev,
                             std::vector<std::pair<RateCounter*, core::RateState>>* rates_before) {
  const CheckRequest& r = *p.request;
  const std::uint64_t token = d.next_token++;
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
  ev.consumed(p.amount, now);
  if (r.consume != Consume::kYes) {
    return token;  // a reservation: its usage comes with its commit
  }
  Usage& u = usage->emplace_back();
  u.ms = &d.catalog->meters[p.meter];
  u.customer = &r.customer;
  u.event_id = r.event_id.empty() ? nullptr : &r.event_id;
  u.properties = &r.properties;
  u.amount = p.amount;
  u.gauge_value = gauge_before + p.amount;
  u.now = now;
  u.token = token;
  u.merges = u.ms->merges_check_usage && r.event_id.empty() && r.properties.empty();
  if (u.merges) {
    u.customer_num = p.cs->num;
    u.meter = p.meter;
    std::tie(u.span_lo, u.span_hi) = engine::settle_span(cl, p.meter, now);
  }
  if (!r.event_id.empty()) {
    cl.recent_ids.emplace(r.event_id, token);
    cl.recent_order.push_back(r.event_id);
    if (cl.recent_order.size() > kRecentIdsMax) {
      cl.recent_ids.erase(cl.recent_order.front());
      cl.recent_order.pop_front();
    }
  }
  return token;
}

// Decides one check into *out and, when it is allowed and consumes, counts it (consume). Returns
// the token applied (0 when nothing was applied). `rates_before` (may be null) receives the rate
// states before. REQUIRES: state_mutex held shared, limits_mutex held.
static std::uint64_t decide(Engine::Impl& d, const Prepared& p, core::TimeUs now,
                            std::vector<Usage>* usage, Evaluation& ev, CheckResult* out,
                            std::vector<std::pair<RateCounter*, core::RateState>>* rates_before) {
  base_result(p, out);
  CustomerLimits& cl = d.limits[p.cs->num];
  const std::vector<engine::ResolvedRule>& rules = resolved_rules(d, *p.cs, cl, p.meter, p.plan);
  if (is_replay(d, p, cl)) {
    // The original decision (only consumed checks record their id), whatever the usage, plan
    // or status is now.
    evaluate(d, *p.cs, cl, p.meter, rules, core::Decimal{}, now, &ev);
    out->allowed = true;
    out->replayed = true;
    add_limit_states(ev, out);
    return 0;
  }
  if (denied_before_limits(p, out)) {
    return 0;
  }
  evaluate(d, *p.cs, cl, p.meter, rules, p.amount, now, &ev);
  answer_verdict(p, ev, out);
  core::Decimal credits;
  if (out->allowed && p.plan != nullptr && p.plan->prepaid) {
    credits = check_credits(d, p, cl, now, out);
  }
  std::uint64_t token = 0;
  if (out->allowed && p.request->consume != Consume::kNo) {
    token = consume(d, p, cl, now, credits, usage, ev, rates_before);
  }
  add_limit_states(ev, out);
  return token;
}

namespace {

// What an allowed check of a batch applied, to take back if another check of it is denied.
struct Undo {
  std::uint32_t cnum;
  std::uint32_t meter;
  core::Decimal amount;
  std::uint64_t token;
  std::vector<std::pair<RateCounter*, core::RateState>> rates;
};

// Consuming checks queue usage events: refused while the disk reserve refuses writes or the
// queue is full, before anything is counted, as ingest is (a dry run, which consumes nothing,
// is still answered).
Status admit_consumption(const Engine::Impl& d, const CheckRequest* requests, std::size_t n) {
  if (std::none_of(requests, requests + n,
                   [](const CheckRequest& r) { return r.consume != Consume::kNo; })) {
    return Status();
  }
  TALLY_TRY(d.writes_allowed());
  if (d.commit_queue.full()) {
    return Status::unavailable("the usage queue is full; retry shortly");
  }
  return Status();
}

// Opens the reservation of an allowed reserving check (its hold is what consume applied).
// REQUIRES: state_mutex held shared, limits_mutex held.
void open_reservation(Engine::Impl& d, const CheckRequest& r, const Prepared& p,
                      std::uint64_t token, core::TimeUs now, CheckResult* result) {
  engine::Reservation res;
  res.customer_num = p.cs->num;
  res.customer = r.customer;
  res.meter = p.meter;
  res.amount = p.amount;
  const std::int64_t ttl = r.reservation_ttl_seconds > 0
                               ? r.reservation_ttl_seconds
                               : d.config.enforcement.reservation_ttl_seconds;
  res.expires_us = now + ttl * core::kUsPerSecond;
  res.token = token;
  res.properties = r.properties;
  res.event_id = r.event_id;
  res.created_us = now;
  if (const InFlight* f = d.limits[res.customer_num].in_flight.find(token)) {
    res.credits = f->credits;
  }
  // The id is the only credential for commit and release (any key with the check scope may call
  // them), so it carries 64 random bits: another customer cannot guess it from its own ids.
  result->reservation_id = "res_" + d.token_prefix + "_" + std::to_string(token) + "_" +
                           common::to_hex(common::random_bytes(8));
  result->reservation_expires_us = res.expires_us;
  d.reservations.emplace(result->reservation_id, std::move(res));
}

// All or nothing: a batch with a denied check takes back what its allowed ones applied, and
// answers them as not consumed. REQUIRES: state_mutex held shared, limits_mutex held.
void take_back(Engine::Impl& d, const std::vector<Undo>& undo, CheckResult* results, std::size_t n,
               std::vector<Usage>& usage) {
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

// Decides every check under the engine's locks: prepared (validated) first, so an invalid one
// changes nothing; then each decided, reservations opened, and a batch with a denial taken back.
Status decide_all(Engine::Impl& d, core::TimeUs now, const CheckRequest* requests, std::size_t n,
                  CheckResult* results, Scratch& sc) {
  std::shared_lock state_lock(d.state_mutex);
  std::vector<Prepared>& prepared = sc.prepared;
  prepared.resize(n);
  for (std::size_t i = 0; i < n; ++i) {
    TALLY_TRY(prepare(d, requests[i], &prepared[i]));
  }
  std::lock_guard limits_lock(d.limits_mutex);
  if (!d.reservations.empty()) {
    d.expire_reservations(now);
  }
  std::vector<Undo> undo;
  bool any_denied = false;
  for (std::size_t i = 0; i < n; ++i) {
    Undo u;
    const std::uint64_t token = decide(d, prepared[i], now, &sc.usage, sc.evaluation, &results[i],
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
      open_reservation(d, requests[i], prepared[i], token, now, &results[i]);
    }
  }
  if (any_denied && n > 1) {
    take_back(d, undo, results, n, sc.usage);
  }
  return Status();
}

// Hands the checks' usage (and opened reservations) to the commit thread. A reservation is
// answered once its record (and hold) is durable, whatever check_sync; a consumption waits for
// its commit only with check_sync.
Status hand_off(Engine::Impl& d, core::TimeUs now, const CheckResult* results, std::size_t n,
                Scratch& sc) {
  std::vector<Usage>& usage = sc.usage;
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
  if (opens.empty()) {
    const bool wait = d.config.enforcement.check_sync && !usage.empty();
    Status s = wait ? enqueue_and_wait(d, usage.data(), usage.size(), nullptr) : Status();
    if (!wait) {
      enqueue_usage(d, usage.data(), usage.size(), nullptr);
    }
    usage.clear();
    return s;
  }
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
  }
  return s;
}

}  // namespace

// The checks of check() and check_batch(): all or nothing when there are several.
static Status run_checks(Engine::Impl& d, core::TimeUs now, const CheckRequest* requests,
                         std::size_t n, CheckResult* results) {
  Scratch& sc = scratch();
  sc.usage.clear();
  TALLY_TRY(admit_consumption(d, requests, n));
  TALLY_TRY(decide_all(d, now, requests, n, results, sc));
  return hand_off(d, now, results, n, sc);
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
  if (d.cluster != nullptr) {
    return d.cluster->check(requests);
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
  if (d.cluster != nullptr) {
    auto one = d.cluster->check({request});
    if (!one) {
      return one.error();
    }
    return std::move(one->front());
  }
  CheckResult result;
  Status s = run_checks(d, clock().now_us(), &request, 1, &result);
  if (!s.ok()) {
    return s;
  }
  return result;
}

}  // namespace tally
