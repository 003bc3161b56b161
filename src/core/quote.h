// Quoting a user's text inside an error message, shortened so a hostile body cannot bloat
// responses and logs.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include <tally/status.h>

namespace tally::core {

// At most this many bytes of the text are quoted; "..." marks the cut.
inline constexpr std::size_t kQuotedBytesMax = 64;

// `"text"`, or `"the first 64 bytes..."`.
std::string quote_text(std::string_view text);

// kInvalidArgument `<subject> "<text>": <why>`, the text quoted as above; for instance
// quoted_error("invalid number", "1e", "missing exponent digits").
Status quoted_error(std::string_view subject, std::string_view text, std::string_view why);

}  // namespace tally::core
