// The outbox sender: delivers the engine's outbox (alerts and their deliveries, see
// include/tally/engine.h) to the [[webhooks]] endpoints of the configuration, and by email
// through the SMTP servers of its [[notifications]] (src/notify) for deliveries whose url is
// "mailto:...". Both share the worker threads, the records and the retry rules below.
//
// Worker threads take due deliveries, POST their JSON payload and record every attempt in the
// engine (durably) before taking the next: a delivery whose endpoint answered 2xx is delivered;
// otherwise it is tried again after an exponential backoff with jitter until `retry_for` has
// passed since its alert, then it fails. A crash after a POST but before its record means one
// more POST after the restart: delivery is at least once, and receivers deduplicate by the
// delivery id (an email's Message-ID is made of it). Sending never holds an engine lock: ingest
// and checks do not wait for it.
//
// An email attempt that the SMTP server refuses for good (a 5xx to MAIL FROM, to every
// recipient or to the message: see notify/smtp.h) fails its delivery at once; every other
// failure is retried like a webhook's.
//
// Each request carries the delivery id, the event type and two signatures of the same body
// (docs/webhooks.md shows how to verify them):
//   Tally-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
//   webhook-signature: v1,<base64 HMAC-SHA256(key, "<id>.<t>.<body>")>  (Standard Webhooks;
//   key = the base64 after "whsec_" when the secret has that form, else the secret's bytes)
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <tally/engine.h>

#include "config/config.h"

namespace tally::webhook {

// "t=<timestamp>,v1=<hex HMAC-SHA256(secret, timestamp + "." + body)>".
std::string tally_signature(std::string_view secret, std::int64_t timestamp_s,
                            std::string_view body);
// Standard Webhooks: "v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>".
std::string standard_signature(std::string_view secret, std::string_view id,
                               std::int64_t timestamp_s, std::string_view body);
// The wait after the `attempts`-th failed attempt (1 = the first): backoff x 2^(attempts-1),
// at most `max`, scaled by `jitter` in [0.5, 1] (spreading retries that failed together).
TimeUs retry_delay_us(std::uint32_t attempts, std::int64_t backoff_s, std::int64_t max_s,
                      double jitter);
// The JSON body of a delivery of `alert`: the same bytes on every attempt.
std::string payload(const WebhookDelivery& d, const Alert& alert);

// An HTTP/1.1 POST with a deadline for the whole exchange. Returns the status code, or 0 with
// `error` set when no answer came (refused, timed out, malformed).
struct PostResult {
  int status = 0;
  std::string error;
};

PostResult post(const std::string& url,
                const std::vector<std::pair<std::string, std::string>>& headers,
                const std::string& body, std::int64_t timeout_s);

class Sender {
 public:
  // `engine` and `clock` must outlive the sender. `smtp_passwords[i]` is the password of
  // notifications[i] (read from its password_env by the caller; "" without a user).
  Sender(Engine& engine, std::vector<config::WebhookConfig> hooks,
         std::vector<config::NotificationConfig> notifications,
         std::vector<std::string> smtp_passwords, const Clock& clock, unsigned workers = 4);
  ~Sender();
  Sender(const Sender&) = delete;
  Sender& operator=(const Sender&) = delete;

  void start();
  // Finishes the attempts under way (each within its timeout) and stops.
  void stop();

 private:
  // What one attempt came to, whatever the channel.
  struct Outcome {
    bool delivered = false;
    bool permanent = false;  // not delivered, and retrying will not help
    int status_code = 0;
    std::string error;
  };

  // How a channel's failed attempts are retried.
  struct RetryRule {
    std::int64_t retry_for_seconds = 0;
    std::int64_t backoff_seconds = 1;
    std::int64_t backoff_max_seconds = 1;
  };

  void run();
  void deliver(const WebhookDelivery& d);
  Outcome post_webhook(const WebhookDelivery& d, const Alert& alert,
                       const config::WebhookConfig& hook);
  Outcome send_email(const WebhookDelivery& d, const Alert& alert, std::size_t notification);
  // Records the attempt, with its next try (or none) by `rule`.
  void record(const WebhookDelivery& d, const Alert* alert, Outcome outcome, const RetryRule& rule,
              std::string_view channel);

  Engine& engine_;
  const std::vector<config::WebhookConfig> hooks_;
  const std::vector<config::NotificationConfig> notifications_;
  const std::vector<std::string> smtp_passwords_;
  const Clock& clock_;
  const unsigned workers_;
  std::atomic<bool> stopping_{false};
  std::mutex mutex_;
  std::vector<std::string> in_flight_;  // delivery ids being sent
  std::vector<std::thread> threads_;
};

}  // namespace tally::webhook
