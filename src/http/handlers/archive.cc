// POST /v1/admin/archive: archives raw events of a running server now (the server also does it
// on its [retention] schedule). The request is answered when the archive is written and the
// events are out of the hot store, so it can take as long as one scan of the events.
#include <simdjson.h>

#include "config/config.h"
#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

namespace dom = simdjson::dom;

constexpr std::string_view kShape =
    "the body must be an object such as {\"older_than\": \"90d\"} or "
    "{\"before\": \"2025-01-01T00:00:00Z\"}, or empty for [retention] archive_after";

// Reads the body into `req`; false after answering 400.
bool parse_archive_body(Call& call, ArchiveRequest* req) {
  if (call.request.body.find_first_not_of(" \t\r\n") == std::string::npos) {
    return true;  // no body: the configured age
  }
  dom::object obj;
  if (!body_object(call, &obj, kShape)) {
    return false;
  }
  for (auto f : obj) {
    std::string_view s;
    const std::string key(f.key);
    if (key == "older_than" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      std::int64_t seconds = 0;
      Status st = config::parse_duration_seconds(s, &seconds);
      if (!st.ok() || seconds <= 0) {
        answer(call, error_response(400, "VALIDATION_ERROR",
                                    "older_than: " + (st.ok() ? std::string("must be positive")
                                                              : st.message())));
        return false;
      }
      req->older_than_seconds = seconds;
    } else if (key == "before" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      auto t = core::parse_rfc3339(s);
      if (!t) {
        answer(call, error_response(400, "VALIDATION_ERROR", "before: " + t.error().message()));
        return false;
      }
      req->before_us = *t;
    } else {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "unknown or mistyped field '" + key +
                                      "'; allowed: older_than (a duration string), before "
                                      "(RFC 3339)"));
      return false;
    }
  }
  if (req->older_than_seconds != 0 && req->before_us != 0) {
    answer(call,
           error_response(400, "VALIDATION_ERROR", "give 'older_than' or 'before', not both"));
    return false;
  }
  return true;
}

}  // namespace

void archive_events(Context& ctx, Call& call) {
  if (!require_json(call))
    return;
  ArchiveRequest req;
  if (!parse_archive_body(call, &req))
    return;
  Result<ArchiveResult> r = ctx.engine.archive(req);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  answer(call, json_response(200, archive_result_json(*r)));
}

}  // namespace tally::http::handlers
