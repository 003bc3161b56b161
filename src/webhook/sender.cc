#include "webhook/sender.h"

#include <algorithm>
#include <chrono>
#include <random>

#include <boost/asio/ip/tcp.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include "common/crypto.h"
#include "common/json_writer.h"
#include "http/json_codec.h"
#include "notify/email.h"
#include "notify/smtp.h"

namespace tally::webhook {

namespace beast = boost::beast;
namespace net = boost::asio;
using tcp = net::ip::tcp;

namespace {

constexpr std::string_view kWhsecPrefix = "whsec_";
constexpr std::size_t kResponseBytesMax = 64 * 1024;
constexpr std::size_t kErrorTextMax = 200;

// The Standard Webhooks key: the base64 after "whsec_", else the secret itself.
std::string standard_key(std::string_view secret) {
  if (secret.substr(0, kWhsecPrefix.size()) == kWhsecPrefix) {
    std::string key;
    if (common::base64_decode(secret.substr(kWhsecPrefix.size()), &key) && !key.empty()) {
      return key;
    }
  }
  return std::string(secret);
}

struct Url {
  std::string host;  // without brackets
  std::string port = "80";
  std::string target = "/";
  std::string host_header;
};

bool parse_url(std::string_view url, Url* out) {
  constexpr std::string_view kScheme = "http://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    return false;
  }
  url.remove_prefix(kScheme.size());
  const std::size_t slash = url.find_first_of("/?");
  std::string_view authority = url.substr(0, slash);
  if (slash != std::string_view::npos) {
    out->target = std::string(url.substr(slash));
    if (out->target.front() == '?') {
      out->target.insert(out->target.begin(), '/');
    }
  }
  out->host_header = std::string(authority);
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      return false;
    }
    out->host = std::string(authority.substr(1, close - 1));
    authority.remove_prefix(close + 1);
    if (!authority.empty()) {
      if (authority.front() != ':') {
        return false;
      }
      out->port = std::string(authority.substr(1));
    }
  } else {
    const std::size_t colon = authority.rfind(':');
    out->host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      out->port = std::string(authority.substr(colon + 1));
    }
  }
  return !out->host.empty() && !out->port.empty() &&
         std::all_of(out->port.begin(), out->port.end(),
                     [](char c) { return c >= '0' && c <= '9'; });
}

std::string clip(std::string s) {
  if (s.size() > kErrorTextMax) {
    s.resize(kErrorTextMax);
    s += "...";
  }
  return s;
}

}  // namespace

std::string tally_signature(std::string_view secret, std::int64_t timestamp_s,
                            std::string_view body) {
  const std::string t = std::to_string(timestamp_s);
  std::string signed_text = t;
  signed_text += '.';
  signed_text += body;
  return "t=" + t + ",v1=" + common::to_hex(common::hmac_sha256(secret, signed_text));
}

std::string standard_signature(std::string_view secret, std::string_view id,
                               std::int64_t timestamp_s, std::string_view body) {
  std::string signed_text(id);
  signed_text += '.';
  signed_text += std::to_string(timestamp_s);
  signed_text += '.';
  signed_text += body;
  return "v1," + common::base64_encode(common::hmac_sha256(standard_key(secret), signed_text));
}

TimeUs retry_delay_us(std::uint32_t attempts, std::int64_t backoff_s, std::int64_t max_s,
                      double jitter) {
  constexpr TimeUs kUsPerSecond = 1'000'000;
  TimeUs delay = backoff_s * kUsPerSecond;
  const TimeUs max = max_s * kUsPerSecond;
  for (std::uint32_t i = 1; i < attempts && delay < max; ++i) {
    delay *= 2;
  }
  delay = std::min(delay, max);
  jitter = std::clamp(jitter, 0.5, 1.0);
  return static_cast<TimeUs>(static_cast<double>(delay) * jitter);
}

std::string payload(const WebhookDelivery& d, const Alert& alert) {
  common::JsonWriter w;
  w.begin_object().key("id").value(d.id).key("type").value(d.event);
  w.key("created_at").value(http::time_text(alert.created_at_us)).key("data");
  http::write_alert(w, alert, false);
  w.end_object();
  return w.take();
}

namespace {

using Request = beast::http::request<beast::http::string_body>;

// The POST of `body` to u's target, with `headers` after Tally's own.
Request request_of(const Url& u, const std::vector<std::pair<std::string, std::string>>& headers,
                   const std::string& body) {
  Request req{beast::http::verb::post, u.target, 11};
  req.set(beast::http::field::host, u.host_header);
  req.set(beast::http::field::user_agent, "Tally-Webhooks/1");
  req.set(beast::http::field::content_type, "application/json");
  for (const auto& [name, value] : headers) {
    req.set(name, value);
  }
  req.body() = body;
  req.prepare_payload();
  return req;
}

// One exchange with a server, a step at a time: each step is an asynchronous operation run
// alone, so the stream's deadline covers each of them (blocking calls would ignore it). Each
// returns "" or why it failed.
class Exchange {
 public:
  explicit Exchange(std::int64_t timeout_s) : timeout_s_(timeout_s) {
    stream_.expires_after(std::chrono::seconds(timeout_s));
  }

  std::string connect(const Url& u) {
    tcp::resolver::results_type endpoints;
    resolver_.async_resolve(u.host, u.port,
                            [&](beast::error_code e, tcp::resolver::results_type r) {
                              ec_ = e;
                              endpoints = std::move(r);
                            });
    run();
    if (ec_) {
      return "cannot resolve " + u.host + ": " + ec_.message();
    }
    stream_.async_connect(endpoints, [&](beast::error_code e, const tcp::endpoint&) { ec_ = e; });
    run();
    return ec_ ? "cannot connect: " + ec_.message() : "";
  }

  std::string send(const Request& req) {
    beast::http::async_write(stream_, req, [&](beast::error_code e, std::size_t) { ec_ = e; });
    run();
    return ec_ ? "cannot send: " + ec_.message() : "";
  }

  // The answer's status into *out, with an error unless it is 2xx (its body clipped).
  std::string receive(PostResult* out) {
    beast::flat_buffer buffer;
    beast::http::response_parser<beast::http::string_body> parser;
    parser.body_limit(kResponseBytesMax);
    beast::http::async_read(stream_, buffer, parser,
                            [&](beast::error_code e, std::size_t) { ec_ = e; });
    run();
    if (ec_) {
      return ec_ == beast::error::timeout ? "timed out after " + std::to_string(timeout_s_) + "s"
                                          : "no answer: " + ec_.message();
    }
    out->status = static_cast<int>(parser.get().result_int());
    if (out->status < 200 || out->status > 299) {
      return clip("HTTP " + std::to_string(out->status) + ": " + parser.get().body());
    }
    return "";
  }

  void close() { stream_.socket().shutdown(tcp::socket::shutdown_both, ec_); }

 private:
  void run() {
    ioc_.restart();
    ioc_.run();
  }

  const std::int64_t timeout_s_;
  net::io_context ioc_;
  tcp::resolver resolver_{ioc_};
  beast::tcp_stream stream_{ioc_};
  beast::error_code ec_;
};

}  // namespace

PostResult post(const std::string& url,
                const std::vector<std::pair<std::string, std::string>>& headers,
                const std::string& body, std::int64_t timeout_s) {
  PostResult out;
  Url u;
  if (!parse_url(url, &u)) {
    out.error = "not an http:// URL";
    return out;
  }
  Exchange x(timeout_s);
  out.error = x.connect(u);
  if (out.error.empty()) {
    out.error = x.send(request_of(u, headers, body));
  }
  if (out.error.empty()) {
    out.error = x.receive(&out);
  }
  if (out.status != 0) {
    x.close();  // an answer came: the exchange is over
  }
  return out;
}

// ---- the sender -----------------------------------------------------------------------------

Sender::Sender(Engine& engine, std::vector<config::WebhookConfig> hooks,
               std::vector<config::NotificationConfig> notifications,
               std::vector<std::string> smtp_passwords, const Clock& clock, unsigned workers)
    : engine_(engine),
      hooks_(std::move(hooks)),
      notifications_(std::move(notifications)),
      smtp_passwords_(std::move(smtp_passwords)),
      clock_(clock),
      workers_(std::max(1u, workers)) {}

Sender::~Sender() {
  stop();
}

void Sender::start() {
  for (unsigned i = 0; i < workers_; ++i) {
    threads_.emplace_back([this] { run(); });
  }
}

void Sender::stop() {
  stopping_ = true;
  for (auto& t : threads_) {
    t.join();
  }
  threads_.clear();
}

void Sender::run() {
  constexpr TimeUs kPollUs = 200'000;  // how soon a stop or a due retry is noticed at worst
  std::uint64_t seen = 0;
  while (!stopping_) {
    TimeUs next_due = 0;
    std::vector<WebhookDelivery> due;
    {
      std::lock_guard lock(mutex_);
      due = engine_.due_deliveries(clock_.now_us(), 1, in_flight_, &next_due);
      if (!due.empty()) {
        in_flight_.push_back(due.front().id);
      }
    }
    if (due.empty()) {
      TimeUs wait = kPollUs;
      if (next_due != 0) {
        wait = std::clamp<TimeUs>(next_due - clock_.now_us(), 1'000, kPollUs);
      }
      seen = engine_.wait_for_deliveries(seen, wait);
      continue;
    }
    deliver(due.front());
    std::lock_guard lock(mutex_);
    in_flight_.erase(std::find(in_flight_.begin(), in_flight_.end(), due.front().id));
  }
}

void Sender::deliver(const WebhookDelivery& d) {
  Result<Alert> alert = engine_.alert(d.alert_id);
  const bool email = d.url.rfind(notify::kMailtoScheme, 0) == 0;
  if (!alert) {
    Outcome gone;
    gone.permanent = true;
    gone.error = "the alert is gone";
    record(d, nullptr, std::move(gone), {}, email ? "email" : "webhook");
    return;
  }
  if (email) {
    if (d.webhook >= notifications_.size()) {
      Outcome gone;
      gone.permanent = true;
      gone.error = "no [[notifications]] entry " + std::to_string(d.webhook) + " any more";
      record(d, &*alert, std::move(gone), {}, "email");
      return;
    }
    const config::NotificationConfig& n = notifications_[d.webhook];
    record(d, &*alert, send_email(d, *alert, d.webhook),
           {n.retry_for_seconds, n.retry_backoff_seconds, n.retry_backoff_max_seconds}, "email");
    return;
  }
  // The endpoint of the delivery: its [[webhooks]] entry while that still has its URL.
  const config::WebhookConfig* hook = nullptr;
  if (d.webhook < hooks_.size() && hooks_[d.webhook].url == d.url) {
    hook = &hooks_[d.webhook];
  } else {
    for (const auto& h : hooks_) {
      if (h.url == d.url) {
        hook = &h;
      }
    }
  }
  if (hook == nullptr) {
    Outcome gone;
    gone.permanent = true;
    gone.error = "no [[webhooks]] entry has this URL any more";
    record(d, &*alert, std::move(gone), {}, "webhook");
    return;
  }
  record(d, &*alert, post_webhook(d, *alert, *hook),
         {hook->retry_for_seconds, hook->retry_backoff_seconds, hook->retry_backoff_max_seconds},
         "webhook");
}

Sender::Outcome Sender::post_webhook(const WebhookDelivery& d, const Alert& alert,
                                     const config::WebhookConfig& hook) {
  const std::string body = payload(d, alert);
  const std::int64_t ts = clock_.now_us() / 1'000'000;
  const std::vector<std::pair<std::string, std::string>> headers = {
      {"Tally-Delivery-Id", d.id},
      {"Tally-Event", d.event},
      {"Tally-Timestamp", std::to_string(ts)},
      {"Tally-Signature", tally_signature(hook.secret, ts, body)},
      {"webhook-id", d.id},
      {"webhook-timestamp", std::to_string(ts)},
      {"webhook-signature", standard_signature(hook.secret, d.id, ts, body)},
  };
  const PostResult r = post(d.url, headers, body, hook.timeout_seconds);
  Outcome out;
  out.status_code = r.status;
  out.delivered = r.status >= 200 && r.status <= 299;
  out.error = r.error;
  return out;
}

Sender::Outcome Sender::send_email(const WebhookDelivery& d, const Alert& alert,
                                   std::size_t notification) {
  const config::NotificationConfig& n = notifications_[notification];
  notify::SmtpServer server;
  server.host = n.host;
  server.port = n.port;
  server.starttls = n.starttls ? notify::StartTls::kRequired : notify::StartTls::kOff;
  server.ca_file = n.ca_file;
  server.user = n.user;
  server.password = notification < smtp_passwords_.size() ? smtp_passwords_[notification] : "";
  server.helo_name = n.from.substr(n.from.find('@') + 1);
  server.timeout_seconds = n.timeout_seconds;
  const std::vector<std::string> to = notify::mailto_recipients(d.url);
  Outcome out;
  if (to.empty()) {
    out.permanent = true;
    out.error = "the delivery names no recipient";
    return out;
  }
  const std::string message =
      notify::alert_message(d, alert, {n.from, n.from_name, n.subject_prefix}, to);
  const notify::SmtpResult r = notify::send_mail(server, n.from, to, message);
  out.delivered = r.delivered;
  out.permanent = r.permanent;
  out.status_code = r.code;
  out.error = r.error;
  if (r.delivered && !r.refused.empty()) {
    spdlog::warn("email delivery {}: {}", d.id, r.error);
  }
  return out;
}

void Sender::record(const WebhookDelivery& d, const Alert* alert, Outcome outcome,
                    const RetryRule& rule, std::string_view channel) {
  DeliveryAttempt attempt;
  attempt.delivery_id = d.id;
  attempt.at_us = clock_.now_us();
  attempt.status_code = outcome.status_code;
  attempt.delivered = outcome.delivered;
  if (outcome.delivered) {
    attempt.error = outcome.error;  // recipients refused while others got it, if any
  } else {
    attempt.error = outcome.error;
    attempt.next_attempt_at_us = 0;
    if (!outcome.permanent && alert != nullptr) {
      const TimeUs give_up_at = alert->created_at_us + rule.retry_for_seconds * 1'000'000;
      thread_local std::mt19937_64 rng{std::random_device{}()};
      const double jitter = std::uniform_real_distribution<double>(0.5, 1.0)(rng);
      const TimeUs next = attempt.at_us + retry_delay_us(d.attempts + 1, rule.backoff_seconds,
                                                         rule.backoff_max_seconds, jitter);
      attempt.next_attempt_at_us = next <= give_up_at ? next : 0;
    }
    spdlog::warn("{} delivery {} to {} failed (attempt {}): {}{}", channel, d.id, d.url,
                 d.attempts + 1, outcome.error,
                 attempt.next_attempt_at_us == 0
                     ? (outcome.permanent ? "; a permanent failure, not retried" : "; giving up")
                     : "");
  }
  Status s = engine_.record_delivery_attempt(attempt);
  if (!s.ok()) {
    spdlog::warn("{} delivery {}: the attempt could not be recorded: {}", channel, d.id,
                 s.message());
  }
}

}  // namespace tally::webhook
