// GET /v1/meters, GET /v1/meters/{key}/query, GET /v1/customers/{id}/usage.
#include <algorithm>
#include <optional>
#include <string>
#include <vector>

#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

void write_meter(common::JsonWriter& w, const MeterInfo& m) {
  w.begin_object()
      .key("key")
      .value(m.key)
      .key("event_type")
      .value(m.event_type)
      .key("aggregation")
      .value(to_string(m.aggregation))
      .key("value");
  m.value_property.empty() ? w.null() : w.value("$." + m.value_property);
  w.key("group_by").begin_array();
  for (const auto& g : m.group_by) {
    w.value(g);
  }
  w.end_array().key("filter").begin_object();
  for (const auto& [k, v] : m.filter) {
    w.key(k).value(v);
  }
  w.end_object().key("unit").value(m.unit).key("description").value(m.description).end_object();
}

}  // namespace

void list_meters(Context& ctx, Call& call) {
  common::JsonWriter w;
  w.begin_object().key("meters").begin_array();
  for (const auto& m : ctx.engine.meters()) {
    write_meter(w, m);
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

void query_meter(Context& ctx, Call& call) {
  MeterQuery q;
  std::string measure;  // "" = units
  q.meter = call.params.at(0);
  const TimeUs now = ctx.engine.clock().now_us();
  q.to_us = now + ctx.options.future_skew_seconds_max * core::kUsPerSecond;
  if (!time_param(call, "from", &q.from_us) || !time_param(call, "to", &q.to_us)) {
    return;
  }
  for (const auto& [k, v] : call.request.query) {
    if (k == "window") {
      if (!window_text(call, v, &q.window)) {
        return;
      }
    } else if (k == "tz" || k == "timezone") {
      q.timezone = v;
    } else if (k == "customer") {
      q.customer = v;
    } else if (k == "measure") {
      measure = v;
    } else if (k == "group_by") {
      std::size_t start = 0;
      while (start <= v.size()) {
        auto comma = v.find(',', start);
        if (comma == std::string::npos) {
          comma = v.size();
        }
        if (comma > start) {
          q.group_by.push_back(v.substr(start, comma - start));
        }
        start = comma + 1;
      }
    } else if (auto property = filter_property(k)) {
      q.filter.emplace_back(std::move(*property), v);
    } else if (k != "from" && k != "to") {
      answer(call, error_response(400, "VALIDATION_ERROR", "unknown query parameter '" + k + "'"));
      return;
    }
  }
  if (!scope_customer(call, &q.customer)) {
    return;
  }
  if (!measure.empty()) {
    const std::optional<Measure> m = parse_measure(measure);
    const std::vector<MeterInfo> meters = m ? std::vector<MeterInfo>() : ctx.engine.meters();
    const bool known = std::any_of(meters.begin(), meters.end(),
                                   [&](const MeterInfo& info) { return info.key == q.meter; });
    if (!m && known) {
      answer(call,
             error_response(400, "VALIDATION_ERROR", "measure must be units, cost or credits"));
      return;
    }
    q.measure = m.value_or(Measure::kUnits);  // an unknown meter: the engine's 404 comes first
  }
  auto r = ctx.engine.query(q);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  answer(call, json_response(200, query_result_json(*r)));
}

void customer_usage(Context& ctx, Call& call) {
  std::string customer = call.params.at(0);
  if (!scope_customer(call, &customer)) {
    return;
  }
  TimeUs from = 0;
  TimeUs to = 0;
  if (!range_params(call, &from, &to)) {
    return;
  }
  auto r = ctx.engine.customer_usage(customer, from, to);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  answer(call, json_response(200, customer_usage_json(*r)));
}

}  // namespace tally::http::handlers
