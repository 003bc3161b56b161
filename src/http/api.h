// Tally's HTTP API: routes, authentication, JSON codecs, and the translation of engine
// results and Status codes into HTTP answers. Thin by design: every decision of substance is
// the engine's. docs/api.md is the reference for what each route accepts and answers.
//
// A request is decided in two stages, matching the server's (see server.h). On its head alone,
// admit() finds the route and checks everything the headers and the path can tell: 404/405, the
// key (401), its scope (403), a customer key naming another customer in the path (403) and the
// API rate limit (429). Only an admitted request has its body read; its route then runs, inline
// on the I/O thread for quick ones, or on the work pool for those that may scan or take long
// (a full pool answers 503).
//
// A /v1 request without a key may present the dashboard's session cookie instead: it stands
// for the key the session was made from, looked up again each time (scopes, customer,
// revocation, suspension), and a write made with it needs the session's X-CSRF-Token header.
//
// Thread safety: admit(), handle() and metrics_text() may be called concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <tally/engine.h>

#include "config/config.h"
#include "dashboard/sessions.h"
#include "http/live_rates.h"
#include "http/request_metrics.h"
#include "http/server.h"
#include "http/work_pool.h"

namespace tally::http {

// What the handlers need of the configuration, filled by `tally serve` from the file it loaded
// (the engine keeps its own copy to itself).
struct ApiOptions {
  std::int64_t future_skew_seconds_max = 300;  // default `to` of queries reaches this far
  int scan_threads = 2;                        // threads of the work pool
  std::uint32_t scan_queue_max = 256;          // requests waiting for it; beyond, 503
  // A page of GET /v1/events (and of an export) stops scanning after this long and returns
  // what it found, with a cursor to go on from. 0 = no budget.
  std::uint32_t page_budget_ms = 200;
  // Dashboard sessions: how long one lasts from sign-in, and how many may be open.
  std::uint32_t dashboard_session_seconds = 3600;
  std::uint32_t dashboard_sessions_max = 10'000;
  // [credits] currency: the currency of costs in event listings and of the Lago-shaped answers.
  std::string currency = "USD";
  // GET /v1/authorize: the header of the original request that carries the end customer's key
  // ([enforcement] authorize_key_header), and the [[routes]] that map its URI to a meter.
  std::string authorize_key_header = "x-api-key";
  std::vector<config::RouteRule> routes;
};

// One route of the route table: what docs/openapi.json must describe (src/http/openapi_test.cc
// compares the two).
struct RouteInfo {
  std::string method;   // "GET", "POST", ...
  std::string pattern;  // "/v1/customers/{}/usage": each "{}" matches one path segment
  // What the route needs: "none" (no key), "key" (any valid key), or a key holding the scope
  // "read", "ingest" or "check", or an admin key ("admin").
  std::string needs;
};

// Every route the server answers, in the order they are matched; the routes of other systems'
// APIs (docs/compat.md) included.
std::vector<RouteInfo> route_table();

// The OpenAPI 3.1 document of Tally's own API, served at GET /openapi.json: docs/openapi.json,
// embedded in the binary when it is built.
std::string_view openapi_document();

class Api {
 public:
  Api(Engine& engine, ApiOptions options);
  // Stops the work pool (see stop()).
  ~Api();

  // The server's Admit: the head stage (see the file comment).
  Admission admit(const Request& head);
  // Both stages at once, for callers that hold the whole request.
  void handle(Request&& request, Responder respond);

  // The server whose connection counters /metrics shows; null = none. REQUIRES: called before
  // requests arrive; `server` outlives this Api or is unset first.
  void set_server(const Server* server) { server_ = server; }

  // Finishes the requests running on the work pool and drops the waiting ones (answered as
  // dropped). Call it after the server stopped and before the engine goes. Idempotent.
  void stop() { pool_.stop(); }

  // The Prometheus text exposition of the server's and the engine's counters.
  std::string metrics_text() const;

  // The request counters and latency histograms that metrics_text() shows.
  const RequestMetrics& request_metrics() const { return request_metrics_; }

  // The recent samples of those counters behind GET /v1/admin/live (thread-safe).
  LiveRates& live_rates() const { return live_rates_; }

  // Context handed to every route handler.
  struct Call {
    Request request;
    Responder respond;
    Identity identity;
    std::vector<std::string> params;  // the {placeholders} of the route, in order
    const char* route = "";
  };

 private:
  // Wraps `respond` to count the answer under (route, method) and, for a route with a latency
  // kind, observe the time since `start` (a steady-clock time in ns).
  Responder counting(std::size_t route, std::size_t method, std::int64_t start_ns,
                     Responder respond);
  // Refuses at the head stage, counted under `route` (a route number; kRoutes' size =
  // unmatched).
  Admission refuse(std::size_t route, std::size_t method, Response response);
  // What runs an admitted request of `route` (a route number) once its body is read: its
  // handler, inline or on the pool, answering with `extra_headers` added and counted.
  Handler handler_of(std::size_t route, std::size_t method, Identity identity,
                     std::vector<std::string> params,
                     std::vector<std::pair<std::string, std::string>> extra_headers);

  Engine& engine_;
  ApiOptions options_;
  WorkPool pool_;
  dashboard::SessionStore sessions_;
  const Server* server_ = nullptr;
  RequestMetrics request_metrics_;
  mutable LiveRates live_rates_;
};

}  // namespace tally::http
