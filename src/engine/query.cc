// Reads: meter queries, customer usage and stored-event listings, all answered from memory
// except the event listing, which reads the event blocks of the store.
//
// A range [from, to) is assembled from whole hour aggregates plus the minute aggregates of its
// ragged edges, so any window of any time zone (including +05:30 zones, whose days start at
// half past a UTC hour) is exact. `from` is aligned down and `to` up to whole minutes.
#include <algorithm>
#include <charconv>
#include <cinttypes>
#include <cstdio>
#include <utility>

#include "core/ids.h"
#include "engine/cluster_mode.h"
#include "engine/engine_impl.h"
#include "engine/query_common.h"

namespace tally {

namespace engine {

Result<const MeterDef*> query_meter(const Catalog& catalog, const MeterQuery& q) {
  const MeterDef* m = catalog.find(q.meter);
  if (m == nullptr) {
    return Status::not_found("meter '" + q.meter + "' does not exist");
  }
  if (q.measure == Measure::kUnits) {
    return m;
  }
  const std::uint32_t base = catalog.index_of(m);
  const std::uint32_t hidden =
      (q.measure == Measure::kCost ? catalog.cost_meter : catalog.credits_meter)[base];
  if (hidden == kNoMeter) {
    return Status::invalid_argument("meter '" + q.meter + "' has no price, so no " +
                                    std::string(to_string(q.measure)));
  }
  return &catalog.meters[hidden];
}

Result<core::TimeZone> query_zone(const MeterQuery& q, const core::TimeZone* customer_tz) {
  if (!q.timezone.empty()) {
    return core::TimeZone::find(q.timezone);
  }
  return customer_tz != nullptr ? *customer_tz : core::TimeZone();
}

Status resolve_query_groups(const core::MeterSpec& spec, const MeterQuery& q,
                            std::vector<std::size_t>* projection,
                            std::vector<std::pair<std::size_t, std::string>>* filters) {
  for (const auto& g : q.group_by) {
    auto it = std::find(spec.group_by.begin(), spec.group_by.end(), g);
    if (it == spec.group_by.end()) {
      return Status::invalid_argument("group_by '" + g + "' is not a group-by property of meter '" +
                                      spec.key + "'");
    }
    projection->push_back(static_cast<std::size_t>(it - spec.group_by.begin()));
  }
  for (const auto& [k, v] : q.filter) {
    auto it = std::find(spec.group_by.begin(), spec.group_by.end(), k);
    if (it == spec.group_by.end()) {
      return Status::invalid_argument("filter '" + k + "' is not a group-by property of meter '" +
                                      spec.key + "'");
    }
    filters->emplace_back(static_cast<std::size_t>(it - spec.group_by.begin()), v);
  }
  return Status();
}

Status query_too_large(bool windowed) {
  const std::string rows = "the query has more than " + std::to_string(kQueryRowsMax) + " rows";
  return Status::invalid_argument(
      windowed ? rows + "; narrow the range or use a larger window"
               : rows +
                     " (one per customer and group); narrow the range, name a customer, "
                     "add filters or group by fewer properties",
      std::string(kQueryTooLargeDetails));
}

std::string query_value_text(core::Aggregation a, const core::AggState& s,
                             const core::UniqueSet* uniques) {
  core::Decimal v;
  if (!core::aggregate_value(a, s, uniques, &v)) {
    return {};
  }
  return core::format_decimal(v);
}

Status combine_customer(const MeterAggregates& m, std::uint32_t customer_num, core::TimeUs a,
                        core::TimeUs b, bool want_uniques, core::AggState* state,
                        core::UniqueSet* uniques) {
  auto it = m.series.find(customer_num);
  if (it == m.series.end()) {
    return Status();
  }
  for (const auto& [gid, series] : it->second) {
    TALLY_TRY(series.combine(a, b, want_uniques, state, uniques));
  }
  return Status();
}

bool parse_u64(std::string_view text, std::uint64_t* out) {
  const auto r = std::from_chars(text.data(), text.data() + text.size(), *out);
  // At most 19 digits: every such number fits, and no id or cursor handed out is longer.
  return !text.empty() && text.size() <= 19 && r.ec == std::errc() &&
         r.ptr == text.data() + text.size();
}

Status parse_cursor(const std::string& cursor, std::uint64_t* after) {
  *after = 0;
  if (!cursor.empty() && !parse_u64(cursor, after)) {
    return Status::invalid_argument("cursor '" + cursor + "' is not a cursor from this API");
  }
  return Status();
}

std::vector<std::string_view> split_group(std::string_view text, std::size_t n) {
  std::vector<std::string_view> out;
  out.reserve(n);
  std::size_t start = 0;
  for (std::size_t i = 0; i < n; ++i) {
    auto sep = text.find('\x1f', start);
    if (sep == std::string_view::npos) {
      out.push_back(text.substr(std::min(start, text.size())));
      start = text.size() + 1;
    } else {
      out.push_back(text.substr(start, sep - start));
      start = sep + 1;
    }
  }
  return out;
}

}  // namespace engine

namespace {

std::string value_text(core::Aggregation a, const core::AggState& s, const core::UniqueSet* u) {
  return engine::query_value_text(a, s, u);
}

// The series of one meter per (customer, projected group values), sorted by them, as query
// answers them: a flat list sorted once, whose runs of equal keys are the groups. Texts are
// views into the engine's state. REQUIRES: state_mutex held (shared).
struct QueryGroup {
  std::string_view customer;
  std::vector<std::string_view> values;  // the projected group values
  std::vector<const engine::Series*> series;
};

std::vector<QueryGroup> gather_groups(
    const engine::MeterAggregates& aggregates, const Engine::Impl& d, std::size_t group_by_size,
    const engine::CustomerState* only, const std::vector<std::size_t>& projection,
    const std::vector<std::pair<std::size_t, std::string>>& filters) {
  struct Member {
    std::string_view customer;
    std::vector<std::string_view> values;
    const engine::Series* series = nullptr;
  };

  std::vector<Member> members;
  const bool split = !filters.empty() || !projection.empty();
  for (const auto& [cnum, by_group] : aggregates.series) {
    if (only != nullptr && cnum != only->num) {
      continue;
    }
    const std::string_view customer_id = d.customers.at(cnum).record.id;
    for (const auto& [gid, series] : by_group) {
      const auto values = split ? engine::split_group(d.group_texts[gid], group_by_size)
                                : std::vector<std::string_view>();
      bool pass = true;
      for (const auto& [idx, v] : filters) {
        pass = pass && values[idx] == v;
      }
      if (!pass) {
        continue;
      }
      Member& member = members.emplace_back(Member{customer_id, {}, &series});
      for (std::size_t idx : projection) {
        member.values.push_back(values[idx]);
      }
    }
  }
  std::sort(members.begin(), members.end(), [](const Member& a, const Member& b) {
    return a.customer != b.customer ? a.customer < b.customer : a.values < b.values;
  });
  std::vector<QueryGroup> groups;
  for (Member& member : members) {
    if (groups.empty() || groups.back().customer != member.customer ||
        groups.back().values != member.values) {
      groups.push_back(QueryGroup{member.customer, std::move(member.values), {}});
    }
    groups.back().series.push_back(member.series);
  }
  return groups;
}

}  // namespace

const engine::CustomerState* Engine::Impl::find_customer(std::string_view id) const {
  auto it = customer_nums.find(id);
  if (it == customer_nums.end()) {
    return nullptr;
  }
  return &customers.at(it->second);
}

std::vector<MeterInfo> Engine::meters() const {
  std::vector<MeterInfo> out;
  for (const auto& m : impl_->catalog->meters) {
    if (m.hidden) {
      continue;
    }
    MeterInfo info;
    info.key = m.spec.key;
    info.event_type = m.spec.event_type;
    info.aggregation = m.spec.aggregation;
    info.value_property = m.spec.value_property;
    info.group_by = m.spec.group_by;
    info.filter = m.spec.filter;
    info.unit = m.spec.unit;
    info.description = m.spec.description;
    out.push_back(std::move(info));
  }
  return out;
}

namespace {

// What a query asks, checked and resolved against the catalog and the customers: the meter
// (its hidden cost or credits meter for those measures), the group-by properties it projects
// and filters by (as indexes), the customer, the zone, the window and the range on minutes.
struct QueryPlan {
  const engine::MeterDef* meter = nullptr;
  std::vector<std::size_t> projection;
  std::vector<std::pair<std::size_t, std::string>> filters;
  const engine::CustomerState* only = nullptr;  // null: every customer
  core::TimeZone tz;
  std::optional<core::Window> window;
  core::TimeUs from = 0;
  core::TimeUs to = 0;
};

// Errors: kNotFound (meter, customer), kInvalidArgument (cost or credits of a meter without a
// price, group_by, filter, zone, window, range). REQUIRES: state_mutex held (shared).
Status plan_query(const Engine::Impl& d, const MeterQuery& q, QueryPlan* plan) {
  auto meter = engine::query_meter(*d.catalog, q);
  if (!meter) {
    return meter.error();
  }
  const engine::MeterDef* m = *meter;
  const core::MeterSpec& spec = m->spec;
  // Projection and filters name group-by properties of the meter.
  std::vector<std::size_t> projection;
  std::vector<std::pair<std::size_t, std::string>> filters;
  TALLY_TRY(engine::resolve_query_groups(spec, q, &projection, &filters));
  const engine::CustomerState* only = nullptr;
  if (!q.customer.empty()) {
    only = d.find_customer(q.customer);
    if (only == nullptr) {
      return core::customer_not_found(q.customer);
    }
  }
  auto zone = engine::query_zone(q, only != nullptr ? &only->tz : nullptr);
  if (!zone) {
    return zone.error();
  }
  const core::TimeZone tz = *zone;
  const std::optional<core::Window> window = q.window;
  const core::TimeUs from = core::floor_to(q.from_us, core::kUsPerMinute);
  const core::TimeUs to = core::ceil_to(q.to_us, core::kUsPerMinute);
  if (to <= from) {
    return Status::invalid_argument("'to' must be after 'from'");
  }
  *plan = QueryPlan{m, std::move(projection), std::move(filters), only, tz, window, from, to};
  return Status();
}

// The rows of one query, a group at a time, in one of three walks (which one: Engine::query);
// each row past kQueryRowsMax refuses the whole query.
class QueryRows {
 public:
  QueryRows(const MeterQuery& q, const QueryPlan& plan, QueryResult* out)
      : q_(q),
        plan_(plan),
        want_uniques_(plan.meter->spec.aggregation == core::Aggregation::kUniqueCount),
        out_(*out) {}

  bool want_uniques() const { return want_uniques_; }

  // Windows on whole days or hours (`unit`): each series of the group is one ordered walk over
  // its day or hour sums, each going to the window (of `spans`) that holds it. `acc` has an
  // empty state per span and is left so.
  Status aligned(const QueryGroup& key, const std::vector<engine::Span>& spans, core::TimeUs unit,
                 std::vector<core::AggState>& acc) {
    for (const auto* s : key.series) {
      std::size_t w = 0;
      s->for_each(unit, plan_.from, plan_.to, [&](core::TimeUs start, const core::AggState& st) {
        while (spans[w].end <= start) {
          ++w;
        }
        acc[w].merge(st);
      });
    }
    for (std::size_t w = 0; w < acc.size(); ++w) {
      if (acc[w].empty()) {
        continue;
      }
      static const core::UniqueSet kNoUniques;
      const core::AggState st = std::exchange(acc[w], core::AggState{});
      TALLY_TRY(emit(key, spans[w].start, spans[w].end, st, kNoUniques));
    }
    return Status();
  }

  // No window: one row of the whole range.
  Status whole(const QueryGroup& key) { return combined(key, plan_.from, plan_.to); }

  // Other windows (minutes, distinct values, zones with part-hour offsets, more windows than
  // windows_of makes): a row per window with data, jumping from one minute with data to the
  // next.
  Status windowed(const QueryGroup& key) {
    const core::Window window = *plan_.window;
    const core::TimeZone& tz = plan_.tz;
    core::TimeUs t = plan_.from;
    TALLY_TRY(next_data(key, plan_.from, &t));
    while (t < plan_.to) {
      const core::TimeUs ws = core::window_start(t, window, tz);
      const core::TimeUs we = core::window_next(ws, window, tz);
      TALLY_TRY(combined(key, ws, we));
      TALLY_TRY(next_data(key, we, &t));
    }
    return Status();
  }

 private:
  // The row of [ws, we) (clipped to the range) from each series' combine, when it has data.
  Status combined(const QueryGroup& key, core::TimeUs ws, core::TimeUs we) {
    const core::TimeUs a = std::max(ws, plan_.from);
    const core::TimeUs b = std::min(we, plan_.to);
    core::AggState st;
    core::UniqueSet u;
    for (const auto* s : key.series) {
      TALLY_TRY(s->combine(a, b, want_uniques_, &st, &u));
    }
    return st.empty() ? Status() : emit(key, ws, we, st, u);
  }

  // The first minute at or after t with data in any series of the group into *out; the range's
  // end when none. Errors: Series::next_minute.
  Status next_data(const QueryGroup& key, core::TimeUs t, core::TimeUs* out) const {
    core::TimeUs best = plan_.to;
    for (const auto* s : key.series) {
      auto next = s->next_minute(t, best);
      if (!next) {
        return next.error();
      }
      if (*next) {
        best = **next;
      }
    }
    *out = best;
    return Status();
  }

  Status emit(const QueryGroup& key, core::TimeUs ws, core::TimeUs we, const core::AggState& st,
              const core::UniqueSet& u) {
    QueryRow row;
    row.window_start_us = ws;
    row.window_end_us = we;
    row.customer = std::string(key.customer);
    for (std::size_t i = 0; i < plan_.projection.size(); ++i) {
      row.group.emplace_back(q_.group_by[i], std::string(key.values[i]));
    }
    row.value = value_text(plan_.meter->spec.aggregation, st, &u);
    out_.rows.push_back(std::move(row));
    return out_.rows.size() > engine::kQueryRowsMax ? too_large() : Status();
  }

  // The row cap holds with or without a window (without one, a row per customer and group).
  Status too_large() const { return engine::query_too_large(plan_.window.has_value()); }

  const MeterQuery& q_;
  const QueryPlan& plan_;
  const bool want_uniques_;
  QueryResult& out_;
};

}  // namespace

Result<QueryResult> Engine::query(const MeterQuery& q) const {
  const Impl& d = *impl_;
  if (d.cluster != nullptr) {
    return d.cluster->query(q);
  }
  std::shared_lock lock(d.state_mutex);
  QueryPlan plan;
  TALLY_TRY(plan_query(d, q, &plan));
  QueryResult out;
  out.meter = q.meter;  // the meter asked for, also when its cost or credits were
  out.measure = q.measure;
  out.from_us = plan.from;
  out.to_us = plan.to;
  out.window = q.window;
  out.timezone = plan.tz.name();
  QueryRows rows(q, plan, &out);
  const std::vector<QueryGroup> groups =
      gather_groups(d.meter_aggregates[d.catalog->index_of(plan.meter)], d,
                    plan.meter->spec.group_by.size(), plan.only, plan.projection, plan.filters);
  // Windows on whole UTC days or hours (UTC, or a zone whose offsets are whole hours) are
  // filled by one ordered walk per series instead of searches per window.
  std::vector<engine::Span> spans;
  core::TimeUs unit = 0;
  if (plan.window && !rows.want_uniques()) {
    if (auto w = engine::windows_of(plan.from, plan.to, *plan.window, plan.tz); w) {
      spans = std::move(*w);
      unit = engine::common_unit(spans, plan.from, plan.to);
    }
  }
  std::vector<core::AggState> acc(unit != 0 ? spans.size() : 0);
  for (const QueryGroup& key : groups) {
    TALLY_TRY(unit != 0      ? rows.aligned(key, spans, unit, acc)
              : !plan.window ? rows.whole(key)
                             : rows.windowed(key));
  }
  return out;
}

Result<CustomerUsage> Engine::customer_usage(const std::string& customer, TimeUs from_us,
                                             TimeUs to_us) const {
  const Impl& d = *impl_;
  if (d.cluster != nullptr) {
    return d.cluster->customer_usage(customer, from_us, to_us);
  }
  std::shared_lock lock(d.state_mutex);
  const engine::CustomerState* cs = d.find_customer(customer);
  if (cs == nullptr) {
    return core::customer_not_found(customer);
  }
  CustomerUsage out;
  out.customer = customer;
  out.timezone = cs->tz.name();
  if (from_us == 0 && to_us == 0) {
    const core::TimeUs now = d.clock->now_us();
    from_us = core::window_start(now, core::Window::kMonth, cs->tz);
    to_us = core::window_next(from_us, core::Window::kMonth, cs->tz);
  }
  const core::TimeUs from = core::floor_to(from_us, core::kUsPerMinute);
  const core::TimeUs to = core::ceil_to(to_us, core::kUsPerMinute);
  if (to <= from) {
    return Status::invalid_argument("'to' must be after 'from'");
  }
  out.from_us = from;
  out.to_us = to;
  auto total = [&](std::uint32_t meter) -> Result<std::string> {
    const core::Aggregation agg = d.catalog->meters[meter].spec.aggregation;
    core::AggState st;
    core::UniqueSet u;
    const bool want_uniques = agg == core::Aggregation::kUniqueCount;
    TALLY_TRY(engine::combine_customer(d.meter_aggregates[meter], cs->num, from, to, want_uniques,
                                       &st, &u));
    return value_text(agg, st, &u);
  };
  for (std::uint32_t i = 0; i < d.catalog->meters.size(); ++i) {
    const engine::MeterDef& m = d.catalog->meters[i];
    if (m.hidden) {
      continue;
    }
    UsageItem item;
    item.meter = m.spec.key;
    item.aggregation = m.spec.aggregation;
    item.unit = m.spec.unit;
    auto value = total(i);
    if (!value) {
      return value.error();
    }
    item.value = std::move(*value);
    if (d.catalog->cost_meter[i] != engine::kNoMeter) {
      auto cost = total(d.catalog->cost_meter[i]);
      auto credits = total(d.catalog->credits_meter[i]);
      if (!cost || !credits) {
        return !cost ? cost.error() : credits.error();
      }
      item.cost = std::move(*cost);
      item.credits = std::move(*credits);
    }
    out.meters.push_back(std::move(item));
  }
  return out;
}

namespace {

// The billing period of a customer (its record, its zone) holding `at_us`: from its billing
// anchor, else its creation.
Period period_of(const Customer& record, const core::TimeZone& tz, TimeUs at_us) {
  const core::TimeUs anchor =
      record.billing_anchor_us != 0 ? record.billing_anchor_us : record.created_at_us;
  Period p;
  core::billing_period_span(at_us, anchor, tz, &p.start_us, &p.end_us);
  return p;
}

}  // namespace

Result<Period> Engine::billing_period(const std::string& customer, TimeUs at_us) const {
  const Impl& d = *impl_;
  if (d.cluster != nullptr) {
    // The customer's row, read from its shard (kNotFound as below).
    auto c = d.cluster->get_customer(customer);
    if (!c) {
      return c.error();
    }
    auto tz = core::TimeZone::find(c->timezone);
    return period_of(*c, tz ? *tz : core::TimeZone(), at_us);
  }
  std::shared_lock lock(d.state_mutex);
  const engine::CustomerState* cs = d.find_customer(customer);
  if (cs == nullptr) {
    return core::customer_not_found(customer);
  }
  return period_of(cs->record, cs->tz, at_us);
}

// ---- stored events --------------------------------------------------------------------------

namespace {

std::string encode_cursor(std::uint32_t cnum, std::uint64_t seq) {
  char buf[40];
  std::snprintf(buf, sizeof(buf), "%" PRIx32 ".%" PRIx64, cnum, seq);
  return buf;
}

bool decode_cursor(const std::string& c, std::uint32_t* cnum, std::uint64_t* seq) {
  unsigned int a = 0;
  unsigned long long b = 0;
  char tail = 0;
  if (std::sscanf(c.c_str(), "%x.%llx%c", &a, &b, &tail) != 2) {
    return false;
  }
  *cnum = a;
  *seq = b;
  return true;
}

using CustomerIds = std::unordered_map<std::uint32_t, std::string>;

// The ids of the customers a listing covers: `customer` alone (its number in *only), or every
// customer ("" given; *only is 0).
Status listed_customers(const Engine::Impl& d, const std::string& customer, CustomerIds* ids,
                        std::uint32_t* only) {
  std::shared_lock lock(d.state_mutex);
  if (customer.empty()) {
    for (const auto& [num, cs] : d.customers) {
      (*ids)[num] = cs.record.id;
    }
    return Status();
  }
  const auto* cs = d.find_customer(customer);
  if (cs == nullptr) {
    return core::customer_not_found(customer);
  }
  *only = cs->num;
  (*ids)[cs->num] = cs->record.id;
  return Status();
}

// A stored event as the API shows it.
StoredEvent stored_event(const engine::BlockEvent& e, const engine::BlockHeader& h,
                         std::string customer) {
  StoredEvent se;
  se.id = e.id;
  se.customer = std::move(customer);
  se.type = e.type;
  se.time_us = e.time_us;
  se.received_at_us = h.received_at_us;
  se.seq = e.seq;
  se.flagged = e.flagged;
  se.quantity = e.quantity;
  se.priced = e.priced;
  if (e.priced) {
    se.cost = core::format_decimal(e.cost);
    se.credits = core::format_decimal(e.credits);
  }
  for (const auto& p : e.props) {
    EventProperty prop;
    prop.key = p.key;
    prop.text = p.text;
    prop.kind = static_cast<EventProperty::Kind>(p.kind);
    se.properties.push_back(std::move(prop));
  }
  return se;
}

// One page of a listing, filled from the stored events after the cursor's, in (customer,
// sequence) order, until it is full or its time budget is spent.
class EventPager {
 public:
  EventPager(const EventListQuery& q, const Clock& clock, const CustomerIds& ids,
             std::uint32_t after_cnum, std::uint64_t after_seq)
      : q_(q),
        clock_(clock),
        ids_(ids),
        deadline_us_(q.budget_ms == 0 ? 0
                                      : clock.now_us() + static_cast<TimeUs>(q.budget_ms) * 1000),
        after_cnum_(after_cnum),
        after_seq_(after_seq),
        last_cnum_(after_cnum),
        last_seq_(after_seq) {}

  // Takes the next stored event (`cnum`'s, of a block with header `h`); false once the page has
  // ended, before this event.
  bool take(std::uint32_t cnum, const engine::BlockHeader& h, const engine::BlockEvent& e) {
    if (cnum == after_cnum_ && e.seq <= after_seq_) {
      return true;  // on the cursor's page or before
    }
    if (deadline_us_ != 0 && ++examined_ % kBudgetCheckEvents == 0 &&
        clock_.now_us() >= deadline_us_) {
      more_ = true;  // out of time: the page ends before this event
      return false;
    }
    const bool wanted = (q_.type.empty() || e.type == q_.type) && e.time_us >= q_.from_us &&
                        (q_.to_us == 0 || e.time_us < q_.to_us);
    if (wanted && page_.events.size() == q_.limit) {
      more_ = true;  // the page is full: it ends before this event
      return false;
    }
    last_cnum_ = cnum;
    last_seq_ = e.seq;
    if (wanted) {
      auto it = ids_.find(cnum);
      page_.events.push_back(stored_event(e, h, it != ids_.end() ? it->second : std::string()));
    }
    return true;
  }

  // The page, with the cursor of the next one when there is more.
  EventPage finish() && {
    if (more_) {
      page_.next_cursor = encode_cursor(last_cnum_, last_seq_);
    }
    return std::move(page_);
  }

 private:
  // The budget is looked at every kBudgetCheckEvents events examined, so a page always gets
  // past that many before it can stop: each page moves on, however slow the clock says it is.
  static constexpr std::uint64_t kBudgetCheckEvents = 256;

  const EventListQuery& q_;
  const Clock& clock_;
  const CustomerIds& ids_;
  const TimeUs deadline_us_;  // 0: no budget
  const std::uint32_t after_cnum_;
  const std::uint64_t after_seq_;
  std::uint64_t examined_ = 0;
  // The last event examined: the next page starts after it.
  std::uint32_t last_cnum_;
  std::uint64_t last_seq_;
  bool more_ = false;
  EventPage page_;
};

}  // namespace

Result<EventPage> Engine::list_events(const EventListQuery& q) const {
  const Impl& d = *impl_;
  if (q.limit == 0 || q.limit > 1000) {
    return Status::invalid_argument("limit must be 1..1000");
  }
  if (d.cluster != nullptr) {
    return d.cluster->list_events(q);
  }
  CustomerIds ids;
  std::uint32_t only = 0;
  TALLY_TRY(listed_customers(d, q.customer, &ids, &only));
  std::uint32_t after_cnum = only;
  std::uint64_t after_seq = 0;
  if (!q.cursor.empty()) {
    if (!decode_cursor(q.cursor, &after_cnum, &after_seq) || (only != 0 && after_cnum != only)) {
      return Status::invalid_argument("cursor is not one this listing returned");
    }
  }
  const std::string begin = engine::event_block_key(after_cnum, after_seq + 1);
  const std::string end = only != 0 ? engine::event_block_key(only + 1, 0) : std::string();
  EventPager pager(q, clock(), ids, after_cnum, after_seq);
  Status bad;
  TALLY_TRY(
      d.store->scan(store::Space::kEvents, begin, end, [&](std::string_view k, std::string_view v) {
        const std::uint32_t cnum = engine::read_be32(k);
        engine::BlockHeader h;
        bool going = true;
        const bool ok = engine::decode_event_block(
            v, &h, [&](const engine::BlockEvent& e) { going = going && pager.take(cnum, h, e); });
        if (!ok) {
          bad = Status::corruption("an event block cannot be decoded");
          return false;
        }
        return going;
      }));
  TALLY_TRY(bad);
  return std::move(pager).finish();
}

}  // namespace tally
