// Text of sizes, durations and addresses in the configuration: pure functions of their text
// (declared in config.h, tested in units_test.cc).
#include <algorithm>
#include <charconv>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>

#include "config/options.h"

namespace tally::config {
namespace {

bool is_digit(char c) {
  return c >= '0' && c <= '9';
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// Reads leading digits of *s into *value (consuming them). False when there are none or the
// number exceeds uint64.
bool take_number(std::string_view* s, std::uint64_t* value) {
  const char* begin = s->data();
  const char* end = s->data() + s->size();
  auto [ptr, ec] = std::from_chars(begin, end, *value);
  if (ec != std::errc() || ptr == begin) {
    return false;
  }
  s->remove_prefix(static_cast<std::size_t>(ptr - begin));
  return true;
}

}  // namespace

bool equals_ignore_case(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) {
    return false;
  }
  for (std::size_t i = 0; i < a.size(); ++i) {
    auto lower = [](char c) {
      return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
    };
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

Status parse_listen(std::string_view text, std::string* host, std::uint16_t* port) {
  std::string_view host_part;
  std::string_view port_part;
  if (!text.empty() && text.front() == '[') {
    const std::size_t close = text.find(']');
    if (close == std::string_view::npos) {
      return Status::invalid_argument("'" + std::string(text) +
                                      "': missing ']' after the "
                                      "IPv6 address");
    }
    host_part = text.substr(1, close - 1);
    if (host_part.empty()) {
      return Status::invalid_argument("'" + std::string(text) + "': empty IPv6 address");
    }
    if (close + 1 >= text.size() || text[close + 1] != ':') {
      return Status::invalid_argument("'" + std::string(text) +
                                      "': expected host:port, such as \"[::1]:8080\"");
    }
    port_part = text.substr(close + 2);
  } else {
    const std::size_t colon = text.rfind(':');
    if (colon == std::string_view::npos) {
      return Status::invalid_argument("'" + std::string(text) +
                                      "': expected host:port, such as \"127.0.0.1:8080\"");
    }
    host_part = text.substr(0, colon);
    port_part = text.substr(colon + 1);
    if (host_part.find(':') != std::string_view::npos) {
      return Status::invalid_argument("'" + std::string(text) +
                                      "': an IPv6 address needs brackets, as in \"[::1]:8080\"");
    }
  }
  for (char c : host_part) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '.' ||
                    c == '-' || c == '_' || c == ':' || c == '%';
    if (!ok) {
      return Status::invalid_argument("'" + std::string(text) + "': invalid character in host");
    }
  }
  if (port_part.empty() || port_part.size() > 5 ||
      !std::all_of(port_part.begin(), port_part.end(), is_digit)) {
    return Status::invalid_argument("'" + std::string(text) + "': the port must be 0..65535");
  }
  std::uint32_t value = 0;
  for (char c : port_part) {
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (value > 65535) {
    return Status::invalid_argument("'" + std::string(text) + "': the port must be 0..65535");
  }
  *host = host_part.empty() ? std::string("0.0.0.0") : std::string(host_part);
  *port = static_cast<std::uint16_t>(value);
  return Status();
}

Status parse_byte_size(std::string_view text, std::uint64_t* bytes) {
  static constexpr std::pair<std::string_view, std::uint64_t> kUnits[] = {
      {"", 1},
      {"B", 1},
      {"KiB", 1ull << 10},
      {"MiB", 1ull << 20},
      {"GiB", 1ull << 30},
      {"TiB", 1ull << 40},
      {"KB", 1'000},
      {"MB", 1'000'000},
      {"GB", 1'000'000'000},
      {"TB", 1'000'000'000'000},
  };
  auto invalid = [&] {
    return Status::invalid_argument("'" + std::string(text) +
                                    "' is not a size; use bytes or a whole number with a unit: "
                                    "B, KiB, MiB, GiB, TiB, KB, MB, GB, TB (e.g. \"64MiB\")");
  };
  std::string_view rest = trim(text);
  std::uint64_t number = 0;
  if (!take_number(&rest, &number)) {
    return invalid();
  }
  rest = trim(rest);
  for (const auto& [unit, scale] : kUnits) {
    if (equals_ignore_case(rest, unit)) {
      if (number > std::numeric_limits<std::uint64_t>::max() / scale) {
        return Status::invalid_argument("'" + std::string(text) + "' is too large");
      }
      *bytes = number * scale;
      return Status();
    }
  }
  return invalid();
}

Status parse_duration_seconds(std::string_view text, std::int64_t* seconds) {
  auto invalid = [&] {
    return Status::invalid_argument("'" + std::string(text) +
                                    "' is not a duration; use seconds or whole numbers with "
                                    "units s, m, h, d, w (e.g. \"30d\", \"12h\", \"1h30m\")");
  };
  std::string_view rest = trim(text);
  if (rest.empty()) {
    return invalid();
  }
  constexpr auto kMax = static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max());
  if (std::all_of(rest.begin(), rest.end(), is_digit)) {
    std::uint64_t number = 0;
    if (!take_number(&rest, &number) || number > kMax) {
      return Status::invalid_argument("'" + std::string(text) + "' is too large");
    }
    *seconds = static_cast<std::int64_t>(number);
    return Status();
  }
  std::uint64_t total = 0;
  while (!rest.empty()) {
    std::uint64_t number = 0;
    if (!take_number(&rest, &number) || rest.empty()) {
      return invalid();
    }
    std::uint64_t scale = 0;
    switch (rest.front()) {
      case 's':
        scale = 1;
        break;
      case 'm':
        scale = 60;
        break;
      case 'h':
        scale = 3'600;
        break;
      case 'd':
        scale = 86'400;
        break;
      case 'w':
        scale = 7 * 86'400;
        break;
      default:
        return invalid();
    }
    rest.remove_prefix(1);
    if (number > kMax / scale || total > kMax - number * scale) {
      return Status::invalid_argument("'" + std::string(text) + "' is too large");
    }
    total += number * scale;
  }
  *seconds = static_cast<std::int64_t>(total);
  return Status();
}
}  // namespace tally::config
