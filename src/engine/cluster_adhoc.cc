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

}  // namespace

Result<ClusterMode::AdHocCount> ClusterMode::adhoc_window(const AdHocLimit& l,
                                                          TimeUs window_start_us, TimeUs reset_us) {
  Impl& d = *impl_;
  auto slot = d.lease_redis();
  if (!slot) {
    return slot.error();
  }
  const std::string key = cluster::adhoc_key(l.ns, l.identifier, l.duration_ms, window_start_us);
  auto decided = (*slot)->limits->adhoc(
      key, l.limit, l.cost, (reset_us + 999) / 1000 + kAdHocExpiryMarginMs, d.clock->now_us());
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
