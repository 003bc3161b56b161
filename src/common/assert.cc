#include "common/assert.h"

#include <cstdio>
#include <cstdlib>

namespace tally::common {
namespace {
std::atomic<std::uint64_t> g_bugs_total{0};
}  // namespace

void assert_fail(const char* expr, const char* why, const char* file, int line) {
  std::fprintf(stderr, "tally: assertion failed at %s:%d: %s (%s)\n", file, line, expr, why);
  std::fflush(stderr);
  std::abort();
}

void bug_report(const char* expr, const char* why, const char* file, int line) {
  g_bugs_total.fetch_add(1, std::memory_order_relaxed);
  std::fprintf(stderr, "tally: BUG at %s:%d: %s (%s)\n", file, line, expr, why);
#ifndef NDEBUG
  std::abort();
#endif
}

std::uint64_t bugs_total() {
  return g_bugs_total.load(std::memory_order_relaxed);
}

}  // namespace tally::common
