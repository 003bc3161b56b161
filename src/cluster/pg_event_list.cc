// The listing of one shard's stored events (see pg_event_list.h).
#include "cluster/pg_event_list.h"

#include <limits>

#include "cluster/pg_sql.h"
#include "common/json_writer.h"
#include "core/decimal.h"
#include "core/event_parse.h"

namespace tally::cluster {
namespace {

// $1, $2, $3: the position (the customer's created_at, its id, the seq); $4: the type or "";
// $5, $6: from and to (0: none); $7: the limit; $8: the one customer. An inner LIMIT per
// customer keeps each index read to the page's size.
constexpr std::string_view kSelect =
    "SELECT c.id, " TALLY_US("c.created_at") ", e.seq, e.event_id, e.type, " TALLY_US(
        "e.time") ", " TALLY_US("e.received_at") ", e.quantity, "
                                                 "coalesce(e.properties_text, e.properties::text), "
                                                 "e.cost::text, e.credits::text, e.suspended "
                                                 "FROM customers c CROSS JOIN LATERAL (SELECT * "
                                                 "FROM events e WHERE e.customer_id = c.id "
                                                 "AND e.seq > CASE WHEN c.created_at = " TALLY_TS(
                                                     1) " AND c.id = $2 THEN $3::bigint ELSE 0 "
                                                        "END AND ($4 = '' OR e.type = $4) "
                                                        "AND e.time >= " TALLY_TS(
                                                            5) " AND ($6::bigint = 0 OR e.time "
                                                               "< " TALLY_TS(
                                                                   6) ") ORDER BY e.seq LIMIT "
                                                                      "$7::bigint) e WHERE ";
constexpr std::string_view kOneCustomer = "c.id = $8 AND ";
constexpr std::string_view kEveryCustomer = "$8 = '' AND ";
constexpr std::string_view kAfter = "(c.created_at, c.id) >= (" TALLY_TS(1) ", $2) ";
constexpr std::string_view kFromStart = "$1::bigint IS NOT NULL AND $2::text IS NOT NULL ";
constexpr std::string_view kOrder = "ORDER BY c.created_at, c.id, e.seq LIMIT $7::bigint";

// The properties of the rows, in their stored order and kinds, parsed by core's own parser from
// their JSON text (a body of one event per row), as ingest parsed them.
Status read_properties(const pg::QueryResult& rows, std::vector<ListedEvent>* out) {
  std::string body = "[";
  for (std::size_t i = 0; i < rows.row_count(); ++i) {
    body += i == 0 ? "{\"id\":" : ",{\"id\":";
    common::append_json_string(body, rows.rows[i][3].value_or(""));
    body += ",\"customer_id\":";
    common::append_json_string(body, rows.rows[i][0].value_or(""));
    body += ",\"type\":\"t\",\"properties\":" + rows.rows[i][8].value_or("{}") + "}";
  }
  body += "]";
  core::ParseOptions po;
  po.now_us = 0;
  po.future_skew_us_max = std::numeric_limits<TimeUs>::max() / 2;
  po.events_max = static_cast<std::uint32_t>(rows.row_count()) + 1;
  core::ParsedEvents parsed;
  TALLY_TRY(core::parse_events(body, po, &parsed));
  if (!parsed.errors.empty() || parsed.batch.size() != rows.row_count()) {
    return Status::corruption("the properties of stored event '" +
                              (parsed.errors.empty() ? std::string() : parsed.errors[0].id) +
                              "' cannot be read back");
  }
  const core::EventBatch& b = parsed.batch;
  for (std::size_t i = 0; i < b.size(); ++i) {
    const core::Event& e = b.events()[i];
    auto& props = (*out)[i].event.properties;
    for (std::uint32_t p = e.prop_begin; p < e.prop_begin + e.prop_count; ++p) {
      const core::Prop& prop = b.props()[p];
      EventProperty ep;
      ep.key = std::string(b.text(prop.key));
      ep.text = std::string(b.text(prop.text));
      switch (prop.kind) {
        case core::PropKind::kString:
          ep.kind = EventProperty::Kind::kString;
          break;
        case core::PropKind::kNumber:
          ep.kind = EventProperty::Kind::kNumber;
          break;
        case core::PropKind::kBool:
          ep.kind = EventProperty::Kind::kBool;
          break;
        case core::PropKind::kNull:
          ep.kind = EventProperty::Kind::kNull;
          break;
      }
      props.push_back(std::move(ep));
    }
  }
  return Status();
}

// A numeric column as the engine's decimal text.
bool decimal_text(const pg::Value& v, std::string* out) {
  core::Decimal d;
  if (!v || !core::try_parse_decimal(*v, &d)) {
    return false;
  }
  *out = core::format_decimal(d);
  return true;
}

}  // namespace

bool before(const EventPosition& a, const EventPosition& b) {
  if (a.created_at_us != b.created_at_us) {
    return a.created_at_us < b.created_at_us;
  }
  if (a.customer != b.customer) {
    return a.customer < b.customer;
  }
  return a.seq < b.seq;
}

Result<std::vector<ListedEvent>> list_events(pg::Connection& conn, const EventListRead& read) {
  std::string sql(kSelect);
  sql += read.customer.empty() ? kEveryCustomer : kOneCustomer;
  sql += read.after ? kAfter : kFromStart;
  sql += kOrder;
  const EventPosition start;
  const EventPosition& at = read.after ? *read.after : start;
  auto rows = conn.exec(
      sql, {micros(at.created_at_us), at.customer, std::to_string(at.seq), read.type,
            micros(read.from_us), micros(read.to_us), std::to_string(read.limit), read.customer});
  if (!rows) {
    return rows.error();
  }
  std::vector<ListedEvent> out(rows->row_count());
  for (std::size_t i = 0; i < rows->row_count(); ++i) {
    const auto& row = rows->rows[i];
    ListedEvent& l = out[i];
    l.position.customer = row[0].value_or("");
    l.position.created_at_us = pg::int_or_zero(row[1]);
    l.position.seq = pg::int_or_zero(row[2]);
    StoredEvent& e = l.event;
    e.customer = l.position.customer;
    e.seq = static_cast<std::uint64_t>(l.position.seq);
    e.id = row[3].value_or("");
    e.type = row[4].value_or("");
    e.time_us = pg::int_or_zero(row[5]);
    e.received_at_us = pg::int_or_zero(row[6]);
    e.quantity = static_cast<std::uint32_t>(pg::int_or_zero(row[7]));
    e.flagged = row[11].value_or("f") == "t";
    if (row[9] || row[10]) {
      e.priced = true;
      if (!decimal_text(row[9], &e.cost) || !decimal_text(row[10], &e.credits)) {
        return Status::corruption("stored event '" + e.id +
                                  "': its cost or credits is not a number");
      }
    }
  }
  if (!out.empty()) {
    TALLY_TRY(read_properties(*rows, &out));
  }
  return out;
}

}  // namespace tally::cluster
