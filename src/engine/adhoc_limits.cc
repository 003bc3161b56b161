// Ad-hoc limits: limits the caller states with each request (the shape of Unkey's and
// Gubernator's rate limits), counted exactly in fixed windows (core::window_decide) per
// namespace, identifier and window length. Held in memory only, like rate buckets: a restart
// starts every window from zero. Windows that ended are swept as the map grows, so memory is
// bounded by the windows live now.
#include <algorithm>

#include "engine/engine_impl.h"

namespace tally {

namespace {

constexpr std::size_t kAdHocBatchMax = 100;
constexpr std::size_t kTextBytesMax = 255;
constexpr std::int64_t kAmountMax = 1'000'000'000'000'000;  // 1e15
constexpr std::int64_t kDurationMinMs = 1'000;
constexpr std::int64_t kDurationMaxMs = 2'592'000'000;  // 30 days
constexpr std::size_t kSweepAbove = 100'000;            // windows kept before ended ones are swept
constexpr std::size_t kLiveWindowsMax = 2'000'000;      // live windows at once

Status check_text(std::string_view what, std::string_view text) {
  if (text.empty() || text.size() > kTextBytesMax) {
    return Status::invalid_argument(std::string(what) + " must be 1 to 255 bytes");
  }
  for (unsigned char c : text) {
    if (c < 0x20 || c == 0x7f) {
      return Status::invalid_argument(std::string(what) + " must not hold control characters");
    }
  }
  return Status();
}

Status validate(const AdHocLimit& l, std::size_t i, std::size_t n) {
  const std::string at = n > 1 ? "limits[" + std::to_string(i) + "]." : "";
  TALLY_TRY(check_text(at + "namespace", l.ns));
  TALLY_TRY(check_text(at + "identifier", l.identifier));
  if (l.limit < 0 || l.limit > kAmountMax) {
    return Status::invalid_argument(at + "limit must be 0 to 1e15");
  }
  if (l.duration_ms < kDurationMinMs || l.duration_ms > kDurationMaxMs) {
    return Status::invalid_argument(at + "duration must be 1000 to 2592000000 milliseconds");
  }
  if (l.cost < 0 || l.cost > kAmountMax) {
    return Status::invalid_argument(at + "cost must be 0 to 1e15");
  }
  return Status();
}

std::string window_key(const AdHocLimit& l) {
  std::string k;
  k.reserve(l.ns.size() + l.identifier.size() + 24);
  k += l.ns;
  k += '\0';
  k += l.identifier;
  k += '\0';
  k += std::to_string(l.duration_ms);
  return k;
}

}  // namespace

Result<std::vector<AdHocResult>> Engine::limit_adhoc(const std::vector<AdHocLimit>& limits) {
  TALLY_EMBEDDED_ONLY("ad-hoc limits (POST /v1/ratelimit)");
  Impl& d = *impl_;
  if (limits.empty() || limits.size() > kAdHocBatchMax) {
    return Status::invalid_argument("give 1 to 100 limits");
  }
  for (std::size_t i = 0; i < limits.size(); ++i) {
    TALLY_TRY(validate(limits[i], i, limits.size()));
  }
  const core::TimeUs now = d.clock->now_us();
  std::vector<AdHocResult> out(limits.size());
  std::vector<std::string> keys;
  keys.reserve(limits.size());
  for (const auto& l : limits) {
    keys.push_back(window_key(l));
  }
  std::lock_guard lock(d.adhoc_mutex);
  if (d.adhoc_windows.size() > d.adhoc_sweep_at) {
    std::erase_if(d.adhoc_windows, [&](const auto& entry) { return entry.second.end_us <= now; });
    // The next sweep when the live ones have doubled: sweeping costs O(1) per request overall.
    d.adhoc_sweep_at = std::max(kSweepAbove, 2 * d.adhoc_windows.size());
  }
  if (d.adhoc_windows.size() + limits.size() > kLiveWindowsMax) {
    return Status::unavailable("too many ad-hoc limit windows are live; retry shortly");
  }
  // Each limit sees the ones before it (the same window twice counts twice); all or nothing.
  std::vector<std::pair<std::string, Impl::AdHocWindow>> before;
  bool all = true;
  for (std::size_t i = 0; i < limits.size(); ++i) {
    const AdHocLimit& l = limits[i];
    auto [it, fresh] = d.adhoc_windows.try_emplace(keys[i]);
    before.emplace_back(keys[i], it->second);
    const core::WindowDecision w =
        core::window_decide(it->second.count, l.limit, l.duration_ms * 1000, l.cost, now);
    AdHocResult& r = out[i];
    r.ns = l.ns;
    r.identifier = l.identifier;
    r.allowed = w.allowed;
    r.limit = l.limit;
    r.used = w.used_after;
    r.remaining = w.remaining;
    r.window_start_us = w.window_start_us;
    r.reset_us = w.reset_us;
    it->second = Impl::AdHocWindow{core::WindowCount{w.window_start_us, w.used_after}, w.reset_us};
    all = all && w.allowed;
  }
  if (!all) {
    // Nothing counts: the windows go back to what they were, and every answer says so.
    for (auto it = before.rbegin(); it != before.rend(); ++it) {
      d.adhoc_windows[it->first] = it->second;
    }
    for (std::size_t i = 0; i < limits.size(); ++i) {
      const core::WindowCount& c = d.adhoc_windows[keys[i]].count;
      const std::int64_t used = c.start_us == out[i].window_start_us ? c.used : 0;
      out[i].used = used;
      out[i].remaining = limits[i].limit > used ? limits[i].limit - used : 0;
    }
  }
  return out;
}

}  // namespace tally
