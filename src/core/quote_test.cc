#include "core/quote.h"

#include <string>

#include <gtest/gtest.h>

namespace tally::core {
namespace {

TEST(QuoteTest, ShortTextIsQuotedWhole) {
  EXPECT_EQ(quote_text(""), "\"\"");
  EXPECT_EQ(quote_text("1e"), "\"1e\"");
  EXPECT_EQ(quote_text(std::string(kQuotedBytesMax, 'x')),
            "\"" + std::string(kQuotedBytesMax, 'x') + "\"");
}

TEST(QuoteTest, LongTextIsCutAfter64BytesAndMarked) {
  const std::string long_text = std::string(kQuotedBytesMax, 'a') + "tail";
  EXPECT_EQ(quote_text(long_text), "\"" + std::string(kQuotedBytesMax, 'a') + "...\"");
}

TEST(QuoteTest, QuotedErrorIsAnInvalidArgumentNamingTheText) {
  const Status s = quoted_error("invalid number", "1e", "missing exponent digits");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "invalid number \"1e\": missing exponent digits");
}

}  // namespace
}  // namespace tally::core
