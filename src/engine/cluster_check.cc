// The scale-out mode's checks and the writing of their usage (see cluster_mode.h).
#include "engine/cluster_mode_impl.h"

namespace tally::engine {

// ---- checks -------------------------------------------------------------------------------

namespace {

// What the mode does not check yet (kNotImplemented), then the checks of the embedded mode's
// prepare(), with its messages.
Status validate(const CheckRequest& r, const MeterDef& meter, ClusterPrepared* p) {
  TALLY_TRY(check_check_event_id(r.event_id));
  const core::Aggregation agg = meter.spec.aggregation;
  if (!meter.limitable) {
    return Status::invalid_argument("meter '" + r.meter + "' aggregates by " +
                                    std::string(core::aggregation_name(agg)) +
                                    "; checks apply to count, sum, latest and max meters");
  }
  if (is_gauge(agg) && r.consume == Consume::kReserve) {
    return ClusterMode::not_built("a reservation on a latest or max meter");
  }
  if (!core::try_parse_decimal(r.amount, &p->amount) || p->amount.units <= 0) {
    return Status::invalid_argument("amount must be a number greater than 0");
  }
  if (agg == core::Aggregation::kCount && r.consume != Consume::kNo &&
      (p->amount.units % core::Decimal::kScale != 0 ||
       p->amount > core::Decimal::from_int(kCountAmountMax))) {
    return Status::invalid_argument("meter '" + r.meter +
                                    "' counts events: amount must be a whole number up to " +
                                    std::to_string(kCountAmountMax));
  }
  if (r.reservation_ttl_seconds < 0 || r.reservation_ttl_seconds > kReservationTtlSecondsMax) {
    return Status::invalid_argument("ttl_seconds must be 1.." +
                                    std::to_string(kReservationTtlSecondsMax));
  }
  if (r.properties.size() > kCheckPropertiesMax) {
    return Status::invalid_argument("at most " + std::to_string(kCheckPropertiesMax) +
                                    " properties");
  }
  for (const auto& [k, v] : r.properties) {
    if (k.empty() || k.size() > core::kPropKeyBytesMax || v.size() > core::kPropTextBytesMax) {
      return Status::invalid_argument("property names are 1..256 bytes, values up to 8 KiB");
    }
  }
  return Status();
}

// The customer's status or plan features deny the check before any limit; false when neither.
bool denied_before_limits(const CheckRequest& r, const ClusterPrepared& p, CheckResult* out) {
  return denied_by_status_or_feature(r, p.customer, p.plan, out);
}

// Whether an answered check consumed (or, reserving, holds) its amount on the counters (a
// replay consumes nothing again).
bool consumed(const CheckRequest& r, const CheckResult& res) {
  return r.consume != Consume::kNo && res.allowed && !res.replayed;
}

}  // namespace

// Redis's verdict as the answer: every limit's state (after the consumption when it consumed),
// the most restrictive as its rule, and a denial's reason and message, as the embedded mode.
void answer_check(const CheckRequest& r, const ClusterPrepared& p, const cluster::RedisCheck& rc,
                  CheckResult* out) {
  out->allowed = rc.verdict.allowed;
  out->overage = rc.verdict.overage;
  const std::vector<core::LimitOutcome>& states = rc.consumed ? rc.after : rc.limits;
  const int top = rc.consumed ? rc.top_after : rc.verdict.top;
  for (std::size_t i = 0; i < p.rules.size(); ++i) {
    LimitState s = limit_state(p.rules[i], states[i]);
    // A window's bounds are the same before and after; a bucket's reset moves with its fill.
    s.window_start_us = window_start_of(p.customer, p.rules[i], rc.limits[i]);
    s.reset_us =
        core::period_is_rate(p.rules[i].period) ? states[i].reset_us : rc.limits[i].reset_us;
    out->limits.push_back(std::move(s));
  }
  if (top >= 0) {
    out->has_rule = true;
    out->rule = out->limits[static_cast<std::size_t>(top)];
  }
  if (rc.verdict.allowed) {
    return;
  }
  const auto t = static_cast<std::size_t>(rc.verdict.top);
  const core::LimitRule& rule = p.rules[t];
  out->reason = rc.verdict.trial_over ? Denial::kTrialExpired : Denial::kLimitExceeded;
  out->message = rc.verdict.trial_over
                     ? "The trial period of customer '" + r.customer + "' is over."
                     : "Limit of " + core::format_decimal(rule.amount) + " " +
                           rule_state(rule).rule() + " reached: " + rc.limits[t].used.text() +
                           " used, " + p.amount.text() + " requested.";
  out->retry_after_us = rc.verdict.retry_after_us;
}

Status ClusterMode::Impl::prepare_check(const CheckRequest& r, ClusterPrepared* p) {
  const MeterDef* meter = catalog->find(r.meter);
  auto customer = find_check_customer(r.customer);
  if (!customer) {
    return customer.error();
  }
  if (meter == nullptr) {
    return Status::not_found("meter '" + r.meter + "' does not exist");
  }
  p->meter = meter;
  TALLY_TRY(validate(r, *meter, p));
  p->customer = std::move(*customer);
  p->plan = plan_of(*config, p->customer);
  if (!p->customer.plan.empty() && p->plan == nullptr) {
    // Fail closed, as the embedded store refuses to open: unchecked would be unlimited.
    return Status::unprocessable("plan '" + p->customer.plan + "' of customer '" + r.customer +
                                 "' is not in this node's configuration");
  }
  p->rules = limits_of(*config, p->customer, r.meter);
  if (p->plan != nullptr && p->plan->prepaid) {
    if (is_gauge(meter->spec.aggregation)) {
      return not_built("a check of a prepaid plan on a latest or max meter");
    }
    if (r.consume == Consume::kReserve) {
      return not_built("a reservation on a prepaid plan (its credits hold)");
    }
    p->prepaid = true;
    auto credits = check_credits_of(r, p->customer, *meter, p->amount, clock->now_us());
    if (!credits) {
      return credits.error();
    }
    p->credits = *credits;
  }
  return Status();
}

Result<Customer> ClusterMode::Impl::find_check_customer(const std::string& id) {
  const TimeUs now = cluster_steady_us();  // the cache ages in real time, whatever the clock
  {
    std::lock_guard lock(customers_mutex);
    auto it = check_customers.find(id);
    if (it != check_customers.end() && now - it->second.second < kCustomerCacheUs) {
      return it->second.first;
    }
  }
  auto found = read_customer(id);
  if (!found) {
    return found.error();
  }
  std::lock_guard lock(customers_mutex);
  if (check_customers.size() >= kCustomerCacheMax) {
    check_customers.clear();
  }
  check_customers[id] = {*found, now};
  return found;
}

// Queues an allowed consumption's usage event for the usage writer; with check_sync, waits
// until it is written.
Status ClusterMode::Impl::queue_usage(const CheckRequest& r, const ClusterPrepared& p, TimeUs now) {
  PendingUsage u;
  u.customer = r.customer;
  u.event_id = r.event_id;
  u.meter = p.meter;
  u.amount = p.amount;
  u.properties = r.properties;
  u.at_us = now;
  if (p.prepaid) {
    u.credits_in_flight = p.credits;
  }
  return push_usage(std::move(u), config->enforcement.check_sync);
}

Status ClusterMode::Impl::push_usage(PendingUsage u, bool wait) {
  std::future<Status> written;
  if (wait) {
    u.written = std::make_shared<std::promise<Status>>();
    written = u.written->get_future();
  }
  {
    std::lock_guard lock(work_mutex);
    usage.push_back(std::move(u));
  }
  return written.valid() ? written.get() : Status();
}

// Whether a consuming check with an event_id repeats one consumed before (or an event of the
// customer stored with that id): then it consumes nothing again. Otherwise the id is claimed in
// Redis (`SET NX` of a marker in the customer's slot, kept kEventIdMarkerMs), so that the same id
// sent to two nodes at once consumes once; *claimed says so, for a denial to free it.
Result<bool> ClusterMode::Impl::is_replay(redis::ClusterClient& client, const CheckRequest& r,
                                          bool* claimed) {
  *claimed = false;
  {
    auto lease = shard_of(r.customer).lease();
    if (!lease) {
      return lease.error();
    }
    auto stored = (*lease)->exec("SELECT 1 FROM events WHERE customer_id = $1 AND event_id = $2",
                                 {r.customer, r.event_id});
    if (!stored) {
      return stored.error();
    }
    if (stored->row_count() != 0) {
      return true;
    }
  }
  const std::string marker = cluster::customer_key_prefix(r.customer) + ":id:" + r.event_id;
  auto set =
      client.command({"SET", marker, node_prefix, "NX", "PX", std::to_string(kEventIdMarkerMs)});
  if (!set) {
    return set.error();
  }
  if (set->is_error()) {
    return Status::unavailable("cluster.redis: " + set->str);
  }
  *claimed = !set->is_nil();
  return !*claimed;
}

void ClusterMode::Impl::unclaim(redis::ClusterClient& client, const CheckRequest& r) {
  const std::string marker = cluster::customer_key_prefix(r.customer) + ":id:" + r.event_id;
  client.command({"DEL", marker}).status().ignore_error();  // expires anyway
}

Result<std::vector<CheckResult>> ClusterMode::check(const std::vector<CheckRequest>& requests) {
  Impl& d = *impl_;
  const std::size_t n = requests.size();
  // Every check validated first: an invalid one changes nothing.
  std::vector<ClusterPrepared> prepared(n);
  std::vector<CheckResult> results(n);
  bool consumes = false;
  for (std::size_t i = 0; i < n; ++i) {
    TALLY_TRY(d.prepare_check(requests[i], &prepared[i]));
    const ClusterPrepared& p = prepared[i];
    results[i].plan = p.plan != nullptr ? p.plan->key : std::string();
    results[i].meter = requests[i].meter;
    results[i].amount = p.amount;
    consumes = consumes || requests[i].consume != Consume::kNo;
  }
  if (std::any_of(prepared.begin(), prepared.end(),
                  [](const ClusterPrepared& p) { return is_gauge(p.meter->spec.aggregation); })) {
    if (n > 1) {
      return not_built("a batch of checks with a latest or max meter");
    }
    const TimeUs now = d.clock->now_us();
    auto answered = d.decide_gauge(requests[0], prepared[0], now, std::move(results[0]));
    if (!answered) {
      return answered.error();
    }
    results[0] = std::move(*answered);
    if (requests[0].consume == Consume::kYes && consumed(requests[0], results[0])) {
      d.alert_on_check(requests[0], prepared[0], results[0], now);
    }
    return results;
  }
  if (consumes) {
    std::lock_guard lock(d.work_mutex);
    if (d.usage.size() + n > kUsageQueueMax) {
      return Status::unavailable("the usage of answered checks waits to be written; retry");
    }
  }
  if (n == 1 && d.leases_on && d.leasable(requests[0], prepared[0])) {
    // Answered from this node's lease when it holds enough (cluster_leases.h).
    const CheckRequest& r = requests[0];
    const ClusterPrepared& p = prepared[0];
    const TimeUs now = d.clock->now_us();
    CheckResult denial;
    cluster::RedisCheck leased;
    if (!denied_before_limits(r, p, &denial) &&
        d.leases.use(r.customer, r.meter, p.rules, p.amount, now, &leased)) {
      answer_check(r, p, leased, &results[0]);
      TALLY_TRY(d.queue_usage(r, p, now));
      d.alert_on_check(r, p, results[0], now);
      return results;
    }
  }
  auto slot = d.lease_redis();
  if (!slot) {
    return slot.error();
  }
  const TimeUs now = d.clock->now_us();
  Status s = d.decide_all(*(*slot), requests, prepared, now, &results);
  if (s.ok()) {
    s = d.open_reservations(*(*slot), requests, prepared, now, &results);
  }
  if (s.ok()) {
    d.record_denials(*(*slot)->client, requests, results, now);
  }
  d.return_redis(std::move(*slot));
  if (!s.ok()) {
    return s;
  }
  for (std::size_t i = 0; i < n; ++i) {
    if (requests[i].consume == Consume::kYes && consumed(requests[i], results[i])) {
      TALLY_TRY(d.queue_usage(requests[i], prepared[i], now));
      d.alert_on_check(requests[i], prepared[i], results[i], now);
    }
  }
  return results;
}

// The thresholds of a consumption's limits, evaluated by the alert thread from the states after
// it (the answer's): the alert thread reads no more.
void ClusterMode::Impl::alert_on_check(const CheckRequest& r, const ClusterPrepared& p,
                                       const CheckResult& res, TimeUs now) {
  if (!alerts_on) {
    return;
  }
  AlertWork w;
  w.customer = p.customer;
  w.meter = r.meter;
  w.rules = p.rules;
  for (const LimitState& st : res.limits) {
    w.used.push_back(st.used);
  }
  w.at_us = now;
  queue_alerts(std::move(w));
}

// Decides each check in order, consuming when allowed. A batch of several is all or nothing,
// as in the embedded mode: when one is denied, what the allowed ones consumed is taken back
// (RedisLimits::take_back, their event ids freed) and they are answered as not consumed. Between
// the consumption and its taking back (one Redis round trip per check of the batch) another
// check of the same customer may see it and be denied: a batch can under-admit others for that
// instant, never over-admit. When a check fails (Redis did not answer), what the batch consumed
// before it is taken back as well, and the failure answered.
Status ClusterMode::Impl::decide_all(RedisSlot& slot, const std::vector<CheckRequest>& requests,
                                     const std::vector<ClusterPrepared>& prepared, TimeUs now,
                                     std::vector<CheckResult>* results) {
  const std::size_t n = requests.size();
  std::vector<std::size_t> taken;  // the checks that consumed
  bool any_denied = false;
  Status failure;
  for (std::size_t i = 0; i < n; ++i) {
    const CheckRequest& r = requests[i];
    Result<CheckResult> answered =
        decide(slot, r, prepared[i], r.consume != Consume::kNo, now, std::move((*results)[i]));
    if (!answered) {
      failure = answered.error();
      break;
    }
    (*results)[i] = std::move(*answered);
    if (!(*results)[i].allowed) {
      any_denied = true;
    } else if (consumed(r, (*results)[i])) {
      taken.push_back(i);
    }
  }
  if (n == 1 || (failure.ok() && !any_denied)) {
    return failure;
  }
  for (std::size_t i : taken) {
    const CheckRequest& r = requests[i];
    const ClusterPrepared& p = prepared[i];
    auto given =
        slot.limits->take_back(r.customer, p.rules, period_context_of(p.customer), p.amount, now);
    if (!given) {
      spdlog::warn("cluster: a denied batch's consumption for customer '{}' was not taken back: {}",
                   r.customer, given.error().to_string());
    }
    if (!r.event_id.empty()) {
      unclaim(*slot.client, r);
    }
    if (p.prepaid) {
      release_credits(*slot.client, r.customer, p.credits);  // held in flight by decide()
    }
    CheckResult& res = (*results)[i];
    res.allowed = false;
    res.reason = Denial::kBatchDenied;
    res.message = "Not consumed: another check of the batch was denied.";
  }
  return failure;
}

// The check decided in Redis on the customer's counters (seeded first): a replay answered as the
// embedded mode does (allowed, nothing consumed, the limits as they stand), a denial by status
// or feature before any limit, else the limits' verdict, consumed when allowed.
Result<CheckResult> ClusterMode::Impl::decide(RedisSlot& slot, const CheckRequest& r,
                                              const ClusterPrepared& p, bool consume, TimeUs now,
                                              CheckResult out) {
  const core::PeriodContext pc = period_context_of(p.customer);
  TALLY_TRY(seed_counters(*slot.limits, p.customer, p.rules, pc, *p.meter, now));
  bool claimed = false;
  if (consume && !r.event_id.empty()) {
    auto replay = is_replay(*slot.client, r, &claimed);
    if (!replay) {
      return replay.error();
    }
    if (*replay) {
      auto now_states = slot.limits->check(r.customer, p.rules, pc, core::Decimal{}, now, false);
      if (!now_states) {
        return now_states.error();
      }
      answer_check(r, p, *now_states, &out);
      out.allowed = true;
      out.replayed = true;
      out.reason = Denial::kNone;
      out.message.clear();
      return out;
    }
  }
  if (denied_before_limits(r, p, &out)) {
    if (claimed) {
      unclaim(*slot.client, r);
    }
    return out;
  }
  auto limits_check = [&](bool consuming) {
    return ask_counters(slot, p.customer, *p.meter, p.rules, pc, p.amount, now, consuming);
  };
  bool credits_held = false;
  if (p.prepaid) {
    // The limits first, without consuming, so that a limit's denial answers before the credits
    // as in the embedded mode; then the credits (held in flight when consuming).
    auto dry = limits_check(false);
    Result<bool> admitted = false;
    if (dry && dry->verdict.allowed) {
      admitted = admit_credits(*slot.client, r.customer, p.credits, consume, &out);
    }
    if (!dry || !dry->verdict.allowed || !admitted || !*admitted || !consume) {
      if (claimed) {
        unclaim(*slot.client, r);
      }
      if (!dry) {
        return dry.error();
      }
      if (!admitted) {
        return admitted.error();
      }
      answer_check(r, p, *dry, &out);
      if (dry->verdict.allowed && !*admitted) {
        out.allowed = false;
        out.overage = false;
        out.reason = Denial::kInsufficientCredits;
        out.message = "Insufficient credits: " + p.credits.text() + " needed, " +
                      out.credits_available.text() + " available.";
      }
      return out;
    }
    credits_held = true;
  }
  if (consume && leases_on && leasable(r, p) && !leases.cooling(r.customer, r.meter, now)) {
    // No event_id and no credits: nothing claimed or held to free on the way out.
    auto leased = take_lease(slot, r, p, pc, now, &out);
    if (!leased) {
      return leased.error();
    }
    if (*leased) {
      return out;
    }
  }
  auto decided = limits_check(consume);
  if (!decided || !decided->verdict.allowed) {
    if (claimed) {
      unclaim(*slot.client, r);  // a denied (or failed) check consumed nothing: the id is free
    }
    if (credits_held) {
      release_credits(*slot.client, r.customer, p.credits);
    }
  }
  if (!decided) {
    return decided.error();
  }
  answer_check(r, p, *decided, &out);
  return out;
}

bool ClusterMode::Impl::leasable(const CheckRequest& r, const ClusterPrepared& p) const {
  if (r.consume != Consume::kYes || !r.event_id.empty() || p.prepaid || p.rules.empty() ||
      is_gauge(p.meter->spec.aggregation)) {
    return false;
  }
  return std::all_of(p.rules.begin(), p.rules.end(),
                     [](const core::LimitRule& rule) { return rule.hard; });
}

Result<bool> ClusterMode::Impl::take_lease(RedisSlot& slot, const CheckRequest& r,
                                           const ClusterPrepared& p, const core::PeriodContext& pc,
                                           TimeUs now, CheckResult* out) {
  const core::Decimal block = config->cluster->check_lease;
  if (block <= p.amount) {
    return false;  // a lease would hold nothing beyond this check
  }
  const TimeUs life_us = config->cluster->check_lease_ms * 1000;
  auto taken = ask_counters(slot, p.customer, *p.meter, p.rules, pc, block, now, true);
  if (!taken) {
    return taken.error();
  }
  if (!taken->verdict.allowed) {
    leases.cool(r.customer, r.meter, now + life_us);  // near the limit: exact checks for a while
    return false;
  }
  CheckLease lease;
  lease.customer = r.customer;
  lease.rules = p.rules;
  lease.ctx = pc;
  lease.left = block - p.amount;
  lease.taken_us = now;
  lease.until_us = now + life_us;
  for (const core::LimitRule& rule : p.rules) {
    // Units counted in one window are never used in the next.
    core::Span span;
    if (!core::period_is_rate(rule.period) && core::period_span(rule, now, pc, &span)) {
      lease.until_us = std::min(lease.until_us, span.end);
    }
  }
  lease.taken = std::move(*taken);
  answer_check(r, p, leased_answer(lease), out);
  if (auto replaced = leases.put(r.meter, std::move(lease))) {
    give_back(slot, *replaced);
  }
  return true;
}

void ClusterMode::Impl::give_back(RedisSlot& slot, const CheckLease& lease) {
  if (lease.left.units <= 0) {
    return;
  }
  auto given =
      slot.limits->take_back(lease.customer, lease.rules, lease.ctx, lease.left, lease.taken_us);
  if (!given) {
    // Counted as used until its windows end: other nodes may deny that much early, never admit
    // more.
    spdlog::warn("cluster: {} unused of a lease of customer '{}' not given back: {}",
                 lease.left.text(), lease.customer, given.error().to_string());
  }
}

void ClusterMode::Impl::give_back(std::vector<CheckLease> given) {
  if (given.empty()) {
    return;
  }
  auto slot = lease_redis();
  if (!slot) {
    spdlog::warn("cluster: {} leases not given back: {}", given.size(), slot.error().to_string());
    return;
  }
  for (const CheckLease& lease : given) {
    give_back(**slot, lease);
  }
  return_redis(std::move(*slot));
}

// The window counters of `rules` at `now` that this node has not seeded yet: each set in Redis,
// unless it exists there already, to the usage PostgreSQL holds for its window (events ingested
// before any check of the window; the checks' own usage is what the counters count from then
// on, and ingest adds to counters that exist: add_to_counters).
Status ClusterMode::Impl::seed_counters(cluster::RedisLimits& limits, const Customer& c,
                                        const std::vector<core::LimitRule>& rules,
                                        const core::PeriodContext& ctx, const MeterDef& meter,
                                        TimeUs now) {
  std::optional<Customer> stored_resets;  // the customer as stored, read for the first seed
  for (const core::LimitRule& rule : rules) {
    core::Span span;
    if (core::period_is_rate(rule.period) || !core::period_span(rule, now, ctx, &span)) {
      continue;
    }
    std::string key = cluster::window_key(c.id, rule, span.start);
    {
      std::lock_guard lock(seeded_mutex);
      if (seeded.count(key) != 0) {
        continue;
      }
    }
    auto lease = shard_of(c.id).lease();
    if (!lease) {
      return lease.error();
    }
    if (!stored_resets) {
      // A reset another node made may be newer than `c`: the count starts at the stored one.
      auto fresh = cluster::find_customer(**lease, c.id);
      if (!fresh) {
        return fresh.error();
      }
      stored_resets = fresh->value_or(c);
    }
    cluster::UsageQuery uq;
    uq.customer = c.id;
    // From a reset inside the window, the minute that holds it whole (read_usage reads whole
    // minutes): that minute's usage before the reset is counted again, never less than is used.
    uq.from_us = std::max<TimeUs>(counted_from(*stored_resets, rule, span), 0);
    // Events may be dated up to the future skew ahead of now; none lie beyond it.
    const TimeUs horizon =
        now + config->server.future_skew_seconds_max * core::kUsPerSecond + core::kUsPerMinute;
    uq.to_us = std::min(span.end, horizon);
    auto stored = cluster::read_usage(**lease, meter.spec, uq);
    if (!stored) {
      return stored.error();
    }
    auto set = limits.seed(c.id, rule, ctx, used_value(meter.spec.aggregation, stored->state), now);
    if (!set) {
      return set.error();
    }
    std::lock_guard lock(seeded_mutex);
    if (seeded.size() >= 1'000'000) {
      seeded.clear();  // bounded; a counter seeded again is left as it is (SET NX)
    }
    seeded.insert(std::move(key));
  }
  return Status();
}

// The usage events of answered checks, in `batch`'s order: the meter's event type, its filter,
// the check's properties and, for a sum meter, its value property holding the amount; a count
// meter's amount is its quantity. Ids are the check's event_id, or "chk_<node>_<n>", n counting
// this node's checks.
core::EventBatch usage_events(const std::vector<PendingUsage>& batch, const std::string& node,
                              std::uint64_t* seq) {
  core::EventBatch b;
  for (const PendingUsage& u : batch) {
    const core::MeterSpec& spec = u.meter->spec;
    core::Event e;
    if (spec.aggregation == core::Aggregation::kCount) {
      e.quantity = static_cast<std::uint32_t>(core::decimal_floor_int(u.amount));
    }
    e.id =
        b.add_text(u.event_id.empty() ? "chk_" + node + "_" + std::to_string(++*seq) : u.event_id);
    e.customer = b.add_text(u.customer);
    e.type = b.add_text(spec.event_type);
    e.time_us = u.at_us;
    e.prop_begin = static_cast<std::uint32_t>(b.props().size());
    auto add_prop = [&](std::string_view k, std::string_view v, core::PropKind kind) {
      b.props().push_back(core::Prop{b.add_text(k), b.add_text(v), kind});
    };
    for (const auto& [k, v] : spec.filter) {
      add_prop(k, v, core::PropKind::kString);
    }
    for (const auto& prop : u.properties) {
      const bool in_filter = std::any_of(spec.filter.begin(), spec.filter.end(),
                                         [&](const auto& f) { return f.first == prop.first; });
      if (prop.first != spec.value_property && !in_filter) {
        add_prop(prop.first, prop.second, core::PropKind::kString);
      }
    }
    if (!spec.value_property.empty()) {
      add_prop(spec.value_property, u.amount.text(), core::PropKind::kNumber);
    }
    e.prop_count = static_cast<std::uint32_t>(b.props().size()) - e.prop_begin;
    b.events().push_back(e);
  }
  return b;
}

void ClusterMode::Impl::forget_seeded(const std::string& customer,
                                      const std::vector<core::LimitRule>& rules,
                                      const core::PeriodContext& ctx, TimeUs now) {
  std::lock_guard lock(seeded_mutex);
  for (const core::LimitRule& rule : rules) {
    core::Span span;
    if (!core::period_is_rate(rule.period) && core::period_span(rule, now, ctx, &span)) {
      seeded.erase(cluster::window_key(customer, rule, span.start));
    }
  }
}

// Answered checks' usage that adds up, as the embedded store merges it (check.cc): the entries
// of one customer and meter in one minute, without an event_id, properties, credits in flight or
// a caller waiting, of a meter whose checks' usage merges (MeterDef::merges_check_usage: a count
// or sum meter without prices, the only meter of its event type), become one event dated at the
// first, their amounts summed (a count up to core::kEventQuantityMax). The minute is what a
// counter seeded from PostgreSQL reads whole, so every window counts the merged event as it
// would have counted its checks' own.
std::vector<PendingUsage> merged_usage(std::vector<PendingUsage> batch) {
  std::vector<PendingUsage> out;
  out.reserve(batch.size());
  std::unordered_map<std::string, std::size_t> open;  // customer, meter, minute -> entry of out
  std::string key;
  for (PendingUsage& u : batch) {
    if (!u.meter->merges_check_usage || !u.event_id.empty() || !u.properties.empty() ||
        u.credits_in_flight.units != 0 || u.written) {
      out.push_back(std::move(u));
      continue;
    }
    key.assign(u.customer).append(1, '\n').append(u.meter->spec.key).append(1, '\n');
    key.append(std::to_string(core::floor_to(u.at_us, core::kUsPerMinute)));
    auto [it, fresh] = open.try_emplace(key, out.size());
    if (!fresh) {
      PendingUsage& into = out[it->second];
      const core::Decimal sum = into.amount + u.amount;
      if (u.meter->spec.aggregation != core::Aggregation::kCount ||
          core::decimal_floor_int(sum) <= core::kEventQuantityMax) {
        into.amount = sum;
        continue;
      }
      it->second = out.size();  // full: this one opens the next event
    }
    out.push_back(std::move(u));
  }
  return out;
}

// Writes answered checks' usage, one transaction per shard. The consumption is counted in Redis
// already, so a failed write is tried again (every 100 ms, 50 times) before it is given up and
// logged.
void ClusterMode::Impl::write_usage(std::vector<PendingUsage> batch) {
  batch = merged_usage(std::move(batch));
  const core::EventBatch b = usage_events(batch, node_prefix, &usage_seq);
  std::vector<std::vector<std::uint32_t>> by_shard(shards.size());
  for (std::uint32_t i = 0; i < b.size(); ++i) {
    by_shard[cluster::shard_of(batch[i].customer, shards.size())].push_back(i);
  }
  const TimeUs received = clock->now_us();
  for (std::size_t shard = 0; shard < shards.size(); ++shard) {
    if (by_shard[shard].empty()) {
      continue;
    }
    WriteCharges charges;
    cluster::EventWriteOptions options;
    const Status prepared = prepare_write(b, by_shard[shard], nullptr, &charges, &options);
    Status s = prepared;
    for (int attempt = 0; prepared.ok() && attempt < 50; ++attempt) {
      auto lease = shards[shard]->lease();
      if (!lease) {
        s = lease.error();
      } else {
        auto written =
            cluster::write_events(**lease, b, by_shard[shard], meter_specs, received, options);
        s = written.status();
      }
      if (s.ok()) {
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    if (!s.ok()) {
      usage_write_failures.fetch_add(by_shard[shard].size(), std::memory_order_relaxed);
      spdlog::error("cluster: {} checks' usage could not be written to {}: {}",
                    by_shard[shard].size(), shards[shard]->name(), s.to_string());
    }
    for (std::uint32_t i : by_shard[shard]) {
      if (batch[i].written) {
        batch[i].written->set_value(s);
      }
    }
    release_burned(batch, by_shard[shard]);
  }
}

// Prepaid checks' credits held in flight (cluster_credits.cc), released once their usage's
// transaction, which burned them, committed (or was given up: the usage is lost then).
void ClusterMode::Impl::release_burned(const std::vector<PendingUsage>& batch,
                                       const std::vector<std::uint32_t>& written) {
  std::map<std::string, core::Decimal> by_customer;
  for (std::uint32_t i : written) {
    if (batch[i].credits_in_flight.units != 0) {
      by_customer[batch[i].customer] += batch[i].credits_in_flight;
    }
  }
  if (by_customer.empty()) {
    return;
  }
  auto slot = lease_redis();
  if (!slot) {
    spdlog::error("cluster: credits in flight not released (they expire): {}",
                  slot.error().to_string());
    return;
  }
  for (const auto& [customer, credits] : by_customer) {
    release_credits(*(*slot)->client, customer, credits);
  }
  return_redis(std::move(*slot));
}

void ClusterMode::Impl::usage_loop() {
  std::unique_lock lock(work_mutex);
  for (;;) {
    work_cv.wait_for(lock, kUsageFlush, [&] { return stopping; });
    if (!stopping && leases_on && cluster_steady_us() - leases_swept_us >= kLeaseSweepUs) {
      leases_swept_us = cluster_steady_us();
      lock.unlock();
      give_back(leases.take_expired(clock->now_us()));
      lock.lock();
    }
    if (!stopping && cluster_steady_us() - reservations_swept_us >= kReservationSweepUs) {
      reservations_swept_us = cluster_steady_us();
      lock.unlock();
      expire_reservations();
      lock.lock();
    }
    if (usage.empty()) {
      if (stopping) {
        return;
      }
      continue;
    }
    std::vector<PendingUsage> batch = std::move(usage);
    usage.clear();
    usage_writing = batch.size();
    lock.unlock();
    write_usage(std::move(batch));
    lock.lock();
    usage_writing = 0;
    usage_cv.notify_all();
  }
}

Result<cluster::RedisCheck> ClusterMode::Impl::ask_counters(
    RedisSlot& slot, const Customer& c, const MeterDef& meter,
    const std::vector<core::LimitRule>& rules, const core::PeriodContext& pc, core::Decimal amount,
    TimeUs now, bool consume) {
  auto decided = slot.limits->check(c.id, rules, pc, amount, now, consume);
  if (!decided && cluster::is_unseeded(decided.error())) {
    // Redis lost counters this node had seeded: rebuilt from PostgreSQL, then asked again.
    forget_seeded(c.id, rules, pc, now);
    TALLY_TRY(seed_counters(*slot.limits, c, rules, pc, meter, now));
    decided = slot.limits->check(c.id, rules, pc, amount, now, consume);
  }
  return decided;
}

// ---- the limits report ------------------------------------------------------------------------

// As the embedded report (limit_reports.cc): the plan, its features and alert thresholds, and
// each limit in the order limits_of gives them, evaluated alone for an amount of 0, its state read
// from the customer's counters in Redis (seeded from PostgreSQL first, as a check does), whatever
// the customer's status.
Result<LimitsReport> ClusterMode::limits_report(const std::string& customer) {
  Impl& d = *impl_;
  auto c = d.read_customer(customer);
  if (!c) {
    return c.error();
  }
  LimitsReport out;
  out.customer = customer;
  const core::Plan* plan = plan_of(*d.config, *c);
  if (!c->plan.empty() && plan == nullptr) {
    return Status::unprocessable("plan '" + c->plan + "' of customer '" + customer +
                                 "' is not in this node's configuration");
  }
  if (plan != nullptr) {
    out.plan = plan->key;
    out.features = plan->features;
  }
  add_alert_thresholds(*d.config, plan, &out);
  const std::vector<core::LimitRule> rules = limits_of(*d.config, *c, "");
  if (rules.empty()) {
    return out;
  }
  auto slot = d.lease_redis();
  if (!slot) {
    return slot.error();
  }
  const TimeUs now = d.clock->now_us();
  const core::PeriodContext pc = period_context_of(*c);
  Status failure;
  for (const core::LimitRule& rule : rules) {
    const MeterDef* meter = d.catalog->find(rule.meter);
    if (meter == nullptr) {
      continue;
    }
    const std::vector<core::LimitRule> one{rule};
    if (is_gauge(meter->spec.aggregation)) {
      auto state = d.gauge_report_limit(*c, *meter, rule, now);
      if (!state) {
        failure = state.error();
        break;
      }
      add_report_limit(*state, &out);
      continue;
    }
    failure = d.seed_counters(*(*slot)->limits, *c, one, pc, *meter, now);
    if (!failure.ok()) {
      break;
    }
    auto states = d.ask_counters(**slot, *c, *meter, one, pc, core::Decimal{}, now, false);
    if (!states) {
      failure = states.error();
      break;
    }
    LimitState state = limit_state(rule, states->limits[0]);
    state.window_start_us = window_start_of(*c, rule, states->limits[0]);
    add_report_limit(std::move(state), &out);
  }
  d.return_redis(std::move(*slot));
  if (!failure.ok()) {
    return failure;
  }
  return out;
}

}  // namespace tally::engine
