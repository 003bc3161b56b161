// The scale-out mode's event and aggregate writes and usage reads (pg_events.h) against a real
// PostgreSQL 15: one server for the whole binary (tests/support/pg_server.h), a database per
// test with the schema applied by pg::migrate. Aggregates are checked against a recomputation
// from the events table by SQL, and usage reads against core::AggState fed in memory.
#include "cluster/pg_events.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

#include "cluster/pg_wallets.h"
#include "core/decimal.h"
#include "pg/schema.h"
#include "support/pg_test.h"

namespace tally::cluster {
namespace {

using core::PropKind;

// ---- events and meters ------------------------------------------------------------------------

struct TestProp {
  std::string key;
  std::string text;
  PropKind kind = PropKind::kString;
};

struct TestEvent {
  std::string customer;
  std::string id;
  std::string type;
  core::TimeUs time_us = 0;
  std::vector<TestProp> props;
  std::uint32_t quantity = 1;
};

core::EventBatch make_batch(const std::vector<TestEvent>& events) {
  core::EventBatch b;
  for (const TestEvent& t : events) {
    core::Event e;
    e.id = b.add_text(t.id);
    e.customer = b.add_text(t.customer);
    e.type = b.add_text(t.type);
    e.time_us = t.time_us;
    e.quantity = t.quantity;
    e.prop_begin = static_cast<std::uint32_t>(b.props().size());
    for (const TestProp& p : t.props) {
      b.props().push_back(core::Prop{b.add_text(p.key), b.add_text(p.text), p.kind});
    }
    e.prop_count = static_cast<std::uint32_t>(t.props.size());
    b.events().push_back(e);
  }
  return b;
}

std::vector<std::uint32_t> all_indices(const core::EventBatch& b) {
  std::vector<std::uint32_t> out(b.size());
  for (std::uint32_t i = 0; i < out.size(); ++i) {
    out[i] = i;
  }
  return out;
}

core::MeterSpec meter(std::string key, std::string type, core::Aggregation a,
                      std::string value = {}, std::vector<std::string> group_by = {},
                      std::vector<std::pair<std::string, std::string>> filter = {}) {
  core::MeterSpec m;
  m.key = std::move(key);
  m.event_type = std::move(type);
  m.aggregation = a;
  m.value_property = std::move(value);
  m.group_by = std::move(group_by);
  m.filter = std::move(filter);
  return m;
}

// The meters of these tests, and how SQL recomputes each from the events table: the value, the
// condition for an event to count, and the group key (test constants, not values).
struct MeterSql {
  core::MeterSpec spec;
  const char* value;
  const char* where;
  const char* group;
};

constexpr const char* kTokens = "(properties_text::jsonb->>'tokens')::numeric";
constexpr const char* kHasTokens = "jsonb_typeof(properties_text::jsonb->'tokens') = 'number'";
constexpr const char* kModel = "coalesce(properties_text::jsonb->>'model', '')";

std::vector<MeterSql> meters_sql() {
  using A = core::Aggregation;
  return {
      {meter("calls", "api", A::kCount), "quantity::numeric", "true", "''"},
      {meter("tokens", "llm", A::kSum, "tokens", {"model", "region"}), kTokens, kHasTokens,
       "coalesce(properties_text::jsonb->>'model', '') || chr(31) || "
       "coalesce(properties_text::jsonb->>'region', '')"},
      {meter("tok_min", "llm", A::kMin, "tokens", {"model"}), kTokens, kHasTokens, kModel},
      {meter("tok_max", "llm", A::kMax, "tokens", {"model"}), kTokens, kHasTokens, kModel},
      {meter("tok_latest", "llm", A::kLatest, "tokens", {"model"}), kTokens, kHasTokens, kModel},
      {meter("tok_avg", "llm", A::kAvg, "tokens"), kTokens, kHasTokens, "''"},
      {meter("gpt_tokens", "llm", A::kSum, "tokens", {}, {{"model", "gpt"}}), kTokens,
       "jsonb_typeof(properties_text::jsonb->'tokens') = 'number' AND "
       "properties_text::jsonb->>'model' = 'gpt'",
       "''"},
      {meter("users", "llm", A::kUniqueCount, "user", {"model"}), "1::numeric",
       "jsonb_typeof(properties_text::jsonb->'user') IS NOT NULL AND "
       "jsonb_typeof(properties_text::jsonb->'user') <> "
       "'null'",
       kModel},
  };
}

std::vector<core::MeterSpec> specs() {
  std::vector<core::MeterSpec> out;
  for (const MeterSql& m : meters_sql()) {
    out.push_back(m.spec);
  }
  return out;
}

// 2026-03-01T10:00:00Z
constexpr core::TimeUs kT0 = 1772359200LL * core::kUsPerSecond;

// Random events: `n` of them for `customers` customers over `minutes` minutes from kT0, types api
// and llm, models gpt, claude, a JSON null or none, two regions, decimal tokens (sometimes a
// string, which numeric meters skip), users for unique_count, times that repeat (so seq breaks
// ties of `latest`).
std::vector<TestEvent> random_events(std::size_t n, int customers, int minutes, std::uint64_t seed,
                                     const std::string& id_prefix) {
  std::mt19937_64 rng(seed);
  auto pick = [&](int k) {
    return static_cast<int>(rng() % static_cast<std::uint64_t>(k));
  };
  std::vector<TestEvent> out;
  for (std::size_t i = 0; i < n; ++i) {
    TestEvent e;
    e.customer = "cust-" + std::to_string(pick(customers));
    e.id = id_prefix + std::to_string(i);
    // Whole seconds, often the same ones: ties on time are common.
    e.time_us = kT0 + pick(minutes * 6) * 10 * core::kUsPerSecond;
    if (pick(3) == 0) {
      e.type = "api";
      e.quantity = static_cast<std::uint32_t>(1 + pick(3));
      e.props.push_back({"path", "/v1/x", PropKind::kString});
    } else {
      e.type = "llm";
      const int model = pick(4);
      if (model == 0) {
        e.props.push_back({"model", "gpt", PropKind::kString});
      } else if (model == 1) {
        e.props.push_back({"model", "claude", PropKind::kString});
      } else if (model == 2) {
        e.props.push_back({"model", "null", PropKind::kNull});
      }
      e.props.push_back({"region", pick(2) == 0 ? "eu" : "us", PropKind::kString});
      const std::string tokens =
          std::to_string(pick(2000) - 100) + (pick(2) == 0 ? ".25" : "");  // some negative
      e.props.push_back({"tokens", tokens, pick(20) == 0 ? PropKind::kString : PropKind::kNumber});
      if (pick(4) != 0) {
        e.props.push_back({"user", "user-" + std::to_string(pick(15)), PropKind::kString});
      }
    }
    out.push_back(std::move(e));
  }
  return out;
}

// ---- the fixture ------------------------------------------------------------------------------

class ClusterPgTest : public testing::PgDatabaseTest {
 protected:
  ClusterPgTest() : PgDatabaseTest("t_", true) {}

  std::string scalar(const std::string& sql, const std::vector<pg::Value>& params = {}) {
    auto r = conn_->exec(sql, params);
    EXPECT_TRUE(r.has_value()) << r.error().to_string() << " in " << sql;
    if (!r || r->row_count() != 1 || !r->at(0, 0)) {
      return "<none>";
    }
    return *r->at(0, 0);
  }

  // Asserts that `table`'s rows of meter m equal a recomputation from the events table by SQL,
  // with buckets of `bucket` ('1 minute' or '1 hour'); returns the number of rows.
  long check_aggregates(const MeterSql& m, const std::string& table, const std::string& bucket) {
    const std::string sql =
        std::string("WITH r AS (SELECT customer_id, ") + m.group +
        " AS group_key, date_bin($3::interval, time, timestamptz '1970-01-01 00:00:00+00') "
        "AS bucket_start, count(*)::bigint AS count, sum(v) AS sum, min(v) AS min, max(v) AS "
        "max, (array_agg(v ORDER BY time DESC, seq DESC))[1] AS latest, max(time) AS "
        "latest_time, (array_agg(seq ORDER BY time DESC, seq DESC))[1] AS latest_seq "
        "FROM (SELECT *, " +
        m.value + " AS v FROM events WHERE type = $1 AND " + m.where +
        ") e GROUP BY 1, 2, 3), "
        "a AS (SELECT customer_id, group_key, bucket_start, count, sum, min, max, latest, "
        "latest_time, latest_seq FROM " +
        table +
        " WHERE meter = $2) "
        "SELECT (SELECT count(*) FROM (TABLE r EXCEPT TABLE a) x) + "
        "(SELECT count(*) FROM (TABLE a EXCEPT TABLE r) y), (SELECT count(*) FROM a), "
        "(SELECT count(*) FROM r)";
    auto r = conn_->exec(sql, {m.spec.event_type, m.spec.key, bucket});
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    if (!r) {
      return -1;
    }
    EXPECT_EQ(r->at(0, 0), "0") << "meter " << m.spec.key << " in " << table
                                << ": rows differ from the recomputation";
    EXPECT_EQ(r->at(0, 1), r->at(0, 2)) << "meter " << m.spec.key << " in " << table;
    return std::stol(r->at(0, 1).value_or("-1"));
  }

  // Asserts that the distinct values of meter m equal a recomputation from the events.
  long check_uniques(const MeterSql& m) {
    const std::string sql =
        std::string("WITH r AS (SELECT DISTINCT customer_id, ") + m.group +
        " AS group_key, date_bin('1 minute', time, timestamptz '1970-01-01 00:00:00+00') AS "
        "bucket_start, properties_text::jsonb->>'user' AS value FROM events WHERE type = $1 AND " +
        m.where +
        "), a AS (SELECT customer_id, group_key, bucket_start, value FROM aggregate_uniques "
        "WHERE meter = $2) "
        "SELECT (SELECT count(*) FROM (TABLE r EXCEPT TABLE a) x) + "
        "(SELECT count(*) FROM (TABLE a EXCEPT TABLE r) y), (SELECT count(*) FROM a)";
    auto r = conn_->exec(sql, {m.spec.event_type, m.spec.key});
    EXPECT_TRUE(r.has_value()) << r.error().to_string();
    if (!r) {
      return -1;
    }
    EXPECT_EQ(r->at(0, 0), "0") << "distinct values of " << m.spec.key << " differ";
    return std::stol(r->at(0, 1).value_or("-1"));
  }

  // Every meter, minutes and hours, and the distinct values, against the recomputation; with
  // `every_meter`, each meter must have rows (random events feed them all).
  void check_all_aggregates(bool every_meter = true) {
    const long rows_min = every_meter ? 1 : 0;
    for (const MeterSql& m : meters_sql()) {
      EXPECT_GE(check_aggregates(m, "aggregates_minute", "1 minute"), rows_min) << m.spec.key;
      EXPECT_GE(check_aggregates(m, "aggregates_hour", "1 hour"), rows_min) << m.spec.key;
      if (m.spec.aggregation == core::Aggregation::kUniqueCount) {
        EXPECT_GE(check_uniques(m), rows_min);
      }
    }
  }

  Result<EventWriteResult> write(pg::Connection& conn, const std::vector<TestEvent>& events,
                                 const EventWriteOptions& options = {}) {
    const core::EventBatch b = make_batch(events);
    const std::vector<std::uint32_t> idx = all_indices(b);
    const std::vector<core::MeterSpec> ms = specs();
    return write_events(conn, b, idx, ms, kT0 + core::kUsPerDay, options);
  }

  // Waits until session `pid` waits for a lock; false after 10 s.
  bool wait_until_blocked(pg::Connection& watcher, int pid) {
    for (int i = 0; i < 1000; ++i) {
      auto r = watcher.exec(
          "SELECT count(*) FROM pg_stat_activity WHERE pid = $1::int AND wait_event_type = "
          "'Lock'",
          {std::to_string(pid)});
      if (r && r->at(0, 0) == "1") {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
};

// ---- writes -----------------------------------------------------------------------------------

TEST_F(ClusterPgTest, AggregatesEqualARecomputationFromTheEvents) {
  const std::vector<TestEvent> events = random_events(3000, 6, 150, 42, "e");
  // Three batches, so later ones merge into rows the earlier ones made.
  std::uint64_t inserted = 0;
  for (std::size_t start = 0; start < events.size(); start += 1000) {
    const std::vector<TestEvent> part(events.begin() + static_cast<std::ptrdiff_t>(start),
                                      events.begin() + static_cast<std::ptrdiff_t>(start + 1000));
    auto w = write(*conn_, part);
    ASSERT_TRUE(w.has_value()) << w.error().to_string();
    EXPECT_EQ(w->inserted, 1000u);
    EXPECT_EQ(w->duplicates, 0u);
    EXPECT_EQ(w->attempts, 1u);
    EXPECT_GT(w->minute_rows, 0u);
    EXPECT_GT(w->hour_rows, 0u);
    inserted += w->inserted;
  }
  EXPECT_EQ(inserted, 3000u);
  EXPECT_EQ(scalar("SELECT count(*) FROM events"), "3000");
  check_all_aggregates();
  // The hours are 3 (150 minutes from 10:00), and each hour row merges its minutes.
  EXPECT_EQ(scalar("SELECT count(DISTINCT bucket_start) FROM aggregates_hour"), "3");
  EXPECT_EQ(scalar("SELECT count(*) FROM (SELECT meter, customer_id, group_key, "
                   "date_bin('1 hour', bucket_start, timestamptz '1970-01-01 00:00:00+00') h, "
                   "sum(count) c, sum(sum) s FROM "
                   "aggregates_minute GROUP BY 1, 2, 3, 4 EXCEPT SELECT meter, customer_id, "
                   "group_key, bucket_start, count, sum FROM aggregates_hour) x"),
            "0");
  // The count meter counts quantities in sum and events in count.
  EXPECT_EQ(scalar("SELECT sum(sum)::bigint = (SELECT sum(quantity) FROM events WHERE type = "
                   "'api') AND sum(count) = (SELECT count(*) FROM events WHERE type = 'api') "
                   "FROM aggregates_minute WHERE meter = 'calls'"),
            "t");
}

TEST_F(ClusterPgTest, PropertiesTimesAndQuantitiesAreStoredAsSent) {
  const std::string hostile = "it's \"q\" \\ back\nline\ttab é€😀 ; DROP TABLE events; --";
  std::vector<TestEvent> events = {
      {"acme",
       "p1",
       "llm",
       kT0 + 123456,
       {{"note", hostile, PropKind::kString},
        {"tokens", "1.50", PropKind::kNumber},
        {"big", "-12345678901234567890.000000001", PropKind::kNumber},
        {"flag", "true", PropKind::kBool},
        {"none", "null", PropKind::kNull},
        {"usage.input", "3", PropKind::kNumber}},
       1},
      {"acme", "p2", "api", kT0 + 7, {}, 42},
  };
  auto w = write(*conn_, events);
  ASSERT_TRUE(w.has_value()) << w.error().to_string();
  EXPECT_EQ(w->inserted, 2u);
  EXPECT_EQ(scalar("SELECT properties_text::jsonb->>'note' FROM events WHERE event_id = 'p1'"),
            hostile);
  EXPECT_EQ(
      scalar("SELECT (properties_text::jsonb->'tokens')::text FROM events WHERE event_id = 'p1'"),
      "1.50");
  EXPECT_EQ(
      scalar("SELECT (properties_text::jsonb->'big')::text FROM events WHERE event_id = 'p1'"),
      "-12345678901234567890.000000001");
  EXPECT_EQ(
      scalar("SELECT jsonb_typeof(properties_text::jsonb->'tokens') || "
             "jsonb_typeof(properties_text::jsonb->'flag')"
             " || jsonb_typeof(properties_text::jsonb->'none') FROM events WHERE event_id = 'p1'"),
      "numberbooleannull");
  EXPECT_EQ(
      scalar("SELECT properties_text::jsonb->>'usage.input' FROM events WHERE event_id = 'p1'"),
      "3");
  EXPECT_EQ(scalar("SELECT properties_text FROM events WHERE event_id = 'p2'"), "{}");
  // Stored once, as the text written (key order and number texts as sent); the jsonb column of
  // schema versions before 10 is left NULL.
  EXPECT_EQ(scalar("SELECT left(properties_text, 35) FROM events WHERE event_id = 'p1'"),
            "{\"note\":\"it's \\\"q\\\" \\\\ back\\nline\\t");
  EXPECT_EQ(scalar("SELECT right(properties_text, 92) FROM events WHERE event_id = 'p1'"),
            "\"tokens\":1.50,\"big\":-12345678901234567890.000000001,\"flag\":true,\"none\":null,"
            "\"usage.input\":3}");
  EXPECT_EQ(scalar("SELECT count(*) FROM events WHERE properties IS NOT NULL"), "0");
  // Microseconds survive, whatever the session's zone.
  ASSERT_TRUE(conn_->exec("SET TimeZone = 'Asia/Kolkata'").has_value());
  EXPECT_EQ(scalar("SELECT (extract(epoch FROM time) * 1000000)::bigint FROM events WHERE "
                   "event_id = 'p1'"),
            std::to_string(kT0 + 123456));
  EXPECT_EQ(scalar("SELECT quantity FROM events WHERE event_id = 'p2'"), "42");
  EXPECT_EQ(scalar("SELECT (extract(epoch FROM received_at) * 1000000)::bigint FROM events "
                   "LIMIT 1"),
            std::to_string(kT0 + core::kUsPerDay));
  EXPECT_EQ(scalar("SELECT sum FROM aggregates_minute WHERE meter = 'calls'"), "42.000000000");
  EXPECT_EQ(scalar("SELECT count FROM aggregates_minute WHERE meter = 'calls'"), "1");
  // The seqs reported are the stored ones, ascending in batch order.
  ASSERT_EQ(w->seqs.size(), 2u);
  EXPECT_LT(w->seqs[0], w->seqs[1]);
  EXPECT_EQ(scalar("SELECT seq FROM events WHERE event_id = 'p2'"), std::to_string(w->seqs[1]));
}

TEST_F(ClusterPgTest, LatestOfEventsAtTheSameTimeIsTheLaterInTheBatch) {
  auto llm = [](std::string id, std::string tokens) {
    return TestEvent{
        "acme",
        std::move(id),
        "llm",
        kT0 + 5 * core::kUsPerSecond,
        {{"model", "gpt", PropKind::kString}, {"tokens", std::move(tokens), PropKind::kNumber}}};
  };
  auto w = write(*conn_, {llm("a", "7"), llm("b", "3"), llm("c", "5")});
  ASSERT_TRUE(w.has_value()) << w.error().to_string();
  EXPECT_EQ(scalar("SELECT latest FROM aggregates_minute WHERE meter = 'tok_latest'"),
            "5.000000000");
  EXPECT_EQ(scalar("SELECT latest FROM aggregates_hour WHERE meter = 'tok_latest'"), "5.000000000");
  // A later batch at the same time comes later still; an earlier time does not win.
  TestEvent earlier = llm("d", "100");
  earlier.time_us -= core::kUsPerSecond;
  ASSERT_TRUE(write(*conn_, {llm("e", "9"), earlier}).has_value());
  EXPECT_EQ(scalar("SELECT latest FROM aggregates_minute WHERE meter = 'tok_latest'"),
            "9.000000000");
  EXPECT_EQ(scalar("SELECT min || ' ' || max || ' ' || count FROM aggregates_hour WHERE meter = "
                   "'tok_min'"),
            "3.000000000 100.000000000 5");
  check_all_aggregates(false);
}

TEST_F(ClusterPgTest, DuplicatesInsideABatchAndAcrossBatchesCountOnce) {
  auto llm = [](std::string id, std::string tokens, std::string user) {
    return TestEvent{"acme",
                     std::move(id),
                     "llm",
                     kT0 + 30 * core::kUsPerSecond,
                     {{"model", "gpt", PropKind::kString},
                      {"tokens", std::move(tokens), PropKind::kNumber},
                      {"user", std::move(user), PropKind::kString}}};
  };
  auto first = write(*conn_, {llm("a", "10", "u1"), llm("b", "20", "u2"), llm("a", "999", "u9"),
                              llm("c", "30", "u1")});
  ASSERT_TRUE(first.has_value()) << first.error().to_string();
  using O = EventOutcome;
  EXPECT_EQ(first->outcomes,
            (std::vector<O>{O::kInserted, O::kInserted, O::kDuplicate, O::kInserted}));
  EXPECT_EQ(first->inserted, 3u);
  EXPECT_EQ(first->duplicates, 1u);
  EXPECT_EQ(first->seqs[2], 0);
  // The first copy is the one stored.
  EXPECT_EQ(scalar("SELECT properties_text::jsonb->>'tokens' FROM events WHERE event_id = 'a'"),
            "10");

  // The same id for another customer is another event.
  TestEvent other = llm("a", "5", "u1");
  other.customer = "globex";
  auto second =
      write(*conn_, {llm("a", "1000", "u7"), llm("d", "40", "u3"), llm("b", "1", "u8"), other});
  ASSERT_TRUE(second.has_value()) << second.error().to_string();
  EXPECT_EQ(second->outcomes,
            (std::vector<O>{O::kDuplicate, O::kInserted, O::kDuplicate, O::kInserted}));
  EXPECT_EQ(scalar("SELECT count(*) FROM events"), "5");
  EXPECT_EQ(scalar("SELECT sum || ' ' || count FROM aggregates_minute WHERE meter = 'tokens' "
                   "AND customer_id = 'acme'"),
            "100.000000000 4");
  EXPECT_EQ(scalar("SELECT string_agg(value, ',' ORDER BY value) FROM aggregate_uniques WHERE "
                   "customer_id = 'acme'"),
            "u1,u2,u3");
  // A batch of only duplicates writes no aggregate.
  auto again = write(*conn_, {llm("a", "1", "u5"), llm("c", "1", "u6")});
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->inserted, 0u);
  EXPECT_EQ(again->minute_rows, 0u);
  check_all_aggregates(false);
}

TEST_F(ClusterPgTest, TwoWritersOfTheSameEventsAtOnceStoreEachOnce) {
  // 2,000 events of 8 customers over 20 minutes: both writers send all of them, in batches of
  // 250, the first from the front and the second from the back, so their batches meet on the
  // same ids, customers and minutes.
  const std::vector<TestEvent> events = random_events(2000, 8, 20, 7, "id-");
  std::vector<std::vector<TestEvent>> batches;
  for (std::size_t s = 0; s < events.size(); s += 250) {
    batches.emplace_back(events.begin() + static_cast<std::ptrdiff_t>(s),
                         events.begin() + static_cast<std::ptrdiff_t>(s + 250));
  }
  std::vector<std::vector<TestEvent>> reversed(batches.rbegin(), batches.rend());
  for (auto& b : reversed) {
    std::reverse(b.begin(), b.end());
  }
  auto c1 = connect();
  auto c2 = connect();
  ASSERT_NE(c1, nullptr);
  ASSERT_NE(c2, nullptr);
  std::atomic<int> ready{0};
  std::atomic<std::uint64_t> inserted{0};
  std::atomic<std::uint64_t> retried{0};
  std::atomic<int> failures{0};
  auto run = [&](pg::Connection& conn, const std::vector<std::vector<TestEvent>>& mine) {
    const std::vector<core::MeterSpec> ms = specs();
    std::vector<core::EventBatch> prepared;
    for (const auto& b : mine) {
      prepared.push_back(make_batch(b));
    }
    ++ready;
    while (ready.load() < 2) {
    }
    for (const core::EventBatch& b : prepared) {
      const std::vector<std::uint32_t> idx = all_indices(b);
      auto w = write_events(conn, b, idx, ms, kT0);
      if (!w) {
        ADD_FAILURE() << w.error().to_string();
        ++failures;
        continue;
      }
      inserted += w->inserted;
      retried += w->attempts - 1;
    }
  };
  std::thread t1(run, std::ref(*c1), std::cref(batches));
  std::thread t2(run, std::ref(*c2), std::cref(reversed));
  t1.join();
  t2.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(inserted.load(), 2000u);
  EXPECT_EQ(scalar("SELECT count(*) FROM events"), "2000");
  EXPECT_EQ(scalar("SELECT count(DISTINCT (customer_id, event_id)) FROM events"), "2000");
  check_all_aggregates();
  // And the totals equal what the events add up to in memory, whoever stored each.
  core::Decimal tokens;
  std::int64_t calls = 0;
  for (const TestEvent& e : events) {
    for (const TestProp& p : e.props) {
      if (p.key == "tokens" && p.kind == PropKind::kNumber) {
        tokens += *core::parse_decimal(p.text);
      }
    }
    calls += e.type == "api" ? e.quantity : 0;
  }
  EXPECT_EQ(scalar("SELECT sum(sum) = $1::numeric FROM aggregates_hour WHERE meter = 'tokens'",
                   {core::format_decimal(tokens)}),
            "t");
  EXPECT_EQ(scalar("SELECT sum(sum)::bigint FROM aggregates_minute WHERE meter = 'calls'"),
            std::to_string(calls));
  std::printf(
      "two writers: %llu transactions run again after a deadlock or serialization "
      "failure\n",
      static_cast<unsigned long long>(retried.load()));
}

// ---- failures ---------------------------------------------------------------------------------

TEST_F(ClusterPgTest, ABatchBreakingAConstraintWritesNothing) {
  std::vector<TestEvent> events = random_events(200, 3, 10, 3, "x");
  events[150].type = "api";
  events[150].quantity = 0;  // events.quantity >= 1
  auto w = write(*conn_, events);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), StatusCode::kUnprocessable) << w.error().to_string();
  EXPECT_EQ(pg::sqlstate(w.error()), "23514");
  EXPECT_EQ(scalar("SELECT count(*) FROM events"), "0");
  EXPECT_EQ(scalar("SELECT count(*) FROM aggregates_minute"), "0");
}

TEST_F(ClusterPgTest, AnAggregateOutOfRangeRollsBackTheEventsToo) {
  // The events insert fine; the minute's sum (12 x 9e27) is past numeric(38, 9).
  std::vector<TestEvent> events;
  for (int i = 0; i < 12; ++i) {
    events.push_back({"acme",
                      "big-" + std::to_string(i),
                      "llm",
                      kT0,
                      {{"tokens", "9000000000000000000000000000", PropKind::kNumber}}});
  }
  events.push_back({"acme", "small", "api", kT0, {}, 1});
  auto w = write(*conn_, events);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(pg::sqlstate(w.error()), "22003") << w.error().to_string();
  EXPECT_EQ(w.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(scalar("SELECT count(*) FROM events"), "0");
  EXPECT_EQ(scalar("SELECT count(*) FROM aggregates_minute"), "0");
  // The staging tables outlive the rollback (they are made once per connection), empty.
  EXPECT_EQ(scalar("SELECT (SELECT count(*) FROM tally_stage_events) + "
                   "(SELECT count(*) FROM tally_stage_aggregates)"),
            "0");
  // The connection is still good, and the events without the big ones go in.
  events.erase(events.begin(), events.begin() + 11);
  auto ok = write(*conn_, events);
  ASSERT_TRUE(ok.has_value()) << ok.error().to_string();
  EXPECT_EQ(ok->inserted, 2u);
}

TEST_F(ClusterPgTest, AConnectionLostInTheMiddleWritesNothing) {
  // Another session holds aggregates_hour, so the writer stops after its events and minutes;
  // then its backend is terminated.
  const std::vector<TestEvent> events = random_events(500, 4, 30, 11, "m");
  auto locker = connect();
  auto killer = connect();
  auto writer = connect();
  ASSERT_TRUE(locker && killer && writer);
  ASSERT_TRUE(locker->exec("BEGIN").has_value());
  ASSERT_TRUE(locker->exec("LOCK TABLE aggregates_hour IN ACCESS EXCLUSIVE MODE").has_value());
  Result<EventWriteResult> w = Status::internal("not run");
  std::thread t([&] { w = write(*writer, events); });
  const bool blocked = wait_until_blocked(*killer, writer->backend_pid());
  EXPECT_TRUE(blocked);
  // Its events are in, not committed.
  auto terminated =
      killer->exec("SELECT pg_terminate_backend($1::int)", {std::to_string(writer->backend_pid())});
  ASSERT_TRUE(terminated.has_value()) << terminated.error().to_string();
  t.join();
  ASSERT_TRUE(locker->exec("ROLLBACK").has_value());
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), StatusCode::kUnavailable) << w.error().to_string();
  EXPECT_FALSE(writer->alive());
  EXPECT_EQ(scalar("SELECT count(*) FROM events"), "0");
  EXPECT_EQ(scalar("SELECT count(*) FROM aggregates_minute"), "0");
  // Writing the batch again on a new connection stores it whole.
  auto again = write(*conn_, events);
  ASSERT_TRUE(again.has_value()) << again.error().to_string();
  EXPECT_EQ(again->inserted, 500u);
  check_all_aggregates();
}

TEST_F(ClusterPgTest, ADeadlockRunsTheWholeTransactionAgain) {
  // Rows X (an hour) and Y (a minute) exist; another session locks X; the writer locks Y and
  // waits for X; the other session then waits for Y. PostgreSQL breaks the deadlock by failing
  // the writer (which waited first, and whose deadlock_timeout is the shorter: the deadlock is
  // looked for once per waiter, when its timeout ends), which runs its transaction again.
  const TestEvent seed{"acme", "seed", "api", kT0, {}, 1};
  ASSERT_TRUE(write(*conn_, {seed}).has_value());
  auto other = connect();
  auto watcher = connect();
  auto writer = connect();
  ASSERT_TRUE(other && watcher && writer);
  ASSERT_TRUE(other->exec("SET deadlock_timeout = '20s'").has_value());
  ASSERT_TRUE(writer->exec("SET deadlock_timeout = '500ms'").has_value());
  ASSERT_TRUE(other->exec("BEGIN").has_value());
  ASSERT_TRUE(
      other->exec("UPDATE aggregates_hour SET count = count WHERE meter = 'calls'").has_value());
  Result<EventWriteResult> w = Status::internal("not run");
  std::thread t([&] { w = write(*writer, {{"acme", "next", "api", kT0 + 1, {}, 2}}); });
  EXPECT_TRUE(wait_until_blocked(*watcher, writer->backend_pid()));
  // Blocks on the writer's minute row until the writer is chosen as the victim.
  auto updated = other->exec("UPDATE aggregates_minute SET count = count WHERE meter = 'calls'");
  EXPECT_TRUE(updated.has_value()) << updated.error().to_string();
  ASSERT_TRUE(other->exec("COMMIT").has_value());
  t.join();
  ASSERT_TRUE(w.has_value()) << w.error().to_string();
  EXPECT_EQ(w->attempts, 2u);
  EXPECT_EQ(w->inserted, 1u);
  EXPECT_EQ(scalar("SELECT sum || ' ' || count FROM aggregates_hour WHERE meter = 'calls'"),
            "3.000000000 2");
  check_aggregates(meters_sql()[0], "aggregates_minute", "1 minute");
}

TEST_F(ClusterPgTest, RetriesAreBounded) {
  // With one attempt allowed, the deadlock's failure is the answer, and nothing is written.
  const TestEvent seed{"acme", "seed", "api", kT0, {}, 1};
  ASSERT_TRUE(write(*conn_, {seed}).has_value());
  auto other = connect();
  auto watcher = connect();
  auto writer = connect();
  ASSERT_TRUE(other && watcher && writer);
  ASSERT_TRUE(other->exec("SET deadlock_timeout = '20s'").has_value());
  ASSERT_TRUE(writer->exec("SET deadlock_timeout = '500ms'").has_value());
  ASSERT_TRUE(other->exec("BEGIN").has_value());
  ASSERT_TRUE(
      other->exec("UPDATE aggregates_hour SET count = count WHERE meter = 'calls'").has_value());
  Result<EventWriteResult> w = Status::internal("not run");
  EventWriteOptions once;
  once.attempts_max = 1;
  std::thread t([&] { w = write(*writer, {{"acme", "next", "api", kT0 + 1, {}, 2}}, once); });
  EXPECT_TRUE(wait_until_blocked(*watcher, writer->backend_pid()));
  ASSERT_TRUE(
      other->exec("UPDATE aggregates_minute SET count = count WHERE meter = 'calls'").has_value());
  t.join();
  ASSERT_TRUE(other->exec("COMMIT").has_value());
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), StatusCode::kUnavailable);
  EXPECT_EQ(pg::sqlstate(w.error()), "40P01") << w.error().to_string();
  EXPECT_EQ(scalar("SELECT count(*) FROM events"), "1");
}

TEST_F(ClusterPgTest, InputRefusedBeforeSendingAndEdgeCases) {
  const core::EventBatch b = make_batch({{"acme", "a", "api", kT0, {}, 1}});
  const std::vector<core::MeterSpec> ms = specs();
  const std::vector<std::uint32_t> out_of_range = {0, 1};
  auto w = write_events(*conn_, b, out_of_range, ms, kT0);
  ASSERT_FALSE(w.has_value());
  EXPECT_EQ(w.error().code(), StatusCode::kInvalidArgument);
  auto nul = write(
      *conn_, {{"acme", "n", "llm", kT0, {{"model", std::string("g\0p", 3), PropKind::kString}}}});
  ASSERT_FALSE(nul.has_value());
  EXPECT_EQ(nul.error().code(), StatusCode::kInvalidArgument);
  // More than kWriteEventsMax.
  const std::vector<std::uint32_t> too_many(kWriteEventsMax + 1, 0);
  auto large = write_events(*conn_, b, too_many, ms, kT0);
  ASSERT_FALSE(large.has_value());
  EXPECT_EQ(large.error().code(), StatusCode::kPayloadTooLarge);
  EXPECT_EQ(scalar("SELECT count(*) FROM events"), "0");
  // The same index twice is the same event twice: the second is a duplicate.
  const std::vector<std::uint32_t> twice = {0, 0};
  auto dup = write_events(*conn_, b, twice, ms, kT0);
  ASSERT_TRUE(dup.has_value()) << dup.error().to_string();
  EXPECT_EQ(dup->outcomes,
            (std::vector<EventOutcome>{EventOutcome::kInserted, EventOutcome::kDuplicate}));
  EXPECT_EQ(scalar("SELECT sum FROM aggregates_minute WHERE meter = 'calls'"), "1.000000000");
  // An empty write is a successful nothing.
  auto empty = write_events(*conn_, b, {}, ms, kT0);
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->inserted, 0u);
  EXPECT_EQ(empty->attempts, 0u);
}

// ---- reads ------------------------------------------------------------------------------------

// The state of meter m over [from, to) (minute-aligned), fed in memory from the events.
struct Expected {
  core::AggState state;
  core::UniqueSet uniques;
};

Expected expect(const core::MeterSpec& m, const core::EventBatch& b,
                const std::vector<std::int64_t>& seqs, core::TimeUs from, core::TimeUs to,
                const std::optional<std::string>& group = std::nullopt) {
  Expected out;
  core::MeterInput in;
  std::string g;
  for (std::uint32_t i = 0; i < b.size(); ++i) {
    const core::Event& e = b.events()[i];
    const core::TimeUs minute = core::floor_to(e.time_us, core::kUsPerMinute);
    if (seqs[i] == 0 || b.text(e.customer) != "cust-0" || minute < from || minute >= to ||
        !core::meter_accepts(m, b, e, &in, &g) || (group && g != *group)) {
      continue;
    }
    out.state.add(in.value, e.time_us, static_cast<std::uint64_t>(seqs[i]));
    if (m.aggregation == core::Aggregation::kUniqueCount) {
      out.uniques.insert(std::string(in.unique));
    }
  }
  return out;
}

TEST_F(ClusterPgTest, ReadUsageOverRangesThatCutHours) {
  // Four hours of events from 10:00.
  const std::vector<TestEvent> events = random_events(4000, 3, 240, 5, "r");
  const core::EventBatch b = make_batch(events);
  const std::vector<core::MeterSpec> ms = specs();
  const std::vector<std::uint32_t> idx = all_indices(b);
  auto w = write_events(*conn_, b, idx, ms, kT0);
  ASSERT_TRUE(w.has_value()) << w.error().to_string();
  ASSERT_EQ(w->inserted, 4000u);

  const core::TimeUs m = core::kUsPerMinute;
  const core::TimeUs h = core::kUsPerHour;

  struct Range {
    core::TimeUs from;
    core::TimeUs to;
  };

  const std::vector<Range> ranges = {
      {kT0 + 17 * m, kT0 + 2 * h + 43 * m},        // cuts hours at both ends
      {kT0 + 5 * m, kT0 + 20 * m},                 // inside one hour
      {kT0 + 50 * m, kT0 + h + 10 * m},            // across one hour boundary, no whole hour
      {kT0 + h, kT0 + 3 * h},                      // whole hours only
      {kT0 - 2 * h, kT0 + 10 * h},                 // wider than the data
      {kT0 + 17 * m + 1234567, kT0 + 61 * m + 1},  // unaligned: widened to whole minutes
  };
  for (const MeterSql& msql : meters_sql()) {
    const core::MeterSpec& spec = msql.spec;
    for (const Range& r : ranges) {
      UsageQuery q;
      q.customer = "cust-0";
      q.from_us = r.from;
      q.to_us = r.to;
      auto u = read_usage(*conn_, spec, q);
      ASSERT_TRUE(u.has_value()) << u.error().to_string();
      const core::TimeUs from = core::floor_to(r.from, m);
      const core::TimeUs to = core::ceil_to(r.to, m);
      EXPECT_EQ(u->from_us, from);
      EXPECT_EQ(u->to_us, to);
      const Expected e = expect(spec, b, w->seqs, from, to);
      EXPECT_EQ(u->state, e.state) << spec.key << " [" << core::format_rfc3339(from) << ", "
                                   << core::format_rfc3339(to) << ")";
      EXPECT_EQ(u->uniques, e.uniques) << spec.key;
      core::Decimal v;
      const bool has = core::aggregate_value(spec.aggregation, e.state, &e.uniques, &v);
      EXPECT_EQ(u->value, has ? core::format_decimal(v) : "") << spec.key;
    }
  }
  EXPECT_NE(expect(ms[1], b, w->seqs, kT0 + 17 * m, kT0 + 2 * h + 43 * m).state.count, 0);

  // One group, and buckets by minute, hour and UTC day, each equal to its own range.
  const core::MeterSpec& tokens = ms[1];
  UsageQuery q;
  q.customer = "cust-0";
  q.group_key = std::string(
      "gpt\x1f"
      "eu");
  q.from_us = kT0 + 17 * m;
  q.to_us = kT0 + 2 * h + 43 * m;
  auto one = read_usage(*conn_, tokens, q);
  ASSERT_TRUE(one.has_value()) << one.error().to_string();
  const Expected e = expect(tokens, b, w->seqs, q.from_us, q.to_us, q.group_key);
  EXPECT_EQ(one->state, e.state);
  EXPECT_GT(one->state.count, 0);
  const std::vector<MeterSql> all = meters_sql();
  const MeterSql& users = all.back();
  for (UsageBuckets buckets : {UsageBuckets::kMinute, UsageBuckets::kHour, UsageBuckets::kDay}) {
    for (const core::MeterSpec* spec : {&tokens, &users.spec}) {
      UsageQuery bq = q;
      bq.group_key.reset();
      bq.buckets = buckets;
      auto u = read_usage(*conn_, *spec, bq);
      ASSERT_TRUE(u.has_value()) << u.error().to_string();
      ASSERT_FALSE(u->buckets.empty());
      core::AggState merged;
      for (const UsageBucket& bucket : u->buckets) {
        const Expected be = expect(*spec, b, w->seqs, std::max(bucket.start_us, bq.from_us),
                                   std::min(bucket.end_us, bq.to_us));
        EXPECT_EQ(bucket.state, be.state) << spec->key << " " << bucket.start_us;
        EXPECT_EQ(bucket.uniques, be.uniques) << spec->key;
        core::Decimal v;
        ASSERT_TRUE(core::aggregate_value(spec->aggregation, be.state, &be.uniques, &v));
        EXPECT_EQ(bucket.value, core::format_decimal(v));
        merged.merge(bucket.state);
      }
      EXPECT_EQ(merged, u->state);
      const std::size_t expected_buckets = buckets == UsageBuckets::kDay    ? 1
                                           : buckets == UsageBuckets::kHour ? 3
                                                                            : 0;
      if (expected_buckets != 0) {
        EXPECT_EQ(u->buckets.size(), expected_buckets) << spec->key;
      } else {
        EXPECT_GT(u->buckets.size(), 60u);
      }
    }
  }

  // Nothing there: an empty state; count reads 0, min no value.
  UsageQuery none;
  none.customer = "nobody";
  none.from_us = kT0;
  none.to_us = kT0 + h;
  auto empty = read_usage(*conn_, ms[0], none);
  ASSERT_TRUE(empty.has_value());
  EXPECT_EQ(empty->value, "0");
  EXPECT_TRUE(empty->state.empty());
  auto no_min = read_usage(*conn_, ms[2], none);
  ASSERT_TRUE(no_min.has_value());
  EXPECT_EQ(no_min->value, "");
  none.to_us = none.from_us;
  auto bad = read_usage(*conn_, ms[0], none);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kInvalidArgument);
}

// ---- throughput -------------------------------------------------------------------------------

TEST_F(ClusterPgTest, TenThousandEventBatchThroughput) {
  const std::vector<TestEvent> events = random_events(10'000, 50, 60, 99, "t");
  const core::EventBatch b = make_batch(events);
  const std::vector<core::MeterSpec> ms = specs();
  const std::vector<std::uint32_t> idx = all_indices(b);
  const auto start = std::chrono::steady_clock::now();
  auto w = write_events(*conn_, b, idx, ms, kT0);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(w.has_value()) << w.error().to_string();
  EXPECT_EQ(w->inserted, 10'000u);
  std::printf(
      "a batch of 10,000 events (%zu meters; %llu minute, %llu hour and %llu distinct "
      "value rows) written in %.3f s: %.0f events/s\n",
      ms.size(), static_cast<unsigned long long>(w->minute_rows),
      static_cast<unsigned long long>(w->hour_rows),
      static_cast<unsigned long long>(w->unique_rows), seconds, 10'000 / seconds);
  EXPECT_EQ(scalar("SELECT count(*) FROM events"), "10000");
}

// Batches of 1,000 events on one connection, as a node writes them (the staging tables are
// created by the first and reused by the others): every batch is written whole, and the time per
// batch is printed.
TEST_F(ClusterPgTest, ThousandEventBatchesOnOneConnection) {
  const std::vector<core::MeterSpec> ms = specs();
  constexpr int kBatches = 30;
  std::vector<core::EventBatch> batches;
  for (int i = 0; i < kBatches; ++i) {
    batches.push_back(make_batch(random_events(1'000, 50, 60, 500 + static_cast<std::uint64_t>(i),
                                               "k" + std::to_string(i) + "-")));
  }
  const std::vector<std::uint32_t> idx = all_indices(batches.front());
  const auto start = std::chrono::steady_clock::now();
  for (const core::EventBatch& b : batches) {
    auto w = write_events(*conn_, b, idx, ms, kT0);
    ASSERT_TRUE(w.has_value()) << w.error().to_string();
    ASSERT_EQ(w->inserted, 1'000u);
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(scalar("SELECT count(*) FROM events"), std::to_string(kBatches * 1'000));
  // Each commit emptied the staging tables: no batch's rows were counted again by the next.
  check_all_aggregates();
  EXPECT_EQ(scalar("SELECT (SELECT count(*) FROM tally_stage_events) + "
                   "(SELECT count(*) FROM tally_stage_aggregates) + "
                   "(SELECT count(*) FROM tally_stage_uniques)"),
            "0");
  std::printf("%d batches of 1,000 events on one connection: %.1f ms per batch\n", kBatches,
              seconds * 1000 / kBatches);
}

// ---- charges, the in-transaction hook, wallets (pg_wallets.h) ---------------------------------

TEST_F(ClusterPgTest, ChargesAndTheHookGoWithTheInsertedEventsOnly) {
  const std::vector<std::optional<EventCharge>> two = {
      EventCharge{core::Decimal::from_int(2), core::Decimal::from_int(200)}, std::nullopt};
  std::vector<bool> seen;
  EventWriteOptions o;
  o.charges = two;
  o.in_transaction = [&](pg::Connection&, const std::vector<bool>& inserted) {
    seen = inserted;
    return Status();
  };
  ASSERT_TRUE(write(*conn_, {{"acme", "a", "api", kT0, {}}, {"acme", "b", "api", kT0, {}}}, o));
  EXPECT_EQ(seen, (std::vector<bool>{true, true}));
  EXPECT_EQ(scalar("SELECT string_agg(event_id || '=' || coalesce(cost::text, '-') || '/' || "
                   "coalesce(credits::text, '-'), ',' ORDER BY event_id) FROM events"),
            "a=2.000000000/200.000000000,b=-/-");
  // Sent again with a new one: the hook hears that only the new one was inserted.
  const std::vector<std::optional<EventCharge>> three = {std::nullopt, std::nullopt, std::nullopt};
  o.charges = three;
  ASSERT_TRUE(write(
      *conn_,
      {{"acme", "a", "api", kT0, {}}, {"acme", "b", "api", kT0, {}}, {"acme", "c", "api", kT0, {}}},
      o));
  EXPECT_EQ(seen, (std::vector<bool>{false, false, true}));
  EXPECT_EQ(scalar("SELECT cost::text FROM events WHERE event_id = 'a'"), "2.000000000");
  // The hook's failure rolls the whole write back.
  o.charges = {};
  o.in_transaction = [](pg::Connection&, const std::vector<bool>&) {
    return Status::internal("the hook refuses");
  };
  auto refused = write(*conn_, {{"acme", "d", "api", kT0, {}}}, o);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().message(), "the hook refuses");
  EXPECT_EQ(scalar("SELECT count(*) FROM events WHERE event_id = 'd'"), "0");
  // Charges of another length than the events are refused before sending.
  o.in_transaction = nullptr;
  o.charges = two;
  auto mismatched = write(*conn_, {{"acme", "e", "api", kT0, {}}}, o);
  ASSERT_FALSE(mismatched.has_value());
  EXPECT_EQ(mismatched.error().code(), StatusCode::kInvalidArgument);
}

TEST_F(ClusterPgTest, WalletRowsAndTheLedgerRoundTrip) {
  ASSERT_TRUE(conn_->exec("BEGIN"));
  auto states = lock_wallets(*conn_, {"acme", "zed"});
  ASSERT_TRUE(states.has_value()) << states.error().to_string();
  EXPECT_EQ(*states, (std::vector<std::string>{"", ""}));
  auto seqs = draw_ledger_seqs(*conn_, 2);
  ASSERT_TRUE(seqs.has_value());
  ASSERT_EQ(seqs->size(), 2u);
  EXPECT_LT((*seqs)[0], (*seqs)[1]);
  LedgerRow grant;
  grant.customer = "acme";
  grant.seq = (*seqs)[0];
  grant.type = LedgerType::kTopUp;
  grant.amount = core::Decimal::from_int(10);
  grant.after = grant.amount;
  grant.grant_seq = grant.seq;
  grant.created_at_us = kT0;
  LedgerRow burn = grant;
  burn.seq = (*seqs)[1];
  burn.type = LedgerType::kBurn;
  burn.amount = core::Decimal::from_int(-3);
  burn.before = grant.after;
  burn.after = core::Decimal::from_int(7);
  burn.grant_seq = 0;
  burn.event_id = "e1";
  ASSERT_TRUE(insert_ledger(*conn_, {grant, burn}).ok());
  const std::string bytes("\x00\x01\xff state", 9);
  ASSERT_TRUE(
      store_wallets(*conn_, {WalletWrite{"acme", core::Decimal::from_int(7), burn.seq, bytes}})
          .ok());
  ASSERT_TRUE(conn_->exec("COMMIT"));
  auto state = read_wallet_state(*conn_, "acme");
  ASSERT_TRUE(state.has_value());
  EXPECT_EQ(*state, bytes);
  EXPECT_EQ(read_wallet_balance(*conn_, "acme")->units, core::Decimal::from_int(7).units);
  EXPECT_EQ(read_wallet_balance(*conn_, "nobody")->units, 0);
  auto rows = read_ledger(*conn_, "acme", 0, std::nullopt, 0, 0, 10);
  ASSERT_TRUE(rows.has_value()) << rows.error().to_string();
  ASSERT_EQ(rows->size(), 2u);
  EXPECT_EQ((*rows)[0].type, LedgerType::kTopUp);  // stored as 'topup', read back
  EXPECT_EQ((*rows)[1].event_id, "e1");
  EXPECT_EQ((*rows)[1].before.units, (*rows)[0].after.units);
  auto burns = read_ledger(*conn_, "acme", 0, LedgerType::kBurn, 0, 0, 10);
  ASSERT_TRUE(burns.has_value());
  EXPECT_EQ(burns->size(), 1u);
  // A second burn of the same event is refused (ledger_burn_once).
  ASSERT_TRUE(conn_->exec("BEGIN"));
  burn.seq = (*draw_ledger_seqs(*conn_, 1))[0];
  Status again = insert_ledger(*conn_, {burn});
  EXPECT_EQ(again.code(), StatusCode::kAlreadyExists) << again.to_string();
  ASSERT_TRUE(conn_->exec("ROLLBACK"));
}

}  // namespace
}  // namespace tally::cluster
