#include "core/quote.h"

namespace tally::core {

std::string quote_text(std::string_view text) {
  std::string out = "\"";
  out.append(text.substr(0, kQuotedBytesMax));
  if (text.size() > kQuotedBytesMax) {
    out.append("...");
  }
  out.push_back('"');
  return out;
}

Status quoted_error(std::string_view subject, std::string_view text, std::string_view why) {
  std::string msg(subject);
  msg.push_back(' ');
  msg.append(quote_text(text));
  msg.append(": ");
  msg.append(why);
  return Status::invalid_argument(std::move(msg));
}

}  // namespace tally::core
