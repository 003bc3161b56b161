#include "notify/email.h"

#include <algorithm>
#include <chrono>
#include <cstdio>

#include <date/date.h>

#include "common/crypto.h"
#include "core/time.h"

namespace tally::notify {

namespace {

bool printable_ascii(std::string_view s) {
  for (char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7F) {
      return false;
    }
  }
  return true;
}

std::string without_controls(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7F) {
      c = ' ';
    }
  }
  return out;
}

std::string window_text(const Alert& a) {
  std::string out = core::format_rfc3339(a.window_start_us);
  out += a.window_end_us == 0 ? " onwards" : " to " + core::format_rfc3339(a.window_end_us);
  return out;
}

}  // namespace

std::vector<std::string> mailto_recipients(std::string_view url) {
  std::vector<std::string> out;
  if (url.substr(0, kMailtoScheme.size()) != kMailtoScheme) {
    return out;
  }
  url.remove_prefix(kMailtoScheme.size());
  while (!url.empty()) {
    const std::size_t comma = url.find(',');
    const std::string_view one = url.substr(0, comma);
    if (!one.empty()) {
      out.emplace_back(one);
    }
    if (comma == std::string_view::npos) {
      break;
    }
    url.remove_prefix(comma + 1);
  }
  return out;
}

std::string rfc5322_date(TimeUs t) {
  using namespace std::chrono;
  const sys_time<microseconds> tp{microseconds(t)};
  const auto day = floor<days>(tp);
  const date::year_month_day ymd{day};
  const date::weekday wd{day};
  const auto tod = date::make_time(duration_cast<seconds>(tp - day));
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  char out[64];
  std::snprintf(out, sizeof(out), "%s, %02u %s %04d %02d:%02d:%02d +0000", kDays[wd.c_encoding()],
                static_cast<unsigned>(ymd.day()), kMonths[static_cast<unsigned>(ymd.month()) - 1],
                static_cast<int>(ymd.year()), static_cast<int>(tod.hours().count()),
                static_cast<int>(tod.minutes().count()), static_cast<int>(tod.seconds().count()));
  return out;
}

std::string header_text(std::string_view text) {
  const std::string clean = without_controls(text);
  if (printable_ascii(clean)) {
    return clean;
  }
  // Encoded words of at most 75 characters (45 bytes of text each), never splitting a UTF-8
  // sequence, on folded lines.
  constexpr std::size_t kWordBytesMax = 45;
  std::string out;
  std::size_t start = 0;
  while (start < clean.size()) {
    std::size_t end = std::min(clean.size(), start + kWordBytesMax);
    while (end < clean.size() && end > start + 1 &&
           (static_cast<unsigned char>(clean[end]) & 0xC0) == 0x80) {
      --end;
    }
    if (!out.empty()) {
      out += "\r\n ";
    }
    out += "=?utf-8?B?" +
           common::base64_encode(std::string_view(clean).substr(start, end - start)) + "?=";
    start = end;
  }
  return out;
}

std::string alert_subject(const Alert& a, std::string_view prefix) {
  std::string out;
  if (!prefix.empty()) {
    out += prefix;
    out += ' ';
  }
  if (a.kind == AlertKind::kLimit) {
    out += a.customer + " reached " + std::to_string(a.threshold_percent) + "% of " + a.limit;
  } else {
    out += a.customer + "'s credit balance fell below " + a.threshold_amount;
  }
  out += " (" + std::string(to_string(a.level)) + ")";
  return out;
}

std::string alert_body(const Alert& a) {
  std::string out;
  if (a.kind == AlertKind::kLimit) {
    out += "Customer " + a.customer + " has used " + a.percent + "% of its limit " + a.limit +
           ", passing the " + std::to_string(a.threshold_percent) + "% threshold.\n\n";
    out += "Customer:   " + a.customer + "\n";
    out += "Limit:      " + a.limit + " (" + a.limit_amount + ")\n";
    out += "Used:       " + a.used + " (" + a.percent + "%)\n";
    out += "Threshold:  " + std::to_string(a.threshold_percent) + "%\n";
    out += "Period:     " + window_text(a) + "\n";
  } else {
    out += "The credit balance of customer " + a.customer + " is " + a.balance +
           ", below the alert amount of " + a.threshold_amount + ".\n\n";
    out += "Customer:   " + a.customer + "\n";
    out += "Balance:    " + a.balance + "\n";
    out += "Alert below: " + a.threshold_amount + "\n";
  }
  out += "Level:      " + std::string(to_string(a.level)) + "\n";
  out += "Fired at:   " + core::format_rfc3339(a.created_at_us) + "\n";
  out += "Alert id:   " + a.id + "\n\n";
  out += "Tally sends this alert once for this threshold and period.\n";
  return out;
}

std::string alert_message(const WebhookDelivery& d, const Alert& alert,
                          const MessageHeaders& headers, const std::vector<std::string>& to) {
  const std::string domain = headers.from.substr(headers.from.find('@') + 1);
  std::string to_list;  // one address a line, so no line grows past SMTP's 998 bytes
  for (const auto& t : to) {
    to_list += (to_list.empty() ? "" : ",\r\n ") + t;
  }
  std::string out;
  auto header = [&out](std::string_view name, std::string_view value) {
    out.append(name).append(": ").append(value).append("\r\n");
  };
  header("Date", rfc5322_date(alert.created_at_us));
  header("From", headers.from_name.empty()
                     ? headers.from
                     : header_text(headers.from_name) + " <" + headers.from + ">");
  header("To", to_list);
  header("Subject", header_text(alert_subject(alert, headers.subject_prefix)));
  header("Message-ID", "<" + d.id + "." + alert.id + "@" + domain + ">");
  header("MIME-Version", "1.0");
  header("Content-Type", "text/plain; charset=utf-8");
  header("Content-Transfer-Encoding", "8bit");
  header("X-Tally-Alert-Id", alert.id);
  header("X-Tally-Delivery-Id", d.id);
  out += "\r\n";
  const std::string body = alert_body(alert);
  for (char c : body) {
    if (c == '\n') {
      out += "\r\n";
    } else {
      out += c;
    }
  }
  return out;
}

}  // namespace tally::notify
