// The scale-out mode's usage queries (see cluster_mode.h): a meter's usage of one customer or of
// every customer, by group_by and filter, whole or by window in any zone, answered as the
// embedded store answers (query.cc: the same rows, in the same order, with the same values).
//
// A query is resolved as the embedded one is (query_common.h), cut into pieces of whole UTC hours
// and minutes per window (cluster::pieces_of), and sent to every shard at once (one connection
// each; to the customer's shard alone when one customer is asked), where PostgreSQL aggregates
// them to a row per (customer, group, window) (cluster::read_grouped). A customer lives on one
// shard, so the node only projects the groups onto the properties asked, merges their states
// (core::AggState::merge, exact) and distinct values, and sorts the rows by customer, group
// values and window, as the embedded store does.
//
// Windows: minute windows from the minute rows; hour windows from each row's own hour when the
// zone's offsets are whole hours over the range, else (and for day, week and month windows) the
// calendar windows of the zone (windows_of, at most kWindowsMax), each read as its whole hours
// and its edge minutes, so a +05:30 zone's windows are exact too.
#include <algorithm>
#include <future>

#include "cluster/pg_query.h"
#include "common/assert.h"
#include "engine/cluster_mode_impl.h"
#include "engine/query_common.h"

namespace tally::engine {
namespace {

// One row of the answer being built: a (customer, projected group values) and a window.
struct Cell {
  core::AggState state;
  core::UniqueSet uniques;
};

using RowKey = std::pair<std::string, std::vector<std::string>>;
using Cells = std::map<RowKey, std::map<TimeUs, Cell>>;

// The pieces of [from, to) for `window` in `tz`, and the end of each window by its start
// (empty when windows are a fixed unit: *unit_us is set then).
Status plan_pieces(TimeUs from, TimeUs to, const std::optional<Window>& window,
                   const core::TimeZone& tz, std::vector<cluster::QueryPiece>* pieces,
                   std::map<TimeUs, TimeUs>* ends, TimeUs* unit_us) {
  *unit_us = 0;
  if (!window) {
    cluster::pieces_of(from, to, from, 0, pieces);
    (*ends)[from] = to;
    return Status();
  }
  if (*window == Window::kMinute) {
    *unit_us = core::kUsPerMinute;  // minute rows only: each is its own window
    pieces->push_back(cluster::QueryPiece{from, to, false, 0, *unit_us});
    return Status();
  }
  if (*window == Window::kHour && core::windows_align_to_hours(tz, from, to)) {
    *unit_us = core::kUsPerHour;  // hour rows, and edge minutes, each in its own hour
    cluster::pieces_of(from, to, 0, *unit_us, pieces);
    return Status();
  }
  auto spans = windows_of(from, to, *window, tz);
  if (!spans) {
    return spans.error();
  }
  for (const Span& s : *spans) {
    cluster::pieces_of(std::max(s.start, from), std::min(s.end, to), s.start, 0, pieces);
    (*ends)[s.start] = s.end;
  }
  return Status();
}

// Adds one shard's answer to the cells: each group projected onto `projection`.
void merge_shard(const cluster::GroupedUsage& usage, std::size_t group_by_size,
                 const std::vector<std::size_t>& projection, Cells* cells) {
  auto key_of = [&](const std::string& customer, const std::string& group_key) {
    RowKey key{customer, {}};
    if (!projection.empty()) {
      const std::vector<std::string_view> values = split_group(group_key, group_by_size);
      for (std::size_t i : projection) {
        key.second.emplace_back(values[i]);
      }
    }
    return key;
  };
  for (const cluster::GroupedRow& row : usage.rows) {
    (*cells)[key_of(row.customer, row.group_key)][row.window_start_us].state.merge(row.state);
  }
  for (const cluster::GroupedUnique& u : usage.uniques) {
    (*cells)[key_of(u.customer, u.group_key)][u.window_start_us].uniques.insert(u.value);
  }
}

}  // namespace

Result<std::vector<cluster::GroupedUsage>> ClusterMode::Impl::read_shards(
    const core::MeterSpec& spec, const cluster::GroupedQuery& query) {
  std::vector<std::size_t> asked;
  if (query.customer) {
    asked.push_back(cluster::shard_of(*query.customer, shards.size()));
  } else {
    for (std::size_t s = 0; s < shards.size(); ++s) {
      asked.push_back(s);
    }
  }
  auto read_shard = [this, &spec, &query](std::size_t shard) -> Result<cluster::GroupedUsage> {
    auto lease = shards[shard]->lease();
    if (!lease) {
      return lease.error();
    }
    return cluster::read_grouped(**lease, spec, query);
  };
  std::vector<std::future<Result<cluster::GroupedUsage>>> reads;
  for (std::size_t k = 1; k < asked.size(); ++k) {
    reads.push_back(std::async(std::launch::async, read_shard, asked[k]));
  }
  std::vector<Result<cluster::GroupedUsage>> answers;
  answers.push_back(read_shard(asked[0]));
  for (auto& r : reads) {
    answers.push_back(r.get());
  }
  std::vector<cluster::GroupedUsage> out;
  for (auto& answer : answers) {
    if (!answer) {
      return answer.error();
    }
    out.push_back(std::move(*answer));
  }
  return out;
}

Result<QueryResult> ClusterMode::query(const MeterQuery& q) {
  Impl& d = *impl_;
  // Resolved and refused in the embedded store's order (query.cc, plan_query). A cost or
  // credits query reads the meter's hidden cost or credits meter, aggregated from the charges
  // in the events' transaction (cluster_prices.cc) as the embedded store aggregates it.
  auto meter = query_meter(*d.catalog, q);
  if (!meter) {
    return meter.error();
  }
  const core::MeterSpec& spec = (*meter)->spec;
  std::vector<std::size_t> projection;
  std::vector<std::pair<std::size_t, std::string>> filters;
  TALLY_TRY(resolve_query_groups(spec, q, &projection, &filters));
  std::optional<Customer> only;
  if (!q.customer.empty()) {
    auto c = d.read_customer(q.customer);
    if (!c) {
      return c.error();
    }
    only = std::move(*c);
  }
  const core::TimeZone customer_tz = only ? period_context_of(*only).tz : core::TimeZone();
  auto zone = query_zone(q, only ? &customer_tz : nullptr);
  if (!zone) {
    return zone.error();
  }
  const core::TimeZone tz = *zone;
  const TimeUs from = core::floor_to(q.from_us, core::kUsPerMinute);
  const TimeUs to = core::ceil_to(q.to_us, core::kUsPerMinute);
  if (to <= from) {
    return Status::invalid_argument("'to' must be after 'from'");
  }

  cluster::GroupedQuery gq;
  if (only) {
    gq.customer = q.customer;
  }
  gq.filters = filters;
  std::map<TimeUs, TimeUs> ends;
  TimeUs unit_us = 0;
  TALLY_TRY(plan_pieces(from, to, q.window, tz, &gq.pieces, &ends, &unit_us));

  auto answers = d.read_shards(spec, gq);
  if (!answers) {
    return answers.error();
  }
  Cells cells;
  for (const auto& answer : *answers) {
    merge_shard(answer, spec.group_by.size(), projection, &cells);
  }

  QueryResult out;
  out.meter = q.meter;
  out.measure = q.measure;
  out.from_us = from;
  out.to_us = to;
  out.window = q.window;
  out.timezone = tz.name();
  for (const auto& [key, windows] : cells) {
    for (const auto& [start, cell] : windows) {
      if (cell.state.empty()) {
        continue;
      }
      QueryRow row;
      row.window_start_us = start;
      row.window_end_us = unit_us != 0 ? start + unit_us : ends.at(start);
      row.customer = key.first;
      for (std::size_t i = 0; i < projection.size(); ++i) {
        row.group.emplace_back(q.group_by[i], key.second[i]);
      }
      row.value = query_value_text(spec.aggregation, cell.state, &cell.uniques);
      out.rows.push_back(std::move(row));
      if (out.rows.size() > kQueryRowsMax) {
        return query_too_large(q.window.has_value());
      }
    }
  }
  return out;
}

Status ClusterMode::window_states(const core::MeterSpec& meter, const std::string& customer,
                                  const std::vector<std::pair<std::size_t, std::string>>& filters,
                                  const std::vector<Span>& windows, TimeUs from, TimeUs to,
                                  std::vector<core::AggState>* states,
                                  std::vector<core::UniqueSet>* uniques) {
  states->assign(windows.size(), core::AggState{});
  uniques->assign(windows.size(), core::UniqueSet{});
  cluster::GroupedQuery gq;
  if (!customer.empty()) {
    gq.customer = customer;
  }
  gq.filters = filters;
  std::vector<TimeUs> starts;
  for (const Span& s : windows) {
    cluster::pieces_of(std::max(s.start, from), std::min(s.end, to), s.start, 0, &gq.pieces);
    starts.push_back(s.start);
  }
  if (gq.pieces.empty()) {
    return Status();
  }
  auto answers = impl_->read_shards(meter, gq);
  if (!answers) {
    return answers.error();
  }
  auto index_of = [&starts](TimeUs start) {
    const auto it = std::lower_bound(starts.begin(), starts.end(), start);
    TALLY_ASSERT(it != starts.end() && *it == start, "a row's window is one of the windows asked");
    return static_cast<std::size_t>(it - starts.begin());
  };
  for (const cluster::GroupedUsage& answer : *answers) {
    for (const cluster::GroupedRow& row : answer.rows) {
      (*states)[index_of(row.window_start_us)].merge(row.state);
    }
    for (const cluster::GroupedUnique& u : answer.uniques) {
      (*uniques)[index_of(u.window_start_us)].insert(u.value);
    }
  }
  return Status();
}

Result<CustomerUsage> ClusterMode::customer_usage(const std::string& customer, TimeUs from_us,
                                                  TimeUs to_us) {
  Impl& d = *impl_;
  auto c = get_customer(customer);
  if (!c) {
    return c.error();
  }
  auto tz = core::TimeZone::find(c->timezone);
  const core::TimeZone zone = tz ? *tz : core::TimeZone();
  CustomerUsage out;
  out.customer = customer;
  out.timezone = zone.name();
  if (from_us == 0 && to_us == 0) {
    const TimeUs now = d.clock->now_us();
    from_us = core::window_start(now, core::Window::kMonth, zone);
    to_us = core::window_next(from_us, core::Window::kMonth, zone);
  }
  const TimeUs from = core::floor_to(from_us, core::kUsPerMinute);
  const TimeUs to = core::ceil_to(to_us, core::kUsPerMinute);
  if (to <= from) {
    return Status::invalid_argument("'to' must be after 'from'");
  }
  out.from_us = from;
  out.to_us = to;
  auto lease = d.shard_of(customer).lease();
  if (!lease) {
    return lease.error();
  }
  cluster::UsageQuery uq;
  uq.customer = customer;
  uq.from_us = from;
  uq.to_us = to;
  auto total = [&](std::uint32_t meter, std::string* value) -> Status {
    auto usage = cluster::read_usage(**lease, d.catalog->meters[meter].spec, uq);
    if (!usage) {
      return usage.error();
    }
    *value = std::move(usage->value);
    return Status();
  };
  for (std::uint32_t i = 0; i < d.catalog->meters.size(); ++i) {
    const MeterDef& m = d.catalog->meters[i];
    if (m.hidden) {
      continue;
    }
    UsageItem item;
    item.meter = m.spec.key;
    item.aggregation = m.spec.aggregation;
    item.unit = m.spec.unit;
    TALLY_TRY(total(i, &item.value));
    if (d.catalog->cost_meter[i] != kNoMeter) {
      TALLY_TRY(total(d.catalog->cost_meter[i], &item.cost));
      TALLY_TRY(total(d.catalog->credits_meter[i], &item.credits));
    }
    out.meters.push_back(std::move(item));
  }
  return out;
}

}  // namespace tally::engine
