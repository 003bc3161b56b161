// Engine tests on the in-memory store (fast) and on RocksDB in a temp dir (durability):
// ingest, dedup, queries across windows and zones, keys, and a randomized comparison of every
// query with a brute-force recomputation.
#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <limits>
#include <map>
#include <random>
#include <set>
#include <shared_mutex>
#include <thread>

#include <gtest/gtest.h>

#include <tally/engine.h>

#include "core/decimal.h"
#include "core/time.h"
#include "engine/codec.h"
#include "engine/engine_impl.h"
#include "store/store.h"

namespace tally {
namespace {

constexpr const char* kConfig = R"(
[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]

[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"
group_by = ["model"]
allow_negative = true  # the randomized tests send corrections below zero, as an admin

[[meters]]
key = "tokens_max"
event_type = "tokens"
aggregation = "max"
value = "$.n"
allow_negative = true

[[meters]]
key = "tokens_avg"
event_type = "tokens"
aggregation = "avg"
value = "$.n"
allow_negative = true

[[meters]]
key = "users"
event_type = "api_call"
aggregation = "unique_count"
value = "$.user"

[[meters]]
key = "patients"
event_type = "gauge"
aggregation = "latest"
value = "$.count"
)";

TimeUs at(const char* rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

std::unique_ptr<Engine> open_memory(const Clock* clock, const std::string& extra = "") {
  EngineOptions o;
  o.in_memory = true;
  o.config_toml = std::string(kConfig) + extra;
  o.clock = clock;
  auto e = Engine::open(o);
  EXPECT_TRUE(e.has_value()) << e.error().message();
  return std::move(*e);
}

std::string query_total(Engine& e, const std::string& meter, const std::string& customer,
                        TimeUs from, TimeUs to) {
  MeterQuery q;
  q.meter = meter;
  q.customer = customer;
  q.from_us = from;
  q.to_us = to;
  auto r = e.query(q);
  EXPECT_TRUE(r.has_value()) << r.error().message();
  if (!r || r->rows.empty()) {
    return "none";
  }
  EXPECT_EQ(r->rows.size(), 1u);
  return r->rows[0].value;
}

class EngineTest : public ::testing::Test {
 protected:
  FakeClock clock_{at("2025-01-20T12:00:00Z")};
};

TEST_F(EngineTest, IngestCountsAndSums) {
  auto e = open_memory(&clock_);
  auto r = e->ingest_json(R"({"events":[
    {"id":"a","customer":"c1","type":"api_call","time":"2025-01-17T14:30:00Z","properties":{"service":"chat","user":"u1"}},
    {"id":"b","customer":"c1","type":"api_call","time":"2025-01-17T14:31:00Z","properties":{"service":"search","user":"u2"}},
    {"id":"c","customer":"c1","type":"tokens","time":"2025-01-17T14:32:00Z","properties":{"n":1000.5,"model":"gpt"}},
    {"id":"d","customer":"c2","type":"tokens","time":"2025-01-17T14:33:00Z","properties":{"n":7,"model":"gpt"}}
  ]})");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->accepted, 4u);
  EXPECT_EQ(r->duplicates, 0u);
  EXPECT_STREQ(r->status(), "accepted");
  EXPECT_FALSE(r->batch_id.empty());
  const TimeUs from = at("2025-01-17T00:00:00Z");
  const TimeUs to = at("2025-01-18T00:00:00Z");
  EXPECT_EQ(query_total(*e, "calls", "c1", from, to), "2");
  EXPECT_EQ(query_total(*e, "tokens", "c1", from, to), "1000.5");
  EXPECT_EQ(query_total(*e, "tokens", "c2", from, to), "7");
  EXPECT_EQ(query_total(*e, "users", "c1", from, to), "2");
  EXPECT_EQ(query_total(*e, "tokens", "c1", at("2025-01-17T14:33:00Z"), to), "none");
  auto usage = e->customer_usage("c1", from, to);
  ASSERT_TRUE(usage.has_value());
  ASSERT_EQ(usage->meters.size(), 6u);
  EXPECT_EQ(usage->meters[0].meter, "calls");
  EXPECT_EQ(usage->meters[0].value, "2");
  EXPECT_EQ(usage->meters[5].value, "");  // no gauge reported
}

TEST_F(EngineTest, DuplicatesWithinAndAcrossBatches) {
  auto e = open_memory(&clock_);
  auto r = e->ingest_json(R"({"events":[
    {"id":"x","customer":"c1","type":"api_call","properties":{"service":"chat"}},
    {"id":"x","customer":"c1","type":"api_call","properties":{"service":"chat"}},
    {"id":"x","customer":"c2","type":"api_call","properties":{"service":"chat"}}
  ]})");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->accepted, 2u);  // ids are scoped per customer
  EXPECT_EQ(r->duplicates, 1u);
  EXPECT_STREQ(r->status(), "partial");
  auto again = e->ingest_json(
      R"({"id":"x","customer":"c1","type":"api_call","properties":{"service":"chat"}})");
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->accepted, 0u);
  EXPECT_EQ(again->duplicates, 1u);
  EXPECT_STREQ(again->status(), "all_duplicates");
  EXPECT_TRUE(again->batch_id.empty());
  EXPECT_EQ(query_total(*e, "calls", "c1", 0, at("2026-01-01T00:00:00Z")), "1");
}

TEST_F(EngineTest, AllOrNothingStoresNothingWhenOneEventIsAtFault) {
  auto e = open_memory(&clock_);
  IngestOptions whole;
  whole.all_or_nothing = true;
  ASSERT_TRUE(e->ingest_json(R"({"id":"old","customer":"c1","type":"api_call"})").has_value());
  // A stored duplicate, a duplicate inside the request and an invalid event: none is stored,
  // and each is named by its index.
  auto r = e->ingest_json(R"({"events":[
    {"id":"n1","customer":"c1","type":"api_call"},
    {"id":"old","customer":"c1","type":"api_call"},
    {"id":"n1","customer":"c1","type":"api_call"},
    {"id":"n2","customer":"c1","type":"api_call","time":"yesterday"},
    {"id":"old","customer":"c9","type":"api_call"}
  ]})",
                          whole);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->accepted, 0u);
  EXPECT_EQ(r->rejected, 5u);
  EXPECT_TRUE(r->batch_id.empty());
  ASSERT_EQ(r->errors.size(), 3u);
  EXPECT_EQ(r->errors[0].index, 1u);
  EXPECT_EQ(r->errors[0].code, "DUPLICATE");
  EXPECT_EQ(r->errors[1].index, 2u);
  EXPECT_EQ(r->errors[1].code, "DUPLICATE");
  EXPECT_EQ(r->errors[2].index, 3u);
  EXPECT_EQ(r->errors[2].code, "INVALID_TIME");
  EXPECT_EQ(query_total(*e, "calls", "c1", 0, at("2026-01-01T00:00:00Z")), "1");
  EXPECT_FALSE(e->get_customer("c9").has_value());  // not even auto-created
  // Without a fault the request is stored as usual; sent again, every event is a duplicate.
  const char* fine = R"({"events":[{"id":"n1","customer":"c1","type":"api_call"},
                                   {"id":"n2","customer":"c9","type":"api_call"}]})";
  auto ok = e->ingest_json(fine, whole);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->accepted, 2u);
  EXPECT_TRUE(ok->errors.empty());
  auto again = e->ingest_json(fine, whole);
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->accepted, 0u);
  ASSERT_EQ(again->errors.size(), 2u);
  EXPECT_EQ(again->errors[1].code, "DUPLICATE");
  EXPECT_EQ(query_total(*e, "calls", "c1", 0, at("2026-01-01T00:00:00Z")), "2");
  EXPECT_EQ(query_total(*e, "calls", "c9", 0, at("2026-01-01T00:00:00Z")), "1");
}

TEST_F(EngineTest, AllOrNothingRefusesUnknownCustomersWhenAutoCreateIsOff) {
  EngineOptions o;
  o.in_memory = true;
  o.clock = &clock_;
  o.config_toml = std::string("[server]\nauto_create_customers = false\n") + kConfig;
  auto strict = Engine::open(o);
  ASSERT_TRUE(strict.has_value()) << strict.error().message();
  Customer c;
  c.id = "c1";
  ASSERT_TRUE((*strict)->create_customer(c).has_value());
  IngestOptions whole;
  whole.all_or_nothing = true;
  auto r = (*strict)->ingest_json(R"([{"id":"a","customer":"c1","type":"api_call"},
                                      {"id":"a","customer":"nobody","type":"api_call"}])",
                                  whole);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->accepted, 0u);
  ASSERT_EQ(r->errors.size(), 1u);
  EXPECT_EQ(r->errors[0].index, 1u);
  EXPECT_EQ(r->errors[0].code, "UNKNOWN_CUSTOMER");
  EXPECT_EQ(query_total(**strict, "calls", "c1", 0, at("2026-01-01T00:00:00Z")), "none");
}

TEST_F(EngineTest, IdempotencyKeyWinsOverEventId) {
  auto e = open_memory(&clock_);
  auto first = e->ingest_json(
      R"({"events":[{"event_id":"e1","customer_id":"c","event_type":"api_call","service":"chat"}]})");
  ASSERT_TRUE(first.has_value());
  EXPECT_EQ(first->accepted, 1u);
  auto keyed = e->ingest_json(
      R"({"events":[{"event_id":"e1","customer_id":"c","event_type":"api_call","idempotency_key":"k1"}]})");
  ASSERT_TRUE(keyed.has_value());
  EXPECT_EQ(keyed->accepted, 1u);
  auto keyed_again = e->ingest_json(
      R"({"events":[{"event_id":"e1","customer_id":"c","event_type":"api_call","idempotency_key":"k1"}]})");
  ASSERT_TRUE(keyed_again.has_value());
  EXPECT_EQ(keyed_again->duplicates, 1u);
}

TEST_F(EngineTest, InvalidEventsAreReportedAndValidOnesKept) {
  auto e = open_memory(&clock_);
  auto r = e->ingest_json(R"({"events":[
    {"id":"ok","customer":"c1","type":"api_call"},
    {"customer":"c1","type":"api_call"},
    {"id":"t","customer":"c1","type":"api_call","time":"yesterday"},
    {"id":"f","customer":"c1","type":"api_call","time":"2030-01-01T00:00:00Z"},
    {"id":"arr","customer":"c1","type":"api_call","properties":{"a":[1]}},
    {"id":"big","customer":"c1","type":"tokens","properties":{"n":1e999}}
  ]})");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->accepted, 1u);
  EXPECT_EQ(r->rejected, 5u);
  ASSERT_EQ(r->errors.size(), 5u);
  EXPECT_EQ(r->errors[0].index, 1u);
  EXPECT_EQ(r->errors[0].code, "MISSING_FIELD");
  EXPECT_EQ(r->errors[1].code, "INVALID_TIME");
  EXPECT_EQ(r->errors[2].code, "TIME_IN_FUTURE");
  EXPECT_EQ(r->errors[3].code, "INVALID_TYPE");
  EXPECT_EQ(r->errors[4].code, "INVALID_VALUE");
  EXPECT_EQ(r->errors[4].id, "big");
}

TEST_F(EngineTest, MalformedBodiesChangeNothing) {
  auto e = open_memory(&clock_);
  for (const char* body : {"", "{", "[1,2", "{\"events\":[{\"id\":\"a\"}]", "\"x\"",
                           "{\"events\":{}}", "{\"events\":[]} trailing", "{\"events\":[]}"}) {
    auto r = e->ingest_json(body);
    EXPECT_FALSE(r.has_value()) << body;
    if (!r) {
      EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << body;
    }
  }
  EXPECT_EQ(e->stats().events_accepted, 0u);
  EXPECT_TRUE(e->list_customers().empty());
}

TEST_F(EngineTest, CustomerKeyCannotSendOtherCustomersEvents) {
  auto e = open_memory(&clock_);
  IngestOptions o;
  o.restrict_customer = "c1";
  auto r = e->ingest_json(
      R"({"events":[{"id":"a","customer":"c1","type":"api_call"},{"id":"b","customer":"c2","type":"api_call"}]})",
      o);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kPermissionDenied);
  EXPECT_TRUE(e->list_customers().empty());
  // Without a customer field, the key's customer is used.
  auto ok = e->ingest_json(R"({"events":[{"id":"a","type":"api_call"}]})", o);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(ok->accepted, 1u);
  EXPECT_TRUE(e->get_customer("c1").has_value());
}

TEST_F(EngineTest, UnknownCustomersRejectedWhenAutoCreateIsOff) {
  EngineOptions o;
  o.in_memory = true;
  o.clock = &clock_;
  o.config_toml = std::string("[server]\nauto_create_customers = false\n") + kConfig;
  auto strict = Engine::open(o);
  ASSERT_TRUE(strict.has_value()) << strict.error().message();
  auto r = (*strict)->ingest_json(R"({"id":"a","customer":"nobody","type":"api_call"})");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->accepted, 0u);
  ASSERT_EQ(r->errors.size(), 1u);
  EXPECT_EQ(r->errors[0].code, "UNKNOWN_CUSTOMER");
  Customer c;
  c.id = "nobody";
  ASSERT_TRUE((*strict)->create_customer(c).has_value());
  auto again = (*strict)->ingest_json(R"({"id":"a","customer":"nobody","type":"api_call"})");
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(again->accepted, 1u);
}

TEST_F(EngineTest, AClusterSectionIsRefusedInMemory) {
  EngineOptions o;
  o.in_memory = true;
  o.config_toml = std::string(kConfig) +
                  "\n[cluster]\npostgres = \"host=127.0.0.1 dbname=tally\"\nredis = "
                  "[\"127.0.0.1:7000\"]\n";
  o.clock = &clock_;
  auto e = Engine::open(o);
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(e.error().message().find("[cluster]"), std::string::npos) << e.error().message();
  EXPECT_NE(e.error().message().find("not in a data directory"), std::string::npos);
}

TEST_F(EngineTest, DayWindowsFollowTheZoneAcrossDst) {
  clock_.set_us(at("2025-04-01T00:00:00Z"));
  auto e = open_memory(&clock_);
  // Berlin's 2025-03-30 lasts 23 hours: 2025-03-29T23:00Z .. 2025-03-30T22:00Z.
  auto r = e->ingest_json(R"({"events":[
    {"id":"1","customer":"c","type":"api_call","time":"2025-03-29T22:59:00Z","properties":{"service":"a"}},
    {"id":"2","customer":"c","type":"api_call","time":"2025-03-29T23:00:00Z","properties":{"service":"a"}},
    {"id":"3","customer":"c","type":"api_call","time":"2025-03-30T21:59:00Z","properties":{"service":"b"}},
    {"id":"4","customer":"c","type":"api_call","time":"2025-03-30T22:00:00Z","properties":{"service":"b"}}
  ]})");
  ASSERT_TRUE(r.has_value());
  ASSERT_EQ(r->accepted, 4u);
  MeterQuery q;
  q.meter = "calls";
  q.window = Window::kDay;
  q.timezone = "Europe/Berlin";
  q.from_us = at("2025-03-28T00:00:00Z");
  q.to_us = at("2025-04-01T00:00:00Z");
  auto res = e->query(q);
  ASSERT_TRUE(res.has_value()) << res.error().message();
  ASSERT_EQ(res->rows.size(), 3u);
  EXPECT_EQ(res->rows[0].value, "1");
  EXPECT_EQ(res->rows[1].window_start_us, at("2025-03-29T23:00:00Z"));
  EXPECT_EQ(res->rows[1].window_end_us, at("2025-03-30T22:00:00Z"));
  EXPECT_EQ(res->rows[1].value, "2");
  EXPECT_EQ(res->rows[2].value, "1");
  // Grouped by service, with a filter.
  q.group_by = {"service"};
  q.filter = {{"service", "b"}};
  res = e->query(q);
  ASSERT_TRUE(res.has_value());
  ASSERT_EQ(res->rows.size(), 2u);
  EXPECT_EQ(res->rows[0].group[0].second, "b");
  // Kolkata days start at 18:30Z.
  q.group_by.clear();
  q.filter.clear();
  q.timezone = "Asia/Kolkata";
  res = e->query(q);
  ASSERT_TRUE(res.has_value());
  ASSERT_EQ(res->rows.size(), 2u);
  EXPECT_EQ(res->rows[0].window_start_us, at("2025-03-29T18:30:00Z"));
  EXPECT_EQ(res->rows[0].value, "2");
  EXPECT_EQ(res->rows[1].window_start_us, at("2025-03-30T18:30:00Z"));
  EXPECT_EQ(res->rows[1].value, "2");
}

TEST_F(EngineTest, LatestFollowsEventTimeNotArrival) {
  auto e = open_memory(&clock_);
  ASSERT_TRUE(
      e->ingest_json(
           R"({"id":"late","customer":"c","type":"gauge","time":"2025-01-10T10:00:00Z","properties":{"count":5}})")
          .has_value());
  ASSERT_TRUE(
      e->ingest_json(
           R"({"id":"early","customer":"c","type":"gauge","time":"2025-01-10T09:00:00Z","properties":{"count":9}})")
          .has_value());
  EXPECT_EQ(
      query_total(*e, "patients", "c", at("2025-01-10T00:00:00Z"), at("2025-01-11T00:00:00Z")),
      "5");
}

TEST_F(EngineTest, UniqueCountIsAUnionAcrossWindows) {
  auto e = open_memory(&clock_);
  ASSERT_TRUE(e->ingest_json(R"({"events":[
    {"id":"1","customer":"c","type":"api_call","time":"2025-01-10T09:00:00Z","properties":{"user":"u1"}},
    {"id":"2","customer":"c","type":"api_call","time":"2025-01-10T11:00:00Z","properties":{"user":"u1"}},
    {"id":"3","customer":"c","type":"api_call","time":"2025-01-11T11:00:00Z","properties":{"user":"u2"}},
    {"id":"4","customer":"c","type":"api_call","time":"2025-01-11T11:30:00Z","properties":{"user":"u1"}}
  ]})")
                  .has_value());
  EXPECT_EQ(query_total(*e, "users", "c", at("2025-01-10T00:00:00Z"), at("2025-01-12T00:00:00Z")),
            "2");
  EXPECT_EQ(query_total(*e, "users", "c", at("2025-01-10T10:00:00Z"), at("2025-01-11T11:15:00Z")),
            "2");
  EXPECT_EQ(query_total(*e, "users", "c", at("2025-01-10T00:00:00Z"), at("2025-01-11T00:00:00Z")),
            "1");
}

TEST_F(EngineTest, DedupWindowExpires) {
  EngineOptions o;
  o.in_memory = true;
  o.clock = &clock_;
  o.config_toml = std::string("[storage]\ndedup_window = 60\n") + kConfig;
  auto e = Engine::open(o);
  ASSERT_TRUE(e.has_value()) << e.error().message();
  ASSERT_EQ((*e)->ingest_json(R"({"id":"w","customer":"c","type":"api_call"})")->accepted, 1u);
  ASSERT_EQ((*e)->ingest_json(R"({"id":"w","customer":"c","type":"api_call"})")->duplicates, 1u);
  clock_.advance_us(61 * core::kUsPerSecond);
  EXPECT_EQ((*e)->ingest_json(R"({"id":"w","customer":"c","type":"api_call"})")->accepted, 1u);
  EXPECT_EQ((*e)->ingest_json(R"({"id":"w","customer":"c","type":"api_call"})")->duplicates, 1u);
}

TEST_F(EngineTest, VerifyAcceptsCopiesStoredAfterTheDedupWindow) {
  EngineOptions o;
  o.in_memory = true;
  o.clock = &clock_;
  o.config_toml = std::string("[storage]\ndedup_window = 60\n") + kConfig;
  auto e = Engine::open(o);
  ASSERT_TRUE(e.has_value()) << e.error().message();
  const char* event = R"({"id":"w","customer":"c","type":"api_call","properties":{"user":"u"}})";
  ASSERT_EQ((*e)->ingest_json(event)->accepted, 1u);
  clock_.advance_us(61 * core::kUsPerSecond);
  ASSERT_EQ((*e)->ingest_json(event)->accepted, 1u);  // the window expired: stored again
  clock_.advance_us(61 * core::kUsPerSecond);
  ASSERT_EQ((*e)->ingest_json(event)->accepted, 1u);
  auto report = (*e)->verify();
  ASSERT_TRUE(report.has_value()) << report.error().message();
  EXPECT_EQ(report->events, 3u);
  EXPECT_TRUE(report->ok()) << (report->differences.empty() ? "" : report->differences[0]);
}

TEST_F(EngineTest, KeysAuthenticateCountAndRevoke) {
  auto e = open_memory(&clock_);
  NewApiKeyRequest admin_req;
  auto admin = e->create_key(admin_req);
  ASSERT_TRUE(admin.has_value());
  EXPECT_EQ(admin->secret.rfind("tk_", 0), 0u);
  EXPECT_EQ(admin->secret.substr(0, admin->info.prefix.size()), admin->info.prefix);
  NewApiKeyRequest missing;
  missing.customer = "ghost";
  auto bad = e->create_key(missing);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code(), StatusCode::kNotFound);

  Customer c;
  c.id = "c1";
  ASSERT_TRUE(e->create_customer(c).has_value());
  EXPECT_EQ(e->create_customer(c).error().code(), StatusCode::kAlreadyExists);
  NewApiKeyRequest cust;
  cust.customer = "c1";
  auto ck = e->create_key(cust);
  ASSERT_TRUE(ck.has_value());
  for (int i = 0; i < 3; ++i) {
    auto id = e->authenticate(ck->secret);
    ASSERT_TRUE(id.has_value());
    EXPECT_EQ(id->customer, "c1");
    EXPECT_FALSE(id->admin());
  }
  EXPECT_TRUE(e->authenticate(admin->secret)->admin());
  EXPECT_EQ(e->authenticate("tk_nope").error().code(), StatusCode::kUnauthenticated);
  auto keys = e->list_keys();
  ASSERT_EQ(keys.size(), 2u);
  const ApiKeyInfo& used = keys[0].id == ck->info.id ? keys[0] : keys[1];
  EXPECT_EQ(used.id, ck->info.id);
  EXPECT_EQ(used.total_requests, 3u);
  EXPECT_EQ(used.last_used_at_us, clock_.now_us());

  CustomerPatch p;
  p.status = CustomerStatus::kSuspended;
  ASSERT_TRUE(e->update_customer("c1", p).has_value());
  EXPECT_EQ(e->authenticate(ck->secret).error().code(), StatusCode::kPermissionDenied);

  ASSERT_TRUE(e->revoke_key(admin->info.id).ok());
  EXPECT_EQ(e->authenticate(admin->secret).error().code(), StatusCode::kUnauthenticated);
  EXPECT_EQ(e->revoke_key("key_missing").code(), StatusCode::kNotFound);
}

TEST_F(EngineTest, KeysWithoutCustomerHonourTheirScopes) {
  auto e = open_memory(&clock_);
  NewApiKeyRequest scoped;
  scoped.scopes = Scope::kIngest | Scope::kRead;
  auto k = e->create_key(scoped);
  ASSERT_TRUE(k.has_value()) << k.error().message();
  EXPECT_EQ(k->info.scopes, Scope::kIngest | Scope::kRead);
  auto id = e->authenticate(k->secret);
  ASSERT_TRUE(id.has_value());
  EXPECT_FALSE(id->admin());
  EXPECT_EQ(id->scopes, Scope::kIngest | Scope::kRead);
  EXPECT_EQ(id->customer, "");  // every customer

  NewApiKeyRequest full;  // no scopes: a full admin key
  auto a = e->create_key(full);
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->info.scopes, Scope::kAdmin | Scope::kIngest | Scope::kCheck | Scope::kRead);

  NewApiKeyRequest unknown;
  unknown.scopes = static_cast<Scope>(1u << 5);
  EXPECT_EQ(e->create_key(unknown).error().code(), StatusCode::kInvalidArgument);
}

TEST_F(EngineTest, QueryRowCapHoldsWithAndWithoutWindow) {
  auto e = open_memory(&clock_);
  // One more group than a query may return: each event its own "service".
  constexpr int kGroups = 100'001;
  for (int first = 0; first < kGroups; first += 10'000) {
    std::string body = "[";
    for (int i = first; i < std::min(first + 10'000, kGroups); ++i) {
      body += (i == first ? "" : ",");
      body +=
          R"({"id":"r)" + std::to_string(i) +
          R"(","customer":"c","type":"api_call","time":"2025-01-10T09:00:00Z","properties":{"service":"s)" +
          std::to_string(i) + "\"}}";
    }
    body += "]";
    auto r = e->ingest_json(std::move(body));
    ASSERT_TRUE(r.has_value()) << r.error().message();
    ASSERT_EQ(r->rejected, 0u);
  }
  MeterQuery q;
  q.meter = "calls";
  q.group_by = {"service"};
  q.from_us = at("2025-01-10T00:00:00Z");
  q.to_us = at("2025-01-11T00:00:00Z");
  auto r = e->query(q);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.error().details_json(), kQueryTooLargeDetails);
  EXPECT_NE(r.error().message().find("more than 100000 rows"), std::string::npos);
  q.window = Window::kDay;
  r = e->query(q);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.error().details_json(), kQueryTooLargeDetails);
  EXPECT_NE(r.error().message().find("use a larger window"), std::string::npos);
  q.window.reset();
  q.group_by.clear();  // one row: fine
  r = e->query(q);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  ASSERT_EQ(r->rows.size(), 1u);
  EXPECT_EQ(r->rows[0].value, "100001");
}

TEST_F(EngineTest, ListEventsPaginates) {
  auto e = open_memory(&clock_);
  std::string body = "{\"events\":[";
  for (int i = 0; i < 25; ++i) {
    if (i > 0)
      body += ",";
    body += R"({"id":"e)" + std::to_string(i) + R"(","customer":")" + (i % 2 ? "odd" : "even") +
            R"(","type":"tokens","time":"2025-01-10T09:00:00Z","properties":{"n":)" +
            std::to_string(i) + R"(,"model":"m","nested":{"a":true}}})";
  }
  body += "]}";
  ASSERT_EQ(e->ingest_json(body)->accepted, 25u);
  EventListQuery q;
  q.customer = "even";
  q.limit = 5;
  std::set<std::string> seen;
  int pages = 0;
  do {
    auto page = e->list_events(q);
    ASSERT_TRUE(page.has_value()) << page.error().message();
    for (const auto& ev : page->events) {
      EXPECT_EQ(ev.customer, "even");
      EXPECT_TRUE(seen.insert(ev.id).second);
      ASSERT_EQ(ev.properties.size(), 3u);
      EXPECT_EQ(ev.properties[2].key, "nested.a");
    }
    q.cursor = page->next_cursor;
    ++pages;
  } while (!q.cursor.empty() && pages < 10);
  EXPECT_EQ(seen.size(), 13u);
  EXPECT_EQ(pages, 3);
  q.cursor = "garbage";
  EXPECT_EQ(e->list_events(q).error().code(), StatusCode::kInvalidArgument);
  EventListQuery all;
  all.limit = 1000;
  EXPECT_EQ(e->list_events(all)->events.size(), 25u);
}

// A clock that moves a millisecond each time it is read: a page's time budget then runs out at
// its first look, deterministically.
class StepClock final : public Clock {
 public:
  explicit StepClock(TimeUs start_us) : now_us_(start_us) {}

  TimeUs now_us() const override { return now_us_.fetch_add(1000, std::memory_order_relaxed); }

 private:
  mutable std::atomic<TimeUs> now_us_;
};

TEST_F(EngineTest, ListEventsBudgetEndsPagesEarlyAndCursorsResume) {
  StepClock clock(at("2025-01-20T12:00:00Z"));
  auto e = open_memory(&clock);
  // 3000 events over three customers; one in ten is a "gauge", the rare type listed below.
  std::set<std::string> gauges;
  for (int batch = 0; batch < 3; ++batch) {
    std::string body = "{\"events\":[";
    for (int i = batch * 1000; i < (batch + 1) * 1000; ++i) {
      const bool gauge = i % 10 == 7;
      const std::string id = "e" + std::to_string(i);
      if (gauge) {
        gauges.insert(id);
      }
      body += std::string(i % 1000 == 0 ? "" : ",") + R"({"id":")" + id + R"(","customer":"c)" +
              std::to_string(i % 3) + R"(","type":")" + (gauge ? "gauge" : "tokens") +
              R"(","time":"2025-01-10T09:00:00Z","properties":{"n":1,"count":2}})";
    }
    body += "]}";
    auto r = e->ingest_json(body);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    ASSERT_EQ(r->accepted, 1000u);
  }

  EventListQuery q;
  q.type = "gauge";
  q.limit = 1000;
  q.budget_ms = 1;
  std::set<std::string> seen;
  int pages = 0;
  int partial_pages = 0;
  do {
    auto page = e->list_events(q);
    ASSERT_TRUE(page.has_value()) << page.error().message();
    for (const auto& ev : page->events) {
      EXPECT_EQ(ev.type, "gauge");
      EXPECT_TRUE(seen.insert(ev.id).second) << ev.id << " listed twice";
    }
    if (!page->next_cursor.empty() && page->events.size() < q.limit) {
      ++partial_pages;
    }
    EXPECT_NE(page->next_cursor, q.cursor) << "a page must move on";
    q.cursor = page->next_cursor;
    ++pages;
  } while (!q.cursor.empty() && pages < 100);
  EXPECT_EQ(seen, gauges);
  // Each page examines 256 events before its first look at the clock, which says it is late.
  EXPECT_GE(pages, 3000 / 256);
  EXPECT_GE(partial_pages, pages - 1);

  // One customer's listing resumes the same way, and without a budget it is one page.
  q = EventListQuery{};
  q.customer = "c1";
  q.type = "gauge";
  q.budget_ms = 1;
  std::size_t c1 = 0;
  pages = 0;
  do {
    auto page = e->list_events(q);
    ASSERT_TRUE(page.has_value()) << page.error().message();
    c1 += page->events.size();
    q.cursor = page->next_cursor;
    ++pages;
  } while (!q.cursor.empty() && pages < 100);
  EXPECT_EQ(c1, 100u);
  EXPECT_GT(pages, 1);
  q.cursor.clear();
  q.budget_ms = 0;
  auto whole = e->list_events(q);
  ASSERT_TRUE(whole.has_value());
  EXPECT_EQ(whole->events.size(), 100u);
  EXPECT_TRUE(whole->next_cursor.empty());
}

// Random batches with duplicates, out-of-order and late events; every query is compared with a
// brute-force recomputation over the accepted events.
TEST_F(EngineTest, RandomizedMatchesBruteForce) {
  auto e = open_memory(&clock_);
  std::mt19937_64 rng(20251123);

  struct Accepted {
    std::string customer;
    std::string model;
    TimeUs time;
    std::int64_t n;
  };

  std::map<std::pair<std::string, std::string>, Accepted> accepted;  // (customer, id) -> event
  const TimeUs base = at("2025-01-01T00:00:00Z");
  const char* zones[] = {"UTC", "Europe/Berlin", "Asia/Kolkata", "America/New_York"};
  clock_.set_us(base + 60ll * 24 * 3600 * core::kUsPerSecond);
  for (int batch = 0; batch < 40; ++batch) {
    std::string body = "{\"events\":[";
    std::vector<std::tuple<std::string, std::string, Accepted>> sent;
    const int n = 1 + static_cast<int>(rng() % 60);
    for (int i = 0; i < n; ++i) {
      Accepted a;
      a.customer = "c" + std::to_string(rng() % 4);
      a.model = "m" + std::to_string(rng() % 3);
      a.time = base + static_cast<TimeUs>(rng() % (40ull * 24 * 3600)) * core::kUsPerSecond;
      a.n = static_cast<std::int64_t>(rng() % 1000) - 100;
      const std::string id = "id" + std::to_string(rng() % 1500);  // collisions = duplicates
      if (i > 0)
        body += ",";
      body += R"({"id":")" + id + R"(","customer":")" + a.customer +
              R"(","type":"tokens","time":")" + core::format_rfc3339(a.time) +
              R"(","properties":{"n":)" + std::to_string(a.n) + R"(,"model":")" + a.model + "\"}}";
      sent.emplace_back(a.customer, id, a);
    }
    body += "]}";
    IngestOptions as_admin;
    as_admin.negative_corrections = true;
    auto r = e->ingest_json(body, as_admin);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    std::uint32_t expect_accepted = 0;
    for (auto& [customer, id, a] : sent) {
      if (accepted.emplace(std::make_pair(customer, id), a).second) {
        ++expect_accepted;
      }
    }
    ASSERT_EQ(r->accepted, expect_accepted);
    ASSERT_EQ(r->accepted + r->duplicates, static_cast<std::uint32_t>(n));
  }
  for (int trial = 0; trial < 60; ++trial) {
    const std::string customer = "c" + std::to_string(rng() % 4);
    TimeUs from = base + static_cast<TimeUs>(rng() % (40ull * 24 * 60)) * core::kUsPerMinute;
    TimeUs to = from + static_cast<TimeUs>(1 + rng() % (20ull * 24 * 60)) * core::kUsPerMinute;
    const char* window = trial % 3 == 0 ? "" : (trial % 3 == 1 ? "day" : "hour");
    const char* zone = zones[rng() % 4];
    auto tz = core::TimeZone::find(zone);
    ASSERT_TRUE(tz.has_value());
    // Brute force: per window start, sum / max of n.
    std::map<TimeUs, std::pair<std::int64_t, std::int64_t>> expect;  // start -> (sum, max)
    for (const auto& [key, a] : accepted) {
      if (a.customer != customer || a.time < from || a.time >= to)
        continue;
      TimeUs ws = from;
      if (*window != '\0') {
        ws = core::window_start(a.time, *core::parse_window(window), *tz);
      }
      auto [it, fresh] = expect.try_emplace(ws, std::make_pair(0, a.n));
      it->second.first += a.n;
      it->second.second = std::max(it->second.second, a.n);
    }
    for (const char* meter : {"tokens", "tokens_max"}) {
      MeterQuery q;
      q.meter = meter;
      q.customer = customer;
      q.from_us = from;
      q.to_us = to;
      q.window = parse_window_name(window);  // "" = none
      q.timezone = zone;
      auto res = e->query(q);
      ASSERT_TRUE(res.has_value()) << res.error().message();
      ASSERT_EQ(res->rows.size(), expect.size()) << meter << " " << window << " " << zone;
      std::size_t i = 0;
      for (const auto& [ws, v] : expect) {
        EXPECT_EQ(res->rows[i].window_start_us, ws);
        const std::int64_t want = std::string(meter) == "tokens" ? v.first : v.second;
        EXPECT_EQ(res->rows[i].value, std::to_string(want)) << meter << " window " << i;
        ++i;
      }
    }
  }
  // Every customer at once, a row per customer and model (tokens) or per customer (tokens_max),
  // over ranges on whole UTC days half of the time: the rows come from one walk over the day or
  // hour sums when the windows fall on them, from minutes otherwise; both must match.
  for (int trial = 0; trial < 60; ++trial) {
    TimeUs from = base + static_cast<TimeUs>(rng() % (40ull * 24 * 60)) * core::kUsPerMinute;
    TimeUs to = from + static_cast<TimeUs>(1 + rng() % (20ull * 24 * 60)) * core::kUsPerMinute;
    if (trial % 2 == 0) {
      from = core::floor_to(from, core::kUsPerDay);
      to = core::ceil_to(to, core::kUsPerDay);
    }
    const char* window = trial % 3 == 0 ? "" : (trial % 3 == 1 ? "day" : "hour");
    const char* zone = zones[rng() % 4];
    auto tz = core::TimeZone::find(zone);
    ASSERT_TRUE(tz.has_value());
    for (const char* meter : {"tokens", "tokens_max"}) {
      const bool by_model = std::string(meter) == "tokens";
      // (customer, model or "", window start) -> (sum, max)
      std::map<std::tuple<std::string, std::string, TimeUs>, std::pair<std::int64_t, std::int64_t>>
          expect;
      for (const auto& [key, a] : accepted) {
        if (a.time < from || a.time >= to)
          continue;
        const TimeUs ws =
            *window == '\0' ? from : core::window_start(a.time, *core::parse_window(window), *tz);
        auto [it, fresh] = expect.try_emplace(
            std::make_tuple(a.customer, by_model ? a.model : "", ws), std::make_pair(0, a.n));
        it->second.first += a.n;
        it->second.second = std::max(it->second.second, a.n);
      }
      MeterQuery q;
      q.meter = meter;
      q.from_us = from;
      q.to_us = to;
      q.window = parse_window_name(window);  // "" = none
      q.timezone = zone;
      if (by_model)
        q.group_by = {"model"};
      auto res = e->query(q);
      ASSERT_TRUE(res.has_value()) << res.error().message();
      ASSERT_EQ(res->rows.size(), expect.size()) << meter << " " << window << " " << zone;
      std::size_t i = 0;
      for (const auto& [k, v] : expect) {
        const QueryRow& row = res->rows[i++];
        EXPECT_EQ(row.customer, std::get<0>(k));
        if (by_model) {
          ASSERT_EQ(row.group.size(), 1u);
          EXPECT_EQ(row.group[0].second, std::get<1>(k));
        }
        EXPECT_EQ(row.window_start_us, std::get<2>(k)) << meter << " " << window << " " << zone;
        EXPECT_EQ(row.value, std::to_string(by_model ? v.first : v.second))
            << meter << " " << window << " " << zone << " row " << i;
      }
    }
  }
  auto report = e->verify();
  ASSERT_TRUE(report.has_value());
  EXPECT_TRUE(report->ok()) << (report->differences.empty() ? "" : report->differences[0]);
  EXPECT_EQ(report->events, accepted.size());
}

class EngineDiskTest : public EngineTest {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tally-engine-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }

  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::unique_ptr<Engine> open(const std::string& config) {
    EngineOptions o;
    o.data_dir = dir_;
    o.config_toml = config;
    o.clock = &clock_;
    auto e = Engine::open(o);
    EXPECT_TRUE(e.has_value()) << e.error().message();
    return e ? std::move(*e) : nullptr;
  }

  std::string dir_;
};

TEST_F(EngineDiskTest, StateSurvivesReopen) {
  std::string secret;
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    ASSERT_EQ(
        e->ingest_json(
             R"({"events":[{"id":"a","customer":"c","type":"tokens","time":"2025-01-10T09:00:00Z","properties":{"n":5,"model":"m"}},{"id":"b","customer":"c","type":"api_call","time":"2025-01-10T09:00:00Z","properties":{"user":"u"}}]})")
            ->accepted,
        2u);
    NewApiKeyRequest r;
    r.customer = "c";
    auto k = e->create_key(r);
    ASSERT_TRUE(k.has_value());
    secret = k->secret;
    ASSERT_TRUE(e->authenticate(secret).has_value());
  }
  auto e = open(kConfig);
  ASSERT_TRUE(e);
  EXPECT_EQ(
      e->ingest_json(
           R"({"id":"a","customer":"c","type":"tokens","time":"2025-01-10T09:00:00Z","properties":{"n":5,"model":"m"}})")
          ->duplicates,
      1u);
  EXPECT_EQ(query_total(*e, "tokens", "c", 0, at("2025-02-01T00:00:00Z")), "5");
  EXPECT_EQ(query_total(*e, "users", "c", 0, at("2025-02-01T00:00:00Z")), "1");
  auto id = e->authenticate(secret);
  ASSERT_TRUE(id.has_value());
  EXPECT_EQ(e->list_keys()[0].total_requests, 2u);  // flushed at shutdown or on the commit
  auto report = e->verify();
  ASSERT_TRUE(report.has_value());
  EXPECT_TRUE(report->ok());
  EXPECT_EQ(report->events, 2u);
}

// The three events (tokens, api_call and gauge) numbered `i` of `customer`, on a day, hour and
// minute that follow from `i`; `group_shift` moves their groups (model, service) to new ones.
std::string checkpoint_event(int i, const std::string& customer, int group_shift = 0) {
  const std::string id = std::to_string(i);
  char when[32];
  std::snprintf(when, sizeof when, "2025-01-%02dT%02d:%02d:00Z", 2 + i % 15, (i * 7) % 24,
                (i * 13) % 60);
  return R"({"id":"t)" + id + R"(","customer":")" + customer + R"(","type":"tokens","time":")" +
         when + R"(","properties":{"n":)" + std::to_string(i % 11) + "." + std::to_string(i % 10) +
         R"(,"model":"m)" + std::to_string(i % 3 + group_shift) + R"("}},{"id":"a)" + id +
         R"(","customer":")" + customer + R"(","type":"api_call","time":")" + when +
         R"(","properties":{"service":"s)" + std::to_string(i % 4 + group_shift) +
         R"(","user":"u)" + std::to_string(i % 9) + R"("}},{"id":"g)" + id + R"(","customer":")" +
         customer + R"(","type":"gauge","time":")" + when + R"(","properties":{"count":)" +
         std::to_string(i % 17) + "}}";
}

// Events over several customers (c0 to c6), hours and days for every meter of kConfig, from
// `first_id` on.
std::string checkpoint_events(int first_id, int n) {
  std::string body = R"({"events":[)";
  for (int i = first_id; i < first_id + n; ++i) {
    body += (i != first_id ? "," : "") + checkpoint_event(i, "c" + std::to_string(i % 7));
  }
  return body + "]}";
}

// `n_each` numbers of checkpoint_event for each of `customers`, from `first_id` on.
std::string events_of(const std::vector<std::string>& customers, int first_id, int n_each,
                      int group_shift = 0) {
  std::string body = R"({"events":[)";
  int i = first_id;
  for (const auto& customer : customers) {
    for (int k = 0; k < n_each; ++k, ++i) {
      body += (i != first_id ? "," : "") + checkpoint_event(i, customer, group_shift);
    }
  }
  return body + "]}";
}

// The answers of every meter: per customer and over all of them, by hour, by day in a zone off
// UTC by half an hour, and in total, grouped where the meter groups; and the statistics of
// every customer by hour and by day.
std::string all_answers(Engine& e, const std::vector<std::string>& customers = {"", "c1", "c4"}) {
  std::string out;
  for (const char* meter : {"calls", "tokens", "tokens_max", "tokens_avg", "users", "patients"}) {
    for (const std::string& customer : customers) {
      for (std::optional<Window> window :
           {std::optional<Window>(), std::optional(Window::kHour), std::optional(Window::kDay)}) {
        MeterQuery q;
        q.meter = meter;
        q.customer = customer;
        q.window = window;
        q.timezone = window == Window::kDay ? "Asia/Kolkata" : "UTC";
        q.from_us = at("2025-01-01T00:00:00Z");
        q.to_us = at("2025-01-19T00:00:00Z");
        if (std::string(meter) == "calls") {
          q.group_by = {"service"};
        }
        auto r = e.query(q);
        EXPECT_TRUE(r.has_value()) << r.error().message();
        for (const auto& row : r->rows) {
          out += std::string(meter) + " " + row.customer + " " +
                 std::to_string(row.window_start_us) + " " +
                 (row.group.empty() ? "" : row.group[0].second) + " " + row.value + "\n";
        }
      }
    }
  }
  // Statistics of every customer by hour and by day: read from the group totals.
  for (const char* meter : {"calls", "tokens", "tokens_max", "tokens_avg", "patients"}) {
    for (Window window : {Window::kHour, Window::kDay}) {
      StatsQuery q;
      q.meter = meter;
      q.window = window;
      q.from_us = at("2025-01-01T00:00:00Z");
      q.to_us = at("2025-01-19T00:00:00Z");
      auto r = e.meter_stats(q);
      EXPECT_TRUE(r.has_value()) << r.error().message();
      if (!r) {
        continue;
      }
      out += std::string("stats ") + meter + " " + r->sum + " " + r->min + " " + r->max + ":";
      for (const auto& p : r->window_over_window) {
        out += " " + p.value;
      }
      out += "\n";
    }
  }
  return out;
}

TEST_F(EngineDiskTest, ACleanStopCheckpointsTheAggregatesAndTheNextOpenReadsThem) {
  const std::string checkpoint = dir_ + "/aggregates.checkpoint";
  std::string answers;
  std::uint64_t live = 0;
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 600))->accepted, 1800u);
    EXPECT_FALSE(e->stats().aggregates_from_checkpoint);
    answers = all_answers(*e);
    live = e->stats().aggregates_live;
  }
  ASSERT_NE(answers.find("tokens c4 "), std::string::npos);  // something to compare
  ASSERT_NE(answers.find("users c1 "), std::string::npos);
  ASSERT_TRUE(std::filesystem::exists(checkpoint));
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    EXPECT_TRUE(e->stats().aggregates_from_checkpoint);
    EXPECT_TRUE(std::filesystem::exists(checkpoint))
        << "a file used stays valid: what is committed after it is read from the store";
    EXPECT_EQ(all_answers(*e), answers);
    EXPECT_EQ(e->stats().aggregates_live, live);
    // What was read back takes new usage, late and current, as memory built from the store does.
    ASSERT_EQ(e->ingest_json(checkpoint_events(600, 300))->accepted, 900u);
    answers = all_answers(*e);
    live = e->stats().aggregates_live;
    auto report = e->verify();
    ASSERT_TRUE(report.has_value());
    EXPECT_TRUE(report->ok()) << (report->differences.empty() ? "" : report->differences[0]);
  }
  // The same answers from the checkpoint and from the store's records.
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    EXPECT_TRUE(e->stats().aggregates_from_checkpoint);
    EXPECT_EQ(all_answers(*e), answers);
  }
  std::filesystem::remove(checkpoint);
  auto e = open(kConfig);
  ASSERT_TRUE(e);
  EXPECT_FALSE(e->stats().aggregates_from_checkpoint);
  EXPECT_EQ(all_answers(*e), answers);
  EXPECT_EQ(e->stats().aggregates_live, live);
}

TEST_F(EngineDiskTest, AnOlderCheckpointIsBroughtUpToTheStoreAndADamagedOneIsNotRead) {
  const std::string checkpoint = dir_ + "/aggregates.checkpoint";
  const std::string stale = dir_ + "/stale.checkpoint";
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 200))->accepted, 600u);
  }
  std::filesystem::copy_file(checkpoint, stale);
  std::string answers;
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(events_of({"c1", "c4"}, 200, 50))->accepted, 300u);
    answers = all_answers(*e);
  }
  // As if the last stop had been a crash after an older clean stop: the file is older than the
  // store's sequence numbers, so the customers of every later event (two) are read again.
  std::filesystem::copy_file(stale, checkpoint, std::filesystem::copy_options::overwrite_existing);
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    EXPECT_TRUE(e->stats().aggregates_from_checkpoint);
    EXPECT_EQ(e->stats().aggregates_customers_reloaded, 2u);
    EXPECT_EQ(all_answers(*e), answers);
  }
  // A byte changed in the middle.
  ASSERT_TRUE(std::filesystem::exists(checkpoint));
  {
    std::FILE* f = std::fopen(checkpoint.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    const long middle = static_cast<long>(std::filesystem::file_size(checkpoint) / 2);
    std::fseek(f, middle, SEEK_SET);
    const int c = std::fgetc(f);
    std::fseek(f, middle, SEEK_SET);
    std::fputc(c ^ 0x5A, f);
    std::fclose(f);
  }
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    EXPECT_FALSE(e->stats().aggregates_from_checkpoint);
    EXPECT_FALSE(std::filesystem::exists(checkpoint)) << "a writer removes a file it rejects";
    EXPECT_EQ(all_answers(*e), answers);
  }
  // Cut short.
  std::filesystem::resize_file(checkpoint, std::filesystem::file_size(checkpoint) - 40);
  auto e = open(kConfig);
  ASSERT_TRUE(e);
  EXPECT_FALSE(e->stats().aggregates_from_checkpoint);
  EXPECT_EQ(all_answers(*e), answers);
}

// ---- the checkpoint written while running, and a crash after it ------------------------------
//
// A crash leaves the store with every commit written before it and the checkpoint file of the
// last periodic write. The tests make that state without killing the process: they keep a copy
// of the file written at S, go on committing, stop, and put the copy back over the file the
// clean stop wrote. Each then compares every answer with the running engine's and with a full
// load of the store's records.

constexpr const char* kNoPeriodicCheckpoint = "\n[storage]\ncheckpoint_interval_seconds = 0\n";
const std::vector<std::string> kSevenCustomers = {"", "c0", "c1", "c2", "c3", "c4", "c5", "c6"};

class EngineCheckpointTest : public EngineDiskTest {
 protected:
  std::string checkpoint() const { return dir_ + "/aggregates.checkpoint"; }

  std::string kept() const { return dir_ + "/kept.checkpoint"; }

  // Writes a checkpoint now, as the periodic thread does, and keeps a copy of it.
  void checkpoint_and_keep(Engine& e) {
    ASSERT_TRUE(Engine::Impl::of(e).write_checkpoint_now().ok());
    ASSERT_TRUE(std::filesystem::exists(checkpoint()));
    std::filesystem::copy_file(checkpoint(), kept(),
                               std::filesystem::copy_options::overwrite_existing);
  }

  // The crash: the kept file back over the one the clean stop wrote.
  void crash() {
    std::filesystem::copy_file(kept(), checkpoint(),
                               std::filesystem::copy_options::overwrite_existing);
  }

  // Reopens after crash(): the checkpoint is used with `reloaded` customers read again, answers
  // as `answers` (for `customers`) with `live` minute aggregates, and verify finds nothing; then
  // the same from a full load of the store's records.
  void expect_recovered(const std::string& config, std::uint64_t reloaded,
                        const std::vector<std::string>& customers, const std::string& answers,
                        std::uint64_t live) {
    {
      auto e = open(config);
      ASSERT_TRUE(e);
      EXPECT_TRUE(e->stats().aggregates_from_checkpoint);
      EXPECT_EQ(e->stats().aggregates_customers_reloaded, reloaded);
      EXPECT_TRUE(std::filesystem::exists(checkpoint())) << "a file used stays valid";
      EXPECT_EQ(all_answers(*e, customers), answers);
      EXPECT_EQ(e->stats().aggregates_live, live);
      auto report = e->verify();
      ASSERT_TRUE(report.has_value());
      EXPECT_TRUE(report->ok()) << (report->differences.empty() ? "" : report->differences[0]);
    }
    std::filesystem::remove(checkpoint());
    auto e = open(config);
    ASSERT_TRUE(e);
    EXPECT_FALSE(e->stats().aggregates_from_checkpoint);
    EXPECT_EQ(all_answers(*e, customers), answers);
    EXPECT_EQ(e->stats().aggregates_live, live);
  }
};

TEST_F(EngineCheckpointTest, ACrashAfterACheckpointReloadsOnlyTheCustomersCommittedAfterIt) {
  const std::string config = std::string(kConfig) + kNoPeriodicCheckpoint;
  std::string answers;
  std::uint64_t live = 0;
  {
    auto e = open(config);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 600))->accepted, 1800u);
    checkpoint_and_keep(*e);
    // After S: two of the seven customers, in minutes they had and in new ones.
    ASSERT_EQ(e->ingest_json(events_of({"c1", "c4"}, 600, 40))->accepted, 240u);
    ASSERT_EQ(e->ingest_json(events_of({"c4"}, 5, 1))->accepted, 3u);  // numbers used before
    answers = all_answers(*e, kSevenCustomers);
    live = e->stats().aggregates_live;
  }
  ASSERT_NE(answers.find("tokens c4 "), std::string::npos);
  crash();
  expect_recovered(config, 2, kSevenCustomers, answers, live);
}

TEST_F(EngineCheckpointTest, MostCustomersCommittedAfterTheCheckpointMeanTheFullLoad) {
  const std::string config = std::string(kConfig) + kNoPeriodicCheckpoint;
  std::string answers;
  {
    auto e = open(config);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 300))->accepted, 900u);
    checkpoint_and_keep(*e);
    ASSERT_EQ(e->ingest_json(events_of({"c0", "c2", "c3", "c5"}, 300, 10))->accepted, 120u);
    answers = all_answers(*e, kSevenCustomers);
  }
  crash();
  // Four of seven: reading every stored record once is cheaper than four customers' ranges.
  auto e = open(config);
  ASSERT_TRUE(e);
  EXPECT_FALSE(e->stats().aggregates_from_checkpoint);
  EXPECT_TRUE(std::filesystem::exists(checkpoint())) << "still valid: kept";
  EXPECT_EQ(all_answers(*e, kSevenCustomers), answers);
}

TEST_F(EngineCheckpointTest, CustomersAndGroupsNewAfterTheCheckpointAreReadFromTheStore) {
  const std::string config = std::string(kConfig) + kNoPeriodicCheckpoint;
  std::vector<std::string> customers = kSevenCustomers;
  customers.push_back("n1");
  customers.push_back("n2");
  std::string answers;
  std::uint64_t live = 0;
  {
    auto e = open(config);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 300))->accepted, 900u);
    checkpoint_and_keep(*e);
    ASSERT_EQ(e->ingest_json(events_of({"n1", "n2"}, 300, 20))->accepted, 120u);
    ASSERT_EQ(e->ingest_json(events_of({"c2"}, 400, 20, 10))->accepted, 60u);  // new groups
    answers = all_answers(*e, customers);
    live = e->stats().aggregates_live;
  }
  ASSERT_NE(answers.find("calls c2 "), std::string::npos);
  ASSERT_NE(answers.find(" s11 "), std::string::npos);  // a group made after S
  ASSERT_NE(answers.find("tokens n2 "), std::string::npos);
  crash();
  expect_recovered(config, 3, customers, answers, live);
}

TEST_F(EngineCheckpointTest, EventsCommittedWhileTheCheckpointIsWrittenAreReadFromTheStore) {
  const std::string config = std::string(kConfig) + kNoPeriodicCheckpoint;
  std::vector<std::string> customers = kSevenCustomers;
  customers.push_back("n1");
  std::string answers;
  std::uint64_t live = 0;
  {
    auto e = open(config);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 600))->accepted, 1800u);
    // Commits between the writer's lock holds: after the first customer of the first meter is
    // copied (c0 then goes on changing, in every meter), before c3 is, and a new customer.
    int chunks = 0;
    Engine::Impl::of(*e).checkpoint_between_chunks = [&] {
      ++chunks;
      if (chunks == 1) {
        EXPECT_EQ(e->ingest_json(events_of({"c0", "c3", "n1"}, 600, 15))->accepted, 135u);
      } else if (chunks == 12) {
        EXPECT_EQ(e->ingest_json(events_of({"c5"}, 700, 10, 5))->accepted, 30u);
      }
    };
    checkpoint_and_keep(*e);
    Engine::Impl::of(*e).checkpoint_between_chunks = nullptr;
    EXPECT_GT(chunks, 12);
    answers = all_answers(*e, customers);
    live = e->stats().aggregates_live;
  }
  crash();
  expect_recovered(config, 4, customers, answers, live);
}

TEST_F(EngineCheckpointTest, AStopAbandonsAWriteUnderWayAndTheCleanStopWritesItsOwn) {
  std::string answers;
  {
    auto e = open(std::string(kConfig) + kNoPeriodicCheckpoint);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 300))->accepted, 900u);
    Engine::Impl& d = Engine::Impl::of(*e);
    int chunks = 0;
    d.checkpoint_between_chunks = [&] {
      if (++chunks == 3) {
        d.checkpoint_abandon = true;  // as stop() does
      }
    };
    const Status s = d.write_checkpoint_now();
    EXPECT_EQ(s.code(), StatusCode::kUnavailable) << s.message();
    EXPECT_EQ(chunks, 3) << "given up at the next chunk";
    EXPECT_FALSE(std::filesystem::exists(checkpoint()));
    d.checkpoint_between_chunks = nullptr;
    d.checkpoint_abandon = false;
    answers = all_answers(*e, kSevenCustomers);
  }
  auto e = open(std::string(kConfig) + kNoPeriodicCheckpoint);
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->stats().aggregates_from_checkpoint);
  EXPECT_EQ(all_answers(*e, kSevenCustomers), answers);
}

TEST_F(EngineCheckpointTest, ACheckpointOfOtherMetersIsRemovedAndTheStoreRead) {
  const std::string without_patients =
      std::string(kConfig).substr(0, std::string(kConfig).find("[[meters]]\nkey = \"patients\""));
  ASSERT_LT(without_patients.size(), std::string(kConfig).size());
  std::string answers;
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 200))->accepted, 600u);
    answers = all_answers(*e);
  }
  ASSERT_TRUE(std::filesystem::exists(checkpoint()));
  {
    auto e = open(without_patients);  // one meter fewer: the file's meters differ
    ASSERT_TRUE(e);
    EXPECT_FALSE(e->stats().aggregates_from_checkpoint);
    EXPECT_FALSE(std::filesystem::exists(checkpoint())) << "a writer removes a file it rejects";
  }
  ASSERT_TRUE(std::filesystem::exists(checkpoint()));  // of the five meters, at its clean stop
  std::filesystem::copy_file(checkpoint(), kept());
  // "patients" back: rebuilt from the events, and the file goes with the rebuild (a file of the
  // six meters written before, put back, would hold the meter's old series).
  std::filesystem::remove(checkpoint());
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    EXPECT_FALSE(e->stats().aggregates_from_checkpoint);
    EXPECT_EQ(all_answers(*e), answers);
  }
  std::filesystem::copy_file(kept(), checkpoint(),
                             std::filesystem::copy_options::overwrite_existing);
  auto e = open(kConfig);  // the five-meter file: rejected, removed
  ASSERT_TRUE(e);
  EXPECT_FALSE(e->stats().aggregates_from_checkpoint);
  EXPECT_FALSE(std::filesystem::exists(checkpoint()));
  EXPECT_EQ(all_answers(*e), answers);
}

// The periodic thread writes when there is something new; with an interval of 0 it does not
// run. Both wait on the real clock, for a second or two.
TEST_F(EngineCheckpointTest, ThePeriodicCheckpointIsWrittenEveryIntervalAndNotWhenItIsZero) {
  {
    auto e = open(std::string(kConfig) + kNoPeriodicCheckpoint);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 100))->accepted, 300u);
    std::this_thread::sleep_for(std::chrono::milliseconds(2500));
    EXPECT_FALSE(std::filesystem::exists(checkpoint())) << "interval 0: only at a clean stop";
  }
  ASSERT_TRUE(std::filesystem::exists(checkpoint()));
  std::filesystem::remove(checkpoint());
  const std::string every_second =
      std::string(kConfig) + "\n[storage]\ncheckpoint_interval_seconds = 1\n";
  std::string answers;
  std::uint64_t live = 0;
  {
    auto e = open(every_second);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(100, 200))->accepted, 600u);
    for (int i = 0; i < 100 && !std::filesystem::exists(checkpoint()); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ASSERT_TRUE(std::filesystem::exists(checkpoint())) << "none within 10 s";
    std::filesystem::copy_file(checkpoint(), kept());
    // Periodic files are whole (written aside, then renamed): this one is read after the crash.
    ASSERT_EQ(e->ingest_json(events_of({"c6"}, 300, 10))->accepted, 30u);
    answers = all_answers(*e, kSevenCustomers);
    live = e->stats().aggregates_live;
  }
  crash();
  expect_recovered(every_second, 1, kSevenCustomers, answers, live);
}

TEST_F(EngineDiskTest, ChangedMeterIsRebuiltFromEvents) {
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    ASSERT_EQ(
        e->ingest_json(
             R"({"events":[{"id":"a","customer":"c","type":"tokens","time":"2025-01-10T09:00:00Z","properties":{"n":5,"model":"m1"}},{"id":"b","customer":"c","type":"tokens","time":"2025-01-10T09:00:00Z","properties":{"n":7,"model":"m2"}}]})")
            ->accepted,
        2u);
  }
  const std::string changed = R"(
[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"
filter = { model = "m2" }
)";
  auto e = open(changed);
  ASSERT_TRUE(e);
  EXPECT_EQ(query_total(*e, "tokens", "c", 0, at("2025-02-01T00:00:00Z")), "7");
  EXPECT_TRUE(e->verify()->ok());
}

TEST_F(EngineDiskTest, MeterRemovedAndReAddedCountsEventsFromMeanwhile) {
  const std::string only_calls = R"(
[server]
accept_unmetered_events = true

[[meters]]
key = "calls"
event_type = "api_call"
aggregation = "count"
group_by = ["service"]
)";
  const std::string with_tokens = only_calls + R"(
[[meters]]
key = "tokens"
event_type = "tokens"
aggregation = "sum"
value = "$.n"
)";
  {
    auto e = open(with_tokens);
    ASSERT_TRUE(e);
    ASSERT_EQ(
        e->ingest_json(
             R"({"id":"a","customer":"c","type":"tokens","time":"2025-01-10T09:00:00Z","properties":{"n":5}})")
            ->accepted,
        1u);
  }
  {
    auto e = open(only_calls);  // "tokens" removed: its events are stored, not aggregated
    ASSERT_TRUE(e);
    ASSERT_EQ(
        e->ingest_json(
             R"({"id":"b","customer":"c","type":"tokens","time":"2025-01-11T09:00:00Z","properties":{"n":7}})")
            ->accepted,
        1u);
  }
  auto e = open(with_tokens);  // re-added unchanged: rebuilt from every stored event
  ASSERT_TRUE(e);
  EXPECT_EQ(query_total(*e, "tokens", "c", 0, at("2025-02-01T00:00:00Z")), "12");
  auto report = e->verify();
  ASSERT_TRUE(report.has_value());
  EXPECT_TRUE(report->ok()) << (report->differences.empty() ? "" : report->differences[0]);
}

// Verify compares the stored records customer by customer: a changed, a missing and an extra
// aggregate or distinct value is named wherever it sits, before the first customer, between
// two, after the last, or for a customer number nobody has.
TEST_F(EngineDiskTest, VerifyNamesEveryStoredRecordItsEventsDoNotExplain) {
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    for (const char* customer : {"a", "b", "c"}) {
      const std::string c(customer);
      ASSERT_EQ(
          e->ingest_json(
               R"({"events":[{"id":"1","customer":")" + c +
               R"(","type":"api_call","time":"2025-01-10T09:00:00Z","properties":{"service":"s","user":"u"}},{"id":"2","customer":")" +
               c +
               R"(","type":"tokens","time":"2025-01-10T09:01:00Z","properties":{"n":4,"model":"m"}}]})")
              ->accepted,
          2u);
    }
    auto clean = e->verify();
    ASSERT_TRUE(clean.has_value()) << clean.error().message();
    ASSERT_TRUE(clean->ok()) << clean->differences[0];
    EXPECT_EQ(clean->events, 6u);
  }
  const TimeUs nine = at("2025-01-10T09:00:00Z");
  const TimeUs ten = at("2025-01-10T10:00:00Z");
  {
    store::RocksOptions ro;
    ro.path = dir_;
    auto st = store::open_rocksdb_store(ro);
    ASSERT_TRUE(st.has_value()) << st.error().message();
    auto& s = **st;
    core::AggState one;
    one.add(core::Decimal::from_int(1), ten, 1);
    // Customer numbers 1, 2, 3 are a, b, c.
    const std::string a_calls = engine::aggregate_key("calls", 1, nine, "s");
    auto v = s.get(store::Space::kAggregates, a_calls);
    ASSERT_TRUE(v.has_value() && v->has_value());
    core::AggState changed;
    ASSERT_TRUE(engine::decode_agg_state(**v, &changed));
    changed.add(core::Decimal::from_int(1), nine + 1, 999);
    store::WriteBatch wb;
    wb.put(store::Space::kAggregates, a_calls, engine::encode_agg_state(changed));
    wb.del(store::Space::kAggregates,
           engine::aggregate_key("tokens", 3, nine + core::kUsPerMinute, "m"));
    wb.put(store::Space::kAggregates, engine::aggregate_key("calls", 0, ten, "s"),
           engine::encode_agg_state(one));
    wb.put(store::Space::kAggregates, engine::aggregate_key("calls", 2, ten, "s"),
           engine::encode_agg_state(one));
    wb.put(store::Space::kAggregates, engine::aggregate_key("tokens", 99, ten, "m"),
           engine::encode_agg_state(one));
    wb.del(store::Space::kUniques, engine::unique_key("users", 2, nine, "", "u"));
    wb.put(store::Space::kUniques, engine::unique_key("users", 3, ten, "", "v"), "");
    ASSERT_TRUE(s.write(wb, true).ok());
  }
  auto e = open(kConfig);
  ASSERT_TRUE(e);
  auto report = e->verify();
  ASSERT_TRUE(report.has_value()) << report.error().message();
  EXPECT_EQ(report->events, 6u);
  const std::vector<std::string> want = {
      "meter 'calls', customer 'a', minute 2025-01-10T09:00:00Z: stored count 2 sum 2, "
      "recomputed count 1 sum 1",
      "meter 'tokens', customer 'c', minute 2025-01-10T09:01:00Z: events with no stored aggregate",
      "meter 'calls', customer '0', minute 2025-01-10T10:00:00Z: stored aggregate has no events",
      "meter 'calls', customer 'b', minute 2025-01-10T10:00:00Z: stored aggregate has no events",
      "meter 'tokens', customer '99', minute 2025-01-10T10:00:00Z: stored aggregate has no events",
      "a distinct value of the events is not stored",
      "meter 'users': a stored distinct value has no event",
  };
  for (const auto& w : want) {
    EXPECT_TRUE(std::any_of(report->differences.begin(), report->differences.end(),
                            [&](const std::string& d) { return d.find(w) != std::string::npos; }))
        << "missing: " << w;
  }
  EXPECT_EQ(report->differences.size(), want.size());
  if (report->differences.size() != want.size()) {
    for (const auto& d : report->differences) {
      ADD_FAILURE() << "difference: " << d;
    }
  }
}

// A customer's every event stored twice (its blocks copied under later sequences, as a faulty
// commit might) is named once per id, however many ids the customer has.
TEST_F(EngineDiskTest, VerifyNamesEveryIdStoredTwice) {
  constexpr int kEvents = 1500;
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    for (int first = 0; first < kEvents; first += 500) {
      std::string body = R"({"events":[)";
      for (int i = first; i < first + 500; ++i) {
        body +=
            (i > first ? "," : "") + std::string(R"({"id":"e)") + std::to_string(i) +
            R"(","customer":"a","type":"api_call","time":"2025-01-10T09:00:00Z","properties":{"service":"s"}})";
      }
      body += "]}";
      ASSERT_EQ(e->ingest_json(body)->accepted, 500u);
    }
    ASSERT_EQ(
        e->ingest_json(
             R"({"events":[{"id":"e1","customer":"b","type":"api_call","time":"2025-01-10T09:00:00Z","properties":{"service":"s"}}]})")
            ->accepted,
        1u);
    auto clean = e->verify();
    ASSERT_TRUE(clean.has_value()) << clean.error().message();
    ASSERT_TRUE(clean->ok()) << clean->differences[0];  // ids repeat across customers, not within
  }
  {
    store::RocksOptions ro;
    ro.path = dir_;
    auto st = store::open_rocksdb_store(ro);
    ASSERT_TRUE(st.has_value()) << st.error().message();
    auto& s = **st;
    std::string a_first;
    common::put_be32(a_first, 1);  // customer number 1 is a
    std::string a_end;
    common::put_be32(a_end, 2);
    store::WriteBatch copies;
    ASSERT_TRUE(
        s.scan(store::Space::kEvents, a_first, a_end, [&](std::string_view k, std::string_view v) {
           std::string later = a_first;
           common::put_be64(later, common::read_be64(k.substr(4)) + 1000000);
           copies.put(store::Space::kEvents, later, std::string(v));
           return true;
         }).ok());
    ASSERT_FALSE(copies.empty());
    ASSERT_TRUE(s.write(copies, true).ok());
  }
  auto e = open(kConfig);
  ASSERT_TRUE(e);
  auto report = e->verify();
  ASSERT_TRUE(report.has_value()) << report.error().message();
  EXPECT_EQ(report->events, 2u * kEvents + 1);
  std::set<std::string> twice;
  for (const auto& d : report->differences) {
    if (d.find("is stored twice") != std::string::npos) {
      twice.insert(d);
    }
  }
  EXPECT_EQ(twice.size(), static_cast<std::size_t>(kEvents));
  EXPECT_EQ(twice.count("event id 'e0' of customer 'a' is stored twice"), 1u);
  EXPECT_EQ(twice.count("event id 'e1499' of customer 'a' is stored twice"), 1u);
  EXPECT_EQ(twice.count("event id 'e1' of customer 'b' is stored twice"), 0u);
}

// Events stored out of time order (late, and a minute counted again long after) recount to the
// stored aggregates, and a changed or missing one among them is still named.
TEST_F(EngineDiskTest, VerifyRecountsEventsStoredOutOfTimeOrder) {
  const TimeUs nine = at("2025-01-10T09:00:00Z");
  auto event = [&](int n, int minute) {
    return R"({"id":"e)" + std::to_string(n) + R"(","customer":"a","type":"api_call","time":")" +
           core::format_rfc3339(nine + minute * core::kUsPerMinute) +
           R"(","properties":{"service":"s","user":"u"}})";
  };
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    std::string body = R"({"events":[)";
    for (int minute = 39; minute >= 0; --minute) {  // newest first
      body += event(39 - minute, minute) + ",";
    }
    body += event(40, 35) + "]}";  // minute 35 again, 35 events later
    ASSERT_EQ(e->ingest_json(body)->accepted, 41u);
    auto clean = e->verify();
    ASSERT_TRUE(clean.has_value()) << clean.error().message();
    ASSERT_TRUE(clean->ok()) << clean->differences[0];
  }
  {
    store::RocksOptions ro;
    ro.path = dir_;
    auto st = store::open_rocksdb_store(ro);
    ASSERT_TRUE(st.has_value()) << st.error().message();
    auto& s = **st;
    core::AggState one;
    one.add(core::Decimal::from_int(1), nine, 1);
    store::WriteBatch wb;
    wb.del(store::Space::kAggregates,
           engine::aggregate_key("calls", 1, nine + 3 * core::kUsPerMinute, "s"));
    wb.put(store::Space::kAggregates,
           engine::aggregate_key("calls", 1, nine + 35 * core::kUsPerMinute, "s"),
           engine::encode_agg_state(one));
    ASSERT_TRUE(s.write(wb, true).ok());
  }
  auto e = open(kConfig);
  ASSERT_TRUE(e);
  auto report = e->verify();
  ASSERT_TRUE(report.has_value()) << report.error().message();
  ASSERT_EQ(report->differences.size(), 2u);
  std::sort(report->differences.begin(), report->differences.end());
  EXPECT_NE(report->differences[0].find("minute 2025-01-10T09:03:00Z: events with no stored "
                                        "aggregate (count 1)"),
            std::string::npos)
      << report->differences[0];
  EXPECT_NE(report->differences[1].find("minute 2025-01-10T09:35:00Z: stored count 1 sum 1, "
                                        "recomputed count 2 sum 2"),
            std::string::npos)
      << report->differences[1];
}

// ---- the minute horizon (storage.memory_minutes_hours; engine/minute_horizon.cc) -------------

// kConfig with a horizon of `hours` (0: every minute held).
std::string with_horizon(int hours) {
  return std::string(kConfig) + "\n[storage]\nmemory_minutes_hours = " + std::to_string(hours) +
         "\n";
}

// Minute aggregates held in memory that start before `t`, over every series.
std::size_t minutes_held_before(Engine& e, TimeUs t) {
  std::size_t n = 0;
  const Engine::Impl& d = Engine::Impl::of(e);
  std::shared_lock lock(d.state_mutex);
  for (const auto& ma : d.meter_aggregates) {
    for (const auto& [cnum, by_group] : ma.series) {
      for (const auto& [gid, s] : by_group) {
        s.for_each(core::kUsPerMinute, std::numeric_limits<TimeUs>::min(), t,
                   [&](TimeUs, const core::AggState&) { ++n; });
      }
    }
  }
  return n;
}

// all_answers, and windows that need old minutes: minute windows, ragged ranges, the usage of
// one customer from a half hour, a +05:30 hour (Asia/Kolkata) with distinct values.
std::string horizon_answers(Engine& e) {
  std::string out = all_answers(e, {"", "c0", "c1", "c2", "c3", "c4", "c5", "c6"});
  for (const char* meter : {"calls", "tokens", "tokens_max", "users", "patients"}) {
    for (const char* customer : {"", "c2", "c5"}) {
      for (Window window : {Window::kMinute, Window::kHour, Window::kDay}) {
        MeterQuery q;
        q.meter = meter;
        q.customer = customer;
        q.window = window;
        q.timezone = "Asia/Kolkata";
        q.from_us = at("2025-01-02T05:17:00Z");
        q.to_us = at("2025-01-08T19:43:00Z");
        auto r = e.query(q);
        EXPECT_TRUE(r.has_value()) << r.error().message();
        if (!r) {
          continue;
        }
        for (const auto& row : r->rows) {
          out += std::string(meter) + " " + row.customer + " " +
                 std::to_string(row.window_start_us) + " " + row.value + "\n";
        }
      }
    }
  }
  for (const char* customer : {"c0", "c3", "c6"}) {
    auto u = e.customer_usage(customer, at("2025-01-03T10:30:00Z"), at("2025-01-11T07:11:00Z"));
    EXPECT_TRUE(u.has_value()) << u.error().message();
    if (!u) {
      continue;
    }
    for (const auto& m : u->meters) {
      out += std::string("usage ") + customer + " " + m.meter + " " + m.value + "\n";
    }
  }
  return out;
}

TEST_F(EngineDiskTest, MinutesBeforeTheHorizonAreNotHeldAndAnswerAsWhenAllAre) {
  // The clock is 2025-01-20T12:00Z: a horizon of 8 days holds minutes from 2025-01-12T12:00Z,
  // so the events (2025-01-02 to 2025-01-16) are half before it, half after.
  const TimeUs horizon = at("2025-01-12T12:00:00Z");
  const std::string all_dir = dir_ + "/all";
  std::filesystem::create_directories(all_dir);
  EngineOptions o;
  o.data_dir = all_dir;
  o.config_toml = with_horizon(0);
  o.clock = &clock_;
  auto opened = Engine::open(o);
  ASSERT_TRUE(opened.has_value()) << opened.error().message();
  std::unique_ptr<Engine> all = std::move(*opened);
  const std::string bounded_dir = dir_ + "/bounded";
  std::filesystem::create_directories(bounded_dir);
  o.data_dir = bounded_dir;
  o.config_toml = with_horizon(8 * 24);
  opened = Engine::open(o);
  ASSERT_TRUE(opened.has_value()) << opened.error().message();
  std::unique_ptr<Engine> bounded = std::move(*opened);

  ASSERT_EQ(all->ingest_json(checkpoint_events(0, 700))->accepted, 2100u);
  ASSERT_EQ(bounded->ingest_json(checkpoint_events(0, 700))->accepted, 2100u);
  const std::string want = horizon_answers(*all);
  ASSERT_NE(want.find("users c2 "), std::string::npos);  // something to compare
  EXPECT_EQ(horizon_answers(*bounded), want);
  EXPECT_GT(minutes_held_before(*all, horizon), 0u);
  EXPECT_EQ(minutes_held_before(*bounded, horizon), 0u);
  EXPECT_LT(bounded->stats().aggregates_live, all->stats().aggregates_live);
  EXPECT_GT(bounded->stats().aggregates_live, 0u);

  // Late events before the horizon, into minutes that have data and into new ones, with new
  // and known distinct values: counted exactly, in the answers and in the store's records.
  const std::string late =
      R"({"events":[{"id":"late1","customer":"c1","type":"tokens","time":"2025-01-03T07:13:20Z","properties":{"n":4.5,"model":"m0"}},)"
      R"({"id":"late2","customer":"c1","type":"api_call","time":"2025-01-03T07:13:40Z","properties":{"service":"s1","user":"u-new"}},)"
      R"({"id":"late3","customer":"c4","type":"api_call","time":"2025-01-05T01:02:03Z","properties":{"service":"s0","user":"u1"}},)"
      R"({"id":"late4","customer":"c4","type":"gauge","time":"2025-01-05T01:02:04Z","properties":{"count":99}}]})";
  ASSERT_EQ(all->ingest_json(late)->accepted, 4u);
  ASSERT_EQ(bounded->ingest_json(late)->accepted, 4u);
  const std::string after_late = horizon_answers(*all);
  EXPECT_NE(after_late, want);
  EXPECT_EQ(horizon_answers(*bounded), after_late);
  EXPECT_EQ(minutes_held_before(*bounded, horizon), 0u);
  auto report = bounded->verify();
  ASSERT_TRUE(report.has_value()) << report.error().message();
  EXPECT_TRUE(report->ok()) << report->differences[0];
  const std::uint64_t live = bounded->stats().aggregates_live;

  // A restart from the checkpoint of a clean stop, then from the store's records alone.
  bounded.reset();
  ASSERT_TRUE(std::filesystem::exists(bounded_dir + "/aggregates.checkpoint"));
  o.data_dir = bounded_dir;
  o.config_toml = with_horizon(8 * 24);
  for (bool from_checkpoint : {true, false}) {
    if (!from_checkpoint) {
      std::filesystem::remove(bounded_dir + "/aggregates.checkpoint");
    }
    opened = Engine::open(o);
    ASSERT_TRUE(opened.has_value()) << opened.error().message();
    bounded = std::move(*opened);
    EXPECT_EQ(bounded->stats().aggregates_from_checkpoint, from_checkpoint);
    EXPECT_EQ(minutes_held_before(*bounded, horizon), 0u);
    EXPECT_EQ(bounded->stats().aggregates_live, live);
    EXPECT_EQ(horizon_answers(*bounded), after_late);
    bounded.reset();
  }

  // A checkpoint written with every minute held is read by an engine with a horizon: the file's
  // older minutes are dropped as it is read.
  all.reset();
  o.data_dir = all_dir;
  ASSERT_TRUE(std::filesystem::exists(all_dir + "/aggregates.checkpoint"));
  opened = Engine::open(o);
  ASSERT_TRUE(opened.has_value()) << opened.error().message();
  EXPECT_TRUE((*opened)->stats().aggregates_from_checkpoint);
  EXPECT_EQ(minutes_held_before(**opened, horizon), 0u);
  EXPECT_EQ(horizon_answers(**opened), after_late);
}

TEST_F(EngineDiskTest, TheHorizonMovesOnWithTheClockAndVerifyReadsTheStore) {
  const std::string config = with_horizon(8 * 24);
  std::string want;
  {
    auto e = open(config);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 500))->accepted, 1500u);
    want = horizon_answers(*e);
    const std::uint64_t live = e->stats().aggregates_live;
    EXPECT_GT(minutes_held_before(*e, at("2025-01-15T12:00:00Z")), 0u);
    // Three days on: the minutes of the three days after the old horizon go too.
    clock_.advance_us(3 * core::kUsPerDay);
    ASSERT_TRUE(Engine::Impl::of(*e).forget_old_minutes().ok());
    EXPECT_EQ(minutes_held_before(*e, at("2025-01-15T12:00:00Z")), 0u);
    EXPECT_LT(e->stats().aggregates_live, live);
    EXPECT_EQ(horizon_answers(*e), want);
    // Nothing more to drop within the same hour.
    const std::uint64_t now_live = e->stats().aggregates_live;
    ASSERT_TRUE(Engine::Impl::of(*e).forget_old_minutes().ok());
    EXPECT_EQ(e->stats().aggregates_live, now_live);
    auto report = e->verify();
    ASSERT_TRUE(report.has_value()) << report.error().message();
    EXPECT_TRUE(report->ok()) << report->differences[0];
  }
  // A tampered record of a minute no longer held is found by verify, and read by queries.
  const TimeUs old_minute = at("2025-01-03T07:13:00Z");  // checkpoint_event(1, "c1")
  {
    store::RocksOptions ro;
    ro.path = dir_;
    auto st = store::open_rocksdb_store(ro);
    ASSERT_TRUE(st.has_value()) << st.error().message();
    // Customer numbers follow first sight: c0 is 1, c1 is 2.
    const std::string key = engine::aggregate_key("calls", 2, old_minute, "s1");
    auto v = (*st)->get(store::Space::kAggregates, key);
    ASSERT_TRUE(v.has_value() && v->has_value());
    core::AggState changed;
    ASSERT_TRUE(engine::decode_agg_state(**v, &changed));
    changed.add(core::Decimal::from_int(1), old_minute + 1, 999);
    store::WriteBatch wb;
    wb.put(store::Space::kAggregates, key, engine::encode_agg_state(changed));
    ASSERT_TRUE((*st)->write(wb, true).ok());
  }
  auto e = open(config);
  ASSERT_TRUE(e);
  EXPECT_EQ(minutes_held_before(*e, at("2025-01-15T12:00:00Z")), 0u);
  auto report = e->verify();
  ASSERT_TRUE(report.has_value()) << report.error().message();
  ASSERT_EQ(report->differences.size(), 1u);
  EXPECT_NE(report->differences[0].find("meter 'calls', customer 'c1', minute "
                                        "2025-01-03T07:13:00Z: stored count 2"),
            std::string::npos)
      << report->differences[0];
}

// ---- the dedup table written at a clean stop (engine/dedup_file.h) ---------------------------

TEST_F(EngineDiskTest, EveryDuplicateIsCaughtAfterARestartFromTheDedupTableAndACrashPastIt) {
  const std::string table = dir_ + "/dedup.checkpoint";
  const std::string stale = dir_ + "/stale.dedup";
  // Three events per number: 900 ids.
  auto expect_duplicates = [](Engine& e, int first_id, int n) {
    auto again = e.ingest_json(checkpoint_events(first_id, n));
    ASSERT_TRUE(again.has_value()) << again.error().message();
    EXPECT_EQ(again->accepted, 0u);
    EXPECT_EQ(again->duplicates, static_cast<std::uint32_t>(3 * n));
  };
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    ASSERT_EQ(e->ingest_json(checkpoint_events(0, 300))->accepted, 900u);
  }
  ASSERT_TRUE(std::filesystem::exists(table));
  std::filesystem::copy_file(table, stale);
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    EXPECT_TRUE(std::filesystem::exists(table)) << "used, not rejected";
    EXPECT_EQ(Engine::Impl::of(*e).dedup.size(), 900u);
    EXPECT_TRUE(Engine::Impl::of(*e).dedup.table_from_file());
    expect_duplicates(*e, 0, 300);
    ASSERT_EQ(e->ingest_json(checkpoint_events(300, 100))->accepted, 300u);
  }
  // As if the last stop had been a crash after an older clean stop: the file's S is behind the
  // store, and the commits after it come from their dedup records.
  std::filesystem::copy_file(stale, table, std::filesystem::copy_options::overwrite_existing);
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    EXPECT_TRUE(std::filesystem::exists(table)) << "used, not rejected";
    EXPECT_EQ(Engine::Impl::of(*e).dedup.size(), 1200u);
    EXPECT_TRUE(Engine::Impl::of(*e).dedup.table_from_file());
    expect_duplicates(*e, 0, 400);
    ASSERT_EQ(e->ingest_json(checkpoint_events(400, 50))->accepted, 150u);
  }
  // A byte changed in the middle: the file is removed, every record read, nothing missed.
  {
    std::FILE* f = std::fopen(table.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    const long middle = static_cast<long>(std::filesystem::file_size(table) / 2);
    std::fseek(f, middle, SEEK_SET);
    const int c = std::fgetc(f);
    std::fseek(f, middle, SEEK_SET);
    std::fputc(c ^ 0x5A, f);
    std::fclose(f);
  }
  {
    auto e = open(kConfig);
    ASSERT_TRUE(e);
    EXPECT_FALSE(std::filesystem::exists(table)) << "a file not used is removed";
    EXPECT_EQ(Engine::Impl::of(*e).dedup.size(), 1350u);
    EXPECT_FALSE(Engine::Impl::of(*e).dedup.table_from_file());
    expect_duplicates(*e, 0, 450);
  }
  EXPECT_TRUE(std::filesystem::exists(table)) << "the clean stop writes it again";
  // With a dedup window the open must leave out what the window dropped, which the table does
  // not record: the file is neither read nor written, and a duplicate is still caught.
  std::filesystem::remove(table);
  {
    auto e = open(std::string(kConfig) + "\n[storage]\ndedup_window = \"3650d\"\n");
    ASSERT_TRUE(e);
    EXPECT_EQ(Engine::Impl::of(*e).dedup.size(), 1350u);
    EXPECT_FALSE(Engine::Impl::of(*e).dedup.table_from_file());
    expect_duplicates(*e, 0, 450);
  }
  EXPECT_FALSE(std::filesystem::exists(table));
  auto e = open(kConfig);
  ASSERT_TRUE(e);
  auto report = e->verify();
  ASSERT_TRUE(report.has_value());
  EXPECT_TRUE(report->ok()) << (report->differences.empty() ? "" : report->differences[0]);
}

}  // namespace
}  // namespace tally
