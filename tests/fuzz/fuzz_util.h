// Shared by the libFuzzer targets: how a target reports a broken property of a parser.
//
// A sanitizer report or a crash is a finding by itself; FUZZ_EXPECT adds the properties the
// parsers promise (limits respected, a decode of an encode is stable, no 500 for bad input), so
// a wrong answer is a finding too. It aborts, which libFuzzer records as a crash with its input.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#define FUZZ_EXPECT(cond, what)                                                              \
  do {                                                                                       \
    if (!(cond)) {                                                                           \
      std::fprintf(stderr, "%s:%d: FUZZ_EXPECT(%s) failed: %s\n", __FILE__, __LINE__, #cond, \
                   std::string(what).c_str());                                               \
      std::abort();                                                                          \
    }                                                                                        \
  } while (0)

namespace tally::fuzz {

inline std::string_view as_text(const unsigned char* data, std::size_t size) {
  return std::string_view(reinterpret_cast<const char*>(data), size);
}

}  // namespace tally::fuzz
