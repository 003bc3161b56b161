// Leased checks of the scale-out mode (docs/cluster.md, "Leased checks"): a node takes a block
// of every limit of a (customer, meter) from Redis at once, by one consuming check of the block's
// amount, and answers the next consuming checks of that customer and meter from it, without a
// round trip, until it is used up, its life ends or one of its windows ends. What a lease has
// not used goes back to the counters (RedisLimits::take_back, on the windows of the take).
//
// Why nodes together still never admit more than a limit: a lease's units were counted in Redis
// when it was taken, as a check of that amount would have been, and a check answered from it
// uses units already counted. The cost is early denials: another node's unused lease counts as
// used until it is given back (at most `check_lease` per other node and customer-meter, for at
// most `check_lease_ms`; a node that dies holding one gives nothing back, so its units stay
// counted until the window ends).
//
// CheckLeases holds the leases of one node: a plain table under a mutex, with no I/O and no
// clock of its own (every call is given the time). The engine (cluster_check.cc) takes and gives
// back in Redis.
#pragma once

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "cluster/redis_limits.h"
#include "core/decimal.h"
#include "core/limits.h"
#include "core/time.h"

namespace tally::engine {

// What a node holds of one customer's limits of one meter.
struct CheckLease {
  std::string customer;
  std::vector<core::LimitRule> rules;  // the rules it was taken on, in order
  core::PeriodContext ctx;             // places their windows
  core::Decimal left;                  // not used yet
  core::TimeUs taken_us = 0;           // when it was taken: the windows it counts in
  core::TimeUs until_us = 0;           // usable before this: its life, or its first window's end
  cluster::RedisCheck taken;           // the take's answer (the counters after it)
};

// The counters as a check answered from `lease` sees them: the take's states after it, less
// what the lease still holds (which is counted there, but not used).
cluster::RedisCheck leased_answer(const CheckLease& lease);

class CheckLeases {
 public:
  // At most this many leases: a node with more (customer, meter) pairs in use asks Redis for
  // the others' checks.
  static constexpr std::size_t kLeasesMax = 100'000;

  // Uses `amount` of the lease of (customer, meter) when it was taken on exactly `rules`, is
  // usable at `now_us` and holds that much: true, and *answer is leased_answer after it.
  bool use(const std::string& customer, const std::string& meter,
           const std::vector<core::LimitRule>& rules, core::Decimal amount, core::TimeUs now_us,
           cluster::RedisCheck* answer);

  // Keeps `lease` for (customer, meter). Returns the lease it replaces, whose unused units the
  // caller gives back; or `lease` itself when the table is full (give it all back).
  std::optional<CheckLease> put(const std::string& meter, CheckLease lease);

  // Whether a take for (customer, meter) was refused (not enough left for a block) less than
  // `check_lease_ms` ago: then its checks ask Redis for their own amounts.
  bool cooling(const std::string& customer, const std::string& meter, core::TimeUs now_us);
  void cool(const std::string& customer, const std::string& meter, core::TimeUs until_us);

  // Removes and returns the leases no longer usable at `now_us` (to give back).
  std::vector<CheckLease> take_expired(core::TimeUs now_us);
  // Removes and returns every lease of `customer` (a reset: nothing is given back).
  std::vector<CheckLease> take_customer(const std::string& customer);
  // Removes and returns every lease (the node stops: all is given back).
  std::vector<CheckLease> take_all();

  std::size_t size() const;

 private:
  static std::string key_of(const std::string& customer, const std::string& meter);

  mutable std::mutex mutex_;
  std::unordered_map<std::string, CheckLease> leases_;  // by key_of(customer, meter)
  std::unordered_map<std::string, core::TimeUs> cooling_;
};

}  // namespace tally::engine
