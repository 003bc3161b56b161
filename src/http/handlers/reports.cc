// The read-side reports: GET /v1/customers/{id}/usage/history, GET /v1/customers/{id}/report,
// GET /v1/organizations/{id}/usage, GET /v1/admin/usage/top and GET /v1/meters/{key}/stats.
// Each handler reads its query parameters strictly (an unknown one is refused), scopes the
// customer to the key, and asks the engine; the numbers are all the engine's.
#include <optional>
#include <string>

#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

// ---- GET /v1/customers/{id}/usage/history -------------------------------------------------------

// The query: the customer (scoped to the key), a meter, a window, a zone, a group, and either
// a number of windows or a range. False after answering 400 or 403.
bool read_history_query(Call& call, HistoryQuery* q) {
  q->customer = call.params.at(0);
  if (!scope_customer(call, &q->customer) ||
      !only_params(call,
                   {"meter", "window", "windows", "from", "to", "tz", "timezone", "group_by"})) {
    return false;
  }
  q->meter = param(call, "meter");
  if (q->meter.empty()) {
    answer(call, error_response(400, "VALIDATION_ERROR", "query parameter 'meter' is required"));
    return false;
  }
  if (!window_param(call, &q->window)) {
    return false;
  }
  q->timezone = zone_param(call);
  q->group_by = param(call, "group_by");
  if (!range_params(call, &q->from_us, &q->to_us) ||
      !uint_param(call, "windows", 10'000, &q->windows)) {
    return false;
  }
  if (call.request.query_param("windows") != nullptr && q->from_us != 0) {
    answer(call, error_response(400, "VALIDATION_ERROR",
                                "give either 'windows' or 'from' and 'to', not both"));
    return false;
  }
  return true;
}

// ---- GET /v1/admin/customers ------------------------------------------------------------------

// The query: a search, a sort and its order, and a page (limit, offset). False after answering
// 400.
bool read_summary_query(Call& call, CustomerSummaryQuery* q) {
  if (!only_params(call, {"q", "sort", "order", "limit", "offset"})) {
    return false;
  }
  q->search = param(call, "q");
  const std::string order = param(call, "order");
  if (!order.empty() && order != "asc" && order != "desc") {
    answer(call, error_response(400, "VALIDATION_ERROR", "order must be asc or desc"));
    return false;
  }
  q->descending = order == "desc";
  if (!uint_param(call, "limit", 1000, &q->limit) || !offset_param(call, "offset", &q->offset)) {
    return false;
  }
  // Given, it must be one of the set ("" too); absent, the list is by id.
  if (const std::string* s = call.request.query_param("sort"); s != nullptr) {
    const std::optional<CustomerSort> sort = parse_customer_sort(*s);
    if (!sort) {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "sort must be id, name, plan, status or usage"));
      return false;
    }
    q->sort = *sort;
  }
  return true;
}

// The page of customer summaries, with the query that made it.
std::string summaries_json(const CustomerSummaryPage& page, const CustomerSummaryQuery& q) {
  common::JsonWriter w;
  w.begin_object()
      .key("total")
      .value(page.total)
      .key("offset")
      .value(q.offset)
      .key("limit")
      .value(q.limit)
      .key("sort")
      .value(to_string(q.sort))
      .key("order")
      .value(q.descending ? "desc" : "asc")
      .key("customers")
      .begin_array();
  for (const CustomerSummary& c : page.customers) {
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
  return w.take();
}

// ---- GET /v1/admin/usage/top ------------------------------------------------------------------

struct TopQuery {
  std::string meter;
  std::optional<Window> period;  // none with a range; the month when neither is given
  TimeUs from_us = 0;
  TimeUs to_us = 0;
  std::uint32_t n = 10;
};

// The query: a meter, a period or a range (not both), and how many customers. False after
// answering 400.
bool read_top_query(Call& call, TopQuery* q) {
  if (!only_params(call, {"meter", "period", "from", "to", "tz", "timezone", "n"})) {
    return false;
  }
  q->meter = param(call, "meter");
  if (q->meter.empty()) {
    answer(call, error_response(400, "VALIDATION_ERROR", "query parameter 'meter' is required"));
    return false;
  }
  if (!range_params(call, &q->from_us, &q->to_us) || !uint_param(call, "n", 1000, &q->n)) {
    return false;
  }
  const std::string period = param(call, "period");
  if (q->from_us != 0 && !period.empty()) {
    answer(call,
           error_response(400, "VALIDATION_ERROR", "give 'period' or 'from' and 'to', not both"));
    return false;
  }
  if (q->from_us == 0 && period.empty()) {
    q->period = Window::kMonth;
  } else if (!period.empty()) {
    q->period = parse_window_name(period);
    if (!q->period) {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "period must be minute, hour, day, week or month"));
      return false;
    }
  }
  return true;
}

// ---- GET /v1/meters/{key}/stats ---------------------------------------------------------------

// The query: the meter, a customer (scoped to the key), a window, a zone, a range, how many
// peaks, and filter[...]. False after answering 400 or 403.
bool read_stats_query(Call& call, StatsQuery* q) {
  if (!only_params(call, {"customer", "window", "from", "to", "tz", "timezone", "peaks"},
                   {.filters = true})) {
    return false;
  }
  q->meter = call.params.at(0);
  q->customer = param(call, "customer");
  if (!scope_customer(call, &q->customer) || !window_param(call, &q->window)) {
    return false;
  }
  q->timezone = zone_param(call);
  if (!range_params(call, &q->from_us, &q->to_us) ||
      !uint_param(call, "peaks", 100, &q->peaks_max)) {
    return false;
  }
  q->filter = filter_params(call.request);
  return true;
}

}  // namespace

void usage_history(Context& ctx, Call& call) {
  HistoryQuery q;
  if (!read_history_query(call, &q)) {
    return;
  }
  auto r = ctx.engine.usage_history(q);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  answer(call, json_response(200, history_json(*r, !q.group_by.empty())));
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
        .value(to_string(b.aggregation))
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
        .value(to_string(m.aggregation))
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
  CustomerSummaryQuery q;
  if (!read_summary_query(call, &q)) {
    return;
  }
  auto r = ctx.engine.customer_summaries(q);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  answer(call, json_response(200, summaries_json(*r, q)));
}

void top_customers(Context& ctx, Call& call) {
  TopQuery q;
  if (!read_top_query(call, &q)) {
    return;
  }
  auto r = ctx.engine.top_customers(q.meter, q.period, q.from_us, q.to_us, zone_param(call), q.n);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  answer(call, json_response(200, top_customers_json(*r)));
}

void meter_stats(Context& ctx, Call& call) {
  StatsQuery q;
  if (!read_stats_query(call, &q)) {
    return;
  }
  auto r = ctx.engine.meter_stats(q);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  answer(call, json_response(200, meter_stats_json(*r)));
}

}  // namespace tally::http::handlers
