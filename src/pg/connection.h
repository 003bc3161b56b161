// A PostgreSQL connection over libpq, owned and synchronous, for the scale-out mode (issue #11;
// docs/cluster.md).
//
// Design: one Connection owns one libpq connection. Values always travel as parameters
// (PQexecParams, text format): SQL text is never built from values. Results are copied into an
// owned QueryResult (rows x columns of optional strings, NULL = nullopt) so no libpq type leaves
// this layer; libpq is included only by src/pg/*.cc (scripts/layering.sh checks it). Batches are
// written with COPY ... FROM STDIN (copy_from), in the text format, encoded here.
//
// Errors are values. A server error keeps its SQLSTATE in the Status's details
// (`{"sqlstate":"23505"}`, read back with sqlstate()) and maps to a code:
//   23505 unique_violation                          -> kAlreadyExists (is_unique_violation)
//   40001 serialization_failure, 40P01 deadlock     -> kUnavailable   (is_retryable)
//   class 08 (connection), 57P01..57P03 (shutdown)  -> kUnavailable
//   other class 23 (integrity)                      -> kUnprocessable
//   class 22 (data exception)                       -> kInvalidArgument
//   class 53 (insufficient resources), 54           -> kResourceExhausted
//   57014 query_canceled (statement_timeout)        -> kUnavailable
//   anything else (syntax, undefined table: a bug)  -> kInternal
// A connection that is lost (the server died, the backend was terminated) fails the call with
// kUnavailable saying so, and every later call fails the same way: open a new Connection.
// Whether a statement ran when the connection dropped mid-call is unknown; the caller decides
// whether to retry (inside a transaction it did not commit).
//
// Thread safety: a Connection is not thread-safe; use one per thread. Distinct connections may be
// used from distinct threads.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tally/status.h"

struct pg_conn;

namespace tally::pg {

// A parameter or a field: text, or NULL (nullopt).
using Value = std::optional<std::string>;

// The rows of one statement, owned.
struct QueryResult {
  std::vector<std::string> columns;      // column names, in order
  std::vector<std::vector<Value>> rows;  // rows x columns
  // Rows inserted, updated, deleted, copied or returned by SELECT (libpq's PQcmdTuples).
  std::int64_t affected_rows = 0;
  std::string command;  // the command tag's verb: "SELECT", "INSERT", "COMMIT", "ROLLBACK", ...

  std::size_t row_count() const { return rows.size(); }

  // The field at (row, column). REQUIRES: row < row_count(), column < columns.size().
  const Value& at(std::size_t row, std::size_t column) const;
};

struct ConnectOptions {
  // A libpq connection string: "postgresql://user@host:5432/db" or "host=... dbname=...".
  std::string conninfo;
  // For opening the connection. libpq counts whole seconds, at least 2; 0 = libpq's default
  // (wait forever), which is not allowed here.
  std::uint32_t connect_timeout_ms = 5000;
  // The server's statement_timeout for this session; 0 = none.
  std::uint32_t command_timeout_ms = 0;
};

// A field holding an integer (a bigint, or a time as microseconds), read leniently: 0 for NULL or
// text that is not one, for columns the program's own SQL types.
std::int64_t int_or_zero(const Value& v);

// The SQLSTATE a Status from this layer carries ("23505"), or "" when it carries none.
std::string sqlstate(const Status& status);
// SQLSTATE 23505: a UNIQUE or PRIMARY KEY constraint refused a row.
bool is_unique_violation(const Status& status);
// SQLSTATE 40001 or 40P01: the transaction lost a race and may be run again as a whole.
bool is_retryable(const Status& status);

class Connection {
 public:
  // Opens a connection. Errors: kInvalidArgument for a malformed connection string or a zero
  // timeout; kUnavailable when the server cannot be reached or refuses (the message is libpq's).
  static Result<std::unique_ptr<Connection>> connect(const ConnectOptions& options);

  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Runs one statement with `params` as $1, $2, ... (text format; nullopt = NULL).
  // Errors: as in the header comment; kInvalidArgument (nothing sent) when a parameter holds a
  // NUL byte, which PostgreSQL text cannot hold, or when there are more than 65535 parameters.
  Result<QueryResult> exec(std::string_view sql, const std::vector<Value>& params = {});

  // Runs `sql`, which may hold several statements separated by ';' and no parameters, as one
  // simple query. Only for SQL that is part of the program (the migrations), never built from
  // input. Returns the last statement's result.
  Result<QueryResult> exec_script(std::string_view sql);

  // Runs `copy_sql` ("COPY t (a, b) FROM STDIN") and sends `rows` in COPY's text format (NULL as
  // \N; backslash, tab, newline and carriage return escaped), in chunks. Returns the number of
  // rows the server copied. Errors: kInvalidArgument (nothing sent) for a field with a NUL byte or
  // a row whose width differs from the first's; a server error as above (nothing copied).
  Result<std::int64_t> copy_from(std::string_view copy_sql,
                                 const std::vector<std::vector<Value>>& rows);

  // False once the connection is known to be lost.
  bool alive() const;

  // "host:port/dbname", for messages (never the password).
  std::string describe() const;

  // The server's process id for this session (pg_backend_pid()).
  int backend_pid() const;

  // Session state a caller has set up on this connection (temporary tables, say), under a name
  // of the caller's choosing: whether `name` was noted, and noting it. The notes live exactly as
  // long as this object, as the server session does (a lost connection is replaced by a new
  // Connection, which has none). A caller notes its state only once the server has it for good
  // (committed).
  bool has_session_state(std::string_view name) const;
  void note_session_state(std::string_view name);

 private:
  explicit Connection(pg_conn* conn) : conn_(conn) {}

  Status connection_lost(std::string_view what) const;

  pg_conn* conn_;
  std::vector<std::string> session_state_;  // a handful of names at most
};

// A transaction on one connection: BEGIN at begin(), COMMIT at commit(), and ROLLBACK at
// rollback() or when it is destroyed still open, so an early return never leaves one open.
// REQUIRES: the Connection outlives the Transaction; one open Transaction per connection.
class Transaction {
 public:
  // `begin_sql`: "BEGIN", or e.g. "BEGIN ISOLATION LEVEL SERIALIZABLE".
  static Result<Transaction> begin(Connection& conn, std::string_view begin_sql = "BEGIN");

  Transaction(Transaction&& other) noexcept;
  Transaction& operator=(Transaction&&) = delete;
  Transaction(const Transaction&) = delete;
  Transaction& operator=(const Transaction&) = delete;
  ~Transaction();

  // COMMIT. The transaction is closed afterwards even when it fails (the server then rolled
  // back; a 40001 here is retryable, a lost connection leaves the outcome unknown).
  Status commit();
  // ROLLBACK. Closed afterwards.
  Status rollback();

  bool open() const { return conn_ != nullptr; }

 private:
  explicit Transaction(Connection* conn) : conn_(conn) {}

  Connection* conn_;  // null once committed or rolled back
};

}  // namespace tally::pg
