// The Status -> HTTP map (status_response) and the request kit's pure helpers (handlers.h):
// every code answers one status and error code, and the engine's own words for a row cap and a
// too-large batch come out as the API has always answered them.
#include "http/json_util.h"

#include <gtest/gtest.h>

#include "http/handlers/handlers.h"

namespace tally::http {
namespace {

std::string header(const Response& r, std::string_view name) {
  for (const auto& [k, v] : r.headers) {
    if (k == name) {
      return v;
    }
  }
  return "";
}

TEST(StatusResponse, EveryCodeHasItsStatusAndErrorCode) {
  struct Case {
    Status status;
    unsigned http;
    std::string body;
  };

  const Case cases[] = {
      {Status::invalid_argument("bad", R"({"field":"x"})"), 400,
       R"({"error":"VALIDATION_ERROR","message":"bad","details":{"field":"x"}})"},
      {Status::unauthenticated("who"), 401, R"({"error":"UNAUTHORIZED","message":"who"})"},
      {Status::permission_denied("no"), 403, R"({"error":"FORBIDDEN","message":"no"})"},
      {Status::not_found("gone"), 404, R"({"error":"NOT_FOUND","message":"gone"})"},
      {Status::already_exists("twice"), 409, R"({"error":"CONFLICT","message":"twice"})"},
      {Status::unprocessable("policy"), 422,
       R"({"error":"UNPROCESSABLE_ENTITY","message":"policy"})"},
      {Status::invalid_argument("rows", std::string(kQueryTooLargeDetails)), 400,
       R"({"error":"QUERY_TOO_LARGE","message":"rows"})"},
      {Status::invalid_argument("not json", std::string(kInvalidJsonDetails)), 400,
       R"({"error":"INVALID_JSON","message":"not json"})"},
      {Status::payload_too_large("events"), 413,
       R"({"error":"PAYLOAD_TOO_LARGE","message":"events"})"},
      {Status::resource_exhausted("full"), 503,
       R"({"error":"SERVICE_UNAVAILABLE","message":"full"})"},
      {Status::unavailable("later"), 503, R"({"error":"SERVICE_UNAVAILABLE","message":"later"})"},
      {Status::insufficient_storage("disk"), 507,
       R"({"error":"INSUFFICIENT_STORAGE","message":"disk"})"},
      {Status::io_error("io"), 500, R"({"error":"INTERNAL_ERROR","message":"io"})"},
      {Status::corruption("bad bytes"), 500, R"({"error":"INTERNAL_ERROR","message":"bad bytes"})"},
      {Status::internal("bug"), 500, R"({"error":"INTERNAL_ERROR","message":"bug"})"},
      {Status::not_implemented("no wallets in the cluster mode yet"), 501,
       R"({"error":"NOT_IMPLEMENTED","message":"no wallets in the cluster mode yet"})"},
  };
  for (const auto& c : cases) {
    const Response r = status_response(c.status);
    EXPECT_EQ(r.status, c.http) << c.status.to_string();
    EXPECT_EQ(r.body, c.body) << c.status.to_string();
    EXPECT_EQ(header(r, "Retry-After"), c.http == 503 ? "1" : "") << c.status.to_string();
  }
}

TEST(StatusResponse, EveryCodeHasANameAndAnAnswer) {
  // The map is total: a code added to status.h without a case here falls to the default 500.
  for (int c = 1; c <= static_cast<int>(StatusCode::kNotImplemented); ++c) {
    const Status s(static_cast<StatusCode>(c), "m");
    EXPECT_NE(status_code_name(s.code()), "UNKNOWN") << c;
    const Response r = status_response(s);
    EXPECT_GE(r.status, 400u) << c;
    if (s.code() != StatusCode::kIOError && s.code() != StatusCode::kCorruption &&
        s.code() != StatusCode::kInternal) {
      EXPECT_NE(r.status, 500u) << s.to_string();
    }
  }
}

Request with_authorization(std::string value) {
  Request r;
  r.headers = {{"authorization", std::move(value)}};
  return r;
}

TEST(RequestKit, BearerTokenTakesTheSchemeInAnyCase) {
  EXPECT_EQ(handlers::bearer_token(with_authorization("Bearer abc")), "abc");
  EXPECT_EQ(handlers::bearer_token(with_authorization("bearer abc")), "abc");
  EXPECT_EQ(handlers::bearer_token(with_authorization("BEARER abc")), "abc");
  EXPECT_EQ(handlers::bearer_token(with_authorization("Bearer   abc")), "abc");
  EXPECT_EQ(handlers::bearer_token(with_authorization("Bearer ")), "");
  EXPECT_EQ(handlers::bearer_token(with_authorization("Basic abc")), "");
  EXPECT_EQ(handlers::bearer_token(with_authorization("Bearerabc")), "");
  EXPECT_EQ(handlers::bearer_token(Request{}), "");
}

TEST(RequestKit, FilterParameters) {
  EXPECT_EQ(handlers::filter_property("filter[model]"), "model");
  EXPECT_EQ(handlers::filter_property("filter[]"), std::nullopt);
  EXPECT_EQ(handlers::filter_property("filter[model"), std::nullopt);
  EXPECT_EQ(handlers::filter_property("model"), std::nullopt);
  Request r;
  r.query = {{"filter[a]", "1"}, {"from", "x"}, {"filter[b]", "2"}};
  const std::vector<std::pair<std::string, std::string>> want = {{"a", "1"}, {"b", "2"}};
  EXPECT_EQ(handlers::filter_params(r), want);
}

}  // namespace
}  // namespace tally::http
