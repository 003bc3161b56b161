// The scale-out mode's alerts and its shared webhook outbox (see cluster_mode.h and
// cluster/pg_alerts.h).
//
// Detection: an allowed, consuming check queues its customer's meter with the counters' values
// Redis answered after the consumption; an ingest write queues every customer and meter whose
// counters it added to. One thread per node takes the queue (bounded: kAlertQueueMax, more is
// dropped and counted), reads the values an ingest did not carry from Redis (an FCALL that
// consumes nothing, seeding counters from PostgreSQL as a check would), and applies the
// embedded store's rule (alert_rules.h) to each calendar limit at the instant of the change:
// every threshold reached in the window is an alert. They are inserted on shard 0 with their
// deliveries in one transaction, each once across every node (the constraint alerts_once); a
// node also remembers which thresholds it sent, so it asks PostgreSQL once per threshold and
// window. An insert that fails is logged and tried again at the next change.
//
// Bounds: an alert follows its usage change by the queue's delay (milliseconds); one that a
// full queue dropped, or whose insert failed, fires at the next change of the same usage in the
// same window, and not at all if none comes. Low-balance alerts are not evaluated (wallets are
// not built in the mode).
//
// Sending: the webhook sender of every node (src/webhook) calls due_deliveries, which claims
// due deliveries for this node for delivery_lease_us (the longest attempt's timeout plus
// kDeliveryLeaseMarginUs), and record_delivery_attempt, which writes the attempt and releases
// the claim. A node that dies holding a claim leaves it to expire; another node's sender then
// takes it.
#include "engine/alert_rules.h"
#include "engine/cluster_mode_impl.h"

namespace tally::engine {

// ---- the alert thread -------------------------------------------------------------------------

void ClusterMode::Impl::start_alerts() {
  alerts_on = alerts_configured(*config);
  std::int64_t timeout_s = 0;
  for (const auto& w : config->webhooks) {
    timeout_s = std::max(timeout_s, w.timeout_seconds);
  }
  for (const auto& n : config->notifications) {
    timeout_s = std::max(timeout_s, n.timeout_seconds);
  }
  delivery_lease_us = timeout_s * core::kUsPerSecond + kDeliveryLeaseMarginUs;
  if (alerts_on) {
    alert_thread = std::thread([this] { alert_loop(); });
  }
}

void ClusterMode::Impl::stop_alerts() {
  {
    std::lock_guard lock(alert_mutex);
    alert_stopping = true;
  }
  alert_cv.notify_all();
  deliveries_cv.notify_all();
  if (alert_thread.joinable()) {
    alert_thread.join();
  }
}

void ClusterMode::Impl::wait_alerts_idle() {
  std::unique_lock lock(alert_mutex);
  alert_idle_cv.wait(lock, [&] { return (alert_queue.empty() && !alert_busy) || alert_stopping; });
}

void ClusterMode::Impl::queue_alerts(AlertWork work) {
  if (!alerts_on ||
      alert_thresholds_of(*config, plan_of(*config, work.customer)).thresholds->empty()) {
    return;  // nothing can fire for this customer: the queue stays for those who can
  }
  {
    std::lock_guard lock(alert_mutex);
    if (alert_stopping) {
      return;
    }
    if (alert_queue.size() >= kAlertQueueMax) {
      alerts_dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    alert_queue.push_back(std::move(work));
  }
  alert_cv.notify_one();
}

void ClusterMode::Impl::alert_loop() {
  std::unique_lock lock(alert_mutex);
  for (;;) {
    alert_cv.wait(lock, [&] { return !alert_queue.empty() || alert_stopping; });
    if (alert_queue.empty()) {
      return;  // stopping, nothing left
    }
    std::vector<AlertWork> batch(std::make_move_iterator(alert_queue.begin()),
                                 std::make_move_iterator(alert_queue.end()));
    alert_queue.clear();
    alert_busy = true;
    lock.unlock();
    evaluate_alerts(std::move(batch));
    lock.lock();
    alert_busy = false;
    alert_idle_cv.notify_all();
  }
}

// The values of w's counters in Redis (rules: the customer's limits of the meter), read without
// consuming; counters Redis does not hold are seeded from PostgreSQL first, as a check does.
Status ClusterMode::Impl::read_used(AlertWork& w) {
  const MeterDef* meter = catalog->find(w.meter);
  if (meter == nullptr) {
    return Status::not_found("meter '" + w.meter + "' does not exist");
  }
  w.rules = limits_of(*config, w.customer, w.meter);
  const core::PeriodContext pc = period_context_of(w.customer);
  auto slot = lease_redis();
  if (!slot) {
    return slot.error();
  }
  RedisSlot& s = **slot;
  auto read_counters = [&]() -> Result<cluster::RedisCheck> {
    TALLY_TRY(seed_counters(*s.limits, w.customer, w.rules, pc, *meter, w.at_us));
    auto read = s.limits->check(w.customer.id, w.rules, pc, core::Decimal{}, w.at_us, false);
    if (!read && cluster::is_unseeded(read.error())) {
      forget_seeded(w.customer.id, w.rules, pc, w.at_us);
      TALLY_TRY(seed_counters(*s.limits, w.customer, w.rules, pc, *meter, w.at_us));
      read = s.limits->check(w.customer.id, w.rules, pc, core::Decimal{}, w.at_us, false);
    }
    return read;
  };
  auto read = read_counters();
  return_redis(std::move(*slot));
  if (!read) {
    return read.error();
  }
  w.used.clear();
  for (const core::LimitOutcome& o : read->limits) {
    w.used.push_back(o.used);
  }
  return Status();
}

void ClusterMode::Impl::evaluate_alerts(std::vector<AlertWork> batch) {
  std::vector<cluster::NewAlert> fresh;
  std::vector<std::string> keys;
  for (AlertWork& w : batch) {
    const AlertThresholds t = alert_thresholds_of(*config, plan_of(*config, w.customer));
    if (t.thresholds->empty()) {
      continue;
    }
    if (w.used.empty()) {
      Status s = read_used(w);
      if (!s.ok()) {
        spdlog::error("cluster: alerts of customer '{}' not evaluated: {}", w.customer.id,
                      s.to_string());
        continue;
      }
    }
    const core::PeriodContext pc = period_context_of(w.customer);
    for (std::size_t i = 0; i < w.rules.size() && i < w.used.size(); ++i) {
      const core::LimitRule& rule = w.rules[i];
      core::Span span;
      if (rule.unlimited || core::period_is_rate(rule.period) ||
          !core::period_span(rule, w.at_us, pc, &span)) {
        continue;
      }
      for (Alert& a :
           reached_limit_alerts(t, w.customer.id, rule, rule_state(rule).rule(), w.used[i], span)) {
        std::string key =
            a.customer + '\x1f' + a.meter + '\x1f' + std::string(to_string(a.period)) + '\x1f' +
            std::to_string(a.window_start_us) + '\x1f' + std::to_string(a.threshold_percent);
        if (alerts_tried.count(key) != 0 ||
            std::find(keys.begin(), keys.end(), key) != keys.end()) {
          continue;
        }
        keys.push_back(std::move(key));
        auto destinations = alert_destinations(*config, a, w.customer.email);
        fresh.push_back(cluster::NewAlert{std::move(a), std::move(destinations)});
      }
    }
  }
  if (fresh.empty()) {
    return;
  }
  auto lease = home().lease();
  if (!lease) {
    spdlog::error("cluster: {} alerts not stored: {}", fresh.size(), lease.error().to_string());
    return;
  }
  auto inserted = cluster::insert_alerts(**lease, fresh, clock->now_us());
  if (!inserted) {
    spdlog::error("cluster: {} alerts not stored: {}", fresh.size(), inserted.error().to_string());
    return;
  }
  if (alerts_tried.size() + keys.size() > 1'000'000) {
    alerts_tried.clear();  // bounded; a threshold tried again is refused by alerts_once
  }
  alerts_tried.insert(std::make_move_iterator(keys.begin()), std::make_move_iterator(keys.end()));
  std::size_t deliveries = 0;
  for (const Alert& a : *inserted) {
    deliveries += a.deliveries.size();
  }
  if (deliveries != 0) {
    {
      std::lock_guard lock(alert_mutex);
      deliveries_added += deliveries;
    }
    deliveries_cv.notify_all();
  }
}

// ---- reads --------------------------------------------------------------------------------

Result<AlertPage> ClusterMode::alerts(const AlertQuery& q) {
  Impl& d = *impl_;
  std::uint64_t after = 0;
  TALLY_TRY(parse_cursor(q.cursor, &after));
  if (!q.customer.empty()) {
    TALLY_TRY(d.read_customer(q.customer).status());
  }
  const std::uint32_t limit = q.limit == 0 ? 100 : q.limit;
  auto lease = d.home().lease();
  if (!lease) {
    return lease.error();
  }
  cluster::AlertFilter f;
  f.after_row = static_cast<std::int64_t>(after);
  f.rows_max = 500;
  f.customer = q.customer;
  f.level = q.level;
  f.from_us = q.from_us;
  f.to_us = q.to_us;
  AlertPage page;
  std::int64_t last = 0;
  for (;;) {
    auto rows = cluster::list_alerts(**lease, f);
    if (!rows) {
      return rows.error();
    }
    for (auto& [row, a] : *rows) {
      std::vector<const WebhookDelivery*> ds;
      for (const WebhookDelivery& w : a.deliveries) {
        ds.push_back(&w);
      }
      summarise_deliveries(a, ds);
      if (q.status && a.status != *q.status) {
        continue;
      }
      if (page.alerts.size() == limit) {
        page.next_cursor = std::to_string(last);
        return page;
      }
      last = row;
      page.alerts.push_back(std::move(a));
    }
    if (rows->size() < f.rows_max) {
      return page;
    }
    f.after_row = rows->back().first;
  }
}

Result<Alert> ClusterMode::alert(const std::string& id) {
  const std::optional<std::int64_t> row = cluster::alert_row_of(id);
  if (!row) {
    return Status::not_found("alert '" + id + "' does not exist");
  }
  auto lease = impl_->home().lease();
  if (!lease) {
    return lease.error();
  }
  auto found = cluster::find_alert(**lease, *row);
  if (!found) {
    return found.error();
  }
  if (!found->has_value()) {
    return Status::not_found("alert '" + id + "' does not exist");
  }
  Alert a = std::move(**found);
  std::vector<const WebhookDelivery*> ds;
  for (const WebhookDelivery& w : a.deliveries) {
    ds.push_back(&w);
  }
  summarise_deliveries(a, ds);
  return a;
}

// ---- the outbox ---------------------------------------------------------------------------

std::vector<WebhookDelivery> ClusterMode::due_deliveries(TimeUs now, std::size_t max,
                                                         const std::vector<std::string>& skip,
                                                         TimeUs* next_due_us) {
  Impl& d = *impl_;
  *next_due_us = 0;
  auto lease = d.home().lease();
  if (!lease) {
    spdlog::warn("cluster: due deliveries not read: {}", lease.error().to_string());
    return {};
  }
  auto claimed =
      cluster::claim_deliveries(**lease, d.node_prefix, now, d.delivery_lease_us, max, next_due_us);
  if (!claimed) {
    spdlog::warn("cluster: due deliveries not read: {}", claimed.error().to_string());
    return {};
  }
  // Rows being sent by this node hold a live lease, so none is claimed again; `skip` is kept
  // for the contract.
  std::vector<WebhookDelivery> out;
  for (WebhookDelivery& w : *claimed) {
    if (std::find(skip.begin(), skip.end(), w.id) == skip.end()) {
      out.push_back(std::move(w));
    }
  }
  return out;
}

Status ClusterMode::record_delivery_attempt(const DeliveryAttempt& attempt) {
  auto lease = impl_->home().lease();
  if (!lease) {
    return lease.error();
  }
  return cluster::record_attempt(**lease, impl_->node_prefix, attempt);
}

std::uint64_t ClusterMode::wait_for_deliveries(std::uint64_t seen, TimeUs max_wait_us) {
  Impl& d = *impl_;
  std::unique_lock lock(d.alert_mutex);
  d.deliveries_cv.wait_for(lock, std::chrono::microseconds(max_wait_us),
                           [&] { return d.deliveries_added != seen || d.alert_stopping; });
  return d.deliveries_added;
}

}  // namespace tally::engine
