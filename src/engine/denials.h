// Denied checks per customer over the last hour, by minute: the dashboard's "429s in the last
// hour" (GET /v1/customers/{id}/denials).
//
// Design: per customer number a ring of 60 one-minute buckets, each holding the minute it counts
// (floor of the check's time to the minute) and how many checks were denied in it. A bucket whose
// minute is older than the ring is reused, so a customer costs at most 60 buckets however many
// denials it gets, and the map holds at most one ring per customer that was ever denied since
// the engine opened. Counts live in memory only: a restart starts them at zero (they describe
// the last hour of enforcement, not stored usage). Time comes from the caller (the engine's
// injected clock), never from the system.
//
// Thread safety: record() and last_hour() may be called concurrently; one small mutex, taken
// after every engine mutex and never held while calling out.
#pragma once

#include <array>
#include <cstdint>
#include <limits>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace tally::engine {

class DenialCounter {
 public:
  static constexpr std::size_t kMinutes = 60;

  // Counts one denied check of customer `customer_num` at `now_us`.
  void record(std::uint32_t customer_num, std::int64_t now_us);

  // The denials of each of the 60 minutes ending with the minute of `now_us`, oldest first
  // (index 59 is the current, partial minute). All zero for a customer never denied.
  std::array<std::uint64_t, kMinutes> last_hour(std::uint32_t customer_num,
                                                std::int64_t now_us) const;

 private:
  static constexpr std::int64_t kUnused = std::numeric_limits<std::int64_t>::min();

  struct Bucket {
    std::int64_t minute = kUnused;  // minutes since the epoch
    std::uint64_t count = 0;
  };

  using Ring = std::array<Bucket, kMinutes>;

  mutable std::mutex mutex_;
  std::unordered_map<std::uint32_t, Ring> rings_;
};

}  // namespace tally::engine
