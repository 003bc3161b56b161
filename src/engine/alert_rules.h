// The rules of alerts that both modes share (engine-internal): which thresholds a customer's
// plan sets, which of them one calendar limit's usage reached and the alerts they make, where an
// alert is delivered, and an alert's delivery state from its deliveries. Pure: no store, no
// clock, no locks. The embedded store (alerts.cc) fires each alert once with its in-memory set of
// fired thresholds; the scale-out mode (cluster_alerts.cc) with PostgreSQL's unique constraint.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "config/config.h"
#include "core/limits.h"
#include "core/time.h"
#include "tally/types.h"

namespace tally::engine {

// The event type of alerts' deliveries.
inline constexpr std::string_view kAlertEvent = "alert.triggered";

// The thresholds (ascending percentages) and their levels that apply to a customer of `plan`
// (null: none): the plan's own when it sets any, else [alerts]'s.
struct AlertThresholds {
  const std::vector<std::int64_t>* thresholds = nullptr;
  const std::vector<AlertLevel>* levels = nullptr;
};

AlertThresholds alert_thresholds_of(const config::Config& config, const core::Plan* plan);

// Whether any alert can fire: thresholds or a balance amount, in [alerts] or in a plan.
bool alerts_configured(const config::Config& config);

// The limit alerts of one calendar limit (`rule`, its text "api_calls per day", its window
// `span`) whose usage is `used`: one per threshold reached, lowest first, with every field of
// the alert but its id and creation time. Which of them fired before is the caller's to know.
std::vector<Alert> reached_limit_alerts(const AlertThresholds& t, const std::string& customer,
                                        const core::LimitRule& rule, const std::string& rule_text,
                                        const core::Decimal& used, const core::Span& span);

// Where `alert` (of a customer whose email is `customer_email`) is delivered: (index in
// [[webhooks]], url) for each webhook subscribed to alert.triggered, then (index in
// [[notifications]], "mailto:...") for each email entry that takes it and has a recipient.
std::vector<std::pair<std::uint32_t, std::string>> alert_destinations(
    const config::Config& config, const Alert& alert, const std::string& customer_email);

// The delivery state of `a` (status, sent, delivery_attempts) from its deliveries.
void summarise_deliveries(Alert& a, const std::vector<const WebhookDelivery*>& deliveries);

}  // namespace tally::engine
