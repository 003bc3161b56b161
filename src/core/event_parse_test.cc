// Tests of the ingest body parser: the body must be exactly one JSON document.
#include "core/event_parse.h"

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
    const std::string body = std::string("{\"events\":[{\"id\":\"ok\",\"customer\":\"c\",\"type\":\"t\"},"
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
  const char* bad_customers[] = {"nul\\u0000id", "evil\\r\\nX-Injected: yes", "a/b", "a?b", "a#b",
                                 "tab\\there", "del\\u007f", "c1\\u0085"};
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
    ASSERT_TRUE(parse("{\"id\":\"e\",\"customer\":\"K\\u00f6ln Gmb\\u00e4\",\"type\":\"t\"}", &out).ok());
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
  ASSERT_TRUE(parse_with(R"({"id":"neg-1","customer":"c","type":"TOKEN_USAGE","properties":{"input_tokens":-3}})",
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

}  // namespace
}  // namespace tally::core
