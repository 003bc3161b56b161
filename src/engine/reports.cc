// Read-side reports: usage history for charts, the customer usage report, organization roll-ups,
// top customers, and statistics of a meter's per-window values.
//
// Everything is answered from the in-memory minute and hour aggregates, exactly:
//  - history, the report's breakdown and the top list are built on Engine::query (one customer,
//    or one row per customer), with the windows query leaves out (no events) filled in;
//  - statistics and organization totals merge several customers into one value per window,
//    which query cannot do for min, max, avg, latest and unique_count (they are not sums of the
//    per-customer values), so they combine the same aggregates with Series::combine, the
//    primitive query itself uses, and give the same numbers query gives for one customer.
//
// Every list is bounded: at most kWindowsMax windows per series, kPeaksMax peaks, kTopMax
// customers in a top list.
#include <algorithm>
#include <optional>

#include "common/assert.h"
#include "core/ids.h"
#include "engine/cluster_mode.h"
#include "engine/engine_impl.h"

namespace tally {

using engine::common_unit;
using engine::kWindowsMax;
using engine::Span;
using engine::windows_of;

namespace {

constexpr std::size_t kDefaultWindows = 30;
constexpr std::uint32_t kPeaksMax = 100;
constexpr std::uint32_t kTopMax = 1000;

// from = to = 0: the last `windows` windows, the one holding `now` included. Otherwise the
// range aligned to minutes. Errors: kInvalidArgument when to is not after from.
Status resolve_range(core::TimeUs now, core::Window w, const core::TimeZone& tz, core::TimeUs* from,
                     core::TimeUs* to, std::size_t windows = kDefaultWindows) {
  if (*from == 0 && *to == 0) {
    *to = core::window_next(core::window_start(now, w, tz), w, tz);
    core::TimeUs start = *to;
    for (std::size_t i = 0; i < windows; ++i) {
      start = core::window_start(start - 1, w, tz);
    }
    *from = start;
    return Status();
  }
  *from = core::floor_to(*from, core::kUsPerMinute);
  *to = core::ceil_to(*to, core::kUsPerMinute);
  if (*to <= *from) {
    return Status::invalid_argument("'to' must be after 'from'");
  }
  return Status();
}

Result<core::TimeZone> zone_named(const std::string& name, const core::TimeZone& fallback) {
  if (name.empty()) {
    return fallback;
  }
  return core::TimeZone::find(name);
}

// The value a window without events has: 0 for count, sum and unique_count; none otherwise.
std::string empty_value(core::Aggregation a) {
  core::Decimal v;
  return core::aggregate_value(a, core::AggState{}, nullptr, &v) ? core::format_decimal(v)
                                                                 : std::string();
}

// a / b * 100 with two decimals, rounded half to even; "" when b is 0.
std::string percent_of(core::Decimal a, core::Decimal b) {
  if (b.units == 0) {
    return {};
  }
  const bool negative = (a.units < 0) != (b.units < 0) && a.units != 0;
  const __int128 x = a.units < 0 ? -a.units : a.units;
  const __int128 y = b.units < 0 ? -b.units : b.units;
  __int128 q = 0;  // hundredths of a percent
  // x * 10^4 / y exactly while it fits in 128 bits (|a| < 1e25), else at 1e-9 first.
  constexpr __int128 kExactMax = static_cast<__int128>(1'000'000'000'000'000'000) * 10'000'000;
  if (x < kExactMax) {
    const __int128 scaled = x * 10'000;
    q = scaled / y;
    const __int128 r = scaled % y;
    if (r * 2 > y || (r * 2 == y && q % 2 != 0)) {
      ++q;
    }
  } else {
    core::Decimal ratio;
    if (!core::divide_decimal_half_even(core::Decimal{x}, core::Decimal{y}, &ratio)) {
      return {};
    }
    // ratio * 100 in hundredths: units / 1e5, half to even.
    q = ratio.units / 100'000;
    const __int128 r = ratio.units % 100'000;
    if (r * 2 > 100'000 || (r * 2 == 100'000 && q % 2 != 0)) {
      ++q;
    }
  }
  const __int128 whole = q / 100;
  const int frac = static_cast<int>(q % 100);
  std::string out = negative && q != 0 ? "-" : "";
  out += core::format_decimal(core::Decimal::from_int(static_cast<std::int64_t>(whole)));
  out += frac < 10 ? ".0" : ".";
  out += std::to_string(frac);
  return out;
}

struct Acc {
  core::AggState st;
  core::UniqueSet u;
};

// Adds every series of the meter (of `only`, or of every customer) whose group passes the
// filters into one accumulator per window of `windows`, counting only [from, to).
// REQUIRES: state_mutex held; windows cover [from, to) in order. Errors: Series::combine's.
Status accumulate(const Engine::Impl& d, const engine::MeterDef& def,
                  const engine::CustomerState* only,
                  const std::vector<std::pair<std::size_t, std::string>>& filters,
                  const std::vector<Span>& windows, core::TimeUs from, core::TimeUs to,
                  std::vector<Acc>* acc) {
  const engine::MeterAggregates& m = d.meter_aggregates[d.catalog->index_of(&def)];
  const bool want_uniques = def.spec.aggregation == core::Aggregation::kUniqueCount;
  auto passes = [&](std::uint32_t gid) {
    if (filters.empty()) {
      return true;
    }
    const auto values = engine::split_group(d.group_texts[gid], def.spec.group_by.size());
    for (const auto& [idx, v] : filters) {
      if (values[idx] != v) {
        return false;
      }
    }
    return true;
  };
  // When windows fall on whole days or hours, each series is one ordered walk over its day or
  // hour sums, each going to the window that holds it, instead of a lookup per window.
  const core::TimeUs unit = want_uniques || windows.empty() ? 0 : common_unit(windows, from, to);
  auto walk = [&](const auto& sums) {
    std::size_t w = 0;
    sums.for_each(unit, from, to, [&](core::TimeUs start, const core::AggState& st) {
      while (windows[w].end <= start) {
        ++w;
      }
      (*acc)[w].st.merge(st);
    });
  };
  if (only == nullptr && unit != 0) {
    // Every customer: the sums of each group over all of them, kept as usage is installed.
    for (const auto& [gid, t] : m.totals) {
      if (passes(gid)) {
        walk(t);
      }
    }
    return Status();
  }
  for (const auto& [cnum, by_group] : m.series) {
    if (only != nullptr && cnum != only->num) {
      continue;
    }
    for (const auto& [gid, s] : by_group) {
      if (!passes(gid)) {
        continue;
      }
      if (unit != 0) {
        walk(s);
        continue;
      }
      // Jump from one minute with data to the next window holding some.
      core::TimeUs t = from;
      for (;;) {
        auto at = s.next_minute(t, to);
        if (!at) {
          return at.error();
        }
        if (!*at) {
          break;
        }
        const auto w =
            std::upper_bound(windows.begin(), windows.end(), **at,
                             [](core::TimeUs x, const Span& sp) { return x < sp.start; });
        TALLY_DASSERT(w != windows.begin(), "windows cover [from, to)");
        if (w == windows.begin()) {
          break;
        }
        const Span& span = *(w - 1);
        Acc& a = (*acc)[static_cast<std::size_t>(w - 1 - windows.begin())];
        TALLY_TRY(s.combine(std::max(span.start, from), std::min(span.end, to), want_uniques, &a.st,
                            &a.u));
        t = span.end;
      }
    }
  }
  return Status();
}

// Per-window values of one meter: nullopt for windows without a value.
std::vector<std::optional<core::Decimal>> values_of(core::Aggregation a,
                                                    const std::vector<Acc>& acc) {
  std::vector<std::optional<core::Decimal>> out;
  out.reserve(acc.size());
  for (const auto& x : acc) {
    core::Decimal v;
    if (core::aggregate_value(a, x.st, &x.u, &v)) {
      out.emplace_back(v);
    } else {
      out.emplace_back(std::nullopt);
    }
  }
  return out;
}

std::vector<TrendPoint> trend_of(const std::vector<Span>& windows,
                                 const std::vector<std::optional<core::Decimal>>& values) {
  std::vector<TrendPoint> out;
  for (std::size_t i = 1; i < windows.size(); ++i) {
    TrendPoint p;
    p.window_start_us = windows[i].start;
    p.window_end_us = windows[i].end;
    const auto& cur = values[i];
    const auto& prev = values[i - 1];
    if (cur) {
      p.value = core::format_decimal(*cur);
    }
    if (prev) {
      p.previous = core::format_decimal(*prev);
    }
    if (cur && prev) {
      p.change = core::format_decimal(*cur - *prev);
      p.change_percent = percent_of(*cur - *prev, *prev);
    }
    out.push_back(std::move(p));
  }
  return out;
}

// The value of nearest rank: the smallest value with at least p% of the values at or below it,
// i.e. sorted[ceil(p * n / 100) - 1]. REQUIRES: sorted is not empty, 0 < p <= 100.
core::Decimal nearest_rank(const std::vector<core::Decimal>& sorted, std::size_t p) {
  const std::size_t n = sorted.size();
  TALLY_DASSERT(n > 0 && p > 0 && p <= 100, "a percentile of values");
  const std::size_t rank = (p * n + 99) / 100;
  return sorted[std::max<std::size_t>(rank, 1) - 1];
}

}  // namespace

// ---- history --------------------------------------------------------------------------------

namespace {

// The customer's zone for the history (q.timezone, else its own) and the meter's aggregation and
// unit in *out, once the customer, the meter and the group-by property are known.
Status history_subject(const Engine::Impl& d, const HistoryQuery& q, core::TimeZone* tz,
                       UsageHistory* out) {
  core::TimeZone customer_tz;
  if (d.cluster != nullptr) {
    // The customer's row, read from its shard (kNotFound as below).
    auto c = d.cluster->get_customer(q.customer);
    if (!c) {
      return c.error();
    }
    auto found = core::TimeZone::find(c->timezone);
    customer_tz = found ? *found : core::TimeZone();
  }
  std::shared_lock lock(d.state_mutex);
  if (d.cluster == nullptr) {
    const engine::CustomerState* cs = d.find_customer(q.customer);
    if (cs == nullptr) {
      return core::customer_not_found(q.customer);
    }
    customer_tz = cs->tz;
  }
  const engine::MeterDef* m = d.catalog->find(q.meter);
  if (m == nullptr) {
    return Status::not_found("meter '" + q.meter + "' does not exist");
  }
  if (!q.group_by.empty() && std::find(m->spec.group_by.begin(), m->spec.group_by.end(),
                                       q.group_by) == m->spec.group_by.end()) {
    return Status::invalid_argument("group_by '" + q.group_by +
                                    "' is not a group-by property of meter '" + q.meter + "'");
  }
  auto z = zone_named(q.timezone, customer_tz);
  if (!z) {
    return z.error();
  }
  *tz = *z;
  out->aggregation = m->spec.aggregation;
  out->unit = m->spec.unit;
  return Status();
}

// One value per window: a row's (rows in window order, each starting a window) or `zero`.
std::vector<WindowValue> window_values(const std::vector<Span>& windows,
                                       const std::vector<const QueryRow*>& rows,
                                       const std::string& zero) {
  std::vector<WindowValue> data;
  data.reserve(windows.size());
  auto r = rows.begin();
  for (const Span& sp : windows) {
    WindowValue v{sp.start, sp.end, zero};
    while (r != rows.end() && (*r)->window_start_us < sp.start) {
      ++r;  // not expected: query's windows are these windows
    }
    if (r != rows.end() && (*r)->window_start_us == sp.start) {
      v.value = (*r)->value;
      ++r;
    }
    data.push_back(std::move(v));
  }
  return data;
}

// A series per group of `grouped`'s rows, which come ordered by group value, then window start.
std::vector<HistorySeries> group_series(const QueryResult& grouped,
                                        const std::vector<Span>& windows, const std::string& zero) {
  std::vector<HistorySeries> out;
  std::size_t i = 0;
  while (i < grouped.rows.size()) {
    std::vector<const QueryRow*> one;
    const auto& group = grouped.rows[i].group;
    while (i < grouped.rows.size() && grouped.rows[i].group == group) {
      one.push_back(&grouped.rows[i]);
      ++i;
    }
    HistorySeries s;
    s.group = group;
    s.data = window_values(windows, one, zero);
    out.push_back(std::move(s));
  }
  return out;
}

}  // namespace

Result<UsageHistory> Engine::usage_history(const HistoryQuery& q) const {
  const Impl& d = *impl_;
  UsageHistory out;
  core::TimeZone tz;
  TALLY_TRY(history_subject(d, q, &tz, &out));
  core::TimeUs from = q.from_us;
  core::TimeUs to = q.to_us;
  if (q.windows == 0 || q.windows > kWindowsMax) {
    return Status::invalid_argument("'windows' must be 1.." + std::to_string(kWindowsMax));
  }
  TALLY_TRY(resolve_range(d.clock->now_us(), q.window, tz, &from, &to, q.windows));
  auto windows = windows_of(from, to, q.window, tz);
  if (!windows) {
    return windows.error();
  }
  out.customer = q.customer;
  out.meter = q.meter;
  out.window = q.window;
  out.timezone = tz.name();
  out.from_us = from;
  out.to_us = to;

  const std::string zero = empty_value(out.aggregation);
  MeterQuery mq;
  mq.meter = q.meter;
  mq.customer = q.customer;
  mq.from_us = from;
  mq.to_us = to;
  mq.window = out.window;
  mq.timezone = out.timezone;
  auto total = query(mq);
  if (!total) {
    return total.error();
  }
  std::vector<const QueryRow*> rows;
  for (const auto& row : total->rows) {
    rows.push_back(&row);
  }
  out.data = window_values(*windows, rows, zero);
  if (!q.group_by.empty()) {
    mq.group_by = {q.group_by};
    auto grouped = query(mq);
    if (!grouped) {
      return grouped.error();
    }
    out.groups = group_series(*grouped, *windows, zero);
  }
  return out;
}

// ---- the usage report -----------------------------------------------------------------------

// Built from the public methods alone (the customer, its limits report, its usage and meter
// queries), so the cluster mode answers it as the embedded store does.
Result<UsageReport> Engine::usage_report(const std::string& customer, const std::string& group_by) {
  UsageReport out;
  auto c = get_customer(customer);
  if (!c) {
    return c.error();
  }
  out.customer = std::move(*c);
  auto limits = limits_report(customer);
  if (!limits) {
    return limits.error();
  }
  out.plan = limits->plan;
  out.limits = std::move(limits->limits);
  out.warnings = std::move(limits->warnings);
  auto usage = customer_usage(customer, 0, 0);
  if (!usage) {
    return usage.error();
  }
  out.current_period = std::move(*usage);

  bool property_seen = group_by.empty();
  for (const MeterInfo& m : meters()) {
    std::string property;
    if (group_by.empty()) {
      if (m.group_by.empty()) {
        continue;
      }
      property = m.group_by.front();
    } else if (std::find(m.group_by.begin(), m.group_by.end(), group_by) != m.group_by.end()) {
      property = group_by;
      property_seen = true;
    } else {
      continue;
    }
    MeterQuery mq;
    mq.meter = m.key;
    mq.customer = customer;
    mq.from_us = out.current_period.from_us;
    mq.to_us = out.current_period.to_us;
    mq.group_by = {property};
    auto r = query(mq);
    if (!r) {
      return r.error();
    }
    Breakdown b;
    b.meter = m.key;
    b.property = property;
    b.aggregation = m.aggregation;
    b.unit = m.unit;
    // A share of the total means something only where the total is the sum of the groups.
    const bool sums = m.aggregation == Aggregation::kCount || m.aggregation == Aggregation::kSum;
    core::Decimal total;
    std::vector<std::pair<core::Decimal, BreakdownItem>> items;
    for (const auto& row : r->rows) {
      BreakdownItem item;
      item.value = row.group.empty() ? std::string() : row.group.front().second;
      item.usage = row.value;
      core::Decimal v;
      if (!core::try_parse_decimal(row.value, &v)) {
        v = core::Decimal{};
      }
      total += v;
      items.emplace_back(v, std::move(item));
    }
    std::stable_sort(items.begin(), items.end(),
                     [](const auto& x, const auto& y) { return x.first > y.first; });
    for (auto& [v, item] : items) {
      if (sums) {
        item.percent = percent_of(v, total);
      }
      b.groups.push_back(std::move(item));
    }
    out.breakdown.push_back(std::move(b));
  }
  if (!property_seen) {
    return Status::invalid_argument("group_by '" + group_by +
                                    "' is not a group-by property of any meter");
  }
  return out;
}

// ---- organizations and top customers --------------------------------------------------------

Result<OrganizationUsage> Engine::organization_usage(const std::string& organization,
                                                     TimeUs from_us, TimeUs to_us,
                                                     const std::string& timezone) const {
  const Impl& d = *impl_;
  auto tz = zone_named(timezone, core::TimeZone());
  if (!tz) {
    return tz.error();
  }
  core::TimeUs from = from_us;
  core::TimeUs to = to_us;
  if (from == 0 && to == 0) {
    from = core::window_start(d.clock->now_us(), core::Window::kMonth, *tz);
    to = core::window_next(from, core::Window::kMonth, *tz);
  }
  TALLY_TRY(resolve_range(0, core::Window::kMonth, *tz, &from, &to));

  // The members: in the scale-out mode every shard's customers (an organization's members may
  // live on several), else the customers in memory, read under the lock held to the end.
  struct Member {
    std::string id;
    std::string zone;
    std::uint32_t num = 0;  // the embedded store's customer number
  };

  std::vector<Member> members;
  std::shared_lock lock(d.state_mutex, std::defer_lock);
  if (d.cluster != nullptr) {
    auto all = d.cluster->list_customers();
    if (!all) {
      return all.error();
    }
    for (const Customer& c : *all) {
      if (!organization.empty() && c.organization == organization) {
        auto zone = core::TimeZone::find(c.timezone);
        members.push_back({c.id, zone ? zone->name() : core::TimeZone().name(), 0});
      }
    }
  } else {
    lock.lock();
    for (const auto& [num, cs] : d.customers) {
      if (!organization.empty() && cs.record.organization == organization) {
        members.push_back({cs.record.id, cs.tz.name(), num});
      }
    }
  }
  if (members.empty()) {
    return Status::not_found("organization '" + organization + "' has no customers");
  }
  std::sort(members.begin(), members.end(),
            [](const Member& a, const Member& b) { return a.id < b.id; });
  OrganizationUsage out;
  out.organization = organization;
  out.from_us = from;
  out.to_us = to;
  out.timezone = tz->name();
  for (const Member& member : members) {
    out.customers.push_back(member.id);
    CustomerUsage cu;
    cu.customer = member.id;
    cu.from_us = from;
    cu.to_us = to;
    cu.timezone = member.zone;
    out.by_customer.push_back(std::move(cu));
  }
  for (std::uint32_t meter = 0; meter < d.catalog->meters.size(); ++meter) {
    const engine::MeterDef& m = d.catalog->meters[meter];
    if (m.hidden) {
      continue;
    }
    const bool want_uniques = m.spec.aggregation == core::Aggregation::kUniqueCount;
    Acc org;
    UsageItem item;
    item.meter = m.spec.key;
    item.aggregation = m.spec.aggregation;
    item.unit = m.spec.unit;
    for (std::size_t i = 0; i < members.size(); ++i) {
      Acc one;
      if (d.cluster != nullptr) {
        // The member's state over [from, to), read from its shard.
        std::vector<core::AggState> states;
        std::vector<core::UniqueSet> uniques;
        TALLY_TRY(d.cluster->window_states(m.spec, members[i].id, {}, {engine::Span{from, to}},
                                           from, to, &states, &uniques));
        one.st = states[0];
        if (want_uniques) {
          one.u = std::move(uniques[0]);
        }
      } else {
        TALLY_TRY(engine::combine_customer(d.meter_aggregates[meter], members[i].num, from, to,
                                           want_uniques, &one.st, &one.u));
      }
      UsageItem mine = item;
      core::Decimal v;
      if (core::aggregate_value(m.spec.aggregation, one.st, &one.u, &v)) {
        mine.value = core::format_decimal(v);
      }
      out.by_customer[i].meters.push_back(std::move(mine));
      org.st.merge(one.st);
      if (want_uniques) {
        org.u.insert(one.u.begin(), one.u.end());
      }
    }
    core::Decimal v;
    if (core::aggregate_value(m.spec.aggregation, org.st, &org.u, &v)) {
      item.value = core::format_decimal(v);
    }
    out.meters.push_back(std::move(item));
  }
  return out;
}

Result<TopUsage> Engine::top_customers(const std::string& meter, std::optional<Window> period,
                                       TimeUs from_us, TimeUs to_us, const std::string& timezone,
                                       std::uint32_t n) const {
  const Impl& d = *impl_;
  if (n == 0 || n > kTopMax) {
    return Status::invalid_argument("n must be 1.." + std::to_string(kTopMax));
  }
  auto tz = zone_named(timezone, core::TimeZone());
  if (!tz) {
    return tz.error();
  }
  TopUsage out;
  core::TimeUs from = from_us;
  core::TimeUs to = to_us;
  if (period) {
    from = core::window_start(d.clock->now_us(), *period, *tz);
    to = core::window_next(from, *period, *tz);
    out.period = period;
  }
  MeterQuery mq;
  mq.meter = meter;
  mq.from_us = from;
  mq.to_us = to;
  mq.timezone = tz->name();
  auto r = query(mq);
  if (!r) {
    return r.error();
  }
  out.meter = meter;
  out.from_us = r->from_us;
  out.to_us = r->to_us;
  out.timezone = r->timezone;
  std::vector<std::pair<core::Decimal, const QueryRow*>> ranked;
  for (const auto& row : r->rows) {
    core::Decimal v;
    if (core::try_parse_decimal(row.value, &v)) {
      ranked.emplace_back(v, &row);
    }
  }
  // Rows come ordered by customer id: a stable sort keeps ties in id order.
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  if (ranked.size() > n) {
    ranked.resize(n);
  }
  // The scale-out mode reads the names of the customers ranked from their shards.
  std::vector<std::string> cluster_names;
  for (const auto& [v, row] : ranked) {
    if (d.cluster != nullptr) {
      auto c = d.cluster->get_customer(row->customer);
      cluster_names.push_back(c ? c->name : row->customer);
    }
  }
  std::shared_lock lock(d.state_mutex);
  if (const auto* m = d.catalog->find(meter); m != nullptr) {
    out.aggregation = m->spec.aggregation;
    out.unit = m->spec.unit;
  }
  for (std::size_t i = 0; i < ranked.size(); ++i) {
    const QueryRow* row = ranked[i].second;
    TopCustomer t;
    t.customer = row->customer;
    const auto* cs = d.find_customer(row->customer);
    t.name = d.cluster != nullptr ? cluster_names[i]
             : cs != nullptr      ? cs->record.name
                                  : row->customer;
    t.value = row->value;
    out.customers.push_back(std::move(t));
  }
  return out;
}

// ---- statistics -----------------------------------------------------------------------------

namespace {

using Values = std::vector<std::optional<core::Decimal>>;
using Filters = std::vector<std::pair<std::size_t, std::string>>;  // group-by index, value

// q.filter as (index of the meter's group-by property, value) pairs.
Result<Filters> stats_filters(const engine::MeterDef& m, const StatsQuery& q) {
  Filters filters;
  for (const auto& [k, v] : q.filter) {
    auto it = std::find(m.spec.group_by.begin(), m.spec.group_by.end(), k);
    if (it == m.spec.group_by.end()) {
      return Status::invalid_argument("filter '" + k + "' is not a group-by property of meter '" +
                                      q.meter + "'");
    }
    filters.emplace_back(static_cast<std::size_t>(it - m.spec.group_by.begin()), v);
  }
  return filters;
}

// The windows with data, and the count, sum, average, extremes and percentiles of the values.
void add_distribution(const Values& values, const std::vector<Acc>& acc, MeterStats* out) {
  std::vector<core::Decimal> sorted;
  core::Decimal sum;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (!acc[i].st.empty()) {
      ++out->windows_with_data;
    }
    if (values[i]) {
      sorted.push_back(*values[i]);
      sum += *values[i];
    }
  }
  std::sort(sorted.begin(), sorted.end());
  out->count = sorted.size();
  if (!sorted.empty()) {
    out->sum = core::format_decimal(sum);
    out->avg =
        core::format_decimal(core::divide_half_even(sum, static_cast<std::int64_t>(sorted.size())));
    out->min = core::format_decimal(sorted.front());
    out->max = core::format_decimal(sorted.back());
    out->median = core::format_decimal(nearest_rank(sorted, 50));
    out->p95 = core::format_decimal(nearest_rank(sorted, 95));
    out->p99 = core::format_decimal(nearest_rank(sorted, 99));
  }
}

// The days of [from, to) in `tz` (the last kWindowsMax of them), in order.
std::vector<Span> days_of(core::TimeUs from, core::TimeUs to, const core::TimeZone& tz) {
  std::vector<Span> days;
  for (core::TimeUs ds = core::window_start(to - 1, core::Window::kDay, tz);
       days.size() < kWindowsMax;) {
    days.push_back(Span{ds, core::window_next(ds, core::Window::kDay, tz)});
    if (ds <= from) {
      break;
    }
    ds = core::window_start(ds - 1, core::Window::kDay, tz);
  }
  std::reverse(days.begin(), days.end());
  return days;
}

// Up to `n` windows with events, largest value first, earlier first among equals.
std::vector<WindowValue> peaks_of(const std::vector<Span>& windows, const Values& values,
                                  const std::vector<Acc>& acc, std::size_t n) {
  std::vector<std::size_t> order;
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (values[i] && !acc[i].st.empty()) {
      order.push_back(i);
    }
  }
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return *values[a] > *values[b]; });
  std::vector<WindowValue> peaks;
  for (std::size_t i = 0; i < order.size() && i < n; ++i) {
    const Span& sp = windows[order[i]];
    peaks.push_back(WindowValue{sp.start, sp.end, core::format_decimal(*values[order[i]])});
  }
  return peaks;
}

}  // namespace

Result<MeterStats> Engine::meter_stats(const StatsQuery& q) const {
  const Impl& d = *impl_;
  if (q.peaks_max > kPeaksMax) {
    return Status::invalid_argument("peaks must be 0.." + std::to_string(kPeaksMax));
  }
  const core::Window w = q.window;
  std::shared_lock lock(d.state_mutex);
  const engine::MeterDef* m = d.catalog->find(q.meter);
  if (m == nullptr) {
    return Status::not_found("meter '" + q.meter + "' does not exist");
  }
  const engine::CustomerState* only = nullptr;
  core::TimeZone customer_tz;
  if (!q.customer.empty() && d.cluster != nullptr) {
    auto c = d.cluster->get_customer(q.customer);  // kNotFound as below
    if (!c) {
      return c.error();
    }
    auto z = core::TimeZone::find(c->timezone);
    customer_tz = z ? *z : core::TimeZone();
  } else if (!q.customer.empty()) {
    only = d.find_customer(q.customer);
    if (only == nullptr) {
      return core::customer_not_found(q.customer);
    }
    customer_tz = only->tz;
  }
  auto filters = stats_filters(*m, q);
  if (!filters) {
    return filters.error();
  }
  auto tz = zone_named(q.timezone, customer_tz);
  if (!tz) {
    return tz.error();
  }
  core::TimeUs from = q.from_us;
  core::TimeUs to = q.to_us;
  TALLY_TRY(resolve_range(d.clock->now_us(), w, *tz, &from, &to));
  auto windows = windows_of(from, to, w, *tz);
  if (!windows) {
    return windows.error();
  }
  const core::Aggregation agg = m->spec.aggregation;

  MeterStats out;
  out.meter = q.meter;
  out.aggregation = agg;
  out.unit = m->spec.unit;
  out.customer = q.customer;
  out.window = w;
  out.timezone = tz->name();
  out.from_us = from;
  out.to_us = to;
  out.windows = windows->size();

  // The embedded store's series, or the scale-out mode's shards, summed per window.
  auto fill = [&](const std::vector<Span>& spans, core::TimeUs a, std::vector<Acc>* acc) {
    if (d.cluster == nullptr) {
      return accumulate(d, *m, only, *filters, spans, a, to, acc);
    }
    std::vector<core::AggState> states;
    std::vector<core::UniqueSet> uniques;
    TALLY_TRY(
        d.cluster->window_states(m->spec, q.customer, *filters, spans, a, to, &states, &uniques));
    for (std::size_t i = 0; i < spans.size(); ++i) {
      (*acc)[i].st = states[i];
      (*acc)[i].u = std::move(uniques[i]);
    }
    return Status();
  };
  std::vector<Acc> acc(windows->size());
  TALLY_TRY(fill(*windows, from, &acc));
  const Values values = values_of(agg, acc);
  add_distribution(values, acc, &out);
  out.window_over_window = trend_of(*windows, values);
  // Day over day: the days of the range, however the range is windowed.
  if (w == core::Window::kDay) {
    out.day_over_day = out.window_over_window;
  } else {
    const std::vector<Span> days = days_of(from, to, *tz);
    std::vector<Acc> day_acc(days.size());
    TALLY_TRY(fill(days, std::max(from, days.front().start), &day_acc));
    out.day_over_day = trend_of(days, values_of(agg, day_acc));
  }
  out.peaks = peaks_of(*windows, values, acc, q.peaks_max);
  return out;
}

}  // namespace tally
