// The scale-out mode's ad-hoc limits (see cluster_mode.h): each limit's fixed window is one
// counter in the Redis Cluster (cluster::adhoc_key), decided and added by one FCALL
// (cluster::RedisLimits::adhoc), so every node counts on the same window and N nodes together
// never admit more than the limit. The batch's all or nothing, and the answers, are
// Engine::limit_adhoc's (adhoc_limits.cc), the same code as the embedded store's.
#include "engine/cluster_mode_impl.h"

namespace tally::engine {

namespace {

// How long a window's counter outlives the window's end, for clocks that lag.
constexpr std::int64_t kAdHocExpiryMarginMs = 60'000;

// When the counter of a window ending at `reset_us` (by the engine's clock, which places the
// windows; `now_us` now) expires in Redis, whose expiries run on the real clock: as far from the
// real now as the window's end is from the engine's now, plus the margin, so a clock that differs
// from the real one (a test's) keeps the window for its whole length.
std::int64_t expiry_unix_ms(TimeUs reset_us, TimeUs now_us) {
  const TimeUs left_us = reset_us > now_us ? reset_us - now_us : 0;
  return (system_clock().now_us() + left_us + 999) / 1000 + kAdHocExpiryMarginMs;
}

}  // namespace

Result<ClusterMode::AdHocCount> ClusterMode::adhoc_window(const AdHocLimit& l,
                                                          TimeUs window_start_us, TimeUs reset_us) {
  Impl& d = *impl_;
  auto slot = d.lease_redis();
  if (!slot) {
    return slot.error();
  }
  const std::string key = cluster::adhoc_key(l.ns, l.identifier, l.duration_ms, window_start_us);
  const TimeUs now_us = d.clock->now_us();
  auto decided =
      (*slot)->limits->adhoc(key, l.limit, l.cost, expiry_unix_ms(reset_us, now_us), now_us);
  d.return_redis(std::move(*slot));
  if (!decided) {
    return decided.error();
  }
  return AdHocCount{decided->fits, decided->used_before};
}

Result<std::int64_t> ClusterMode::adhoc_take_back(const AdHocLimit& l, TimeUs window_start_us) {
  Impl& d = *impl_;
  auto slot = d.lease_redis();
  if (!slot) {
    return slot.error();
  }
  auto after = (*slot)->limits->adhoc_take_back(
      cluster::adhoc_key(l.ns, l.identifier, l.duration_ms, window_start_us), l.cost);
  d.return_redis(std::move(*slot));
  return after;
}

}  // namespace tally::engine
