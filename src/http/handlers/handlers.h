// The route handlers, one file per resource, and the small helpers they share.
#pragma once

#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <tally/engine.h>

#include "http/api.h"
#include "http/json_util.h"

namespace simdjson::dom {
class element;
class object;
}  // namespace simdjson::dom

namespace tally::http::handlers {

using Call = Api::Call;

struct Context {
  Engine& engine;
  const ApiOptions& options;
  const Api& api;
  WorkPool& pool;                     // for the pieces of a streamed answer (see export.cc)
  dashboard::SessionStore& sessions;  // the dashboard's sign-ins (see dashboard.cc)
};

// events.cc
void ingest(Context& ctx, Call& call);
void list_events(Context& ctx, Call& call);
// meters.cc
void list_meters(Context& ctx, Call& call);
void query_meter(Context& ctx, Call& call);
void customer_usage(Context& ctx, Call& call);
// customers.cc
void create_customer(Context& ctx, Call& call);
void list_customers(Context& ctx, Call& call);
void get_customer(Context& ctx, Call& call);
void update_customer(Context& ctx, Call& call);
void create_key(Context& ctx, Call& call);
void list_keys(Context& ctx, Call& call);
void revoke_key(Context& ctx, Call& call);
// check.cc
void check(Context& ctx, Call& call);
void check_batch(Context& ctx, Call& call);
void commit_reservation(Context& ctx, Call& call);
void release_reservation(Context& ctx, Call& call);
void customer_limits(Context& ctx, Call& call);
void put_overrides(Context& ctx, Call& call);
void reset_customer(Context& ctx, Call& call);
void authorize(Context& ctx, Call& call);
// The X-RateLimit-*, Retry-After and draft RateLimit-Policy / RateLimit headers of a check.
void add_rate_limit_headers(Response& resp, const CheckResult& r, TimeUs now);
// wallet.cc
void get_wallet(Context& ctx, Call& call);
void create_wallet_transaction(Context& ctx, Call& call);
void list_wallet_transactions(Context& ctx, Call& call);
// ratelimit.cc: Tally's ad-hoc limits, and Unkey's routes (under /unkey)
void ratelimit(Context& ctx, Call& call);
void unkey_limit(Context& ctx, Call& call);
void unkey_multi_limit(Context& ctx, Call& call);
// A refusal in Unkey's error shape (the routes under /unkey).
Response unkey_refusal(unsigned status, std::string_view detail);
// openmeter.cc: OpenMeter's routes (under /openmeter)
void openmeter_ingest(Context& ctx, Call& call);
void openmeter_list_meters(Context& ctx, Call& call);
void openmeter_get_meter(Context& ctx, Call& call);
void openmeter_query(Context& ctx, Call& call);
// A refusal in OpenMeter's shape (application/problem+json).
Response openmeter_refusal(unsigned status, std::string_view detail);
// lago.cc: Lago's routes (under /lago)
void lago_create_event(Context& ctx, Call& call);
void lago_create_batch_events(Context& ctx, Call& call);
void lago_create_customer(Context& ctx, Call& call);
void lago_get_customer(Context& ctx, Call& call);
void lago_current_usage(Context& ctx, Call& call);
void lago_create_wallet(Context& ctx, Call& call);
void lago_list_wallets(Context& ctx, Call& call);
void lago_get_wallet(Context& ctx, Call& call);
void lago_create_wallet_transaction(Context& ctx, Call& call);
void lago_list_wallet_transactions(Context& ctx, Call& call);
// A refusal in Lago's error shape ({"status", "error", "code"}).
Response lago_refusal(unsigned status, std::string_view detail);
// prices.cc
void list_prices(Context& ctx, Call& call);
void reprice_customer(Context& ctx, Call& call);
// reports.cc
void usage_history(Context& ctx, Call& call);
void usage_report(Context& ctx, Call& call);
void organization_usage(Context& ctx, Call& call);
void top_customers(Context& ctx, Call& call);
void admin_customers(Context& ctx, Call& call);
void meter_stats(Context& ctx, Call& call);
// admin.cc: the operator's organizations, live rates and audit log; a customer's denials
void admin_organizations(Context& ctx, Call& call);
void admin_live(Context& ctx, Call& call);
void admin_audit(Context& ctx, Call& call);
void customer_denials(Context& ctx, Call& call);
// export.cc
void export_data(Context& ctx, Call& call);
// alerts.cc
void list_alerts(Context& ctx, Call& call);
void get_alert(Context& ctx, Call& call);
// archive.cc
void archive_events(Context& ctx, Call& call);

// dashboard.cc: the page, its assets and its session, under /dashboard/
void dashboard_page(Context& ctx, Call& call);
void dashboard_asset(Context& ctx, Call& call);
void create_session(Context& ctx, Call& call);
void get_session(Context& ctx, Call& call);
void end_session(Context& ctx, Call& call);
// The value of the request's dashboard session cookie (`tally_session`); empty when none.
std::string_view session_token(const Request& r);

// ops.cc
void health(Context& ctx, Call& call);
void ready(Context& ctx, Call& call);
void metrics(Context& ctx, Call& call);
void openapi(Context& ctx, Call& call);

// ---- helpers (handlers.cc) ------------------------------------------------------------------

// Parses an RFC 3339 query parameter. Returns false (and answers 400) when it is malformed.
bool time_param(Call& call, std::string_view name, TimeUs* out);
// Parses an unsigned integer query parameter within [1, max]; false after answering 400.
bool uint_param(Call& call, std::string_view name, std::uint32_t max, std::uint32_t* out);
// Parses an optional unsigned integer query parameter, any value of 32 bits (0 included); false
// after answering 400.
bool offset_param(Call& call, std::string_view name, std::uint32_t* out);
// The customer a read may see: a customer key sees only its own customer; returns false after
// answering 403 when `requested` names another one.
bool scope_customer(Call& call, std::string* requested);
// The 403 a key gets for naming `requested`, a customer other than its own; nullopt when it may
// (an admin key, or its own customer). Api::admit applies it to the customer in the path.
std::optional<Response> customer_refusal(const Identity& identity, const std::string& requested);
// The credentials of an `Authorization: Bearer <token>` header (the scheme in any case, spaces
// after it skipped); empty when there is none.
std::string_view bearer_token(const Request& request);
// True when the request's Content-Type is JSON or absent; otherwise answers 415.
bool require_json(Call& call);
// Parses the request body as JSON into `root` (valid until the next body parsed on this
// thread). Returns "" or "malformed JSON: ..." and answers nothing, for the compat routes
// that answer in their own error shape.
std::string parse_body(const Request& request, simdjson::dom::element* root);
// require_json, then parse_body: false after answering 415, or 400 INVALID_JSON.
bool body_json(Call& call, simdjson::dom::element* root);
// Parses a JSON body that must be one object (after require_json): false after answering 400
// INVALID_JSON, or 400 VALIDATION_ERROR with `shape` when it is not an object. `out` is valid
// until the next body parsed on this thread.
bool body_object(Call& call, simdjson::dom::object* out,
                 std::string_view shape = "the body must be a JSON object");

// The property of a `filter[property]` query parameter; nullopt for any other name.
std::optional<std::string> filter_property(std::string_view name);
// Every filter[property]=value of the query, in order.
std::vector<std::pair<std::string, std::string>> filter_params(const Request& request);

struct ParamRules {
  bool filters = false;       // filter[...] parameters are also allowed
  bool list_allowed = false;  // the refusal names the allowed parameters ("; allowed: a, b")
};

// Refuses a query parameter not in `known`: false after answering 400 VALIDATION_ERROR
// "unknown query parameter 'x'".
bool only_params(Call& call, std::initializer_list<std::string_view> known, ParamRules rules = {});
// A query parameter's value, "" when absent.
std::string param(const Call& call, std::string_view name);
// `tz` or its alias `timezone`.
std::string zone_param(const Call& call);
// `from` and `to`: both or neither. False after answering 400.
bool range_params(Call& call, TimeUs* from, TimeUs* to);

void answer(Call& call, Response r);

// The `window` query parameter, when given: minute, hour, day, week or month. False after
// answering 400 VALIDATION_ERROR naming the text ("" included).
bool window_param(Call& call, Window* out);
// A window's text from a query: "" = none (one total row); else as window_param.
bool window_text(Call& call, std::string_view text, std::optional<Window>* out);

// A closed set's query parameter (include/tally/types.h), read by `parse` (parse_alert_level,
// ...): absent or "" leaves `out` empty; another text the set does not have answers 400
// VALIDATION_ERROR `refusal` and returns false.
template <typename E>
bool enum_param(Call& call, std::string_view name, std::optional<E> (*parse)(std::string_view),
                std::string_view refusal, std::optional<E>* out) {
  const std::string* v = call.request.query_param(name);
  if (v == nullptr || v->empty()) {
    return true;
  }
  *out = parse(*v);
  if (!*out) {
    answer(call, error_response(400, "VALIDATION_ERROR", std::string(refusal)));
    return false;
  }
  return true;
}

}  // namespace tally::http::handlers
