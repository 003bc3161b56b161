// Fixture bases for tests against a real PostgreSQL (support/pg_server.h).
//
// PgServerTest starts one server for its test suite (SetUpTestSuite) and stops it by pid at the
// suite's end; need_server() skips a test where PostgreSQL's programs are missing and fails it
// when the server did not start. PgDatabaseTest adds a fresh database per test, named after the
// test (its prefix, then the test's name in lower case), and conn_ connected to it, migrated to
// the current schema when the fixture asks. A derived SetUp calls the base's first and returns
// when it skipped or failed (IsSkipped() || HasFatalFailure()).
#pragma once

#include <cctype>
#include <memory>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "pg/connection.h"
#include "pg/schema.h"
#include "support/pg_server.h"

namespace tally::testing {

class PgServerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    skip_reason_ = pg_programs_missing();
    if (!skip_reason_.empty()) {
      return;
    }
    auto started = PgServer::start();
    if (!started) {
      start_error_ = started.error().to_string();
      return;
    }
    server_ = std::move(*started);
  }

  static void TearDownTestSuite() { server_.reset(); }

  // Skips without PostgreSQL; fails when the suite's server did not start.
  void need_server() {
    if (!skip_reason_.empty()) {
      GTEST_SKIP() << skip_reason_;
    }
    ASSERT_NE(server_, nullptr) << start_error_;
  }

  static inline std::string skip_reason_;
  static inline std::string start_error_;
  static inline std::unique_ptr<PgServer> server_;
};

class PgDatabaseTest : public PgServerTest {
 protected:
  // Databases are named `prefix` + the test's name; `migrate` runs pg::migrate on each.
  PgDatabaseTest(std::string prefix, bool migrate)
      : prefix_(std::move(prefix)), migrate_(migrate) {}

  void SetUp() override {
    need_server();
    if (IsSkipped() || HasFatalFailure()) {
      return;
    }
    db_ = prefix_ + std::string(::testing::UnitTest::GetInstance()->current_test_info()->name());
    for (char& c : db_) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    ASSERT_TRUE(server_->create_database(db_).ok());
    conn_ = connect();
    ASSERT_NE(conn_, nullptr);
    if (migrate_) {
      auto migrated = pg::migrate(*conn_);
      ASSERT_TRUE(migrated.has_value()) << migrated.error().to_string();
    }
  }

  // How to connect to this test's database (5 s connect timeout, no statement timeout).
  pg::ConnectOptions options() const { return {server_->conninfo(db_), 5000, 0}; }

  // A new connection to this test's database; null (and the test failed) when it cannot.
  std::unique_ptr<pg::Connection> connect() const {
    auto c = pg::Connection::connect(options());
    EXPECT_TRUE(c.has_value()) << c.error().to_string();
    return c ? std::move(*c) : nullptr;
  }

  std::string db_;
  std::unique_ptr<pg::Connection> conn_;

 private:
  std::string prefix_;
  bool migrate_;
};

}  // namespace tally::testing
