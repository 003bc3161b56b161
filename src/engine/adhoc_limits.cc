// Ad-hoc limits: limits the caller states with each request (the shape of Unkey's and
// Gubernator's rate limits), counted exactly in fixed windows (core::window_decide) per
// namespace, identifier and window length. On the embedded store they are held in memory only,
// like rate buckets: a restart starts every window from zero. Windows that ended are swept as the
// map grows, so memory is bounded by the windows live now.
//
// In the scale-out mode each window is a counter in Redis that every node shares
// (cluster_adhoc.cc), decided and added by one function call per limit, so N nodes together never
// admit more than a limit. A request's limits are decided in order, each seeing those before it;
// when one is denied, what the others added is given back (never below 0) and every answer says
// what its window holds then, as on the embedded store. For the instant between an addition and
// its giving back, another request may see it and be denied: a batch can under-admit others for
// that instant, never over-admit. Redis keeps the counters (they expire a minute after their
// window ends); a node's clock places the windows, so nodes' clocks should agree well within a
// window.
#include <algorithm>
#include <map>

#include <spdlog/spdlog.h>

#include "common/assert.h"
#include "engine/cluster_mode.h"
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

// The answer of limit `l` from its window's decision `w`.
AdHocResult result_of(const AdHocLimit& l, const core::WindowDecision& w) {
  AdHocResult r;
  r.ns = l.ns;
  r.identifier = l.identifier;
  r.allowed = w.allowed;
  r.limit = l.limit;
  r.used = w.used_after;
  r.remaining = w.remaining;
  r.window_start_us = w.window_start_us;
  r.reset_us = w.reset_us;
  return r;
}

// A denied request's answer of a limit whose window holds `used` now that nothing counted.
void restate(AdHocResult& r, std::int64_t used) {
  r.used = used;
  r.remaining = r.limit > used ? r.limit - used : 0;
}

// The scale-out mode's: each limit decided in order on its window's counter in Redis; when one is
// denied (or Redis fails), what the others added is given back, last first, and each answer
// says what its window holds after.
Result<std::vector<AdHocResult>> cluster_adhoc(engine::ClusterMode& cluster,
                                               const std::vector<AdHocLimit>& limits,
                                               core::TimeUs now) {
  std::vector<AdHocResult> out(limits.size());
  std::vector<bool> added(limits.size(), false);
  Status failure;
  bool all = true;
  for (std::size_t i = 0; i < limits.size() && failure.ok(); ++i) {
    const AdHocLimit& l = limits[i];
    const core::TimeUs duration_us = l.duration_ms * 1000;
    const core::WindowDecision placed = core::window_decide({}, l.limit, duration_us, 0, now);
    auto counted = cluster.adhoc_window(l, placed.window_start_us, placed.reset_us);
    if (!counted) {
      failure = counted.error();
      break;
    }
    const core::WindowDecision w =
        core::window_decide(core::WindowCount{placed.window_start_us, counted->used_before},
                            l.limit, duration_us, l.cost, now);
    TALLY_BUG(w.allowed == counted->fits, "core and tally_adhoc agree on an ad-hoc limit");
    out[i] = result_of(l, w);
    out[i].allowed = counted->fits;
    added[i] = counted->fits && l.cost > 0;
    all = all && counted->fits;
  }
  if (failure.ok() && all) {
    return out;
  }
  std::map<std::string, std::int64_t> now_used;  // window_key -> its count after giving back
  for (std::size_t i = limits.size(); i-- > 0;) {
    if (!added[i]) {
      continue;
    }
    auto after = cluster.adhoc_take_back(limits[i], out[i].window_start_us);
    if (!after) {
      // The counter keeps the cost until its window ends: it under-admits, never over-admits.
      spdlog::error("cluster: an ad-hoc limit's cost was not given back: {}",
                    after.error().to_string());
      continue;
    }
    now_used[window_key(limits[i])] = std::max<std::int64_t>(*after, 0);
  }
  if (!failure.ok()) {
    return failure;
  }
  for (std::size_t i = 0; i < limits.size(); ++i) {
    auto it = now_used.find(window_key(limits[i]));
    restate(out[i], it != now_used.end() ? it->second : out[i].used);
  }
  return out;
}

}  // namespace

Result<std::vector<AdHocResult>> Engine::limit_adhoc(const std::vector<AdHocLimit>& limits) {
  Impl& d = *impl_;
  if (limits.empty() || limits.size() > kAdHocBatchMax) {
    return Status::invalid_argument("give 1 to 100 limits");
  }
  for (std::size_t i = 0; i < limits.size(); ++i) {
    TALLY_TRY(validate(limits[i], i, limits.size()));
  }
  const core::TimeUs now = d.clock->now_us();
  if (d.cluster != nullptr) {
    return cluster_adhoc(*d.cluster, limits, now);
  }
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
    out[i] = result_of(l, w);
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
      restate(out[i], c.start_us == out[i].window_start_us ? c.used : 0);
    }
  }
  return out;
}

}  // namespace tally
