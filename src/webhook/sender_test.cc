// The pure parts of webhook delivery: signatures (against independently known values),
// base64, the retry schedule and the payload; and post() against a one-shot server on loopback:
// the request it sends, and each answer or failure as its result.
#include "webhook/sender.h"

#include <thread>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

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

// A server on a loopback port that takes one connection, reads one request (head and a body of
// its Content-Length) into request(), and writes `answer` (none: it keeps the connection open
// without answering until the client gives up).
class OneShotServer {
 public:
  explicit OneShotServer(std::string answer) : answer_(std::move(answer)) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len), 0);
    EXPECT_EQ(::listen(fd_, 1), 0);
    EXPECT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }

  ~OneShotServer() {
    ::shutdown(fd_, SHUT_RDWR);  // a server never connected to stops waiting
    if (thread_.joinable()) {
      thread_.join();
    }
    ::close(fd_);
  }

  std::string url(const std::string& target) const {
    return "http://127.0.0.1:" + std::to_string(port_) + target;
  }

  // The request read, once the server is done (it waits for that).
  std::string request() {
    if (thread_.joinable()) {
      thread_.join();
    }
    return request_;
  }

 private:
  void serve() {
    const int conn = ::accept(fd_, nullptr, nullptr);
    if (conn < 0) {
      return;
    }
    char buf[4096];
    std::size_t want = std::string::npos;
    for (;;) {
      const ssize_t n = ::recv(conn, buf, sizeof(buf), 0);
      if (n <= 0) {
        break;
      }
      request_.append(buf, static_cast<std::size_t>(n));
      const std::size_t head_end = request_.find("\r\n\r\n");
      if (want == std::string::npos && head_end != std::string::npos) {
        const std::size_t cl = request_.find("Content-Length: ");
        want = head_end + 4 + (cl == std::string::npos ? 0 : std::stoul(request_.substr(cl + 16)));
      }
      if (want != std::string::npos && request_.size() >= want) {
        break;
      }
    }
    if (answer_.empty()) {
      // Silent until the client closes.
      while (::recv(conn, buf, sizeof(buf), 0) > 0) {
      }
    } else {
      EXPECT_EQ(::send(conn, answer_.data(), answer_.size(), MSG_NOSIGNAL),
                static_cast<ssize_t>(answer_.size()));
    }
    ::close(conn);
  }

  std::string answer_;
  int fd_ = -1;
  int port_ = 0;
  std::thread thread_;
  std::string request_;
};

TEST(Post, SendsTheBodyWithItsHeadersAndTakesA2xxAsDelivered) {
  OneShotServer server("HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n");
  const PostResult r =
      post(server.url("/hooks/in?x=1"), {{"Tally-Signature", "t=1,v1=ab"}}, R"({"a":1})", 5);
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.error, "");
  const std::string request = server.request();
  EXPECT_EQ(request.rfind("POST /hooks/in?x=1 HTTP/1.1\r\n", 0), 0u) << request;
  for (const char* line : {"Host: 127.0.0.1:", "User-Agent: Tally-Webhooks/1\r\n",
                           "Content-Type: application/json\r\n", "Tally-Signature: t=1,v1=ab\r\n",
                           "Content-Length: 7\r\n"}) {
    EXPECT_NE(request.find(line), std::string::npos) << line << " in " << request;
  }
  EXPECT_EQ(request.substr(request.size() - 7), R"({"a":1})");
}

TEST(Post, AnAnswerOutside2xxIsAnErrorWithItsStatusAndBodyClipped) {
  OneShotServer server("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy");
  PostResult r = post(server.url(""), {}, "{}", 5);
  EXPECT_EQ(r.status, 503);
  EXPECT_EQ(r.error, "HTTP 503: busy");
  const std::string long_body(1000, 'x');
  OneShotServer verbose("HTTP/1.1 400 Bad Request\r\nContent-Length: 1000\r\n\r\n" + long_body);
  r = post(verbose.url("/"), {}, "{}", 5);
  EXPECT_EQ(r.status, 400);
  // Clipped to 200 bytes and marked.
  EXPECT_EQ(r.error, "HTTP 400: " + std::string(190, 'x') + "...");
}

TEST(Post, NoAnswerIsAnErrorWithoutAStatus) {
  PostResult r = post("https://127.0.0.1/x", {}, "{}", 1);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.error, "not an http:// URL");
  {
    OneShotServer silent("");
    r = post(silent.url("/"), {}, "{}", 1);
    EXPECT_EQ(r.status, 0);
    EXPECT_EQ(r.error, "timed out after 1s");
  }
  // A port nobody listens on: one bound and closed again.
  int port = 0;
  {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), len), 0);
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port = ntohs(addr.sin_port);
    ::close(fd);
  }
  r = post("http://127.0.0.1:" + std::to_string(port) + "/", {}, "{}", 1);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.error, "cannot connect: Connection refused");
  OneShotServer garbage("NOT HTTP\r\n\r\n");
  r = post(garbage.url("/"), {}, "{}", 1);
  EXPECT_EQ(r.status, 0);
  EXPECT_EQ(r.error.rfind("no answer: ", 0), 0u) << r.error;
}

}  // namespace
}  // namespace tally::webhook
