// The three kinds of "impossible" (see STYLE.md):
//   TALLY_ASSERT(cond, why)  always on; logs and aborts. For invariants whose violation would
//                            corrupt stored data or the ledger.
//   TALLY_DASSERT(cond, why) debug builds, and sanitizer builds (TALLY_DEBUG_ASSERTS), so the
//                            test suite runs them. Pre- and postconditions.
//   TALLY_BUG(cond, why)     always checked; aborts in debug builds, logs and counts in release,
//                            and continues. For "should not happen" paths where continuing is safe.
// Never assert on user input or on the environment: those get a Status.
#pragma once

#include <atomic>
#include <cstdint>

namespace tally::common {

[[noreturn]] void assert_fail(const char* expr, const char* why, const char* file, int line);
void bug_report(const char* expr, const char* why, const char* file, int line);
// Number of TALLY_BUG hits since start, exported as tally_bugs_total.
std::uint64_t bugs_total();

}  // namespace tally::common

#define TALLY_ASSERT(cond, why)                                       \
  do {                                                                \
    if (!(cond)) [[unlikely]] {                                       \
      ::tally::common::assert_fail(#cond, (why), __FILE__, __LINE__); \
    }                                                                 \
  } while (false)

#if defined(NDEBUG) && !defined(TALLY_DEBUG_ASSERTS)
#define TALLY_DASSERT(cond, why) \
  do {                           \
  } while (false)
#else
#define TALLY_DASSERT(cond, why) TALLY_ASSERT(cond, why)
#endif

#define TALLY_BUG(cond, why)                                         \
  do {                                                               \
    if (!(cond)) [[unlikely]] {                                      \
      ::tally::common::bug_report(#cond, (why), __FILE__, __LINE__); \
    }                                                                \
  } while (false)
