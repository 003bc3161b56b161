// The limits report of a customer and the admin's customer summaries: the counters a check
// would read, evaluated without consuming.
#include <algorithm>

#include "engine/limits_impl.h"

namespace tally {

using engine::CustomerLimits;
using engine::Evaluation;
using engine::resolve_rule;
using engine::used_value;

// ---- reports ------------------------------------------------------------------------------------

Result<LimitsReport> Engine::limits_report(const std::string& customer) {
  Impl& d = *impl_;
  const core::TimeUs now = clock().now_us();
  std::shared_lock state_lock(d.state_mutex);
  const engine::CustomerState* cs = d.find_customer(customer);
  if (cs == nullptr) {
    return Status::not_found("customer '" + customer + "' does not exist");
  }
  LimitsReport out;
  out.customer = customer;
  const core::Plan* plan = engine::plan_of(d.config, cs->record);
  if (plan != nullptr) {
    out.plan = plan->key;
    out.features = plan->features;
  }
  {
    // The same choice as the alerts' evaluation (alerts.cc): the plan's own, else [alerts]'s.
    const bool own = plan != nullptr && !plan->alert_thresholds.empty();
    const std::vector<std::int64_t>& thresholds =
        own ? plan->alert_thresholds : d.config.alerts.thresholds;
    const std::vector<AlertLevel>& levels = own ? plan->alert_levels : d.config.alerts.levels;
    for (std::size_t i = 0; i < thresholds.size(); ++i) {
      out.alert_thresholds.push_back(
          AlertThreshold{thresholds[i], core::alert_level(thresholds, levels, i)});
    }
  }
  const std::vector<core::LimitRule> rules = engine::limits_of(d.config, cs->record, "");
  std::lock_guard limits_lock(d.limits_mutex);
  d.expire_reservations(now);
  CustomerLimits& cl = d.limits[cs->num];
  for (const auto& rule : rules) {
    const engine::MeterDef* ms = d.catalog->find(rule.meter);
    if (ms == nullptr) {
      continue;
    }
    const auto m = d.catalog->index_of(ms);
    const std::vector<engine::ResolvedRule> one{resolve_rule(rule)};
    Evaluation ev;
    evaluate(d, *cs, cl, m, one, core::Decimal{}, now, &ev);
    for (std::size_t i = 0; i < ev.size(); ++i) {
      LimitState state = state_of(ev, i);
      const std::string percent = state.percent();
      core::Decimal pct;
      if (!percent.empty() && core::try_parse_decimal(percent, &pct) &&
          pct > core::Decimal::from_int(80)) {
        out.warnings.push_back(state.rule() + " at " + percent + "%");
      }
      out.limits.push_back(std::move(state));
    }
  }
  return out;
}

Result<CustomerSummaryPage> Engine::customer_summaries(const CustomerSummaryQuery& q) {
  Impl& d = *impl_;
  if (q.limit == 0 || q.limit > 1000) {
    return Status::invalid_argument("limit must be 1..1000");
  }
  auto lower = [](std::string_view s) {
    std::string out(s);
    for (char& c : out) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    return out;
  };
  const std::string needle = lower(q.search);
  std::vector<CustomerSummary> rows;
  {
    std::shared_lock lock(d.state_mutex);
    for (const auto& [num, cs] : d.customers) {
      const Customer& c = cs.record;
      if (!needle.empty() && lower(c.id).find(needle) == std::string::npos &&
          lower(c.name).find(needle) == std::string::npos) {
        continue;
      }
      CustomerSummary s;
      s.id = c.id;
      s.name = c.name;
      const core::Plan* plan = engine::plan_of(d.config, c);
      s.plan = plan != nullptr ? plan->key : "";
      s.status = c.status;
      s.organization = c.organization;
      rows.push_back(std::move(s));
    }
  }
  // The highest limit percent of a customer now (its limits report's, exactly as shown there).
  auto fill_usage = [this](CustomerSummary& s) {
    Result<LimitsReport> r = limits_report(s.id);
    if (!r) {
      return;  // removed meanwhile: shown without usage
    }
    core::Decimal best;
    for (const LimitState& l : r->limits) {
      const std::string percent = l.percent();
      core::Decimal p;
      if (percent.empty() || !core::try_parse_decimal(percent, &p)) {
        continue;
      }
      if (s.max_percent.empty() || p > best) {
        best = p;
        s.max_percent = percent;
        s.max_rule = l.rule();
      }
    }
  };
  const bool by_usage = q.sort == CustomerSort::kUsage;
  if (by_usage) {
    for (auto& s : rows) {
      fill_usage(s);
    }
  }
  auto key_less = [&q](const CustomerSummary& a, const CustomerSummary& b) {
    if (q.sort == CustomerSort::kName && a.name != b.name)
      return a.name < b.name;
    if (q.sort == CustomerSort::kPlan && a.plan != b.plan)
      return a.plan < b.plan;
    if (q.sort == CustomerSort::kStatus && a.status != b.status)
      return a.status < b.status;
    if (q.sort == CustomerSort::kUsage && a.max_percent != b.max_percent) {
      // No limit sorts lowest; percents compare as exact decimals.
      if (a.max_percent.empty() || b.max_percent.empty())
        return a.max_percent.empty();
      core::Decimal x;
      core::Decimal y;
      const bool ok =
          core::try_parse_decimal(a.max_percent, &x) && core::try_parse_decimal(b.max_percent, &y);
      if (ok && x != y)
        return x < y;
    }
    return false;
  };
  std::sort(rows.begin(), rows.end(), [&](const CustomerSummary& a, const CustomerSummary& b) {
    if (key_less(a, b))
      return !q.descending;
    if (key_less(b, a))
      return q.descending;
    return a.id < b.id;  // ties by id, always ascending, so pages are stable
  });
  CustomerSummaryPage out;
  out.total = rows.size();
  const std::size_t from = std::min<std::size_t>(q.offset, rows.size());
  const std::size_t to = std::min<std::size_t>(from + q.limit, rows.size());
  for (std::size_t i = from; i < to; ++i) {
    if (!by_usage) {
      fill_usage(rows[i]);
    }
    out.customers.push_back(std::move(rows[i]));
  }
  return out;
}

}  // namespace tally
