// Status and Result<T>: Tally's error values.
//
// Errors are values, never exceptions, on every path Tally owns. A Status is a code plus an
// optional message and optional details (a JSON object text); the OK status allocates nothing.
// Result<T> holds either a T or a non-OK Status and uses the member names of std::expected so it
// can become one with a rename once the project moves to C++23.
//
// Thread safety: both are plain values; distinct objects may be used from distinct threads.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace tally {

enum class StatusCode : int {
  kOk = 0,
  kInvalidArgument = 1,    // malformed or out-of-bounds input: 400
  kUnauthenticated = 2,    // missing, unknown or revoked key: 401
  kPermissionDenied = 3,   // wrong scope or tenant: 403
  kNotFound = 4,           // missing resource: 404
  kAlreadyExists = 5,      // duplicate resource: 409
  kUnprocessable = 6,      // well-formed but refused by policy (unknown customer): 422
  kResourceExhausted = 7,  // a server limit was hit (a table or queue is full): 503
  kUnavailable = 8,        // shutting down, store not ready: 503
  kIOError = 9,            // disk: 500
  kCorruption = 10,        // stored data fails its checks: 500
  kInternal = 11,          // a bug: 500
  // The data directory's filesystem is (nearly) full: writes are refused until space is
  // freed, reads go on: 507
  kInsufficientStorage = 12,
  // A request body or batch over its bound (the same request always gets the same answer;
  // the client must send less): 413
  kPayloadTooLarge = 13,
  // A feature this mode of Tally does not have (the scale-out mode answers it for what only the
  // embedded store does yet; docs/cluster.md lists them): 501. Never a silent difference.
  kNotImplemented = 14,
};

// Machine codes a kInvalidArgument may carry as its details_json, for callers that answer
// these cases apart from other invalid input (the HTTP API: 400 with these error codes).
// A query with more rows than its cap: the same query always gets the same answer, so it is
// the caller's to narrow (range, window, filters), not to retry.
inline constexpr std::string_view kQueryTooLargeDetails = "\"QUERY_TOO_LARGE\"";
// An ingest body refused as a whole: not JSON, or not of an accepted shape (invalid events in
// a well-formed body are listed in the IngestSummary instead).
inline constexpr std::string_view kInvalidJsonDetails = "\"INVALID_JSON\"";

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK

  static Status ok_status() { return Status(); }

  static Status invalid_argument(std::string message, std::string details_json = {}) {
    return Status(StatusCode::kInvalidArgument, std::move(message), std::move(details_json));
  }

  static Status unauthenticated(std::string message) {
    return Status(StatusCode::kUnauthenticated, std::move(message));
  }

  static Status permission_denied(std::string message) {
    return Status(StatusCode::kPermissionDenied, std::move(message));
  }

  static Status not_found(std::string message) {
    return Status(StatusCode::kNotFound, std::move(message));
  }

  static Status already_exists(std::string message) {
    return Status(StatusCode::kAlreadyExists, std::move(message));
  }

  static Status unprocessable(std::string message, std::string details_json = {}) {
    return Status(StatusCode::kUnprocessable, std::move(message), std::move(details_json));
  }

  static Status resource_exhausted(std::string message) {
    return Status(StatusCode::kResourceExhausted, std::move(message));
  }

  static Status payload_too_large(std::string message) {
    return Status(StatusCode::kPayloadTooLarge, std::move(message));
  }

  static Status not_implemented(std::string message) {
    return Status(StatusCode::kNotImplemented, std::move(message));
  }

  static Status unavailable(std::string message) {
    return Status(StatusCode::kUnavailable, std::move(message));
  }

  static Status io_error(std::string message) {
    return Status(StatusCode::kIOError, std::move(message));
  }

  static Status corruption(std::string message) {
    return Status(StatusCode::kCorruption, std::move(message));
  }

  static Status internal(std::string message) {
    return Status(StatusCode::kInternal, std::move(message));
  }

  static Status insufficient_storage(std::string message) {
    return Status(StatusCode::kInsufficientStorage, std::move(message));
  }

  Status(StatusCode code, std::string message, std::string details_json = {})
      : rep_(code == StatusCode::kOk
                 ? nullptr
                 : std::make_shared<Rep>(Rep{code, std::move(message), std::move(details_json)})) {}

  bool ok() const { return rep_ == nullptr; }

  StatusCode code() const { return rep_ ? rep_->code : StatusCode::kOk; }

  // Human-readable message; empty when OK.
  const std::string& message() const { return rep_ ? rep_->message : empty_string(); }

  // A JSON value text with machine-readable details, or empty.
  const std::string& details_json() const { return rep_ ? rep_->details_json : empty_string(); }

  // "INVALID_ARGUMENT: message", for logs and the CLI.
  std::string to_string() const;

  // The only way to drop an error on purpose, so every such place can be found with grep.
  void ignore_error() const {}

 private:
  struct Rep {
    StatusCode code;
    std::string message;
    std::string details_json;
  };

  static const std::string& empty_string() {
    static const std::string kEmpty;
    return kEmpty;
  }

  std::shared_ptr<const Rep> rep_;  // null when OK; shared so copies are cheap
};

// The upper-case name of a code, e.g. "INVALID_ARGUMENT".
std::string_view status_code_name(StatusCode code);

// A value or a non-OK Status. REQUIRES: constructed from a Status only when !status.ok().
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT(google-explicit-constructor)

  Result(Status status) : v_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool has_value() const { return v_.index() == 0; }

  explicit operator bool() const { return has_value(); }

  T& value() & { return std::get<0>(v_); }

  const T& value() const& { return std::get<0>(v_); }

  T&& value() && { return std::get<0>(std::move(v_)); }

  T& operator*() & { return value(); }

  const T& operator*() const& { return value(); }

  T* operator->() { return &value(); }

  const T* operator->() const { return &value(); }

  const Status& error() const { return std::get<1>(v_); }

  // The Status: OK when a value is held.
  Status status() const { return has_value() ? Status() : error(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace tally

// Returns early from the enclosing function when `expr` (a Status) is not OK.
#define TALLY_TRY(expr)                         \
  do {                                          \
    ::tally::Status tally_try_status_ = (expr); \
    if (!tally_try_status_.ok()) {              \
      return tally_try_status_;                 \
    }                                           \
  } while (false)
