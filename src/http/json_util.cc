#include "http/json_util.h"

namespace tally::http {

Response json_response(unsigned status, std::string body) {
  Response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

Response error_response(unsigned status, std::string_view code, std::string_view message,
                        std::string_view details_json) {
  common::JsonWriter w;
  w.begin_object().key("error").value(code).key("message").value(message);
  if (!details_json.empty()) {
    w.key("details").raw(details_json);
  }
  w.end_object();
  return json_response(status, w.take());
}

Response status_response(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return json_response(200, "{}");
    case StatusCode::kInvalidArgument:
      if (s.details_json() == kQueryTooLargeDetails) {
        return error_response(400, "QUERY_TOO_LARGE", s.message());
      }
      if (s.details_json() == kInvalidJsonDetails) {
        return error_response(400, "INVALID_JSON", s.message());
      }
      return error_response(400, "VALIDATION_ERROR", s.message(), s.details_json());
    case StatusCode::kUnauthenticated:
      return error_response(401, "UNAUTHORIZED", s.message());
    case StatusCode::kPermissionDenied:
      return error_response(403, "FORBIDDEN", s.message());
    case StatusCode::kNotFound:
      return error_response(404, "NOT_FOUND", s.message());
    case StatusCode::kAlreadyExists:
      return error_response(409, "CONFLICT", s.message());
    case StatusCode::kUnprocessable:
      return error_response(422, "UNPROCESSABLE_ENTITY", s.message(), s.details_json());
    case StatusCode::kResourceExhausted:
    case StatusCode::kUnavailable: {
      Response r = error_response(503, "SERVICE_UNAVAILABLE", s.message());
      r.headers.emplace_back("Retry-After", "1");
      return r;
    }
    case StatusCode::kPayloadTooLarge:
      return error_response(413, "PAYLOAD_TOO_LARGE", s.message());
    case StatusCode::kInsufficientStorage:
      // Writes wait for free space; reads, dry-run checks and /health go on (docs/operations.md).
      return error_response(507, "INSUFFICIENT_STORAGE", s.message());
    case StatusCode::kNotImplemented:
      return error_response(501, "NOT_IMPLEMENTED", s.message());
    case StatusCode::kIOError:
    case StatusCode::kCorruption:
    case StatusCode::kInternal:
      return error_response(500, "INTERNAL_ERROR", s.message());
  }
  return error_response(500, "INTERNAL_ERROR", s.message());
}

}  // namespace tally::http
