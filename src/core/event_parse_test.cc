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

}  // namespace
}  // namespace tally::core
