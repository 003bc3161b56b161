// Reservations on disk and in the ledger.
//
// A reservation is decided in memory by its check (check.cc), like any consumption, and answered
// once its record is durable: the group commit that takes the check's job writes
// "reservation:<id>" and, when it holds credits of a prepaid wallet, a `hold` transaction (amount
// 0: the balance does not move; `held`: the credits, which leave `available`). Its commit writes
// the usage event, the event's burn (naming the reservation), the record's deletion and a
// `release` of what the burn did not take, all in one write; a release or an expiry writes the
// deletion and a `release` of the whole hold. So after any crash the store holds each
// reservation either open, with its hold, or closed, with its usage: never both, never neither.
// At open the records come back into memory with their holds, and those past their time expire.
#include <algorithm>

#include "common/assert.h"
#include "engine/cluster_mode.h"
#include "engine/limits_impl.h"

namespace tally {

using engine::commit_amount;
using engine::CustomerLimits;
using engine::enqueue_and_wait;
using engine::Evaluation;
using engine::free_hold;
using engine::kCountAmountMax;
using engine::reservation_not_found;
using engine::ReservationOp;
using engine::ReservationRecord;
using engine::resolve_rules;
using engine::restore_reservation;
using engine::Usage;
using engine::used_value;

namespace engine {

Status reservation_not_found(const std::string& id) {
  return Status::not_found("reservation '" + id + "' does not exist or has expired");
}

Status commit_amount(const MeterDef& ms, const std::string& amount_text, core::Decimal* amount) {
  if (!amount_text.empty() &&
      (!core::try_parse_decimal(amount_text, amount) || amount->units < 0)) {
    return Status::invalid_argument("amount must be a number >= 0");
  }
  if (ms.spec.aggregation == core::Aggregation::kCount &&
      (amount->units % core::Decimal::kScale != 0 ||
       *amount > core::Decimal::from_int(kCountAmountMax))) {
    return Status::invalid_argument("this meter counts events: amount must be a whole number");
  }
  return Status();
}

}  // namespace engine

Status Engine::Impl::load_reservations() {
  std::vector<std::pair<std::string, ReservationRecord>> found;
  Status bad;
  const std::string begin(engine::kReservationKeyPrefix);
  TALLY_TRY(store->scan(store::Space::kMeta, begin, engine::prefix_end(begin),
                        [&](std::string_view key, std::string_view value) {
                          ReservationRecord r;
                          if (!engine::decode_reservation(value, &r)) {
                            bad = Status::corruption("a reservation record cannot be decoded");
                            return false;
                          }
                          found.emplace_back(std::string(key.substr(begin.size())), std::move(r));
                          return true;
                        }));
  TALLY_TRY(bad);
  std::unique_lock state_lock(state_mutex);
  std::lock_guard limits_lock(limits_mutex);
  for (auto& [id, r] : found) {
    const engine::MeterDef* ms = catalog->find(r.meter);
    auto cit = customers.find(r.customer_num);
    if (ms == nullptr || cit == customers.end()) {
      // Its meter left the configuration (or its customer is unknown): nothing to hold against,
      // so it is closed by the first commit, releasing its credits.
      ReservationOp op;
      op.id = id;
      op.record = r;
      op.reason = ReservationOp::kExpiry;
      expired_reservation_ops.push_back(std::move(op));
      continue;
    }
    engine::Reservation res;
    res.customer_num = r.customer_num;
    res.customer = cit->second.record.id;
    res.meter = catalog->index_of(ms);
    res.amount = r.amount;
    res.credits = r.credits;
    res.created_us = r.created_us;
    res.expires_us = r.expires_us;
    res.token = next_token++;
    res.properties = std::move(r.properties);
    res.event_id = std::move(r.event_id);
    res.durable = true;
    engine::CustomerLimits& cl = limits[res.customer_num];
    // Counters are built later, from the aggregates and this in-flight log.
    cl.in_flight.add(res.token,
                     engine::InFlight{res.meter, res.created_us, res.amount, res.credits});
    cl.credits_in_flight += res.credits;
    reservations.emplace(std::move(id), std::move(res));
  }
  expire_reservations(clock->now_us());
  return Status();
}

void Engine::Impl::write_reservations(
    const std::vector<ReservationOp>& ops,
    const std::unordered_map<std::uint64_t, core::Decimal>& burned, engine::LedgerWork& work,
    store::WriteBatch& wb, core::TimeUs now) {
  for (const ReservationOp& op : ops) {
    const std::uint32_t cnum = op.record.customer_num;
    if (op.open) {
      wb.put(store::Space::kMeta, engine::reservation_key(op.id),
             engine::encode_reservation(op.record));
      if (op.record.credits.units <= 0) {
        continue;
      }
      engine::WalletRecord& w = work_wallet(work, cnum, now);
      w.holds.emplace_back(op.id, op.record.credits);
      engine::LedgerRecord t;
      t.type = LedgerType::kHold;
      t.held = op.record.credits;
      t.reservation_id = op.id;
      t.description = "hold of reservation " + op.id;
      t.created_at_us = now;
      t.expires_at_us = op.record.expires_us;
      append_txn(work, cnum, core::Decimal{}, std::move(t));
      continue;
    }
    wb.del(store::Space::kMeta, engine::reservation_key(op.id));
    if (op.record.credits.units <= 0) {
      continue;
    }
    engine::WalletRecord& w = work_wallet(work, cnum, now);
    auto hold = std::find_if(w.holds.begin(), w.holds.end(),
                             [&](const auto& h) { return h.first == op.id; });
    if (hold == w.holds.end()) {
      continue;  // nothing held (its open was never written)
    }
    const core::Decimal held = hold->second;
    w.holds.erase(hold);
    core::Decimal taken;
    if (op.usage_token != 0) {
      if (auto it = burned.find(op.usage_token); it != burned.end() && it->second.units > 0) {
        taken = std::min(held, it->second);
      }
    }
    engine::LedgerRecord t;
    t.type = LedgerType::kRelease;
    t.held = held - taken;
    t.reservation_id = op.id;
    t.description = op.reason == ReservationOp::kCommit
                        ? "rest of the hold of reservation " + op.id + " after its commit burned " +
                              core::format_decimal(taken)
                    : op.reason == ReservationOp::kRelease ? "release of reservation " + op.id
                                                           : "expiry of reservation " + op.id;
    t.created_at_us = now;
    append_txn(work, cnum, core::Decimal{}, std::move(t));
  }
}

void Engine::Impl::install_reservations(const std::vector<ReservationOp>& ops) {
  std::lock_guard limits_lock(limits_mutex);
  for (const ReservationOp& op : ops) {
    if (op.open) {
      if (auto it = reservations.find(op.id); it != reservations.end()) {
        it->second.durable = true;
      }
    }
  }
}

void Engine::Impl::expire_reservations_idle(core::TimeUs now) {
  bool pending = false;
  {
    std::shared_lock state_lock(state_mutex);
    std::lock_guard limits_lock(limits_mutex);
    if (!reservations.empty()) {
      expire_reservations(now);
    }
    pending = !expired_reservation_ops.empty();
  }
  if (pending) {
    std::vector<std::unique_ptr<engine::IngestJob>> none;
    commit_ingest(none);  // writes the closes alone
  }
}

// ---- reservations ------------------------------------------------------------------------------

namespace {

// The open reservation `id` (of `restrict_customer` when given), after expiring those past their
// time; reservations.end() when there is none. REQUIRES: state_mutex held (shared or exclusive)
// and limits_mutex held.
std::unordered_map<std::string, engine::Reservation>::iterator open_reservation(
    Engine::Impl& d, const std::string& id, const std::string& restrict_customer,
    core::TimeUs now) {
  d.expire_reservations(now);
  auto it = d.reservations.find(id);
  if (it != d.reservations.end() && !restrict_customer.empty() &&
      it->second.customer != restrict_customer) {
    return d.reservations.end();
  }
  return it;
}

// The usage event of a commit, queued after the locks; it points into `event_id` and into the
// reservation taken out.
struct CommitUsage {
  std::string event_id;
  Usage usage;
  bool consumed = false;
};

// A gauge's value before `amount` is applied: that of the first limit with a counter.
core::Decimal gauge_before(const engine::MeterDef& ms, const Evaluation& ev) {
  for (const auto& e : ev.limits) {
    if (e.counter != nullptr) {
      return used_value(ms.spec.aggregation, e.counter->committed) + e.counter->pending;
    }
  }
  return core::Decimal{};
}

// Records a commit's `amount` against the customer's limits, whatever they say now (the work is
// done), makes its usage event, and answers the limits after it and whether any is exceeded.
// REQUIRES: state_mutex and limits_mutex held.
void record_usage(Engine::Impl& d, const engine::CustomerState& cs, CustomerLimits& cl,
                  const engine::Reservation& res, const std::string& id, core::Decimal amount,
                  core::TimeUs now, CommitUsage* cu, CheckResult* out) {
  const engine::MeterDef& ms = d.catalog->meters[res.meter];
  const std::uint64_t token = d.next_token++;
  const std::vector<engine::ResolvedRule> rules =
      resolve_rules(engine::limits_of(d.config, cs.record, ms.spec.key));
  Evaluation ev;
  evaluate(d, cs, cl, res.meter, rules, amount, now, &ev);
  const core::Decimal before = gauge_before(ms, ev);
  apply(cl, ev.limits, res.meter, amount, now, token);
  cu->event_id = res.event_id.empty() ? id : res.event_id;
  cu->usage.ms = &ms;
  cu->usage.customer = &res.customer;
  cu->usage.event_id = &cu->event_id;
  cu->usage.properties = &res.properties;
  cu->usage.amount = amount;
  cu->usage.gauge_value = before + amount;
  cu->usage.now = now;
  cu->usage.token = token;
  cu->consumed = true;
  Evaluation after;
  evaluate(d, cs, cl, res.meter, rules, core::Decimal{}, now, &after);
  for (std::size_t i = 0; i < after.size(); ++i) {
    out->overage =
        out->overage || (!after.limits[i].rule().unlimited && after.out[i].headroom.units < 0);
  }
  add_limit_states(after, out);
}

// Takes the open reservation `id` out into *res, freeing its hold, and records the commit's
// amount (see record_usage) into *cu and *out; refused, the reservation stays.
Status take_and_record(Engine::Impl& d, const std::string& id, const std::string& amount_text,
                       const std::string& restrict_customer, core::TimeUs now,
                       engine::Reservation* res, CommitUsage* cu, CheckResult* out) {
  std::shared_lock state_lock(d.state_mutex);
  std::lock_guard limits_lock(d.limits_mutex);
  auto it = open_reservation(d, id, restrict_customer, now);
  if (it == d.reservations.end()) {
    return reservation_not_found(id);
  }
  *res = it->second;
  core::Decimal amount = res->amount;
  const engine::MeterDef& ms = d.catalog->meters[res->meter];
  TALLY_TRY(commit_amount(ms, amount_text, &amount));
  d.reservations.erase(it);
  CustomerLimits& cl = d.limits[res->customer_num];
  free_hold(d, cl, *res, now);
  const auto* cs = d.find_customer(res->customer);
  out->allowed = true;
  out->meter = ms.spec.key;
  out->amount = amount;
  out->reservation_id = id;
  if (cs != nullptr) {
    const core::Plan* plan = engine::plan_of(d.config, cs->record);
    out->plan = plan != nullptr ? plan->key : "";
  }
  if (amount.units > 0 && cs != nullptr) {
    record_usage(d, *cs, cl, *res, id, amount, now, cu, out);
  }
  return Status();
}

// The close of the reservation `id` (taken out as `res`), for its commit (with the token of its
// usage event, or 0 without one), release or expiry.
std::vector<engine::ReservationOp> close_ops(const std::string& id, const engine::Reservation& res,
                                             engine::ReservationOp::Reason reason,
                                             std::uint64_t usage_token) {
  std::vector<engine::ReservationOp> close(1);
  close[0].id = id;
  close[0].record.customer_num = res.customer_num;
  close[0].record.credits = res.credits;
  close[0].usage_token = usage_token;
  close[0].reason = reason;
  return close;
}

}  // namespace

Result<CheckResult> Engine::commit_reservation(const std::string& id,
                                               const std::string& amount_text,
                                               const std::string& restrict_customer) {
  Impl& d = *impl_;
  if (d.cluster != nullptr) {
    return d.cluster->commit_reservation(id, amount_text, restrict_customer);
  }
  // Its usage must reach the disk: refused, the reservation kept, while the disk reserve
  // refuses writes.
  TALLY_TRY(d.writes_allowed());
  const core::TimeUs now = clock().now_us();
  CheckResult out;
  engine::Reservation res;
  CommitUsage cu;
  TALLY_TRY(take_and_record(d, id, amount_text, restrict_customer, now, &res, &cu, &out));
  // The usage event and the close are one write: committed once, even across a crash.
  std::vector<engine::ReservationOp> close =
      close_ops(id, res, engine::ReservationOp::kCommit, cu.consumed ? cu.usage.token : 0);
  if (Status s = enqueue_and_wait(d, &cu.usage, cu.consumed ? 1 : 0, &close); !s.ok()) {
    restore_reservation(d, id, std::move(res), now);
    return s;
  }
  return out;
}

Status Engine::release_reservation(const std::string& id, const std::string& restrict_customer) {
  Impl& d = *impl_;
  if (d.cluster != nullptr) {
    return d.cluster->release_reservation(id, restrict_customer);
  }
  const core::TimeUs now = clock().now_us();
  engine::Reservation res;
  {
    std::shared_lock state_lock(d.state_mutex);
    std::lock_guard limits_lock(d.limits_mutex);
    auto it = open_reservation(d, id, restrict_customer, now);
    if (it == d.reservations.end()) {
      return reservation_not_found(id);
    }
    auto lit = d.limits.find(it->second.customer_num);
    if (lit != d.limits.end()) {
      free_hold(d, lit->second, it->second, now);
    }
    res = std::move(it->second);
    d.reservations.erase(it);
  }
  std::vector<engine::ReservationOp> close = close_ops(id, res, engine::ReservationOp::kRelease, 0);
  if (Status s = enqueue_and_wait(d, nullptr, 0, &close); !s.ok()) {
    restore_reservation(d, id, std::move(res), now);
    return s;
  }
  return Status();
}

}  // namespace tally
