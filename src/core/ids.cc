#include "core/ids.h"

#include <cctype>
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
  if (text.empty() || text.size() > kNameBytesMax || !common::valid_utf8(text) || bad_characters) {
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

bool valid_email_address(std::string_view address) {
  if (address.empty() || address.size() > 254) {
    return false;
  }
  const std::size_t at = address.find('@');
  if (at == 0 || at == std::string_view::npos ||
      address.find('@', at + 1) != std::string_view::npos) {
    return false;
  }
  const std::string_view local = address.substr(0, at);
  const std::string_view domain = address.substr(at + 1);
  if (local.size() > 64 || local.front() == '.' || local.back() == '.' ||
      local.find("..") != std::string_view::npos) {
    return false;
  }
  constexpr std::string_view kLocalSpecials = "!#$%&'*+-/=?^_`{|}~.";
  for (char c : local) {
    const bool alnum =
        std::isalnum(static_cast<unsigned char>(c)) != 0 && static_cast<unsigned char>(c) < 0x80;
    if (!alnum && kLocalSpecials.find(c) == std::string_view::npos) {
      return false;
    }
  }
  if (domain.empty() || domain.find('.') == std::string_view::npos || domain.front() == '.' ||
      domain.back() == '.' || domain.find("..") != std::string_view::npos) {
    return false;
  }
  std::size_t label_start = 0;
  for (std::size_t i = 0; i <= domain.size(); ++i) {
    if (i == domain.size() || domain[i] == '.') {
      const std::string_view label = domain.substr(label_start, i - label_start);
      if (label.size() > 63 || label.front() == '-' || label.back() == '-') {
        return false;
      }
      label_start = i + 1;
      continue;
    }
    const char c = domain[i];
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-';
    if (!ok) {
      return false;
    }
  }
  return true;
}

Status customer_not_found(std::string_view id) {
  return Status::not_found("customer '" + std::string(id) + "' does not exist");
}

}  // namespace tally::core
