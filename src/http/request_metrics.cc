#include "http/request_metrics.h"

#include <iterator>

namespace tally::http {

namespace {

constexpr const char* kMethodNames[RequestMetrics::kMethods] = {
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"};
constexpr const char* kClassNames[RequestMetrics::kClasses] = {"1xx", "2xx", "3xx", "4xx", "5xx"};
constexpr std::string_view kUnmatched = "unmatched";

// One set of bounds for the three: from 5 µs (a check answered from memory) to 10 s (a query over
// a long range on a busy machine).
constexpr std::uint64_t kLatencyBoundsNs[] = {
    5'000,       10'000,        25'000,        50'000,        100'000,
    250'000,     500'000,       1'000'000,     2'500'000,     5'000'000,
    10'000'000,  25'000'000,    50'000'000,    100'000'000,   250'000'000,
    500'000'000, 1'000'000'000, 2'500'000'000, 5'000'000'000, 10'000'000'000};

}  // namespace

RequestMetrics::RequestMetrics(std::vector<const char*> routes)
    : routes_(std::move(routes)),
      counts_(new std::atomic<std::uint64_t>[(routes_.size() + 1) * kMethods * kClasses]()),
      ingest_(kLatencyBoundsNs),
      check_(kLatencyBoundsNs),
      query_(kLatencyBoundsNs) {}

void RequestMetrics::observe(LatencyKind kind, std::uint64_t ns) {
  switch (kind) {
    case LatencyKind::kIngest:
      ingest_.record_ns(ns);
      break;
    case LatencyKind::kCheck:
      check_.record_ns(ns);
      break;
    case LatencyKind::kQuery:
      query_.record_ns(ns);
      break;
    case LatencyKind::kNone:
      break;
  }
}

std::size_t RequestMetrics::method_index(std::string_view method) {
  for (std::size_t i = 0; i + 1 < kMethods; ++i) {
    if (method == kMethodNames[i]) {
      return i;
    }
  }
  return kMethods - 1;
}

std::uint64_t RequestMetrics::requests(std::string_view route, std::string_view method,
                                       std::string_view code) const {
  std::size_t r = 0;
  while (r < routes_.size() && route != routes_[r]) {
    ++r;
  }
  if (r == routes_.size() && route != kUnmatched) {
    return 0;
  }
  const std::size_t m = method_index(method);
  if (std::string_view(kMethodNames[m]) != method) {
    return 0;
  }
  for (std::size_t c = 0; c < kClasses; ++c) {
    if (code == kClassNames[c]) {
      return counts_[index(r, m, c)].load(std::memory_order_relaxed);
    }
  }
  return 0;
}

common::LatencyHistogram::Snapshot RequestMetrics::latency(LatencyKind kind) const {
  switch (kind) {
    case LatencyKind::kIngest:
      return ingest_.snapshot();
    case LatencyKind::kCheck:
      return check_.snapshot();
    case LatencyKind::kQuery:
      return query_.snapshot();
    case LatencyKind::kNone:
      break;
  }
  return {};
}

void RequestMetrics::append_text(std::string& out) const {
  out +=
      "# HELP tally_http_requests_total HTTP requests answered, by route pattern, method and "
      "status class.\n";
  out += "# TYPE tally_http_requests_total counter\n";
  for (std::size_t r = 0; r <= routes_.size(); ++r) {
    const std::string_view route = r < routes_.size() ? std::string_view(routes_[r]) : kUnmatched;
    for (std::size_t m = 0; m < kMethods; ++m) {
      for (std::size_t c = 0; c < kClasses; ++c) {
        const std::uint64_t n = counts_[index(r, m, c)].load(std::memory_order_relaxed);
        if (n == 0) {
          continue;
        }
        out.append("tally_http_requests_total{route=\"").append(route);
        out.append("\",method=\"").append(kMethodNames[m]);
        out.append("\",code=\"").append(kClassNames[c]).append("\"} ");
        out.append(std::to_string(n)).append("\n");
      }
    }
  }
  common::append_histogram(
      out, "tally_ingest_ack_duration_seconds",
      "Time from an ingest request's body being read to its answer (2xx once durable).",
      ingest_.snapshot());
  common::append_histogram(out, "tally_check_duration_seconds",
                           "Time from a check request's body being read to its answer.",
                           check_.snapshot());
  common::append_histogram(out, "tally_query_duration_seconds",
                           "Time from a usage query's request being read to its answer.",
                           query_.snapshot());
}

}  // namespace tally::http
