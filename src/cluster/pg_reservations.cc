// Open reservations in PostgreSQL (see pg_reservations.h).
#include "cluster/pg_reservations.h"

#include <charconv>

#include "cluster/pg_sql.h"

namespace tally::cluster {
namespace {

constexpr std::string_view kColumns =
    "id, customer_id, meter, amount::text, event_id, properties, " TALLY_US(
        "created_at") ", " TALLY_US("expires_at");

// Properties as one text field: each key and value as "<byte length>:<bytes>", in order.
std::string encode_properties(const std::vector<std::pair<std::string, std::string>>& props) {
  std::string out;
  for (const auto& [k, v] : props) {
    for (const std::string* s : {&k, &v}) {
      out += std::to_string(s->size());
      out += ':';
      out += *s;
    }
  }
  return out;
}

bool decode_properties(std::string_view text,
                       std::vector<std::pair<std::string, std::string>>* props) {
  std::vector<std::string> parts;
  while (!text.empty()) {
    const std::size_t colon = text.find(':');
    std::size_t n = 0;
    if (colon == std::string_view::npos ||
        std::from_chars(text.data(), text.data() + colon, n).ec != std::errc() ||
        n > text.size() - colon - 1) {
      return false;
    }
    parts.emplace_back(text.substr(colon + 1, n));
    text.remove_prefix(colon + 1 + n);
  }
  if (parts.size() % 2 != 0) {
    return false;
  }
  for (std::size_t i = 0; i < parts.size(); i += 2) {
    props->emplace_back(std::move(parts[i]), std::move(parts[i + 1]));
  }
  return true;
}

Result<ReservationRow> row_of(const std::vector<pg::Value>& row) {
  ReservationRow r;
  r.id = row[0].value_or("");
  r.customer = row[1].value_or("");
  r.meter = row[2].value_or("");
  if (!core::try_parse_decimal(row[3].value_or(""), &r.amount)) {
    return Status::corruption("reservation '" + r.id + "': its amount is not a number");
  }
  r.event_id = row[4].value_or("");
  if (!decode_properties(row[5].value_or(""), &r.properties)) {
    return Status::corruption("reservation '" + r.id + "': its properties cannot be read");
  }
  r.created_us = pg::int_or_zero(row[6]);
  r.expires_us = pg::int_or_zero(row[7]);
  return r;
}

Result<std::optional<ReservationRow>> one_row(Result<pg::QueryResult> q) {
  if (!q) {
    return q.error();
  }
  if (q->row_count() == 0) {
    return std::optional<ReservationRow>();
  }
  auto r = row_of(q->rows[0]);
  if (!r) {
    return r.error();
  }
  return std::optional<ReservationRow>(std::move(*r));
}

}  // namespace

Status insert_reservation(pg::Connection& conn, const ReservationRow& r) {
  auto q = conn.exec(
      "INSERT INTO reservations (id, customer_id, meter, amount, event_id, properties, "
      "created_at, expires_at) VALUES ($1, $2, $3, $4::numeric, $5, $6, " TALLY_TS(7) ", " TALLY_TS(
          8) ")",
      {r.id, r.customer, r.meter, r.amount.text(), r.event_id, encode_properties(r.properties),
       std::to_string(r.created_us), std::to_string(r.expires_us)});
  if (!q) {
    if (pg::is_unique_violation(q.error())) {
      return Status::already_exists("reservation '" + r.id + "' exists");
    }
    return q.error();
  }
  return Status();
}

Result<std::optional<ReservationRow>> find_reservation(pg::Connection& conn, std::string_view id,
                                                       std::string_view customer) {
  return one_row(conn.exec("SELECT " + std::string(kColumns) +
                               " FROM reservations WHERE id = $1 AND ($2 = '' OR customer_id = $2)",
                           {std::string(id), std::string(customer)}));
}

Result<std::optional<ReservationRow>> take_reservation(pg::Connection& conn, std::string_view id,
                                                       std::string_view customer) {
  return one_row(
      conn.exec("DELETE FROM reservations WHERE id = $1 AND ($2 = '' OR customer_id = "
                "$2) RETURNING " +
                    std::string(kColumns),
                {std::string(id), std::string(customer)}));
}

Result<std::vector<ReservationRow>> take_expired_reservations(pg::Connection& conn, TimeUs now_us,
                                                              int limit) {
  auto q = conn.exec(
      "DELETE FROM reservations WHERE id IN (SELECT id FROM reservations WHERE "
      "expires_at <= " TALLY_TS(
          1) " ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP "
             "LOCKED) RETURNING " +
          std::string(kColumns),
      {std::to_string(now_us), std::to_string(limit)});
  if (!q) {
    return q.error();
  }
  std::vector<ReservationRow> out;
  for (const auto& row : q->rows) {
    auto r = row_of(row);
    if (!r) {
      return r.error();
    }
    out.push_back(std::move(*r));
  }
  return out;
}

}  // namespace tally::cluster
