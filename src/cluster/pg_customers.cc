// Customers and API keys in PostgreSQL (see pg_customers.h).
#include "cluster/pg_customers.h"

#include <utility>

#include "cluster/pg_sql.h"
#include "common/crypto.h"
#include "common/json_writer.h"
#include "core/ids.h"

namespace tally::cluster {
namespace {

std::string text(const pg::Value& v) {
  return v.value_or(std::string());
}

// The overrides come as one line per override, its fields separated by tabs (meter keys,
// period names, numbers and booleans hold neither); the resets likewise, a meter and an instant
// (microseconds) per line.
constexpr std::string_view kCustomerColumns =
    "id, name, email, plan, status, time_zone, " TALLY_US("billing_anchor") ", "
    "coalesce(parent_id, ''), metadata::text, " TALLY_US("created_at") ", " TALLY_US(
        "updated_at") ", " TALLY_US("trial_started_at") ", "
    "(SELECT coalesce(string_agg(concat_ws(E'\\t', o->>'meter', o->>'period', o->>'days', "
    "o->>'amount', o->>'hard'), E'\\n' ORDER BY n), '') "
    "FROM jsonb_array_elements(limit_overrides) WITH ORDINALITY AS t(o, n)), "
    "(SELECT coalesce(string_agg(concat_ws(E'\\t', r->>'meter', r->>'at'), E'\\n' ORDER BY n), "
    "'') FROM jsonb_array_elements(period_resets) WITH ORDINALITY AS t(r, n))";

// The fields of `text` separated by `sep`.
std::vector<std::string_view> split(std::string_view text, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= text.size(); ++i) {
    if (i == text.size() || text[i] == sep) {
      out.push_back(text.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

// The overrides of kCustomerColumns' last column. A line Tally did not write is skipped.
std::vector<LimitOverride> overrides_of(std::string_view lines) {
  std::vector<LimitOverride> out;
  if (lines.empty()) {
    return out;
  }
  for (std::string_view line : split(lines, '\n')) {
    const std::vector<std::string_view> f = split(line, '\t');
    std::optional<LimitPeriod> period = f.size() == 5 ? parse_limit_period(f[1]) : std::nullopt;
    if (!period) {
      continue;
    }
    LimitOverride o;
    o.meter = std::string(f[0]);
    o.period = *period;
    o.days = pg::int_or_zero(std::string(f[2]));
    o.amount = std::string(f[3]);
    o.hard = f[4] == "true";
    out.push_back(std::move(o));
  }
  return out;
}

// The resets of kCustomerColumns' last column. A line Tally did not write is skipped.
std::vector<std::pair<std::string, TimeUs>> resets_of(std::string_view lines) {
  std::vector<std::pair<std::string, TimeUs>> out;
  if (lines.empty()) {
    return out;
  }
  for (std::string_view line : split(lines, '\n')) {
    const std::vector<std::string_view> f = split(line, '\t');
    if (f.size() == 2 && !f[0].empty()) {
      out.emplace_back(std::string(f[0]), pg::int_or_zero(std::string(f[1])));
    }
  }
  return out;
}

// The resets as the jsonb the column holds.
std::string resets_json(const std::vector<std::pair<std::string, TimeUs>>& resets) {
  common::JsonWriter w;
  w.begin_array();
  for (const auto& [meter, at] : resets) {
    w.begin_object().key("meter").value(meter).key("at").value(std::int64_t{at}).end_object();
  }
  w.end_array();
  return w.take();
}

// The overrides as the jsonb the column holds.
std::string overrides_json(const std::vector<LimitOverride>& overrides) {
  common::JsonWriter w;
  w.begin_array();
  for (const LimitOverride& o : overrides) {
    w.begin_object();
    w.key("meter").value(o.meter);
    w.key("period").value(to_string(o.period));
    w.key("days").value(o.days);
    w.key("amount").value(o.amount);
    w.key("hard").value(o.hard);
    w.end_object();
  }
  w.end_array();
  return w.take();
}

Customer customer_of(const std::vector<pg::Value>& row) {
  Customer c;
  c.id = text(row[0]);
  c.name = text(row[1]);
  c.email = text(row[2]);
  c.plan = text(row[3]);
  c.status = parse_customer_status(text(row[4])).value_or(CustomerStatus::kActive);
  c.timezone = text(row[5]);
  c.billing_anchor_us = pg::int_or_zero(row[6]);
  c.organization = text(row[7]);
  c.metadata_json = text(row[8]);
  c.created_at_us = pg::int_or_zero(row[9]);
  c.updated_at_us = pg::int_or_zero(row[10]);
  c.trial_started_at_us = pg::int_or_zero(row[11]);
  c.overrides = overrides_of(text(row[12]));
  c.resets = resets_of(text(row[13]));
  return c;
}

std::vector<pg::Value> customer_params(const Customer& c) {
  return {c.id,
          c.name,
          c.email,
          c.plan,
          std::string(to_string(c.status)),
          c.timezone,
          micros_or_null(c.billing_anchor_us),
          c.organization.empty() ? pg::Value() : pg::Value(c.organization),
          c.metadata_json,
          micros(c.created_at_us),
          micros(c.updated_at_us),
          micros_or_null(c.trial_started_at_us),
          overrides_json(c.overrides),
          resets_json(c.resets)};
}

constexpr std::string_view kKeyColumns =
    "id, prefix, encode(secret_sha256, 'hex'), coalesce(customer_id, ''), name, scopes, " TALLY_US(
        "created_at") ", " TALLY_US("revoked_at") ", " TALLY_US("last_used_at") ", total_requests";

KeyRow key_of(const std::vector<pg::Value>& row) {
  KeyRow k;
  k.info.id = text(row[0]);
  k.info.prefix = text(row[1]);
  k.secret_sha256 = bytes_of_hex(text(row[2])).value_or(std::string());
  k.info.customer = text(row[3]);
  k.info.name = text(row[4]);
  k.info.scopes = static_cast<Scope>(pg::int_or_zero(row[5]));
  k.info.created_at_us = pg::int_or_zero(row[6]);
  k.info.revoked_at_us = pg::int_or_zero(row[7]);
  k.info.last_used_at_us = pg::int_or_zero(row[8]);
  k.info.total_requests = static_cast<std::uint64_t>(pg::int_or_zero(row[9]));
  return k;
}

Result<std::optional<KeyRow>> one_key(pg::Connection& conn, std::string_view where,
                                      pg::Value param) {
  auto rows =
      conn.exec("SELECT " + std::string(kKeyColumns) + " FROM api_keys WHERE " + std::string(where),
                {std::move(param)});
  if (!rows) {
    return rows.error();
  }
  if (rows->row_count() == 0) {
    return std::optional<KeyRow>();
  }
  return std::optional<KeyRow>(key_of(rows->rows[0]));
}

}  // namespace

Status insert_customer(pg::Connection& conn, const Customer& c) {
  auto r = conn.exec(
      "INSERT INTO customers (id, name, email, plan, status, time_zone, billing_anchor, "
      "parent_id, metadata, created_at, updated_at, trial_started_at, limit_overrides, "
      "period_resets) VALUES ($1, $2, $3, $4, $5, $6, " TALLY_TS(7) ", $8, $9::jsonb, " TALLY_TS(
          10) ", " TALLY_TS(11) ", " TALLY_TS(12) ", $13::jsonb, $14::jsonb)",
      customer_params(c));
  if (!r && pg::is_unique_violation(r.error())) {
    return Status::already_exists("customer '" + c.id + "' already exists");
  }
  return r.status();
}

Result<std::optional<Customer>> find_customer(pg::Connection& conn, std::string_view id) {
  auto rows = conn.exec("SELECT " + std::string(kCustomerColumns) + " FROM customers WHERE id = $1",
                        {std::string(id)});
  if (!rows) {
    return rows.error();
  }
  if (rows->row_count() == 0) {
    return std::optional<Customer>();
  }
  return std::optional<Customer>(customer_of(rows->rows[0]));
}

std::string text_array(const std::vector<std::string>& items) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    out += i == 0 ? "\"" : ",\"";
    for (char c : items[i]) {
      if (c == '"' || c == '\\') {
        out += '\\';
      }
      out += c;
    }
    out += '"';
  }
  out += '}';
  return out;
}

Result<std::vector<Customer>> find_customers(pg::Connection& conn,
                                             const std::vector<std::string>& ids) {
  auto rows = conn.exec(
      "SELECT " + std::string(kCustomerColumns) + " FROM customers WHERE id = ANY($1::text[])",
      {text_array(ids)});
  if (!rows) {
    return rows.error();
  }
  std::vector<Customer> out;
  out.reserve(rows->row_count());
  for (const auto& row : rows->rows) {
    out.push_back(customer_of(row));
  }
  return out;
}

Status create_customers(pg::Connection& conn, const std::vector<std::string>& ids, TimeUs now_us) {
  auto r = conn.exec(
      "INSERT INTO customers (id, name, created_at, updated_at) SELECT x, x, t, t FROM "
      "unnest($1::text[]) AS x, (SELECT timestamptz 'epoch' + $2::bigint * interval '1 "
      "microsecond' AS t) AS now ORDER BY x ON CONFLICT (id) DO NOTHING",
      {text_array(ids), std::to_string(now_us)});
  return r ? Status() : r.error();
}

Result<std::vector<Customer>> shard_customers(pg::Connection& conn) {
  auto rows = conn.exec("SELECT " + std::string(kCustomerColumns) +
                        " FROM customers ORDER BY id COLLATE \"C\"");
  if (!rows) {
    return rows.error();
  }
  std::vector<Customer> out;
  out.reserve(rows->row_count());
  for (const auto& row : rows->rows) {
    out.push_back(customer_of(row));
  }
  return out;
}

Status store_customer(pg::Connection& conn, const Customer& c) {
  auto r = conn.exec(
      "UPDATE customers SET name = $2, email = $3, plan = $4, status = $5, time_zone = $6, "
      "billing_anchor = " TALLY_TS(7) ", parent_id = $8, metadata = $9::jsonb, created_at = " TALLY_TS(
          10) ", updated_at = " TALLY_TS(11) ", trial_started_at = " TALLY_TS(12) ", limit_overrides = $13::jsonb, period_resets = $14::jsonb WHERE id = $1",
      customer_params(c));
  if (!r) {
    return r.error();
  }
  if (r->affected_rows == 0) {
    return core::customer_not_found(c.id);
  }
  return Status();
}

Status insert_key(pg::Connection& conn, const KeyRow& key) {
  auto r = conn.exec(
      "INSERT INTO api_keys (id, prefix, secret_sha256, customer_id, name, scopes, created_at) "
      "VALUES ($1, $2, decode($3, 'hex'), $4, $5, $6, " TALLY_TS(7) ")",
      {key.info.id, key.info.prefix, common::to_hex(key.secret_sha256),
       key.info.customer.empty() ? pg::Value() : pg::Value(key.info.customer), key.info.name,
       std::to_string(static_cast<std::uint32_t>(key.info.scopes)),
       micros(key.info.created_at_us)});
  if (!r && pg::is_unique_violation(r.error())) {
    return Status::already_exists("key '" + key.info.id + "' already exists");
  }
  return r.status();
}

Result<std::optional<KeyRow>> find_key_by_hash(pg::Connection& conn,
                                               std::string_view secret_sha256) {
  return one_key(conn, "secret_sha256 = decode($1, 'hex')", common::to_hex(secret_sha256));
}

Result<std::optional<KeyRow>> find_key(pg::Connection& conn, std::string_view id) {
  return one_key(conn, "id = $1", std::string(id));
}

Result<std::vector<ApiKeyInfo>> all_keys(pg::Connection& conn) {
  auto rows =
      conn.exec("SELECT " + std::string(kKeyColumns) + " FROM api_keys ORDER BY created_at, id");
  if (!rows) {
    return rows.error();
  }
  std::vector<ApiKeyInfo> out;
  for (const auto& row : rows->rows) {
    out.push_back(key_of(row).info);
  }
  return out;
}

Status revoke_key(pg::Connection& conn, std::string_view id, TimeUs at_us) {
  auto r = conn.exec(
      "UPDATE api_keys SET revoked_at = coalesce(revoked_at, " TALLY_TS(2) ") WHERE id = $1",
      {std::string(id), micros(at_us)});
  if (!r) {
    return r.error();
  }
  if (r->affected_rows == 0) {
    return Status::not_found("key '" + std::string(id) + "' does not exist");
  }
  return Status();
}

#undef TALLY_TS
#undef TALLY_US

}  // namespace tally::cluster
