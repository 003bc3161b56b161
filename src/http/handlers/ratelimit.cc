// Ad-hoc limits over HTTP: Tally's own POST /v1/ratelimit, and the Unkey-compatible
// POST /unkey/v2/ratelimit.limit and /unkey/v2/ratelimit.multiLimit (docs/compat.md), which
// answer in Unkey's shapes ({"meta": {"requestId"}, "data": ...}, errors as {"meta", "error":
// {"detail", "status", "title", "type"}}) so that @unkey/ratelimit and @unkey/api work against
// Tally by their base URL alone.
#include <algorithm>

#include <simdjson.h>

#include "common/crypto.h"
#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace dom = simdjson::dom;

namespace {

std::int64_t ceil_seconds_until(TimeUs at, TimeUs now) {
  const TimeUs us = at > now ? at - now : 0;
  return (us + core::kUsPerSecond - 1) / core::kUsPerSecond;
}

// One limit object: {namespace, identifier, limit, duration, cost?}. Unknown fields are refused
// when `strict` (Tally's own route); Unkey's clients may send fields Tally does not use.
bool parse_limit(dom::element e, bool strict, AdHocLimit* out, std::string* error) {
  dom::object obj;
  if (e.get_object().get(obj) != simdjson::SUCCESS) {
    *error = "a limit must be an object {\"namespace\", \"identifier\", \"limit\", \"duration\"}";
    return false;
  }
  bool has_limit = false;
  bool has_duration = false;
  out->cost = 1;
  for (auto f : obj) {
    const std::string key(f.key);
    std::string_view s;
    std::int64_t n = 0;
    if (key == "namespace" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      out->ns.assign(s);
    } else if (key == "identifier" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      out->identifier.assign(s);
    } else if ((key == "limit" || key == "duration" || key == "cost") &&
               f.value.get_int64().get(n) == simdjson::SUCCESS) {
      (key == "limit" ? out->limit : key == "duration" ? out->duration_ms : out->cost) = n;
      has_limit = has_limit || key == "limit";
      has_duration = has_duration || key == "duration";
    } else if (strict || key == "namespace" || key == "identifier" || key == "limit" ||
               key == "duration" || key == "cost") {
      *error = "unknown or mistyped field '" + key +
               "'; allowed: namespace, identifier (strings), limit, duration (milliseconds), "
               "cost (whole numbers)";
      return false;
    }
  }
  if (out->ns.empty() || out->identifier.empty() || !has_limit || !has_duration) {
    *error = "'namespace', 'identifier', 'limit' and 'duration' are required";
    return false;
  }
  return true;
}

// ---- Unkey's shapes ---------------------------------------------------------------------------

std::string request_id() {
  return "req_" + common::to_hex(common::random_bytes(12));
}

Response unkey_error(unsigned status, std::string_view detail) {
  const char* title = status == 400   ? "Bad Request"
                      : status == 401 ? "Unauthorized"
                      : status == 403 ? "Forbidden"
                      : status == 404 ? "Not Found"
                      : status == 503 ? "Service Unavailable"
                                      : "Internal Server Error";
  const char* type =
      status == 400   ? "https://unkey.com/docs/errors/unkey/application/invalid_input"
      : status == 401 ? "https://unkey.com/docs/errors/unkey/authentication/missing"
      : status == 403 ? "https://unkey.com/docs/errors/unkey/authorization/insufficient_permissions"
      : status == 404 ? "https://unkey.com/docs/errors/unkey/data/not_found"
                      : "https://unkey.com/docs/errors/unkey/application/unexpected_error";
  common::JsonWriter w;
  w.begin_object().key("meta").begin_object().key("requestId").value(request_id()).end_object();
  w.key("error").begin_object().key("detail").value(detail).key("status").value(status);
  w.key("title").value(title).key("type").value(type);
  if (status == 400) {
    w.key("errors").begin_array().begin_object().key("location").value("body");
    w.key("message").value(detail).end_object().end_array();
  }
  w.end_object().end_object();
  return json_response(status, w.take());
}

Response unkey_status(const Status& s) {
  return unkey_error(s.code() == StatusCode::kInvalidArgument ? 400
                     : s.code() == StatusCode::kUnavailable   ? 503
                                                              : 500,
                     s.message());
}

// The body as JSON: false after answering 400 in Unkey's shape.
bool unkey_body(Call& call, dom::element* root) {
  if (std::string error = parse_body(call.request, root); !error.empty()) {
    answer(call, unkey_error(400, error));
    return false;
  }
  return true;
}

// ---- Tally's own route's steps ------------------------------------------------------------------

// The limits of POST /v1/ratelimit: {"limits": [...]} (`*batch`), or one limit object. False
// after answering 400 naming the limit at fault.
bool read_limits(Call& call, dom::element root, std::vector<AdHocLimit>* limits, bool* batch) {
  std::string error;
  dom::array many;
  dom::object obj;
  *batch = root.get_object().get(obj) == simdjson::SUCCESS && obj.size() == 1 &&
           obj["limits"].get_array().get(many) == simdjson::SUCCESS;
  if (!*batch) {
    AdHocLimit l;
    if (!parse_limit(root, true, &l, &error)) {
      answer(call, error_response(400, "VALIDATION_ERROR", error));
      return false;
    }
    limits->push_back(std::move(l));
    return true;
  }
  for (dom::element e : many) {
    AdHocLimit l;
    if (!parse_limit(e, true, &l, &error)) {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "limits[" + std::to_string(limits->size()) + "]: " + error));
      return false;
    }
    limits->push_back(std::move(l));
  }
  return true;
}

// The fields of one limit's answer.
void write_adhoc_result(common::JsonWriter& w, const AdHocResult& x, const AdHocLimit& l) {
  w.key("allowed").value(x.allowed).key("namespace").value(x.ns);
  w.key("identifier").value(x.identifier).key("limit").value(x.limit);
  w.key("cost").value(l.cost).key("used").value(x.used).key("remaining").value(x.remaining);
  w.key("window_start")
      .value(time_text(x.window_start_us))
      .key("reset")
      .value(time_text(x.reset_us));
}

// One limit's answer, or a batch's {"allowed", "results"}.
std::string adhoc_body(const std::vector<AdHocResult>& results,
                       const std::vector<AdHocLimit>& limits, bool batch, bool allowed) {
  common::JsonWriter w;
  w.begin_object();
  if (batch) {
    w.key("allowed").value(allowed).key("results").begin_array();
    for (std::size_t i = 0; i < results.size(); ++i) {
      w.begin_object();
      write_adhoc_result(w, results[i], limits[i]);
      w.end_object();
    }
    w.end_array();
  } else {
    write_adhoc_result(w, results.front(), limits.front());
  }
  w.end_object();
  return w.take();
}

// The rate-limit headers of the first limit that denies, else of the first, and Retry-After
// when one denies.
void add_adhoc_headers(Response& resp, const std::vector<AdHocResult>& results, bool allowed,
                       TimeUs now) {
  auto it = std::find_if(results.begin(), results.end(), [](const auto& x) { return !x.allowed; });
  const AdHocResult& h = it != results.end() ? *it : results.front();
  const std::int64_t reset_s = ceil_seconds_until(h.reset_us, now);
  resp.headers.emplace_back("X-RateLimit-Limit", std::to_string(h.limit));
  resp.headers.emplace_back("X-RateLimit-Remaining", std::to_string(h.remaining));
  resp.headers.emplace_back("X-RateLimit-Reset", std::to_string(reset_s));
  resp.headers.emplace_back(
      "RateLimit-Policy",
      "\"" + h.ns + "\";q=" + std::to_string(h.limit) +
          ";w=" + std::to_string((h.reset_us - h.window_start_us) / core::kUsPerSecond));
  resp.headers.emplace_back("RateLimit", "\"" + h.ns + "\";r=" + std::to_string(h.remaining) +
                                             ";t=" + std::to_string(reset_s));
  if (!allowed) {
    resp.headers.emplace_back("Retry-After", std::to_string(std::max<std::int64_t>(1, reset_s)));
  }
}

}  // namespace

Response unkey_refusal(unsigned status, std::string_view detail) {
  return unkey_error(status, detail);
}

// ---- Tally's own route ------------------------------------------------------------------------

void ratelimit(Context& ctx, Call& call) {
  dom::element root;
  if (!body_json(call, &root)) {
    return;
  }
  std::vector<AdHocLimit> limits;
  bool batch = false;
  if (!read_limits(call, root, &limits, &batch)) {
    return;
  }
  Result<std::vector<AdHocResult>> r = ctx.engine.limit_adhoc(limits);
  if (!r) {
    answer(call, r.error().code() == StatusCode::kInvalidArgument
                     ? error_response(400, "VALIDATION_ERROR", r.error().message())
                     : status_response(r.error()));
    return;
  }
  const TimeUs now = ctx.engine.clock().now_us();
  const bool allowed = std::all_of(r->begin(), r->end(), [](const auto& x) { return x.allowed; });
  Response resp = json_response(allowed ? 200 : 429, adhoc_body(*r, limits, batch, allowed));
  add_adhoc_headers(resp, *r, allowed, now);
  answer(call, std::move(resp));
}

// ---- Unkey --------------------------------------------------------------------------------------

void unkey_limit(Context& ctx, Call& call) {
  dom::element root;
  if (!unkey_body(call, &root))
    return;
  AdHocLimit l;
  std::string error;
  if (!parse_limit(root, false, &l, &error)) {
    answer(call, unkey_error(400, error));
    return;
  }
  Result<std::vector<AdHocResult>> r = ctx.engine.limit_adhoc({l});
  if (!r) {
    answer(call, unkey_status(r.error()));
    return;
  }
  const AdHocResult& x = r->front();
  common::JsonWriter w;
  w.begin_object().key("meta").begin_object().key("requestId").value(request_id()).end_object();
  w.key("data").begin_object().key("limit").value(x.limit).key("remaining").value(x.remaining);
  w.key("reset").value(x.reset_us / 1000).key("success").value(x.allowed).end_object();
  w.end_object();
  answer(call, json_response(200, w.take()));  // 200 whether or not the limit passed, as Unkey
}

void unkey_multi_limit(Context& ctx, Call& call) {
  dom::element root;
  if (!unkey_body(call, &root))
    return;
  dom::array many;
  if (root.get_array().get(many) != simdjson::SUCCESS) {
    answer(call, unkey_error(400, "the body must be an array of rate limit requests"));
    return;
  }
  std::vector<AdHocLimit> limits;
  for (dom::element e : many) {
    AdHocLimit l;
    std::string error;
    if (!parse_limit(e, false, &l, &error)) {
      answer(call, unkey_error(400, "[" + std::to_string(limits.size()) + "]: " + error));
      return;
    }
    limits.push_back(std::move(l));
  }
  Result<std::vector<AdHocResult>> r = ctx.engine.limit_adhoc(limits);
  if (!r) {
    answer(call, unkey_status(r.error()));
    return;
  }
  const bool passed = std::all_of(r->begin(), r->end(), [](const auto& x) { return x.allowed; });
  common::JsonWriter w;
  w.begin_object().key("meta").begin_object().key("requestId").value(request_id()).end_object();
  w.key("data").begin_object().key("passed").value(passed).key("limits").begin_array();
  for (const auto& x : *r) {
    w.begin_object().key("namespace").value(x.ns).key("identifier").value(x.identifier);
    w.key("limit").value(x.limit).key("remaining").value(x.remaining);
    w.key("reset").value(x.reset_us / 1000).key("passed").value(x.allowed).end_object();
  }
  w.end_array().end_object().end_object();
  answer(call, json_response(200, w.take()));
}

}  // namespace tally::http::handlers
