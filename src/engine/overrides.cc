// Overrides and resets of a customer's limits, and the audit records of both.
#include <algorithm>

#include <spdlog/spdlog.h>

#include "core/ids.h"
#include "engine/admin_rules.h"
#include "engine/audit.h"
#include "engine/cluster_mode.h"
#include "engine/limits_impl.h"

namespace tally {

using engine::CustomerLimits;
using engine::LimitCounter;
using engine::RateCounter;
using engine::used_value;

// ---- admin: overrides and resets
// -----------------------------------------------------------------

namespace engine {

Customer with_reset(const Customer& record, const std::string& meter, core::TimeUs now) {
  Customer c = record;
  bool replaced = false;
  for (auto& [m, at] : c.resets) {
    if (m == meter) {
      at = now;
      replaced = true;
    }
  }
  if (!replaced) {
    c.resets.emplace_back(meter, now);
  }
  c.updated_at_us = now;
  return c;
}

core::TimeUs reset_at(const Customer& c, std::string_view meter) {
  core::TimeUs at = 0;
  for (const auto& [m, t] : c.resets) {
    if (m == meter) {
      at = std::max(at, t);
    }
  }
  return at;
}

Status check_overrides(const config::Config& config, const Catalog& catalog,
                       const std::vector<LimitOverride>& overrides) {
  if (overrides.size() > kOverridesMax) {
    return Status::invalid_argument("at most " + std::to_string(kOverridesMax) + " overrides");
  }
  for (std::size_t i = 0; i < overrides.size(); ++i) {
    const LimitOverride& o = overrides[i];
    const core::MeterSpec* m = config.find_meter(o.meter);
    if (m == nullptr) {
      return Status::invalid_argument("overrides[" + std::to_string(i) + "].meter: '" + o.meter +
                                      "' is not a configured meter");
    }
    const auto idx = static_cast<std::size_t>(m - config.meters.data());
    if (!catalog.meters[idx].limitable) {
      return Status::invalid_argument("overrides[" + std::to_string(i) +
                                      "].meter: limits apply "
                                      "to count, sum, latest and max meters");
    }
    Result<core::LimitRule> r = config::make_limit(o.meter, o.period, o.days, o.amount, o.hard);
    if (!r) {
      return Status::invalid_argument("overrides[" + std::to_string(i) +
                                      "]: " + r.error().message());
    }
  }
  return Status();
}

}  // namespace engine

Result<Customer> Engine::set_overrides(const std::string& customer,
                                       const std::vector<LimitOverride>& overrides) {
  Impl& d = *impl_;
  TALLY_TRY(engine::check_overrides(d.config, *d.catalog, overrides));
  if (d.cluster != nullptr) {
    return d.cluster->set_overrides(customer, overrides);
  }
  auto updated = std::make_shared<Customer>();
  auto num = std::make_shared<std::uint32_t>(0);
  const core::TimeUs now = clock().now_us();
  Status s = engine::run_admin(
      d,
      [&d, customer, overrides, updated, num, now](store::WriteBatch& wb) -> Status {
        const engine::CustomerState* cs = d.find_customer(customer);
        if (cs == nullptr) {
          return core::customer_not_found(customer);
        }
        *num = cs->num;
        Customer c = cs->record;
        c.overrides = overrides;
        c.updated_at_us = now;
        *updated = c;
        wb.put(store::Space::kCustomers, c.id, engine::encode_customer(*num, c));
        engine::put_audit(d, wb, engine::overrides_record(customer, overrides.size(), now), now);
        return Status();
      },
      [&d, updated, num]() {
        d.customers.at(*num).record = *updated;
        // Calendar counters measure usage, whatever the amounts: they stay (rebuilding one
        // would lose the exactness of a reset, see reset_period). Rate buckets drain at the
        // limit's rate, so they are refilled from the recent usage under the new limits.
        std::lock_guard lock(d.limits_mutex);
        auto it = d.limits.find(*num);
        if (it != d.limits.end()) {
          it->second.rates.clear();
        }
      });
  if (!s.ok()) {
    return s;
  }
  return *updated;
}

namespace {

// The usage of the reset's minute before the reset at `at` (all of that minute's committed
// usage: nothing newer is committed yet), which a counter summing whole minutes takes off; zero
// on a minute's boundary and for meters that do not add up.
core::Decimal usage_before_reset(const Engine::Impl& d, std::uint32_t customer_num,
                                 std::uint32_t meter_index, core::TimeUs at) {
  const core::Aggregation agg = d.catalog->meters[meter_index].spec.aggregation;
  const core::TimeUs minute_start = core::floor_to(at, core::kUsPerMinute);
  if (minute_start == at || (agg != core::Aggregation::kCount && agg != core::Aggregation::kSum)) {
    return core::Decimal{};
  }
  core::AggState minute;
  // A reset's minute is recent, so held; before the horizon (a reset back-dated that far) it is
  // read from the store, and a failed read takes nothing off (logged).
  if (Status read =
          engine::combine_customer(d.meter_aggregates[meter_index], customer_num, minute_start,
                                   minute_start + core::kUsPerMinute, false, &minute, nullptr);
      !read.ok()) {
    spdlog::error("a reset could not read its minute from the store: {}", read.message());
  }
  return used_value(agg, minute);
}

// The meter's counters of the customer built anew from the reset at `at`, exactly. Check usage
// still in flight from before the reset is older than the counters' start and never counts in
// them. REQUIRES: limits_mutex held.
void restart_counters(Engine::Impl& d, const engine::CustomerState& cs, std::uint32_t meter_index,
                      core::TimeUs at) {
  CustomerLimits& cl = d.limits[cs.num];
  std::erase_if(cl.counters, [&](const LimitCounter& c) { return c.meter == meter_index; });
  std::erase_if(cl.rates, [&](const RateCounter& r) { return r.meter == meter_index; });
  const core::Decimal before_reset = usage_before_reset(d, cs.num, meter_index, at);
  const engine::MeterDef& ms = d.catalog->meters[meter_index];
  const core::PeriodContext pc = period_context(cs);
  const engine::WindowContext wc = window_context(cs, pc, ms.spec.key);
  std::vector<const LimitCounter*> built;
  for (const auto& rule : engine::limits_of(d.config, cs.record, ms.spec.key)) {
    if (core::period_is_rate(rule.period)) {
      continue;
    }
    bool outside = false;
    LimitCounter* c = calendar_counter(d, cs, cl, meter_index, rule, at, pc, wc, &outside);
    if (c == nullptr || c->count_from_us != at ||
        std::find(built.begin(), built.end(), c) != built.end()) {
      continue;
    }
    built.push_back(c);
    c->pending = c->pending - before_reset;
  }
}

}  // namespace

Result<Customer> Engine::reset_period(const std::string& customer, const std::string& meter,
                                      const std::string& actor) {
  Impl& d = *impl_;
  if (d.config.find_meter(meter) == nullptr) {
    return Status::invalid_argument("'" + meter + "' is not a configured meter");
  }
  if (d.cluster != nullptr) {
    return d.cluster->reset_period(customer, meter, actor);
  }
  const auto meter_index =
      static_cast<std::uint32_t>(d.config.find_meter(meter) - d.config.meters.data());
  auto updated = std::make_shared<Customer>();
  auto num = std::make_shared<std::uint32_t>(0);
  // The reset instant is read on the commit thread, in prepare: every event committed before it
  // is then older than the reset, so the reset minute's aggregate at install time holds exactly
  // the usage to take off (usage_before_reset).
  auto reset_us = std::make_shared<core::TimeUs>(0);
  Status s = engine::run_admin(
      d,
      [&d, customer, meter, actor, updated, num, reset_us](store::WriteBatch& wb) -> Status {
        const engine::CustomerState* cs = d.find_customer(customer);
        if (cs == nullptr) {
          return core::customer_not_found(customer);
        }
        const core::TimeUs now = d.clock->now_us();
        *reset_us = now;
        *num = cs->num;
        *updated = engine::with_reset(cs->record, meter, now);
        wb.put(store::Space::kCustomers, updated->id, engine::encode_customer(*num, *updated));
        engine::put_audit(d, wb, engine::reset_record(customer, meter, actor, now), now);
        return Status();
      },
      [&d, updated, num, meter_index, reset_us]() {
        engine::CustomerState& cs = d.customers.at(*num);
        cs.record = *updated;
        std::lock_guard lock(d.limits_mutex);
        restart_counters(d, cs, meter_index, *reset_us);
      });
  if (!s.ok()) {
    return s;
  }
  return *updated;
}

Result<std::vector<std::string>> Engine::audit_log(std::size_t limit) const {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->audit_log(limit);
  }
  std::vector<std::string> out;
  impl_->store
      ->scan(store::Space::kAudit, "", "",
             [&](std::string_view, std::string_view v) {
               out.emplace_back(v);
               return true;
             })
      .ignore_error();
  if (out.size() > limit) {
    out.erase(out.begin(), out.end() - static_cast<std::ptrdiff_t>(limit));
  }
  return out;
}

}  // namespace tally
