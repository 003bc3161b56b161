// Catalog::build: the meters an event type feeds, the hidden cost and credits meters of priced
// meters, and the bounds the parser enforces, from a configuration alone (no store, no engine).
#include "engine/catalog.h"

#include <gtest/gtest.h>

#include "config/config.h"

namespace tally::engine {
namespace {

constexpr const char* kConfig = R"(
[credits]
per_currency_unit = 100

[[meters]]
key = "calls"
event_type = "request"
aggregation = "count"

[[meters]]
key = "tokens"
event_type = "completion"
aggregation = "sum"
value = "$.tokens"
group_by = ["model"]

[[meters]]
key = "bytes"
event_type = "request"
aggregation = "sum"
value = "$.bytes"
allow_negative = true

[[meters]]
key = "users"
event_type = "login"
aggregation = "unique_count"
value = "$.user"

[[prices]]
meter = "tokens"
unit_price = "0.002"

[[prices]]
meter = "tokens"
unit_price = "0.004"
match = { model = "large" }
)";

Catalog build() {
  auto c = config::parse_config(kConfig, "<test>");
  EXPECT_TRUE(c.has_value()) << c.error().message();
  return Catalog::build(*c);
}

std::vector<std::string> keys(const Catalog& c, const std::vector<std::uint32_t>& indexes) {
  std::vector<std::string> out;
  for (std::uint32_t i : indexes) {
    out.push_back(c.meters[i].spec.key);
  }
  return out;
}

TEST(Catalog, AnEventTypeFeedsItsMetersInConfigOrder) {
  const Catalog c = build();
  ASSERT_NE(c.meters_of_type("request"), nullptr);
  EXPECT_EQ(keys(c, *c.meters_of_type("request")), (std::vector<std::string>{"calls", "bytes"}));
  EXPECT_EQ(keys(c, *c.meters_of_type("completion")), (std::vector<std::string>{"tokens"}));
  EXPECT_EQ(c.meters_of_type("unknown"), nullptr);
  EXPECT_EQ(c.meters_of_type("tokens:cost"), nullptr) << "hidden meters are fed by pricing";
  EXPECT_EQ(c.metered_types, (std::vector<std::string>{"request", "completion", "login"}));
}

TEST(Catalog, APricedMeterHasHiddenCostAndCreditsMetersGroupedLikeIt) {
  const Catalog c = build();
  ASSERT_EQ(c.meters.size(), 6u);  // four configured, then tokens:cost and tokens:credits
  const MeterDef* tokens = c.find("tokens");
  ASSERT_NE(tokens, nullptr);
  const std::uint32_t t = c.index_of(tokens);
  ASSERT_NE(c.cost_meter[t], kNoMeter);
  const MeterDef& cost = c.meters[c.cost_meter[t]];
  const MeterDef& credits = c.meters[c.credits_meter[t]];
  EXPECT_EQ(cost.spec.key, "tokens:cost");
  EXPECT_EQ(credits.spec.key, "tokens:credits");
  EXPECT_TRUE(cost.hidden && credits.hidden);
  EXPECT_EQ(cost.spec.aggregation, core::Aggregation::kSum);
  EXPECT_EQ(cost.spec.group_by, tokens->spec.group_by);
  EXPECT_FALSE(cost.limitable) << "cost is not checkable";
  EXPECT_EQ(c.find("tokens:cost"), nullptr) << "find names configured meters only";
  EXPECT_EQ(c.cost_meter[c.index_of(c.find("calls"))], kNoMeter);
  // Two prices (the plain one and the match), one meter.
  ASSERT_EQ(c.prices.size(), 2u);
  EXPECT_EQ(c.prices_by_meter[t], (std::vector<std::uint32_t>{0, 1}));
  EXPECT_EQ(c.prices[1].spec.match,
            (std::vector<std::pair<std::string, std::string>>{{"model", "large"}}));
  EXPECT_EQ(c.prices[0].event_type, "completion");
}

TEST(Catalog, EntriesOfOneMeterAndMatchAreVersionsOfOnePrice) {
  auto config = config::parse_config(std::string(kConfig) + R"(
[[prices]]
meter = "calls"
unit_price = "0.01"

[[prices]]
meter = "tokens"
unit_price = "0.005"
match = { model = "large" }
effective_from = "2025-06-01T00:00:00Z"

[[prices]]
meter = "tokens"
unit_price = "0.001"
effective_from = "2025-06-01T00:00:00Z"
)",
                                     "<test>");
  ASSERT_TRUE(config.has_value()) << config.error().message();
  const Catalog c = Catalog::build(*config);
  ASSERT_EQ(c.prices.size(), 3u);
  EXPECT_EQ(c.prices[0].entries, (std::vector<std::size_t>{0, 4}));
  EXPECT_EQ(c.prices[1].entries, (std::vector<std::size_t>{1, 3}));
  EXPECT_EQ(c.prices[2].entries, (std::vector<std::size_t>{2}));
  EXPECT_EQ(c.prices[2].spec.meter, "calls");
  EXPECT_EQ(c.prices[2].event_type, "request");
  const std::uint32_t calls = c.index_of(c.find("calls"));
  const std::uint32_t tokens = c.index_of(c.find("tokens"));
  EXPECT_EQ(c.prices_by_meter[calls], (std::vector<std::uint32_t>{2}));
  EXPECT_EQ(c.prices_by_meter[tokens], (std::vector<std::uint32_t>{0, 1}));
  // Hidden meters, in the configured meters' order, each pair cost then credits.
  ASSERT_EQ(c.meters.size(), 8u);
  std::vector<std::string> hidden;
  for (std::size_t i = 4; i < c.meters.size(); ++i) {
    hidden.push_back(c.meters[i].spec.key + "/" + c.meters[i].spec.value_property + "/" +
                     c.meters[i].spec.event_type);
  }
  EXPECT_EQ(hidden, (std::vector<std::string>{
                        "calls:cost/cost/request", "calls:credits/credits/request",
                        "tokens:cost/cost/completion", "tokens:credits/credits/completion"}));
  EXPECT_EQ(c.cost_meter[calls], 4u);
  EXPECT_EQ(c.credits_meter[tokens], 7u);
  EXPECT_EQ(c.cost_meter[c.index_of(c.find("users"))], kNoMeter);
  EXPECT_EQ(c.credits_meter[c.index_of(c.find("bytes"))], kNoMeter);
}

TEST(Catalog, ChecksApplyToCountSumLatestAndMaxMetersOnly) {
  const Catalog c = build();
  EXPECT_TRUE(c.find("calls")->limitable);
  EXPECT_TRUE(c.find("tokens")->limitable);
  EXPECT_FALSE(c.find("users")->limitable);
}

TEST(Catalog, ValuesMustNotBeNegativeUnlessAnAdminSendsThemToAnAllowingMeter) {
  Catalog c = build();
  auto names = [](const std::vector<const core::MeterSpec*>& v) {
    std::vector<std::string> out;
    for (const auto* m : v) {
      out.push_back(m->key);
    }
    return out;
  };
  // A unique count's value is a text, not a number: never in these lists.
  EXPECT_EQ(names(c.nonnegative_for_customers), (std::vector<std::string>{"tokens", "bytes"}));
  EXPECT_EQ(names(c.nonnegative_for_admins), (std::vector<std::string>{"tokens"}));
  // Moving the catalog (as Engine::open does) keeps the lists pointing at its own meters.
  const Catalog moved = std::move(c);
  EXPECT_EQ(moved.nonnegative_for_customers[0], &moved.value_meters[0]);
}

}  // namespace
}  // namespace tally::engine
