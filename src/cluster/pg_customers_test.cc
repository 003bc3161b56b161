// Customers, API keys and the connection pool against a real PostgreSQL 15 (one server for the
// binary, tests/support/pg_server.h; a database per test, migrated to the latest schema).
#include "cluster/pg_customers.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/pool.h"
#include "pg/schema.h"
#include "support/pg_test.h"

namespace tally::cluster {
namespace {

class PgCustomersTest : public testing::PgDatabaseTest {
 protected:
  PgCustomersTest() : PgDatabaseTest("c_", true) {}
};

Customer sample_customer() {
  Customer c;
  c.id = "acme";
  c.name = "Acme's \"Rockets\"; DROP TABLE customers; -- é";
  c.email = "ops@acme.test";
  c.timezone = "Europe/Paris";
  c.status = CustomerStatus::kSuspended;
  c.metadata_json = R"({"tier": "gold", "seats": 12})";
  c.plan = "pro";
  c.created_at_us = 1'767'225'600'123'456;  // 2026-01-01T00:00:00.123456Z
  c.updated_at_us = 1'767'225'600'123'457;
  c.billing_anchor_us = 1'767'312'000'000'001;
  c.trial_started_at_us = 1'767'398'400'000'999;
  c.organization = "";
  return c;
}

TEST_F(PgCustomersTest, ACustomerComesBackFieldForFieldWithMicrosecondTimes) {
  const Customer c = sample_customer();
  ASSERT_TRUE(insert_customer(*conn_, c).ok());
  auto found = find_customer(*conn_, "acme");
  ASSERT_TRUE(found.has_value()) << found.error().to_string();
  ASSERT_TRUE(found->has_value());
  const Customer& got = **found;
  EXPECT_EQ(got.id, c.id);
  EXPECT_EQ(got.name, c.name);
  EXPECT_EQ(got.email, c.email);
  EXPECT_EQ(got.timezone, c.timezone);
  EXPECT_EQ(got.status, CustomerStatus::kSuspended);
  EXPECT_EQ(got.plan, "pro");
  EXPECT_EQ(got.created_at_us, c.created_at_us);
  EXPECT_EQ(got.updated_at_us, c.updated_at_us);
  EXPECT_EQ(got.billing_anchor_us, c.billing_anchor_us);
  EXPECT_EQ(got.trial_started_at_us, c.trial_started_at_us);
  EXPECT_EQ(got.organization, "");
  // jsonb keeps the object, in its own key order and spacing.
  EXPECT_NE(got.metadata_json.find("\"tier\": \"gold\""), std::string::npos) << got.metadata_json;

  auto missing = find_customer(*conn_, "nobody");
  ASSERT_TRUE(missing.has_value());
  EXPECT_FALSE(missing->has_value());
}

TEST_F(PgCustomersTest, UnsetTimesStayUnsetAndOrganizationsReferenceCustomers) {
  Customer parent = sample_customer();
  parent.id = "org";
  parent.billing_anchor_us = 0;
  parent.trial_started_at_us = 0;
  ASSERT_TRUE(insert_customer(*conn_, parent).ok());
  Customer child = sample_customer();
  child.id = "team";
  child.organization = "org";
  ASSERT_TRUE(insert_customer(*conn_, child).ok());
  auto got = find_customer(*conn_, "org");
  ASSERT_TRUE(got.has_value() && got->has_value());
  EXPECT_EQ((*got)->billing_anchor_us, 0);
  EXPECT_EQ((*got)->trial_started_at_us, 0);
  auto team = find_customer(*conn_, "team");
  ASSERT_TRUE(team.has_value() && team->has_value());
  EXPECT_EQ((*team)->organization, "org");
  // An organization that does not exist is refused by the foreign key, and nothing is stored.
  Customer orphan = sample_customer();
  orphan.id = "orphan";
  orphan.organization = "no-such-org";
  EXPECT_EQ(insert_customer(*conn_, orphan).code(), StatusCode::kUnprocessable);
  auto none = find_customer(*conn_, "orphan");
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());
}

TEST_F(PgCustomersTest, ATakenIdIsAConflictAndUpdatesNeedAnExistingCustomer) {
  Customer c = sample_customer();
  ASSERT_TRUE(insert_customer(*conn_, c).ok());
  Status again = insert_customer(*conn_, c);
  EXPECT_EQ(again.code(), StatusCode::kAlreadyExists) << again.to_string();
  EXPECT_EQ(again.message(), "customer 'acme' already exists");

  c.name = "Acme";
  c.status = CustomerStatus::kActive;
  c.updated_at_us += 10;
  ASSERT_TRUE(store_customer(*conn_, c).ok());
  auto got = find_customer(*conn_, "acme");
  ASSERT_TRUE(got.has_value() && got->has_value());
  EXPECT_EQ((*got)->name, "Acme");
  EXPECT_EQ((*got)->status, CustomerStatus::kActive);
  EXPECT_EQ((*got)->updated_at_us, c.updated_at_us);

  Customer ghost = sample_customer();
  ghost.id = "ghost";
  EXPECT_EQ(store_customer(*conn_, ghost).code(), StatusCode::kNotFound);

  Customer b = sample_customer();
  b.id = "beta";
  ASSERT_TRUE(insert_customer(*conn_, b).ok());
  auto all = shard_customers(*conn_);
  ASSERT_TRUE(all.has_value()) << all.error().to_string();
  ASSERT_EQ(all->size(), 2U);
  EXPECT_EQ((*all)[0].id, "acme");
  EXPECT_EQ((*all)[1].id, "beta");
}

KeyRow sample_key(const std::string& id, char fill, const std::string& customer) {
  KeyRow k;
  k.info.id = id;
  k.info.prefix = "tk_0123abcd";
  k.info.customer = customer;
  k.info.name = "ci";
  k.info.scopes = Scope::kIngest | Scope::kCheck;
  k.info.created_at_us = 1'767'225'600'000'000;
  k.secret_sha256 = std::string(31, fill) + '\0';  // raw bytes, a NUL among them
  return k;
}

TEST_F(PgCustomersTest, KeysAreFoundByTheirSecretsHashAndRevokedOnce) {
  ASSERT_TRUE(insert_customer(*conn_, sample_customer()).ok());
  ASSERT_TRUE(insert_key(*conn_, sample_key("key_a", '\xfe', "acme")).ok());
  ASSERT_TRUE(insert_key(*conn_, sample_key("key_admin", 'x', "")).ok());
  EXPECT_EQ(insert_key(*conn_, sample_key("key_b", '\xfe', "acme")).code(),
            StatusCode::kAlreadyExists);  // the same secret hash

  auto found = find_key_by_hash(*conn_, std::string(31, '\xfe') + '\0');
  ASSERT_TRUE(found.has_value()) << found.error().to_string();
  ASSERT_TRUE(found->has_value());
  EXPECT_EQ((*found)->info.id, "key_a");
  EXPECT_EQ((*found)->info.customer, "acme");
  EXPECT_EQ((*found)->info.scopes, Scope::kIngest | Scope::kCheck);
  EXPECT_EQ((*found)->secret_sha256, std::string(31, '\xfe') + '\0');
  EXPECT_EQ((*found)->info.revoked_at_us, 0);
  auto none = find_key_by_hash(*conn_, std::string(32, 'q'));
  ASSERT_TRUE(none.has_value());
  EXPECT_FALSE(none->has_value());

  ASSERT_TRUE(revoke_key(*conn_, "key_a", 1'800'000'000'000'000).ok());
  ASSERT_TRUE(revoke_key(*conn_, "key_a", 1'900'000'000'000'000).ok());
  auto revoked = find_key(*conn_, "key_a");
  ASSERT_TRUE(revoked.has_value() && revoked->has_value());
  EXPECT_EQ((*revoked)->info.revoked_at_us, 1'800'000'000'000'000);  // the first revocation
  EXPECT_EQ(revoke_key(*conn_, "key_nope", 1).code(), StatusCode::kNotFound);

  auto keys = all_keys(*conn_);
  ASSERT_TRUE(keys.has_value());
  ASSERT_EQ(keys->size(), 2U);
  EXPECT_EQ((*keys)[0].id, "key_a");
  EXPECT_EQ((*keys)[1].id, "key_admin");
  EXPECT_EQ((*keys)[1].customer, "");
}

TEST_F(PgCustomersTest, ThePoolSharesABoundedSetOfConnectionsAndReplacesLostOnes) {
  PgPool pool("cluster.postgres[0]", options(), 2);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 20; ++i) {
        auto lease = pool.lease();
        if (!lease || !(*lease)->exec("SELECT 1").has_value()) {
          failures.fetch_add(1);
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(failures.load(), 0);
  // At most two sessions of this database were ever open at once: the pool's two.
  auto sessions = conn_->exec(
      "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
      {db_});
  ASSERT_TRUE(sessions.has_value());
  EXPECT_EQ(sessions->at(0, 0), "2");

  // The server ends one pooled session: the lease that finds it lost drops it, the next opens
  // a fresh one.
  int victim = 0;
  {
    auto lease = pool.lease();
    ASSERT_TRUE(lease.has_value());
    victim = (*lease)->backend_pid();
  }
  ASSERT_TRUE(conn_->exec("SELECT pg_terminate_backend($1)", {std::to_string(victim)}).has_value());
  int ok_after = 0;
  for (int i = 0; i < 4; ++i) {
    auto lease = pool.lease();
    ASSERT_TRUE(lease.has_value());
    if ((*lease)->exec("SELECT 1").has_value()) {
      ++ok_after;
    }
  }
  EXPECT_GE(ok_after, 3);  // at most the one call on the terminated session fails

  // Every connection leased and held: the next lease waits the connect timeout, then says so.
  PgPool tiny("cluster.postgres[1]", {server_->conninfo(db_), 2000, 0}, 1);
  auto held = tiny.lease();
  ASSERT_TRUE(held.has_value());
  auto refused = tiny.lease();
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), StatusCode::kUnavailable);
  EXPECT_NE(refused.error().message().find("cluster.postgres[1]"), std::string::npos);
}

TEST_F(PgCustomersTest, AnUnreachableShardIsUnavailableNamingTheShardNotItsPassword) {
  PgPool pool("cluster.postgres[3]",
              {"host=127.0.0.1 port=1 user=tally password=s3cret dbname=x", 2000, 0}, 1);
  auto lease = pool.lease();
  ASSERT_FALSE(lease.has_value());
  EXPECT_EQ(lease.error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(lease.error().message().rfind("cluster.postgres[3]: ", 0), 0U)
      << lease.error().message();
  EXPECT_EQ(lease.error().message().find("s3cret"), std::string::npos);
}

}  // namespace
}  // namespace tally::cluster
