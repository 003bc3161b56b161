// POST /v1/events (and the seed walkthrough's /v1/events/ingest), GET /v1/events.
#include <algorithm>
#include <cctype>

#include "config/config.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

Response summary_response(const IngestSummary& s) {
  common::JsonWriter w;
  const bool none_valid = s.accepted == 0 && s.duplicates == 0;
  bool all_unknown = none_valid && !s.errors.empty();
  for (const auto& e : s.errors) {
    all_unknown = all_unknown && e.code == "UNKNOWN_CUSTOMER";
  }
  w.begin_object();
  if (none_valid) {
    w.key("error").value(all_unknown ? "UNKNOWN_CUSTOMER" : "VALIDATION_ERROR");
    w.key("message").value(all_unknown ? "Events name customers that do not exist"
                                       : "Invalid event batch format");
  } else if (s.accepted == 0 && s.rejected == 0) {
    w.key("message").value("All events were duplicates");
  } else if (s.accepted == 0) {
    // "partial": duplicates and refused events, nothing new stored.
    w.key("message").value("No new events: each was a duplicate or refused (see errors)");
  }
  w.key("accepted").value(s.accepted);
  w.key("rejected").value(s.rejected);
  w.key("duplicates").value(s.duplicates);
  w.key("batch_id");
  s.batch_id.empty() ? w.null() : w.value(s.batch_id);
  w.key("status").value(s.status());
  w.key("processing_time_ms").value(static_cast<double>(s.processing_time_us) / 1000.0);
  w.key("errors");
  write_event_errors(w, s.errors);
  if (none_valid) {
    w.key("details").begin_object().key("errors");
    write_event_errors(w, s.errors);
    w.end_object();
  }
  w.end_object();
  return json_response(none_valid ? (all_unknown ? 422 : 400) : 202, w.take());
}

}  // namespace

void ingest(Context& ctx, Call& call) {
  if (!require_json(call)) {
    return;
  }
  IngestOptions options;
  options.restrict_customer = call.identity.customer;
  options.negative_corrections = call.identity.admin();
  Responder respond = std::move(call.respond);
  ctx.engine.ingest_json_async(std::move(call.request.body), options,
                               [respond](Result<IngestSummary> r) {
                                 if (!r) {
                                   respond(status_response(r.error()));
                                   return;
                                 }
                                 respond(summary_response(*r));
                               });
}

void list_events(Context& ctx, Call& call) {
  if (!only_params(call, {"customer", "type", "from", "to", "limit", "cursor"},
                   {.list_allowed = true})) {
    return;
  }
  EventListQuery q;
  if (const auto* c = call.request.query_param("customer"))
    q.customer = *c;
  if (const auto* t = call.request.query_param("type"))
    q.type = *t;
  if (const auto* c = call.request.query_param("cursor"))
    q.cursor = *c;
  // A sparse listing (a rare type, a narrow range) would otherwise scan on until it filled the
  // page: each page has a time budget, and the client follows next_cursor.
  q.budget_ms = ctx.options.page_budget_ms;
  if (!scope_customer(call, &q.customer) || !time_param(call, "from", &q.from_us) ||
      !time_param(call, "to", &q.to_us) || !uint_param(call, "limit", 1000, &q.limit)) {
    return;
  }
  auto page = ctx.engine.list_events(q);
  if (!page) {
    answer(call, status_response(page.error()));
    return;
  }
  const std::string& currency = ctx.options.currency;
  std::string cost_key = "cost_" + currency;
  std::transform(cost_key.begin(), cost_key.end(), cost_key.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  common::JsonWriter w;
  w.begin_object().key("events").begin_array();
  for (const auto& e : page->events) {
    write_event(w, e, currency, cost_key);
  }
  w.end_array().key("next_cursor");
  page->next_cursor.empty() ? w.null() : w.value(page->next_cursor);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

}  // namespace tally::http::handlers
