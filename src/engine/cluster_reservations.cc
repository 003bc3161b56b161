// The scale-out mode's reservations (see cluster_mode.h and cluster/pg_reservations.h).
//
// A reserving check is decided and consumed in Redis like any check (its amount held on every
// counter of its limits), then its row is inserted on the customer's shard before the answer.
// Closing it deletes the row (`DELETE ... RETURNING`), so exactly one node closes it:
//  - a commit records its amount A: when A exceeds the reserved R, the excess A - R is consumed
//    first, whatever the limits say (the work is done: soft rules, never denied); when A is less,
//    R - A is given back after; its usage event (the check's event_id, or the reservation id) is
//    written before the answer. The extra is added before the rest is given back, so a
//    concurrent check never sees less than is used (it may see more, for that instant);
//  - a release, or an expiry found by any node's sweep, gives R back.
// A node that dies between the row's deletion and the counters' adjustment or the usage event
// leaves the counters holding R (never less than is used) and loses that usage event: the same
// bound as a consuming check's usage (docs/cluster.md).
#include "engine/cluster_mode_impl.h"

namespace tally::engine {

namespace {

std::string new_reservation_id() {
  return "res_" + common::to_hex(common::random_bytes(12));
}

// The rules of `rules` as soft ones: consumed, never denying (a commit's excess).
std::vector<core::LimitRule> soft(std::vector<core::LimitRule> rules) {
  for (core::LimitRule& r : rules) {
    r.hard = false;
  }
  return rules;
}

}  // namespace

Status ClusterMode::Impl::open_reservations(RedisSlot& slot,
                                            const std::vector<CheckRequest>& requests,
                                            const std::vector<ClusterPrepared>& prepared,
                                            TimeUs now, std::vector<CheckResult>* results) {
  std::vector<std::size_t> opened;
  Status failure;
  for (std::size_t i = 0; i < requests.size() && failure.ok(); ++i) {
    const CheckRequest& r = requests[i];
    CheckResult& res = (*results)[i];
    if (r.consume != Consume::kReserve || !res.allowed || res.replayed) {
      continue;
    }
    cluster::ReservationRow row;
    row.id = new_reservation_id();
    row.customer = r.customer;
    row.meter = r.meter;
    row.amount = prepared[i].amount;
    row.event_id = r.event_id;
    row.properties = r.properties;
    row.created_us = now;
    const std::int64_t ttl = r.reservation_ttl_seconds > 0
                                 ? r.reservation_ttl_seconds
                                 : config->enforcement.reservation_ttl_seconds;
    row.expires_us = now + ttl * core::kUsPerSecond;
    auto lease = shard_of(r.customer).lease();
    failure = lease ? cluster::insert_reservation(**lease, row) : lease.error();
    if (failure.ok()) {
      res.reservation_id = row.id;
      res.reservation_expires_us = row.expires_us;
      opened.push_back(i);
    }
  }
  if (failure.ok()) {
    return failure;
  }
  // Not answered: every reservation of the batch is closed again and every hold given back.
  for (std::size_t i : opened) {
    take_reservation((*results)[i].reservation_id, {}, false).status().ignore_error();
  }
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const CheckRequest& r = requests[i];
    if (r.consume != Consume::kNo && (*results)[i].allowed && !(*results)[i].replayed) {
      const ClusterPrepared& p = prepared[i];
      slot.limits->take_back(r.customer, p.rules, period_context_of(p.customer), p.amount, now)
          .status()
          .ignore_error();
      if (!r.event_id.empty()) {
        unclaim(*slot.client, r);
      }
    }
  }
  return failure;
}

// The open reservation `id` (of `customer` when not empty) from whichever shard holds it:
// deleted there and returned, or only read with `peek`; nullopt when no shard holds it.
Result<std::optional<cluster::ReservationRow>> ClusterMode::Impl::take_reservation(
    const std::string& id, const std::string& customer, bool peek) {
  for (auto& shard : shards) {
    auto lease = shard->lease();
    if (!lease) {
      return lease.error();
    }
    auto found = peek ? cluster::find_reservation(**lease, id, customer)
                      : cluster::take_reservation(**lease, id, customer);
    if (!found || found->has_value()) {
      return found;
    }
  }
  return std::optional<cluster::ReservationRow>();
}

// Gives a closed reservation's hold back to the counters it was taken from (its customer's
// limits on its meter, at its creation). Logged when it cannot be: the counters then hold it
// until their window ends, which never over-admits.
void ClusterMode::Impl::give_back(RedisSlot& slot, const cluster::ReservationRow& row) {
  auto customer = find_check_customer(row.customer);
  if (!customer) {
    return;  // no customer, no limits: nothing was held
  }
  const std::vector<core::LimitRule> rules = limits_of(*config, *customer, row.meter);
  auto given = slot.limits->take_back(row.customer, rules, period_context_of(*customer), row.amount,
                                      row.created_us);
  if (!given) {
    spdlog::warn("cluster: the hold of reservation '{}' was not given back: {}", row.id,
                 given.error().to_string());
  }
}

Result<CheckResult> ClusterMode::commit_reservation(const std::string& id,
                                                    const std::string& amount_text,
                                                    const std::string& restrict_customer) {
  Impl& d = *impl_;
  const TimeUs now = d.clock->now_us();
  // Read first, so that a bad amount refuses the commit and keeps the reservation.
  auto peeked = d.take_reservation(id, restrict_customer, true);
  if (!peeked) {
    return peeked.error();
  }
  if (!peeked->has_value() || (*peeked)->expires_us <= now) {
    return reservation_not_found(id);
  }
  const MeterDef* meter = d.catalog->find((*peeked)->meter);
  if (meter == nullptr) {
    return Status::unprocessable("reservation '" + id + "' is of meter '" + (*peeked)->meter +
                                 "', which is not in this node's configuration");
  }
  core::Decimal amount = (*peeked)->amount;
  TALLY_TRY(commit_amount(*meter, amount_text, &amount));
  auto customer = d.find_check_customer((*peeked)->customer);
  if (!customer) {
    return customer.error();
  }
  // Deleted on the shard the read found it on: once across nodes.
  Result<std::optional<cluster::ReservationRow>> taken = std::optional<cluster::ReservationRow>();
  {
    auto lease = d.shard_of((*peeked)->customer).lease();
    if (!lease) {
      return lease.error();
    }
    taken = cluster::take_reservation(**lease, id, restrict_customer);
  }
  if (!taken) {
    return taken.error();
  }
  if (!taken->has_value()) {
    return reservation_not_found(id);  // another node closed it meanwhile
  }
  const cluster::ReservationRow& row = **taken;
  const std::vector<core::LimitRule> rules = limits_of(*d.config, *customer, row.meter);
  const core::PeriodContext pc = period_context_of(*customer);
  auto slot = d.lease_redis();
  if (!slot) {
    return slot.error();
  }
  Status s;
  if (amount > row.amount) {
    s = d.seed_counters(*(*slot)->limits, *customer, rules, pc, *meter, now);
    if (s.ok()) {
      s = (*slot)
              ->limits->check(row.customer, soft(rules), pc, amount - row.amount, now, true)
              .status();
    }
  }
  if (s.ok() && amount < row.amount) {
    cluster::ReservationRow rest = row;
    rest.amount = row.amount - amount;
    d.give_back(**slot, rest);
  }
  CheckResult out;
  out.allowed = true;
  out.meter = row.meter;
  out.amount = amount;
  out.reservation_id = id;
  const core::Plan* plan = plan_of(*d.config, *customer);
  out.plan = plan != nullptr ? plan->key : std::string();
  if (s.ok()) {
    auto states = (*slot)->limits->check(row.customer, rules, pc, core::Decimal{}, now, false);
    if (states) {
      for (std::size_t i = 0; i < rules.size(); ++i) {
        LimitState st = rule_state(rules[i]);
        st.used = states->limits[i].used;
        if (!st.unlimited) {
          st.remaining = states->limits[i].remaining;
          out.overage = out.overage || st.used > st.limit;
        }
        st.window_start_us = window_start_of(*customer, rules[i], states->limits[i]);
        st.reset_us = states->limits[i].reset_us;
        out.limits.push_back(std::move(st));
      }
      if (states->verdict.top >= 0) {
        out.has_rule = true;
        out.rule = out.limits[static_cast<std::size_t>(states->verdict.top)];
      }
    }
  }
  d.return_redis(std::move(*slot));
  if (!s.ok()) {
    return s;
  }
  if (amount.units > 0) {
    PendingUsage u;
    u.customer = row.customer;
    u.event_id = row.event_id.empty() ? id : row.event_id;
    u.meter = meter;
    u.amount = amount;
    u.properties = row.properties;
    u.at_us = now;
    TALLY_TRY(d.push_usage(std::move(u), true));
  }
  return out;
}

Status ClusterMode::release_reservation(const std::string& id,
                                        const std::string& restrict_customer) {
  Impl& d = *impl_;
  auto taken = d.take_reservation(id, restrict_customer, false);
  if (!taken) {
    return taken.error();
  }
  if (!taken->has_value()) {
    return reservation_not_found(id);
  }
  if ((*taken)->expires_us <= d.clock->now_us()) {
    // Expired: closed now as the sweep would have, and answered as gone.
    auto slot = d.lease_redis();
    if (slot) {
      d.give_back(**slot, **taken);
      d.return_redis(std::move(*slot));
    }
    return reservation_not_found(id);
  }
  auto slot = d.lease_redis();
  if (!slot) {
    return slot.error();
  }
  d.give_back(**slot, **taken);
  d.return_redis(std::move(*slot));
  return Status();
}

// Closes the reservations expired by the node's clock on every shard, giving their holds back
// (`FOR UPDATE SKIP LOCKED`: nodes sweeping at once take distinct rows).
void ClusterMode::Impl::expire_reservations() {
  const TimeUs now = clock->now_us();
  for (auto& shard : shards) {
    for (;;) {
      std::vector<cluster::ReservationRow> expired;
      {
        auto lease = shard->lease();
        if (!lease) {
          return;
        }
        auto taken = cluster::take_expired_reservations(**lease, now, 100);
        if (!taken) {
          spdlog::warn("cluster: expired reservations of {} could not be closed: {}", shard->name(),
                       taken.error().to_string());
          break;
        }
        expired = std::move(*taken);
      }
      if (expired.empty()) {
        break;
      }
      auto slot = lease_redis();
      if (!slot) {
        spdlog::warn("cluster: {} expired reservations' holds were not given back: {}",
                     expired.size(), slot.error().to_string());
        return;
      }
      for (const cluster::ReservationRow& row : expired) {
        give_back(**slot, row);
      }
      return_redis(std::move(*slot));
    }
  }
}

}  // namespace tally::engine
