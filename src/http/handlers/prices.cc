// Prices and re-rating: GET /v1/prices, POST /v1/customers/{id}/reprice.
#include <simdjson.h>

#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace dom = simdjson::dom;

void list_prices(Context& ctx, Call& call) {
  if (!call.request.query.empty()) {
    answer(call, error_response(400, "VALIDATION_ERROR", "GET /v1/prices takes no parameters"));
    return;
  }
  answer(call, json_response(200, prices_json(ctx.engine.prices())));
}

void reprice_customer(Context& ctx, Call& call) {
  dom::object obj;
  if (!body_object(call, &obj,
                   "the body must be an object such as {\"from\": "
                   "\"2025-03-01T00:00:00Z\", \"to\": \"2025-04-01T00:00:00Z\"}")) {
    return;
  }
  RepriceRequest req;
  req.customer = call.params[0];
  bool has_from = false;
  bool has_to = false;
  for (auto f : obj) {
    const std::string key(f.key);
    std::string_view s;
    if ((key == "from" || key == "to") && f.value.get_string().get(s) == simdjson::SUCCESS) {
      auto t = core::parse_rfc3339(s);
      if (!t) {
        answer(call, error_response(400, "VALIDATION_ERROR", key + ": " + t.error().message()));
        return;
      }
      (key == "from" ? req.from_us : req.to_us) = *t;
      (key == "from" ? has_from : has_to) = true;
    } else if (key == "dry_run" && f.value.is_bool()) {
      req.dry_run = f.value.get_bool().value();
    } else {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "unknown or mistyped field '" + key +
                                      "'; allowed: from, to (RFC 3339), dry_run (boolean)"));
      return;
    }
  }
  if (!has_from || !has_to) {
    answer(call, error_response(400, "VALIDATION_ERROR", "'from' and 'to' are required"));
    return;
  }
  Result<RepriceReport> r = ctx.engine.reprice(req);
  if (!r) {
    answer(call, r.error().code() == StatusCode::kInvalidArgument
                     ? error_response(400, "VALIDATION_ERROR", r.error().message())
                     : status_response(r.error()));
    return;
  }
  answer(call, json_response(200, reprice_report_json(*r)));
}

}  // namespace tally::http::handlers
