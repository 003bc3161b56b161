// Alerts: thresholds of limits and low balances, evaluated as usage changes, stored with their
// webhook deliveries (the outbox).
//
// The commit thread notes which (customer, meter) pairs and wallets each commit changed; after
// the commit is installed it evaluates just those (evaluate_alerts): the usage of each calendar
// limit is the counter a check would use (durable events plus consumption in flight), so a
// check's consumption is seen by the commit that carries its event. Every threshold reached and
// not fired before for that customer, meter, period window and threshold fires, lowest first,
// each its own alert; a write then stores the alerts and one pending delivery per subscribed
// webhook. The fired set is rebuilt from the stored alerts at open, and every customer is
// evaluated once after open, so an alert lost to a crash between a commit and its alert write
// fires after the restart, and none fires twice.
//
// A low-balance alert fires when a wallet is below its amount and has not fired since the
// balance was last at or above it ("balance_low:" keys remember which have).
//
// Sending belongs to the webhook sender (src/webhook), outside the engine: it takes due
// deliveries and reports each attempt, which is stored before the next is made.
#include <algorithm>

#include "common/crypto.h"
#include "core/ids.h"
#include "engine/alert_rules.h"
#include "engine/cluster_mode.h"
#include "engine/engine_impl.h"

namespace tally {

namespace {

constexpr std::string_view kAlertIdPrefix = "alrt_";
using engine::kAlertEvent;

std::string alert_id(std::uint64_t num) {
  return std::string(kAlertIdPrefix) + std::to_string(num);
}

}  // namespace

// ---- the rules both modes share (alert_rules.h) -----------------------------------------------

namespace {

bool webhook_takes(const config::WebhookConfig& w, std::string_view event) {
  return std::any_of(w.events.begin(), w.events.end(),
                     [&](const std::string& e) { return e == "*" || e == event; });
}

template <typename T, typename V>
bool contains(const std::vector<T>& list, const V& value) {
  return std::find(list.begin(), list.end(), value) != list.end();
}

bool notification_takes(const config::NotificationConfig& n, std::string_view event,
                        const Alert& a) {
  return (contains(n.events, "*") || contains(n.events, event)) &&
         (n.levels.empty() || contains(n.levels, a.level)) &&
         (n.kinds.empty() || contains(n.kinds, a.kind));
}

// The recipients of an email delivery, as its url ("mailto:a@x.example,b@y.example"): the fixed
// ones, then the customer's address when the entry asks for it and it is valid (and not one of
// them already); "" when there is nobody to send to.
std::string mailto_url(const config::NotificationConfig& n, const std::string& customer_email) {
  std::vector<std::string> to = n.to;
  if (n.to_customer && core::valid_email_address(customer_email) && !contains(to, customer_email)) {
    to.push_back(customer_email);
  }
  if (to.empty()) {
    return "";
  }
  std::string url = "mailto:";
  for (std::size_t i = 0; i < to.size(); ++i) {
    url += (i == 0 ? "" : ",") + to[i];
  }
  return url;
}

}  // namespace

void engine::summarise_deliveries(Alert& a, const std::vector<const WebhookDelivery*>& deliveries) {
  a.delivery_attempts = 0;
  bool pending = false;
  bool failed = false;
  for (const WebhookDelivery* d : deliveries) {
    a.delivery_attempts += d->attempts;
    pending = pending || d->status == DeliveryStatus::kPending;
    failed = failed || d->status == DeliveryStatus::kFailed;
  }
  a.status = deliveries.empty() ? AlertStatus::kNone
             : pending          ? AlertStatus::kPending
             : failed           ? AlertStatus::kFailed
                                : AlertStatus::kSent;
  a.sent = a.status == AlertStatus::kSent;
}

engine::AlertThresholds engine::alert_thresholds_of(const config::Config& config,
                                                    const core::Plan* plan) {
  const bool own = plan != nullptr && !plan->alert_thresholds.empty();
  return {own ? &plan->alert_thresholds : &config.alerts.thresholds,
          own ? &plan->alert_levels : &config.alerts.levels};
}

bool engine::alerts_configured(const config::Config& config) {
  bool enabled = !config.alerts.thresholds.empty() || config.alerts.has_balance_below;
  for (const auto& p : config.plans) {
    enabled = enabled || !p.alert_thresholds.empty() || p.has_alert_balance_below;
  }
  return enabled;
}

std::vector<Alert> engine::reached_limit_alerts(const AlertThresholds& t,
                                                const std::string& customer,
                                                const core::LimitRule& rule,
                                                const std::string& rule_text,
                                                const core::Decimal& used, const core::Span& span) {
  std::vector<Alert> out;
  const std::vector<std::int64_t>& thresholds = *t.thresholds;
  for (std::size_t i = 0; i < thresholds.size(); ++i) {
    if (!core::threshold_reached(used, rule.amount, thresholds[i])) {
      break;  // ascending: the rest are not reached either
    }
    Alert a;
    a.customer = customer;
    a.kind = AlertKind::kLimit;
    a.level = core::alert_level(thresholds, *t.levels, i);
    a.meter = rule.meter;
    a.period = rule.period;
    a.limit = rule_text;
    a.threshold_percent = thresholds[i];
    a.limit_amount = core::format_decimal(rule.amount);
    a.used = core::format_decimal(used);
    a.percent = core::percent_text(used, rule.amount);
    a.window_start_us = span.start;
    a.window_end_us = span.end == std::numeric_limits<core::TimeUs>::max() ? 0 : span.end;
    out.push_back(std::move(a));
  }
  return out;
}

std::vector<std::pair<std::uint32_t, std::string>> engine::alert_destinations(
    const config::Config& config, const Alert& alert, const std::string& customer_email) {
  std::vector<std::pair<std::uint32_t, std::string>> out;
  for (std::uint32_t w = 0; w < config.webhooks.size(); ++w) {
    if (webhook_takes(config.webhooks[w], kAlertEvent)) {
      out.emplace_back(w, config.webhooks[w].url);
    }
  }
  for (std::uint32_t n = 0; n < config.notifications.size(); ++n) {
    const config::NotificationConfig& nc = config.notifications[n];
    if (!notification_takes(nc, kAlertEvent, alert)) {
      continue;
    }
    std::string url = mailto_url(nc, customer_email);
    if (!url.empty()) {  // empty: only the customer was to get it, and it has no valid address
      out.emplace_back(n, std::move(url));
    }
  }
  return out;
}

// ---- state ----------------------------------------------------------------------------------

namespace {

// Alert id -> number, of the alerts loaded.
using AlertNums = std::unordered_map<std::string, std::uint64_t>;

// The stored alerts ("alert;" keys) into d.alert_records, numbered as stored; next_alert
// follows the last.
Status load_alert_records(Engine::Impl& d, AlertNums* alert_nums) {
  Status bad;
  TALLY_TRY(d.store->scan(store::Space::kMeta, engine::kAlertKeyPrefix, "alert;",
                          [&](std::string_view key, std::string_view value) {
                            engine::AlertEntry e;
                            if (key.size() != engine::kAlertKeyPrefix.size() + 8 ||
                                !engine::decode_alert(value, &e.alert)) {
                              bad = Status::corruption("an alert record cannot be decoded");
                              return false;
                            }
                            e.num = engine::read_be64(key.substr(engine::kAlertKeyPrefix.size()));
                            d.next_alert = std::max(d.next_alert, e.num + 1);
                            alert_nums->emplace(e.alert.id, e.num);
                            d.alert_records.emplace(e.num, std::move(e));
                            return true;
                          }));
  return bad;
}

// A stored delivery numbered `num`: listed under its alert, and counted as pending or failed.
void add_delivery(Engine::Impl& d, const AlertNums& alert_nums, std::uint64_t num,
                  WebhookDelivery delivery) {
  auto a = alert_nums.find(delivery.alert_id);
  if (a != alert_nums.end()) {
    d.alert_records[a->second].deliveries.push_back(num);
  }
  if (delivery.status == DeliveryStatus::kPending) {
    d.pending_deliveries.insert(num);
  } else if (delivery.status == DeliveryStatus::kFailed) {
    ++d.deliveries_failed;
  }
  d.delivery_nums.emplace(delivery.id, num);
  d.delivery_records.emplace(num, std::move(delivery));
}

// The stored webhook deliveries ("delivery;" keys); next_delivery follows the last.
Status load_deliveries(Engine::Impl& d, const AlertNums& alert_nums) {
  Status bad;
  TALLY_TRY(d.store->scan(store::Space::kMeta, engine::kDeliveryKeyPrefix, "delivery;",
                          [&](std::string_view key, std::string_view value) {
                            WebhookDelivery delivery;
                            if (key.size() != engine::kDeliveryKeyPrefix.size() + 8 ||
                                !engine::decode_delivery(value, &delivery)) {
                              bad =
                                  Status::corruption("a webhook delivery record cannot be decoded");
                              return false;
                            }
                            const std::uint64_t num =
                                engine::read_be64(key.substr(engine::kDeliveryKeyPrefix.size()));
                            d.next_delivery = std::max(d.next_delivery, num + 1);
                            add_delivery(d, alert_nums, num, std::move(delivery));
                            return true;
                          }));
  return bad;
}

// The wallets whose low-balance alert has fired ("balance_low;" keys).
Status load_balance_low(Engine::Impl& d) {
  return d.store->scan(
      store::Space::kMeta, engine::kBalanceLowKeyPrefix, "balance_low;",
      [&](std::string_view key, std::string_view) {
        if (key.size() == engine::kBalanceLowKeyPrefix.size() + 4) {
          d.balance_low.insert(engine::read_be32(key.substr(engine::kBalanceLowKeyPrefix.size())));
        }
        return true;
      });
}

// The thresholds that the stored limit alerts mark as fired.
void rebuild_fired(Engine::Impl& d) {
  for (const auto& [num, e] : d.alert_records) {
    if (e.alert.kind != AlertKind::kLimit) {
      continue;
    }
    auto c = d.customer_nums.find(e.alert.customer);
    if (c != d.customer_nums.end()) {
      d.alerts_fired.emplace(c->second, e.alert.meter, e.alert.period, e.alert.window_start_us,
                             e.alert.threshold_percent);
    }
  }
}

}  // namespace

Status Engine::Impl::load_alerts() {
  AlertNums alert_nums;
  TALLY_TRY(load_alert_records(*this, &alert_nums));
  TALLY_TRY(load_deliveries(*this, alert_nums));
  TALLY_TRY(load_balance_low(*this));
  rebuild_fired(*this);
  deliveries_added = delivery_records.size();
  alerts_enabled = engine::alerts_configured(config);
  return Status();
}

void Engine::Impl::touch_all_for_alerts() {
  if (!alerts_enabled || read_only) {
    return;
  }
  for (const auto& [num, cs] : customers) {
    for (std::uint32_t m = 0; m < catalog->meters.size(); ++m) {
      if (catalog->meters[m].limitable) {
        alert_touched_limits.emplace_back(num, m);
      }
    }
  }
  for (const auto& [num, w] : wallets) {
    alert_touched_wallets.push_back(num);
  }
}

// ---- evaluation (commit thread) ----------------------------------------------------------------

namespace {

// What one evaluation found: the alerts that fired (numbered from `first_num`), the customer's
// email of each, the thresholds they mark as fired, and the wallets whose low-balance state
// changed (customer, low now).
struct FreshAlerts {
  std::uint64_t first_num = 0;
  core::TimeUs now = 0;
  std::vector<engine::AlertEntry> alerts;
  std::vector<std::string> emails;
  std::vector<engine::FiredKey> fired;
  std::vector<std::pair<std::uint32_t, bool>> balance_changes;

  void add(Alert a, const std::string& email) {
    emails.push_back(email);
    engine::AlertEntry e;
    e.num = first_num + alerts.size();
    a.id = alert_id(e.num);
    a.created_at_us = now;
    e.alert = std::move(a);
    alerts.push_back(std::move(e));
  }
};

template <typename T>
void sort_unique(std::vector<T>& v) {
  std::sort(v.begin(), v.end());
  v.erase(std::unique(v.begin(), v.end()), v.end());
}

// The thresholds of the touched calendar limits reached for the first time in their window.
// REQUIRES: state_mutex held.
void collect_limit_alerts(Engine::Impl& d, FreshAlerts* fresh) {
  std::vector<engine::LimitUsage> usages;
  for (const auto& [cnum, meter] : d.alert_touched_limits) {
    auto cit = d.customers.find(cnum);
    if (cit == d.customers.end()) {
      continue;
    }
    const engine::CustomerState& cs = cit->second;
    const engine::AlertThresholds t =
        engine::alert_thresholds_of(d.config, engine::plan_of(d.config, cs.record));
    if (t.thresholds->empty()) {
      continue;
    }
    usages.clear();
    d.limit_usages(cs, meter, fresh->now, &usages);
    for (const engine::LimitUsage& u : usages) {
      for (Alert& a : engine::reached_limit_alerts(t, cs.record.id, u.rule->rule, u.rule->rule_text,
                                                   u.used, u.span)) {
        engine::FiredKey key{cnum, a.meter, a.period, u.span.start, a.threshold_percent};
        if (!d.alerts_fired.insert(key).second) {
          continue;
        }
        fresh->fired.push_back(std::move(key));
        fresh->add(std::move(a), cs.record.email);
      }
    }
  }
}

// The touched wallets whose balance crossed their alert amount: an alert when it fell below,
// a re-arm when it came back. REQUIRES: state_mutex held.
void collect_balance_alerts(const Engine::Impl& d, FreshAlerts* fresh) {
  for (std::uint32_t cnum : d.alert_touched_wallets) {
    auto cit = d.customers.find(cnum);
    auto wit = d.wallets.find(cnum);
    if (cit == d.customers.end() || wit == d.wallets.end()) {
      continue;
    }
    const core::Plan* plan = engine::plan_of(d.config, cit->second.record);
    const bool own = plan != nullptr && plan->has_alert_balance_below;
    if (!own && !d.config.alerts.has_balance_below) {
      continue;
    }
    const core::Decimal below = own ? plan->alert_balance_below : d.config.alerts.balance_below;
    const core::Decimal balance = wit->second.balance;
    const bool low = balance < below;
    const bool was_low = d.balance_low.count(cnum) != 0;
    if (low == was_low) {
      continue;
    }
    fresh->balance_changes.emplace_back(cnum, low);
    if (low) {
      Alert a;
      a.customer = cit->second.record.id;
      a.kind = AlertKind::kLowBalance;
      a.level = balance.units <= 0 ? AlertLevel::kExceeded : AlertLevel::kWarning;
      a.threshold_amount = core::format_decimal(below);
      a.balance = core::format_decimal(balance);
      fresh->add(std::move(a), cit->second.record.email);
    }
  }
}

// A new pending delivery of `e`, due now.
WebhookDelivery pending_delivery(const engine::AlertEntry& e, std::uint32_t index, std::string url,
                                 core::TimeUs now) {
  WebhookDelivery d;
  d.id = "dlv_" + common::to_hex(common::random_bytes(12));
  d.alert_id = e.alert.id;
  d.event = std::string(kAlertEvent);
  d.webhook = index;  // in [[webhooks]], or in [[notifications]]: the url's scheme tells them apart
  d.url = std::move(url);
  d.status = DeliveryStatus::kPending;
  d.created_at_us = now;
  d.next_attempt_at_us = now;
  return d;
}

// One pending delivery per fresh alert and subscribed webhook or notification, numbered from
// `first_num`; each alert lists its deliveries' numbers.
std::vector<std::pair<std::uint64_t, WebhookDelivery>> deliveries_of(const config::Config& config,
                                                                     std::uint64_t first_num,
                                                                     FreshAlerts* fresh) {
  std::vector<std::pair<std::uint64_t, WebhookDelivery>> out;
  auto push = [&](engine::AlertEntry& e, WebhookDelivery d) {
    const std::uint64_t num = first_num + out.size();
    e.deliveries.push_back(num);
    out.emplace_back(num, std::move(d));
  };
  for (std::size_t f = 0; f < fresh->alerts.size(); ++f) {
    engine::AlertEntry& e = fresh->alerts[f];
    for (auto& [index, url] : engine::alert_destinations(config, e.alert, fresh->emails[f])) {
      push(e, pending_delivery(e, index, std::move(url), fresh->now));
    }
  }
  return out;
}

// The alerts, their deliveries and the low-balance marks in one write.
store::WriteBatch alert_write(const FreshAlerts& fresh,
                              const std::vector<std::pair<std::uint64_t, WebhookDelivery>>& ds) {
  store::WriteBatch wb;
  for (const auto& e : fresh.alerts) {
    wb.put(store::Space::kMeta, engine::alert_key(e.num), engine::encode_alert(e.alert));
  }
  for (const auto& [num, d] : ds) {
    wb.put(store::Space::kMeta, engine::delivery_key(num), engine::encode_delivery(d));
  }
  for (const auto& [cnum, low] : fresh.balance_changes) {
    if (low) {
      wb.put(store::Space::kMeta, engine::balance_low_key(cnum), "");
    } else {
      wb.del(store::Space::kMeta, engine::balance_low_key(cnum));
    }
  }
  return wb;
}

}  // namespace

void Engine::Impl::evaluate_alerts(core::TimeUs now) {
  if (!alerts_enabled || read_only) {
    alert_touched_limits.clear();
    alert_touched_wallets.clear();
    return;
  }
  if (alert_touched_limits.empty() && alert_touched_wallets.empty()) {
    return;
  }
  sort_unique(alert_touched_limits);
  sort_unique(alert_touched_wallets);
  FreshAlerts fresh;
  fresh.first_num = next_alert;
  fresh.now = now;
  {
    std::shared_lock lock(state_mutex);
    collect_limit_alerts(*this, &fresh);
    collect_balance_alerts(*this, &fresh);
  }
  alert_touched_limits.clear();
  alert_touched_wallets.clear();
  if (fresh.alerts.empty() && fresh.balance_changes.empty()) {
    return;
  }
  auto deliveries = deliveries_of(config, next_delivery, &fresh);
  store::WriteBatch wb = alert_write(fresh, deliveries);
  if (!write_store(wb, config.storage.fsync).ok()) {
    // Nothing was stored: forget what fired, so the next change (or the next open) fires it.
    for (const auto& k : fresh.fired) {
      alerts_fired.erase(k);
    }
    return;
  }
  for (const auto& [cnum, low] : fresh.balance_changes) {
    if (low) {
      balance_low.insert(cnum);
    } else {
      balance_low.erase(cnum);
    }
  }
  next_alert += fresh.alerts.size();
  next_delivery += deliveries.size();
  {
    std::lock_guard lock(alerts_mutex);
    for (auto& e : fresh.alerts) {
      alert_records.emplace(e.num, std::move(e));
    }
    for (auto& [num, d] : deliveries) {
      pending_deliveries.insert(num);
      delivery_nums.emplace(d.id, num);
      delivery_records.emplace(num, std::move(d));
    }
    deliveries_added += deliveries.size();
  }
  if (!deliveries.empty()) {
    deliveries_cv.notify_all();
  }
}

// ---- reads ----------------------------------------------------------------------------------

Result<AlertPage> Engine::alerts(const AlertQuery& q) const {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->alerts(q);
  }
  const Impl& d = *impl_;
  std::uint64_t after = 0;
  TALLY_TRY(engine::parse_cursor(q.cursor, &after));
  if (!q.customer.empty()) {
    std::shared_lock lock(d.state_mutex);
    if (d.find_customer(q.customer) == nullptr) {
      return core::customer_not_found(q.customer);
    }
  }
  const std::uint32_t limit = q.limit == 0 ? 100 : q.limit;
  AlertPage page;
  std::uint64_t last = 0;
  std::lock_guard lock(d.alerts_mutex);
  for (auto it = d.alert_records.upper_bound(after); it != d.alert_records.end(); ++it) {
    const Alert& a = it->second.alert;
    if ((!q.customer.empty() && a.customer != q.customer) || (q.level && a.level != *q.level) ||
        a.created_at_us < q.from_us || (q.to_us != 0 && a.created_at_us >= q.to_us)) {
      continue;
    }
    std::vector<const WebhookDelivery*> ds;
    for (std::uint64_t n : it->second.deliveries) {
      ds.push_back(&d.delivery_records.at(n));
    }
    Alert out = a;
    engine::summarise_deliveries(out, ds);
    if (q.status && out.status != *q.status) {
      continue;
    }
    if (page.alerts.size() == limit) {
      page.next_cursor = std::to_string(last);
      break;
    }
    last = it->first;
    for (const WebhookDelivery* w : ds) {
      out.deliveries.push_back(*w);
    }
    page.alerts.push_back(std::move(out));
  }
  return page;
}

Result<Alert> Engine::alert(const std::string& id) const {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->alert(id);
  }
  const Impl& d = *impl_;
  std::uint64_t num = 0;
  if (id.rfind(kAlertIdPrefix, 0) != 0 ||
      !engine::parse_u64(std::string_view(id).substr(kAlertIdPrefix.size()), &num)) {
    return Status::not_found("alert '" + id + "' does not exist");
  }
  std::lock_guard lock(d.alerts_mutex);
  auto it = d.alert_records.find(num);
  if (it == d.alert_records.end()) {
    return Status::not_found("alert '" + id + "' does not exist");
  }
  Alert out = it->second.alert;
  std::vector<const WebhookDelivery*> ds;
  for (std::uint64_t n : it->second.deliveries) {
    ds.push_back(&d.delivery_records.at(n));
    out.deliveries.push_back(d.delivery_records.at(n));
  }
  engine::summarise_deliveries(out, ds);
  return out;
}

// ---- the outbox -----------------------------------------------------------------------------

std::vector<WebhookDelivery> Engine::due_deliveries(TimeUs now, std::size_t max,
                                                    const std::vector<std::string>& skip,
                                                    TimeUs* next_due_us) const {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->due_deliveries(now, max, skip, next_due_us);
  }
  const Impl& d = *impl_;
  std::vector<WebhookDelivery> out;
  *next_due_us = 0;
  std::lock_guard lock(d.alerts_mutex);
  for (std::uint64_t num : d.pending_deliveries) {
    const WebhookDelivery& w = d.delivery_records.at(num);
    if (std::find(skip.begin(), skip.end(), w.id) != skip.end()) {
      continue;
    }
    if (w.next_attempt_at_us <= now) {
      if (out.size() < max) {
        out.push_back(w);
      }
    } else if (*next_due_us == 0 || w.next_attempt_at_us < *next_due_us) {
      *next_due_us = w.next_attempt_at_us;
    }
  }
  return out;
}

Status Engine::record_delivery_attempt(const DeliveryAttempt& attempt) {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->record_delivery_attempt(attempt);
  }
  Impl& d = *impl_;
  auto updated = std::make_shared<std::pair<std::uint64_t, WebhookDelivery>>();
  return engine::run_admin(
      d,
      [&d, attempt, updated](store::WriteBatch& wb) -> Status {
        std::lock_guard lock(d.alerts_mutex);
        auto n = d.delivery_nums.find(attempt.delivery_id);
        if (n == d.delivery_nums.end()) {
          return Status::not_found("delivery '" + attempt.delivery_id + "' does not exist");
        }
        WebhookDelivery w = d.delivery_records.at(n->second);
        if (w.status != DeliveryStatus::kPending) {
          return Status::already_exists("delivery '" + attempt.delivery_id + "' is already " +
                                        std::string(to_string(w.status)));
        }
        ++w.attempts;
        w.last_attempt_at_us = attempt.at_us;
        w.last_status_code = attempt.status_code;
        w.last_error = attempt.error;
        if (attempt.delivered) {
          w.status = DeliveryStatus::kDelivered;
          w.delivered_at_us = attempt.at_us;
          w.next_attempt_at_us = 0;
        } else if (attempt.next_attempt_at_us == 0) {
          w.status = DeliveryStatus::kFailed;
          w.next_attempt_at_us = 0;
        } else {
          w.next_attempt_at_us = attempt.next_attempt_at_us;
        }
        wb.put(store::Space::kMeta, engine::delivery_key(n->second), engine::encode_delivery(w));
        *updated = {n->second, std::move(w)};
        return Status();
      },
      [&d, updated]() {
        std::lock_guard lock(d.alerts_mutex);
        const auto& [num, w] = *updated;
        if (w.status != DeliveryStatus::kPending) {
          d.pending_deliveries.erase(num);
        }
        if (w.status != DeliveryStatus::kDelivered) {
          ++d.delivery_attempts_failed;
        }
        if (w.status == DeliveryStatus::kFailed) {
          ++d.deliveries_failed;
        }
        d.delivery_records[num] = w;
      });
}

std::uint64_t Engine::wait_for_deliveries(std::uint64_t seen, TimeUs max_wait_us) const {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->wait_for_deliveries(seen, max_wait_us);
  }
  const Impl& d = *impl_;
  std::unique_lock lock(d.alerts_mutex);
  d.deliveries_cv.wait_for(lock, std::chrono::microseconds(max_wait_us),
                           [&] { return d.deliveries_added != seen || d.alerts_closing; });
  return d.deliveries_added;
}

}  // namespace tally
