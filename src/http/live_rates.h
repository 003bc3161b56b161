// The live figures of the admin view (GET /v1/admin/live): ingest and check rates and p99s over
// the last seconds, from the server's own counters (the engine's accepted events and the
// latency histograms of RequestMetrics).
//
// Counters only grow, so a rate needs an earlier sample to subtract. Rather than keep one per
// client (100 dashboards would each need their own), the server keeps a short history: each
// request takes a sample, and a sample at least a second newer than the last kept one is kept,
// at most kSamplesMax, none older than kKeepUs. A request is answered against the newest kept
// sample at least kWindowUs old (or the oldest, while the server is younger than that), so every
// client sees the same figures over about the same ten seconds, whatever its polling rate.
// Times come from the engine's injected clock.
//
// Thread safety: baseline() may be called concurrently (one mutex, held to copy a sample).
#pragma once

#include <cstdint>
#include <deque>
#include <mutex>
#include <optional>

#include "common/histogram.h"

namespace tally::http {

struct LiveSample {
  std::int64_t at_us = 0;
  std::uint64_t events_accepted = 0;
  common::LatencyHistogram::Snapshot ingest;  // ingest requests, parse to acknowledgement
  common::LatencyHistogram::Snapshot check;   // check requests
};

// A histogram's p99 between two snapshots: the bound of the first bucket that holds 99 % of the
// observations made between them.
struct P99 {
  std::uint64_t observations = 0;
  std::uint64_t le_ns = 0;         // 0 when there were no observations
  bool beyond_last_bound = false;  // the p99 is in the +Inf bucket (le_ns is the last bound)
};

P99 p99_between(const common::LatencyHistogram::Snapshot& now,
                const common::LatencyHistogram::Snapshot& before);

class LiveRates {
 public:
  static constexpr std::int64_t kWindowUs = 10'000'000;
  static constexpr std::int64_t kSpacingUs = 1'000'000;
  static constexpr std::int64_t kKeepUs = 60'000'000;
  static constexpr std::size_t kSamplesMax = 64;

  // Keeps `now` when it is due, and returns the sample to compare it with (nullopt when there
  // is none older than `now`: the first request).
  std::optional<LiveSample> baseline(const LiveSample& now);

 private:
  std::mutex mutex_;
  std::deque<LiveSample> samples_;  // oldest first
};

}  // namespace tally::http
