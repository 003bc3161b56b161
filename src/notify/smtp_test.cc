#include "notify/smtp.h"

#include <gtest/gtest.h>

namespace tally::notify {
namespace {

TEST(SmtpTest, DotStuffingAndLineEndings) {
  EXPECT_EQ(dot_stuff("a\nb"), "a\r\nb\r\n.\r\n");
  EXPECT_EQ(dot_stuff("a\r\nb\r\n"), "a\r\nb\r\n.\r\n");
  EXPECT_EQ(dot_stuff(".hidden\n..two\nmid.dot\n."),
            "..hidden\r\n...two\r\nmid.dot\r\n..\r\n.\r\n");
  EXPECT_EQ(dot_stuff("bare\rcr"), "bare\r\ncr\r\n.\r\n");
  EXPECT_EQ(dot_stuff(""), ".\r\n");
  // A message that holds the end-of-data line cannot end the DATA early.
  EXPECT_EQ(dot_stuff("x\r\n.\r\nRCPT TO:<evil@x.example>"),
            "x\r\n..\r\nRCPT TO:<evil@x.example>\r\n.\r\n");
}

TEST(SmtpTest, RepliesSingleAndMultiLine) {
  SmtpReply r;
  EXPECT_EQ(parse_reply("220 sink.test ESMTP\r\n", &r), 21);
  EXPECT_EQ(r.code, 220);
  EXPECT_EQ(r.lines, (std::vector<std::string>{"sink.test ESMTP"}));
  const std::string ehlo = "250-sink.test\r\n250-8BITMIME\r\n250-AUTH PLAIN LOGIN\r\n250 HELP\r\n";
  EXPECT_EQ(parse_reply(ehlo + "next", &r), static_cast<long>(ehlo.size()));
  EXPECT_EQ(r.lines,
            (std::vector<std::string>{"sink.test", "8BITMIME", "AUTH PLAIN LOGIN", "HELP"}));
  EXPECT_EQ(parse_reply("250-sink.test\r\n250-8BIT", &r), 0) << "incomplete";
  EXPECT_EQ(parse_reply("250", &r), 0) << "no line end yet";
  EXPECT_EQ(parse_reply("354\r\n", &r), 5);
  EXPECT_EQ(r.code, 354);
  EXPECT_EQ(parse_reply("hello\r\n", &r), -1);
  EXPECT_EQ(parse_reply("250-a\r\n251 b\r\n", &r), -1) << "codes differ";
  EXPECT_EQ(parse_reply("250xa\r\n", &r), -1);
}

TEST(SmtpTest, NoServerIsARetryNotAPermanentFailure) {
  SmtpServer s;
  s.host = "127.0.0.1";
  s.port = 1;  // nothing listens on port 1 of the loopback
  s.starttls = StartTls::kOff;
  s.timeout_seconds = 5;
  const SmtpResult r = send_mail(s, "a@example.com", {"b@example.com"}, "Subject: x\n\nhi\n");
  EXPECT_FALSE(r.delivered);
  EXPECT_FALSE(r.permanent);
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.error.find("cannot connect to 127.0.0.1:1"), std::string::npos) << r.error;
}

}  // namespace
}  // namespace tally::notify
