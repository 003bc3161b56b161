// /v1/check, /v1/check/batch, /v1/reservations, /v1/authorize, and the customer limit routes.
//
// Every check answer carries the rate-limit headers of the most restrictive limit:
// X-RateLimit-Limit/-Remaining/-Reset (the de-facto headers), Retry-After on 429, and the
// IETF draft fields RateLimit-Policy and RateLimit (draft-ietf-httpapi-ratelimit-headers:
// `"name";q=<quota>;w=<window seconds>` and `"name";r=<remaining>;t=<seconds to reset>`).
#include <algorithm>

#include <simdjson.h>

#include "config/config.h"
#include "core/decimal.h"
#include "core/limits.h"
#include "core/time.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

namespace dom = simdjson::dom;

// Reads a JSON number or numeric string as decimal text.
bool amount_text(dom::element v, std::string* out) {
  std::string_view s;
  if (v.get_string().get(s) == simdjson::SUCCESS) {
    out->assign(s);
    return true;
  }
  if (v.is_int64() || v.is_uint64() || v.is_double()) {
    out->assign(simdjson::minify(v));
    return true;
  }
  return false;
}

std::string scalar_text(dom::element v) {
  std::string_view s;
  if (v.get_string().get(s) == simdjson::SUCCESS) {
    return std::string(s);
  }
  return simdjson::minify(v);
}

constexpr std::string_view kCheckShape = "a check must be a JSON object";

// A string field `name` into `out`. Returns an error message, or "".
std::string string_field(dom::element v, std::string_view name, std::string* out) {
  std::string_view s;
  if (v.get_string().get(s) != simdjson::SUCCESS) {
    return "'" + std::string(name) + "' must be a string";
  }
  out->assign(s);
  return "";
}

// consume: true, false or "reserve".
std::string read_consume(dom::element v, Consume* out) {
  bool b = false;
  std::string_view s;
  if (v.get_bool().get(b) == simdjson::SUCCESS) {
    *out = b ? Consume::kYes : Consume::kNo;
  } else if (v.get_string().get(s) == simdjson::SUCCESS && s == "reserve") {
    *out = Consume::kReserve;
  } else {
    return "'consume' must be true, false or \"reserve\"";
  }
  return "";
}

// event_id (or idempotency_key): a non-empty string.
std::string read_check_event_id(dom::element v, std::string* out) {
  std::string_view s;
  if (v.get_string().get(s) != simdjson::SUCCESS || s.empty()) {
    return "'event_id' must be a non-empty string";
  }
  out->assign(s);
  return "";
}

// ttl_seconds: a reservation's life, 1 s to a week.
std::string read_ttl_seconds(dom::element v, std::int64_t* out) {
  std::int64_t n = 0;
  if (v.get_int64().get(n) != simdjson::SUCCESS || n < 1 || n > 7 * 86400) {
    return "'ttl_seconds' must be an integer 1..604800";
  }
  *out = n;
  return "";
}

// properties: an object of scalars, each kept as its text.
std::string read_check_properties(dom::element v,
                                  std::vector<std::pair<std::string, std::string>>* out) {
  dom::object props;
  if (v.get_object().get(props) != simdjson::SUCCESS) {
    return "'properties' must be an object";
  }
  for (auto p : props) {
    if (p.value.is_object() || p.value.is_array()) {
      return "property '" + std::string(p.key) + "' must be a string, number or boolean";
    }
    out->emplace_back(std::string(p.key), scalar_text(p.value));
  }
  return "";
}

// Reads the field `k` of a check into `r`. Returns an error message, or "".
std::string read_check_field(std::string_view k, dom::element v, CheckRequest* r) {
  if (k == "customer" || k == "customer_id") {
    return string_field(v, "customer", &r->customer);
  }
  if (k == "meter") {
    return string_field(v, "meter", &r->meter);
  }
  if (k == "amount") {
    return amount_text(v, &r->amount) ? "" : "'amount' must be a number";
  }
  if (k == "consume") {
    return read_consume(v, &r->consume);
  }
  if (k == "feature") {
    return string_field(v, "feature", &r->feature);
  }
  if (k == "event_id" || k == "idempotency_key") {
    return read_check_event_id(v, &r->event_id);
  }
  if (k == "ttl_seconds") {
    return read_ttl_seconds(v, &r->reservation_ttl_seconds);
  }
  if (k == "properties") {
    return read_check_properties(v, &r->properties);
  }
  return "unknown field '" + std::string(k) + "'";
}

// Reads one check object into `r`, a fresh request whose customer is a customer key's own (""
// for an admin key). Returns an error message, or "" on success.
std::string read_check(dom::object obj, CheckRequest* r) {
  for (auto field : obj) {
    if (std::string err = read_check_field(field.key, field.value, r); !err.empty()) {
      return err;
    }
  }
  if (r->customer.empty()) {
    return "'customer' is required (a customer key supplies its own)";
  }
  if (r->meter.empty()) {
    return "'meter' is required";
  }
  return "";
}

unsigned check_status(const CheckResult& r) {
  if (r.allowed)
    return 200;
  if (r.reason == Denial::kFeatureNotEnabled || r.reason == Denial::kCustomerSuspended)
    return 403;
  if (r.reason == Denial::kInsufficientCredits)
    return 402;
  return 429;
}

std::string policy_name(const LimitState& s) {
  return s.meter + "-" + std::string(to_string(s.period));
}

std::int64_t ceil_seconds(TimeUs us) {
  return us <= 0 ? 0 : (us + core::kUsPerSecond - 1) / core::kUsPerSecond;
}

std::int64_t int_of(const Decimal& d) {
  return core::decimal_floor_int(d);
}

}  // namespace

void add_rate_limit_headers(Response& resp, const CheckResult& r, TimeUs now) {
  if (!r.has_rule || r.rule.unlimited) {
    resp.headers.emplace_back("X-RateLimit-Limit", "unlimited");
    resp.headers.emplace_back("X-RateLimit-Remaining", "unlimited");
  } else {
    const LimitState& s = r.rule;
    resp.headers.emplace_back("X-RateLimit-Limit", std::to_string(int_of(s.limit)));
    resp.headers.emplace_back("X-RateLimit-Remaining", std::to_string(int_of(s.remaining)));
    if (s.reset_us != 0) {
      resp.headers.emplace_back("X-RateLimit-Reset", std::to_string(ceil_seconds(s.reset_us)));
    }
    std::string policy;
    for (const auto& l : r.limits) {
      if (l.unlimited)
        continue;
      const TimeUs window =
          l.reset_us > l.window_start_us && l.reset_us != 0
              ? (l.period == LimitPeriod::kSecond   ? core::kUsPerSecond
                 : l.period == LimitPeriod::kMinute ? core::kUsPerMinute
                 : l.period == LimitPeriod::kHour   ? core::kUsPerHour
                                                    : l.reset_us - l.window_start_us)
              : 0;
      if (!policy.empty())
        policy += ", ";
      policy += "\"" + policy_name(l) + "\";q=" + std::to_string(int_of(l.limit));
      if (window > 0) {
        policy += ";w=" + std::to_string(ceil_seconds(window));
      }
    }
    resp.headers.emplace_back("RateLimit-Policy", policy);
    std::string current = "\"" + policy_name(s) + "\";r=" + std::to_string(int_of(s.remaining));
    if (s.reset_us != 0) {
      current += ";t=" + std::to_string(ceil_seconds(s.reset_us - now));
    }
    resp.headers.emplace_back("RateLimit", current);
  }
  // Every 429 says when to retry: 1 s when no time is known (a trial that is over, a lifetime
  // limit), as docs/api.md states.
  if (!r.allowed && check_status(r) == 429) {
    resp.headers.emplace_back(
        "Retry-After", std::to_string(std::max<std::int64_t>(1, ceil_seconds(r.retry_after_us))));
  }
}

namespace {

bool may_check_for(Call& call, const std::string& customer) {
  if (call.identity.customer.empty() || call.identity.customer == customer) {
    return true;
  }
  answer(call, error_response(403, "FORBIDDEN",
                              "this key may only check customer '" + call.identity.customer + "'"));
  return false;
}

constexpr std::size_t kBatchChecksMax = 100;
constexpr std::string_view kBatchShape = "the body must be {\"checks\": [ ... ]}";

// The checks of a batch, each read as POST /v1/check reads one: false after answering 400
// (naming the first at fault, or the count out of 1..kBatchChecksMax) or 403 (a check of
// another customer than a customer key's own).
bool read_batch_checks(Call& call, dom::array checks, std::vector<CheckRequest>* reqs) {
  std::size_t i = 0;
  for (dom::element el : checks) {
    CheckRequest req;
    req.customer = call.identity.customer;  // a customer key's own; "" for admin
    dom::object check;
    const std::string err = el.get_object().get(check) == simdjson::SUCCESS
                                ? read_check(check, &req)
                                : std::string(kCheckShape);
    if (!err.empty()) {
      answer(call,
             error_response(400, "VALIDATION_ERROR", "checks[" + std::to_string(i) + "]: " + err));
      return false;
    }
    if (!may_check_for(call, req.customer)) {
      return false;
    }
    reqs->push_back(std::move(req));
    ++i;
  }
  if (reqs->empty() || reqs->size() > kBatchChecksMax) {
    answer(call,
           error_response(400, "VALIDATION_ERROR",
                          "a batch holds 1 to " + std::to_string(kBatchChecksMax) + " checks"));
    return false;
  }
  return true;
}

// The body of POST /v1/check/batch, {"checks": [...]} and nothing else, as requests: false
// after answering.
bool read_batch(Call& call, std::vector<CheckRequest>* reqs) {
  dom::object obj;
  if (!body_object(call, &obj, kBatchShape)) {
    return false;
  }
  dom::array checks;
  if (obj["checks"].get_array().get(checks) != simdjson::SUCCESS) {
    answer(call, error_response(400, "VALIDATION_ERROR", kBatchShape));
    return false;
  }
  for (auto field : obj) {
    if (field.key != "checks") {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "unknown field '" + std::string(field.key) + "'"));
      return false;
    }
  }
  return read_batch_checks(call, checks, reqs);
}

// {"allowed", "results"}: 200, or the status of the first check denied on its own account (not
// for its batch), whose limit the rate-limit headers then describe (else the first check's).
Response batch_response(const std::vector<CheckResult>& results, TimeUs now) {
  const CheckResult* first_denied = nullptr;
  for (const auto& c : results) {
    if (!c.allowed && c.reason != Denial::kBatchDenied) {
      first_denied = &c;
      break;
    }
  }
  common::JsonWriter w;
  w.begin_object().key("allowed").value(first_denied == nullptr).key("results").begin_array();
  for (const auto& c : results) {
    write_check(w, c);
  }
  w.end_array().end_object();
  const CheckResult& head = first_denied != nullptr ? *first_denied : results.front();
  Response resp =
      json_response(first_denied != nullptr ? check_status(*first_denied) : 200, w.take());
  add_rate_limit_headers(resp, head, now);
  return resp;
}

}  // namespace

void check(Context& ctx, Call& call) {
  dom::object obj;
  if (!body_object(call, &obj, kCheckShape))
    return;
  CheckRequest req;
  if (call.identity.customer.size() > 0)
    req.customer = call.identity.customer;
  const std::string err = read_check(obj, &req);
  if (!err.empty()) {
    answer(call, error_response(400, "VALIDATION_ERROR", err));
    return;
  }
  if (!may_check_for(call, req.customer))
    return;
  Result<CheckResult> r = ctx.engine.check(req);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  write_check(w, *r);
  Response resp = json_response(check_status(*r), w.take());
  add_rate_limit_headers(resp, *r, ctx.engine.clock().now_us());
  answer(call, std::move(resp));
}

void check_batch(Context& ctx, Call& call) {
  std::vector<CheckRequest> reqs;
  if (!read_batch(call, &reqs)) {
    return;
  }
  Result<std::vector<CheckResult>> r = ctx.engine.check_batch(reqs);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  answer(call, batch_response(*r, ctx.engine.clock().now_us()));
}

void commit_reservation(Context& ctx, Call& call) {
  std::string amount;
  if (!call.request.body.empty()) {
    dom::object obj;
    if (!body_object(call, &obj))
      return;
    for (auto field : obj) {
      if (field.key == "amount") {
        if (!amount_text(field.value, &amount)) {
          answer(call, error_response(400, "VALIDATION_ERROR", "'amount' must be a number"));
          return;
        }
      } else {
        answer(call, error_response(400, "VALIDATION_ERROR",
                                    "unknown field '" + std::string(field.key) + "'"));
        return;
      }
    }
  }
  Result<CheckResult> r =
      ctx.engine.commit_reservation(call.params[0], amount, call.identity.customer);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  write_check(w, *r);
  Response resp = json_response(200, w.take());
  add_rate_limit_headers(resp, *r, ctx.engine.clock().now_us());
  answer(call, std::move(resp));
}

void release_reservation(Context& ctx, Call& call) {
  Status s = ctx.engine.release_reservation(call.params[0], call.identity.customer);
  if (!s.ok()) {
    answer(call, status_response(s));
    return;
  }
  answer(call, json_response(
                   200, "{\"released\":true,\"reservation_id\":" + [&] {
                     std::string out;
                     common::append_json_string(out, call.params[0]);
                     return out;
                   }() + "}"));
}

void customer_limits(Context& ctx, Call& call) {
  std::string customer = call.params[0];
  if (!scope_customer(call, &customer))
    return;
  Result<LimitsReport> r = ctx.engine.limits_report(customer);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("customer").value(r->customer).key("plan");
  if (r->plan.empty()) {
    w.null();
  } else {
    w.value(r->plan);
  }
  w.key("features").begin_array();
  for (const auto& f : r->features)
    w.value(f);
  w.end_array().key("limits").begin_array();
  for (const auto& l : r->limits)
    write_limit_state(w, l);
  w.end_array().key("warnings").begin_array();
  for (const auto& x : r->warnings)
    w.value(x);
  w.end_array().key("alert_thresholds").begin_array();
  for (const auto& t : r->alert_thresholds) {
    w.begin_object()
        .key("percent")
        .value(t.percent)
        .key("level")
        .value(to_string(t.level))
        .end_object();
  }
  w.end_array().end_object();
  answer(call, json_response(200, w.take()));
}

namespace {

// One element of an overrides array, `at` naming it ("overrides[2]"), into *out. Errors:
// kInvalidArgument with the 400's message.
Status read_override(dom::element el, const std::string& at, LimitOverride* out) {
  dom::object o;
  if (el.get_object().get(o) != simdjson::SUCCESS) {
    return Status::invalid_argument(at + " must be an object");
  }
  std::string period;
  bool has_amount = false;
  for (auto f : o) {
    std::string_view s;
    const std::string_view k = f.key;
    if ((k == "meter" || k == "period") && f.value.get_string().get(s) == simdjson::SUCCESS) {
      (k == "meter" ? out->meter : period).assign(s);
    } else if (k == "amount" && amount_text(f.value, &out->amount)) {
      has_amount = true;
    } else if (k == "days" && f.value.get_int64().get(out->days) == simdjson::SUCCESS) {
    } else if (k == "hard" && f.value.get_bool().get(out->hard) == simdjson::SUCCESS) {
    } else {
      return Status::invalid_argument(at + ": unknown or mistyped field '" + std::string(k) + "'");
    }
  }
  if (out->meter.empty() || period.empty() || !has_amount) {
    return Status::invalid_argument(at + " needs 'meter', 'period' and 'amount'");
  }
  Result<core::PeriodKind> p = core::parse_period(period);
  if (!p) {
    return Status::invalid_argument(at + ": " + p.error().message());
  }
  out->period = *p;
  return Status();
}

}  // namespace

void put_overrides(Context& ctx, Call& call) {
  // {"overrides": [...]}, or the bare array.
  dom::element root;
  if (!body_json(call, &root))
    return;
  dom::array arr;
  dom::object obj;
  const bool shaped = root.get_object().get(obj) == simdjson::SUCCESS
                          ? obj["overrides"].get_array().get(arr) == simdjson::SUCCESS
                          : root.get_array().get(arr) == simdjson::SUCCESS;
  if (!shaped) {
    answer(call,
           error_response(400, "VALIDATION_ERROR", "the body must be {\"overrides\": [ ... ]}"));
    return;
  }
  std::vector<LimitOverride> overrides;
  for (dom::element el : arr) {
    LimitOverride lo;
    if (Status s = read_override(el, "overrides[" + std::to_string(overrides.size()) + "]", &lo);
        !s.ok()) {
      answer(call, error_response(400, "VALIDATION_ERROR", s.message()));
      return;
    }
    overrides.push_back(std::move(lo));
  }
  Result<Customer> r = ctx.engine.set_overrides(call.params[0], overrides);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  write_customer(w, *r);
  answer(call, json_response(200, w.take()));
}

void reset_customer(Context& ctx, Call& call) {
  dom::object obj;
  if (!body_object(call, &obj, "the body must be {\"meter\": \"...\"}"))
    return;
  std::string meter;
  for (auto f : obj) {
    std::string_view s;
    if (f.key == "meter" && f.value.get_string().get(s) == simdjson::SUCCESS) {
      meter.assign(s);
    } else {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "unknown or mistyped field '" + std::string(f.key) + "'"));
      return;
    }
  }
  if (meter.empty()) {
    answer(call, error_response(400, "VALIDATION_ERROR", "'meter' is required"));
    return;
  }
  Result<Customer> r = ctx.engine.reset_period(call.params[0], meter, call.identity.key_id);
  if (!r) {
    answer(call, status_response(r.error()));
    return;
  }
  common::JsonWriter w;
  w.begin_object().key("reset").value(true).key("meter").value(meter).key("customer");
  write_customer(w, *r);
  w.end_object();
  answer(call, json_response(200, w.take()));
}

namespace {

// An authorize refusal: nginx takes 403 as a denial; X-Tally-Status says what the client gets.
Response authorize_denial(unsigned status, std::string_view reason, std::string_view message) {
  Response r = error_response(403, "FORBIDDEN", message);
  r.headers.emplace_back("X-Tally-Reason", std::string(reason));
  r.headers.emplace_back("X-Tally-Status", std::to_string(status));
  return r;
}

// The key of the original request (the configured header, else its bearer token) as an
// identity that may check; the denial when there is none.
std::optional<Response> authorize_identity(Context& ctx, const Request& request, Identity* out) {
  const std::string* key = request.header(ctx.options.authorize_key_header);
  std::string secret = key != nullptr ? *key : "";
  if (secret.empty()) {
    secret = bearer_token(request);
  }
  if (secret.empty()) {
    return authorize_denial(401, "missing_key", "no API key in the original request");
  }
  Result<Identity> id = ctx.engine.authenticate(secret);
  if (!id) {
    const bool suspended = id.error().code() == StatusCode::kPermissionDenied;
    return authorize_denial(suspended ? 403 : 401, suspended ? "customer_suspended" : "invalid_key",
                            id.error().message());
  }
  if (!has(id->scopes, Scope::kCheck)) {
    return authorize_denial(403, "missing_scope", "this key lacks the check scope");
  }
  *out = std::move(*id);
  return std::nullopt;
}

// The check's answer to nginx: 200 or 403, the rate-limit headers, and what decided.
Response authorize_answer(Context& ctx, const CheckResult& r, const std::string& customer) {
  common::JsonWriter w;
  write_check(w, r);
  Response resp = json_response(r.allowed ? 200 : 403, w.take());
  add_rate_limit_headers(resp, r, ctx.engine.clock().now_us());
  resp.headers.emplace_back(
      "X-Tally-Reason",
      r.allowed ? std::string_view(r.overage ? "overage" : "allowed") : denial_name(r.reason));
  resp.headers.emplace_back("X-Tally-Status", std::to_string(check_status(r)));
  resp.headers.emplace_back("X-Tally-Customer", customer);
  return resp;
}

}  // namespace

// GET /v1/authorize for nginx auth_request. The end customer's key comes from the original
// request's headers, which nginx forwards to the subrequest; the route rules map the original
// URI to a meter. nginx treats 2xx as allow, 401/403 as deny and anything else as an error, so
// denials are 403 with X-Tally-Reason (and X-Tally-Status: 429 for limits) for nginx to turn
// into the client's answer.
void authorize(Context& ctx, Call& call) {
  const std::string* uri = call.request.header("x-original-uri");
  const std::string* method = call.request.header("x-original-method");
  if (uri == nullptr || uri->empty()) {
    answer(call, authorize_denial(400, "missing_original_uri",
                                  "X-Original-URI is required (proxy_set_header in nginx)"));
    return;
  }
  Identity id;
  if (std::optional<Response> denial = authorize_identity(ctx, call.request, &id)) {
    answer(call, std::move(*denial));
    return;
  }
  if (id.customer.empty()) {
    Response r = json_response(200, "{\"allowed\":true,\"admin\":true}");
    r.headers.emplace_back("X-Tally-Reason", "admin");
    answer(call, std::move(r));
    return;
  }
  const std::string m = method != nullptr && !method->empty() ? *method : "GET";
  const auto& routes = ctx.options.routes;
  auto rule = std::find_if(routes.begin(), routes.end(), [&](const config::RouteRule& route) {
    return config::route_matches(route, m, *uri);
  });
  if (rule == routes.end()) {
    Response r = json_response(200, "{\"allowed\":true,\"metered\":false}");
    r.headers.emplace_back("X-Tally-Reason", "unmetered");
    r.headers.emplace_back("X-Tally-Customer", id.customer);
    answer(call, std::move(r));
    return;
  }
  CheckRequest req;
  req.customer = id.customer;
  req.meter = rule->meter;
  req.amount = core::format_decimal(rule->amount);
  req.feature = rule->feature;
  req.properties.emplace_back("route", rule->path);
  req.properties.emplace_back("method", m);
  Result<CheckResult> r = ctx.engine.check(req);
  if (!r) {
    // kInsufficientStorage: the usage could not be recorded: denied, as any consumption is
    // while the disk is full.
    const bool full = r.error().code() == StatusCode::kInsufficientStorage;
    answer(call, authorize_denial(full ? 507 : 500, full ? "insufficient_storage" : "error",
                                  r.error().message()));
    return;
  }
  answer(call, authorize_answer(ctx, *r, id.customer));
}

}  // namespace tally::http::handlers
