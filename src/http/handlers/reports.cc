// The read-side reports: GET /v1/customers/{id}/usage/history, GET /v1/customers/{id}/report,
// GET /v1/organizations/{id}/usage, GET /v1/admin/usage/top and GET /v1/meters/{key}/stats.
// Each handler reads its query parameters strictly (an unknown one is refused), scopes the
// customer to the key, and asks the engine; the numbers are all the engine's.
#include <charconv>

#include "http/handlers/handlers.h"

namespace tally::http::handlers {

void usage_history(Context& ctx, Call& call) {
  std::string customer = call.params.at(0);
  if (!scope_customer(call, &customer) ||
      !only_params(call,
                   {"meter", "window", "windows", "from", "to", "tz", "timezone", "group_by"})) {
    return;
  }
  HistoryQuery q;
  q.customer = customer;
  q.meter = param(call, "meter");
  if (q.meter.empty()) {
    answer(call, error_response(400, "VALIDATION_ERROR", "query parameter 'meter' is required"));
    return;
  }
  if (!window_param(call, &q.window)) {
    return;
  }
  q.timezone = zone_param(call);
  q.group_by = param(call, "group_by");
  if (!range_params(call, &q.from_us, &q.to_us) ||
      !uint_param(call, "windows", 10'000, &q.windows)) {
    return;
  }
  if (call.request.query_param("windows") != nullptr && q.from_us != 0) {
    answer(call, error_response(400, "VALIDATION_ERROR",
                                "give either 'windows' or 'from' and 'to', not both"));
    return;
  }
  auto r = ctx.engine.usage_history(q);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object()
      .key("customer")
      .value(r->customer)
      .key("meter")
      .value(r->meter)
      .key("aggregation")
      .value(r->aggregation)
      .key("unit")
      .value(r->unit)
      .key("window")
      .value(to_string(r->window))
      .key("timezone")
      .value(r->timezone)
      .key("from")
      .value(time_text(r->from_us))
      .key("to")
      .value(time_text(r->to_us))
      .key("data");
  write_series(w, r->data);
  if (!q.group_by.empty()) {
    w.key("groups").begin_array();
    for (const auto& s : r->groups) {
      w.begin_object().key("group").begin_object();
      for (const auto& [k, v] : s.group) {
        w.key(k).value(v);
      }
      w.end_object().key("data");
      write_series(w, s.data);
      w.end_object();
    }
    w.end_array();
  }
  w.end_object();
  answer(call, json_response(200, w.take()));
}

void usage_report(Context& ctx, Call& call) {
  std::string customer = call.params.at(0);
  if (!scope_customer(call, &customer) || !only_params(call, {"group_by"})) {
    return;
  }
  auto r = ctx.engine.usage_report(customer, param(call, "group_by"));
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object()
      .key("customer")
      .value(r->customer.id)
      .key("name")
      .value(r->customer.name)
      .key("organization");
  write_nullable(w, r->customer.organization);
  w.key("status").value(to_string(r->customer.status)).key("plan");
  write_nullable(w, r->plan);
  w.key("current_period").raw(customer_usage_json(r->current_period));
  w.key("limits").begin_array();
  for (const auto& l : r->limits) {
    write_limit_state(w, l);
  }
  w.end_array().key("usage_percentage").begin_object();
  for (const auto& l : r->limits) {
    w.key(l.rule());
    write_decimal(w, l.percent());
  }
  w.end_object().key("warnings").begin_array();
  for (const auto& x : r->warnings) {
    w.value(x);
  }
  w.end_array().key("breakdown").begin_array();
  for (const auto& b : r->breakdown) {
    w.begin_object()
        .key("meter")
        .value(b.meter)
        .key("property")
        .value(b.property)
        .key("aggregation")
        .value(b.aggregation)
        .key("unit")
        .value(b.unit)
        .key("groups")
        .begin_array();
    for (const auto& g : b.groups) {
      w.begin_object().key("value").value(g.value).key("usage");
      write_decimal(w, g.usage);
      w.key("percent");
      write_decimal(w, g.percent);
      w.end_object();
    }
    w.end_array().end_object();
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void organization_usage(Context& ctx, Call& call) {
  if (!only_params(call, {"from", "to", "tz", "timezone"})) {
    return;
  }
  TimeUs from = 0;
  TimeUs to = 0;
  if (!range_params(call, &from, &to)) {
    return;
  }
  auto r = ctx.engine.organization_usage(call.params.at(0), from, to, zone_param(call));
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object()
      .key("organization")
      .value(r->organization)
      .key("from")
      .value(time_text(r->from_us))
      .key("to")
      .value(time_text(r->to_us))
      .key("timezone")
      .value(r->timezone)
      .key("customers")
      .begin_array();
  for (const auto& c : r->customers) {
    w.value(c);
  }
  w.end_array().key("meters").begin_array();
  for (const auto& m : r->meters) {
    w.begin_object()
        .key("meter")
        .value(m.meter)
        .key("aggregation")
        .value(m.aggregation)
        .key("unit")
        .value(m.unit)
        .key("value");
    write_decimal(w, m.value);
    w.end_object();
  }
  w.end_array().key("by_customer").begin_array();
  for (const auto& c : r->by_customer) {
    w.begin_object().key("customer").value(c.customer).key("meters").begin_array();
    for (const auto& m : c.meters) {
      w.begin_object().key("meter").value(m.meter).key("value");
      write_decimal(w, m.value);
      w.end_object();
    }
    w.end_array().end_object();
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void admin_customers(Context& ctx, Call& call) {
  if (!only_params(call, {"q", "sort", "order", "limit", "offset"})) {
    return;
  }
  CustomerSummaryQuery q;
  q.search = param(call, "q");
  if (const std::string* s = call.request.query_param("sort"); s != nullptr) {
    q.sort = *s;
  }
  const std::string order = param(call, "order");
  if (!order.empty() && order != "asc" && order != "desc") {
    answer(call, error_response(400, "VALIDATION_ERROR", "order must be asc or desc"));
    return;
  }
  q.descending = order == "desc";
  if (!uint_param(call, "limit", 1000, &q.limit)) {
    return;
  }
  if (const std::string* o = call.request.query_param("offset"); o != nullptr) {
    std::uint32_t n = 0;
    auto r = std::from_chars(o->data(), o->data() + o->size(), n);
    if (r.ec != std::errc() || r.ptr != o->data() + o->size() || o->empty()) {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "query parameter 'offset' must be an integer 0..4294967295"));
      return;
    }
    q.offset = n;
  }
  auto r = ctx.engine.customer_summaries(q);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object()
      .key("total")
      .value(r->total)
      .key("offset")
      .value(q.offset)
      .key("limit")
      .value(q.limit)
      .key("sort")
      .value(q.sort)
      .key("order")
      .value(q.descending ? "desc" : "asc")
      .key("customers")
      .begin_array();
  for (const CustomerSummary& c : r->customers) {
    w.begin_object().key("id").value(c.id).key("name").value(c.name).key("plan");
    write_nullable(w, c.plan);
    w.key("status").value(to_string(c.status)).key("organization");
    write_nullable(w, c.organization);
    w.key("max_limit_percent");
    write_decimal(w, c.max_percent);
    w.key("max_limit_rule");
    write_nullable(w, c.max_rule);
    w.end_object();
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void top_customers(Context& ctx, Call& call) {
  if (!only_params(call, {"meter", "period", "from", "to", "tz", "timezone", "n"})) {
    return;
  }
  const std::string meter = param(call, "meter");
  if (meter.empty()) {
    answer(call, error_response(400, "VALIDATION_ERROR", "query parameter 'meter' is required"));
    return;
  }
  TimeUs from = 0;
  TimeUs to = 0;
  std::uint32_t n = 10;
  if (!range_params(call, &from, &to) || !uint_param(call, "n", 1000, &n)) {
    return;
  }
  std::string period = param(call, "period");
  if (from != 0 && !period.empty()) {
    answer(call,
           error_response(400, "VALIDATION_ERROR", "give 'period' or 'from' and 'to', not both"));
    return;
  }
  if (from == 0 && period.empty()) {
    period = "month";
  }
  auto r = ctx.engine.top_customers(meter, period, from, to, zone_param(call), n);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object()
      .key("meter")
      .value(r->meter)
      .key("aggregation")
      .value(r->aggregation)
      .key("unit")
      .value(r->unit)
      .key("period");
  write_nullable(w, r->period);
  w.key("from")
      .value(time_text(r->from_us))
      .key("to")
      .value(time_text(r->to_us))
      .key("timezone")
      .value(r->timezone)
      .key("customers")
      .begin_array();
  std::uint64_t rank = 0;
  for (const auto& c : r->customers) {
    w.begin_object()
        .key("rank")
        .value(++rank)
        .key("customer")
        .value(c.customer)
        .key("name")
        .value(c.name)
        .key("value");
    write_decimal(w, c.value);
    w.end_object();
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void meter_stats(Context& ctx, Call& call) {
  if (!only_params(call, {"customer", "window", "from", "to", "tz", "timezone", "peaks"},
                   {.filters = true})) {
    return;
  }
  StatsQuery q;
  q.meter = call.params.at(0);
  q.customer = param(call, "customer");
  if (!scope_customer(call, &q.customer)) {
    return;
  }
  if (!window_param(call, &q.window)) {
    return;
  }
  q.timezone = zone_param(call);
  if (!range_params(call, &q.from_us, &q.to_us) || !uint_param(call, "peaks", 100, &q.peaks_max)) {
    return;
  }
  q.filter = filter_params(call.request);
  auto r = ctx.engine.meter_stats(q);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object()
      .key("meter")
      .value(r->meter)
      .key("aggregation")
      .value(r->aggregation)
      .key("unit")
      .value(r->unit)
      .key("customer");
  write_nullable(w, r->customer);
  w.key("window")
      .value(to_string(r->window))
      .key("timezone")
      .value(r->timezone)
      .key("from")
      .value(time_text(r->from_us))
      .key("to")
      .value(time_text(r->to_us))
      .key("windows")
      .value(r->windows)
      .key("windows_with_data")
      .value(r->windows_with_data)
      .key("stats")
      .begin_object()
      .key("count")
      .value(r->count);
  const std::pair<const char*, const std::string*> fields[] = {
      {"sum", &r->sum},       {"avg", &r->avg}, {"min", &r->min}, {"max", &r->max},
      {"median", &r->median}, {"p95", &r->p95}, {"p99", &r->p99}};
  for (const auto& [name, value] : fields) {
    w.key(name);
    write_decimal(w, *value);
  }
  w.end_object().key("trends").begin_object().key("window_over_window");
  write_trend(w, r->window_over_window);
  w.key("day_over_day");
  write_trend(w, r->day_over_day);
  w.end_object().key("peaks");
  write_series(w, r->peaks);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

}  // namespace tally::http::handlers
