// POST /v1/events (and the seed walkthrough's /v1/events/ingest), GET /v1/events.
#include <algorithm>
#include <cctype>

#include "config/config.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

void write_errors(common::JsonWriter& w, const std::vector<EventError>& errors) {
  w.begin_array();
  for (const auto& e : errors) {
    w.begin_object()
        .key("index").value(e.index)
        .key("id").value(e.id)
        .key("code").value(e.code)
        .key("message").value(e.message)
        .end_object();
  }
  w.end_array();
}

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
  write_errors(w, s.errors);
  if (none_valid) {
    w.key("details").begin_object().key("errors");
    write_errors(w, s.errors);
    w.end_object();
  }
  w.end_object();
  return json_response(none_valid ? (all_unknown ? 422 : 400) : 202, w.take());
}

// `cost_key` is "cost_" + the lower-case currency ("cost_usd").
void write_event(common::JsonWriter& w, const StoredEvent& e, const std::string& currency,
                 const std::string& cost_key) {
  w.begin_object()
      .key("id").value(e.id)
      .key("customer").value(e.customer)
      .key("type").value(e.type)
      .key("time").value(time_text(e.time_us))
      .key("received_at").value(time_text(e.received_at_us));
  if (e.quantity != 1) {
    w.key("quantity").value(static_cast<std::uint64_t>(e.quantity));
  }
  if (e.flagged) {
    w.key("flagged").value(true);
  }
  if (e.priced) {
    w.key("cost");
    write_decimal(w, e.cost);
    w.key(cost_key);
    write_decimal(w, e.cost);
    w.key("currency").value(currency);
    w.key("credits");
    write_decimal(w, e.credits);
  }
  w.key("properties").begin_object();
  for (const auto& p : e.properties) {
    w.key(p.key);
    switch (p.kind) {
      case EventProperty::Kind::kString: w.value(p.text); break;
      case EventProperty::Kind::kNumber: w.raw(p.text); break;
      case EventProperty::Kind::kBool: w.raw(p.text == "true" ? "true" : "false"); break;
      case EventProperty::Kind::kNull: w.null(); break;
    }
  }
  w.end_object().end_object();
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
                                   const Status& s = r.error();
                                   if (s.code() == StatusCode::kInvalidArgument) {
                                     respond(error_response(400, "INVALID_JSON", s.message()));
                                   } else if (s.code() == StatusCode::kResourceExhausted) {
                                     respond(error_response(413, "PAYLOAD_TOO_LARGE", s.message()));
                                   } else {
                                     respond(status_response(s));
                                   }
                                   return;
                                 }
                                 respond(summary_response(*r));
                               });
}

void list_events(Context& ctx, Call& call) {
  for (const auto& [k, v] : call.request.query) {
    if (k != "customer" && k != "type" && k != "from" && k != "to" && k != "limit" &&
        k != "cursor") {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "unknown query parameter '" + k +
                                      "'; allowed: customer, type, from, to, limit, cursor"));
      return;
    }
  }
  EventListQuery q;
  if (const auto* c = call.request.query_param("customer")) q.customer = *c;
  if (const auto* t = call.request.query_param("type")) q.type = *t;
  if (const auto* c = call.request.query_param("cursor")) q.cursor = *c;
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
  const std::string& currency = ctx.engine.config().credits.currency;
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
