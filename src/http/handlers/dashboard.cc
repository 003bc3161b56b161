// The dashboard's own routes, all under /dashboard/: the page, its embedded assets, and the
// session that signing in with an API key opens (POST, GET and DELETE /dashboard/session).
//
// The page reads and writes through Tally's own /v1 API with the session cookie; Api::admit
// takes the cookie as the credential of the key the session was made from (scopes, customer,
// revocation and suspension all apply) and asks writes for the session's CSRF token. Nothing
// here decides what a key may see: that stays with the /v1 routes.
//
// Security: the key is sent once, in the sign-in body, and never stored in the browser (the
// cookie is a random token, HttpOnly, SameSite=Strict, Secure behind TLS). Every answer of the
// dashboard carries a strict Content-Security-Policy (no inline script or style) and refuses
// framing; the page inserts every value as text (web/dashboard/app.js).
#include <simdjson.h>

#include "common/crypto.h"
#include "dashboard/assets.h"
#include "http/handlers/handlers.h"

namespace tally::http::handlers {

namespace {

constexpr std::string_view kCookieName = "tally_session";
constexpr std::string_view kCsp =
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'";

void add_security_headers(Response& r) {
  r.headers.emplace_back("Content-Security-Policy", std::string(kCsp));
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  r.headers.emplace_back("X-Frame-Options", "DENY");
  r.headers.emplace_back("Referrer-Policy", "no-referrer");
}

// Behind a TLS-terminating proxy (X-Forwarded-Proto: https) the cookie is marked Secure.
bool behind_tls(const Request& r) {
  const std::string* proto = r.header("x-forwarded-proto");
  return proto != nullptr && (*proto == "https" || *proto == "HTTPS");
}

std::string session_cookie(const Request& r, std::string_view value, std::int64_t max_age_s) {
  std::string c(kCookieName);
  c.append("=").append(value).append("; Path=/; HttpOnly; SameSite=Strict; Max-Age=");
  c.append(std::to_string(max_age_s));
  if (behind_tls(r)) {
    c.append("; Secure");
  }
  return c;
}

// A browser's request from another site names it in Origin: refused, so that no page elsewhere
// can sign a visitor in or out (SameSite=Strict already keeps the cookie off such requests).
bool same_origin(Call& call) {
  const std::string* origin = call.request.header("origin");
  const std::string* host = call.request.header("host");
  if (origin == nullptr || *origin == "null" || host == nullptr) {
    return origin == nullptr;
  }
  std::string_view o(*origin);
  const auto scheme_end = o.find("://");
  if (scheme_end != std::string_view::npos) {
    o.remove_prefix(scheme_end + 3);
  }
  if (o == *host) {
    return true;
  }
  answer(call, error_response(403, "FORBIDDEN",
                              "a dashboard session can only be opened or ended from this "
                              "server's own pages (Origin '" +
                                  *origin + "')"));
  return false;
}

void write_session(common::JsonWriter& w, const Identity& id, const std::string& csrf,
                   std::int64_t expires_at_us) {
  w.begin_object().key("key_id").value(id.key_id).key("customer");
  if (id.customer.empty()) {
    w.null();
  } else {
    w.value(id.customer);
  }
  w.key("admin").value(id.admin()).key("scopes");
  write_scopes(w, id.scopes);
  w.key("csrf_token").value(csrf).key("expires_at").value(time_text(expires_at_us)).end_object();
}

Response no_session(std::string_view why) {
  return error_response(401, "UNAUTHORIZED", why);
}

}  // namespace

std::string_view session_token(const Request& r) {
  for (const auto& [name, value] : r.headers) {
    if (name != "cookie") {
      continue;
    }
    std::string_view rest(value);
    while (!rest.empty()) {
      const auto semi = rest.find(';');
      std::string_view pair = rest.substr(0, semi);
      rest = semi == std::string_view::npos ? std::string_view() : rest.substr(semi + 1);
      while (!pair.empty() && pair.front() == ' ') {
        pair.remove_prefix(1);
      }
      const auto eq = pair.find('=');
      if (eq != std::string_view::npos && pair.substr(0, eq) == kCookieName) {
        return pair.substr(eq + 1);
      }
    }
  }
  return {};
}

void dashboard_page(Context&, Call& call) {
  Response r;
  if (call.request.path == "/dashboard") {
    // The page's links are relative to /dashboard/.
    r.status = 308;
    r.content_type = "text/plain; charset=utf-8";
    r.body = "/dashboard/\n";
    r.headers.emplace_back("Location", "/dashboard/");
    answer(call, std::move(r));
    return;
  }
  r.content_type = "text/html; charset=utf-8";
  r.body = std::string(dashboard::index_html());
  r.headers.emplace_back("Cache-Control", "no-cache");
  add_security_headers(r);
  answer(call, std::move(r));
}

void dashboard_asset(Context&, Call& call) {
  const dashboard::Asset* a = dashboard::find_asset(call.params[0]);
  if (a == nullptr) {
    answer(call, error_response(404, "NOT_FOUND",
                                "no dashboard asset '" + call.params[0] +
                                    "' (asset names change with their content: reload the page)"));
    return;
  }
  Response r;
  r.content_type = std::string(a->content_type);
  r.body = std::string(a->body);
  r.headers.emplace_back("Cache-Control", "public, max-age=31536000, immutable");
  r.headers.emplace_back("ETag", "\"" + std::string(a->sha256_hex.substr(0, 32)) + "\"");
  add_security_headers(r);
  answer(call, std::move(r));
}

void create_session(Context& ctx, Call& call) {
  simdjson::dom::object body;
  if (!same_origin(call) ||
      !body_object(call, &body, "the body must be {\"key\": \"<an API key>\"}")) {
    return;
  }
  std::string_view key;
  for (auto field : body) {
    if (field.key != "key") {
      answer(call, error_response(400, "VALIDATION_ERROR",
                                  "unknown field '" + std::string(field.key) +
                                      "'; the body is {\"key\": \"<an API key>\"}"));
      return;
    }
    if (field.value.get_string().get(key) != simdjson::SUCCESS) {
      answer(call, error_response(400, "VALIDATION_ERROR", "'key' must be a string"));
      return;
    }
  }
  if (key.empty()) {
    answer(call, error_response(400, "VALIDATION_ERROR", "'key' is required"));
    return;
  }
  Result<Identity> id = ctx.engine.authenticate(key);
  if (!id) {
    answer(call, status_response(id.error()));
    return;
  }
  if (!id->admin() && !has(id->scopes, Scope::kRead)) {
    answer(call, error_response(403, "FORBIDDEN",
                                "the dashboard needs an admin key or a key with the read scope"));
    return;
  }
  Result<dashboard::NewSession> s = ctx.sessions.create(id->key_id);
  if (!s) {
    Response r = error_response(503, "SERVICE_UNAVAILABLE", s.error().message());
    r.headers.emplace_back("Retry-After", "60");
    answer(call, std::move(r));
    return;
  }
  common::JsonWriter w;
  write_session(w, *id, s->csrf_token, s->expires_at_us);
  Response r = json_response(201, w.take());
  r.headers.emplace_back("Set-Cookie",
                         session_cookie(call.request, s->token, ctx.sessions.ttl_us() / 1'000'000));
  r.headers.emplace_back("Cache-Control", "no-store");
  add_security_headers(r);
  answer(call, std::move(r));
}

void get_session(Context& ctx, Call& call) {
  const std::string_view token = session_token(call.request);
  if (token.empty()) {
    answer(call, no_session("no dashboard session: sign in with an API key"));
    return;
  }
  std::optional<dashboard::Session> s = ctx.sessions.find(token);
  if (!s) {
    answer(call, no_session("the dashboard session has expired or ended: sign in again"));
    return;
  }
  Result<Identity> id = ctx.engine.authenticate_key_id(s->key_id);
  if (!id) {
    if (id.error().code() == StatusCode::kUnauthenticated) {
      ctx.sessions.end(token);  // its key was revoked
    }
    answer(call, status_response(id.error()));
    return;
  }
  common::JsonWriter w;
  write_session(w, *id, s->csrf_token, s->expires_at_us);
  Response r = json_response(200, w.take());
  r.headers.emplace_back("Cache-Control", "no-store");
  answer(call, std::move(r));
}

void end_session(Context& ctx, Call& call) {
  if (!same_origin(call)) {
    return;
  }
  const std::string_view token = session_token(call.request);
  std::optional<dashboard::Session> s = ctx.sessions.find(token);
  if (!s) {
    answer(call, no_session("no dashboard session to end"));
    return;
  }
  const std::string* csrf = call.request.header("x-csrf-token");
  if (csrf == nullptr || !common::constant_time_equal(*csrf, s->csrf_token)) {
    answer(call, error_response(403, "CSRF_TOKEN_INVALID",
                                "signing out needs the session's X-CSRF-Token header"));
    return;
  }
  ctx.sessions.end(token);
  Response r;
  r.status = 204;
  r.headers.emplace_back("Set-Cookie", session_cookie(call.request, "", 0));
  answer(call, std::move(r));
}

}  // namespace tally::http::handlers
