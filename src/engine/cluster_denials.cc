// The denial history of the scale-out mode (Engine::denials_last_hour): denied checks per
// customer and minute, counted in Redis where every node sees them.
//
// Design: a counter per customer and minute, `{tally:c:<id>}:d:<minute since the epoch>`, in the
// customer's hash slot, incremented by the node that denied a check (INCR, then an expiry of
// kDenialKeepS so that a customer costs at most about 120 keys however many denials it gets).
// The history reads the hour's 60 counters with one MGET (one slot), so every node answers the
// same counts. A node whose Redis call fails logs it and answers the check anyway: the history
// then misses that denial (it describes enforcement, not stored usage; the embedded store's
// starts at zero at every start).
#include "engine/cluster_mode_impl.h"

namespace tally::engine {

namespace {

// How long a minute's counter is kept: the hour it is in the history, and as long again for
// clocks that lag.
constexpr int kDenialKeepS = 2 * 3600;
constexpr std::int64_t kHistoryMinutes = 60;

std::int64_t minute_of(TimeUs us) {
  return core::floor_to(us, core::kUsPerMinute) / core::kUsPerMinute;
}

std::string denial_key(std::string_view customer, std::int64_t minute) {
  return cluster::customer_key_prefix(customer) + "d:" + std::to_string(minute);
}

}  // namespace

void ClusterMode::Impl::record_denials(redis::ClusterClient& client,
                                       const std::vector<CheckRequest>& requests,
                                       const std::vector<CheckResult>& results, TimeUs now) {
  for (std::size_t i = 0; i < requests.size(); ++i) {
    // A check of a batch not consumed because another was denied is not a denial of its own.
    if (results[i].allowed || results[i].reason == Denial::kBatchDenied) {
      continue;
    }
    const std::string key = denial_key(requests[i].customer, minute_of(now));
    for (const std::vector<std::string>& argv :
         {std::vector<std::string>{"INCR", key},
          std::vector<std::string>{"EXPIRE", key, std::to_string(kDenialKeepS)}}) {
      auto r = client.command(argv);
      if (!r || r->is_error()) {
        spdlog::warn("cluster: a denial of customer '{}' is not in its history: {}",
                     requests[i].customer, r ? r->str : r.error().to_string());
        break;
      }
    }
  }
}

Result<std::vector<std::uint64_t>> ClusterMode::denials_last_hour(const std::string& customer,
                                                                  TimeUs now) {
  TALLY_TRY(impl_->read_customer(customer).status());
  const std::int64_t current = minute_of(now);
  std::vector<std::string> argv = {"MGET"};
  for (std::int64_t m = current - kHistoryMinutes + 1; m <= current; ++m) {
    argv.push_back(denial_key(customer, m));
  }
  auto slot = impl_->lease_redis();
  if (!slot) {
    return slot.error();
  }
  auto reply = (*slot)->client->command(argv);
  impl_->return_redis(std::move(*slot));
  if (!reply) {
    return reply.error();
  }
  if (reply->is_error() || !reply->is_array() ||
      reply->elements.size() != static_cast<std::size_t>(kHistoryMinutes)) {
    return Status::unavailable("cluster.redis: the denial history could not be read: " +
                               reply->str);
  }
  std::vector<std::uint64_t> out;
  out.reserve(reply->elements.size());
  for (const redis::Reply& e : reply->elements) {
    out.push_back(e.is_nil() ? 0 : std::strtoull(e.str.c_str(), nullptr, 10));
  }
  return out;
}

}  // namespace tally::engine
