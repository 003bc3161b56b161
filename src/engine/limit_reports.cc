// The limits report of a customer and the admin's customer summaries: the counters a check
// would read, evaluated without consuming. The summaries read only the customers' records and
// their limits reports, which both modes answer alike, so the scale-out mode's are the embedded
// code's (each customer's report there is a round trip to Redis per limit).
#include <algorithm>

#include "core/ids.h"
#include "engine/cluster_mode.h"
#include "engine/limits_impl.h"

namespace tally {

using engine::CustomerLimits;
using engine::Evaluation;
using engine::resolve_rule;
using engine::used_value;

const LimitState* engine::highest_limit(const LimitsReport& report, core::Decimal* percent) {
  const LimitState* best = nullptr;
  for (const LimitState& l : report.limits) {
    const std::string text = l.percent();
    core::Decimal p;
    if (text.empty() || !core::try_parse_decimal(text, &p)) {
      continue;
    }
    if (best == nullptr || p > *percent) {
      best = &l;
      *percent = p;
    }
  }
  return best;
}

// ---- reports ------------------------------------------------------------------------------------

namespace engine {

Result<std::vector<Customer>> every_customer(const Engine::Impl& d, const Engine& e) {
  if (d.cluster != nullptr) {
    return d.cluster->list_customers();
  }
  return e.list_customers();
}

void add_alert_thresholds(const config::Config& config, const core::Plan* plan, LimitsReport* out) {
  // The same choice as the alerts' evaluation (alerts.cc): the plan's own, else [alerts]'s.
  const bool own = plan != nullptr && !plan->alert_thresholds.empty();
  const std::vector<std::int64_t>& thresholds =
      own ? plan->alert_thresholds : config.alerts.thresholds;
  const std::vector<AlertLevel>& levels = own ? plan->alert_levels : config.alerts.levels;
  for (std::size_t i = 0; i < thresholds.size(); ++i) {
    out->alert_thresholds.push_back(
        AlertThreshold{thresholds[i], core::alert_level(thresholds, levels, i)});
  }
}

void add_report_limit(LimitState state, LimitsReport* out) {
  const std::string percent = state.percent();
  core::Decimal pct;
  if (!percent.empty() && core::try_parse_decimal(percent, &pct) &&
      pct > core::Decimal::from_int(kReportWarningPercent)) {
    out->warnings.push_back(state.rule() + " at " + percent + "%");
  }
  out->limits.push_back(std::move(state));
}

}  // namespace engine

Result<LimitsReport> Engine::limits_report(const std::string& customer) {
  Impl& d = *impl_;
  if (d.cluster != nullptr) {
    return d.cluster->limits_report(customer);
  }
  const core::TimeUs now = clock().now_us();
  std::shared_lock state_lock(d.state_mutex);
  const engine::CustomerState* cs = d.find_customer(customer);
  if (cs == nullptr) {
    return core::customer_not_found(customer);
  }
  LimitsReport out;
  out.customer = customer;
  const core::Plan* plan = engine::plan_of(d.config, cs->record);
  if (plan != nullptr) {
    out.plan = plan->key;
    out.features = plan->features;
  }
  engine::add_alert_thresholds(d.config, plan, &out);
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
      engine::add_report_limit(state_of(ev, i), &out);
    }
  }
  return out;
}

namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  return out;
}

// The customers of `all` whose id or name holds `needle` (in lower case; "" = every customer),
// without their usage.
std::vector<CustomerSummary> matching_customers(const config::Config& config,
                                                const std::vector<Customer>& all,
                                                const std::string& needle) {
  std::vector<CustomerSummary> rows;
  for (const Customer& c : all) {
    if (!needle.empty() && lower(c.id).find(needle) == std::string::npos &&
        lower(c.name).find(needle) == std::string::npos) {
      continue;
    }
    CustomerSummary s;
    s.id = c.id;
    s.name = c.name;
    const core::Plan* plan = engine::plan_of(config, c);
    s.plan = plan != nullptr ? plan->key : "";
    s.status = c.status;
    s.organization = c.organization;
    rows.push_back(std::move(s));
  }
  return rows;
}

// The highest limit percent of a customer now (its limits report's, exactly as shown there).
Status fill_usage(Engine& e, CustomerSummary& s) {
  Result<LimitsReport> r = e.limits_report(s.id);
  if (!r) {
    return engine::removed_meanwhile(r.error()) ? Status() : r.error();
  }
  core::Decimal percent;
  if (const LimitState* l = engine::highest_limit(*r, &percent); l != nullptr) {
    s.max_percent = l->percent();
    s.max_rule = l->rule();
  }
  return Status();
}

// Whether `a` comes before `b` by the key `sort` alone (an id sort has no key of its own).
bool key_less(CustomerSort sort, const CustomerSummary& a, const CustomerSummary& b) {
  if (sort == CustomerSort::kName && a.name != b.name) {
    return a.name < b.name;
  }
  if (sort == CustomerSort::kPlan && a.plan != b.plan) {
    return a.plan < b.plan;
  }
  if (sort == CustomerSort::kStatus && a.status != b.status) {
    return a.status < b.status;
  }
  if (sort == CustomerSort::kUsage && a.max_percent != b.max_percent) {
    // No limit sorts lowest; percents compare as exact decimals.
    if (a.max_percent.empty() || b.max_percent.empty()) {
      return a.max_percent.empty();
    }
    core::Decimal x;
    core::Decimal y;
    const bool ok =
        core::try_parse_decimal(a.max_percent, &x) && core::try_parse_decimal(b.max_percent, &y);
    if (ok && x != y) {
      return x < y;
    }
  }
  return false;
}

// By the query's key in its order, ties by id, always ascending, so pages are stable; by id,
// in the query's order.
void sort_summaries(const CustomerSummaryQuery& q, std::vector<CustomerSummary>& rows) {
  std::sort(rows.begin(), rows.end(), [&q](const CustomerSummary& a, const CustomerSummary& b) {
    if (q.sort == CustomerSort::kId) {
      return q.descending ? b.id < a.id : a.id < b.id;
    }
    if (key_less(q.sort, a, b)) {
      return !q.descending;
    }
    if (key_less(q.sort, b, a)) {
      return q.descending;
    }
    return a.id < b.id;
  });
}

}  // namespace

Result<CustomerSummaryPage> Engine::customer_summaries(const CustomerSummaryQuery& q) {
  if (q.limit == 0 || q.limit > 1000) {
    return Status::invalid_argument("limit must be 1..1000");
  }
  Result<std::vector<Customer>> all = engine::every_customer(*impl_, *this);
  if (!all) {
    return all.error();
  }
  std::vector<CustomerSummary> rows = matching_customers(impl_->config, *all, lower(q.search));
  // Sorting by usage needs every row's usage; the other sorts need only the page's.
  const bool by_usage = q.sort == CustomerSort::kUsage;
  if (by_usage) {
    for (auto& s : rows) {
      TALLY_TRY(fill_usage(*this, s));
    }
  }
  sort_summaries(q, rows);
  CustomerSummaryPage out;
  out.total = rows.size();
  const std::size_t from = std::min<std::size_t>(q.offset, rows.size());
  const std::size_t to = std::min<std::size_t>(from + q.limit, rows.size());
  for (std::size_t i = from; i < to; ++i) {
    if (!by_usage) {
      TALLY_TRY(fill_usage(*this, rows[i]));
    }
    out.customers.push_back(std::move(rows[i]));
  }
  return out;
}

}  // namespace tally
