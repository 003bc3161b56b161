#include "http/handlers/handlers.h"

#include <algorithm>
#include <charconv>

#include <simdjson.h>

#include "core/time.h"

namespace tally::http::handlers {

void answer(Call& call, Response r) {
  call.respond(std::move(r));
}

bool time_param(Call& call, std::string_view name, TimeUs* out) {
  const std::string* v = call.request.query_param(name);
  if (v == nullptr || v->empty()) {
    return true;
  }
  auto t = core::parse_rfc3339(*v);
  if (!t) {
    answer(call,
           error_response(400, "VALIDATION_ERROR",
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
                                "query parameter '" + std::string(name) +
                                    "' must be an integer 1.." + std::to_string(max)));
    return false;
  }
  *out = n;
  return true;
}

bool offset_param(Call& call, std::string_view name, std::uint32_t* out) {
  const std::string* o = call.request.query_param(name);
  if (o == nullptr) {
    return true;
  }
  std::uint32_t n = 0;
  auto r = std::from_chars(o->data(), o->data() + o->size(), n);
  if (r.ec != std::errc() || r.ptr != o->data() + o->size() || o->empty()) {
    answer(call, error_response(400, "VALIDATION_ERROR",
                                "query parameter '" + std::string(name) +
                                    "' must be an integer 0..4294967295"));
    return false;
  }
  *out = n;
  return true;
}

bool window_text(Call& call, std::string_view text, std::optional<Window>* out) {
  if (text.empty()) {
    out->reset();
    return true;
  }
  Result<Window> w = core::parse_window(text);
  if (!w) {
    answer(call, status_response(w.error()));
    return false;
  }
  *out = *w;
  return true;
}

bool window_param(Call& call, Window* out) {
  const std::string* v = call.request.query_param("window");
  if (v == nullptr) {
    return true;
  }
  Result<Window> w = core::parse_window(*v);
  if (!w) {
    answer(call, status_response(w.error()));
    return false;
  }
  *out = *w;
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

std::string_view bearer_token(const Request& request) {
  const std::string* header = request.header("authorization");
  if (header == nullptr) {
    return {};
  }
  std::string_view v(*header);
  constexpr std::string_view kScheme = "bearer ";
  if (v.size() <= kScheme.size() ||
      !std::equal(kScheme.begin(), kScheme.end(), v.begin(), [](char a, char b) {
        return a == std::tolower(static_cast<unsigned char>(b));
      })) {
    return {};
  }
  v.remove_prefix(kScheme.size());
  while (!v.empty() && v.front() == ' ') {
    v.remove_prefix(1);
  }
  return v;
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

std::string parse_body(const Request& request, simdjson::dom::element* root) {
  thread_local simdjson::dom::parser parser;
  if (auto err = parser.parse(request.body).get(*root); err) {
    return std::string("malformed JSON: ") + simdjson::error_message(err);
  }
  return {};
}

bool body_json(Call& call, simdjson::dom::element* root) {
  if (!require_json(call)) {
    return false;
  }
  if (std::string error = parse_body(call.request, root); !error.empty()) {
    answer(call, error_response(400, "INVALID_JSON", error));
    return false;
  }
  return true;
}

bool body_object(Call& call, simdjson::dom::object* out, std::string_view shape) {
  simdjson::dom::element root;
  if (!body_json(call, &root)) {
    return false;
  }
  if (root.get_object().get(*out) != simdjson::SUCCESS) {
    answer(call, error_response(400, "VALIDATION_ERROR", shape));
    return false;
  }
  return true;
}

std::optional<std::string> filter_property(std::string_view name) {
  if (name.size() > 8 && name.substr(0, 7) == "filter[" && name.back() == ']') {
    return std::string(name.substr(7, name.size() - 8));
  }
  return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> filter_params(const Request& request) {
  std::vector<std::pair<std::string, std::string>> filters;
  for (const auto& [k, v] : request.query) {
    if (auto property = filter_property(k)) {
      filters.emplace_back(std::move(*property), v);
    }
  }
  return filters;
}

bool only_params(Call& call, std::initializer_list<std::string_view> known, ParamRules rules) {
  for (const auto& [k, v] : call.request.query) {
    if (rules.filters && filter_property(k)) {
      continue;
    }
    if (std::find(known.begin(), known.end(), k) != known.end()) {
      continue;
    }
    std::string message = "unknown query parameter '" + k + "'";
    if (rules.list_allowed) {
      message += "; allowed: ";
      for (auto it = known.begin(); it != known.end(); ++it) {
        message += it == known.begin() ? "" : ", ";
        message += *it;
      }
    }
    answer(call, error_response(400, "VALIDATION_ERROR", message));
    return false;
  }
  return true;
}

std::string param(const Call& call, std::string_view name) {
  const std::string* v = call.request.query_param(name);
  return v == nullptr ? std::string() : *v;
}

std::string zone_param(const Call& call) {
  std::string tz = param(call, "tz");
  return tz.empty() ? param(call, "timezone") : tz;
}

bool range_params(Call& call, TimeUs* from, TimeUs* to) {
  if (!time_param(call, "from", from) || !time_param(call, "to", to)) {
    return false;
  }
  if ((*from == 0) != (*to == 0)) {
    answer(call, error_response(400, "VALIDATION_ERROR", "give both 'from' and 'to', or neither"));
    return false;
  }
  return true;
}

}  // namespace tally::http::handlers
