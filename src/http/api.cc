// The route table, authentication and request counting.
//
// Routes are matched on the raw request path split at '/', each segment percent-decoded on
// its own, so an id may hold any character, an encoded '/' included.
#include "http/api.h"

#include <cstdio>

#include "http/handlers/handlers.h"

namespace tally::http {

namespace {

enum class Need : std::uint8_t { kNone, kAnyKey, kRead, kIngest, kCheck, kAdmin };

using Fn = void (*)(handlers::Context&, handlers::Call&);

struct Route {
  const char* method;
  const char* pattern;  // segments; "{}" matches any one segment
  Need need;
  Fn fn;
};

const Route kRoutes[] = {
    {"GET", "/health", Need::kNone, handlers::health},
    {"GET", "/ready", Need::kNone, handlers::ready},
    {"GET", "/metrics", Need::kNone, handlers::metrics},
    {"POST", "/v1/events", Need::kIngest, handlers::ingest},
    {"POST", "/v1/events/ingest", Need::kIngest, handlers::ingest},
    {"GET", "/v1/events", Need::kRead, handlers::list_events},
    {"GET", "/v1/meters", Need::kAnyKey, handlers::list_meters},
    {"GET", "/v1/meters/{}/query", Need::kRead, handlers::query_meter},
    {"GET", "/v1/customers/{}/usage", Need::kRead, handlers::customer_usage},
    {"POST", "/v1/customers", Need::kAdmin, handlers::create_customer},
    {"GET", "/v1/customers", Need::kAdmin, handlers::list_customers},
    {"GET", "/v1/customers/{}", Need::kRead, handlers::get_customer},
    {"PATCH", "/v1/customers/{}", Need::kAdmin, handlers::update_customer},
    {"POST", "/v1/keys", Need::kAdmin, handlers::create_key},
    {"GET", "/v1/keys", Need::kAdmin, handlers::list_keys},
    {"DELETE", "/v1/keys/{}", Need::kAdmin, handlers::revoke_key},
    {"POST", "/v1/check", Need::kCheck, handlers::check},
    {"POST", "/v1/check/batch", Need::kCheck, handlers::check_batch},
    {"POST", "/v1/reservations/{}/commit", Need::kCheck, handlers::commit_reservation},
    {"POST", "/v1/reservations/{}/release", Need::kCheck, handlers::release_reservation},
    {"GET", "/v1/customers/{}/limits", Need::kRead, handlers::customer_limits},
    {"GET", "/v1/customers/{}/wallet", Need::kRead, handlers::get_wallet},
    {"GET", "/v1/customers/{}/wallet/transactions", Need::kRead, handlers::list_wallet_transactions},
    {"POST", "/v1/customers/{}/wallet/transactions", Need::kAdmin, handlers::create_wallet_transaction},
    {"PUT", "/v1/customers/{}/overrides", Need::kAdmin, handlers::put_overrides},
    {"POST", "/v1/customers/{}/reset", Need::kAdmin, handlers::reset_customer},
    {"GET", "/v1/authorize", Need::kNone, handlers::authorize},
    {"GET", "/v1/customers/{}/usage/history", Need::kRead, handlers::usage_history},
    {"GET", "/v1/customers/{}/report", Need::kRead, handlers::usage_report},
    {"GET", "/v1/organizations/{}/usage", Need::kAdmin, handlers::organization_usage},
    {"GET", "/v1/admin/usage/top", Need::kAdmin, handlers::top_customers},
    {"POST", "/v1/admin/archive", Need::kAdmin, handlers::archive_events},
    {"GET", "/v1/meters/{}/stats", Need::kRead, handlers::meter_stats},
    {"GET", "/v1/export", Need::kRead, handlers::export_data},
    {"GET", "/v1/alerts", Need::kRead, handlers::list_alerts},
    {"GET", "/v1/alerts/{}", Need::kRead, handlers::get_alert},
};

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
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
  if (const auto* a = r.header("authorization"); a != nullptr) {
    std::string_view v(*a);
    if (v.size() > 7 && (v.substr(0, 7) == "Bearer " || v.substr(0, 7) == "bearer ")) {
      v.remove_prefix(7);
      while (!v.empty() && v.front() == ' ') {
        v.remove_prefix(1);
      }
      return v;
    }
  }
  return {};
}

}  // namespace

Api::Api(Engine& engine, ApiOptions options) : engine_(engine), options_(options) {}

void Api::count(const char* route, unsigned status) {
  std::lock_guard lock(metrics_mutex_);
  ++requests_[{route, status}];
}

Responder Api::counting(const char* route, Responder respond) {
  return [this, route, respond = std::move(respond)](Response r) {
    count(route, r.status);
    respond(std::move(r));
  };
}

void Api::handle(Request&& request, Responder respond) {
  const auto segments = split_path(request.target);
  std::vector<std::string> params;
  const Route* found = nullptr;
  std::string allowed;
  for (const Route& r : kRoutes) {
    if (!match(r.pattern, segments, &params)) {
      continue;
    }
    if (request.method == r.method || (request.method == "HEAD" && std::string_view(r.method) == "GET")) {
      found = &r;
      break;
    }
    if (!allowed.empty()) {
      allowed += ", ";
    }
    allowed += r.method;
  }
  if (found == nullptr) {
    if (!allowed.empty()) {
      Response r = error_response(405, "METHOD_NOT_ALLOWED",
                                  "method " + request.method + " is not allowed here; use " + allowed);
      r.headers.emplace_back("Allow", allowed);
      count("unmatched", 405);
      respond(std::move(r));
      return;
    }
    count("unmatched", 404);
    respond(error_response(404, "NOT_FOUND", "no route for " + request.method + " " + request.path));
    return;
  }
  match(found->pattern, segments, &params);

  Call call;
  call.route = found->pattern;
  call.respond = counting(found->pattern, std::move(respond));
  if (found->need != Need::kNone) {
    const std::string_view key = presented_key(request);
    if (key.empty()) {
      call.respond(error_response(401, "UNAUTHORIZED", "Invalid or missing API key"));
      return;
    }
    auto id = engine_.authenticate(key);
    if (!id) {
      call.respond(status_response(id.error()));
      return;
    }
    call.identity = *id;
    const std::uint32_t scopes = id->scopes;
    const bool permitted = found->need == Need::kAnyKey ||
                           (found->need == Need::kRead && (scopes & kScopeRead) != 0) ||
                           (found->need == Need::kIngest && (scopes & kScopeIngest) != 0) ||
                           (found->need == Need::kCheck && (scopes & kScopeCheck) != 0) ||
                           (found->need == Need::kAdmin && id->admin());
    if (!permitted) {
      call.respond(error_response(403, "FORBIDDEN",
                                  found->need == Need::kAdmin ? "this route needs an admin key"
                                                              : "this key lacks the scope for this route"));
      return;
    }
    // Tally's own API rate limit, per key (off unless configured).
    CheckResult limit = engine_.limit_api_request(id->key_id);
    if (limit.has_rule) {
      Response headers_of;
      handlers::add_rate_limit_headers(headers_of, limit, engine_.clock().now_us());
      if (!limit.allowed) {
        Response r = error_response(429, "RATE_LIMITED", limit.message);
        r.headers = std::move(headers_of.headers);
        call.respond(std::move(r));
        return;
      }
      // Check answers carry the headers of their own limits; other answers those of this one.
      const std::string_view pattern = found->pattern;
      if (pattern.substr(0, 9) != "/v1/check" && pattern.substr(0, 17) != "/v1/reservations/") {
        call.respond = [inner = std::move(call.respond),
                        extra = std::move(headers_of.headers)](Response r) {
          r.headers.insert(r.headers.end(), extra.begin(), extra.end());
          inner(std::move(r));
        };
      }
    }
  }
  call.request = std::move(request);
  call.params = std::move(params);
  handlers::Context ctx{engine_, options_, *this};
  found->fn(ctx, call);
}

std::string Api::metrics_text() const {
  std::string out;
  char line[512];
  out += "# HELP tally_http_requests_total HTTP requests by route and status.\n";
  out += "# TYPE tally_http_requests_total counter\n";
  {
    std::lock_guard lock(metrics_mutex_);
    for (const auto& [k, n] : requests_) {
      std::snprintf(line, sizeof(line), "tally_http_requests_total{route=\"%s\",status=\"%u\"} %llu\n",
                    k.first.c_str(), k.second, static_cast<unsigned long long>(n));
      out += line;
    }
  }
  const EngineStats s = engine_.stats();
  auto counter = [&](const char* name, const char* help, std::uint64_t v, const char* type) {
    std::snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s %s\n%s %llu\n", name, help, name,
                  type, name, static_cast<unsigned long long>(v));
    out += line;
  };
  counter("tally_events_accepted_total", "Events accepted and stored.", s.events_accepted, "counter");
  counter("tally_events_rejected_total", "Events refused as invalid.", s.events_rejected, "counter");
  counter("tally_events_duplicate_total", "Events answered as duplicates.", s.events_duplicate, "counter");
  counter("tally_ingest_batches_total", "Ingest requests committed.", s.batches, "counter");
  counter("tally_commits_total", "Group commits written.", s.commits, "counter");
  counter("tally_customers", "Customers known.", s.customers, "gauge");
  counter("tally_aggregates_live", "Minute aggregates held in memory.", s.aggregates_live, "gauge");
  counter("tally_ingest_pending_events", "Events queued for the next commit.", s.pending_events, "gauge");
  counter("tally_check_events_not_durable",
          "Consumptions of answered checks whose usage events are not yet durable: what a crash "
          "would lose now (check_durability = \"async\").",
          s.check_events_not_durable, "gauge");
  counter("tally_store_bytes", "Approximate bytes of the store on disk.", s.store_bytes, "gauge");
  if (s.disk_known) {
    counter("tally_disk_free_bytes", "Free bytes on the data directory's filesystem.",
            s.disk_free_bytes, "gauge");
    counter("tally_disk_reserve_bytes",
            "Free bytes below which writes are refused ([storage] disk_reserve_bytes).",
            s.disk_reserve_bytes, "gauge");
  }
  counter("tally_writes_refused", "1 while writes are refused for lack of disk space, else 0.",
          s.writes_refused ? 1 : 0, "gauge");
  auto histogram = [&](const char* name, const char* help, const std::vector<std::uint64_t>& counts,
                       std::uint64_t sum_us) {
    std::snprintf(line, sizeof(line), "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    out += line;
    for (std::size_t i = 0; i < counts.size(); ++i) {
      if (i < s.latency_bounds_us.size()) {
        std::snprintf(line, sizeof(line), "%s_bucket{le=\"%g\"} %llu\n", name,
                      static_cast<double>(s.latency_bounds_us[i]) / 1e6,
                      static_cast<unsigned long long>(counts[i]));
      } else {
        std::snprintf(line, sizeof(line), "%s_bucket{le=\"+Inf\"} %llu\n", name,
                      static_cast<unsigned long long>(counts[i]));
      }
      out += line;
    }
    std::snprintf(line, sizeof(line), "%s_sum %g\n%s_count %llu\n", name,
                  static_cast<double>(sum_us) / 1e6, name,
                  static_cast<unsigned long long>(counts.empty() ? 0 : counts.back()));
    out += line;
  };
  histogram("tally_commit_duration_seconds", "Time to write and sync one group commit.",
            s.commit_latency_counts, s.commit_latency_sum_us);
  histogram("tally_ingest_batch_duration_seconds", "Time from an ingest request's parse to its acknowledgement.",
            s.batch_latency_counts, s.batch_latency_sum_us);
  return out;
}

}  // namespace tally::http
