#include "core/ids.h"

#include <string>

#include "common/json_writer.h"

namespace tally::core {

namespace {

// The first code point that no id may hold: a C0 or C1 control or DEL, found in the UTF-8
// bytes (C1 controls are encoded as 0xC2 0x80..0x9F).
bool has_control(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7F) {
      return true;
    }
    if (c == 0xC2 && i + 1 < s.size() && static_cast<unsigned char>(s[i + 1]) <= 0x9F) {
      return true;
    }
  }
  return false;
}

Status check_text(std::string_view what, std::string_view text, bool name) {
  const char* rule = name ? " must be 1 to 128 bytes of UTF-8 without control characters, "
                            "'/', '?' or '#'"
                          : " must be 1 to 128 bytes of UTF-8 without NUL characters";
  const bool bad_characters =
      name ? has_control(text) || text.find_first_of("/?#") != std::string_view::npos
           : text.find('\0') != std::string_view::npos;
  if (text.empty() || text.size() > kNameBytesMax || !common::valid_utf8(text) ||
      bad_characters) {
    return Status::invalid_argument(std::string(what) + rule);
  }
  return Status();
}

}  // namespace

Status check_name(std::string_view what, std::string_view name) {
  return check_text(what, name, true);
}

Status check_event_id(std::string_view what, std::string_view id) {
  return check_text(what, id, false);
}

}  // namespace tally::core
