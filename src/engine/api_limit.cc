// Tally's own API rate limit: one GCRA bucket per API key, the same algorithm as plan rate
// limits (core/limits.h), held in memory only.
#include "engine/engine_impl.h"

namespace tally {

CheckResult Engine::limit_api_request(const std::string& key_id) {
  Impl& d = *impl_;
  CheckResult out;
  out.allowed = true;
  const std::uint32_t per_minute = d.config.enforcement.api_rate_limit_per_minute;
  if (per_minute == 0) {
    return out;
  }
  const core::TimeUs now = d.clock->now_us();
  const core::Decimal limit = core::Decimal::from_int(per_minute);
  const core::Decimal one = core::Decimal::from_int(1);
  core::RateDecision decision;
  {
    std::lock_guard lock(d.api_rates_mutex);
    auto [it, fresh] = d.api_rates.try_emplace(key_id);
    if (fresh) {
      it->second.at_us = now;
    }
    decision = core::rate_evaluate(it->second, limit, core::kUsPerMinute, one, now);
    if (decision.allowed) {
      it->second.level = decision.level_after;
      it->second.at_us = now;
    }
  }
  out.allowed = decision.allowed;
  out.meter = "api_requests";
  out.amount = one;
  if (!decision.allowed) {
    out.reason = Denial::kLimitExceeded;
    out.message = "API rate limit of " + std::to_string(per_minute) +
                  " requests per minute for this key exceeded; retry later.";
    out.retry_after_us = decision.retry_after_us;
  }
  out.has_rule = true;
  LimitState& s = out.rule;
  s.meter = "api_requests";
  s.period = LimitPeriod::kMinute;
  s.per_key = true;
  s.limit = limit;
  s.remaining = decision.remaining;
  s.used = limit - decision.remaining;
  s.window_start_us = now - core::kUsPerMinute;
  s.reset_us = decision.reset_us;
  out.limits.push_back(s);
  return out;
}

}  // namespace tally
