// The admin view's live figures (see live_rates.h).
#include "http/live_rates.h"

#include "common/assert.h"

namespace tally::http {

P99 p99_between(const common::LatencyHistogram::Snapshot& now,
                const common::LatencyHistogram::Snapshot& before) {
  P99 out;
  if (now.cumulative.empty() || before.cumulative.size() != now.cumulative.size()) {
    return out;
  }
  auto delta = [&](std::size_t i) {
    return now.cumulative[i] >= before.cumulative[i] ? now.cumulative[i] - before.cumulative[i] : 0;
  };
  out.observations = delta(now.cumulative.size() - 1);
  if (out.observations == 0) {
    return out;
  }
  for (std::size_t i = 0; i < now.bounds_ns.size(); ++i) {
    // 99 % of n, rounded up, in integers: delta * 100 >= n * 99.
    if (delta(i) * 100 >= out.observations * 99) {
      out.le_ns = now.bounds_ns[i];
      return out;
    }
  }
  out.le_ns = now.bounds_ns.empty() ? 0 : now.bounds_ns.back();
  out.beyond_last_bound = true;
  return out;
}

std::optional<LiveSample> LiveRates::baseline(const LiveSample& now) {
  std::lock_guard lock(mutex_);
  while (!samples_.empty() &&
         (samples_.front().at_us < now.at_us - kKeepUs || samples_.size() >= kSamplesMax)) {
    samples_.pop_front();
  }
  std::optional<LiveSample> base;
  for (auto it = samples_.rbegin(); it != samples_.rend(); ++it) {
    if (it->at_us <= now.at_us - kWindowUs) {
      base = *it;
      break;
    }
  }
  if (!base && !samples_.empty() && samples_.front().at_us < now.at_us) {
    base = samples_.front();  // the server is younger than the window
  }
  if (samples_.empty() || samples_.back().at_us + kSpacingUs <= now.at_us) {
    samples_.push_back(now);
  }
  TALLY_DASSERT(samples_.size() <= kSamplesMax, "the live samples are bounded");
  return base;
}

}  // namespace tally::http
