// The route table, authentication and request counting.
//
// Routes are matched on the raw request path split at '/', each segment percent-decoded on
// its own, so an id may hold any character, an encoded '/' included.
//
// The head stage (Api::admit) and the whole request share one path: handle() is admit() then
// the admitted handler, so no check exists twice and a key is authenticated (and its use
// counted, its rate limit charged) once per request.
#include "http/api.h"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <memory>

#include "common/assert.h"
#include "common/crypto.h"
#include "common/histogram.h"
#include "http/handlers/handlers.h"

namespace tally::http {

namespace {

enum class Need : std::uint8_t { kNone, kAnyKey, kRead, kIngest, kCheck, kAdmin };

// Where a route runs: inline on the I/O thread (quick: point reads, checks, ingest, which the
// engine takes asynchronously), or on the work pool (scans of stored events or ledgers,
// exports, reports over many aggregates or customers, archiving).
enum class Run : std::uint8_t { kInline, kPool };
constexpr Run kInline = Run::kInline;
constexpr Run kPool = Run::kPool;

using Fn = void (*)(handlers::Context&, handlers::Call&);

struct Route {
  const char* method;
  const char* pattern;  // segments; "{}" matches any one segment
  Need need;
  Fn fn;
  Run run = kInline;
  // The latency histogram of /metrics that times its requests (docs/api.md#get-metrics).
  LatencyKind latency = LatencyKind::kNone;
  // Which X-RateLimit-* headers its answers carry when Tally's own API rate limit is on: the
  // API limit's (false), or (kOwnRateHeaders) the route's own, written by its handler (checks
  // and reservations: the limits they decide on).
  bool own_rate_headers = false;
};

constexpr bool kOwnRateHeaders = true;

constexpr LatencyKind kIngestTimed = LatencyKind::kIngest;
constexpr LatencyKind kCheckTimed = LatencyKind::kCheck;
constexpr LatencyKind kQueryTimed = LatencyKind::kQuery;

// The routes of another system's API, whose refusals (401, 403, 404, 405, 429) are in that
// system's error shape: docs/compat.md.
constexpr std::string_view kUnkeyPrefix = "/unkey/";
constexpr std::string_view kOpenMeterPrefix = "/openmeter/";
constexpr std::string_view kLagoPrefix = "/lago/";

const Route kRoutes[] = {
    {"GET", "/health", Need::kNone, handlers::health},
    {"GET", "/ready", Need::kNone, handlers::ready},
    {"GET", "/metrics", Need::kNone, handlers::metrics},
    {"GET", "/openapi.json", Need::kNone, handlers::openapi},
    {"POST", "/v1/events", Need::kIngest, handlers::ingest, kInline, kIngestTimed},
    {"POST", "/v1/events/ingest", Need::kIngest, handlers::ingest, kInline, kIngestTimed},
    {"GET", "/v1/events", Need::kRead, handlers::list_events, kPool},
    {"GET", "/v1/meters", Need::kAnyKey, handlers::list_meters},
    {"GET", "/v1/meters/{}/query", Need::kRead, handlers::query_meter, kPool, kQueryTimed},
    {"GET", "/v1/customers/{}/usage", Need::kRead, handlers::customer_usage, kPool, kQueryTimed},
    {"POST", "/v1/customers", Need::kAdmin, handlers::create_customer},
    {"GET", "/v1/customers", Need::kAdmin, handlers::list_customers, kPool},
    {"GET", "/v1/customers/{}", Need::kRead, handlers::get_customer},
    {"PATCH", "/v1/customers/{}", Need::kAdmin, handlers::update_customer},
    {"POST", "/v1/keys", Need::kAdmin, handlers::create_key},
    {"GET", "/v1/keys", Need::kAdmin, handlers::list_keys, kPool},
    {"DELETE", "/v1/keys/{}", Need::kAdmin, handlers::revoke_key},
    {"POST", "/v1/check", Need::kCheck, handlers::check, kInline, kCheckTimed, kOwnRateHeaders},
    {"POST", "/v1/check/batch", Need::kCheck, handlers::check_batch, kInline, kCheckTimed,
     kOwnRateHeaders},
    {"POST", "/v1/ratelimit", Need::kCheck, handlers::ratelimit, kInline, kCheckTimed},
    {"POST", "/unkey/v2/ratelimit.limit", Need::kCheck, handlers::unkey_limit, kInline,
     kCheckTimed},
    {"POST", "/unkey/v2/ratelimit.multiLimit", Need::kCheck, handlers::unkey_multi_limit, kInline,
     kCheckTimed},
    {"POST", "/openmeter/api/v1/events", Need::kIngest, handlers::openmeter_ingest, kInline,
     kIngestTimed},
    {"GET", "/openmeter/api/v1/meters", Need::kAnyKey, handlers::openmeter_list_meters},
    {"GET", "/openmeter/api/v1/meters/{}", Need::kAnyKey, handlers::openmeter_get_meter},
    {"GET", "/openmeter/api/v1/meters/{}/query", Need::kRead, handlers::openmeter_query, kPool,
     kQueryTimed},
    {"POST", "/lago/api/v1/events", Need::kIngest, handlers::lago_create_event, kInline,
     kIngestTimed},
    {"POST", "/lago/api/v1/events/batch", Need::kIngest, handlers::lago_create_batch_events,
     kInline, kIngestTimed},
    {"POST", "/lago/api/v1/customers", Need::kAdmin, handlers::lago_create_customer},
    {"GET", "/lago/api/v1/customers/{}", Need::kRead, handlers::lago_get_customer},
    {"GET", "/lago/api/v1/customers/{}/current_usage", Need::kRead, handlers::lago_current_usage,
     kPool, kQueryTimed},
    {"POST", "/lago/api/v1/wallets", Need::kAdmin, handlers::lago_create_wallet},
    {"GET", "/lago/api/v1/wallets", Need::kRead, handlers::lago_list_wallets},
    {"GET", "/lago/api/v1/wallets/{}", Need::kRead, handlers::lago_get_wallet},
    {"GET", "/lago/api/v1/wallets/{}/wallet_transactions", Need::kRead,
     handlers::lago_list_wallet_transactions, kPool},
    {"POST", "/lago/api/v1/wallet_transactions", Need::kAdmin,
     handlers::lago_create_wallet_transaction},
    {"POST", "/v1/reservations/{}/commit", Need::kCheck, handlers::commit_reservation, kInline,
     LatencyKind::kNone, kOwnRateHeaders},
    {"POST", "/v1/reservations/{}/release", Need::kCheck, handlers::release_reservation, kInline,
     LatencyKind::kNone, kOwnRateHeaders},
    {"GET", "/v1/customers/{}/limits", Need::kRead, handlers::customer_limits},
    {"GET", "/v1/customers/{}/denials", Need::kRead, handlers::customer_denials},
    {"GET", "/v1/customers/{}/wallet", Need::kRead, handlers::get_wallet},
    {"GET", "/v1/customers/{}/wallet/transactions", Need::kRead, handlers::list_wallet_transactions,
     kPool},
    {"POST", "/v1/customers/{}/wallet/transactions", Need::kAdmin,
     handlers::create_wallet_transaction},
    {"GET", "/v1/prices", Need::kAnyKey, handlers::list_prices},
    {"POST", "/v1/customers/{}/reprice", Need::kAdmin, handlers::reprice_customer, kPool},
    {"PUT", "/v1/customers/{}/overrides", Need::kAdmin, handlers::put_overrides},
    {"POST", "/v1/customers/{}/reset", Need::kAdmin, handlers::reset_customer},
    {"GET", "/v1/authorize", Need::kNone, handlers::authorize, kInline, kCheckTimed},
    {"GET", "/v1/customers/{}/usage/history", Need::kRead, handlers::usage_history, kPool,
     kQueryTimed},
    {"GET", "/v1/customers/{}/report", Need::kRead, handlers::usage_report, kPool},
    {"GET", "/v1/organizations/{}/usage", Need::kAdmin, handlers::organization_usage, kPool},
    {"GET", "/v1/admin/usage/top", Need::kAdmin, handlers::top_customers, kPool},
    {"GET", "/v1/admin/customers", Need::kAdmin, handlers::admin_customers, kPool},
    {"GET", "/v1/admin/organizations", Need::kAdmin, handlers::admin_organizations, kPool},
    {"GET", "/v1/admin/live", Need::kAdmin, handlers::admin_live},
    {"GET", "/v1/admin/audit", Need::kAdmin, handlers::admin_audit, kPool},
    {"POST", "/v1/admin/archive", Need::kAdmin, handlers::archive_events, kPool},
    {"GET", "/v1/meters/{}/stats", Need::kRead, handlers::meter_stats, kPool},
    {"GET", "/v1/export", Need::kRead, handlers::export_data, kPool},
    {"GET", "/v1/alerts", Need::kRead, handlers::list_alerts, kPool},
    {"GET", "/v1/alerts/{}", Need::kRead, handlers::get_alert},
    // The dashboard (its data comes from the routes above, with the session cookie).
    {"GET", "/dashboard", Need::kNone, handlers::dashboard_page},
    {"GET", "/dashboard/assets/{}", Need::kNone, handlers::dashboard_asset},
    {"POST", "/dashboard/session", Need::kNone, handlers::create_session},
    {"GET", "/dashboard/session", Need::kNone, handlers::get_session},
    {"DELETE", "/dashboard/session", Need::kNone, handlers::end_session},
};

int hex_value(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
        continue;
      }
    }
    out += s[i];
  }
  return out;
}

std::vector<std::string_view> split_path(std::string_view target) {
  target = target.substr(0, target.find('?'));
  std::vector<std::string_view> out;
  std::size_t start = 1;
  while (start <= target.size()) {
    auto slash = target.find('/', start);
    if (slash == std::string_view::npos) {
      slash = target.size();
    }
    out.push_back(target.substr(start, slash - start));
    start = slash + 1;
  }
  if (!out.empty() && out.back().empty()) {
    out.pop_back();  // a trailing slash
  }
  return out;
}

bool match(const char* pattern, const std::vector<std::string_view>& segments,
           std::vector<std::string>* params) {
  auto pat = split_path(pattern);
  if (pat.size() != segments.size()) {
    return false;
  }
  params->clear();
  for (std::size_t i = 0; i < pat.size(); ++i) {
    if (pat[i] == "{}") {
      if (segments[i].empty()) {
        return false;
      }
      params->push_back(percent_decode(segments[i]));
    } else if (pat[i] != segments[i]) {
      return false;
    }
  }
  return true;
}

std::string_view presented_key(const Request& r) {
  if (const auto* k = r.header("x-api-key"); k != nullptr && !k->empty()) {
    return *k;
  }
  return handlers::bearer_token(r);
}

const char* need_name(Need need) {
  switch (need) {
    case Need::kNone:
      return "none";
    case Need::kAnyKey:
      return "key";
    case Need::kRead:
      return "read";
    case Need::kIngest:
      return "ingest";
    case Need::kCheck:
      return "check";
    case Need::kAdmin:
      return "admin";
  }
  return "admin";
}

constexpr std::size_t kRouteCount = std::size(kRoutes);
constexpr std::size_t kUnmatchedRoute = kRouteCount;

std::vector<const char*> route_patterns() {
  std::vector<const char*> out;
  for (const Route& r : kRoutes) {
    out.push_back(r.pattern);
  }
  return out;
}

std::int64_t steady_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---- the steps of admission (Api::admit) ----------------------------------------------------

// The API a path belongs to, whose error shape its refusals take.
enum class Shape : std::uint8_t { kTally, kUnkey, kOpenMeter, kLago };

Shape shape_of(std::string_view path) {
  if (path.substr(0, kUnkeyPrefix.size()) == kUnkeyPrefix) {
    return Shape::kUnkey;
  }
  if (path.substr(0, kOpenMeterPrefix.size()) == kOpenMeterPrefix) {
    return Shape::kOpenMeter;
  }
  if (path.substr(0, kLagoPrefix.size()) == kLagoPrefix) {
    return Shape::kLago;
  }
  return Shape::kTally;
}

// A refusal in `shape` (`code` is Tally's machine code; the compat shapes have their own).
Response refused(Shape shape, unsigned status, std::string_view code, const std::string& message) {
  switch (shape) {
    case Shape::kUnkey:
      return handlers::unkey_refusal(status, message);
    case Shape::kOpenMeter:
      return handlers::openmeter_refusal(status, message);
    case Shape::kLago:
      return handlers::lago_refusal(status, message);
    case Shape::kTally:
      break;
  }
  return error_response(status, code, message);
}

// The route of `head` (its {placeholders} in `params`), or nullptr with `allowed` listing the
// methods the path has (empty: no route has the path).
const Route* find_route(const Request& head, const std::vector<std::string_view>& segments,
                        std::vector<std::string>* params, std::string* allowed) {
  for (const Route& r : kRoutes) {
    if (!match(r.pattern, segments, params)) {
      continue;
    }
    if (head.method == r.method || (head.method == "HEAD" && std::string_view(r.method) == "GET")) {
      return &r;
    }
    if (!allowed->empty()) {
      *allowed += ", ";
    }
    *allowed += r.method;
  }
  return nullptr;
}

// The 404 or 405 of a request no route takes.
Response unrouted(const Request& head, Shape shape, const std::string& allowed) {
  if (allowed.empty()) {
    return refused(shape, 404, "NOT_FOUND", "no route for " + head.method + " " + head.path);
  }
  Response r = refused(shape, 405, "METHOD_NOT_ALLOWED",
                       "method " + head.method + " is not allowed here; use " + allowed);
  r.headers.emplace_back("Allow", allowed);
  return r;
}

// Who presents the request: the key it carries or, without one on Tally's own routes, the
// dashboard session of its cookie (whose writes need the session's CSRF token). A refusal
// (401, 403) when it is nobody.
std::optional<Response> identify(Engine& engine, dashboard::SessionStore& sessions,
                                 const Request& head, Shape shape, Identity* identity) {
  const std::string_view key = presented_key(head);
  const std::string_view token = key.empty() && std::string_view(head.path).substr(0, 4) == "/v1/"
                                     ? handlers::session_token(head)
                                     : std::string_view();
  std::optional<dashboard::Session> session;
  if (!token.empty()) {
    session = sessions.find(token);
    if (!session) {
      return error_response(401, "UNAUTHORIZED",
                            "the dashboard session has expired or ended: sign in again");
    }
  } else if (key.empty()) {
    return refused(shape, 401, "UNAUTHORIZED", "Invalid or missing API key");
  }
  auto id = session ? engine.authenticate_key_id(session->key_id) : engine.authenticate(key);
  if (session && !id && id.error().code() == StatusCode::kUnauthenticated) {
    sessions.end(token);  // its key was revoked
  }
  if (!id) {
    return shape == Shape::kTally
               ? status_response(id.error())
               : refused(shape, status_response(id.error()).status, "", id.error().message());
  }
  *identity = std::move(*id);
  if (session && head.method != "GET" && head.method != "HEAD") {
    const std::string* csrf = head.header("x-csrf-token");
    if (csrf == nullptr || !common::constant_time_equal(*csrf, session->csrf_token)) {
      return error_response(403, "CSRF_TOKEN_INVALID",
                            "a write made with the dashboard's session cookie needs the "
                            "session's X-CSRF-Token header");
    }
  }
  return std::nullopt;
}

// Whether `identity` may take a route that needs `need`; a customer key naming another
// customer in the path (the routes under /v1/customers/{id}) may not. A refusal when not.
std::optional<Response> authorize_route(const Route& route, const std::vector<std::string>& params,
                                        const Identity& identity, Shape shape) {
  const Scope scopes = identity.scopes;
  const bool permitted = route.need == Need::kAnyKey ||
                         (route.need == Need::kRead && has(scopes, Scope::kRead)) ||
                         (route.need == Need::kIngest && has(scopes, Scope::kIngest)) ||
                         (route.need == Need::kCheck && has(scopes, Scope::kCheck)) ||
                         (route.need == Need::kAdmin && identity.admin());
  if (!permitted) {
    return refused(shape, 403, "FORBIDDEN",
                   route.need == Need::kAdmin ? "this route needs an admin key"
                                              : "this key lacks the scope for this route");
  }
  if (std::string_view(route.pattern).substr(0, 16) == "/v1/customers/{}" && !params.empty()) {
    return handlers::customer_refusal(identity, params[0]);
  }
  return std::nullopt;
}

// Tally's own API rate limit, per key (off unless configured): a 429 when the key is over it;
// otherwise the headers the answer carries (none for routes whose answers carry their own).
std::optional<Response> api_rate_limit(Engine& engine, const Route& route, const Identity& identity,
                                       Shape shape,
                                       std::vector<std::pair<std::string, std::string>>* headers) {
  CheckResult limit = engine.limit_api_request(identity.key_id);
  if (!limit.has_rule) {
    return std::nullopt;
  }
  Response headers_of;
  handlers::add_rate_limit_headers(headers_of, limit, engine.clock().now_us());
  if (!limit.allowed) {
    Response r = refused(shape, 429, "RATE_LIMITED", limit.message);
    r.headers = std::move(headers_of.headers);
    return r;
  }
  if (!route.own_rate_headers) {
    *headers = std::move(headers_of.headers);
  }
  return std::nullopt;
}

// ---- the sections of /metrics (Api::metrics_text) ------------------------------------------

// A metric's "# HELP" and "# TYPE" lines.
void append_metric_head(std::string& out, std::string_view name, std::string_view type,
                        std::string_view help) {
  out.append("# HELP ").append(name).append(" ").append(help).append("\n");
  out.append("# TYPE ").append(name).append(" ").append(type).append("\n");
}

// A metric of one value.
void append_metric(std::string& out, std::string_view name, std::string_view type,
                   std::string_view help, std::string_view value) {
  append_metric_head(out, name, type, help);
  out.append(name).append(" ").append(value).append("\n");
}

void append_counter(std::string& out, std::string_view name, std::string_view help,
                    std::uint64_t value) {
  append_metric(out, name, "counter", help, std::to_string(value));
}

void append_gauge(std::string& out, std::string_view name, std::string_view help,
                  std::uint64_t value) {
  append_metric(out, name, "gauge", help, std::to_string(value));
}

// Two values of one counter, told apart by `reason`.
void append_by_reason(std::string& out, std::string_view name, std::string_view help,
                      std::string_view a, std::uint64_t value_a, std::string_view b,
                      std::uint64_t value_b) {
  append_metric_head(out, name, "counter", help);
  out.append(name).append("{reason=\"").append(a).append("\"} ").append(std::to_string(value_a));
  out.append("\n").append(name).append("{reason=\"").append(b).append("\"} ");
  out.append(std::to_string(value_b)).append("\n");
}

// The HTTP server's connections: open, refused and closed by its limits.
void append_server_metrics(std::string& out, const ServerStats& c) {
  append_gauge(out, "tally_http_connections", "Open HTTP connections.", c.connections_live);
  append_by_reason(out, "tally_http_connections_refused_total",
                   "New connections closed at once: server.connections_max reached, or the client "
                   "address had server.connections_per_address_max.",
                   "connections_max", c.refused_connections_max, "per_address",
                   c.refused_per_address);
  append_by_reason(out, "tally_http_connections_closed_total",
                   "Connections closed by the server's limits: idle ones closed to make room for "
                   "new clients, and ones without a complete request head in "
                   "server.header_timeout_ms.",
                   "idle_evicted", c.idle_evicted, "header_timeout", c.header_timeouts);
}

// The work pool of long requests.
void append_work_pool_metrics(std::string& out, const WorkPoolStats& p) {
  append_gauge(out, "tally_http_work_pool_queued",
               "Long requests (scans, exports, reports) waiting for a thread.", p.queued);
  append_gauge(out, "tally_http_work_pool_running", "Long requests running.", p.running);
  append_counter(out, "tally_http_work_pool_rejected_total",
                 "Long requests answered 503 because the queue was full.", p.rejected);
}

// Events, commits and the state in memory they feed.
void append_ingest_metrics(std::string& out, const EngineStats& s) {
  append_counter(out, "tally_events_accepted_total", "Events accepted and stored.",
                 s.events_accepted);
  append_counter(out, "tally_events_rejected_total", "Events refused as invalid.",
                 s.events_rejected);
  append_counter(out, "tally_events_duplicate_total", "Events answered as duplicates.",
                 s.events_duplicate);
  append_counter(out, "tally_ingest_batches_total", "Ingest requests committed.", s.batches);
  append_counter(out, "tally_commits_total", "Group commits written.", s.commits);
  append_gauge(out, "tally_customers", "Customers known.", s.customers);
  append_gauge(out, "tally_aggregates_live", "Minute aggregates held in memory.",
               s.aggregates_live);
  append_gauge(out, "tally_aggregates_from_checkpoint",
               "1 when this start read the aggregates from the checkpoint file (a clean stop's or "
               "a periodic one).",
               s.aggregates_from_checkpoint ? 1 : 0);
  append_gauge(out, "tally_ingest_pending_events", "Events queued for the next commit.",
               s.pending_events);
  append_gauge(out, "tally_check_events_not_durable",
               "Consumptions of answered checks whose usage events are not yet durable: what a "
               "crash would lose now (check_durability = \"async\").",
               s.check_events_not_durable);
}

// The store on disk, the disk's free space and whether writes (and the server) are ready.
void append_storage_metrics(std::string& out, const EngineStats& s, bool ready) {
  append_gauge(out, "tally_store_bytes", "Approximate bytes of the store on disk.", s.store_bytes);
  if (s.disk_known) {
    append_gauge(out, "tally_disk_free_bytes", "Free bytes on the data directory's filesystem.",
                 s.disk_free_bytes);
    append_gauge(out, "tally_disk_reserve_bytes",
                 "Free bytes below which writes are refused ([storage] disk_reserve_bytes).",
                 s.disk_reserve_bytes);
  }
  append_gauge(out, "tally_writes_refused",
               "1 while writes are refused for lack of disk space, else 0.",
               s.writes_refused ? 1 : 0);
  append_gauge(out, "tally_ready",
               "1 when GET /ready answers 200 (the store answers a read, writes are accepted), "
               "else 0.",
               ready ? 1 : 0);
}

// Alerts fired and their deliveries (the outbox), the oldest pending one's age as of `now`.
void append_alert_metrics(std::string& out, const EngineStats& s, TimeUs now) {
  append_counter(out, "tally_alerts_total",
                 "Alerts fired and stored (thresholds and low balances).", s.alerts);
  append_gauge(out, "tally_alert_deliveries_pending",
               "Alert deliveries waiting to be sent or retried (the outbox).",
               s.deliveries_pending);
  const TimeUs age_us = s.oldest_pending_delivery_at_us == 0
                            ? 0
                            : std::max<TimeUs>(0, now - s.oldest_pending_delivery_at_us);
  append_metric(out, "tally_alert_deliveries_oldest_pending_seconds", "gauge",
                "Age of the oldest alert delivery still pending; 0 when none is.",
                common::seconds_text(static_cast<std::uint64_t>(age_us) * 1000));
  append_counter(out, "tally_alert_deliveries_failed_total",
                 "Alert deliveries that gave up (retry_for passed, or a permanent refusal).",
                 s.deliveries_failed);
  append_counter(out, "tally_alert_delivery_attempts_failed_total",
                 "Alert delivery attempts that failed (each retry counts).",
                 s.delivery_attempts_failed);
}

// One of the engine's histograms, whose bounds and sum are in microseconds.
void append_engine_histogram(std::string& out, const EngineStats& s, std::string_view name,
                             std::string_view help, const std::vector<std::uint64_t>& counts,
                             std::uint64_t sum_us) {
  common::LatencyHistogram::Snapshot h;
  for (std::uint64_t b : s.latency_bounds_us) {
    h.bounds_ns.push_back(b * 1000);
  }
  h.cumulative = counts;
  h.sum_ns = sum_us * 1000;
  common::append_histogram(out, name, help, h);
}

void append_engine_histograms(std::string& out, const EngineStats& s) {
  append_engine_histogram(out, s, "tally_commit_duration_seconds",
                          "Time to write and sync one group commit.", s.commit_latency_counts,
                          s.commit_latency_sum_us);
  append_engine_histogram(out, s, "tally_ingest_batch_duration_seconds",
                          "Time from an ingest request's parse to its acknowledgement, in the "
                          "engine.",
                          s.batch_latency_counts, s.batch_latency_sum_us);
}

}  // namespace

std::vector<RouteInfo> route_table() {
  std::vector<RouteInfo> out;
  for (const Route& r : kRoutes) {
    out.push_back({r.method, r.pattern, need_name(r.need)});
  }
  return out;
}

Api::Api(Engine& engine, ApiOptions options)
    : engine_(engine),
      options_(options),
      pool_(options.scan_threads, options.scan_queue_max),
      sessions_(engine.clock(), std::int64_t{options.dashboard_session_seconds} * 1'000'000,
                options.dashboard_sessions_max),
      request_metrics_(route_patterns()) {}

Api::~Api() {
  stop();
}

Responder Api::counting(std::size_t route, std::size_t method, std::int64_t start_ns,
                        Responder respond) {
  return [this, route, method, start_ns, respond = std::move(respond)](Response r) {
    request_metrics_.count(route, method, r.status);
    const LatencyKind kind = kRoutes[route].latency;
    if (kind != LatencyKind::kNone) {
      request_metrics_.observe(kind, static_cast<std::uint64_t>(steady_ns() - start_ns));
    }
    respond(std::move(r));
  };
}

Admission Api::refuse(std::size_t route, std::size_t method, Response response) {
  request_metrics_.count(route, method, response.status);
  Admission a;
  a.refusal = std::move(response);
  return a;
}

Admission Api::admit(const Request& head) {
  const Shape shape = shape_of(head.path);
  const std::size_t method = RequestMetrics::method_index(head.method);
  const auto segments = split_path(head.target);
  std::vector<std::string> params;
  std::string allowed;
  const Route* found = find_route(head, segments, &params, &allowed);
  if (found == nullptr) {
    return refuse(kUnmatchedRoute, method, unrouted(head, shape, allowed));
  }
  match(found->pattern, segments, &params);
  const auto route = static_cast<std::size_t>(found - kRoutes);

  Identity identity;
  std::vector<std::pair<std::string, std::string>> extra_headers;
  if (found->need != Need::kNone) {
    std::optional<Response> refusal = identify(engine_, sessions_, head, shape, &identity);
    if (!refusal) {
      refusal = authorize_route(*found, params, identity, shape);
    }
    if (!refusal) {
      refusal = api_rate_limit(engine_, *found, identity, shape, &extra_headers);
    }
    if (refusal) {
      return refuse(route, method, std::move(*refusal));
    }
  }
  Admission admission;
  admission.handler =
      handler_of(route, method, std::move(identity), std::move(params), std::move(extra_headers));
  return admission;
}

Handler Api::handler_of(std::size_t route, std::size_t method, Identity identity,
                        std::vector<std::string> params,
                        std::vector<std::pair<std::string, std::string>> extra_headers) {
  const Route* found = &kRoutes[route];
  return [this, found, route, method, identity = std::move(identity), params = std::move(params),
          extra_headers = std::move(extra_headers)](Request&& request, Responder respond) mutable {
    auto call = std::make_shared<Call>();
    call->route = found->pattern;
    call->respond = counting(route, method, steady_ns(), std::move(respond));
    if (!extra_headers.empty()) {
      call->respond = [inner = std::move(call->respond),
                       extra = std::move(extra_headers)](Response r) {
        r.headers.insert(r.headers.end(), extra.begin(), extra.end());
        inner(std::move(r));
      };
    }
    call->identity = std::move(identity);
    call->request = std::move(request);
    call->params = std::move(params);
    const Fn fn = found->fn;
    if (found->run == kInline) {
      handlers::Context ctx{engine_, options_, *this, pool_, sessions_};
      fn(ctx, *call);
      return;
    }
    const bool queued = pool_.try_submit([this, fn, call] {
      handlers::Context ctx{engine_, options_, *this, pool_, sessions_};
      try {
        fn(ctx, *call);
      } catch (const std::exception& e) {
        call->respond(
            error_response(500, "INTERNAL_ERROR", std::string("handler failed: ") + e.what()));
      }
    });
    if (!queued) {
      Response r = error_response(503, "SERVICE_UNAVAILABLE",
                                  "the server is busy with other long requests (scans, exports, "
                                  "reports); retry shortly");
      r.headers.emplace_back("Retry-After", "1");
      call->respond(std::move(r));
    }
  };
}

void Api::handle(Request&& request, Responder respond) {
  Admission admission = admit(request);
  if (admission.refusal) {
    respond(std::move(*admission.refusal));
    return;
  }
  admission.handler(std::move(request), std::move(respond));
}

std::string Api::metrics_text() const {
  std::string out;
  request_metrics_.append_text(out);
  const EngineStats s = engine_.stats();
  if (server_ != nullptr) {
    append_server_metrics(out, server_->stats());
  }
  append_work_pool_metrics(out, pool_.stats());
  append_ingest_metrics(out, s);
  append_storage_metrics(out, s, engine_.ready().ok());
  append_alert_metrics(out, s, engine_.clock().now_us());
  append_engine_histograms(out, s);
  // TALLY_BUG hits of this process (logged and survived in release builds): should stay 0.
  append_counter(out, "tally_bugs_total", "Internal consistency checks that failed (TALLY_BUG).",
                 common::bugs_total());
  return out;
}

}  // namespace tally::http
