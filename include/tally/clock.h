// The clock Tally reads "now" from. Injected everywhere so tests never sleep.
#pragma once

#include <atomic>
#include <cstdint>

namespace tally {

class Clock {
 public:
  virtual ~Clock() = default;
  // Microseconds since the Unix epoch (UTC).
  virtual std::int64_t now_us() const = 0;
};

// The operating system's real-time clock. Thread-safe.
Clock& system_clock();

// A clock that moves only when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(std::int64_t start_us) : now_us_(start_us) {}

  std::int64_t now_us() const override { return now_us_.load(std::memory_order_relaxed); }

  void set_us(std::int64_t t) { now_us_.store(t, std::memory_order_relaxed); }

  void advance_us(std::int64_t d) { now_us_.fetch_add(d, std::memory_order_relaxed); }

 private:
  std::atomic<std::int64_t> now_us_;
};

}  // namespace tally
