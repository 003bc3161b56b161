// Tests of the ingest body parser: the body must be exactly one JSON document.
#include "core/event_parse.h"

#include <string>

#include <gtest/gtest.h>

namespace tally::core {
namespace {

Status parse(std::string body, ParsedEvents* out) {
  ParseOptions o;
  o.now_us = 1'700'000'000 * kUsPerSecond;
  return parse_events(body, o, out);
}

TEST(EventParseTest, WhitespaceAroundTheDocumentIsFine) {
  ParsedEvents out;
  ASSERT_TRUE(
      parse(" \n{\"events\":[{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\"}]}\r\n\t ", &out)
          .ok());
  EXPECT_EQ(out.batch.size(), 1u);
  ASSERT_TRUE(parse("[{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\"}]\n", &out).ok());
  EXPECT_EQ(out.batch.size(), 1u);
  ASSERT_TRUE(parse("{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\"}\n\n", &out).ok());
  EXPECT_EQ(out.batch.size(), 1u);
}

TEST(EventParseTest, ContentAfterTheDocumentIsMalformed) {
  const char* bodies[] = {
      // NDJSON: two documents, the second ending in the same bracket as a single one would.
      // (One element split over two lines: the parentheses tell clang the concatenation is
      // meant.)
      ("{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\"}\n"
       "{\"id\":\"b\",\"customer\":\"c\",\"type\":\"t\"}\n"),
      "{\"events\":[{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\"}]} garbage",
      "{\"events\":[{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\"}]} {\"x\":1}",
      "[{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\"}] [1]",
      "[{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\"}] 7",
      "{\"events\":[{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\"}]}}",
  };
  for (const char* body : bodies) {
    ParsedEvents out;
    Status s = parse(body, &out);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << body;
    EXPECT_NE(s.message().find("content after the JSON document"), std::string::npos)
        << body << ": " << s.message();
  }
}

Status parse_with(std::string body, const ParseOptions& base, ParsedEvents* out) {
  ParseOptions o = base;
  o.now_us = 1'700'000'000 * kUsPerSecond;
  return parse_events(body, o, out);
}

TEST(EventParseTest, NumbersThatAreNotJsonFailTheWholeRequest) {
  // RFC 8259 §6: no leading zeros, no bare '.', no '+'. The document is malformed, so the
  // request fails, not only the event (issue #16, defect 9).
  const char* numbers[] = {"01", "-01", "1.", ".5", "+1", "1e", "1e+", "-", "00"};
  for (const char* n : numbers) {
    ParsedEvents out;
    const std::string body =
        std::string(
            "{\"events\":[{\"id\":\"ok\",\"customer\":\"c\",\"type\":\"t\"},"
            "{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\",\"properties\":{\"n\":") +
        n + "}}]}";
    Status s = parse(body, &out);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << n;
    EXPECT_NE(s.message().find("malformed JSON"), std::string::npos) << n << ": " << s.message();
  }
  const char* fine[] = {"0", "-0", "10", "1.5", "-0.25", "1e3", "1E-3", "2.5e+2"};
  for (const char* n : fine) {
    ParsedEvents out;
    const std::string body =
        std::string("{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\",\"properties\":{\"n\":") + n +
        "}}";
    ASSERT_TRUE(parse(body, &out).ok()) << n;
    ASSERT_EQ(out.batch.size(), 1u) << n;
    EXPECT_EQ(out.batch.text(out.batch.props()[0].text), n);
  }
}

TEST(EventParseTest, IdsAndNamesFollowOneRule) {
  // Customers and types are addressed in URL paths, headers and CSV cells (issue #16, defect 5).
  const char* bad_customers[] = {
      "nul\\u0000id", "evil\\r\\nX-Injected: yes", "a/b", "a?b", "a#b", "tab\\there", "del\\u007f",
      "c1\\u0085"};
  for (const char* c : bad_customers) {
    ParsedEvents out;
    const std::string body =
        std::string("{\"id\":\"e1\",\"customer\":\"") + c + "\",\"type\":\"t\"}";
    ASSERT_TRUE(parse(body, &out).ok()) << c;
    EXPECT_EQ(out.batch.size(), 0u) << c;
    ASSERT_EQ(out.errors.size(), 1u) << c;
    EXPECT_EQ(out.errors[0].code, "INVALID_VALUE") << c;
    EXPECT_NE(out.errors[0].message.find("customer must be"), std::string::npos)
        << out.errors[0].message;
  }
  {
    ParsedEvents out;
    ASSERT_TRUE(parse("{\"id\":\"e1\",\"customer\":\"c\",\"type\":\"a\\nb\"}", &out).ok());
    ASSERT_EQ(out.errors.size(), 1u);
    EXPECT_NE(out.errors[0].message.find("type must be"), std::string::npos);
  }
  {
    // Event ids never appear in a path: '/', '?', '#' and line breaks are fine there; NUL not.
    ParsedEvents out;
    ASSERT_TRUE(parse("[{\"id\":\"req/1?x#y\\n\",\"customer\":\"c\",\"type\":\"t\"},"
                      "{\"id\":\"bad\\u0000\",\"customer\":\"c\",\"type\":\"t\"}]",
                      &out)
                    .ok());
    EXPECT_EQ(out.batch.size(), 1u);
    ASSERT_EQ(out.errors.size(), 1u);
    EXPECT_EQ(out.errors[0].index, 1u);
    EXPECT_NE(out.errors[0].message.find("event id must be"), std::string::npos);
  }
  {
    ParsedEvents out;
    ASSERT_TRUE(
        parse("{\"id\":\"e\",\"customer\":\"K\\u00f6ln Gmb\\u00e4\",\"type\":\"t\"}", &out).ok());
    EXPECT_EQ(out.batch.size(), 1u) << "non-ASCII UTF-8 is a fine customer id";
  }
}

TEST(EventParseTest, NegativeValuesOfMetersAreRefused) {
  MeterSpec tokens;
  tokens.key = "tokens_in";
  tokens.event_type = "TOKEN_USAGE";
  tokens.aggregation = Aggregation::kSum;
  tokens.value_property = "input_tokens";
  MeterSpec gpu;
  gpu.key = "gpu";
  gpu.event_type = "TOKEN_USAGE";
  gpu.aggregation = Aggregation::kSum;
  gpu.value_property = "seconds";
  gpu.filter = {{"kind", "gpu"}};
  const std::vector<const MeterSpec*> meters = {&tokens, &gpu};
  ParseOptions o;
  o.nonnegative = &meters;

  ParsedEvents out;
  ASSERT_TRUE(parse_with(R"({"events":[
      {"id":"neg-1","customer":"c","type":"TOKEN_USAGE","properties":{"provider":"OPENAI","input_tokens":-1000000000}},
      {"id":"ok-1","customer":"c","type":"TOKEN_USAGE","properties":{"input_tokens":0}},
      {"id":"other-type","customer":"c","type":"other","properties":{"input_tokens":-5}},
      {"id":"filtered-out","customer":"c","type":"TOKEN_USAGE","properties":{"kind":"cpu","seconds":-2}},
      {"id":"filtered-in","customer":"c","type":"TOKEN_USAGE","properties":{"kind":"gpu","seconds":-2}},
      {"id":"minus-zero","customer":"c","type":"TOKEN_USAGE","properties":{"input_tokens":-0.0}}]})",
                         o, &out)
                  .ok());
  ASSERT_EQ(out.errors.size(), 2u);
  EXPECT_EQ(out.errors[0].id, "neg-1");
  EXPECT_EQ(out.errors[0].code, "NEGATIVE_VALUE");
  EXPECT_NE(out.errors[0].message.find("tokens_in"), std::string::npos) << out.errors[0].message;
  EXPECT_EQ(out.errors[1].id, "filtered-in");
  EXPECT_EQ(out.errors[1].code, "NEGATIVE_VALUE");
  EXPECT_EQ(out.batch.size(), 4u);

  // Without the list (an admin caller and meters that allow_negative), the same events pass.
  ParseOptions admin;
  const std::vector<const MeterSpec*> none;
  admin.nonnegative = &none;
  ASSERT_TRUE(
      parse_with(
          R"({"id":"neg-1","customer":"c","type":"TOKEN_USAGE","properties":{"input_tokens":-3}})",
          admin, &out)
          .ok());
  EXPECT_EQ(out.batch.size(), 1u);
  EXPECT_TRUE(out.errors.empty());
}

// Found by tests/fuzz/ingest_body_fuzz.cc: an event_id that lost to idempotency_key was kept as
// a property of any length, past both the id limit and the 8 KiB property value limit.
TEST(EventParseTest, AnEventIdKeptAsAPropertyKeepsTheIdLimit) {
  for (std::size_t n : {kEventIdBytesMax + 1, kPropTextBytesMax + 1}) {
    ParsedEvents out;
    ASSERT_TRUE(parse(R"({"idempotency_key":"k","event_id":")" + std::string(n, 'x') +
                          R"(","customer":"c","type":"t"})",
                      &out)
                    .ok());
    EXPECT_EQ(out.batch.size(), 0u) << n;
    ASSERT_EQ(out.errors.size(), 1u) << n;
    EXPECT_EQ(out.errors[0].code, "INVALID_VALUE");
    EXPECT_NE(out.errors[0].message.find("event_id is longer than 128 bytes"), std::string::npos)
        << out.errors[0].message;
    EXPECT_EQ(out.errors[0].id, "k");
  }
  ParsedEvents out;
  ASSERT_TRUE(parse(R"({"idempotency_key":"k","event_id":")" + std::string(kEventIdBytesMax, 'x') +
                        R"(","customer":"c","type":"t"})",
                    &out)
                  .ok());
  ASSERT_EQ(out.batch.size(), 1u);
  const Event& e = out.batch.events()[0];
  ASSERT_EQ(e.prop_count, 1u);
  EXPECT_EQ(out.batch.text(out.batch.props()[e.prop_begin].key), "event_id");
  EXPECT_EQ(out.batch.text(out.batch.props()[e.prop_begin].text).size(), kEventIdBytesMax);
}

TEST(EventParseTest, ASourceScopesTheIdOfCloudEventsWhenAsked) {
  const std::string text =
      R"([{"specversion":"1.0","id":"1","source":"billing","type":"t","subject":"c","data":{"n":1}},)"
      R"({"specversion":"1.0","id":"1","source":"api","type":"t","subject":"c"},)"
      R"({"specversion":"1.0","id":"2","type":"t","subject":"c"}])";
  ParseOptions o;
  o.now_us = 1'700'000'000 * kUsPerSecond;
  o.source_scopes_id = true;
  ParsedEvents out;
  std::string body = text;  // the parser pads it in place
  ASSERT_TRUE(parse_events(body, o, &out).ok());
  ASSERT_EQ(out.batch.size(), 3u);
  EXPECT_EQ(out.batch.text(out.batch.events()[0].id), "billing/1");
  EXPECT_EQ(out.batch.text(out.batch.events()[1].id), "api/1");
  EXPECT_EQ(out.batch.text(out.batch.events()[2].id), "2");
  EXPECT_EQ(out.batch.events()[0].prop_count, 1u) << "the source is no property";
  // Off (Tally's own route): the id alone, and source a property.
  o.source_scopes_id = false;
  body = text;
  ASSERT_TRUE(parse_events(body, o, &out).ok());
  EXPECT_EQ(out.batch.text(out.batch.events()[0].id), "1");
  EXPECT_EQ(out.batch.events()[0].prop_count, 2u);
}

// ---- one row per accepted shape and alias: body -> events, or -> per-event errors -----------

// The parsed events as text: "id customer type time_us [key=value ...]" per event, then
// "#index CODE" per refused event, joined by " | ".
std::string render(const ParsedEvents& out) {
  std::string s;
  const EventBatch& b = out.batch;
  for (const Event& e : b.events()) {
    if (!s.empty()) {
      s += " | ";
    }
    s += std::string(b.text(e.id)) + " " + std::string(b.text(e.customer)) + " " +
         std::string(b.text(e.type)) + " " + std::to_string(e.time_us);
    for (std::uint32_t i = e.prop_begin; i < e.prop_begin + e.prop_count; ++i) {
      const Prop& p = b.props()[i];
      s += " " + std::string(b.text(p.key)) + "=" + std::string(b.text(p.text));
    }
  }
  for (const EventError& err : out.errors) {
    if (!s.empty()) {
      s += " | ";
    }
    s += "#" + std::to_string(err.index) + " " + err.code;
  }
  return s;
}

constexpr TimeUs kNowUs = 1'700'000'000 * kUsPerSecond;  // 2023-11-14T22:13:20Z
// "2023-11-14T22:00:00Z", 800 s before kNowUs.
#define T22 "\"2023-11-14T22:00:00Z\""

struct ShapeRow {
  const char* what;
  const char* body;
  const char* expected;
  const char* default_customer = "";
  bool source_scopes_id = false;
};

TEST(EventParseShapes, EveryShapeAndAlias) {
  const ShapeRow rows[] = {
      {"Tally's batch",
       R"({"events":[{"id":"a","customer":"c","type":"t","time":)" T22
       R"(,"properties":{"n":5,"s":"x"}}]})",
       "a c t 1699999200000000 n=5 s=x"},
      {"a batch of two keeps request order",
       R"({"events":[{"id":"a","customer":"c","type":"t"},{"id":"b","customer":"d","type":"u"}]})",
       "a c t 1700000000000000 | b d u 1700000000000000"},
      {"other root fields beside events are skipped",
       R"({"meta":{"x":1},"events":[{"id":"a","customer":"c","type":"t"}]})",
       "a c t 1700000000000000"},
      {"a JSON array", R"([{"id":"a","customer":"c","type":"t"}])", "a c t 1700000000000000"},
      {"one event object", R"({"id":"a","customer":"c","type":"t"})", "a c t 1700000000000000"},
      {"the flat shape: aliases, and other fields are properties",
       R"({"event_id":"e1","customer_id":"c","event_type":"t","timestamp":)" T22
       R"(,"tokens":10,"model":"m"})",
       "e1 c t 1699999200000000 tokens=10 model=m"},
      {"idempotency_key wins over event_id, which stays a property",
       R"({"idempotency_key":"k1","event_id":"e1","customer_id":"c","event_type":"t"})",
       "k1 c t 1700000000000000 event_id=e1"},
      {"idempotency_key wins over id",
       R"({"idempotency_key":"k1","id":"i1","customer":"c","type":"t"})",
       "k1 c t 1700000000000000"},
      {"id wins over event_id", R"({"id":"i1","event_id":"e1","customer":"c","type":"t"})",
       "i1 c t 1700000000000000"},
      {"CloudEvents: subject, data; the envelope is dropped, source is a property",
       R"({"specversion":"1.0","id":"ce1","source":"/s","type":"t","subject":"c","time":)" T22
       R"(,"datacontenttype":"application/json","dataschema":"x","data":{"n":1}})",
       "ce1 c t 1699999200000000 source=/s n=1"},
      {"CloudEvents with source scoping the id",
       R"({"specversion":"1.0","id":"ce1","source":"/s","type":"t","subject":"c"})",
       "/s/ce1 c t 1700000000000000", "", true},
      {"nested properties flatten with dots; booleans and null",
       R"({"id":"a","customer":"c","type":"t","properties":{"usage":{"in":3,"out":4},"ok":true,"none":null}})",
       "a c t 1700000000000000 usage.in=3 usage.out=4 ok=true none="},
      {"null fields are absent",
       R"({"id":"a","customer":"c","type":"t","time":null,"properties":null})",
       "a c t 1700000000000000"},
      {"the default customer", R"({"id":"a","type":"t"})", "a dflt t 1700000000000000", "dflt"},
      {"a valid event goes on beside an invalid one",
       R"([{"customer":"c","type":"t"},{"id":"b","customer":"c","type":"t"}])",
       "b c t 1700000000000000 | #0 MISSING_FIELD"},
      {"no customer", R"({"id":"a","type":"t"})", "#0 MISSING_FIELD"},
      {"no type", R"({"id":"a","customer":"c"})", "#0 MISSING_FIELD"},
      {"an id that is not a string", R"({"id":7,"customer":"c","type":"t"})", "#0 INVALID_TYPE"},
      {"properties that are not an object",
       R"({"id":"a","customer":"c","type":"t","properties":[1]})", "#0 INVALID_TYPE"},
      {"an array property", R"({"id":"a","customer":"c","type":"t","properties":{"x":[1]}})",
       "#0 INVALID_TYPE"},
      {"a time that is not RFC 3339", R"({"id":"a","customer":"c","type":"t","time":"yesterday"})",
       "#0 INVALID_TIME"},
      {"a time too far ahead",
       R"({"id":"a","customer":"c","type":"t","time":"2023-11-14T23:00:00Z"})",
       "#0 TIME_IN_FUTURE"},
  };
  for (const ShapeRow& row : rows) {
    ParseOptions o;
    o.now_us = kNowUs;
    o.default_customer = row.default_customer;
    o.source_scopes_id = row.source_scopes_id;
    std::string body = row.body;
    ParsedEvents out;
    ASSERT_TRUE(parse_events(body, o, &out).ok()) << row.what;
    EXPECT_EQ(render(out), row.expected) << row.what;
  }
}

struct RefusedRow {
  const char* what;
  const char* body;
  const char* message;  // a part of the whole request's error
};

TEST(EventParseShapes, BodiesOfTheWrongShapeFailTheWholeRequest) {
  const RefusedRow rows[] = {
      {"a string", R"("event")", "body must be a JSON object"},
      {"a number", "42", "body must be a JSON object"},
      {"events that is not an array", R"({"events":{"id":"a"}})", "'events' must be an array"},
      {"an empty batch", R"({"events":[]})", "the batch holds no events"},
      {"an empty array", "[]", "the batch holds no events"},
      {"malformed JSON", R"({"events":[{"id":"a",}]})", "malformed JSON"},
  };
  for (const RefusedRow& row : rows) {
    ParseOptions o;
    o.now_us = kNowUs;
    std::string body = row.body;
    ParsedEvents out;
    const Status s = parse_events(body, o, &out);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << row.what;
    EXPECT_EQ(s.details_json(), kInvalidJsonDetails) << row.what;
    EXPECT_NE(s.message().find(row.message), std::string::npos) << row.what << ": " << s.message();
    EXPECT_TRUE(out.batch.empty()) << row.what;
  }
}

TEST(EventParseShapes, ABatchOverItsBoundIsTooLarge) {
  ParseOptions o;
  o.now_us = kNowUs;
  o.events_max = 2;
  std::string body =
      R"([{"id":"a","customer":"c","type":"t"},{"id":"b","customer":"c","type":"t"},)"
      R"({"id":"c","customer":"c","type":"t"}])";
  ParsedEvents out;
  const Status s = parse_events(body, o, &out);
  EXPECT_EQ(s.code(), StatusCode::kPayloadTooLarge) << s.to_string();
  EXPECT_EQ(s.message(), "a request may carry at most 2 events");
  body = R"([{"id":"a","customer":"c","type":"t"},{"id":"b","customer":"c","type":"t"}])";
  EXPECT_TRUE(parse_events(body, o, &out).ok()) << "the bound itself is allowed";
}

#undef T22

}  // namespace
}  // namespace tally::core
