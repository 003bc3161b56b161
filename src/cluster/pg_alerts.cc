// Alerts and the shared webhook outbox in PostgreSQL (see pg_alerts.h).
#include "cluster/pg_alerts.h"

#include <algorithm>
#include <charconv>
#include <map>

#include "cluster/pg_sql.h"
#include "common/crypto.h"
#include "core/decimal.h"

namespace tally::cluster {
namespace {

constexpr std::string_view kAlertIdPrefix = "alrt_";

std::string text(const pg::Value& v) {
  return v.value_or(std::string());
}

// A numeric column's text as the engine formats a decimal ("12.5", not "12.500000000").
std::string decimal_text(const pg::Value& v) {
  core::Decimal d;
  if (!v || !core::try_parse_decimal(*v, &d)) {
    return text(v);
  }
  return core::format_decimal(d);
}

constexpr std::string_view kAlertColumns =
    "id, customer_id, kind, level, meter, period, " TALLY_US(
        "window_start") ", threshold, usage::text, limit_amount::text, " TALLY_US("created_at") ", "
                        "limit_text, percent, " TALLY_US("window_end");

std::pair<std::int64_t, Alert> alert_of(const std::vector<pg::Value>& row) {
  Alert a;
  const std::int64_t id = pg::int_or_zero(row[0]);
  a.id = alert_id_of(id);
  a.customer = text(row[1]);
  a.kind = parse_alert_kind(text(row[2])).value_or(AlertKind::kLimit);
  a.level = parse_alert_level(text(row[3])).value_or(AlertLevel::kWarning);
  a.meter = text(row[4]);
  a.period = parse_limit_period(text(row[5])).value_or(LimitPeriod::kMonth);
  a.window_start_us = pg::int_or_zero(row[6]);
  a.threshold_percent = pg::int_or_zero(row[7]);
  a.used = decimal_text(row[8]);
  a.limit_amount = decimal_text(row[9]);
  a.created_at_us = pg::int_or_zero(row[10]);
  a.limit = text(row[11]);
  a.percent = text(row[12]);
  a.window_end_us = pg::int_or_zero(row[13]);
  return {id, std::move(a)};
}

constexpr std::string_view kDeliveryColumns =
    "delivery_id, alert_id, event, destination, url, status, attempts, " TALLY_US(
        "created_at") ", " TALLY_US("next_attempt_at") ", " TALLY_US("last_attempt_at") ", " TALLY_US("delivered_at") ", last_status_code, last_error";

WebhookDelivery delivery_of(const std::vector<pg::Value>& row) {
  WebhookDelivery d;
  d.id = text(row[0]);
  d.alert_id = alert_id_of(pg::int_or_zero(row[1]));
  d.event = text(row[2]);
  d.webhook = static_cast<std::uint32_t>(pg::int_or_zero(row[3]));
  d.url = text(row[4]);
  d.status = parse_delivery_status(text(row[5])).value_or(DeliveryStatus::kPending);
  d.attempts = static_cast<std::uint32_t>(pg::int_or_zero(row[6]));
  d.created_at_us = pg::int_or_zero(row[7]);
  d.next_attempt_at_us = d.status == DeliveryStatus::kPending ? pg::int_or_zero(row[8]) : 0;
  d.last_attempt_at_us = pg::int_or_zero(row[9]);
  d.delivered_at_us = pg::int_or_zero(row[10]);
  d.last_status_code = static_cast<int>(pg::int_or_zero(row[11]));
  d.last_error = text(row[12]);
  return d;
}

// The deliveries of the alerts of `rows`, by alert row, each oldest first.
Result<std::map<std::int64_t, std::vector<WebhookDelivery>>> deliveries_of(
    pg::Connection& conn, const std::vector<std::int64_t>& rows) {
  std::map<std::int64_t, std::vector<WebhookDelivery>> out;
  if (rows.empty()) {
    return out;
  }
  std::string array = "{";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    array += (i == 0 ? "" : ",") + std::to_string(rows[i]);
  }
  array += "}";
  auto r = conn.exec("SELECT " + std::string(kDeliveryColumns) +
                         " FROM webhook_outbox WHERE alert_id = ANY($1::bigint[]) ORDER BY id",
                     {array});
  if (!r) {
    return r.error();
  }
  for (const auto& row : r->rows) {
    out[pg::int_or_zero(row[1])].push_back(delivery_of(row));
  }
  return out;
}

}  // namespace

std::string alert_id_of(std::int64_t row) {
  return std::string(kAlertIdPrefix) + std::to_string(row);
}

std::optional<std::int64_t> alert_row_of(std::string_view id) {
  if (id.substr(0, kAlertIdPrefix.size()) != kAlertIdPrefix) {
    return std::nullopt;
  }
  id.remove_prefix(kAlertIdPrefix.size());
  std::int64_t row = 0;
  auto [end, ec] = std::from_chars(id.data(), id.data() + id.size(), row);
  if (id.empty() || ec != std::errc() || end != id.data() + id.size() || row <= 0) {
    return std::nullopt;
  }
  return row;
}

Result<std::vector<Alert>> insert_alerts(pg::Connection& conn, const std::vector<NewAlert>& alerts,
                                         TimeUs now_us) {
  std::vector<Alert> out;
  if (alerts.empty()) {
    return out;
  }
  auto tx = pg::Transaction::begin(conn);
  if (!tx) {
    return tx.error();
  }
  for (const NewAlert& n : alerts) {
    const Alert& a = n.alert;
    auto inserted = conn.exec(
        "INSERT INTO alerts (customer_id, kind, level, meter, limit_key, period, window_start, "
        "threshold, usage, limit_amount, created_at, limit_text, percent, window_end) "
        "VALUES ($1, $2, $3, $4, $4, $5, " TALLY_TS(6) ", $7, $8, $9, " TALLY_TS(
            10) ", $11, $12, " TALLY_TS(13) ") "
                    "ON CONFLICT ON CONSTRAINT alerts_once DO NOTHING RETURNING id",
        {a.customer, std::string(to_string(a.kind)), std::string(to_string(a.level)), a.meter,
         std::string(to_string(a.period)), micros(a.window_start_us),
         std::to_string(a.threshold_percent), a.used,
         a.limit_amount.empty() ? pg::Value() : pg::Value(a.limit_amount), micros(now_us), a.limit,
         a.percent, micros_or_null(a.window_end_us)});
    if (!inserted) {
      return inserted.error();
    }
    if (inserted->row_count() == 0) {
      continue;  // fired before, on this node or another
    }
    const std::int64_t row = pg::int_or_zero(inserted->at(0, 0));
    Alert stored = a;
    stored.id = alert_id_of(row);
    stored.created_at_us = now_us;
    stored.deliveries.clear();
    for (const auto& [index, url] : n.destinations) {
      WebhookDelivery d;
      d.id = "dlv_" + common::to_hex(common::random_bytes(12));
      d.alert_id = stored.id;
      d.event = "alert.triggered";
      d.webhook = index;
      d.url = url;
      d.status = DeliveryStatus::kPending;
      d.created_at_us = now_us;
      d.next_attempt_at_us = now_us;
      auto q = conn.exec(
          "INSERT INTO webhook_outbox (delivery_id, alert_id, event, destination, url, "
          "next_attempt_at, created_at) VALUES ($1, $2, $3, $4, $5, " TALLY_TS(6) ", " TALLY_TS(
              6) ")",
          {d.id, std::to_string(row), d.event, std::to_string(index), d.url, micros(now_us)});
      if (!q) {
        return q.error();
      }
      stored.deliveries.push_back(std::move(d));
    }
    out.push_back(std::move(stored));
  }
  TALLY_TRY(tx->commit());
  return out;
}

Result<std::vector<std::pair<std::int64_t, Alert>>> list_alerts(pg::Connection& conn,
                                                                const AlertFilter& filter) {
  auto r = conn.exec(
      "SELECT " + std::string(kAlertColumns) +
          " FROM alerts WHERE id > $1 AND ($2 = '' OR customer_id = $2) AND ($3 = '' OR level = "
          "$3) AND created_at >= " TALLY_TS(4) " AND ($5::bigint = 0 OR created_at < " TALLY_TS(
              5) ") ORDER BY id LIMIT $6",
      {std::to_string(filter.after_row), filter.customer,
       filter.level ? std::string(to_string(*filter.level)) : std::string(), micros(filter.from_us),
       micros(filter.to_us), std::to_string(filter.rows_max)});
  if (!r) {
    return r.error();
  }
  std::vector<std::pair<std::int64_t, Alert>> out;
  std::vector<std::int64_t> rows;
  for (const auto& row : r->rows) {
    out.push_back(alert_of(row));
    rows.push_back(out.back().first);
  }
  auto ds = deliveries_of(conn, rows);
  if (!ds) {
    return ds.error();
  }
  for (auto& [row, a] : out) {
    auto it = ds->find(row);
    if (it != ds->end()) {
      a.deliveries = std::move(it->second);
    }
  }
  return out;
}

Result<std::optional<Alert>> find_alert(pg::Connection& conn, std::int64_t row) {
  auto r = conn.exec("SELECT " + std::string(kAlertColumns) + " FROM alerts WHERE id = $1",
                     {std::to_string(row)});
  if (!r) {
    return r.error();
  }
  if (r->row_count() == 0) {
    return std::optional<Alert>();
  }
  Alert a = alert_of(r->rows[0]).second;
  auto ds = deliveries_of(conn, {row});
  if (!ds) {
    return ds.error();
  }
  if (auto it = ds->find(row); it != ds->end()) {
    a.deliveries = std::move(it->second);
  }
  return std::optional<Alert>(std::move(a));
}

Result<std::vector<WebhookDelivery>> claim_deliveries(pg::Connection& conn, const std::string& node,
                                                      TimeUs now_us, TimeUs lease_us,
                                                      std::size_t max, TimeUs* next_due_us) {
  *next_due_us = 0;
  std::vector<WebhookDelivery> out;
  auto r = conn.exec(
      "UPDATE webhook_outbox SET claimed_by = $1, claimed_until = " TALLY_TS(
          2) " WHERE id IN (SELECT id FROM webhook_outbox WHERE status = 'pending' AND "
             "next_attempt_at <= " TALLY_TS(3) " AND (claimed_until IS NULL OR claimed_until <= " TALLY_TS(
                 3) ") ORDER BY id LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING id, " +
          std::string(kDeliveryColumns),
      {node, micros(now_us + lease_us), micros(now_us), std::to_string(max)});
  if (!r) {
    return r.error();
  }
  std::vector<std::pair<std::int64_t, WebhookDelivery>> claimed;
  for (const auto& row : r->rows) {
    std::vector<pg::Value> rest(row.begin() + 1, row.end());
    claimed.emplace_back(pg::int_or_zero(row[0]), delivery_of(rest));
  }
  std::sort(claimed.begin(), claimed.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [id, d] : claimed) {
    out.push_back(std::move(d));
  }
  if (!out.empty()) {
    return out;
  }
  auto next = conn.exec("SELECT " TALLY_US(
                            "min(next_attempt_at)") " FROM webhook_outbox WHERE status = 'pending' "
                                                    "AND (claimed_until IS NULL OR claimed_until "
                                                    "<= " TALLY_TS(1) ")",
                        {micros(now_us)});
  if (!next) {
    return next.error();
  }
  *next_due_us = next->row_count() == 0 ? 0 : pg::int_or_zero(next->at(0, 0));
  return out;
}

Status record_attempt(pg::Connection& conn, const std::string& node,
                      const DeliveryAttempt& attempt) {
  const std::string status = attempt.delivered                 ? "delivered"
                             : attempt.next_attempt_at_us == 0 ? "failed"
                                                               : "pending";
  auto r = conn.exec(
      "UPDATE webhook_outbox SET attempts = attempts + 1, last_attempt_at = " TALLY_TS(
          3) ", last_status_code = $4, last_error = $5, status = $6::text, delivered_at = CASE "
             "WHEN $6::text = 'delivered' THEN " TALLY_TS(3) " END, next_attempt_at = CASE WHEN "
             "$6::text = 'pending' THEN " TALLY_TS(7) " ELSE next_attempt_at END, claimed_by = "
             "NULL, claimed_until = NULL WHERE delivery_id = $1 AND status = 'pending' AND "
             "claimed_by = $2",
      {attempt.delivery_id, node, micros(attempt.at_us), std::to_string(attempt.status_code),
       attempt.error, status, micros(attempt.next_attempt_at_us)});
  if (!r) {
    return r.error();
  }
  if (r->affected_rows == 1) {
    return Status();
  }
  auto found = conn.exec("SELECT status, claimed_by FROM webhook_outbox WHERE delivery_id = $1",
                         {attempt.delivery_id});
  if (!found) {
    return found.error();
  }
  if (found->row_count() == 0) {
    return Status::not_found("delivery '" + attempt.delivery_id + "' does not exist");
  }
  if (text(found->at(0, 0)) != "pending") {
    return Status::already_exists("delivery '" + attempt.delivery_id + "' is already " +
                                  text(found->at(0, 0)));
  }
  return Status::already_exists("delivery '" + attempt.delivery_id +
                                "' is claimed by another node");
}

}  // namespace tally::cluster
