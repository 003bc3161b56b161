#include "notify/email.h"

#include <gtest/gtest.h>

#include "common/crypto.h"
#include "core/time.h"
#include "support/sample_alert.h"

namespace tally::notify {
namespace {

TEST(EmailTest, Rfc5322Dates) {
  EXPECT_EQ(rfc5322_date(*core::parse_rfc3339("2025-03-04T10:05:09Z")),
            "Tue, 04 Mar 2025 10:05:09 +0000");
  EXPECT_EQ(rfc5322_date(0), "Thu, 01 Jan 1970 00:00:00 +0000");
  EXPECT_EQ(rfc5322_date(*core::parse_rfc3339("2024-02-29T23:59:59.999Z")),
            "Thu, 29 Feb 2024 23:59:59 +0000");
}

TEST(EmailTest, MailtoRecipients) {
  EXPECT_EQ(mailto_recipients("mailto:a@x.example,b@y.example"),
            (std::vector<std::string>{"a@x.example", "b@y.example"}));
  EXPECT_EQ(mailto_recipients("mailto:a@x.example"), (std::vector<std::string>{"a@x.example"}));
  EXPECT_TRUE(mailto_recipients("http://x/hook").empty());
  EXPECT_TRUE(mailto_recipients("mailto:").empty());
}

TEST(EmailTest, HeaderTextIsAsciiOrEncodedWords) {
  EXPECT_EQ(header_text("plain words"), "plain words");
  EXPECT_EQ(header_text("no\r\nInjected: header"), "no  Injected: header");
  const std::string k = "K\xC3\xB6ln";
  EXPECT_EQ(header_text(k), "=?utf-8?B?" + common::base64_encode(k) + "?=");
  // Long text: several words on folded lines, none splitting a UTF-8 sequence.
  std::string long_text;
  for (int i = 0; i < 30; ++i) {
    long_text += "\xC3\xB6";
  }
  const std::string h = header_text(long_text);
  std::string decoded;
  std::size_t pos = 0;
  int words = 0;
  while ((pos = h.find("=?utf-8?B?", pos)) != std::string::npos) {
    const std::size_t end = h.find("?=", pos + 10);
    ASSERT_NE(end, std::string::npos);
    EXPECT_LE(end + 2 - pos, 75u);
    std::string part;
    ASSERT_TRUE(common::base64_decode(h.substr(pos + 10, end - pos - 10), &part));
    EXPECT_NE(static_cast<unsigned char>(part[0]) & 0xC0, 0x80) << "a word starts mid-character";
    decoded += part;
    pos = end + 2;
    ++words;
  }
  EXPECT_EQ(words, 2);
  EXPECT_EQ(decoded, long_text);
  EXPECT_NE(h.find("?=\r\n =?utf-8?B?"), std::string::npos) << h;
}

TEST(EmailTest, TheMessageOfALimitAlert) {
  WebhookDelivery d;
  d.id = "dlv_abc";
  const std::string m =
      alert_message(d, testing::sample_limit_alert(), {"alerts@tally.example", "Tally", "[Tally]"},
                    {"ops@example.com", "billing@acme.example"});
  const std::string head = m.substr(0, m.find("\r\n\r\n") + 2);
  EXPECT_EQ(head,
            "Date: Tue, 04 Mar 2025 10:05:09 +0000\r\n"
            "From: Tally <alerts@tally.example>\r\n"
            "To: ops@example.com,\r\n billing@acme.example\r\n"
            "Subject: [Tally] acme reached 80% of api_calls per month (warning)\r\n"
            "Message-ID: <dlv_abc.alrt_7@tally.example>\r\n"
            "MIME-Version: 1.0\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            "Content-Transfer-Encoding: 8bit\r\n"
            "X-Tally-Alert-Id: alrt_7\r\n"
            "X-Tally-Delivery-Id: dlv_abc\r\n");
  const std::string body = m.substr(m.find("\r\n\r\n") + 4);
  EXPECT_NE(body.find("Customer acme has used 80.00% of its limit api_calls per month, passing "
                      "the 80% threshold.\r\n"),
            std::string::npos)
      << body;
  EXPECT_NE(body.find("Used:       80 (80.00%)\r\n"), std::string::npos) << body;
  EXPECT_NE(body.find("Period:     2025-03-01T00:00:00Z to 2025-04-01T00:00:00Z\r\n"),
            std::string::npos)
      << body;
  EXPECT_EQ(m.find('\n', 0), m.find("\r\n") + 1) << "every line ends in CRLF";
  for (std::size_t i = 0; i < m.size(); ++i) {
    if (m[i] == '\n') {
      ASSERT_GT(i, 0u);
      EXPECT_EQ(m[i - 1], '\r') << "bare LF at " << i;
    }
  }
  // The same delivery gives the same bytes on every attempt.
  EXPECT_EQ(m, alert_message(d, testing::sample_limit_alert(),
                             {"alerts@tally.example", "Tally", "[Tally]"},
                             {"ops@example.com", "billing@acme.example"}));
}

TEST(EmailTest, TheSubjectOfALowBalanceAlert) {
  Alert a;
  a.id = "alrt_9";
  a.customer = "acme";
  a.kind = AlertKind::kLowBalance;
  a.level = AlertLevel::kWarning;
  a.threshold_amount = "10";
  a.balance = "4.5";
  EXPECT_EQ(alert_subject(a, ""), "acme's credit balance fell below 10 (warning)");
  EXPECT_NE(alert_body(a).find("The credit balance of customer acme is 4.5, below the alert "
                               "amount of 10."),
            std::string::npos);
}

}  // namespace
}  // namespace tally::notify
