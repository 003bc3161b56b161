// Denied checks per customer over the last hour (see denials.h), and the engine's public face of
// them, Engine::denials_last_hour.
#include "engine/denials.h"

#include "core/ids.h"
#include "core/time.h"
#include "engine/cluster_mode.h"
#include "engine/engine_impl.h"

namespace tally {

namespace engine {

namespace {

// Minutes since the epoch, rounded down (also before the epoch).
std::int64_t minute_of(std::int64_t us) {
  return core::floor_to(us, core::kUsPerMinute) / core::kUsPerMinute;
}

}  // namespace

void DenialCounter::record(std::uint32_t customer_num, std::int64_t now_us) {
  const std::int64_t minute = minute_of(now_us);
  std::lock_guard lock(mutex_);
  Bucket& b = rings_[customer_num][static_cast<std::size_t>(
      ((minute % static_cast<std::int64_t>(kMinutes)) + static_cast<std::int64_t>(kMinutes)) %
      static_cast<std::int64_t>(kMinutes))];
  if (b.minute != minute) {
    b.minute = minute;  // a minute an hour old or more: its count is out of the window
    b.count = 0;
  }
  ++b.count;
}

std::array<std::uint64_t, DenialCounter::kMinutes> DenialCounter::last_hour(
    std::uint32_t customer_num, std::int64_t now_us) const {
  std::array<std::uint64_t, kMinutes> out{};
  const std::int64_t current = minute_of(now_us);
  std::lock_guard lock(mutex_);
  auto it = rings_.find(customer_num);
  if (it == rings_.end()) {
    return out;
  }
  for (const Bucket& b : it->second) {
    if (b.minute == kUnused) {
      continue;
    }
    const std::int64_t age = current - b.minute;
    if (age >= 0 && age < static_cast<std::int64_t>(kMinutes)) {
      out[kMinutes - 1 - static_cast<std::size_t>(age)] = b.count;
    }
  }
  return out;
}

}  // namespace engine

Result<DenialHistory> Engine::denials_last_hour(const std::string& customer) const {
  const Impl& d = *impl_;
  const core::TimeUs now = d.clock->now_us();
  std::vector<std::uint64_t> minutes;
  if (d.cluster != nullptr) {
    auto counted = d.cluster->denials_last_hour(customer, now);
    if (!counted) {
      return counted.error();
    }
    minutes = std::move(*counted);
  } else {
    std::uint32_t num = 0;
    {
      std::shared_lock lock(d.state_mutex);
      const engine::CustomerState* cs = d.find_customer(customer);
      if (cs == nullptr) {
        return core::customer_not_found(customer);
      }
      num = cs->num;
    }
    const auto counted = d.denials.last_hour(num, now);
    minutes.assign(counted.begin(), counted.end());
  }
  DenialHistory out;
  out.customer = customer;
  out.to_us = core::floor_to(now, core::kUsPerMinute) + core::kUsPerMinute;
  out.from_us =
      out.to_us - static_cast<core::TimeUs>(engine::DenialCounter::kMinutes) * core::kUsPerMinute;
  for (std::uint64_t n : minutes) {
    out.total += n;
  }
  out.per_minute = std::move(minutes);
  return out;
}

}  // namespace tally
