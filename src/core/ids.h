// The one rule for names and ids that users choose, checked wherever they enter Tally: the API,
// ingest (events auto-create customers), checks, the configuration file and the CLI.
//
// A *name* is addressed in URL paths, headers, CSV cells and log lines: customer and
// organization ids and event types. It is 1 to 128 bytes of well-formed UTF-8 with no control
// character (U+0000..U+001F, U+007F..U+009F) and none of '/', '?', '#' (which a URL path could
// not carry as one segment). An *event id* (the idempotency key) never appears in a path: it is
// the client's own key and may hold any character (a line break, a '/') but NUL, which no C
// string, CSV reader or log line survives.
#pragma once

#include <string_view>

#include <tally/status.h>

namespace tally::core {

inline constexpr std::size_t kNameBytesMax = 128;

// Errors: kInvalidArgument naming `what` ("customer", "organization", "type") and the rule.
Status check_name(std::string_view what, std::string_view name);
// Errors: kInvalidArgument naming `what` ("event id") and the rule.
Status check_event_id(std::string_view what, std::string_view id);

// kNotFound "customer 'ID' does not exist": the one answer for a customer id that names none.
Status customer_not_found(std::string_view id);

// True for an email address Tally sends alerts to: local@domain in plain ASCII, without spaces,
// quotes, angle brackets or control characters, a domain of letters, digits, '-' and '.' with a
// dot, at most 254 bytes. Stricter than RFC 5321 on purpose: every accepted address is safe to
// put in an SMTP command and a mail header as it is.
bool valid_email_address(std::string_view address);

}  // namespace tally::core
