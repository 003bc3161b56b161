#include "core/ids.h"

#include <string>

#include <gtest/gtest.h>

namespace tally::core {
namespace {

TEST(IdsTest, NamesAreUtf8WithoutControlsOrPathCharacters) {
  EXPECT_TRUE(check_name("customer", "acme").ok());
  EXPECT_TRUE(check_name("customer", "cust-test-001").ok());
  EXPECT_TRUE(check_name("customer", "K\xC3\xB6ln GmbH & Co.").ok());
  EXPECT_TRUE(check_name("customer", std::string(128, 'a')).ok());
  EXPECT_FALSE(check_name("customer", std::string(129, 'a')).ok());
  EXPECT_FALSE(check_name("customer", "").ok());
  EXPECT_FALSE(check_name("customer", std::string("nul\0id", 6)).ok());
  EXPECT_FALSE(check_name("customer", "evil\r\nX-Injected: yes").ok());
  EXPECT_FALSE(check_name("customer", "a\x7F").ok());
  EXPECT_FALSE(check_name("customer", "c1\xC2\x85").ok()) << "U+0085 is a C1 control";
  EXPECT_TRUE(check_name("customer", "nbsp\xC2\xA0").ok()) << "U+00A0 is not a control";
  EXPECT_FALSE(check_name("customer", "bad\xFF").ok()) << "not UTF-8";
  EXPECT_FALSE(check_name("customer", "\xC0\xAF").ok()) << "overlong";
  EXPECT_FALSE(check_name("customer", "\xED\xA0\x80").ok()) << "a surrogate";
  for (const char* c : {"a/b", "a?b", "a#b"}) {
    EXPECT_FALSE(check_name("customer", c).ok()) << c;
    EXPECT_TRUE(check_event_id("event id", c).ok()) << c;
  }
  const Status s = check_name("organization", "a/b");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message().rfind("organization must be", 0), 0u) << s.message();
  EXPECT_FALSE(check_event_id("event id", std::string("x\0", 2)).ok());
  EXPECT_TRUE(check_event_id("event id", "line\nbreak\r").ok()) << "only NUL is refused";
  EXPECT_FALSE(check_event_id("event id", "bad\xFF").ok());
  EXPECT_FALSE(check_event_id("event id", "").ok());
}

TEST(IdsTest, EmailAddressesSafeForSmtpCommandsAndHeaders) {
  for (const char* ok : {"ops@example.com", "a.b+tag@mail.example.co.uk", "x_y-z@a-b.example",
                         "o'neil@example.org"}) {
    EXPECT_TRUE(valid_email_address(ok)) << ok;
  }
  for (const char* bad : {"",
                          "nobody",
                          "@example.com",
                          "a@",
                          "a@b",
                          "a@@b.com",
                          "a b@c.com",
                          "a@b .com",
                          "<a@b.com>",
                          "a@b.com>",
                          "a@b.com\r\nRCPT TO:<x@y.z>",
                          "a\n@b.com",
                          ".a@b.com",
                          "a.@b.com",
                          "a..b@c.com",
                          "a@.b.com",
                          "a@b..com",
                          "a@-b.com",
                          "a@b-.com",
                          "\"q\"@b.com",
                          "a@b_c.com",
                          "j\xC3\xB6rg@example.com"}) {
    EXPECT_FALSE(valid_email_address(bad)) << bad;
  }
  EXPECT_FALSE(valid_email_address(std::string(65, 'a') + "@example.com"));
  EXPECT_FALSE(valid_email_address("a@" + std::string(250, 'b') + ".com"));
}

}  // namespace
}  // namespace tally::core
