// A small SMTP client (RFC 5321) for alert emails: one message per connection, over a real
// socket, with a deadline for the whole exchange.
//
// The conversation: the greeting (220), EHLO (HELO if EHLO is refused), STARTTLS and EHLO again
// when TLS is required (RFC 3207; the server's certificate is verified against the system's
// trust store or `ca_file`, and its name against `host`), AUTH PLAIN or LOGIN when a user is set
// (RFC 4954), MAIL FROM, one RCPT TO per recipient, DATA with the message dot-stuffed and every
// line ending in CRLF, and QUIT.
//
// What a failure means, for the caller's retry decision (docs/operations.md, "Email alerts"):
//   - no answer, a timeout, a TLS failure, a 4xx reply anywhere, or a 5xx reply before MAIL FROM
//     (greeting, EHLO, STARTTLS, AUTH: the server or Tally's settings for it are wrong, which an
//     operator can fix): `permanent` false, try again later;
//   - a 5xx reply to MAIL FROM, to every RCPT TO, or to the message (DATA): the server refuses
//     this message for good: `permanent` true.
// A recipient refused with 5xx while others are accepted is left out; the message goes to the
// others and `refused` names it. A 4xx to any RCPT TO ends the attempt (retried whole, so
// nobody gets the message twice).
//
// Thread safety: send_mail() may be called from several threads at once (one io_context each).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace tally::notify {

enum class StartTls : std::uint8_t { kOff, kRequired };

struct SmtpServer {
  std::string host;
  std::uint16_t port = 25;
  StartTls starttls = StartTls::kRequired;
  std::string ca_file;  // PEM certificates to trust instead of the system's; "" = the system's
  std::string user;     // "" = no AUTH
  std::string password;
  std::string helo_name = "localhost";  // the name given in EHLO
  std::int64_t timeout_seconds = 30;    // the whole exchange
};

struct SmtpResult {
  bool delivered = false;
  bool permanent = false;            // when not delivered: retrying will not help
  int code = 0;                      // the last reply code that decided it; 0 = no reply
  std::string error;                 // when not delivered, or recipients refused: what happened
  std::vector<std::string> refused;  // recipients refused with 5xx (when others were accepted)
};

// Sends `message` (RFC 5322 headers and body; lines may end in LF or CRLF) from `from` to every
// address of `to`. REQUIRES: `from` and `to` are valid addresses (core::valid_email_address).
SmtpResult send_mail(const SmtpServer& server, const std::string& from,
                     const std::vector<std::string>& to, std::string_view message);

// The DATA payload of `message`: every line ending in CRLF (a bare LF or CR becomes CRLF), a
// line starting with '.' gets one more (RFC 5321 4.5.2), and the terminating "." line.
std::string dot_stuff(std::string_view message);

// One SMTP reply: its code and its text lines (without the code and separator).
struct SmtpReply {
  int code = 0;
  std::vector<std::string> lines;
};

// Parses the reply at the start of `text` (lines ending in CRLF; "250-..." continues, "250 ..."
// ends). Returns the bytes it used, 0 when the reply is not complete yet, or -1 when it is
// malformed (no 3-digit code, codes that differ between lines).
long parse_reply(std::string_view text, SmtpReply* reply);

}  // namespace tally::notify
