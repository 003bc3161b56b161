// The pure parts of webhook delivery: signatures (against independently known values),
// base64, the retry schedule and the payload.
#include "webhook/sender.h"

#include <gtest/gtest.h>

#include "common/crypto.h"
#include "support/sample_alert.h"

namespace tally::webhook {
namespace {

TEST(Base64, MatchesRfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(common::base64_encode(plain), encoded);
    std::string back;
    ASSERT_TRUE(common::base64_decode(encoded, &back)) << encoded;
    EXPECT_EQ(back, plain);
  }
  std::string out;
  EXPECT_FALSE(common::base64_decode("Zm9v!", &out));
  EXPECT_FALSE(common::base64_decode("Z", &out));
}

TEST(Signature, TallySignatureIsHexHmacOfTimestampDotBody) {
  // hmac_sha256 against RFC 4231 test case 2, then the construction over it.
  EXPECT_EQ(common::to_hex(common::hmac_sha256("Jefe", "what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
  const std::string body = R"({"id":"dlv_1"})";
  EXPECT_EQ(
      tally_signature("whsec_abc", 1700000000, body),
      "t=1700000000,v1=" + common::to_hex(common::hmac_sha256("whsec_abc", "1700000000." + body)));
}

TEST(Signature, StandardWebhooksSignatureMatchesTheSpecExample) {
  // The example of the Standard Webhooks specification (standardwebhooks.com).
  EXPECT_EQ(
      standard_signature("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek",
                         1614265330, R"({"test": 2432232314})"),
      "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
  // A secret without the prefix is used as it is.
  EXPECT_EQ(standard_signature("plain-secret-1234", "id", 1, "{}"),
            "v1," + common::base64_encode(common::hmac_sha256("plain-secret-1234", "id.1.{}")));
}

TEST(Retry, DelaysDoubleUpToTheMaximumScaledByJitter) {
  EXPECT_EQ(retry_delay_us(1, 1, 3600, 1.0), 1'000'000);
  EXPECT_EQ(retry_delay_us(2, 1, 3600, 1.0), 2'000'000);
  EXPECT_EQ(retry_delay_us(5, 1, 3600, 1.0), 16'000'000);
  EXPECT_EQ(retry_delay_us(40, 1, 3600, 1.0), 3'600'000'000);
  EXPECT_EQ(retry_delay_us(3, 2, 3600, 0.5), 4'000'000);
  EXPECT_EQ(retry_delay_us(1, 1, 3600, 0.1), 500'000);  // jitter is kept within [0.5, 1]
}

TEST(Payload, CarriesTheDeliveryIdTypeAndAlert) {
  WebhookDelivery d;
  d.id = "dlv_x";
  d.event = "alert.triggered";
  const Alert a = testing::sample_limit_alert();
  const std::string p = payload(d, a);
  EXPECT_EQ(
      p.rfind(
          R"({"id":"dlv_x","type":"alert.triggered","created_at":"2025-03-04T10:05:09Z","data":{"id":"alrt_7","customer":"acme","kind":"limit","level":"warning","meter":"api_calls","period":"month","limit":"api_calls per month")",
          0),
      0u)
      << p;
  EXPECT_NE(p.find(R"("threshold_percent":80,"limit_amount":100,"used":80,"percent":80.00,)"
                   R"("window_start":"2025-03-01T00:00:00Z","window_end":"2025-04-01T00:00:00Z")"),
            std::string::npos)
      << p;
  EXPECT_EQ(p.find("deliveries"), std::string::npos);
}

}  // namespace
}  // namespace tally::webhook
