#include "common/histogram.h"

#include "common/assert.h"

namespace tally::common {

LatencyHistogram::LatencyHistogram(std::span<const std::uint64_t> bounds_ns) {
  TALLY_ASSERT(bounds_ns.size() >= 1 && bounds_ns.size() <= kBoundsMax, "1..kBoundsMax bounds");
  std::uint64_t previous = 0;
  for (std::uint64_t b : bounds_ns) {
    TALLY_ASSERT(b > previous, "bounds ascend");
    bounds_ns_[bounds_count_++] = b;
    previous = b;
  }
}

std::size_t LatencyHistogram::shard_index() {
  static std::atomic<std::size_t> next{0};
  thread_local const std::size_t index = next.fetch_add(1, std::memory_order_relaxed) % kShards;
  return index;
}

LatencyHistogram::Snapshot LatencyHistogram::snapshot() const {
  Snapshot out;
  out.bounds_ns.assign(bounds_ns_.begin(),
                       bounds_ns_.begin() + static_cast<std::ptrdiff_t>(bounds_count_));
  out.cumulative.assign(bounds_count_ + 1, 0);
  for (const Shard& s : shards_) {
    for (std::size_t i = 0; i <= bounds_count_; ++i) {
      out.cumulative[i] += s.counts[i].load(std::memory_order_relaxed);
    }
    out.sum_ns += s.sum_ns.load(std::memory_order_relaxed);
  }
  for (std::size_t i = 1; i < out.cumulative.size(); ++i) {
    out.cumulative[i] += out.cumulative[i - 1];
  }
  return out;
}

std::string seconds_text(std::uint64_t ns) {
  constexpr std::uint64_t kNsPerSecond = 1'000'000'000;
  std::string out = std::to_string(ns / kNsPerSecond);
  std::uint64_t frac = ns % kNsPerSecond;
  if (frac != 0) {
    std::string digits = std::to_string(frac);
    digits.insert(0, 9 - digits.size(), '0');
    while (digits.back() == '0') {
      digits.pop_back();
    }
    out += '.';
    out += digits;
  }
  return out;
}

void append_histogram(std::string& out, std::string_view name, std::string_view help,
                      const LatencyHistogram::Snapshot& snapshot) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" histogram\n");
  for (std::size_t i = 0; i < snapshot.cumulative.size(); ++i) {
    out.append(name).append("_bucket{le=\"");
    out.append(i < snapshot.bounds_ns.size() ? seconds_text(snapshot.bounds_ns[i]) : "+Inf");
    out.append("\"} ").append(std::to_string(snapshot.cumulative[i])).append("\n");
  }
  out.append(name).append("_sum ").append(seconds_text(snapshot.sum_ns)).append("\n");
  out.append(name).append("_count ").append(std::to_string(snapshot.count())).append("\n");
}

}  // namespace tally::common
