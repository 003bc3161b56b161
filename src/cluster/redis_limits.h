// A customer's limits checked and consumed in a Redis Cluster by one server-side function, so
// that any number of `tally serve` nodes together never admit more than a hard limit
// (docs/cluster.md, "Limit checks in Redis").
//
// Design: a Redis 7 function library (`tally_limits`, its Lua source in redis_limits.cc) is
// loaded on every primary with `FUNCTION LOAD REPLACE`. One `FCALL tally_check` per check reads
// every applicable counter of one customer, decides, and (when asked and allowed) consumes the
// amount on all of them, atomically: Redis runs a function to completion before any other
// command, and every key of a customer shares one hash slot through the tag `{tally:c:<id>}`
// (an id holding a brace, or starting with '~', is written as '~' and its bytes in hex, so the
// tag is always the whole id). A hard limit that does not fit denies, and then nothing is
// consumed; soft limits never deny (their overage is reported); amount 0 only asks.
//  - Calendar windows (day, week, month, billing period, trial, lifetime): one integer counter
//    per meter and window, `{tally:c:<id>}:w:<meter>:<period>:<window start us>`, the window
//    computed here with core::period_span; it expires at the window's end plus
//    `expiry_margin_ms`. used + amount <= limit fits. Two rules of one meter and window share
//    the counter, which a check consumes once.
//  - Rates (second, minute, hour): a GCRA bucket per meter, period and limit,
//    `{tally:c:<id>}:r:<meter>:<period>:<limit units>`, a hash of the level `l`, a remainder
//    `f` and the instant `t` of its last consumption. The bucket holds at most `limit` and
//    drains continuously at limit/period, as core::rate_evaluate. The limit is part of the key
//    (its drain rate is): a changed limit starts a new, empty bucket.
//  - Ad-hoc limits (POST /v1/ratelimit: no customer, the limit given by the caller): a fixed
//    window's integer counter per namespace, identifier, duration and window start,
//    `{tally:a:<namespace and identifier>}:<duration ms>:<window start us>`, decided and added by
//    one `FCALL tally_adhoc` as core::window_decide decides; whole numbers up to 1e15, not units.
//
// Exactness: Lua's numbers are doubles, so every value is an integer count of millionths
// (kUnitsPerOne) below 2^53. Limits and amounts must be multiples of 0.000001 and at most
// kValueUnitsMax units (2^50, about 1.126e9); anything else is refused with kInvalidArgument
// before Redis is asked. A counter or bucket never exceeds kCounterUnitsMax units (2^52): a
// consumption that would take one past it is refused (kUnprocessable) and consumes nothing.
// Windows are exact. The GCRA is exact too: the bucket's true fill is `l - f/period` with
// 0 <= f < period, drained by limit x elapsed / period computed without rounding (a long
// multiplication in the function), so the decision is that of the ideal bucket: it never
// over-admits and never under-admits. core::rate_evaluate, which rounds each drain down to
// 1e-9 at every consumption, can deny where this admits only when the ideal bucket is within
// (consumptions since it was empty) x 1e-9 units of not fitting. The reported level is the
// true fill rounded up to 1e-9, so reset and retry_after are never early.
//
// Clocks: `now_us` is the caller's (injected) time. A bucket never moves back in time: a node
// whose clock is behind the last consumption drains nothing and leaves `t` where it was.
//
// Durability: Redis replicates to replicas asynchronously, so a primary that dies can lose the
// last consumptions it answered, and its replica would then admit them again. With
// `wait_replicas` > 0, a consuming check then sends `WAIT` to the same primary and fails with
// kUnavailable (the consumption may stand: "may have run") unless that many replicas (or all the
// primary has, when fewer are connected: a primary without replicas has nothing to fail over to)
// acknowledged it within `wait_timeout_ms`.
//
// Errors: kInvalidArgument for values out of bounds (nothing sent); kUnavailable when Redis did
// not answer, where may_have_run() says whether the consumption may have been applied (a
// caller that must never over-admit treats such a check as denied and may release() nothing),
// or refused to run it for now (CLUSTERDOWN, TRYAGAIN, LOADING, READONLY, MASTERDOWN, BUSY);
// kUnprocessable for a counter that would leave its range; kResourceExhausted when Redis is
// out of memory (nothing ran); kInternal for any other error reply or a reply of an unexpected
// shape. When an FCALL answers that the function does not exist (a new or flushed
// cluster, a node that lacked it), the library is loaded on every primary and the call is sent
// once more.
//
// Thread safety: a RedisLimits is not thread-safe and uses its ClusterClient, which is not
// either: one RedisLimits and one client per thread. The client must outlive it.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "core/decimal.h"
#include "core/limits.h"
#include "core/time.h"
#include "redis/cluster_client.h"
#include "tally/status.h"

namespace tally::cluster {

// The fixed scale of the counters in Redis: units per 1 (millionths).
inline constexpr std::int64_t kUnitsPerOne = 1'000'000;
// A limit or an amount is at most this many units (2^50 = 1,125,899,906.842624).
inline constexpr std::int64_t kValueUnitsMax = std::int64_t{1} << 50;
// A counter (window usage, bucket level, a seeded value) is at most this many units (2^52).
inline constexpr std::int64_t kCounterUnitsMax = std::int64_t{1} << 52;

// The name of the function library, and of its functions.
inline constexpr std::string_view kLimitsLibrary = "tally_limits";

struct RedisLimitsOptions {
  // After a consuming check, wait until this many replicas of the primary have it (0: never).
  std::uint32_t wait_replicas = 0;
  std::uint32_t wait_timeout_ms = 100;
  // How long a window's counter or an empty bucket outlives its window, for clocks that lag.
  std::int64_t expiry_margin_ms = 24 * 60 * 60 * 1000;
  // How often (by the checks' now_us) a primary's count of connected replicas is asked again.
  core::TimeUs replica_count_ttl_us = 10 * core::kUsPerSecond;
  // A window counter that does not exist fails the check (is_unseeded(), nothing consumed)
  // instead of counting from 0: the caller seeds it from PostgreSQL and asks again, so counters
  // Redis lost (FLUSHALL, a failover that lost writes) are rebuilt, not restarted.
  bool require_seeded_windows = false;
};

// What one check decided, in core's terms, so the engine builds the same CheckResult as in the
// embedded mode: `limits` and `verdict` are core::evaluate_limits of the counters as they stood
// before the check (the function's decision, which they always equal: fits and allowed),
// `after` and `top_after` core::outcomes_after when the amount was consumed.
struct RedisCheck {
  core::Verdict verdict;
  std::vector<core::LimitOutcome> limits;  // one per rule, in the order given
  bool consumed = false;                   // the amount was added to every counter
  std::vector<core::LimitOutcome> after;   // when consumed: as core::outcomes_after
  int top_after = -1;
};

// What tally_adhoc decided on an ad-hoc limit's window: whether the cost fitted (it was added
// then) and the window's count before.
struct AdHocDecision {
  bool fits = false;
  std::int64_t used_before = 0;
};

// An ad-hoc limit or cost is at most this (whole numbers, exact in Lua's doubles, as is a count
// of the window, which never passes the largest limit given).
inline constexpr std::int64_t kAdHocValueMax = 1'000'000'000'000'000;  // 1e15

struct RedisLimitsStats {
  std::uint64_t checks = 0;       // FCALLs of tally_check and tally_adhoc answered
  std::uint64_t loads = 0;        // the library loaded on every primary
  std::uint64_t reloads = 0;      // FCALLs answered "function not found", then loaded and resent
  std::uint64_t waits = 0;        // WAITs sent after consuming checks
  std::uint64_t waits_short = 0;  // of which fewer replicas acknowledged than required
};

class RedisLimits {
 public:
  // REQUIRES: `client` outlives this object and is used by this object's thread only.
  explicit RedisLimits(redis::ClusterClient& client, RedisLimitsOptions options = {});

  // Loads (or replaces) the function library on every primary. Errors: kUnavailable when a
  // primary did not answer; kInternal when one refused the library (its error reply).
  Status load();

  // Evaluates `rules` (one customer's applicable limits; unlimited rate rules are not counted,
  // unlimited window rules are counted and never deny) for `amount` at `now_us` and, when
  // `consume` and no hard limit denies, consumes `amount` on every counter, all in one FCALL.
  // `ctx` places the calendar windows. A trial rule outside its window does not fit (and denies
  // when hard) without a counter. Errors: see the file comment.
  Result<RedisCheck> check(std::string_view customer, const std::vector<core::LimitRule>& rules,
                           const core::PeriodContext& ctx, core::Decimal amount,
                           core::TimeUs now_us, bool consume);

  // Sets the counter of `rule`'s window containing `at_us` to `used` only if it does not exist
  // (Redis lost it; the node rebuilt `used` from PostgreSQL). Returns true when it was set,
  // false when a counter was already there (left unchanged). Errors: kInvalidArgument for a
  // rate rule, a trial outside its window or `used` out of bounds; others as check().
  Result<bool> seed(std::string_view customer, const core::LimitRule& rule,
                    const core::PeriodContext& ctx, core::Decimal used, core::TimeUs at_us);

  // Sets the counter of `rule`'s window containing `at_us` to 0, whether it exists or not (a
  // period reset: the window counts from now on), expiring with its window. Errors as seed().
  Status restart(std::string_view customer, const core::LimitRule& rule,
                 const core::PeriodContext& ctx, core::TimeUs at_us);

  // Sets `rule`'s bucket to hold `level` (at most the limit) as of `now_us`, whatever it held: a
  // period reset rebuilding it from the last period's usage, as the embedded store rebuilds its
  // buckets. REQUIRES: a rate rule, not unlimited. Errors as seed().
  Status set_rate(std::string_view customer, const core::LimitRule& rule, core::Decimal level,
                  core::TimeUs now_us);

  // Gives `amount` back to the counter of `rule`'s window containing `at_us` (a consumption
  // whose write failed), never below 0. Returns the counter after, in units, or -1 when there
  // is no counter (nothing to give back to: Redis lost it, or the window expired). Errors as
  // seed().
  Result<std::int64_t> release(std::string_view customer, const core::LimitRule& rule,
                               const core::PeriodContext& ctx, core::Decimal amount,
                               core::TimeUs at_us);

  // Gives back what check(customer, rules, ctx, amount, at_us, consume = true) consumed (a
  // check of an all-or-nothing batch whose other check was denied): `amount` off every window
  // counter and bucket it consumed on, never below 0, all in one FCALL. Returns how many
  // counters it gave back to (a counter gone meanwhile is left gone). Errors as check().
  Result<std::int64_t> take_back(std::string_view customer,
                                 const std::vector<core::LimitRule>& rules,
                                 const core::PeriodContext& ctx, core::Decimal amount,
                                 core::TimeUs at_us);

  // Usage ingested into the window of `rule` containing `at_us`: `amount` (>= 0).
  struct WindowAdd {
    const core::LimitRule* rule = nullptr;  // a calendar rule
    const core::PeriodContext* ctx = nullptr;
    core::TimeUs at_us = 0;
    core::Decimal amount;
  };

  // Adds each amount to its window counter when the counter exists, all in one FCALL (a
  // counter that does not exist is seeded from PostgreSQL when a check first needs it, and
  // PostgreSQL already holds this usage). Returns how many counters it added to. Errors as
  // seed(); an amount past kCounterUnitsMax is kInvalidArgument.
  Result<std::int64_t> add(std::string_view customer, const std::vector<WindowAdd>& adds);

  // An ad-hoc limit (Engine::limit_adhoc) on its window's counter `key` (adhoc_key): `cost`
  // fits when the count is at most `limit` and cost <= limit - count (core::window_decide), and
  // is then added, in one FCALL (the counter expires at `expiry_ms`, unix ms: the window's end
  // plus a margin). With wait_replicas, an added cost then waits for them as check() does.
  // Errors: kInvalidArgument for a limit or cost outside 0..kAdHocValueMax (nothing sent);
  // others as check().
  Result<AdHocDecision> adhoc(const std::string& key, std::int64_t limit, std::int64_t cost,
                              std::int64_t expiry_ms, core::TimeUs now_us);

  // Gives `cost` back to the ad-hoc counter `key` (the rest of its request was denied), never
  // below 0, keeping its expiry. Returns the count after, or -1 when there is no counter.
  // Errors as adhoc().
  Result<std::int64_t> adhoc_take_back(const std::string& key, std::int64_t cost);

  const RedisLimitsStats& stats() const { return stats_; }

 private:
  // Runs an FCALL; on "function not found" loads the library and runs it once more.
  Result<redis::Reply> fcall(const std::vector<std::string>& argv);
  // Waits for replicas after a consumption on the primary of `key` (see the file comment).
  Status wait_for_replicas(const std::string& key, core::TimeUs now_us);

  struct ReplicaCount {
    std::int64_t replicas = 0;
    core::TimeUs asked_at_us = 0;
  };

  redis::ClusterClient& client_;
  RedisLimitsOptions options_;
  RedisLimitsStats stats_;
  std::map<std::string, ReplicaCount> replicas_;  // by primary "host:port"
};

// The details of a check that met a window counter that does not exist
// (RedisLimitsOptions::require_seeded_windows).
inline constexpr std::string_view kUnseededDetails = "\"UNSEEDED\"";
// Whether `status` is such a check's failure: seed the counters and ask again.
bool is_unseeded(const Status& status);

// Whether a failed call may have consumed (Redis got the command but no answer came back).
bool may_have_run(const Status& s);

// `d` as integer units of kUnitsPerOne. Errors: kInvalidArgument naming `what` when d is
// negative, finer than 0.000001 or above `max_units`.
Result<std::int64_t> to_units(core::Decimal d, std::string_view what,
                              std::int64_t max_units = kValueUnitsMax);

// "{tally:c:<tag>}:", the prefix of every key of `customer` (see the file comment).
std::string customer_key_prefix(std::string_view customer);

// The key of the counter of `rule`'s window starting at `window_start_us`.
std::string window_key(std::string_view customer, const core::LimitRule& rule,
                       core::TimeUs window_start_us);

// The key of `rule`'s GCRA bucket. REQUIRES: core::period_is_rate(rule.period).
std::string rate_key(std::string_view customer, const core::LimitRule& rule);

// The key of an ad-hoc limit's window counter, "{tally:a:<tag>}:<duration ms>:<window start us>",
// the tag made of the namespace and the identifier (escaped as a customer's, so it is always the
// whole pair): each namespace and identifier lands in a slot of its own. REQUIRES: neither holds
// a newline.
std::string adhoc_key(std::string_view ns, std::string_view identifier, std::int64_t duration_ms,
                      core::TimeUs window_start_us);

}  // namespace tally::cluster
