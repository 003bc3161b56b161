// The scale-out mode's checks on `latest` and `max` meters (gauges), and their limits in the
// limits report.
//
// A gauge's calendar limit compares the window's value (its latest, or its max: used_value) plus
// the amount with the limit, as the embedded store does, and a consuming check writes a usage
// event whose value is the gauge's value before it plus the amount. Redis's counters add, and a
// gauge does not: an ingested reading replaces the latest value (or raises the max) rather than
// adding to it. So a gauge is checked in PostgreSQL, on the customer's shard: a consuming check
// takes a session advisory lock of (customer, meter) on its connection, reads every window's
// state from the aggregates (cluster::read_usage, as the embedded counter reads its window),
// decides with the embedded function (core::evaluate_limits), writes its usage event
// (cluster::write_events, priced and burned as any) and only then releases the lock and
// answers. Consuming checks of one gauge therefore run one at a time across every node, each
// reading what the one before wrote: N nodes together never admit past a hard limit. An event
// ingested meanwhile counts from its commit on, as on the embedded store, where it counts from
// its commit too. A dry run reads without the lock.
//
// A check with an event_id is a replay when the customer has an event stored with that id
// (read under the lock): nothing is consumed again.
//
// Not done here (each answers 501, cluster_check.cc): a reservation on a gauge, a batch holding
// a gauge check, a prepaid plan's gauge check. (The configuration refuses rate limits on gauges.)
#include <limits>

#include "engine/cluster_mode_impl.h"

namespace tally::engine {

namespace {

// Holds the session advisory lock of (customer, meter) on a connection, released however the
// check ends (on a lost connection the server released it already).
class GaugeLock {
 public:
  static Result<std::unique_ptr<GaugeLock>> take(pg::Connection& conn, const std::string& customer,
                                                 const std::string& meter) {
    auto locked =
        conn.exec("SELECT pg_advisory_lock(hashtext($1), hashtext($2))", {customer, meter});
    if (!locked) {
      return locked.error();
    }
    return std::unique_ptr<GaugeLock>(new GaugeLock(conn, customer, meter));
  }

  GaugeLock(const GaugeLock&) = delete;
  GaugeLock& operator=(const GaugeLock&) = delete;

  ~GaugeLock() {
    conn_.exec("SELECT pg_advisory_unlock(hashtext($1), hashtext($2))", {customer_, meter_})
        .status()
        .ignore_error();
  }

 private:
  GaugeLock(pg::Connection& conn, std::string customer, std::string meter)
      : conn_(conn), customer_(std::move(customer)), meter_(std::move(meter)) {}

  pg::Connection& conn_;
  std::string customer_;
  std::string meter_;
};

// The inputs of core::evaluate_limits for `rules` (calendar ones, or unlimited rates) of a
// gauge at `now`: each window's value read from the aggregates, as the embedded store's
// calendar_counter and evaluate fill them. `rules` must outlive *in.
Status gauge_inputs(pg::Connection& conn, const Customer& c, const MeterDef& meter,
                    const std::vector<core::LimitRule>& rules, TimeUs now, TimeUs skew_us,
                    std::vector<core::LimitInput>* in) {
  const core::PeriodContext pc = period_context_of(c);
  in->assign(rules.size(), core::LimitInput{});
  for (std::size_t i = 0; i < rules.size(); ++i) {
    const core::LimitRule& rule = rules[i];
    core::LimitInput& x = (*in)[i];
    x.rule = &rule;
    if (core::period_is_rate(rule.period)) {
      continue;  // the configuration refuses a rate limit on a gauge: nothing to count
    }
    core::Span span;
    if (!core::period_span(rule, now, pc, &span)) {
      x.outside = true;
      x.window_start_us = span.start;
      x.reset_us = 0;  // a trial does not come back
      continue;
    }
    cluster::UsageQuery uq;
    uq.customer = c.id;
    uq.from_us = std::max<TimeUs>(span.start, 0);
    // Events may be dated up to the future skew ahead of now; none lie beyond it.
    uq.to_us = std::min(span.end, now + skew_us + core::kUsPerMinute);
    auto stored = cluster::read_usage(conn, meter.spec, uq);
    if (!stored) {
      return stored.error();
    }
    x.used = used_value(meter.spec.aggregation, stored->state);
    x.window_start_us = span.start;
    x.reset_us = span.end == std::numeric_limits<TimeUs>::max() ? 0 : span.end;
  }
  return Status();
}

}  // namespace

Result<CheckResult> ClusterMode::Impl::decide_gauge(const CheckRequest& r, const ClusterPrepared& p,
                                                    TimeUs now, CheckResult out) {
  const bool consume = r.consume == Consume::kYes;  // a reservation is refused before
  auto lease = shard_of(r.customer).lease();
  if (!lease) {
    return lease.error();
  }
  pg::Connection& conn = **lease;
  std::unique_ptr<GaugeLock> lock;
  if (consume) {
    auto taken = GaugeLock::take(conn, r.customer, r.meter);
    if (!taken) {
      return taken.error();
    }
    lock = std::move(*taken);
  }
  bool replay = false;
  if (consume && !r.event_id.empty()) {
    auto stored = conn.exec("SELECT 1 FROM events WHERE customer_id = $1 AND event_id = $2",
                            {r.customer, r.event_id});
    if (!stored) {
      return stored.error();
    }
    replay = stored->row_count() != 0;
  }
  if (!replay && denied_by_status_or_feature(r, p.customer, p.plan, &out)) {
    return out;
  }
  std::vector<core::LimitInput> in;
  TALLY_TRY(gauge_inputs(conn, p.customer, *p.meter, p.rules, now,
                         config->server.future_skew_seconds_max * core::kUsPerSecond, &in));
  cluster::RedisCheck rc;
  rc.limits.resize(in.size());
  rc.verdict = core::evaluate_limits(in.data(), in.size(), replay ? core::Decimal{} : p.amount, now,
                                     rc.limits.data());
  if (replay) {
    answer_check(r, p, rc, &out);
    out.allowed = true;
    out.replayed = true;
    out.reason = Denial::kNone;
    out.message.clear();
    return out;
  }
  if (consume && rc.verdict.allowed) {
    // The gauge's value before: the first window's, as the embedded store takes its first
    // counter's (none: 0).
    core::Decimal before;
    for (const core::LimitInput& x : in) {
      if (!core::period_is_rate(x.rule->period) && !x.outside) {
        before = x.used;
        break;
      }
    }
    std::vector<PendingUsage> pending(1);
    pending[0].customer = r.customer;
    pending[0].event_id = r.event_id;
    pending[0].meter = p.meter;
    pending[0].amount = before + p.amount;  // the value the usage event carries
    pending[0].properties = r.properties;
    pending[0].at_us = now;
    std::uint64_t seq = gauge_seq.fetch_add(1);
    const core::EventBatch b = usage_events(pending, node_prefix + "g", &seq);
    const std::vector<std::uint32_t> write{0};
    const std::map<std::string, Customer> customers{{r.customer, p.customer}};
    WriteCharges charges;
    cluster::EventWriteOptions options;
    TALLY_TRY(prepare_write(b, write, &customers, &charges, &options));
    auto written = cluster::write_events(conn, b, write, meter_specs, now, options);
    if (!written) {
      return written.error();  // nothing consumed
    }
    rc.consumed = true;
    rc.after = rc.limits;
    rc.top_after = core::outcomes_after(in.data(), in.size(), p.amount, now, rc.after.data());
  }
  answer_check(r, p, rc, &out);
  return out;
}

Result<LimitState> ClusterMode::Impl::gauge_report_limit(const Customer& c, const MeterDef& meter,
                                                         const core::LimitRule& rule, TimeUs now) {
  auto lease = shard_of(c.id).lease();
  if (!lease) {
    return lease.error();
  }
  const std::vector<core::LimitRule> one{rule};
  std::vector<core::LimitInput> in;
  TALLY_TRY(gauge_inputs(**lease, c, meter, one, now,
                         config->server.future_skew_seconds_max * core::kUsPerSecond, &in));
  core::LimitOutcome o;
  core::evaluate_limits(in.data(), 1, core::Decimal{}, now, &o);
  return limit_state(rule, o);
}

}  // namespace tally::engine
