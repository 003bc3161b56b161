#include "http/handlers/handlers.h"

#include <charconv>

#include <simdjson.h>

#include "core/time.h"

namespace tally::http::handlers {

void answer(Call& call, Response r) { call.respond(std::move(r)); }

bool time_param(Call& call, std::string_view name, TimeUs* out) {
  const std::string* v = call.request.query_param(name);
  if (v == nullptr || v->empty()) {
    return true;
  }
  auto t = core::parse_rfc3339(*v);
  if (!t) {
    answer(call, error_response(400, "VALIDATION_ERROR",
                                "query parameter '" + std::string(name) + "': " + t.error().message()));
    return false;
  }
  *out = *t;
  return true;
}

bool uint_param(Call& call, std::string_view name, std::uint32_t max, std::uint32_t* out) {
  const std::string* v = call.request.query_param(name);
  if (v == nullptr) {
    return true;
  }
  std::uint32_t n = 0;
  auto r = std::from_chars(v->data(), v->data() + v->size(), n);
  if (r.ec != std::errc() || r.ptr != v->data() + v->size() || n == 0 || n > max) {
    answer(call, error_response(400, "VALIDATION_ERROR",
                                "query parameter '" + std::string(name) + "' must be an integer 1.." +
                                    std::to_string(max)));
    return false;
  }
  *out = n;
  return true;
}

std::optional<Response> customer_refusal(const Identity& identity, const std::string& requested) {
  const std::string& own = identity.customer;
  if (own.empty() || requested == own) {
    return std::nullopt;  // admin, or its own customer
  }
  return error_response(403, "FORBIDDEN", "this key may only read customer '" + own + "'");
}

bool scope_customer(Call& call, std::string* requested) {
  if (call.identity.customer.empty()) {
    return true;  // admin
  }
  if (requested->empty()) {
    *requested = call.identity.customer;
    return true;
  }
  if (auto refusal = customer_refusal(call.identity, *requested)) {
    answer(call, std::move(*refusal));
    return false;
  }
  return true;
}

bool require_json(Call& call) {
  const std::string* ct = call.request.header("content-type");
  if (ct == nullptr || ct->empty()) {
    return true;
  }
  std::string_view media(*ct);
  media = media.substr(0, media.find(';'));
  while (!media.empty() && media.back() == ' ') {
    media.remove_suffix(1);
  }
  std::string lower(media);
  for (char& c : lower) {
    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  }
  // Newline-delimited JSON (application/x-ndjson) is refused: a body is one JSON document.
  const bool json = lower == "application/json" || lower == "text/json" ||
                    (lower.size() > 5 && lower.compare(lower.size() - 5, 5, "+json") == 0);
  if (!json) {
    const bool ndjson = lower == "application/x-ndjson" || lower == "application/jsonl";
    answer(call, error_response(415, "UNSUPPORTED_MEDIA_TYPE",
                                "Content-Type '" + *ct +
                                    (ndjson ? "' (one JSON document per line) is not accepted; "
                                              "send one JSON document as application/json"
                                            : "' is not JSON; send application/json")));
    return false;
  }
  return true;
}

bool body_object(Call& call, simdjson::dom::object* out, std::string_view shape) {
  if (!require_json(call)) {
    return false;
  }
  thread_local simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (auto err = parser.parse(call.request.body).get(root); err) {
    answer(call, error_response(400, "INVALID_JSON",
                                std::string("malformed JSON: ") + simdjson::error_message(err)));
    return false;
  }
  if (root.get_object().get(*out) != simdjson::SUCCESS) {
    answer(call, error_response(400, "VALIDATION_ERROR", shape));
    return false;
  }
  return true;
}

}  // namespace tally::http::handlers
