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
      "{\"id\":\"a\",\"customer\":\"c\",\"type\":\"t\"}\n{\"id\":\"b\",\"customer\":\"c\",\"type\":"
      "\"t\"}\n",
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

}  // namespace
}  // namespace tally::core
