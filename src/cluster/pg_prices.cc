// The units of tiered prices per billing period, in PostgreSQL (see pg_prices.h). Every value
// goes as a parameter (arrays of texts, integers and numerics, unnested by SQL).
#include "cluster/pg_prices.h"

#include <map>
#include <tuple>

#include "cluster/pg_customers.h"
#include "cluster/pg_sql.h"

namespace tally::cluster {
namespace {

constexpr std::string_view kEnsureUsage =
    "INSERT INTO price_usage (customer_id, price, period_start) "
    "SELECT c, p, timestamptz 'epoch' + s * interval '1 microsecond' "
    "FROM unnest($1::text[], $2::text[], $3::bigint[]) AS v (c, p, s) ORDER BY c, p, s "
    "ON CONFLICT DO NOTHING";
constexpr std::string_view kLockUsage =
    "SELECT u.customer_id, u.price, " TALLY_US("u.period_start") ", u.units FROM price_usage u "
    "JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS v (c, p, s) ON u.customer_id = v.c "
    "AND u.price = v.p AND u.period_start = timestamptz 'epoch' + v.s * interval '1 microsecond' "
    "ORDER BY u.customer_id, u.price, u.period_start FOR UPDATE OF u";
constexpr std::string_view kStoreUsage =
    "UPDATE price_usage AS u SET units = v.units "
    "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::numeric[]) AS v (c, p, s, units) "
    "WHERE u.customer_id = v.c AND u.price = v.p "
    "AND u.period_start = timestamptz 'epoch' + v.s * interval '1 microsecond'";
constexpr std::string_view kReadUsage =
    "SELECT units FROM price_usage WHERE customer_id = $1 AND price = $2 "
    "AND period_start = " TALLY_TS(3);
constexpr std::string_view kSetCharges =
    "UPDATE events AS e SET cost = v.cost, credits = v.credits "
    "FROM unnest($1::text[], $2::text[], $3::numeric[], $4::numeric[]) AS v (c, id, cost, credits) "
    "WHERE e.customer_id = v.c AND e.event_id = v.id";

// An array literal of numbers (no quoting needed: digits, '-' and '.').
template <class T, class F>
std::string number_array(const std::vector<T>& items, F text) {
  std::string out = "{";
  for (std::size_t i = 0; i < items.size(); ++i) {
    out += (i == 0 ? "" : ",") + text(items[i]);
  }
  return out + "}";
}

std::vector<pg::Value> key_params(const std::vector<PeriodKey>& keys) {
  std::vector<std::string> customers;
  std::vector<std::string> prices;
  for (const PeriodKey& k : keys) {
    customers.push_back(k.customer);
    prices.push_back(k.price);
  }
  return {text_array(customers), text_array(prices),
          number_array(keys, [](const PeriodKey& k) { return std::to_string(k.period_start_us); })};
}

Result<core::Decimal> decimal_of(const pg::Value& v) {
  if (!v) {
    return Status::internal("a NULL where units were expected");
  }
  return core::parse_decimal(*v);
}

}  // namespace

Result<std::vector<core::Decimal>> lock_price_usage(pg::Connection& conn,
                                                    const std::vector<PeriodKey>& keys) {
  std::vector<core::Decimal> out(keys.size());
  if (keys.empty()) {
    return out;
  }
  const std::vector<pg::Value> params = key_params(keys);
  TALLY_TRY(conn.exec(kEnsureUsage, params).status());
  auto rows = conn.exec(kLockUsage, params);
  if (!rows) {
    return rows.error();
  }
  std::map<std::tuple<std::string, std::string, core::TimeUs>, core::Decimal> units;
  for (const auto& row : rows->rows) {
    auto u = decimal_of(row[3]);
    if (!u) {
      return u.error();
    }
    units[{row[0].value_or(""), row[1].value_or(""), pg::int_or_zero(row[2])}] = *u;
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto it = units.find({keys[i].customer, keys[i].price, keys[i].period_start_us});
    if (it == units.end()) {
      return Status::internal("price_usage row of customer '" + keys[i].customer + "', price '" +
                              keys[i].price + "' not locked");
    }
    out[i] = it->second;
  }
  return out;
}

Status store_price_usage(pg::Connection& conn, const std::vector<PeriodKey>& keys,
                         const std::vector<core::Decimal>& units) {
  if (keys.empty()) {
    return Status();
  }
  std::vector<pg::Value> params = key_params(keys);
  params.push_back(number_array(units, [](core::Decimal d) { return core::format_decimal(d); }));
  return conn.exec(kStoreUsage, params).status();
}

Result<core::Decimal> read_price_usage(pg::Connection& conn, const PeriodKey& key) {
  auto rows = conn.exec(kReadUsage, {key.customer, key.price, micros(key.period_start_us)});
  if (!rows) {
    return rows.error();
  }
  if (rows->row_count() == 0) {
    return core::Decimal{};
  }
  return decimal_of(rows->at(0, 0));
}

Status set_event_charges(pg::Connection& conn, const std::vector<ChargedEvent>& events) {
  if (events.empty()) {
    return Status();
  }
  std::vector<std::string> customers;
  std::vector<std::string> ids;
  std::vector<core::Decimal> costs;
  std::vector<core::Decimal> credits;
  for (const ChargedEvent& e : events) {
    customers.push_back(e.customer);
    ids.push_back(e.event_id);
    costs.push_back(e.cost);
    credits.push_back(e.credits);
  }
  auto text = [](core::Decimal d) {
    return core::format_decimal(d);
  };
  return conn
      .exec(kSetCharges, {text_array(customers), text_array(ids), number_array(costs, text),
                          number_array(credits, text)})
      .status();
}

}  // namespace tally::cluster
