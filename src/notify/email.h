// Alert emails: the RFC 5322 message of one alert delivery, and the recipients of a delivery.
//
// A delivery of an alert by email is an outbox entry like a webhook's (src/engine/alerts.cc)
// whose url is "mailto:" and its recipients joined by commas (RFC 6068), fixed when the alert
// fired. The message is built from the delivery and its alert alone, so every attempt sends the
// same bytes: its Date is the alert's time and its Message-ID is made of the delivery id, which
// lets a mail client drop the copy that a crash between sending and recording may cause.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include <tally/types.h>

namespace tally::notify {

inline constexpr std::string_view kMailtoScheme = "mailto:";

// The recipients of a "mailto:a@x.example,b@y.example" delivery url; empty when `url` is not one.
std::vector<std::string> mailto_recipients(std::string_view url);

// "Tue, 04 Mar 2025 10:00:00 +0000" (RFC 5322 3.3), in UTC.
std::string rfc5322_date(TimeUs t);

// `text` as a header value: as is when it is printable ASCII, else one RFC 2047 encoded word
// ("=?utf-8?B?...?="). Control characters become spaces either way, so a value cannot start a
// header of its own.
std::string header_text(std::string_view text);

// "[Tally] acme reached 80% of api_calls per month (warning)" and the like.
std::string alert_subject(const Alert& alert, std::string_view prefix);

// The plain-text body of an alert email.
std::string alert_body(const Alert& alert);

struct MessageHeaders {
  std::string from;       // the envelope and header sender address
  std::string from_name;  // "" = none
  std::string subject_prefix;
};

// The whole message (headers, blank line, body; lines end in CRLF) of delivery `d` of `alert`
// to `to`: Date, From, To, Subject, Message-ID, MIME-Version, Content-Type text/plain;
// charset=utf-8, Content-Transfer-Encoding 8bit, and X-Tally-Alert-Id / X-Tally-Delivery-Id.
std::string alert_message(const WebhookDelivery& d, const Alert& alert,
                          const MessageHeaders& headers, const std::vector<std::string>& to);

}  // namespace tally::notify
