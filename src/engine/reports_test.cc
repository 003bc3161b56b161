// Engine tests of the read-side reports on the in-memory store: statistics compared with a
// brute-force computation over the accepted events (every aggregation, several windows, zones,
// ragged ranges, one customer and all of them, filters), zero-filled history, organization
// roll-ups, top customers, the usage report's breakdown, and the customer record's
// organization field.
#include <map>
#include <optional>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include <tally/engine.h>

#include "core/decimal.h"
#include "core/time.h"
#include "engine/codec.h"

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
key = "tokens_min"
event_type = "tokens"
aggregation = "min"
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
)";

TimeUs at(const char* rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

std::unique_ptr<Engine> open_memory(const Clock* clock) {
  EngineOptions o;
  o.in_memory = true;
  o.config_toml = kConfig;
  o.clock = clock;
  auto e = Engine::open(o);
  EXPECT_TRUE(e.has_value()) << e.error().message();
  return std::move(*e);
}

std::string dec(core::Decimal d) {
  return core::format_decimal(d);
}

// One accepted event, as the brute force sees it.
struct Ev {
  std::string customer;
  std::string type;  // api_call | tokens
  TimeUs time = 0;
  std::string service;
  std::string user;
  std::string model;
  core::Decimal n;
};

struct Span {
  TimeUs start;
  TimeUs end;
};

std::vector<Span> brute_windows(TimeUs from, TimeUs to, core::Window w, const core::TimeZone& tz) {
  std::vector<Span> out;
  for (TimeUs s = core::window_start(from, w, tz); s < to; s = core::window_next(s, w, tz)) {
    out.push_back(Span{s, core::window_next(s, w, tz)});
  }
  return out;
}

// The meter's value per window, recomputed from the events themselves.
std::vector<std::optional<core::Decimal>> brute_values(
    const std::vector<Ev>& events, const std::string& meter, const std::string& customer,
    const std::string& service_filter, const std::vector<Span>& windows, TimeUs from, TimeUs to) {
  const std::string type = meter == "calls" || meter == "users" ? "api_call" : "tokens";
  std::vector<std::optional<core::Decimal>> out;
  for (const Span& w : windows) {
    std::int64_t count = 0;
    core::Decimal sum;
    std::optional<core::Decimal> mx, mn;
    std::set<std::string> users;
    for (const Ev& e : events) {
      const TimeUs minute = e.time - e.time % core::kUsPerMinute;
      if (e.type != type || minute < std::max(w.start, from) || minute >= std::min(w.end, to)) {
        continue;
      }
      if (!customer.empty() && e.customer != customer)
        continue;
      if (!service_filter.empty() && e.service != service_filter)
        continue;
      ++count;
      sum += e.n;
      if (!mx || e.n > *mx)
        mx = e.n;
      if (!mn || e.n < *mn)
        mn = e.n;
      users.insert(e.user);
    }
    if (meter == "calls") {
      out.emplace_back(core::Decimal::from_int(count));
    } else if (meter == "tokens") {
      out.emplace_back(sum);
    } else if (meter == "tokens_max") {
      out.push_back(mx);
    } else if (meter == "tokens_min") {
      out.push_back(mn);
    } else if (meter == "tokens_avg") {
      out.push_back(count == 0 ? std::nullopt
                               : std::optional<core::Decimal>(core::divide_half_even(sum, count)));
    } else {
      out.emplace_back(core::Decimal::from_int(static_cast<std::int64_t>(users.size())));
    }
  }
  return out;
}

std::string text(const std::optional<core::Decimal>& v) {
  return v ? dec(*v) : std::string();
}

// Percent with two decimals by long division on integers (hundredths, half to even), written
// independently of the engine's.
std::string brute_percent(core::Decimal change, core::Decimal prev) {
  if (prev.units == 0)
    return "";
  const bool neg = (change.units < 0) != (prev.units < 0) && change.units != 0;
  __int128 a = change.units < 0 ? -change.units : change.units;
  __int128 b = prev.units < 0 ? -prev.units : prev.units;
  __int128 q = (a * 10000) / b;
  __int128 r = (a * 10000) % b;
  if (2 * r > b || (2 * r == b && q % 2 == 1))
    ++q;
  std::string s = std::to_string(static_cast<long long>(q / 100)) + "." +
                  (q % 100 < 10 ? "0" : "") + std::to_string(static_cast<long long>(q % 100));
  return (neg && q != 0 ? "-" : "") + s;
}

void expect_trend(const std::vector<TrendPoint>& got, const std::vector<Span>& windows,
                  const std::vector<std::optional<core::Decimal>>& values,
                  const std::string& what) {
  ASSERT_EQ(got.size(), windows.empty() ? 0 : windows.size() - 1) << what;
  for (std::size_t i = 1; i < windows.size(); ++i) {
    const TrendPoint& p = got[i - 1];
    EXPECT_EQ(p.window_start_us, windows[i].start) << what;
    EXPECT_EQ(p.value, text(values[i])) << what;
    EXPECT_EQ(p.previous, text(values[i - 1])) << what;
    if (values[i] && values[i - 1]) {
      EXPECT_EQ(p.change, dec(*values[i] - *values[i - 1])) << what;
      EXPECT_EQ(p.change_percent, brute_percent(*values[i] - *values[i - 1], *values[i - 1]))
          << what << " at " << i;
    } else {
      EXPECT_EQ(p.change, "") << what;
      EXPECT_EQ(p.change_percent, "") << what;
    }
  }
}

class ReportsTest : public ::testing::Test {
 protected:
  FakeClock clock_{at("2025-03-01T12:00:00Z")};
};

TEST_F(ReportsTest, StatsMatchBruteForce) {
  auto e = open_memory(&clock_);
  std::mt19937_64 rng(5150);
  std::vector<Ev> events;
  const TimeUs base = at("2025-02-01T00:00:00Z");
  const char* services[] = {"chat", "search", "tts", "stt"};
  int next_id = 0;
  for (int batch = 0; batch < 20; ++batch) {
    std::string body = "{\"events\":[";
    for (int i = 0; i < 100; ++i) {
      Ev ev;
      ev.customer = "c" + std::to_string(rng() % 4);
      ev.time = base + static_cast<TimeUs>(rng() % (20ull * 24 * 3600)) * core::kUsPerSecond;
      const bool call = rng() % 2 == 0;
      ev.type = call ? "api_call" : "tokens";
      std::string props;
      if (call) {
        ev.service = services[rng() % 4];
        ev.user = "u" + std::to_string(rng() % 9);
        props = R"("service":")" + ev.service + R"(","user":")" + ev.user + "\"";
      } else {
        ev.model = "m" + std::to_string(rng() % 3);
        const auto n = static_cast<std::int64_t>(rng() % 2000) - 300;
        ev.n = core::divide_half_even(core::Decimal::from_int(n), 4);  // quarters: exact decimals
        props = R"("model":")" + ev.model + R"(","n":)" + dec(ev.n);
      }
      if (i > 0)
        body += ",";
      body += R"({"id":"e)" + std::to_string(next_id++) + R"(","customer":")" + ev.customer +
              R"(","type":")" + ev.type + R"(","time":")" + core::format_rfc3339(ev.time) +
              R"(","properties":{)" + props + "}}";
      events.push_back(std::move(ev));
    }
    body += "]}";
    IngestOptions as_admin;
    as_admin.negative_corrections = true;
    auto r = e->ingest_json(body, as_admin);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    ASSERT_EQ(r->accepted, 100u);
  }

  struct Case {
    const char* meter;
    const char* window;
    const char* zone;
    const char* customer;
    const char* service;  // filter[service]
  };

  const Case cases[] = {
      {"calls", "hour", "UTC", "", ""},
      {"calls", "day", "Asia/Kolkata", "c1", ""},
      {"calls", "day", "UTC", "", "chat"},
      {"tokens", "day", "Europe/Berlin", "", ""},
      {"tokens", "hour", "Asia/Kolkata", "c2", ""},
      {"tokens_max", "day", "UTC", "", ""},
      {"tokens_min", "hour", "America/New_York", "c3", ""},
      {"tokens_avg", "day", "UTC", "c0", ""},
      {"tokens_avg", "week", "UTC", "", ""},
      {"users", "day", "UTC", "", ""},
      {"users", "hour", "UTC", "c1", ""},
      {"calls", "month", "UTC", "", ""},
  };
  // A ragged range (starts and ends inside windows), and one of whole UTC days, over which
  // windows on whole hours or days are added from hour and day sums (of all customers, too).
  const std::pair<TimeUs, TimeUs> ranges[] = {
      {at("2025-02-02T05:17:00Z"), at("2025-02-19T22:43:00Z")},
      {at("2025-02-03T00:00:00Z"), at("2025-02-19T00:00:00Z")}};
  for (const auto& range : ranges) {
    const TimeUs from = range.first;
    const TimeUs to = range.second;
    for (const Case& c : cases) {
      const std::string what = std::string(c.meter) + "/" + c.window + "/" + c.zone + "/" +
                               c.customer + "/" + c.service + "/" + std::to_string(from);
      StatsQuery q;
      q.meter = c.meter;
      q.window = parse_window_name(c.window).value();
      q.timezone = c.zone;
      q.customer = c.customer;
      q.from_us = from;
      q.to_us = to;
      q.peaks_max = 7;
      if (*c.service != '\0')
        q.filter.emplace_back("service", c.service);
      auto r = e->meter_stats(q);
      ASSERT_TRUE(r.has_value()) << what << ": " << r.error().message();

      const core::TimeZone tz = *core::TimeZone::find(c.zone);
      const core::Window w = *core::parse_window(c.window);
      const auto windows = brute_windows(from, to, w, tz);
      const auto values = brute_values(events, c.meter, c.customer, c.service, windows, from, to);
      std::vector<core::Decimal> sorted;
      core::Decimal sum;
      for (const auto& v : values) {
        if (v) {
          sorted.push_back(*v);
          sum += *v;
        }
      }
      std::sort(sorted.begin(), sorted.end());
      ASSERT_FALSE(sorted.empty()) << what;
      // Nearest rank: the value at position ceil(p/100 * n), counting from 1.
      auto rank = [&](double p) {
        std::size_t k = 1;
        while (static_cast<double>(k) < p / 100.0 * static_cast<double>(sorted.size()))
          ++k;
        return dec(sorted[k - 1]);
      };
      EXPECT_EQ(r->windows, windows.size()) << what;
      EXPECT_EQ(r->count, sorted.size()) << what;
      EXPECT_EQ(r->sum, dec(sum)) << what;
      EXPECT_EQ(r->avg, dec(core::divide_half_even(sum, static_cast<std::int64_t>(sorted.size()))))
          << what;
      EXPECT_EQ(r->min, dec(sorted.front())) << what;
      EXPECT_EQ(r->max, dec(sorted.back())) << what;
      EXPECT_EQ(r->median, rank(50)) << what;
      EXPECT_EQ(r->p95, rank(95)) << what;
      EXPECT_EQ(r->p99, rank(99)) << what;
      expect_trend(r->window_over_window, windows, values, what + " wow");
      const auto days = brute_windows(from, to, core::Window::kDay, tz);
      expect_trend(r->day_over_day, days,
                   brute_values(events, c.meter, c.customer, c.service, days, from, to),
                   what + " dod");
      // Peaks: the largest values among windows with events, earlier first among equals.
      std::vector<std::size_t> order;
      for (std::size_t i = 0; i < windows.size(); ++i) {
        const auto one =
            brute_values(events, "calls", c.customer, c.service, {windows[i]}, from, to);
        const auto two = brute_values(events, "tokens_max", c.customer, "", {windows[i]}, from, to);
        const bool is_call = std::string(c.meter) == "calls" || std::string(c.meter) == "users";
        const bool has_events = is_call ? one[0]->units != 0 : two[0].has_value();
        if (values[i] && has_events)
          order.push_back(i);
      }
      std::stable_sort(order.begin(), order.end(),
                       [&](std::size_t a, std::size_t b) { return *values[a] > *values[b]; });
      ASSERT_EQ(r->peaks.size(), std::min<std::size_t>(order.size(), 7)) << what;
      for (std::size_t i = 0; i < r->peaks.size(); ++i) {
        EXPECT_EQ(r->peaks[i].window_start_us, windows[order[i]].start) << what;
        EXPECT_EQ(r->peaks[i].value, text(values[order[i]])) << what;
      }
      // With one customer, each window's value is what a windowed query of that customer says.
      if (*c.customer != '\0' && *c.service == '\0') {
        MeterQuery mq;
        mq.meter = c.meter;
        mq.customer = c.customer;
        mq.window = parse_window_name(c.window);
        mq.timezone = c.zone;
        mq.from_us = from;
        mq.to_us = to;
        auto qr = e->query(mq);
        ASSERT_TRUE(qr.has_value());
        for (const auto& row : qr->rows) {
          auto it = std::find_if(windows.begin(), windows.end(),
                                 [&](const Span& s) { return s.start == row.window_start_us; });
          ASSERT_NE(it, windows.end());
          EXPECT_EQ(row.value, text(values[static_cast<std::size_t>(it - windows.begin())]))
              << what;
        }
      }
    }
  }
}

TEST_F(ReportsTest, StatsOfAnEmptyRangeAndErrors) {
  auto e = open_memory(&clock_);
  ASSERT_TRUE(
      e->ingest_json(
           R"({"id":"a","customer":"c1","type":"tokens","time":"2025-02-10T10:00:00Z","properties":{"n":5}})")
          .has_value());
  StatsQuery q;
  q.meter = "tokens_max";
  q.window = Window::kDay;
  q.from_us = at("2025-01-01T00:00:00Z");
  q.to_us = at("2025-01-05T00:00:00Z");
  auto r = e->meter_stats(q);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->windows, 4u);
  EXPECT_EQ(r->count, 0u);  // max has no value in windows without events
  EXPECT_EQ(r->median, "");
  EXPECT_TRUE(r->peaks.empty());
  q.meter = "tokens";  // sums are 0 there: four values
  r = e->meter_stats(q);
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->count, 4u);
  EXPECT_EQ(r->p99, "0");
  ASSERT_EQ(r->window_over_window.size(), 3u);
  EXPECT_EQ(r->window_over_window[0].change, "0");
  EXPECT_EQ(r->window_over_window[0].change_percent, "");  // against 0

  q.window = Window::kMinute;
  q.to_us = at("2025-02-01T00:00:00Z");
  EXPECT_EQ(e->meter_stats(q).error().code(), StatusCode::kInvalidArgument);  // > 10,000 windows
  q.window = Window::kDay;
  q.meter = "nope";
  EXPECT_EQ(e->meter_stats(q).error().code(), StatusCode::kNotFound);
  q.meter = "tokens";
  q.customer = "nobody";
  EXPECT_EQ(e->meter_stats(q).error().code(), StatusCode::kNotFound);
  q.customer = "";
  q.filter = {{"colour", "red"}};
  EXPECT_EQ(e->meter_stats(q).error().code(), StatusCode::kInvalidArgument);
  q.filter.clear();
  q.to_us = q.from_us;
  EXPECT_EQ(e->meter_stats(q).error().code(), StatusCode::kInvalidArgument);
}

TEST_F(ReportsTest, HistoryIsZeroFilledOverTheLastThirtyWindows) {
  auto e = open_memory(&clock_);  // now: 2025-03-01T12:00Z
  ASSERT_TRUE(e->ingest_json(R"({"events":[
    {"id":"a","customer":"c1","type":"api_call","time":"2025-03-01T09:00:00Z","properties":{"service":"chat","user":"u1"}},
    {"id":"b","customer":"c1","type":"api_call","time":"2025-03-01T10:00:00Z","properties":{"service":"search","user":"u1"}},
    {"id":"c","customer":"c1","type":"api_call","time":"2025-02-27T10:00:00Z","properties":{"service":"chat","user":"u2"}},
    {"id":"d","customer":"c1","type":"tokens","time":"2025-02-27T10:00:00Z","properties":{"n":3,"model":"m"}}
  ]})")
                  .has_value());
  HistoryQuery q;
  q.customer = "c1";
  q.meter = "calls";
  q.group_by = "service";
  auto h = e->usage_history(q);
  ASSERT_TRUE(h.has_value()) << h.error().message();
  EXPECT_EQ(h->window, Window::kDay);
  EXPECT_EQ(h->from_us, at("2025-01-31T00:00:00Z"));
  EXPECT_EQ(h->to_us, at("2025-03-02T00:00:00Z"));
  ASSERT_EQ(h->data.size(), 30u);
  for (std::size_t i = 0; i < 30; ++i) {
    EXPECT_EQ(h->data[i].window_start_us, h->from_us + static_cast<TimeUs>(i) * core::kUsPerDay);
    const std::string want = i == 27 ? "1" : i == 29 ? "2" : "0";
    EXPECT_EQ(h->data[i].value, want) << i;
  }
  ASSERT_EQ(h->groups.size(), 2u);
  EXPECT_EQ(h->groups[0].group[0].second, "chat");
  EXPECT_EQ(h->groups[0].data[27].value, "1");
  EXPECT_EQ(h->groups[0].data[29].value, "1");
  EXPECT_EQ(h->groups[1].group[0].second, "search");
  EXPECT_EQ(h->groups[1].data[27].value, "0");
  EXPECT_EQ(h->groups[1].data.size(), 30u);

  // A meter without a value in empty windows gives none there, not 0.
  q.meter = "tokens_max";
  q.group_by = "";
  q.window = Window::kHour;
  q.from_us = at("2025-02-27T09:00:00Z");
  q.to_us = at("2025-02-27T12:00:00Z");
  h = e->usage_history(q);
  ASSERT_TRUE(h.has_value());
  ASSERT_EQ(h->data.size(), 3u);
  EXPECT_EQ(h->data[0].value, "");
  EXPECT_EQ(h->data[1].value, "3");
  EXPECT_EQ(h->data[2].value, "");

  q.group_by = "model";  // not a group-by property of tokens_max
  EXPECT_EQ(e->usage_history(q).error().code(), StatusCode::kInvalidArgument);
  q.group_by = "";
  q.customer = "nobody";
  EXPECT_EQ(e->usage_history(q).error().code(), StatusCode::kNotFound);
}

TEST_F(ReportsTest, OrganizationRollsUpItsCustomers) {
  auto e = open_memory(&clock_);
  for (const char* id : {"a1", "a2", "b1"}) {
    Customer c;
    c.id = id;
    c.organization = id[0] == 'a' ? "org-a" : "org-b";
    ASSERT_TRUE(e->create_customer(c).has_value());
  }
  ASSERT_TRUE(e->ingest_json(R"({"events":[
    {"id":"1","customer":"a1","type":"api_call","time":"2025-03-01T09:00:00Z","properties":{"user":"shared"}},
    {"id":"2","customer":"a2","type":"api_call","time":"2025-03-01T09:00:00Z","properties":{"user":"shared"}},
    {"id":"3","customer":"a2","type":"api_call","time":"2025-03-01T09:00:00Z","properties":{"user":"own"}},
    {"id":"4","customer":"a1","type":"tokens","time":"2025-03-01T09:00:00Z","properties":{"n":10}},
    {"id":"5","customer":"a2","type":"tokens","time":"2025-03-01T09:00:00Z","properties":{"n":4}},
    {"id":"6","customer":"b1","type":"tokens","time":"2025-03-01T09:00:00Z","properties":{"n":1000}},
    {"id":"7","customer":"a1","type":"tokens","time":"2025-02-01T09:00:00Z","properties":{"n":99}}
  ]})")
                  .has_value());
  auto r = e->organization_usage("org-a", 0, 0, "");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->from_us, at("2025-03-01T00:00:00Z"));  // the current month
  EXPECT_EQ(r->customers, (std::vector<std::string>{"a1", "a2"}));
  std::map<std::string, std::string> v;
  for (const auto& m : r->meters)
    v[m.meter] = m.value;
  EXPECT_EQ(v["calls"], "3");
  EXPECT_EQ(v["tokens"], "14");
  EXPECT_EQ(v["tokens_max"], "10");
  EXPECT_EQ(v["tokens_min"], "4");
  EXPECT_EQ(v["tokens_avg"], "7");
  EXPECT_EQ(v["users"], "2");  // distinct over the organization, not 1 + 2
  ASSERT_EQ(r->by_customer.size(), 2u);
  EXPECT_EQ(r->by_customer[1].customer, "a2");
  EXPECT_EQ(r->by_customer[1].meters[0].value, "2");

  r = e->organization_usage("org-a", at("2025-02-01T00:00:00Z"), at("2025-03-01T00:00:00Z"), "");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->meters[1].value, "99");

  EXPECT_EQ(e->organization_usage("org-z", 0, 0, "").error().code(), StatusCode::kNotFound);
  EXPECT_EQ(e->organization_usage("org-a", 0, 0, "Mars/Base").error().code(),
            StatusCode::kInvalidArgument);

  // Leaving the organization takes a customer out of the roll-up.
  CustomerPatch p;
  p.organization = "";
  ASSERT_TRUE(e->update_customer("a2", p).has_value());
  r = e->organization_usage("org-a", 0, 0, "");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->customers, (std::vector<std::string>{"a1"}));
  p.organization = "bad/org";
  EXPECT_EQ(e->update_customer("a2", p).error().code(), StatusCode::kInvalidArgument);
}

TEST_F(ReportsTest, TopCustomersByValueThenId) {
  auto e = open_memory(&clock_);
  ASSERT_TRUE(e->ingest_json(R"({"events":[
    {"id":"1","customer":"c","type":"tokens","time":"2025-03-01T09:00:00Z","properties":{"n":5}},
    {"id":"2","customer":"a","type":"tokens","time":"2025-03-01T09:00:00Z","properties":{"n":7}},
    {"id":"3","customer":"b","type":"tokens","time":"2025-03-01T09:00:00Z","properties":{"n":7}},
    {"id":"4","customer":"d","type":"tokens","time":"2025-03-01T09:00:00Z","properties":{"n":9.5}},
    {"id":"5","customer":"e","type":"tokens","time":"2025-02-01T09:00:00Z","properties":{"n":100}}
  ]})")
                  .has_value());
  auto r = e->top_customers("tokens", Window::kMonth, 0, 0, "", 3);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->period, Window::kMonth);
  EXPECT_EQ(r->aggregation, Aggregation::kSum);
  ASSERT_EQ(r->customers.size(), 3u);
  EXPECT_EQ(r->customers[0].customer, "d");
  EXPECT_EQ(r->customers[0].value, "9.5");
  EXPECT_EQ(r->customers[1].customer, "a");  // a tie with b: by id
  EXPECT_EQ(r->customers[2].customer, "b");
  r = e->top_customers("tokens", std::nullopt, at("2025-01-01T00:00:00Z"),
                       at("2025-04-01T00:00:00Z"), "", 1);
  ASSERT_TRUE(r.has_value());
  EXPECT_FALSE(r->period.has_value());
  EXPECT_EQ(r->customers[0].customer, "e");
  EXPECT_EQ(e->top_customers("tokens", Window::kDay, 0, 0, "Mars/Olympus", 3).error().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(e->top_customers("nope", Window::kDay, 0, 0, "", 3).error().code(),
            StatusCode::kNotFound);
  EXPECT_EQ(e->top_customers("tokens", Window::kDay, 0, 0, "", 0).error().code(),
            StatusCode::kInvalidArgument);
}

TEST_F(ReportsTest, ReportBreaksUsageDownByService) {
  auto e = open_memory(&clock_);
  ASSERT_TRUE(e->ingest_json(R"({"events":[
    {"id":"1","customer":"c","type":"api_call","time":"2025-03-01T09:00:00Z","properties":{"service":"chat"}},
    {"id":"2","customer":"c","type":"api_call","time":"2025-03-01T09:00:00Z","properties":{"service":"chat"}},
    {"id":"3","customer":"c","type":"api_call","time":"2025-03-01T09:00:00Z","properties":{"service":"search"}},
    {"id":"4","customer":"c","type":"tokens","time":"2025-03-01T09:00:00Z","properties":{"n":2,"model":"m"}}
  ]})")
                  .has_value());
  auto r = e->usage_report("c", "");
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->customer.id, "c");
  EXPECT_EQ(r->current_period.from_us, at("2025-03-01T00:00:00Z"));
  ASSERT_EQ(r->breakdown.size(), 2u);  // calls by service, tokens by model
  const Breakdown& b = r->breakdown[0];
  EXPECT_EQ(b.meter, "calls");
  EXPECT_EQ(b.property, "service");
  ASSERT_EQ(b.groups.size(), 2u);
  EXPECT_EQ(b.groups[0].value, "chat");
  EXPECT_EQ(b.groups[0].usage, "2");
  EXPECT_EQ(b.groups[0].percent, "66.67");
  EXPECT_EQ(b.groups[1].percent, "33.33");
  r = e->usage_report("c", "service");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->breakdown.size(), 1u);
  EXPECT_EQ(e->usage_report("c", "colour").error().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(e->usage_report("nobody", "").error().code(), StatusCode::kNotFound);
}

TEST(CustomerCodecTest, OrganizationIsAppendedAndOptional) {
  Customer c;
  c.id = "acme";
  c.name = "Acme";
  c.plan = "pro";
  c.organization = "org-1";
  const std::string with = engine::encode_customer(7, c);
  std::uint32_t num = 0;
  Customer back;
  ASSERT_TRUE(engine::decode_customer(with, &num, &back));
  EXPECT_EQ(num, 7u);
  EXPECT_EQ(back.organization, "org-1");
  EXPECT_EQ(back.plan, "pro");
  // A record written before organizations existed decodes with none.
  c.organization.clear();
  const std::string without = engine::encode_customer(7, c);
  EXPECT_LT(without.size(), with.size());
  back.organization = "stale";
  ASSERT_TRUE(engine::decode_customer(without, &num, &back));
  EXPECT_EQ(back.organization, "");
  // A truncated organization is refused.
  EXPECT_FALSE(engine::decode_customer(with.substr(0, with.size() - 1), &num, &back));
}

}  // namespace
}  // namespace tally
