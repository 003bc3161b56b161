// Alerts: GET /v1/alerts and GET /v1/alerts/{id}.
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

void list_alerts(Context& ctx, Call& call) {
  if (!only_params(call, {"customer", "level", "status", "from", "to", "limit", "cursor"},
                   {.list_allowed = true})) {
    return;
  }
  AlertQuery q;
  if (const auto* c = call.request.query_param("customer"))
    q.customer = *c;
  if (const auto* c = call.request.query_param("cursor"))
    q.cursor = *c;
  if (!scope_customer(call, &q.customer) || !time_param(call, "from", &q.from_us) ||
      !time_param(call, "to", &q.to_us) || !uint_param(call, "limit", 1000, &q.limit)) {
    return;
  }
  if (q.to_us != 0 && q.to_us <= q.from_us) {
    answer(call, error_response(400, "VALIDATION_ERROR", "to must be after from"));
    return;
  }
  if (!enum_param(call, "level", parse_alert_level,
                  "level must be info, warning, critical or exceeded", &q.level) ||
      !enum_param(call, "status", parse_alert_status,
                  "status must be pending, sent, failed or none", &q.status)) {
    return;
  }
  Result<AlertPage> page = ctx.engine.alerts(q);
  if (!page) {
    answer(call, status_response(page.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("alerts").begin_array();
  for (const auto& a : page->alerts) {
    write_alert(w, a, true);
  }
  w.end_array().key("next_cursor");
  page->next_cursor.empty() ? w.null() : w.value(page->next_cursor);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

void get_alert(Context& ctx, Call& call) {
  Result<Alert> a = ctx.engine.alert(call.params[0]);
  if (!a) {
    answer(call, status_response(a.error()));
    return;
  }
  if (!call.identity.customer.empty() && a->customer != call.identity.customer) {
    // Another customer's alert does not exist for this key.
    answer(call, error_response(404, "NOT_FOUND", "alert '" + call.params[0] + "' does not exist"));
    return;
  }
  common::JsonWriter w;
  write_alert(w, *a, true);
  answer(call, json_response(200, w.take()));
}

}  // namespace tally::http::handlers
