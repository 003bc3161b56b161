// The HTTP API's own metrics: requests counted by route, method and status class, and the latency
// histograms of ingest acknowledgements, checks and queries (docs/api.md#get-metrics).
//
// Cardinality is bounded by construction: a route is a pattern of the route table ("unmatched"
// for requests that found none), a method one of eight values (unknown ones are "other"), a
// status one of five classes. The counters are one array of relaxed atomics indexed by those
// three, so counting a request takes no lock and allocates nothing; the histograms are
// common::LatencyHistogram (sharded per thread).
//
// Thread safety: every member may be called concurrently.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "common/histogram.h"

namespace tally::http {

// Which latency histogram a route's requests are observed in.
enum class LatencyKind : std::uint8_t { kNone, kIngest, kCheck, kQuery };

class RequestMetrics {
 public:
  static constexpr std::size_t kMethods = 8;  // GET HEAD POST PUT PATCH DELETE OPTIONS other
  static constexpr std::size_t kClasses = 5;  // 1xx .. 5xx

  // `routes`: the route patterns, indexed by route number; number routes.size() is "unmatched".
  // The pointers must outlive this object (the route table is static).
  explicit RequestMetrics(std::vector<const char*> routes);

  // Counts one answered request of route `route` (routes.size() = unmatched).
  void count(std::size_t route, std::size_t method, unsigned status) {
    counts_[index(route, method, status_class(status))].fetch_add(1, std::memory_order_relaxed);
  }

  // Counts one latency observation of `kind` (kNone: nothing).
  void observe(LatencyKind kind, std::uint64_t ns);

  // The method's index for count(); unknown methods share "other".
  static std::size_t method_index(std::string_view method);

  // 0 for 1xx .. 4 for 5xx; anything outside 100..599 counts as 5xx.
  static std::size_t status_class(unsigned status) {
    return status >= 100 && status < 600 ? status / 100 - 1 : kClasses - 1;
  }

  // The requests counted so far for (route pattern or "unmatched", method, status class "2xx").
  // 0 for unknown names.
  std::uint64_t requests(std::string_view route, std::string_view method,
                         std::string_view code) const;
  common::LatencyHistogram::Snapshot latency(LatencyKind kind) const;

  // Appends tally_http_requests_total and the three histograms in the Prometheus text format
  // (only the (route, method, class) series counted at least once).
  void append_text(std::string& out) const;

 private:
  std::size_t index(std::size_t route, std::size_t method, std::size_t cls) const {
    return (route * kMethods + method) * kClasses + cls;
  }

  std::vector<const char*> routes_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> counts_;
  common::LatencyHistogram ingest_;
  common::LatencyHistogram check_;
  common::LatencyHistogram query_;
};

}  // namespace tally::http
