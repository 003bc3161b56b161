// The audit log in PostgreSQL (see pg_audit.h).
#include "cluster/pg_audit.h"

#include "cluster/pg_sql.h"

namespace tally::cluster {

Status insert_audit(pg::Connection& conn, TimeUs at_us, std::string_view record) {
  return conn
      .exec("INSERT INTO audit_log (at, record) VALUES (" TALLY_TS(1) ", $2)",
            {micros(at_us), std::string(record)})
      .status();
}

Result<std::vector<std::string>> newest_audit(pg::Connection& conn, std::size_t limit) {
  auto rows = conn.exec(
      "SELECT record FROM (SELECT id, at, record FROM audit_log ORDER BY at DESC, id DESC "
      "LIMIT $1) newest ORDER BY at, id",
      {std::to_string(limit)});
  if (!rows) {
    return rows.error();
  }
  std::vector<std::string> out;
  out.reserve(rows->row_count());
  for (const auto& row : rows->rows) {
    out.push_back(row[0].value_or(std::string()));
  }
  return out;
}

}  // namespace tally::cluster

#undef TALLY_TS
#undef TALLY_US
