// The PostgreSQL connection over libpq (see connection.h): the only file besides schema.cc that
// talks to libpq, and the one that copies every libpq result into owned values.
#include "pg/connection.h"

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <limits>
#include <utility>

#include <libpq-fe.h>

#include "common/assert.h"

namespace tally::pg {
namespace {

// COPY data goes to libpq in chunks of about this size (libpq buffers each one).
constexpr std::size_t kCopyChunkBytes = 256 * 1024;
// PostgreSQL's protocol counts parameters in 16 bits.
constexpr std::size_t kParamsMax = 65535;

struct ResultDeleter {
  void operator()(PGresult* r) const { PQclear(r); }
};

using ResultPtr = std::unique_ptr<PGresult, ResultDeleter>;

std::string trimmed(const char* text) {
  std::string out = text != nullptr ? text : "";
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) {
    out.pop_back();
  }
  return out;
}

StatusCode code_for(std::string_view state) {
  if (state == "23505") {
    return StatusCode::kAlreadyExists;
  }
  if (state == "40001" || state == "40P01" || state == "57014" || state == "57P01" ||
      state == "57P02" || state == "57P03" || state.substr(0, 2) == "08") {
    return StatusCode::kUnavailable;
  }
  if (state.substr(0, 2) == "23") {
    return StatusCode::kUnprocessable;
  }
  if (state.substr(0, 2) == "22") {
    return StatusCode::kInvalidArgument;
  }
  if (state.substr(0, 2) == "53" || state.substr(0, 2) == "54") {
    return StatusCode::kResourceExhausted;
  }
  return StatusCode::kInternal;
}

// The Status of a failed result: its SQLSTATE mapped, the server's message kept.
Status error_status(const PGresult* result, PGconn* conn) {
  const char* state = result != nullptr ? PQresultErrorField(result, PG_DIAG_SQLSTATE) : nullptr;
  std::string message =
      trimmed(result != nullptr ? PQresultErrorMessage(result) : PQerrorMessage(conn));
  if (message.empty()) {
    message = trimmed(PQerrorMessage(conn));
  }
  if (PQstatus(conn) == CONNECTION_BAD) {
    // The server went away while the statement ran: whether it ran is unknown.
    return Status::unavailable("PostgreSQL connection lost (the statement may have run): " +
                               message);
  }
  if (state == nullptr || state[0] == '\0') {
    return Status::internal("PostgreSQL: " + message);
  }
  return Status(code_for(state), "PostgreSQL " + std::string(state) + ": " + message,
                "{\"sqlstate\":\"" + std::string(state) + "\"}");
}

// Copies a successful result into an owned QueryResult.
QueryResult owned(const PGresult* result) {
  QueryResult out;
  const int columns = PQnfields(result);
  const int rows = PQntuples(result);
  out.columns.reserve(static_cast<std::size_t>(columns));
  for (int c = 0; c < columns; ++c) {
    out.columns.emplace_back(PQfname(result, c));
  }
  out.rows.reserve(static_cast<std::size_t>(rows));
  for (int r = 0; r < rows; ++r) {
    std::vector<Value> row;
    row.reserve(static_cast<std::size_t>(columns));
    for (int c = 0; c < columns; ++c) {
      if (PQgetisnull(result, r, c) != 0) {
        row.emplace_back(std::nullopt);
      } else {
        row.emplace_back(std::string(PQgetvalue(result, r, c),
                                     static_cast<std::size_t>(PQgetlength(result, r, c))));
      }
    }
    out.rows.push_back(std::move(row));
  }
  const char* tuples = PQcmdTuples(const_cast<PGresult*>(result));
  out.affected_rows = (tuples != nullptr && tuples[0] != '\0') ? std::atoll(tuples) : rows;
  std::string_view tag = PQcmdStatus(const_cast<PGresult*>(result));
  out.command = std::string(tag.substr(0, tag.find(' ')));
  return out;
}

Result<QueryResult> finish(ResultPtr result, PGconn* conn) {
  const ExecStatusType st = result ? PQresultStatus(result.get()) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
    return owned(result.get());
  }
  return error_status(result.get(), conn);
}

// Notices ("relation already exists, skipping") are not errors; libpq would print them.
void ignore_notice(void* /*arg*/, const char* /*message*/) {}

bool has_nul(const std::string& text) {
  return text.find('\0') != std::string::npos;
}

// One field in COPY's text format.
void append_copy_field(const Value& field, std::string* out) {
  if (!field) {
    out->append("\\N");
    return;
  }
  for (char c : *field) {
    switch (c) {
      case '\\':
        out->append("\\\\");
        break;
      case '\t':
        out->append("\\t");
        break;
      case '\n':
        out->append("\\n");
        break;
      case '\r':
        out->append("\\r");
        break;
      default:
        out->push_back(c);
    }
  }
}

}  // namespace

const Value& QueryResult::at(std::size_t row, std::size_t column) const {
  TALLY_ASSERT(row < rows.size() && column < columns.size(), "QueryResult::at out of range");
  return rows[row][column];
}

std::int64_t int_or_zero(const Value& v) {
  std::int64_t out = 0;
  if (v) {
    std::from_chars(v->data(), v->data() + v->size(), out);
  }
  return out;
}

std::string sqlstate(const Status& status) {
  const std::string& details = status.details_json();
  constexpr std::string_view kPrefix = "{\"sqlstate\":\"";
  if (details.size() != kPrefix.size() + 7 || details.compare(0, kPrefix.size(), kPrefix) != 0) {
    return {};
  }
  return details.substr(kPrefix.size(), 5);
}

bool is_unique_violation(const Status& status) {
  return sqlstate(status) == "23505";
}

bool is_retryable(const Status& status) {
  const std::string state = sqlstate(status);
  return state == "40001" || state == "40P01";
}

Result<std::unique_ptr<Connection>> Connection::connect(const ConnectOptions& options) {
  if (options.connect_timeout_ms == 0) {
    return Status::invalid_argument("connect_timeout_ms must be positive");
  }
  char* parse_error = nullptr;
  PQconninfoOption* parsed = PQconninfoParse(options.conninfo.c_str(), &parse_error);
  if (parsed == nullptr) {
    std::string why = parse_error != nullptr ? trimmed(parse_error) : "out of memory";
    PQfreemem(parse_error);
    return Status::invalid_argument("invalid PostgreSQL connection string: " + why);
  }
  PQconninfoFree(parsed);
  // libpq's connect_timeout is whole seconds, and it treats 1 as 2.
  const std::string timeout_s =
      std::to_string(std::max<std::uint32_t>(2, (options.connect_timeout_ms + 999) / 1000));
  // The connection string is expanded first; the timeout given after it overrides its own.
  const char* keywords[] = {"dbname", "connect_timeout", nullptr};
  const char* values[] = {options.conninfo.c_str(), timeout_s.c_str(), nullptr};
  PGconn* raw = PQconnectdbParams(keywords, values, 1);
  if (raw == nullptr) {
    return Status::unavailable("PostgreSQL: out of memory opening a connection");
  }
  std::unique_ptr<Connection> conn(new Connection(raw));
  PQsetNoticeProcessor(raw, ignore_notice, nullptr);
  if (PQstatus(raw) != CONNECTION_OK) {
    return Status::unavailable("cannot connect to PostgreSQL: " + trimmed(PQerrorMessage(raw)));
  }
  if (options.command_timeout_ms > 0) {
    auto set = conn->exec("SELECT set_config('statement_timeout', $1, false)",
                          {std::to_string(options.command_timeout_ms)});
    if (!set) {
      return set.error();
    }
  }
  return conn;
}

Connection::~Connection() {
  PQfinish(conn_);
}

bool Connection::alive() const {
  return PQstatus(conn_) == CONNECTION_OK;
}

std::string Connection::describe() const {
  const char* host = PQhost(conn_);
  const char* port = PQport(conn_);
  const char* db = PQdb(conn_);
  std::string h = host != nullptr ? host : "?";
  if (!h.empty() && h[0] == '/') {
    h = "[socket " + h + "]";
  }
  return h + ":" + (port != nullptr ? port : "?") + "/" + (db != nullptr ? db : "?");
}

int Connection::backend_pid() const {
  return PQbackendPID(conn_);
}

bool Connection::has_session_state(std::string_view name) const {
  return std::find(session_state_.begin(), session_state_.end(), name) != session_state_.end();
}

void Connection::note_session_state(std::string_view name) {
  if (!has_session_state(name)) {
    session_state_.emplace_back(name);
  }
}

Status Connection::connection_lost(std::string_view what) const {
  return Status::unavailable("PostgreSQL connection lost (" + std::string(what) +
                             "): " + trimmed(PQerrorMessage(conn_)));
}

Result<QueryResult> Connection::exec(std::string_view sql, const std::vector<Value>& params) {
  if (params.size() > kParamsMax) {
    return Status::invalid_argument("more than 65535 parameters in one statement");
  }
  for (std::size_t i = 0; i < params.size(); ++i) {
    if (params[i] && has_nul(*params[i])) {
      return Status::invalid_argument("parameter $" + std::to_string(i + 1) +
                                      " holds a NUL byte, which PostgreSQL text cannot store");
    }
  }
  if (!alive()) {
    return connection_lost("before the statement was sent");
  }
  const std::string text(sql);
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const Value& p : params) {
    values.push_back(p ? p->c_str() : nullptr);
  }
  ResultPtr result(PQexecParams(conn_, text.c_str(), static_cast<int>(params.size()), nullptr,
                                values.data(), nullptr, nullptr, 0));
  return finish(std::move(result), conn_);
}

Result<QueryResult> Connection::exec_script(std::string_view sql) {
  if (!alive()) {
    return connection_lost("before the statement was sent");
  }
  const std::string text(sql);
  ResultPtr result(PQexec(conn_, text.c_str()));
  return finish(std::move(result), conn_);
}

Result<std::int64_t> Connection::copy_from(std::string_view copy_sql,
                                           const std::vector<std::vector<Value>>& rows) {
  const std::size_t width = rows.empty() ? 0 : rows.front().size();
  for (std::size_t r = 0; r < rows.size(); ++r) {
    if (rows[r].size() != width) {
      return Status::invalid_argument("COPY row " + std::to_string(r) + " has " +
                                      std::to_string(rows[r].size()) + " fields, the first has " +
                                      std::to_string(width));
    }
    for (const Value& field : rows[r]) {
      if (field && has_nul(*field)) {
        return Status::invalid_argument("COPY row " + std::to_string(r) +
                                        " holds a NUL byte, which PostgreSQL text cannot store");
      }
    }
  }
  if (!alive()) {
    return connection_lost("before COPY was sent");
  }
  const std::string text(copy_sql);
  ResultPtr start(PQexec(conn_, text.c_str()));
  if (!start || PQresultStatus(start.get()) != PGRES_COPY_IN) {
    auto failed = finish(std::move(start), conn_);
    if (failed) {
      return Status::invalid_argument("not a COPY ... FROM STDIN statement: " + text);
    }
    return failed.error();
  }
  std::string chunk;
  chunk.reserve(kCopyChunkBytes + 4096);
  bool send_failed = false;
  auto flush = [&]() {
    if (!chunk.empty() && PQputCopyData(conn_, chunk.data(), static_cast<int>(chunk.size())) != 1) {
      send_failed = true;
    }
    chunk.clear();
  };
  for (const auto& row : rows) {
    for (std::size_t c = 0; c < row.size(); ++c) {
      if (c > 0) {
        chunk.push_back('\t');
      }
      append_copy_field(row[c], &chunk);
    }
    chunk.push_back('\n');
    if (chunk.size() >= kCopyChunkBytes) {
      flush();
      if (send_failed) {
        break;
      }
    }
  }
  if (!send_failed) {
    flush();
  }
  if (PQputCopyEnd(conn_, send_failed ? "sending COPY data failed" : nullptr) != 1) {
    return connection_lost("while sending COPY data");
  }
  // The COPY's own result, then the end of the command.
  Status status;
  std::int64_t copied = 0;
  while (PGresult* raw = PQgetResult(conn_)) {
    ResultPtr result(raw);
    if (PQresultStatus(raw) == PGRES_COMMAND_OK) {
      const char* tuples = PQcmdTuples(raw);
      copied = (tuples != nullptr && tuples[0] != '\0') ? std::atoll(tuples) : 0;
    } else if (status.ok()) {
      status = error_status(raw, conn_);
    }
  }
  if (!status.ok()) {
    return status;
  }
  if (send_failed) {
    return connection_lost("while sending COPY data");
  }
  return copied;
}

Result<Transaction> Transaction::begin(Connection& conn, std::string_view begin_sql) {
  auto r = conn.exec(begin_sql);
  if (!r) {
    return r.error();
  }
  return Transaction(&conn);
}

Transaction::Transaction(Transaction&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)) {}

Transaction::~Transaction() {
  if (conn_ != nullptr) {
    // Nothing to report to: a lost connection rolled the transaction back already.
    rollback().ignore_error();
  }
}

Status Transaction::commit() {
  TALLY_ASSERT(conn_ != nullptr, "commit of a closed transaction");
  Connection* conn = std::exchange(conn_, nullptr);
  auto r = conn->exec("COMMIT");
  if (!r) {
    return r.error();
  }
  // COMMIT of a transaction that failed earlier answers "ROLLBACK" without an error.
  if (r->command == "ROLLBACK") {
    return Status::internal(
        "COMMIT of a transaction in which a statement had failed: it was rolled back");
  }
  return Status();
}

Status Transaction::rollback() {
  TALLY_ASSERT(conn_ != nullptr, "rollback of a closed transaction");
  Connection* conn = std::exchange(conn_, nullptr);
  auto r = conn->exec("ROLLBACK");
  return r ? Status() : r.error();
}

}  // namespace tally::pg
