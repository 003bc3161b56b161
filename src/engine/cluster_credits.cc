// The scale-out mode's prepaid checks (see cluster_mode.h): a check of a customer whose plan is
// prepaid also needs the credits, as in the embedded mode (check.cc, check_credits): the
// wallet's balance, less what admitted checks have counted but not yet burned, must cover the
// check's estimated credits (and be above zero), else the check is denied with
// INSUFFICIENT_CREDITS.
//
// Across nodes: the credits admitted but not yet burned are one Redis counter per customer (in
// 1e-9 credits, in the customer's slot). A consuming check first adds its credits to it (INCRBY,
// which returns what all nodes have in flight, this check included), then reads the balance
// from the wallet row in PostgreSQL; denied, it takes them back (DECRBY). The usage writer takes
// a check's credits off the counter only after the transaction that burned them committed. So a
// check's credits are in the counter from before any node reads a balance that might not
// include their burn until after every balance read later includes it: no interleaving counts
// them in neither, and nodes together never admit checks beyond the balance. (They can count
// them in both, for the moment between the burn's commit and its DECRBY: then a check is denied
// that a moment later would pass; that is the only inexactness, on the safe side.) Events
// ingested directly are not checks: they burn when written, as in the embedded mode.
//
// A node that dies between a check and its burn leaves its credits in the counter: the counter
// expires kInFlightIdleMs after the last check that changed it (refused credits then come
// back), and `tally verify` never depends on it.
#include <charconv>

#include "engine/cluster_mode_impl.h"
#include "engine/price_match.h"

namespace tally::engine {

namespace {

constexpr std::int64_t kInFlightIdleMs = 60'000;
// The credits of one check Redis counts (1e-9 credits in a 64-bit counter): ~1e9 credits.
constexpr std::int64_t kCheckCreditsUnitsMax = std::int64_t{1} << 60;

std::string units_text(core::Decimal credits) {
  return std::to_string(static_cast<std::int64_t>(credits.units));
}

std::string in_flight_key(std::string_view customer) {
  return cluster::customer_key_prefix(customer) + ":credits_in_flight";
}

Result<std::int64_t> integer_of(const Result<redis::Reply>& reply) {
  if (!reply) {
    return reply.error();
  }
  if (reply->is_error()) {
    return Status::unavailable("cluster.redis: " + reply->str);
  }
  if (reply->is_nil()) {
    return 0;
  }
  if (reply->is_integer()) {
    return reply->integer;
  }
  std::int64_t v = 0;
  const auto parsed = std::from_chars(reply->str.data(), reply->str.data() + reply->str.size(), v);
  if (parsed.ec != std::errc() || parsed.ptr != reply->str.data() + reply->str.size()) {
    return Status::unavailable("cluster.redis: the credits in flight are not an integer");
  }
  return v;
}

}  // namespace

Result<core::Decimal> ClusterMode::Impl::check_credits_of(const CheckRequest& r,
                                                          const Customer& customer,
                                                          const MeterDef& meter,
                                                          core::Decimal amount, TimeUs now) {
  std::vector<std::pair<std::string_view, std::string_view>> props;
  for (const auto& [k, v] : r.properties) {
    props.emplace_back(k, v);
  }
  const std::optional<PriceMatch> price =
      match_price(*catalog, catalog->index_of(&meter), props, now);
  if (!price) {
    return core::Decimal{};
  }
  // A tiered price: after the units its period counted so far (committed; as the embedded
  // check reads its live usage), an estimate like the embedded store's.
  core::Decimal before;
  if (core::price_is_tiered(price->version->spec)) {
    const core::PeriodContext pc = period_context_of(customer);
    core::TimeUs start = 0;
    core::TimeUs end = 0;
    core::billing_period_span(now, pc.billing_anchor_us, pc.tz, &start, &end);
    auto lease = shard_of(customer.id).lease();
    if (!lease) {
      return lease.error();
    }
    auto units = cluster::read_price_usage(
        **lease, cluster::PeriodKey{customer.id, catalog->prices[price->index].key, start});
    if (!units) {
      return units.error();
    }
    before = *units;
  }
  const core::Decimal cost = core::incremental_cost(price->version->spec, before, amount);
  return core::credits_for(price->version->spec, cost);
}

Result<bool> ClusterMode::Impl::admit_credits(redis::ClusterClient& client,
                                              const std::string& customer, core::Decimal credits,
                                              bool consume, CheckResult* out) {
  if (credits.units > kCheckCreditsUnitsMax) {
    return Status::invalid_argument("a check needing " + credits.text() +
                                    " credits is more than the cluster mode counts in flight");
  }
  const std::string key = in_flight_key(customer);
  std::int64_t in_flight = 0;
  if (consume) {
    auto added = integer_of(client.command({"INCRBY", key, units_text(credits)}));
    if (!added) {
      return added.error();
    }
    client.command({"PEXPIRE", key, std::to_string(kInFlightIdleMs)}).status().ignore_error();
    in_flight = *added - static_cast<std::int64_t>(credits.units);  // the others'
  } else {
    auto got = integer_of(client.command({"GET", key}));
    if (!got) {
      return got.error();
    }
    in_flight = *got;
  }
  auto lease = shard_of(customer).lease();
  if (!lease) {
    if (consume) {
      release_credits(client, customer, credits);
    }
    return lease.error();
  }
  auto balance = cluster::read_wallet_balance(**lease, customer);
  if (!balance) {
    if (consume) {
      release_credits(client, customer, credits);
    }
    return balance.error();
  }
  core::Decimal flying;
  flying.units = in_flight;
  const core::Decimal available = *balance - flying;
  out->prepaid = true;
  out->credits_required = credits;
  out->credits_available = available;
  if (available.units <= 0 || available < credits) {
    if (consume) {
      release_credits(client, customer, credits);
    }
    return false;
  }
  return true;
}

void ClusterMode::Impl::release_credits(redis::ClusterClient& client, const std::string& customer,
                                        core::Decimal credits) {
  if (credits.units == 0) {
    return;
  }
  auto done = client.command({"DECRBY", in_flight_key(customer), units_text(credits)});
  if (!done || done->is_error()) {
    spdlog::error("cluster: credits in flight of customer '{}' not released (they expire): {}",
                  customer, done ? done->str : done.error().to_string());
  }
}

}  // namespace tally::engine
