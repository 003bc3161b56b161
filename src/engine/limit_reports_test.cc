// Engine tests of the admin's customer summaries (limit_reports.cc) on the in-memory store: the
// search over ids and names, each sort in both orders with ties by id, usage as the highest
// limit percent compared as a decimal (no limit lowest), the page of offset and limit, and the
// refusal of a limit out of range (a sort out of the set is refused at the edge).
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

#include "core/time.h"

namespace tally {
namespace {

constexpr const char* kConfig = R"(
[[meters]]
key = "api_calls"
event_type = "api_call"
aggregation = "count"

[[plans]]
key = "small"
limits = [{ meter = "api_calls", period = "day", amount = 10 }]

[[plans]]
key = "big"
limits = [
  { meter = "api_calls", period = "day", amount = 100 },
  { meter = "api_calls", period = "month", amount = 1000 },
]

[[plans]]
key = "open"
limits = [{ meter = "api_calls", period = "day", amount = -1 }]
)";

class CustomerSummariesTest : public ::testing::Test {
 protected:
  CustomerSummariesTest() : clock_(*core::parse_rfc3339("2025-03-10T12:00:00Z")) {
    EngineOptions o;
    o.in_memory = true;
    o.config_toml = kConfig;
    o.clock = &clock_;
    auto e = Engine::open(o);
    EXPECT_TRUE(e.has_value()) << e.error().message();
    engine_ = std::move(*e);
    // id, name, plan, status, calls: 50 %, 9 %, 10 %, no limit, unlimited, 10 %.
    add("b-one", "Zed Corp", "small", CustomerStatus::kActive, 5);
    add("a-two", "acme labs", "big", CustomerStatus::kActive, 9);
    add("c-three", "ACME Retail", "small", CustomerStatus::kSuspended, 1);
    add("d-four", "Beta", "", CustomerStatus::kActive, 0);
    add("e-five", "Gamma", "open", CustomerStatus::kSuspended, 3);
    add("f-acme", "Delta", "small", CustomerStatus::kActive, 1);
  }

  void add(const std::string& id, const std::string& name, const std::string& plan,
           CustomerStatus status, int calls) {
    Customer c;
    c.id = id;
    c.name = name;
    c.plan = plan;
    ASSERT_TRUE(engine_->create_customer(c).has_value()) << id;
    for (int i = 0; i < calls; ++i) {
      CheckRequest r;
      r.customer = id;
      r.meter = "api_calls";
      auto checked = engine_->check(r);
      ASSERT_TRUE(checked.has_value()) << id << ": " << checked.error().message();
      EXPECT_TRUE(checked->allowed) << id;
    }
    if (status != CustomerStatus::kActive) {
      CustomerPatch patch;
      patch.status = status;
      ASSERT_TRUE(engine_->update_customer(id, patch).has_value()) << id;
    }
  }

  // The ids of a page, in order.
  std::vector<std::string> ids(CustomerSort sort, bool descending, const std::string& search = "") {
    CustomerSummaryQuery q;
    q.sort = sort;
    q.descending = descending;
    q.search = search;
    auto page = engine_->customer_summaries(q);
    EXPECT_TRUE(page.has_value()) << page.error().message();
    std::vector<std::string> out;
    for (const auto& s : page ? page->customers : std::vector<CustomerSummary>{}) {
      out.push_back(s.id);
    }
    return out;
  }

  using Ids = std::vector<std::string>;

  FakeClock clock_;
  std::unique_ptr<Engine> engine_;
};

TEST_F(CustomerSummariesTest, EachSortInBothOrdersTiesByIdAscending) {
  EXPECT_EQ(ids(CustomerSort::kId, false),
            (Ids{"a-two", "b-one", "c-three", "d-four", "e-five", "f-acme"}));
  EXPECT_EQ(ids(CustomerSort::kId, true),
            (Ids{"f-acme", "e-five", "d-four", "c-three", "b-one", "a-two"}));
  // Names compare as bytes: upper case first.
  EXPECT_EQ(ids(CustomerSort::kName, false),
            (Ids{"c-three", "d-four", "f-acme", "e-five", "b-one", "a-two"}));
  EXPECT_EQ(ids(CustomerSort::kName, true),
            (Ids{"a-two", "b-one", "e-five", "f-acme", "d-four", "c-three"}));
  EXPECT_EQ(ids(CustomerSort::kPlan, false),
            (Ids{"d-four", "a-two", "e-five", "b-one", "c-three", "f-acme"}));
  EXPECT_EQ(ids(CustomerSort::kPlan, true),
            (Ids{"b-one", "c-three", "f-acme", "e-five", "a-two", "d-four"}));
  EXPECT_EQ(ids(CustomerSort::kStatus, false),
            (Ids{"a-two", "b-one", "d-four", "f-acme", "c-three", "e-five"}));
  EXPECT_EQ(ids(CustomerSort::kStatus, true),
            (Ids{"c-three", "e-five", "a-two", "b-one", "d-four", "f-acme"}));
  // 9 % sorts below 10 % (as decimals, not as text); no limit and unlimited sort lowest.
  EXPECT_EQ(ids(CustomerSort::kUsage, false),
            (Ids{"d-four", "e-five", "a-two", "c-three", "f-acme", "b-one"}));
  EXPECT_EQ(ids(CustomerSort::kUsage, true),
            (Ids{"b-one", "c-three", "f-acme", "a-two", "d-four", "e-five"}));
}

TEST_F(CustomerSummariesTest, SearchFindsAPartOfTheIdOrNameInAnyCase) {
  EXPECT_EQ(ids(CustomerSort::kId, false, "acme"), (Ids{"a-two", "c-three", "f-acme"}));
  EXPECT_EQ(ids(CustomerSort::kId, false, "AcMe"), (Ids{"a-two", "c-three", "f-acme"}));
  EXPECT_EQ(ids(CustomerSort::kId, false, "-f"), (Ids{"d-four", "e-five"}));
  EXPECT_EQ(ids(CustomerSort::kId, false, "nobody"), Ids{});
  CustomerSummaryQuery q;
  q.search = "ACME";
  EXPECT_EQ(engine_->customer_summaries(q)->total, 3u);
}

TEST_F(CustomerSummariesTest, ARowNamesItsHighestLimitAndThePageItsTotal) {
  CustomerSummaryQuery q;
  q.sort = CustomerSort::kUsage;
  q.descending = true;
  q.offset = 1;
  q.limit = 3;
  auto page = engine_->customer_summaries(q);
  ASSERT_TRUE(page.has_value()) << page.error().message();
  EXPECT_EQ(page->total, 6u);
  ASSERT_EQ(page->customers.size(), 3u);
  const CustomerSummary& c = page->customers[0];
  EXPECT_EQ(c.id, "c-three");
  EXPECT_EQ(c.name, "ACME Retail");
  EXPECT_EQ(c.plan, "small");
  EXPECT_EQ(c.status, CustomerStatus::kSuspended);
  EXPECT_EQ(c.max_percent, "10.00");
  EXPECT_EQ(c.max_rule, "api_calls per day");
  // Of two limits, the higher percent: 9 of 100 a day over 9 of 1000 a month.
  EXPECT_EQ(page->customers[2].id, "a-two");
  EXPECT_EQ(page->customers[2].max_percent, "9.00");
  EXPECT_EQ(page->customers[2].max_rule, "api_calls per day");

  // Sorted otherwise, the rows of the page still carry their usage; no limit shows none.
  q.sort = CustomerSort::kId;
  q.descending = false;
  q.offset = 3;
  q.limit = 2;
  page = engine_->customer_summaries(q);
  ASSERT_TRUE(page.has_value());
  ASSERT_EQ(page->customers.size(), 2u);
  EXPECT_EQ(page->customers[0].id, "d-four");
  EXPECT_EQ(page->customers[0].max_percent, "");
  EXPECT_EQ(page->customers[0].max_rule, "");
  EXPECT_EQ(page->customers[1].id, "e-five");
  EXPECT_EQ(page->customers[1].max_percent, "") << "unlimited";

  q.offset = 6;
  page = engine_->customer_summaries(q);
  ASSERT_TRUE(page.has_value());
  EXPECT_EQ(page->total, 6u);
  EXPECT_TRUE(page->customers.empty());
}

TEST_F(CustomerSummariesTest, RefusesALimitOutOfRange) {
  CustomerSummaryQuery q;
  q.sort = CustomerSort::kUsage;
  for (std::uint32_t limit : {0u, 1001u}) {
    q.limit = limit;
    auto r = engine_->customer_summaries(q);
    ASSERT_FALSE(r.has_value()) << limit;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(r.error().message(), "limit must be 1..1000");
  }
  q.limit = 1000;
  EXPECT_TRUE(engine_->customer_summaries(q).has_value());
}

}  // namespace
}  // namespace tally
