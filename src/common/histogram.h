// A latency histogram cheap enough for the check path, exported in Prometheus' histogram form.
//
// Design: the bucket bounds are fixed at construction (at most kBoundsMax, ascending, in
// nanoseconds). record_ns() finds the bucket by a linear scan of the bounds (a few dozen
// compares, no branches mispredicted for a steady workload) and adds one to that bucket's counter
// and the observation to the sum, with relaxed atomics: no lock, no allocation. The counters are
// spread over kShards cache-line-aligned shards, each thread writing to one of them (picked once
// per thread, round-robin), so threads that record at the same time do not fight over one cache
// line. snapshot() adds the shards up; it is for the metrics page, not the hot path.
//
// A snapshot taken while others record is not one instant: a bucket may count an observation
// whose sum is not yet added, or the reverse. Its bucket counts are cumulative and its count is
// the +Inf bucket, so a snapshot is always a well-formed Prometheus histogram.
//
// Thread safety: record_ns() and snapshot() may be called concurrently from any threads.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace tally::common {

class LatencyHistogram {
 public:
  static constexpr std::size_t kBoundsMax = 24;
  static constexpr std::size_t kShards = 8;

  // REQUIRES: 1..kBoundsMax bounds, strictly ascending, each > 0.
  explicit LatencyHistogram(std::span<const std::uint64_t> bounds_ns);
  LatencyHistogram(const LatencyHistogram&) = delete;
  LatencyHistogram& operator=(const LatencyHistogram&) = delete;

  // Counts one observation of `ns` nanoseconds in the first bucket whose bound is >= ns (the
  // +Inf bucket past the last bound). Lock-free; allocates nothing.
  void record_ns(std::uint64_t ns) {
    std::size_t i = 0;
    while (i < bounds_count_ && ns > bounds_ns_[i]) {
      ++i;
    }
    Shard& s = shards_[shard_index()];
    s.counts[i].fetch_add(1, std::memory_order_relaxed);
    s.sum_ns.fetch_add(ns, std::memory_order_relaxed);
  }

  struct Snapshot {
    std::vector<std::uint64_t> bounds_ns;
    std::vector<std::uint64_t> cumulative;  // one per bound, then +Inf (= count)
    std::uint64_t sum_ns = 0;

    std::uint64_t count() const { return cumulative.empty() ? 0 : cumulative.back(); }
  };

  Snapshot snapshot() const;

 private:
  struct alignas(64) Shard {
    std::array<std::atomic<std::uint64_t>, kBoundsMax + 1> counts{};
    std::atomic<std::uint64_t> sum_ns{0};
  };

  static std::size_t shard_index();

  std::array<std::uint64_t, kBoundsMax> bounds_ns_{};
  std::size_t bounds_count_ = 0;
  std::array<Shard, kShards> shards_;
};

// Appends `snapshot` in the Prometheus text format as histogram `name`, with its HELP and TYPE
// lines: bounds and sum in seconds, the sum as an exact decimal.
void append_histogram(std::string& out, std::string_view name, std::string_view help,
                      const LatencyHistogram::Snapshot& snapshot);

// `ns` nanoseconds as seconds in decimal, exactly and without trailing zeros ("0.000025", "1",
// "2.5").
std::string seconds_text(std::uint64_t ns);

}  // namespace tally::common
