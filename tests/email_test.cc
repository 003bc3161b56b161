// Email alerts end to end: a real `tally serve` sending to a real SMTP server on loopback
// (tests/support/smtp_sink.py on Debian's aiosmtpd), started by the test on a free port with a
// temporary directory and stopped by its pid. Proves one email per threshold to the right
// recipients (the customer's address and fixed ones), retries while the server is down and one
// delivery once it is up, no second email after a restart, AUTH with the password from the
// environment, a 5xx refusal recorded as failed, and the configuration errors refused at start.
#include <chrono>
#include <fstream>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <signal.h>

#include "alert_test_util.h"
#include "json_test_util.h"
#include "support/process.h"
#include "tally_server.h"

namespace tally::testing {
namespace {

// The SMTP sink as a child process: messages land in dir()/msg-N.eml (+ .json envelope).
class SmtpSink {
 public:
  SmtpSink(std::uint16_t port, std::vector<std::string> extra_args = {})
      : port_(port), dir_(make_temp_dir("tally-smtp-")) {
    start(std::move(extra_args));
  }

  ~SmtpSink() {
    stop();
    remove_tree(dir_);
  }

  // False (with the log in `why`) when python3 or aiosmtpd is missing.
  bool ok(std::string* why) const {
    if (!ready_) {
      *why = read_file(dir_ + "/sink.log").value_or("no log");
    }
    return ready_;
  }

  void start(std::vector<std::string> extra_args) {
    std::remove((dir_ + "/ready").c_str());
    ProcessOptions o;
    o.executable = "/usr/bin/python3";
    o.args = {std::string(TALLY_SOURCE_DIR) + "/tests/support/smtp_sink.py", "--port",
              std::to_string(port_), "--dir", dir_};
    o.args.insert(o.args.end(), extra_args.begin(), extra_args.end());
    o.log_path = dir_ + "/sink.log";
    auto p = ChildProcess::start(o);
    ASSERT_TRUE(p.has_value()) << p.error().message();
    process_ = std::make_unique<ChildProcess>(std::move(*p));
    ready_ = wait_for_file(dir_ + "/ready", 20000);
  }

  void stop() {
    if (process_ != nullptr) {
      process_->send_signal(SIGTERM);
      process_->wait_exit(10000);
      process_.reset();
    }
  }

  // The messages stored so far, in order.
  std::vector<std::string> messages() const {
    std::vector<std::string> out;
    for (int n = 0;; ++n) {
      auto m = read_file(dir_ + "/msg-" + std::to_string(n) + ".eml");
      if (!m) {
        return out;
      }
      out.push_back(*m);
    }
  }

  std::string envelope(int n) const {
    return read_file(dir_ + "/msg-" + std::to_string(n) + ".json").value_or("");
  }

  bool wait_for(std::size_t n, int timeout_ms) const {
    for (int waited = 0; waited < timeout_ms; waited += 50) {
      if (messages().size() >= n) {
        return true;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return messages().size() >= n;
  }

 private:
  std::uint16_t port_;
  std::string dir_;
  bool ready_ = false;
  std::unique_ptr<ChildProcess> process_;
};

#define START_SINK(sink)                   \
  do {                                     \
    std::string why_;                      \
    ASSERT_TRUE((sink).ok(&why_)) << why_; \
  } while (false)

std::string config(
    std::uint16_t smtp_port, const std::string& notification_extra = "",
    const std::string& retry = "retry_backoff = \"1s\"\nretry_backoff_max = \"1s\"") {
  return alerting_plan_toml("alert_levels = [\"info\", \"warning\", \"critical\"]\n",
                            "email = \"billing@acme.example\"\n") +
         R"(
[[notifications]]
host = "127.0.0.1"
port = )" +
         std::to_string(smtp_port) + R"(
starttls = "off"
from = "alerts@tally.example"
to = ["ops@tally.example"]
to_customer = true
levels = ["warning", "critical"]
timeout = "5s"
)" + retry +
         "\n" + notification_extra + "\n";
}

// The statuses of every delivery of every alert, in order.
std::vector<std::string> delivery_statuses(const Json& j) {
  std::vector<std::string> out;
  const simdjson::dom::array alerts = j["alerts"].get_array().value_unsafe();
  for (auto a : alerts) {
    const simdjson::dom::array deliveries = a["deliveries"].get_array().value_unsafe();
    for (auto d : deliveries) {
      out.emplace_back(d["status"].get_string().value_unsafe());
    }
  }
  return out;
}

bool all_are(const std::vector<std::string>& v, std::size_t n, const std::string& status) {
  return v.size() == n &&
         std::all_of(v.begin(), v.end(), [&](const auto& s) { return s == status; });
}

std::string header_of(const std::string& message, const std::string& name) {
  const std::size_t at = message.find("\r\n" + name + ": ");
  if (at == std::string::npos) {
    return message.rfind(name + ": ", 0) == 0
               ? message.substr(name.size() + 2, message.find("\r\n") - name.size() - 2)
               : "";
  }
  const std::size_t start = at + 2 + name.size() + 2;
  return message.substr(start, message.find("\r\n", start) - start);
}

TEST(EmailAlerts, OneEmailPerThresholdToTheCustomerAndFixedRecipientsAndNoneAfterARestart) {
  const std::uint16_t port = pick_unused_port();
  SmtpSink sink(port);
  START_SINK(sink);
  std::string dir = make_temp_dir("tally-email-");
  {
    TallyServer server(config(port), dir);
    ingest_calls(server, 85, 0);  // 85 of 100: 50% (info, not subscribed) and 80% (warning)
    ASSERT_TRUE(sink.wait_for(1, 30000)) << server.log();
    const std::string body = poll_alerts(
        server, "", [](const Json& j) { return all_are(delivery_statuses(j), 1, "delivered"); });
    Json j(body);
    ASSERT_EQ(j["alerts"].get_array().size(), 2u) << body;
    auto warning = j["alerts"].at(1);
    EXPECT_EQ(std::string(warning["level"].get_string().value_unsafe()), "warning");
    EXPECT_EQ(std::string(warning["status"].get_string().value_unsafe()), "sent") << body;
    auto d = warning["deliveries"].at(0);
    EXPECT_EQ(std::string(d["channel"].get_string().value_unsafe()), "email") << body;
    EXPECT_EQ(std::string(d["url"].get_string().value_unsafe()),
              "mailto:ops@tally.example,billing@acme.example")
        << body;
    EXPECT_EQ(d["last_status_code"].get_int64().value_unsafe(), 250) << body;
    EXPECT_EQ(std::string(j["alerts"].at(0)["status"].get_string().value_unsafe()), "none")
        << "the info alert is not subscribed: " << body;

    ingest_calls(server, 5, 85);  // 90: nothing new
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    EXPECT_EQ(server.stop(), 0);
  }
  // A restart sends nothing again.
  {
    TallyServer server(config(port), dir);
    std::this_thread::sleep_for(std::chrono::milliseconds(2000));
    EXPECT_EQ(server.stop(), 0);
  }
  const auto messages = sink.messages();
  ASSERT_EQ(messages.size(), 1u);
  const std::string& m = messages[0];
  Json envelope(sink.envelope(0));
  EXPECT_EQ(envelope.str("mail_from"), "alerts@tally.example");
  std::set<std::string> rcpts;
  const simdjson::dom::array rcpt_tos = envelope["rcpt_tos"].get_array().value_unsafe();
  for (auto r : rcpt_tos) {
    rcpts.emplace(r.get_string().value_unsafe());
  }
  EXPECT_EQ(rcpts, (std::set<std::string>{"ops@tally.example", "billing@acme.example"}));
  EXPECT_EQ(header_of(m, "Subject"), "[Tally] acme reached 80% of api_calls per month (warning)");
  EXPECT_EQ(header_of(m, "From"), "Tally <alerts@tally.example>");
  EXPECT_EQ(header_of(m, "To"), "ops@tally.example,");  // folded: one address a line
  EXPECT_NE(m.find("\r\n billing@acme.example\r\n"), std::string::npos) << m;
  EXPECT_EQ(header_of(m, "Content-Type"), "text/plain; charset=utf-8");
  EXPECT_EQ(header_of(m, "MIME-Version"), "1.0");
  EXPECT_FALSE(header_of(m, "Date").empty());
  EXPECT_NE(header_of(m, "Message-ID").find("@tally.example>"), std::string::npos) << m;
  EXPECT_NE(m.find("Customer acme has used 85.00% of its limit api_calls per month, passing the "
                   "80% threshold."),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("Used:       85 (85.00%)"), std::string::npos) << m;
  remove_tree(dir);
}

TEST(EmailAlerts, ASinkDownAtFirstIsRetriedAndGetsTheEmailOnce) {
  const std::uint16_t port = pick_unused_port();  // nothing listens there yet
  TallyServer server(config(port));
  ingest_calls(server, 81, 0);
  // Wait for a failed attempt, then bring the sink up.
  const std::string failed = poll_alerts(server, "", [](const Json& j) {
    const simdjson::dom::array alerts = j["alerts"].get_array().value_unsafe();
    for (auto a : alerts) {
      const simdjson::dom::array deliveries = a["deliveries"].get_array().value_unsafe();
      for (auto d : deliveries) {
        if (d["attempts"].get_uint64().value_unsafe() >= 1) {
          return true;
        }
      }
    }
    return false;
  });
  Json fj(failed);
  auto d = fj["alerts"].at(1)["deliveries"].at(0);
  EXPECT_EQ(std::string(d["status"].get_string().value_unsafe()), "pending") << failed;
  EXPECT_NE(std::string(d["last_error"].get_string().value_unsafe()).find("cannot connect"),
            std::string::npos)
      << failed;
  SmtpSink sink(port);
  START_SINK(sink);
  ASSERT_TRUE(sink.wait_for(1, 30000)) << server.log();
  const std::string body = poll_alerts(
      server, "", [](const Json& j) { return all_are(delivery_statuses(j), 1, "delivered"); });
  EXPECT_TRUE(all_are(delivery_statuses(Json(body)), 1, "delivered")) << body;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));  // two more backoffs
  EXPECT_EQ(sink.messages().size(), 1u);
  EXPECT_NE(server.log().find("email delivery"), std::string::npos) << "the failure is logged";
}

TEST(EmailAlerts, AuthWithThePasswordFromTheEnvironment) {
  const std::uint16_t port = pick_unused_port();
  SmtpSink sink(port, {"--auth", "tally:s3cret-pw"});
  START_SINK(sink);
  const std::string auth = "user = \"tally\"\npassword_env = \"TALLY_TEST_SMTP_PASSWORD\"\n";
  TallyServer server(config(port, auth), "", {{"TALLY_TEST_SMTP_PASSWORD", "s3cret-pw"}});
  ingest_calls(server, 81, 0);
  ASSERT_TRUE(sink.wait_for(1, 30000)) << server.log();
  EXPECT_EQ(Json(sink.envelope(0)).str("login"), "tally");
  EXPECT_EQ(server.log().find("s3cret-pw"), std::string::npos) << "the password is never logged";
  EXPECT_EQ(read_file(server.dir() + "/tally.toml")->find("s3cret-pw"), std::string::npos);
}

TEST(EmailAlerts, AWrongPasswordIsRetriedWithTheServersAnswer) {
  const std::uint16_t port = pick_unused_port();
  SmtpSink sink(port, {"--auth", "tally:right"});
  START_SINK(sink);
  const std::string auth = "user = \"tally\"\npassword_env = \"TALLY_TEST_SMTP_PASSWORD\"\n";
  TallyServer server(config(port, auth), "", {{"TALLY_TEST_SMTP_PASSWORD", "wrong"}});
  ingest_calls(server, 81, 0);
  const std::string body = poll_alerts(server, "", [](const Json& j) {
    auto a = j["alerts"].at(1);
    return a.error() == simdjson::SUCCESS &&
           a["deliveries"].at(0)["attempts"].get_uint64().value_unsafe() >= 2;
  });
  Json j(body);
  auto d = j["alerts"].at(1)["deliveries"].at(0);
  EXPECT_EQ(std::string(d["status"].get_string().value_unsafe()), "pending") << body;
  EXPECT_EQ(d["last_status_code"].get_int64().value_unsafe(), 535) << body;
  EXPECT_NE(std::string(d["last_error"].get_string().value_unsafe()).find("AUTH"),
            std::string::npos)
      << body;
  EXPECT_TRUE(sink.messages().empty());
}

TEST(EmailAlerts, A5xxRefusalIsRecordedAsFailedWithoutRetries) {
  const std::uint16_t port = pick_unused_port();
  SmtpSink sink(port, {"--rcpt-code", "550"});
  START_SINK(sink);
  TallyServer server(config(port));
  ingest_calls(server, 81, 0);
  const std::string body = poll_alerts(
      server, "", [](const Json& j) { return all_are(delivery_statuses(j), 1, "failed"); });
  Json j(body);
  ASSERT_TRUE(all_are(delivery_statuses(j), 1, "failed")) << body;
  auto a = j["alerts"].at(1);
  EXPECT_EQ(std::string(a["status"].get_string().value_unsafe()), "failed") << body;
  auto d = a["deliveries"].at(0);
  EXPECT_EQ(d["attempts"].get_uint64().value_unsafe(), 1u) << body;
  EXPECT_EQ(d["last_status_code"].get_int64().value_unsafe(), 550) << body;
  EXPECT_NE(std::string(d["last_error"].get_string().value_unsafe()).find("refused"),
            std::string::npos)
      << body;
  std::this_thread::sleep_for(std::chrono::milliseconds(2500));
  auto again = server.client()->request("GET", "/v1/alerts", "", key_header(kAdminKey));
  EXPECT_EQ(
      Json(again.body)["alerts"].at(1)["deliveries"].at(0)["attempts"].get_uint64().value_unsafe(),
      1u)
      << "a permanent refusal is not retried: " << again.body;
  EXPECT_TRUE(sink.messages().empty());
  auto m = server.client()->request("GET", "/metrics");
  EXPECT_NE(m.body.find("\ntally_alert_deliveries_failed_total 1\n"), std::string::npos) << m.body;
}

// Runs `program args...` to completion; its exit code.
int run(const std::string& program, std::vector<std::string> args, const std::string& log) {
  ProcessOptions o;
  o.executable = program;
  o.args = std::move(args);
  o.log_path = log;
  auto p = ChildProcess::start(o);
  return p ? p->wait_exit(60000).value_or(-1) : -1;
}

TEST(EmailAlerts, StartTlsVerifiesTheServerThenAuthenticates) {
  if (!read_file("/usr/bin/openssl").has_value()) {
    GTEST_SKIP() << "no /usr/bin/openssl to make the sink's certificate";
  }
  const std::string certs = make_temp_dir("tally-smtp-tls-");
  ASSERT_EQ(run("/usr/bin/openssl",
                {"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", certs + "/key.pem",
                 "-out", certs + "/cert.pem", "-days", "2", "-subj", "/CN=localhost", "-addext",
                 "subjectAltName=DNS:localhost"},
                certs + "/openssl.log"),
            0)
      << read_file(certs + "/openssl.log").value_or("");
  const std::uint16_t port = pick_unused_port();
  SmtpSink sink(port, {"--tls", certs + "/cert.pem", certs + "/key.pem", "--auth", "tally:pw-tls"});
  START_SINK(sink);
  std::string c = config(port,
                         "user = \"tally\"\npassword_env = \"TALLY_TEST_SMTP_PASSWORD\"\n"
                         "ca_file = \"" +
                             certs + "/cert.pem\"\n");
  c.replace(c.find("host = \"127.0.0.1\""), 18, "host = \"localhost\"");
  c.replace(c.find("starttls = \"off\""), 16, "starttls = \"required\"");
  TallyServer server(c, "", {{"TALLY_TEST_SMTP_PASSWORD", "pw-tls"}});
  ingest_calls(server, 81, 0);
  ASSERT_TRUE(sink.wait_for(1, 30000)) << server.log();
  Json envelope(sink.envelope(0));
  EXPECT_EQ(envelope.str("login"), "tally");
  EXPECT_TRUE(envelope["tls"].get_bool().value_unsafe()) << "the message went over TLS";
  remove_tree(certs);
}

TEST(EmailAlerts, StartTlsRequiredButNotOfferedIsRetriedNeverSentInPlainText) {
  const std::uint16_t port = pick_unused_port();
  SmtpSink sink(port);  // no TLS
  START_SINK(sink);
  std::string c = config(port);
  c.replace(c.find("starttls = \"off\""), 16, "starttls = true");
  TallyServer server(c);
  ingest_calls(server, 81, 0);
  const std::string body = poll_alerts(server, "", [](const Json& j) {
    auto a = j["alerts"].at(1);
    return a.error() == simdjson::SUCCESS &&
           a["deliveries"].at(0)["attempts"].get_uint64().value_unsafe() >= 1;
  });
  Json j(body);
  auto d = j["alerts"].at(1)["deliveries"].at(0);
  EXPECT_EQ(std::string(d["status"].get_string().value_unsafe()), "pending") << body;
  EXPECT_NE(
      std::string(d["last_error"].get_string().value_unsafe()).find("does not offer STARTTLS"),
      std::string::npos)
      << body;
  EXPECT_TRUE(sink.messages().empty());
}

// `tally serve` with `config` exits 2 and says `expected` on stderr.
void expect_refused(const std::string& config_text, const std::string& expected,
                    std::vector<std::pair<std::string, std::string>> env = {}) {
  const std::string dir = make_temp_dir("tally-email-cfg-");
  std::ofstream(dir + "/tally.toml") << config_text;
  ProcessOptions o;
  o.executable = TALLY_BINARY;
  o.args = {"serve",       "--config", dir + "/tally.toml", "--data",
            dir + "/data", "--listen", "127.0.0.1:0"};
  o.env = std::move(env);
  o.log_path = dir + "/out.log";
  auto p = ChildProcess::start(o);
  ASSERT_TRUE(p.has_value());
  const auto code = p->wait_exit(30000);
  const std::string out = read_file(o.log_path).value_or("");
  EXPECT_EQ(code, 2) << out;
  EXPECT_NE(out.find(expected), std::string::npos) << "expected '" << expected << "' in: " << out;
  EXPECT_FALSE(read_file(dir + "/data/CURRENT").has_value()) << "nothing was opened";
  remove_tree(dir);
}

TEST(EmailAlerts, ConfigurationErrorsAreRefusedAtStart) {
  const std::string base = config(2525);
  auto replace = [&base](const std::string& from, const std::string& to) {
    std::string c = base;
    c.replace(c.find(from), from.size(), to);
    return c;
  };
  expect_refused(replace("host = \"127.0.0.1\"\n", ""),
                 "notifications[0]: missing required key 'host'");
  expect_refused(replace("port = 2525", "port = 70000"),
                 "notifications[0].port: 70000 is out of range 1..65535");
  expect_refused(replace("port = 2525", "port = \"smtp\""),
                 "notifications[0].port: expected an integer");
  expect_refused(replace("from = \"alerts@tally.example\"", "from = \"alerts at tally\""),
                 "notifications[0].from: 'alerts at tally' is not an email address");
  expect_refused(replace("to = [\"ops@tally.example\"]", "to = [\"ops@tally.example\", \"x@\"]"),
                 "notifications[0].to: 'x@' is not an email address");
  expect_refused(replace("starttls = \"off\"", "starttls = \"maybe\""),
                 "notifications[0].starttls: must be \"required\", \"off\", true or false");
  expect_refused(replace("to = [\"ops@tally.example\"]\nto_customer = true", ""),
                 "notifications[0]: no recipients: set `to`, or `to_customer = true`");
  expect_refused(replace("levels = [\"warning\", \"critical\"]", "levels = [\"loud\"]"),
                 "notifications[0].levels: 'loud' is not an alert level");
  expect_refused(replace("timeout = \"5s\"", "timeout = \"5s\"\npassword = \"inline\""),
                 "unknown key 'password' in [[notifications]]");
  expect_refused(replace("timeout = \"5s\"", "timeout = \"5s\"\nuser = \"tally\""),
                 "notifications[0]: user needs password_env");
  const std::string with_env =
      replace("timeout = \"5s\"",
              "timeout = \"5s\"\nuser = \"tally\"\npassword_env = \"TALLY_TEST_UNSET_PW\"");
  expect_refused(with_env,
                 "notifications[0].password_env: the environment variable TALLY_TEST_UNSET_PW is "
                 "not set");
  expect_refused(with_env, "TALLY_TEST_UNSET_PW is not set", {{"TALLY_TEST_UNSET_PW", ""}});
}

}  // namespace
}  // namespace tally::testing
