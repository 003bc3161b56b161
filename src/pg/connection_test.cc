// The PostgreSQL layer against a real server: one PostgreSQL 15 for the whole binary, started by
// tests/support/pg_server.h; each test works in its own database.
#include "pg/connection.h"

#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "pg/schema.h"
#include "support/pg_test.h"

namespace tally::pg {
namespace {

class PgTest : public testing::PgDatabaseTest {
 protected:
  PgTest() : PgDatabaseTest("t_", false) {}

  // The single value of a one-row, one-column query.
  Value scalar(Connection& conn, const std::string& sql, const std::vector<Value>& params = {}) {
    auto r = conn.exec(sql, params);
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    if (!r || r->row_count() != 1) {
      return std::nullopt;
    }
    return r->at(0, 0);
  }
};

TEST_F(PgTest, ExecPassesParametersAsValuesIncludingNullAndHostileText) {
  ASSERT_TRUE(conn_->exec("CREATE TABLE t (id int PRIMARY KEY, v text)").has_value());
  // Text that would break string-built SQL: quotes, a statement separator, backslashes, a
  // comment, newlines, tabs and multi-byte UTF-8. It must come back byte for byte.
  const std::string hostile = "it's'); DROP TABLE t; -- \\x00 \\\\ \"q\"\n\ttab é€😀";
  auto inserted =
      conn_->exec("INSERT INTO t (id, v) VALUES ($1, $2), ($3, $4)", {"1", hostile, "2", {}});
  ASSERT_TRUE(inserted.has_value()) << inserted.error().to_string();
  EXPECT_EQ(inserted->affected_rows, 2);
  EXPECT_EQ(inserted->command, "INSERT");

  auto rows = conn_->exec("SELECT id, v, v IS NULL AS is_null FROM t ORDER BY id");
  ASSERT_TRUE(rows.has_value()) << rows.error().to_string();
  ASSERT_EQ(rows->row_count(), 2u);
  EXPECT_EQ(rows->columns, (std::vector<std::string>{"id", "v", "is_null"}));
  EXPECT_EQ(rows->at(0, 1), hostile);
  EXPECT_EQ(rows->at(0, 2), "f");
  EXPECT_EQ(rows->at(1, 1), std::nullopt);  // NULL, not ""
  EXPECT_EQ(rows->at(1, 2), "t");
  EXPECT_EQ(rows->affected_rows, 2);
  // The table is still there: nothing in the value ran as SQL.
  EXPECT_EQ(scalar(*conn_, "SELECT count(*) FROM t WHERE v = $1", {hostile}), "1");
  // An empty string is a value, distinct from NULL.
  ASSERT_TRUE(conn_->exec("INSERT INTO t VALUES (3, $1)", {std::string()}).has_value());
  EXPECT_EQ(scalar(*conn_, "SELECT v IS NULL FROM t WHERE id = 3"), "f");
  EXPECT_EQ(scalar(*conn_, "SELECT length(v) FROM t WHERE id = 3"), "0");
}

TEST_F(PgTest, ParameterWithNulByteIsRefusedBeforeSending) {
  ASSERT_TRUE(conn_->exec("CREATE TABLE t (v text)").has_value());
  auto r = conn_->exec("INSERT INTO t VALUES ($1)", {std::string("a\0b", 3)});
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(r.error().message().find("$1 holds a NUL byte"), std::string::npos)
      << r.error().message();
  EXPECT_EQ(scalar(*conn_, "SELECT count(*) FROM t"), "0");
}

TEST_F(PgTest, TransactionRolledBackOnDestructionAndKeptOnCommit) {
  ASSERT_TRUE(conn_->exec("CREATE TABLE t (v int)").has_value());
  {
    auto tx = Transaction::begin(*conn_);
    ASSERT_TRUE(tx.has_value()) << tx.error().to_string();
    ASSERT_TRUE(conn_->exec("INSERT INTO t VALUES (1)").has_value());
    // Inside the transaction the row is visible.
    EXPECT_EQ(scalar(*conn_, "SELECT count(*) FROM t"), "1");
  }  // destroyed open: rolled back
  EXPECT_EQ(scalar(*conn_, "SELECT count(*) FROM t"), "0");
  // And the connection is outside any transaction again.
  EXPECT_EQ(scalar(*conn_,
                   "SELECT count(*) FROM pg_stat_activity WHERE pid = pg_backend_pid() "
                   "AND backend_xid IS NULL"),
            "1");

  {
    auto tx = Transaction::begin(*conn_);
    ASSERT_TRUE(tx.has_value());
    ASSERT_TRUE(conn_->exec("INSERT INTO t VALUES (2)").has_value());
    ASSERT_TRUE(tx->commit().ok());
    EXPECT_FALSE(tx->open());
  }
  // Another session sees the committed row.
  auto other = connect();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(scalar(*other, "SELECT string_agg(v::text, ',') FROM t"), "2");
}

TEST_F(PgTest, CommitAfterAFailedStatementReportsTheRollback) {
  ASSERT_TRUE(conn_->exec("CREATE TABLE t (v int PRIMARY KEY)").has_value());
  auto tx = Transaction::begin(*conn_);
  ASSERT_TRUE(tx.has_value());
  ASSERT_TRUE(conn_->exec("INSERT INTO t VALUES (1)").has_value());
  EXPECT_FALSE(conn_->exec("INSERT INTO t VALUES (1)").has_value());
  Status committed = tx->commit();
  EXPECT_FALSE(committed.ok());
  EXPECT_NE(committed.message().find("rolled back"), std::string::npos) << committed.message();
  EXPECT_EQ(scalar(*conn_, "SELECT count(*) FROM t"), "0");
}

TEST_F(PgTest, CopyOfTenThousandRowsWithEscapesAndNulls) {
  ASSERT_TRUE(conn_->exec("CREATE TABLE t (id int PRIMARY KEY, v text, n bigint)").has_value());
  std::vector<std::vector<Value>> rows;
  for (int i = 0; i < 10000; ++i) {
    Value text = "row " + std::to_string(i);
    if (i % 100 == 1) {
      text = "tab\there\nnewline\\backslash\rcr \\N not null";
    } else if (i % 100 == 2) {
      text = std::nullopt;
    }
    rows.push_back({std::to_string(i), text, std::to_string(static_cast<std::int64_t>(i) * i)});
  }
  auto copied = conn_->copy_from("COPY t (id, v, n) FROM STDIN", rows);
  ASSERT_TRUE(copied.has_value()) << copied.error().to_string();
  EXPECT_EQ(*copied, 10000);
  EXPECT_EQ(scalar(*conn_, "SELECT count(*) FROM t"), "10000");
  EXPECT_EQ(scalar(*conn_, "SELECT sum(n) FROM t"), "333283335000");
  EXPECT_EQ(scalar(*conn_, "SELECT count(*) FROM t WHERE v IS NULL"), "100");
  EXPECT_EQ(scalar(*conn_, "SELECT v FROM t WHERE id = 101"),
            "tab\there\nnewline\\backslash\rcr \\N not null");
  EXPECT_EQ(scalar(*conn_, "SELECT v FROM t WHERE id = 9999"), "row 9999");
}

TEST_F(PgTest, CopyThatViolatesAConstraintCopiesNothing) {
  ASSERT_TRUE(conn_->exec("CREATE TABLE t (id int PRIMARY KEY)").has_value());
  std::vector<std::vector<Value>> rows = {{"1"}, {"2"}, {"1"}};
  auto copied = conn_->copy_from("COPY t (id) FROM STDIN", rows);
  ASSERT_FALSE(copied.has_value());
  EXPECT_TRUE(is_unique_violation(copied.error())) << copied.error().to_string();
  EXPECT_EQ(scalar(*conn_, "SELECT count(*) FROM t"), "0");
  // Ragged rows and NUL bytes are refused before anything is sent.
  auto ragged = conn_->copy_from("COPY t (id) FROM STDIN", {{"1"}, {"2", "3"}});
  ASSERT_FALSE(ragged.has_value());
  EXPECT_EQ(ragged.error().code(), StatusCode::kInvalidArgument);
  auto nul = conn_->copy_from("COPY t (id) FROM STDIN", {{std::string("1\0", 2)}});
  ASSERT_FALSE(nul.has_value());
  EXPECT_EQ(nul.error().code(), StatusCode::kInvalidArgument);
  // Not a COPY FROM STDIN statement.
  auto wrong = conn_->copy_from("SELECT 1", {{"1"}});
  ASSERT_FALSE(wrong.has_value());
  EXPECT_EQ(wrong.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(scalar(*conn_, "SELECT 1"), "1");  // the connection is still usable
}

TEST_F(PgTest, UniqueViolationIsMappedAndKeepsItsSqlstate) {
  ASSERT_TRUE(conn_->exec("CREATE TABLE events (c text, id text, CONSTRAINT dedup UNIQUE (c, id))")
                  .has_value());
  ASSERT_TRUE(conn_->exec("INSERT INTO events VALUES ($1, $2)", {"acme", "e1"}).has_value());
  auto again = conn_->exec("INSERT INTO events VALUES ($1, $2)", {"acme", "e1"});
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), StatusCode::kAlreadyExists);
  EXPECT_EQ(sqlstate(again.error()), "23505");
  EXPECT_TRUE(is_unique_violation(again.error()));
  EXPECT_FALSE(is_retryable(again.error()));
  EXPECT_NE(again.error().message().find("dedup"), std::string::npos) << again.error().message();
  // Other errors keep theirs and map elsewhere.
  auto syntax = conn_->exec("SELEC 1");
  ASSERT_FALSE(syntax.has_value());
  EXPECT_EQ(sqlstate(syntax.error()), "42601");
  EXPECT_EQ(syntax.error().code(), StatusCode::kInternal);
  EXPECT_FALSE(is_unique_violation(syntax.error()));
  auto bad_number = conn_->exec("SELECT $1::int", {"twelve"});
  ASSERT_FALSE(bad_number.has_value());
  EXPECT_EQ(bad_number.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(sqlstate(bad_number.error()), "22P02");
  auto not_null = conn_->exec("CREATE TABLE n (v int NOT NULL)");
  ASSERT_TRUE(not_null.has_value());
  auto null_value = conn_->exec("INSERT INTO n VALUES ($1)", {std::nullopt});
  ASSERT_FALSE(null_value.has_value());
  EXPECT_EQ(null_value.error().code(), StatusCode::kUnprocessable);
  EXPECT_EQ(sqlstate(null_value.error()), "23502");
}

TEST_F(PgTest, SerializationFailureIsRetryable) {
  ASSERT_TRUE(conn_->exec("CREATE TABLE c (id int PRIMARY KEY, n int)").has_value());
  ASSERT_TRUE(conn_->exec("INSERT INTO c VALUES (1, 0)").has_value());
  auto other = connect();
  ASSERT_NE(other, nullptr);
  auto a = Transaction::begin(*conn_, "BEGIN ISOLATION LEVEL REPEATABLE READ");
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(scalar(*conn_, "SELECT n FROM c WHERE id = 1"), "0");  // the snapshot is taken
  ASSERT_TRUE(other->exec("UPDATE c SET n = n + 1 WHERE id = 1").has_value());
  auto lost = conn_->exec("UPDATE c SET n = n + 1 WHERE id = 1");
  ASSERT_FALSE(lost.has_value());
  EXPECT_EQ(sqlstate(lost.error()), "40001");
  EXPECT_TRUE(is_retryable(lost.error()));
  EXPECT_EQ(lost.error().code(), StatusCode::kUnavailable);
}

TEST_F(PgTest, ConnectionLossIsUnavailableAndStaysSo) {
  auto other = connect();
  ASSERT_NE(other, nullptr);
  const std::string pid = std::to_string(conn_->backend_pid());
  EXPECT_EQ(scalar(*other, "SELECT pg_terminate_backend($1::int)", {pid}), "t");
  auto r = conn_->exec("SELECT 1");
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnavailable) << r.error().to_string();
  EXPECT_FALSE(conn_->alive());
  auto again = conn_->exec("SELECT 1");
  ASSERT_FALSE(again.has_value());
  EXPECT_EQ(again.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(again.error().message().find("connection lost"), std::string::npos)
      << again.error().message();
  // A new connection works.
  auto fresh = connect();
  ASSERT_NE(fresh, nullptr);
  EXPECT_EQ(scalar(*fresh, "SELECT 1"), "1");
}

TEST_F(PgTest, ConnectErrorsAreClear) {
  auto malformed = Connection::connect({"host=127.0.0.1 port", 2000, 0});
  ASSERT_FALSE(malformed.has_value());
  EXPECT_EQ(malformed.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(malformed.error().message().find("connection string"), std::string::npos);
  // Port 1 on loopback: nothing listens.
  auto refused = Connection::connect({"host=127.0.0.1 port=1 user=tally dbname=x", 2000, 0});
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.error().message().find("cannot connect"), std::string::npos);
  auto no_db = Connection::connect({server_->conninfo("no_such_db"), 2000, 0});
  ASSERT_FALSE(no_db.has_value());
  EXPECT_NE(no_db.error().message().find("no_such_db"), std::string::npos);
  EXPECT_NE(conn_->describe().find("/" + db_), std::string::npos) << conn_->describe();
}

TEST_F(PgTest, CommandTimeoutCancelsALongStatement) {
  auto c = Connection::connect({server_->conninfo(db_), 5000, 200});
  ASSERT_TRUE(c.has_value()) << c.error().to_string();
  auto slow = (*c)->exec("SELECT pg_sleep(5)");
  ASSERT_FALSE(slow.has_value());
  EXPECT_EQ(sqlstate(slow.error()), "57014");
  EXPECT_EQ(slow.error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(scalar(**c, "SELECT 1"), "1");
}

// The schema functions; `tally migrate` end to end is tests/migrate_test.cc.
TEST_F(PgTest, MigrateAppliesOnceAndSchemaStatusFollows) {
  auto before = schema_status(*conn_);
  ASSERT_TRUE(before.has_value()) << before.error().to_string();
  EXPECT_EQ(before->state, SchemaState::kOutdated);
  EXPECT_TRUE(before->applied.empty());
  auto first = migrate(*conn_);
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  EXPECT_EQ(first->version, latest_schema_version());
  EXPECT_EQ(first->applied_now.size(), migrations().size());
  auto second = migrate(*conn_);
  ASSERT_TRUE(second.has_value());
  EXPECT_TRUE(second->applied_now.empty());
  auto after = schema_status(*conn_);
  ASSERT_TRUE(after.has_value());
  EXPECT_EQ(after->state, SchemaState::kKnown) << after->describe();
  // The dedup rule is the table's: the same event id for one customer is refused.
  const char* insert =
      "INSERT INTO events (customer_id, event_id, type, time) "
      "VALUES ($1, $2, 'api_call', now())";
  ASSERT_TRUE(conn_->exec(insert, {"acme", "evt_1"}).has_value());
  ASSERT_TRUE(conn_->exec(insert, {"globex", "evt_1"}).has_value());
  auto dup = conn_->exec(insert, {"acme", "evt_1"});
  ASSERT_FALSE(dup.has_value());
  EXPECT_TRUE(is_unique_violation(dup.error()));
  // The advisory lock is released after migrating: another session can take it at once.
  auto other = connect();
  ASSERT_NE(other, nullptr);
  EXPECT_EQ(scalar(*other, "SELECT pg_try_advisory_lock($1)", {std::to_string(kMigrationLockKey)}),
            "t");
  // A version this binary does not know makes the schema "newer", and migrate refuses.
  ASSERT_TRUE(conn_->exec("INSERT INTO tally_schema_version (version, name) VALUES (999, 'x')")
                  .has_value());
  auto newer = schema_status(*conn_);
  ASSERT_TRUE(newer.has_value());
  EXPECT_EQ(newer->state, SchemaState::kNewer);
  EXPECT_EQ(newer->unknown, std::vector<int>{999});
  EXPECT_NE(newer->describe().find("999"), std::string::npos);
}

}  // namespace
}  // namespace tally::pg
