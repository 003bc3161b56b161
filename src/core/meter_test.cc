// Tests for core/meter: aggregation names, value paths, fingerprints, and what each event
// contributes to a meter (type, filters, values, unique keys and group keys).
#include "core/meter.h"

#include <initializer_list>
#include <string>

#include <gtest/gtest.h>

namespace tally::core {
namespace {

struct P {
  std::string_view key;
  std::string_view text;
  PropKind kind = PropKind::kString;
};

// Appends an event of `type` with `props` to `b` and returns its index.
std::size_t add_event(EventBatch& b, std::string_view type, std::initializer_list<P> props) {
  Event e;
  e.id = b.add_text("evt-" + std::to_string(b.size()));
  e.customer = b.add_text("cus_1");
  e.type = b.add_text(type);
  e.prop_begin = static_cast<std::uint32_t>(b.props().size());
  for (const P& p : props) {
    b.props().push_back(Prop{b.add_text(p.key), b.add_text(p.text), p.kind});
  }
  e.prop_count = static_cast<std::uint32_t>(props.size());
  b.events().push_back(e);
  return b.size() - 1;
}

MeterSpec meter(Aggregation a, std::string value_property = {}) {
  MeterSpec m;
  m.key = "tokens";
  m.event_type = "llm.call";
  m.aggregation = a;
  m.value_property = std::move(value_property);
  return m;
}

__int128 units(std::string_view text) {
  Result<Decimal> r = parse_decimal(text);
  EXPECT_TRUE(r.has_value()) << text;
  return r.has_value() ? r->units : 0;
}

// ---- aggregation names ----

TEST(AggregationName, RoundTrips) {
  for (Aggregation a :
       {Aggregation::kCount, Aggregation::kSum, Aggregation::kMin, Aggregation::kMax,
        Aggregation::kAvg, Aggregation::kLatest, Aggregation::kUniqueCount}) {
    Result<Aggregation> parsed = parse_aggregation(aggregation_name(a));
    ASSERT_TRUE(parsed.has_value()) << aggregation_name(a);
    EXPECT_EQ(*parsed, a);
  }
}

TEST(AggregationName, Names) {
  EXPECT_EQ(aggregation_name(Aggregation::kCount), "count");
  EXPECT_EQ(aggregation_name(Aggregation::kUniqueCount), "unique_count");
  EXPECT_EQ(aggregation_name(Aggregation::kLatest), "latest");
}

TEST(AggregationName, RefusesUnknownNames) {
  for (std::string_view name : {"", "Count", "SUM", "average", "unique", "unique-count", "sum "}) {
    Result<Aggregation> r = parse_aggregation(name);
    ASSERT_FALSE(r.has_value()) << name;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument);
  }
}

// ---- parse_value_path ----

std::string path(std::string_view text) {
  Result<std::string> r = parse_value_path(text);
  EXPECT_TRUE(r.has_value()) << text << ": " << r.status().to_string();
  return r.has_value() ? *r : std::string("<error>");
}

TEST(ParseValuePath, AcceptedSpellings) {
  EXPECT_EQ(path("$.a.b"), "a.b");
  EXPECT_EQ(path("a.b"), "a.b");
  EXPECT_EQ(path("$.a"), "a");
  EXPECT_EQ(path("a"), "a");
  EXPECT_EQ(path("$['a']['b']"), "a.b");
  EXPECT_EQ(path("$[\"a\"][\"b\"]"), "a.b");
  EXPECT_EQ(path("$.a['b'].c"), "a.b.c");
  EXPECT_EQ(path("['a']"), "a");
  EXPECT_EQ(path("$.input_tokens"), "input_tokens");
  EXPECT_EQ(path("$.usage.input-tokens"), "usage.input-tokens");
  EXPECT_EQ(path("$['with space']"), "with space");
}

TEST(ParseValuePath, Refusals) {
  for (std::string_view text :
       {"",      "$",       "$.",      "a.",    ".a",         "a..b",        "$..a",  "$.a[0]",
        "$[0]",  "$.*",     "$[*]",    "$.a.*", "a*",         "$a",          "$['a'", "$['a]",
        "$['']", "$['a']b", "$.['a']", "a b",   "$['a\\'b']", "$.a[?(@.b)]", "$$.a"}) {
    Result<std::string> r = parse_value_path(text);
    ASSERT_FALSE(r.has_value()) << text << " gave " << *r;
    EXPECT_EQ(r.error().code(), StatusCode::kInvalidArgument) << text;
  }
}

TEST(ParseValuePath, MessagesSayWhatIsUnsupported) {
  EXPECT_NE(parse_value_path("$.a[0]").error().message().find("array"), std::string::npos);
  EXPECT_NE(parse_value_path("$.*").error().message().find("wildcard"), std::string::npos);
  EXPECT_NE(parse_value_path("").error().message().find("empty"), std::string::npos);
}

// Each refusal's whole message, one per check.
TEST(ParseValuePath, NamesEachFaultInFull) {
  const std::pair<const char*, const char*> cases[] = {
      {"", "empty"},
      {"$", "names no property"},
      {"$[0]", "array indexes, wildcards and filters are not supported"},
      {"$.a[", "array indexes, wildcards and filters are not supported"},
      {"$['a\\'b']", "escapes in quoted names are not supported"},
      {"$['a", "unterminated quoted name"},
      {"$['a'x", "expected ']' after a quoted name"},
      {"$[\"a\"", "expected ']' after a quoted name"},
      {"$['']", "empty property name"},
      {".a", "starts with '.'; write \"$.name\" or \"name\""},
      {"$a", "expected '.' or '[' between names"},
      {"['a']b", "expected '.' or '[' between names"},
      {"$.*", "wildcards are not supported"},
      {"$..a", "recursive descent ('..') is not supported"},
      {"$.['a']", "expected a name after '.'"},
      {"a.", "ends with '.'"},
      {"$.]", "unexpected character"},
      {"a*", "wildcards are not supported"},
      {"a b", "unexpected character"},
  };
  for (const auto& [text, why] : cases) {
    Result<std::string> r = parse_value_path(text);
    ASSERT_FALSE(r.has_value()) << text << " gave " << *r;
    EXPECT_EQ(r.error().message(), std::string("invalid property path \"") + text + "\": " + why);
  }
  const std::string longer = "$." + std::string(kPropKeyBytesMax + 1, 'a');
  EXPECT_EQ(parse_value_path(longer).error().message(),
            "invalid property path \"" + longer.substr(0, 64) +
                "...\": longer than a property key may be");
  EXPECT_EQ(path("['a'].b[\"c\"]"), "a.b.c");
}

TEST(ParseValuePath, RefusesOverlongPaths) {
  EXPECT_FALSE(parse_value_path("$." + std::string(kPropKeyBytesMax + 1, 'a')).has_value());
  EXPECT_TRUE(parse_value_path(std::string(kPropKeyBytesMax, 'a')).has_value());
}

// ---- fingerprint ----

MeterSpec full_meter() {
  MeterSpec m = meter(Aggregation::kSum, "usage.input");
  m.group_by = {"model", "region"};
  m.filter = {{"env", "prod"}, {"tier", "paid"}};
  m.unit = "tokens";
  m.description = "Input tokens";
  return m;
}

TEST(Fingerprint, StableForEqualSpecs) {
  EXPECT_EQ(full_meter().fingerprint(), full_meter().fingerprint());
  EXPECT_FALSE(full_meter().fingerprint().empty());
}

TEST(Fingerprint, IgnoresUnitAndDescription) {
  MeterSpec m = full_meter();
  m.unit = "kilotokens";
  m.description = "changed";
  EXPECT_EQ(m.fingerprint(), full_meter().fingerprint());
}

TEST(Fingerprint, IgnoresFilterOrder) {
  MeterSpec m = full_meter();
  std::swap(m.filter[0], m.filter[1]);
  EXPECT_EQ(m.fingerprint(), full_meter().fingerprint());
}

TEST(Fingerprint, ChangesWithEverythingThatDecidesNumbers) {
  const std::string base = full_meter().fingerprint();
  auto differs = [&](auto mutate, const char* what) {
    MeterSpec m = full_meter();
    mutate(m);
    EXPECT_NE(m.fingerprint(), base) << what;
  };
  differs([](MeterSpec& m) { m.key = "tokens2"; }, "key");
  differs([](MeterSpec& m) { m.event_type = "llm.completion"; }, "event_type");
  differs([](MeterSpec& m) { m.aggregation = Aggregation::kMax; }, "aggregation");
  differs([](MeterSpec& m) { m.value_property = "usage.output"; }, "value_property");
  differs([](MeterSpec& m) { m.group_by.pop_back(); }, "fewer group_by");
  differs([](MeterSpec& m) { std::swap(m.group_by[0], m.group_by[1]); }, "group_by order");
  differs([](MeterSpec& m) { m.filter[0].second = "dev"; }, "filter value");
  differs([](MeterSpec& m) { m.filter.pop_back(); }, "fewer filters");
}

TEST(Fingerprint, FieldsCannotRunTogether) {
  MeterSpec a = meter(Aggregation::kCount);
  MeterSpec b = a;
  a.group_by = {"ab", "c"};
  b.group_by = {"a", "bc"};
  EXPECT_NE(a.fingerprint(), b.fingerprint());
  a.group_by.clear();
  b.group_by.clear();
  a.filter = {{"a", "bc"}};
  b.filter = {{"ab", "c"}};
  EXPECT_NE(a.fingerprint(), b.fingerprint());
  // A group_by entry must not be mistaken for a filter.
  MeterSpec c = meter(Aggregation::kCount);
  MeterSpec d = c;
  c.group_by = {"x", "y"};
  d.filter = {{"x", "y"}};
  EXPECT_NE(c.fingerprint(), d.fingerprint());
  // Nor the event type for the key.
  MeterSpec e = meter(Aggregation::kCount);
  MeterSpec f = e;
  e.key = "x";
  e.event_type = "y";
  f.key = "y";
  f.event_type = "x";
  EXPECT_NE(e.fingerprint(), f.fingerprint());
}

// ---- meter_accepts ----

TEST(MeterAccepts, CountTakesOnePerMatchingEvent) {
  EventBatch b;
  const std::size_t i = add_event(b, "llm.call", {});
  MeterInput in;
  std::string group = "stale";
  ASSERT_TRUE(meter_accepts(meter(Aggregation::kCount), b, b.events()[i], &in, &group));
  EXPECT_EQ(in.value, Decimal::from_int(1));
  EXPECT_TRUE(in.unique.empty());
  EXPECT_EQ(group, "");  // no group_by: one group, and the old contents are gone
}

TEST(MeterAccepts, OtherTypesAreIgnored) {
  EventBatch b;
  const std::size_t i = add_event(b, "llm.call.v2", {{"n", "1", PropKind::kNumber}});
  const std::size_t j = add_event(b, "LLM.CALL", {});
  MeterInput in;
  std::string group;
  EXPECT_FALSE(meter_accepts(meter(Aggregation::kCount), b, b.events()[i], &in, &group));
  EXPECT_FALSE(meter_accepts(meter(Aggregation::kCount), b, b.events()[j], &in, &group));
}

TEST(MeterAccepts, FiltersMatchTextExactly) {
  EventBatch b;
  const std::size_t match = add_event(
      b, "llm.call",
      {{"env", "prod"}, {"beta", "true", PropKind::kBool}, {"v", "2", PropKind::kNumber}});
  const std::size_t wrong = add_event(
      b, "llm.call",
      {{"env", "Prod"}, {"beta", "true", PropKind::kBool}, {"v", "2", PropKind::kNumber}});
  const std::size_t other_spelling = add_event(
      b, "llm.call",
      {{"env", "prod"}, {"beta", "true", PropKind::kBool}, {"v", "2.0", PropKind::kNumber}});
  const std::size_t missing = add_event(b, "llm.call", {{"env", "prod"}, {"v", "2"}});
  MeterSpec m = meter(Aggregation::kCount);
  m.filter = {{"env", "prod"}, {"beta", "true"}, {"v", "2"}};
  MeterInput in;
  std::string group;
  EXPECT_TRUE(meter_accepts(m, b, b.events()[match], &in, &group));
  EXPECT_FALSE(meter_accepts(m, b, b.events()[wrong], &in, &group));
  EXPECT_FALSE(meter_accepts(m, b, b.events()[other_spelling], &in, &group));
  EXPECT_FALSE(meter_accepts(m, b, b.events()[missing], &in, &group));
}

TEST(MeterAccepts, NullMatchesNoFilter) {
  EventBatch b;
  const std::size_t i = add_event(b, "llm.call", {{"env", "null", PropKind::kNull}});
  const std::size_t j = add_event(b, "llm.call", {{"env", "", PropKind::kNull}});
  MeterInput in;
  std::string group;
  MeterSpec m = meter(Aggregation::kCount);
  m.filter = {{"env", "null"}};
  EXPECT_FALSE(meter_accepts(m, b, b.events()[i], &in, &group));
  m.filter = {{"env", ""}};
  EXPECT_FALSE(meter_accepts(m, b, b.events()[j], &in, &group));
}

TEST(MeterAccepts, NumericAggregationsTakeTheNumber) {
  EventBatch b;
  const std::size_t i =
      add_event(b, "llm.call", {{"model", "gpt"}, {"usage.input", "1.5e3", PropKind::kNumber}});
  for (Aggregation a : {Aggregation::kSum, Aggregation::kMin, Aggregation::kMax, Aggregation::kAvg,
                        Aggregation::kLatest}) {
    MeterInput in;
    std::string group;
    ASSERT_TRUE(meter_accepts(meter(a, "usage.input"), b, b.events()[i], &in, &group))
        << aggregation_name(a);
    EXPECT_EQ(in.value, Decimal::from_int(1500)) << aggregation_name(a);
  }
}

TEST(MeterAccepts, NumericValuesKeepNinePlaces) {
  EventBatch b;
  const std::size_t i = add_event(b, "llm.call", {{"cost", "-0.0000000025", PropKind::kNumber}});
  MeterInput in;
  std::string group;
  ASSERT_TRUE(meter_accepts(meter(Aggregation::kSum, "cost"), b, b.events()[i], &in, &group));
  EXPECT_EQ(in.value.units, -2);
}

TEST(MeterAccepts, NumericAggregationsRefuseMissingOrNonNumbers) {
  EventBatch b;
  const std::size_t absent = add_event(b, "llm.call", {{"other", "3", PropKind::kNumber}});
  const std::size_t as_string = add_event(b, "llm.call", {{"n", "3"}});
  const std::size_t as_bool = add_event(b, "llm.call", {{"n", "true", PropKind::kBool}});
  const std::size_t as_null = add_event(b, "llm.call", {{"n", "null", PropKind::kNull}});
  const std::size_t too_big = add_event(b, "llm.call", {{"n", "1e999", PropKind::kNumber}});
  const std::size_t garbage = add_event(b, "llm.call", {{"n", "3x", PropKind::kNumber}});
  const MeterSpec m = meter(Aggregation::kSum, "n");
  for (std::size_t i : {absent, as_string, as_bool, as_null, too_big, garbage}) {
    MeterInput in;
    std::string group;
    EXPECT_FALSE(meter_accepts(m, b, b.events()[i], &in, &group)) << i;
  }
}

TEST(MeterAccepts, UniqueCountTakesThePropertyText) {
  EventBatch b;
  const std::size_t s = add_event(b, "llm.call", {{"user", "u-42"}});
  const std::size_t n = add_event(b, "llm.call", {{"user", "42", PropKind::kNumber}});
  const std::size_t t = add_event(b, "llm.call", {{"user", "true", PropKind::kBool}});
  const MeterSpec m = meter(Aggregation::kUniqueCount, "user");
  MeterInput in;
  std::string group;
  ASSERT_TRUE(meter_accepts(m, b, b.events()[s], &in, &group));
  EXPECT_EQ(in.unique, "u-42");
  EXPECT_EQ(in.value, Decimal::from_int(1));
  ASSERT_TRUE(meter_accepts(m, b, b.events()[n], &in, &group));
  EXPECT_EQ(in.unique, "42");
  ASSERT_TRUE(meter_accepts(m, b, b.events()[t], &in, &group));
  EXPECT_EQ(in.unique, "true");
}

TEST(MeterAccepts, UniqueCountRefusesMissingOrNull) {
  EventBatch b;
  const std::size_t absent = add_event(b, "llm.call", {{"other", "x"}});
  const std::size_t null = add_event(b, "llm.call", {{"user", "null", PropKind::kNull}});
  const MeterSpec m = meter(Aggregation::kUniqueCount, "user");
  MeterInput in;
  std::string group;
  EXPECT_FALSE(meter_accepts(m, b, b.events()[absent], &in, &group));
  EXPECT_FALSE(meter_accepts(m, b, b.events()[null], &in, &group));
}

TEST(MeterAccepts, UniqueIsClearedForOtherAggregations) {
  EventBatch b;
  const std::size_t i = add_event(b, "llm.call", {{"user", "u-1"}, {"n", "2", PropKind::kNumber}});
  MeterInput in;
  std::string group;
  ASSERT_TRUE(
      meter_accepts(meter(Aggregation::kUniqueCount, "user"), b, b.events()[i], &in, &group));
  ASSERT_TRUE(meter_accepts(meter(Aggregation::kSum, "n"), b, b.events()[i], &in, &group));
  EXPECT_TRUE(in.unique.empty());
}

TEST(MeterAccepts, GroupJoinsValuesWithUnitSeparator) {
  EventBatch b;
  const std::size_t i = add_event(b, "llm.call",
                                  {{"model", "gpt-4o"},
                                   {"region", "eu"},
                                   {"stream", "false", PropKind::kBool},
                                   {"v", "7", PropKind::kNumber}});
  MeterSpec m = meter(Aggregation::kCount);
  m.group_by = {"model", "region", "stream", "v"};
  MeterInput in;
  std::string group;
  ASSERT_TRUE(meter_accepts(m, b, b.events()[i], &in, &group));
  EXPECT_EQ(group, std::string("gpt-4o\x1f"
                               "eu\x1f"
                               "false\x1f"
                               "7"));
}

TEST(MeterAccepts, AbsentAndNullGroupValuesAreEmpty) {
  EventBatch b;
  const std::size_t i = add_event(b, "llm.call", {{"region", "null", PropKind::kNull}});
  MeterSpec m = meter(Aggregation::kCount);
  m.group_by = {"model", "region", "tier"};
  MeterInput in;
  std::string group;
  ASSERT_TRUE(meter_accepts(m, b, b.events()[i], &in, &group));
  EXPECT_EQ(group, std::string("\x1f\x1f"));
}

TEST(MeterAccepts, GroupOrderFollowsGroupBy) {
  EventBatch b;
  const std::size_t i = add_event(b, "llm.call", {{"a", "1"}, {"b", "2"}});
  MeterSpec m = meter(Aggregation::kCount);
  m.group_by = {"b", "a"};
  MeterInput in;
  std::string group;
  ASSERT_TRUE(meter_accepts(m, b, b.events()[i], &in, &group));
  EXPECT_EQ(group, std::string("2\x1f"
                               "1"));
}

TEST(MeterAccepts, ReusesTheGroupStringsCapacity) {
  EventBatch b;
  const std::size_t long_event = add_event(
      b, "llm.call",
      {{"model", std::string_view(
                     "a-rather-long-model-name-that-does-not-fit-in-the-small-string-buffer")}});
  const std::size_t short_event = add_event(b, "llm.call", {{"model", "x"}});
  MeterSpec m = meter(Aggregation::kCount);
  m.group_by = {"model"};
  MeterInput in;
  std::string group;
  ASSERT_TRUE(meter_accepts(m, b, b.events()[long_event], &in, &group));
  const char* buffer = group.data();
  const std::size_t capacity = group.capacity();
  ASSERT_TRUE(meter_accepts(m, b, b.events()[short_event], &in, &group));
  EXPECT_EQ(group, "x");
  EXPECT_EQ(group.data(), buffer);
  EXPECT_EQ(group.capacity(), capacity);
}

TEST(MeterAccepts, NestedPropertyKeys) {
  EventBatch b;
  const std::size_t i =
      add_event(b, "llm.call", {{"usage.input", "3", PropKind::kNumber}, {"usage", "x"}});
  MeterInput in;
  std::string group;
  ASSERT_TRUE(
      meter_accepts(meter(Aggregation::kSum, "usage.input"), b, b.events()[i], &in, &group));
  EXPECT_EQ(in.value, Decimal::from_int(3));
  EXPECT_FALSE(
      meter_accepts(meter(Aggregation::kSum, "usage.output"), b, b.events()[i], &in, &group));
}

TEST(MeterAccepts, WorksOnACopiedEvent) {
  EventBatch from;
  add_event(from, "other", {{"pad", "xxxxxxxx"}});
  const std::size_t i =
      add_event(from, "llm.call", {{"model", "m1"}, {"n", "0.25", PropKind::kNumber}});
  EventBatch to;
  to.append_from(from, from.events()[i]);
  MeterSpec m = meter(Aggregation::kSum, "n");
  m.group_by = {"model"};
  MeterInput in;
  std::string group;
  ASSERT_TRUE(meter_accepts(m, to, to.events()[0], &in, &group));
  EXPECT_EQ(in.value.units, units("0.25"));
  EXPECT_EQ(group, "m1");
}

}  // namespace
}  // namespace tally::core
