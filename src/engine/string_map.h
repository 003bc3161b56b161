// Hash maps keyed by std::string that are looked up by std::string_view without a copy.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>

namespace tally::engine {

struct StringHash {
  using is_transparent = void;

  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

using StringMap = std::unordered_map<std::string, std::uint32_t, StringHash, std::equal_to<>>;

}  // namespace tally::engine
