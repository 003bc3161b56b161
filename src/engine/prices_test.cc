// Price versions and re-rating in the engine, on a fake clock: a price changed twice across
// restarts (verify passes, late events priced as of their time), versions scheduled with
// effective_from (a boundary, a time zone, a restart), a removed price keeping its history,
// re-rating against a brute-force recomputation and its refusals, and verify failing on a
// corrupted version; undecodable price records stop the open.
#include <map>
#include <random>

#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

#include "core/decimal.h"
#include "core/time.h"
#include "engine/codec.h"
#include "engine/engine_test_util.h"
#include "store/store.h"

namespace tally {
namespace {

TimeUs at(const char* rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

// 1 credit = 0.01 USD; `price` is the USD price of one call; `extra` adds entries.
std::string config(const std::string& price, const std::string& extra = "") {
  return R"(
[credits]
per_currency_unit = 100

[[meters]]
key = "calls"
event_type = "call"
aggregation = "count"

[[meters]]
key = "gb"
event_type = "storage"
aggregation = "sum"
value = "$.gb"

[[prices]]
meter = "calls"
unit_price = ")" +
         price + R"("
)" + extra;
}

constexpr const char* kGraduated = R"(
[[prices]]
meter = "gb"
model = "graduated"
tiers = [{ up_to = 10, unit_price = "1" }, { unit_price = "0.5" }]
)";

class PricesTest : public EngineDirTest {
 protected:
  PricesTest() : EngineDirTest("tally-prices-", at("2025-03-10T12:00:00Z")) {}

  static void ingest(Engine& e, const std::string& body) {
    auto r = e.ingest_json(body);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    EXPECT_EQ(r->rejected, 0u) << (r->errors.empty() ? "" : r->errors[0].message);
  }

  static std::string call(const std::string& id, const std::string& time) {
    return R"({"id":")" + id + R"(","customer":"acme","type":"call","time":")" + time + "\"}";
  }

  // The credits of each event, in event order.
  static std::map<std::string, std::string> credits(Engine& e) {
    e.flush();
    EventListQuery q;
    q.customer = "acme";
    q.limit = 1000;
    auto page = e.list_events(q);
    EXPECT_TRUE(page.has_value());
    std::map<std::string, std::string> out;
    for (const auto& ev : page ? page->events : std::vector<StoredEvent>{}) {
      out[ev.id] = ev.credits;
    }
    return out;
  }

  static void expect_verified(Engine& e) {
    e.flush();
    auto v = e.verify();
    ASSERT_TRUE(v.has_value()) << v.error().message();
    EXPECT_TRUE(v->ok()) << v->differences.front();
  }

  void create_acme(Engine& e) {
    Customer c;
    c.id = "acme";
    c.billing_anchor_us = at("2025-03-01T00:00:00Z");
    ASSERT_TRUE(e.create_customer(c).has_value());
  }
};

TEST_F(PricesTest, APriceChangedTwiceAcrossRestartsPricesEachEventByItsTimeAndVerifies) {
  {
    auto e = open_engine(config("0.01"));
    create_acme(*e);
    ingest(*e, call("a", "2025-03-10T11:00:00Z"));
    expect_verified(*e);
  }
  clock_.set_us(at("2025-03-11T12:00:00Z"));
  {
    auto e = open_engine(config("0.02"));
    ingest(*e, call("b", "2025-03-11T12:00:00Z"));
    // A late event from before the change is priced by the version of its time.
    ingest(*e, call("late", "2025-03-11T09:00:00Z"));
    expect_verified(*e);
  }
  clock_.set_us(at("2025-03-12T12:00:00Z"));
  auto e = open_engine(config("0.03"));
  ingest(*e, call("c", "2025-03-12T12:00:00Z"));
  ingest(*e, call("late2", "2025-03-11T18:00:00Z"));
  EXPECT_EQ(credits(*e), (std::map<std::string, std::string>{
                             {"a", "1"}, {"b", "2"}, {"late", "1"}, {"c", "3"}, {"late2", "2"}}));
  EXPECT_EQ(e->wallet("acme")->balance, "-9");
  expect_verified(*e);

  // GET /v1/prices: one price, three versions, the last in effect.
  const auto prices = e->prices();
  ASSERT_EQ(prices.size(), 1u);
  EXPECT_EQ(prices[0].id, "calls#0");
  ASSERT_EQ(prices[0].versions.size(), 3u);
  EXPECT_EQ(prices[0].versions[0].effective_from_us, INT64_MIN);
  EXPECT_EQ(prices[0].versions[0].unit_price, "0.01");
  EXPECT_EQ(prices[0].versions[1].effective_from_us, at("2025-03-11T12:00:00Z"));
  EXPECT_EQ(prices[0].versions[2].unit_price, "0.03");
  EXPECT_TRUE(prices[0].versions[2].in_effect);
  EXPECT_FALSE(prices[0].versions[1].in_effect);

  // Starting again with the same configuration adds nothing.
  e.reset();
  clock_.set_us(at("2025-03-13T12:00:00Z"));
  e = open_engine(config("0.03"));
  EXPECT_EQ(e->prices()[0].versions.size(), 3u);
  expect_verified(*e);
}

TEST_F(PricesTest, AScheduledVersionTakesEffectAtItsInstantInAnyTimeZone) {
  // From 1 April 00:00 in UTC+2 (31 March 22:00 UTC), a call costs 0.05. Now is 5 April.
  clock_.set_us(at("2025-04-05T00:00:00Z"));
  auto e = open_engine(config("0.01", R"(
[[prices]]
meter = "calls"
unit_price = "0.05"
effective_from = "2025-04-01T00:00:00+02:00"
)"));
  create_acme(*e);
  ingest(*e, call("before", "2025-03-31T21:59:59.999999Z"));
  ingest(*e, call("boundary", "2025-03-31T22:00:00Z"));
  ingest(*e, call("after", "2025-04-02T00:00:00Z"));
  EXPECT_EQ(credits(*e), (std::map<std::string, std::string>{
                             {"before", "1"}, {"boundary", "5"}, {"after", "5"}}));
  expect_verified(*e);
  const auto prices = e->prices();
  ASSERT_EQ(prices[0].versions.size(), 2u);
  EXPECT_EQ(prices[0].versions[1].effective_from_us, at("2025-03-31T22:00:00Z"));
  EXPECT_TRUE(prices[0].versions[1].in_effect);
  EXPECT_FALSE(prices[0].versions[0].in_effect);
}

TEST_F(PricesTest, ARemovedPriceKeepsItsHistoryAndChargesNothingAfter) {
  {
    auto e = open_engine(config("0.01", kGraduated));
    create_acme(*e);
    ingest(*e, R"({"id":"s1","customer":"acme","type":"storage","properties":{"gb":4}})");
    ingest(*e, call("a", "2025-03-10T11:00:00Z"));
  }
  clock_.set_us(at("2025-03-11T12:00:00Z"));
  auto e = open_engine(config("0.01"));  // the gb price is gone
  ingest(*e, R"({"id":"s2","customer":"acme","type":"storage","properties":{"gb":4}})");
  const auto c = credits(*e);
  EXPECT_EQ(c.at("s1"), "400");
  EXPECT_EQ(c.at("s2"), "") << "not priced: its price ended";
  const auto prices = e->prices();
  ASSERT_EQ(prices.size(), 2u);
  EXPECT_EQ(prices[1].id, "gb#0");
  EXPECT_FALSE(prices[1].configured);
  ASSERT_EQ(prices[1].versions.size(), 2u);
  EXPECT_TRUE(prices[1].versions[1].ended);
  expect_verified(*e);

  // The priced meter itself removed: its events' charges stand, its price's history stays.
  e.reset();
  clock_.set_us(at("2025-03-12T12:00:00Z"));
  e = open_engine(R"(
[credits]
per_currency_unit = 100

[[meters]]
key = "calls"
event_type = "call"
aggregation = "count"

[[prices]]
meter = "calls"
unit_price = "0.01"
)");
  const auto kept = e->prices();
  ASSERT_EQ(kept.size(), 2u);
  EXPECT_EQ(kept[1].id, "gb#0");
  EXPECT_EQ(kept[1].versions.size(), 2u) << "already ended: nothing added";
  EXPECT_EQ(e->wallet("acme")->balance, "-401");
  expect_verified(*e);
}

TEST_F(PricesTest, RerateWritesOneAdjustmentPerPeriodEqualToABruteForceRecomputation) {
  // Random calls and storage over two billing periods, priced at 0.01 a call and graduated GB.
  std::mt19937_64 rng(7);

  struct Ev {
    std::string id;
    bool call;
    int gb;
    TimeUs time;
  };

  std::vector<Ev> events;
  clock_.set_us(at("2025-03-28T00:00:00Z"));  // after every event
  {
    auto e = open_engine(config("0.01", kGraduated));
    create_acme(*e);
    for (int i = 0; i < 60; ++i) {
      Ev ev{"e" + std::to_string(i), rng() % 2 == 0, static_cast<int>(rng() % 5),
            at("2025-02-05T00:00:00Z") + static_cast<TimeUs>(rng() % (50 * 86400)) * 1'000'000};
      events.push_back(ev);
      ingest(*e, ev.call
                     ? call(ev.id, core::format_rfc3339(ev.time))
                     : R"({"id":")" + ev.id + R"(","customer":"acme","type":"storage","time":")" +
                           core::format_rfc3339(ev.time) + R"(","properties":{"gb":)" +
                           std::to_string(ev.gb) + "}}");
    }
  }
  // A back-dated change: from 1 March a call costs 0.04 and GB tiers change. Commits after the
  // change use it; the events already priced keep their charge until re-rated.
  clock_.set_us(at("2025-04-01T00:00:00Z"));
  const std::string changed = config("0.01", std::string(kGraduated) + R"(
[[prices]]
meter = "calls"
unit_price = "0.04"
effective_from = "2025-03-01T00:00:00Z"

[[prices]]
meter = "gb"
model = "graduated"
tiers = [{ up_to = 5, unit_price = "2" }, { unit_price = "1" }]
effective_from = "2025-03-01T00:00:00Z"
)");
  auto e = open_engine(changed);
  expect_verified(*e);
  const std::string balance_before = e->wallet("acme")->balance;

  // Brute force: the credits of every event under the new versions, in commit order, tiers
  // counted per billing period (from the 1st), and per period the difference of the range.
  const TimeUs from = at("2025-03-01T00:00:00Z");
  const TimeUs to = at("2025-04-01T00:00:00Z");
  std::map<TimeUs, int> gb_used;  // period start -> GB so far
  auto period_of = [](TimeUs t) {
    return t < at("2025-03-01T00:00:00Z") ? at("2025-02-01T00:00:00Z") : at("2025-03-01T00:00:00Z");
  };
  auto graduated = [](int before, int gb, bool new_tiers) {
    auto cost = [&](int units) {
      const int bound = new_tiers ? 5 : 10;
      const double low = new_tiers ? 2 : 1;
      const double high = new_tiers ? 1 : 0.5;
      return units <= bound ? units * low : bound * low + (units - bound) * high;
    };
    return cost(before + gb) - cost(before);
  };
  std::map<TimeUs, double> difference;
  std::map<std::string, double> old_credits;
  for (const auto& ev : events) {
    const bool now_new = ev.time >= from;
    double before = 0;
    double after = 0;
    if (ev.call) {
      before = 1;
      after = now_new ? 4 : 1;
    } else {
      int& used = gb_used[period_of(ev.time)];
      before = 100 * graduated(used, ev.gb, false);
      after = 100 * graduated(used, ev.gb, now_new);
      used += ev.gb;
    }
    if (ev.time >= from && ev.time < to) {
      difference[period_of(ev.time)] += after - before;
    }
  }
  double expected = 0;
  for (const auto& [p, d] : difference)
    expected += d;
  ASSERT_NE(expected, 0) << "the change must matter for the test to mean anything";

  RepriceRequest req;
  req.customer = "acme";
  req.from_us = from;
  req.to_us = to;
  req.dry_run = true;
  auto dry = e->reprice(req);
  ASSERT_TRUE(dry.has_value()) << dry.error().message();
  EXPECT_EQ(e->wallet("acme")->balance, balance_before) << "a dry run writes nothing";
  req.dry_run = false;
  auto done = e->reprice(req);
  ASSERT_TRUE(done.has_value()) << done.error().message();
  ASSERT_EQ(done->periods.size(), expected != 0 ? 1u : 0u);
  ASSERT_EQ(dry->periods.size(), done->periods.size());
  if (!done->periods.empty()) {
    EXPECT_EQ(done->periods[0].start_us, from);
    EXPECT_EQ(done->periods[0].difference, dry->periods[0].difference);
    EXPECT_EQ(std::stod(done->periods[0].difference), expected);
    EXPECT_FALSE(done->periods[0].transaction_id.empty());
    EXPECT_TRUE(dry->periods[0].transaction_id.empty());
  }
  EXPECT_EQ(std::stod(e->wallet("acme")->balance), std::stod(balance_before) - expected)
      << "the balance stays the sum of the ledger";
  LedgerQuery lq;
  lq.customer = "acme";
  lq.type = LedgerType::kAdjustment;
  lq.limit = 100;
  auto adjustments = e->wallet_transactions(lq);
  ASSERT_TRUE(adjustments.has_value());
  ASSERT_EQ(adjustments->transactions.size(), done->periods.size());
  if (!adjustments->transactions.empty()) {
    EXPECT_EQ(adjustments->transactions[0].period_start_us, from);
  }
  expect_verified(*e);

  // Again: nothing left to change.
  auto again = e->reprice(req);
  ASSERT_TRUE(again.has_value());
  EXPECT_TRUE(again->periods.empty());
  EXPECT_EQ(again->changed, 0u);
  EXPECT_GT(again->events, 0u);
  expect_verified(*e);

  // Errors change nothing.
  req.customer = "nobody";
  EXPECT_EQ(e->reprice(req).error().code(), StatusCode::kNotFound);
  req.customer = "acme";
  req.to_us = req.from_us;
  EXPECT_EQ(e->reprice(req).error().code(), StatusCode::kInvalidArgument);
}

TEST_F(PricesTest, VerifyFailsOnAVersionAlteredOnDisk) {
  {
    auto e = open_engine(config("0.01"));
    create_acme(*e);
    ingest(*e, call("a", "2025-03-10T11:00:00Z"));
    expect_verified(*e);
  }
  {
    store::RocksOptions o;
    o.path = data_dir();
    auto s = store::open_rocksdb_store(o);
    ASSERT_TRUE(s.has_value()) << s.error().message();
    core::PriceSpec altered;
    altered.unit_price = *core::parse_decimal("0.07");
    altered.credits_per_currency_unit = *core::parse_decimal("100");
    store::WriteBatch wb;
    wb.put(store::Space::kMeta,
           engine::price_version_key("calls#0", INT64_MIN, at("2025-03-10T12:00:00Z")),
           engine::encode_price_version(altered, false));
    ASSERT_TRUE((*s)->write(wb, true).ok());
  }
  clock_.set_us(at("2025-03-10T13:00:00Z"));
  auto e = open_engine(config("0.01"));
  auto v = e->verify();
  ASSERT_TRUE(v.has_value());
  ASSERT_FALSE(v->ok());
  // Both the event's stored credits and its stored cost aggregate differ from the altered price.
  bool credits_named = false;
  bool cost_named = false;
  for (const auto& d : v->differences) {
    credits_named |= d.find("stored credits 1, its prices give 7") != std::string::npos;
    cost_named |= d.find("meter 'calls:cost'") != std::string::npos;
  }
  EXPECT_TRUE(credits_named) << v->differences.front();
  EXPECT_TRUE(cost_named) << v->differences.front();
}

TEST_F(PricesTest, AScheduledVersionIsNotAddedAgainAtTheNextStart) {
  const std::string scheduled = config("0.01", R"(
[[prices]]
meter = "calls"
unit_price = "0.05"
effective_from = "2025-04-01T00:00:00Z"
)");
  { auto e = open_engine(scheduled); }
  clock_.set_us(at("2025-03-11T12:00:00Z"));
  auto e = open_engine(scheduled);
  const auto prices = e->prices();
  ASSERT_EQ(prices.size(), 1u);
  ASSERT_EQ(prices[0].versions.size(), 2u);
  EXPECT_EQ(prices[0].versions[0].effective_from_us, INT64_MIN);
  EXPECT_EQ(prices[0].versions[1].effective_from_us, at("2025-04-01T00:00:00Z"));
  EXPECT_EQ(prices[0].versions[1].unit_price, "0.05");
  // Its charges changed: a new version from the same instant, the old one still listed.
  e.reset();
  e = open_engine(config("0.01", R"(
[[prices]]
meter = "calls"
unit_price = "0.06"
effective_from = "2025-04-01T00:00:00Z"
)"));
  ASSERT_EQ(e->prices()[0].versions.size(), 3u);
  EXPECT_EQ(e->prices()[0].versions[2].unit_price, "0.06");
  EXPECT_EQ(e->prices()[0].versions[2].effective_from_us, at("2025-04-01T00:00:00Z"));
}

TEST_F(PricesTest, AnUndecodablePriceRecordOrVersionStopsTheOpen) {
  { auto e = open_engine(config("0.01")); }
  for (const bool version : {false, true}) {
    {
      store::RocksOptions o;
      o.path = data_dir();
      auto s = store::open_rocksdb_store(o);
      ASSERT_TRUE(s.has_value()) << s.error().message();
      store::WriteBatch wb;
      wb.put(store::Space::kMeta,
             version ? engine::price_version_key("calls#0", INT64_MIN, at("2025-03-10T12:00:00Z"))
                     : engine::price_line_key("calls#0"),
             "\xff");
      ASSERT_TRUE((*s)->write(wb, true).ok());
    }
    EngineOptions o;
    o.config_toml = config("0.01");
    o.data_dir = data_dir();
    o.clock = &clock_;
    auto e = Engine::open(o);
    ASSERT_FALSE(e.has_value());
    EXPECT_EQ(e.error().code(), StatusCode::kCorruption);
    EXPECT_EQ(e.error().message(),
              version ? "a price version cannot be decoded" : "a price record cannot be decoded");
    if (!version) {
      // Put the line back as it was, so that the version is the one at fault next.
      store::RocksOptions ro;
      ro.path = data_dir();
      auto s = store::open_rocksdb_store(ro);
      ASSERT_TRUE(s.has_value()) << s.error().message();
      store::WriteBatch wb;
      wb.put(store::Space::kMeta, engine::price_line_key("calls#0"),
             engine::encode_price_line(engine::PriceLineRecord{"calls", "call", {}}));
      ASSERT_TRUE((*s)->write(wb, true).ok());
    }
  }
}

TEST_F(PricesTest, RerateRefusesAWriteOnAReadOnlyEngineAndAnUndecodableRecord) {
  clock_.set_us(at("2025-03-28T00:00:00Z"));
  {
    auto e = open_engine(config("0.01"));
    create_acme(*e);
    ingest(*e, call("a", "2025-03-20T10:00:00Z"));
  }
  clock_.set_us(at("2025-03-29T00:00:00Z"));
  const std::string changed = config("0.01", R"(
[[prices]]
meter = "calls"
unit_price = "0.04"
effective_from = "2025-03-01T00:00:00Z"
)");
  RepriceRequest req;
  req.customer = "acme";
  req.from_us = at("2025-03-01T00:00:00Z");
  req.to_us = at("2025-04-01T00:00:00Z");
  { auto e = open_engine(changed); }
  {
    EngineOptions o;
    o.config_toml = changed;
    o.data_dir = data_dir();
    o.clock = &clock_;
    o.read_only = true;
    auto e = Engine::open(o);
    ASSERT_TRUE(e.has_value()) << e.error().message();
    auto refused = (*e)->reprice(req);
    ASSERT_FALSE(refused.has_value());
    EXPECT_EQ(refused.error().code(), StatusCode::kUnavailable);
    EXPECT_EQ(refused.error().message(),
              "the engine is open read-only: only a dry run is possible");
    req.dry_run = true;
    auto dry = (*e)->reprice(req);
    ASSERT_TRUE(dry.has_value()) << dry.error().message();
    ASSERT_EQ(dry->periods.size(), 1u);
    EXPECT_EQ(dry->periods[0].difference, "3");
    EXPECT_EQ(dry->periods[0].charged, "1");
    EXPECT_EQ(dry->periods[0].rated, "4");
    EXPECT_EQ(dry->events, 1u);
    EXPECT_EQ(dry->changed, 1u);
    req.dry_run = false;
  }
  {
    auto e = open_engine(changed);
    auto done = e->reprice(req);
    ASSERT_TRUE(done.has_value()) << done.error().message();
    ASSERT_EQ(done->periods.size(), 1u);
    LedgerQuery lq;
    lq.customer = "acme";
    lq.type = LedgerType::kAdjustment;
    auto adjustments = e->wallet_transactions(lq);
    ASSERT_TRUE(adjustments.has_value());
    ASSERT_EQ(adjustments->transactions.size(), 1u);
    EXPECT_EQ(adjustments->transactions[0].id, done->periods[0].transaction_id);
    EXPECT_EQ(adjustments->transactions[0].amount, "-3");
    EXPECT_EQ(adjustments->transactions[0].description,
              "re-rating of 2025-03-01T00:00:00Z to 2025-04-01T00:00:00Z: 1 events, 1 charged, 4 "
              "by today's prices");
  }
  {
    // A re-rating record that cannot be decoded.
    store::RocksOptions o;
    o.path = data_dir();
    auto s = store::open_rocksdb_store(o);
    ASSERT_TRUE(s.has_value()) << s.error().message();
    const std::string begin(engine::kRerateKeyPrefix);
    std::vector<std::string> keys;
    ASSERT_TRUE((*s)->scan(store::Space::kMeta, begin, engine::prefix_end(begin),
                           [&](std::string_view key, std::string_view) {
                             keys.emplace_back(key);
                             return true;
                           })
                    .ok());
    ASSERT_EQ(keys.size(), 1u);
    store::WriteBatch wb;
    wb.put(store::Space::kMeta, keys[0], "\xff");
    ASSERT_TRUE((*s)->write(wb, true).ok());
  }
  auto e = open_engine(changed);
  req.dry_run = true;
  auto bad = e->reprice(req);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kCorruption);
  EXPECT_EQ(bad.error().message(), "a re-rating record cannot be decoded");
}

TEST_F(PricesTest, VerifyPassesAfterAPriceChangeArchiveAndRestore) {
  clock_.set_us(at("2025-03-28T00:00:00Z"));
  {
    auto e = open_engine(config("0.01", kGraduated));
    create_acme(*e);
    ingest(*e, call("jan", "2025-01-20T10:00:00Z"));
    ingest(
        *e,
        R"({"id":"g1","customer":"acme","type":"storage","time":"2025-01-21T10:00:00Z","properties":{"gb":8}})");
    ingest(*e, call("mar", "2025-03-20T10:00:00Z"));
  }
  clock_.set_us(at("2025-03-29T00:00:00Z"));
  auto e = open_engine(config("0.02", std::string(R"(
[[prices]]
meter = "gb"
model = "graduated"
tiers = [{ up_to = 10, unit_price = "3" }, { unit_price = "2" }]
)")));
  // Late events on both sides of the change, one in January's tiers (8 GB used: 2 at 1, 1 at 0.5
  // under the version of its time).
  ingest(
      *e,
      R"({"id":"g2","customer":"acme","type":"storage","time":"2025-01-22T10:00:00Z","properties":{"gb":3}})");
  ingest(*e, call("late", "2025-03-28T10:00:00Z"));
  EXPECT_EQ(credits(*e).at("g2"), "250");
  EXPECT_EQ(credits(*e).at("late"), "1") << "before the change, made at 03-29";
  expect_verified(*e);
  ArchiveRequest r;
  r.before_us = at("2025-02-01T00:00:00Z");
  r.out_dir = (dir_ / "archive").string();
  auto a = e->archive(r);
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->events, 3u);
  expect_verified(*e);
  // A January event arriving after the archive still continues January's tiers.
  ingest(
      *e,
      R"({"id":"g3","customer":"acme","type":"storage","time":"2025-01-23T10:00:00Z","properties":{"gb":1}})");
  EXPECT_EQ(credits(*e).at("g3"), "50");
  expect_verified(*e);
  ASSERT_TRUE(e->restore(a->manifest).has_value());
  expect_verified(*e);
  e.reset();
  e = open_engine(config("0.02", std::string(R"(
[[prices]]
meter = "gb"
model = "graduated"
tiers = [{ up_to = 10, unit_price = "3" }, { unit_price = "2" }]
)")));
  expect_verified(*e);
}

}  // namespace
}  // namespace tally
