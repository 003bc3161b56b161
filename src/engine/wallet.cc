// Credit wallets and the ledger.
//
// Every change to a wallet is an immutable transaction in Space::kLedger, written in the same
// store write as whatever caused it: a burn with its event (commit_ingest), a grant with the
// admin request. The wallet itself (balance, grants with what is left of them, debt, holds) is
// the state those transactions lead to; a snapshot of it is written with them, so start-up
// reads one record per wallet instead of replaying the ledger. `tally verify` replays the ledger
// and compares.
//
// The balance is sum(grant remaining) - debt - held. Burns take credits from grants in burn
// order (lowest priority first, then the soonest expiry, then the oldest); what no grant can
// cover becomes debt, the negative part of the balance, which the next credits pay off first.
#include <algorithm>
#include <functional>
#include <set>

#include "common/assert.h"
#include "core/ids.h"
#include "engine/audit.h"
#include "engine/cluster_mode.h"
#include "engine/engine_impl.h"
#include "engine/price_match.h"
#include "engine/wallet_rules.h"

namespace tally {

using engine::GrantRecord;
using engine::LedgerWork;
using engine::WalletRecord;

namespace {

std::string text(core::Decimal d) {
  return core::format_decimal(d);
}

}  // namespace

std::string engine::ledger_chain_break(core::Decimal balance,
                                       const std::vector<const engine::LedgerRecord*>& txns) {
  for (const engine::LedgerRecord* t : txns) {
    const std::string where = "txn_" + std::to_string(t->seq);
    if (t->before != balance) {
      return where + ": balance_before " + text(t->before) +
             " differs from the previous balance_after " + text(balance);
    }
    if (t->before + t->amount != t->after) {
      return where + ": balance_before + amount != balance_after";
    }
    balance = t->after;
  }
  return "";
}

// ---- state ----------------------------------------------------------------------------------

Status Engine::Impl::load_wallets() {
  Status bad;
  TALLY_TRY(store->scan(store::Space::kMeta, engine::kWalletKeyPrefix, "wallet;",
                        [&](std::string_view key, std::string_view value) {
                          WalletRecord w;
                          if (key.size() != engine::kWalletKeyPrefix.size() + 4 ||
                              !engine::decode_wallet(value, &w)) {
                            bad = Status::corruption("a wallet record cannot be decoded");
                            return false;
                          }
                          wallets[engine::read_be32(key.substr(engine::kWalletKeyPrefix.size()))] =
                              std::move(w);
                          return true;
                        }));
  TALLY_TRY(bad);
  TALLY_TRY(
      store->scan(store::Space::kMeta, engine::kPriceUsagePrefix, "price_usage;",
                  [&](std::string_view key, std::string_view value) {
                    std::string_view price_key;
                    std::uint32_t cnum = 0;
                    core::TimeUs start = 0;
                    core::Decimal units;
                    if (!engine::decode_price_usage_key(key, &price_key, &cnum, &start) ||
                        !engine::decode_decimal(value, &units)) {
                      bad = Status::corruption("a price usage record cannot be decoded");
                      return false;
                    }
                    for (std::uint32_t i = 0; i < catalog->prices.size(); ++i) {
                      if (catalog->prices[i].key == price_key) {
                        price_usage[{i, cnum, start}] = units;
                      }
                    }
                    return true;  // a price no longer configured: its usage is kept but unused
                  }));
  TALLY_TRY(bad);
  auto next = store->get(store::Space::kMeta, engine::kMetaNextTxn);
  if (!next) {
    return next.error();
  }
  if (next->has_value()) {
    if ((*next)->size() != 8) {
      return Status::corruption("the next transaction number cannot be decoded");
    }
    next_txn = engine::read_be64(**next);
  }
  return Status();
}

bool Engine::Impl::price_of(std::uint32_t meter, std::uint32_t customer_num,
                            const core::TimeZone& tz, core::TimeUs anchor_us, core::TimeUs time_us,
                            core::Decimal value,
                            std::span<const std::pair<std::string_view, std::string_view>> props,
                            LedgerWork* work, core::Decimal* cost, core::Decimal* credits,
                            core::TimeUs known_at_us) const {
  const std::optional<engine::PriceMatch> found =
      engine::match_price(*catalog, meter, props, time_us, known_at_us);
  if (!found) {
    return false;
  }
  const std::uint32_t index = found->index;
  const core::PriceSpec& spec = found->version->spec;
  if (!core::price_is_tiered(spec)) {
    *cost = core::incremental_cost(spec, core::Decimal{}, value);
  } else {
    core::TimeUs start = 0;
    core::TimeUs end = 0;
    core::billing_period_span(time_us, anchor_us, tz, &start, &end);
    const auto key = std::make_tuple(index, customer_num, start);
    core::Decimal before;
    if (work != nullptr && work->price_usage.count(key) != 0) {
      before = work->price_usage[key];
    } else if (auto it = price_usage.find(key);
               (work == nullptr || !work->from_scratch) && it != price_usage.end()) {
      before = it->second;
    }
    *cost = core::incremental_cost(spec, before, value);
    if (work != nullptr) {
      work->price_usage[key] = before + value;
    }
  }
  *credits = core::credits_for(spec, *cost);
  return true;
}

WalletRecord& Engine::Impl::work_wallet(LedgerWork& work, std::uint32_t customer_num,
                                        core::TimeUs now) {
  auto [it, fresh] = work.wallets.try_emplace(customer_num);
  if (!fresh) {
    return it->second;
  }
  if (auto live = wallets.find(customer_num); live != wallets.end()) {
    it->second = live->second;
  }
  // Grants past their expiry go first, so nothing burns credits that are gone.
  std::vector<engine::LedgerRecord> expired;
  engine::expire_wallet_grants(it->second, now, &next_txn, &expired);
  for (auto& t : expired) {
    work.txns.emplace_back(customer_num, std::move(t));
  }
  return it->second;
}

void Engine::Impl::append_txn(LedgerWork& work, std::uint32_t customer_num, core::Decimal amount,
                              engine::LedgerRecord t) {
  std::vector<engine::LedgerRecord> out;
  engine::append_to_wallet(work.wallets[customer_num], &next_txn, amount, std::move(t), &out);
  work.txns.emplace_back(customer_num, std::move(out.back()));
}

void Engine::Impl::burn(LedgerWork& work, std::uint32_t customer_num, core::Decimal credits,
                        std::string_view event_id, core::TimeUs now,
                        std::string_view reservation_id) {
  WalletRecord& w = work_wallet(work, customer_num, now);
  std::vector<engine::LedgerRecord> out;
  engine::burn_wallet(w, credits, event_id, now, reservation_id, &next_txn, &out);
  for (auto& t : out) {
    work.txns.emplace_back(customer_num, std::move(t));
  }
}

void Engine::Impl::adjust_wallet(LedgerWork& work, std::uint32_t customer_num, core::Decimal amount,
                                 engine::LedgerRecord t, core::TimeUs now) {
  WalletRecord& w = work_wallet(work, customer_num, now);
  std::vector<engine::LedgerRecord> out;
  engine::adjust_wallet_by(w, amount, std::move(t), now, &next_txn, &out);
  for (auto& x : out) {
    work.txns.emplace_back(customer_num, std::move(x));
  }
}

Status Engine::Impl::apply_wallet_request(LedgerWork& work, std::uint32_t customer_num,
                                          const WalletTransactionRequest& req, core::TimeUs now) {
  core::Decimal amount;  // checked before the wallet is taken, which may expire grants
  TALLY_TRY(engine::check_wallet_transaction(req, now, &amount));
  WalletRecord& w = work_wallet(work, customer_num, now);
  std::vector<engine::LedgerRecord> out;
  TALLY_TRY(engine::apply_wallet_transaction(w, req, now, &next_txn, &out));
  for (auto& t : out) {
    work.txns.emplace_back(customer_num, std::move(t));
  }
  return Status();
}

void Engine::Impl::write_ledger(const LedgerWork& work, store::WriteBatch& wb) const {
  // One block per customer: its transactions of this commit, in order.
  std::map<std::uint32_t, std::vector<const engine::LedgerRecord*>> blocks;
  for (const auto& [cnum, t] : work.txns) {
    blocks[cnum].push_back(&t);
  }
  for (const auto& [cnum, txns] : blocks) {
    // The ledger's chain goes on from the stored balance: a transaction appended to a wallet
    // not taken from the live one (work_wallet) would start it again from zero.
    auto live = wallets.find(cnum);
    const std::string broken = engine::ledger_chain_break(
        live != wallets.end() ? live->second.balance : core::Decimal{}, txns);
    if (!broken.empty()) {
      common::assert_fail("ledger_chain_break(...).empty()", broken.c_str(), __FILE__, __LINE__);
    }
    TALLY_ASSERT(work.wallets.at(cnum).balance == txns.back()->after,
                 "a wallet's balance is its last transaction's balance_after");
    wb.put(store::Space::kLedger, engine::ledger_key(cnum, txns.back()->seq),
           engine::encode_ledger_block(txns));
  }
  for (const auto& [cnum, w] : work.wallets) {
    wb.put(store::Space::kMeta, engine::wallet_key(cnum), engine::encode_wallet(w));
  }
  for (const auto& [key, units] : work.price_usage) {
    const auto& [index, cnum, start] = key;
    wb.put(store::Space::kMeta, engine::price_usage_key(catalog->prices[index].key, cnum, start),
           engine::encode_decimal(units));
  }
  if (!work.txns.empty()) {
    std::string v;
    engine::put_be64(v, next_txn);
    wb.put(store::Space::kMeta, std::string(engine::kMetaNextTxn), v);
  }
}

void Engine::Impl::install_ledger(LedgerWork& work) {
  for (auto& [cnum, w] : work.wallets) {
    if (alerts_enabled) {
      alert_touched_wallets.push_back(cnum);
    }
    wallets[cnum] = std::move(w);
  }
  for (const auto& [key, units] : work.price_usage) {
    price_usage[key] = units;
  }
}

void Engine::Impl::expire_grants(core::TimeUs now) {
  LedgerWork work;
  for (const auto& [cnum, w] : wallets) {
    for (const auto& g : w.grants) {
      if (g.expires_us != 0 && g.expires_us <= now) {
        work_wallet(work, cnum, now);
        break;
      }
    }
  }
  if (work.txns.empty()) {
    return;
  }
  store::WriteBatch wb;
  write_ledger(work, wb);
  if (!write_store(wb, config.storage.fsync).ok()) {
    return;  // tried again on the next pass; a burn before then expires the grant itself
  }
  std::unique_lock lock(state_mutex);
  install_ledger(work);
}

// ---- verify ---------------------------------------------------------------------------------
// verify_ledger in steps: one pass over the ledger gathers each customer's running balance,
// holds, burns and re-rating adjustments (LedgerTrail), then each step holds one part of what
// was gathered against the state it must agree with: the wallets, the open reservations, the
// re-rated events and the priced events. Each step adds what differs to the report.

namespace {

using CustomerEvent = std::pair<std::uint32_t, std::string>;  // customer number, an id

// Per (customer, reservation id): its hold, what its commit burned, and what was released.
struct HoldTrail {
  core::Decimal held, burned, released;
  int holds = 0, releases = 0;
};

// What one pass over the ledger gathered.
struct LedgerTrail {
  std::map<CustomerEvent, std::vector<core::Decimal>> burns;  // per event id, in ledger order
  std::map<CustomerEvent, HoldTrail> holds;                   // per reservation id
  std::map<std::uint32_t, core::Decimal> rerate_adjustments;  // re-rating adjustments' sum
  std::map<std::uint32_t, core::Decimal> sums;                // every transaction's sum
  std::uint64_t txns = 0;
  // The chain of balances of the customer being read (blocks come in customer order).
  std::uint32_t current = 0;
  bool first = true;
  core::Decimal running;
};

using NameOf = std::function<std::string(std::uint32_t)>;

// One transaction: its place in the customer's chain of balances, and what it adds to holds,
// burns and re-rating adjustments.
void trail_txn(LedgerTrail& trail, std::uint32_t cnum, const engine::LedgerRecord& t,
               const NameOf& name, std::vector<std::string>* differences) {
  ++trail.txns;
  if (trail.first || cnum != trail.current) {
    trail.current = cnum;
    trail.running = core::Decimal{};
    trail.first = false;
  }
  const std::string where = "ledger of customer '" + name(cnum) + "', ";
  if (std::string broken = engine::ledger_chain_break(trail.running, {&t}); !broken.empty()) {
    differences->push_back(where + broken);
  }
  trail.running = t.after;
  trail.sums[cnum] += t.amount;
  const bool hold = t.type == LedgerType::kHold;
  if (hold || t.type == LedgerType::kRelease) {
    if (t.amount.units != 0) {
      differences->push_back(where + ": a " + std::string(to_string(t.type)) +
                             " changes the balance");
    }
    HoldTrail& h = trail.holds[{cnum, t.reservation_id}];
    (hold ? h.held : h.released) += t.held;
    (hold ? h.holds : h.releases) += 1;
  } else if (t.type == LedgerType::kBurn && !t.reservation_id.empty()) {
    trail.holds[{cnum, t.reservation_id}].burned += core::Decimal{} - t.amount;
  } else if (t.type == LedgerType::kAdjustment && t.period_end_us != 0) {
    trail.rerate_adjustments[cnum] += t.amount;
  }
  // An event's credits are its burn, or its refund when its cost was negative.
  if (t.type == LedgerType::kBurn || (t.type == LedgerType::kRefund && !t.event_id.empty())) {
    if (t.type == LedgerType::kBurn && t.amount.units > 0) {
      differences->push_back(where + ": a burn adds credits");
    }
    trail.burns[{cnum, t.event_id}].push_back(core::Decimal{} - t.amount);
  }
}

// Each wallet: its balance is the sum of its transactions and of its grants less its debt, and
// each hold it keeps is an open hold of the ledger.
void check_wallets(const std::unordered_map<std::uint32_t, WalletRecord>& wallets,
                   const LedgerTrail& trail, const NameOf& name,
                   std::vector<std::string>* differences) {
  for (const auto& [cnum, w] : wallets) {
    const auto sum_it = trail.sums.find(cnum);
    const core::Decimal sum = sum_it != trail.sums.end() ? sum_it->second : core::Decimal{};
    if (sum != w.balance) {
      differences->push_back("wallet of customer '" + name(cnum) + "': balance " + text(w.balance) +
                             ", its transactions sum to " + text(sum));
    }
    core::Decimal granted;
    for (const auto& g : w.grants) {
      granted += g.remaining;
    }
    if (w.balance != granted - w.debt) {
      differences->push_back("wallet of customer '" + name(cnum) +
                             "': grants and debt do not add up to the balance");
    }
    for (const auto& [id, credits] : w.holds) {
      auto it = trail.holds.find({cnum, id});
      if (it == trail.holds.end() || it->second.holds != 1 || it->second.releases != 0 ||
          it->second.held != credits) {
        differences->push_back("wallet of customer '" + name(cnum) + "': the hold of " + id + " (" +
                               text(credits) + ") is not an open hold of its ledger");
      }
    }
  }
}

// A customer with transactions has a wallet.
void check_owners(const std::unordered_map<std::uint32_t, WalletRecord>& wallets,
                  const LedgerTrail& trail, const NameOf& name,
                  std::vector<std::string>* differences) {
  for (const auto& [cnum, sum] : trail.sums) {
    if (wallets.count(cnum) == 0) {
      differences->push_back("customer '" + name(cnum) + "' has transactions but no wallet");
    }
  }
}

// Every hold of the ledger is open (in its wallet, and its reservation open) or closed by one
// release of what its commit's burn did not take; every open reservation's credits are held.
void check_holds(const std::unordered_map<std::uint32_t, WalletRecord>& wallets,
                 const LedgerTrail& trail, std::map<CustomerEvent, core::Decimal> open_reservations,
                 const NameOf& name, std::vector<std::string>* differences) {
  for (const auto& entry : trail.holds) {
    // Not a structured binding: clang before 16 cannot capture one in the lambda below.
    const CustomerEvent& k = entry.first;
    const HoldTrail& h = entry.second;
    const std::string what = "reservation " + k.second + " of customer '" + name(k.first) + "'";
    if (h.holds != 1 || h.releases > 1) {
      differences->push_back(what + ": " + std::to_string(h.holds) + " holds and " +
                             std::to_string(h.releases) + " releases");
      continue;
    }
    if (h.releases == 1) {
      const core::Decimal taken = std::min(h.held, h.burned);
      if (h.held - taken != h.released) {
        differences->push_back(what + ": held " + text(h.held) + ", burned " + text(h.burned) +
                               ", released " + text(h.released));
      }
      continue;
    }
    auto wit = wallets.find(k.first);
    const bool in_wallet =
        wit != wallets.end() &&
        std::any_of(wit->second.holds.begin(), wit->second.holds.end(),
                    [&](const auto& x) { return x.first == k.second && x.second == h.held; });
    auto rit = open_reservations.find(k);
    if (!in_wallet || rit == open_reservations.end() || rit->second != h.held) {
      differences->push_back(what + ": its hold of " + text(h.held) +
                             " is open in the ledger but not in its wallet and records");
    }
    open_reservations.erase(k);
  }
  for (const auto& [k, credits] : open_reservations) {
    if (credits.units > 0) {
      differences->push_back("reservation " + k.second + " of customer '" + name(k.first) +
                             "' holds " + text(credits) +
                             " credits that no hold transaction holds");
    }
  }
}

// The re-rating adjustments of a customer take exactly what its re-rated events are charged
// beyond their stored credits.
void check_rerating(const LedgerTrail& trail,
                    const std::map<std::uint32_t, core::Decimal>& rerate_differences,
                    const NameOf& name, std::vector<std::string>* differences) {
  std::set<std::uint32_t> rerated;
  for (const auto& [cnum, sum] : trail.rerate_adjustments)
    rerated.insert(cnum);
  for (const auto& [cnum, sum] : rerate_differences)
    rerated.insert(cnum);
  for (std::uint32_t cnum : rerated) {
    const auto a = trail.rerate_adjustments.find(cnum);
    const auto d = rerate_differences.find(cnum);
    const core::Decimal adjusted =
        a != trail.rerate_adjustments.end() ? a->second : core::Decimal{};
    const core::Decimal difference = d != rerate_differences.end() ? d->second : core::Decimal{};
    if (adjusted + difference != core::Decimal{}) {
      differences->push_back("customer '" + name(cnum) + "': re-rating adjustments sum to " +
                             text(adjusted) + ", its re-rated events differ by " +
                             text(difference) + " from their stored credits");
    }
  }
}

// Every burn matches a stored event and its price; every priced event has its burn.
void check_burns(const std::map<CustomerEvent, std::vector<Engine::Impl::PricedEvent>>& priced,
                 const LedgerTrail& trail, const NameOf& name,
                 std::vector<std::string>* differences) {
  for (const auto& [k, events] : priced) {
    std::vector<core::Decimal> wanted;
    for (const auto& e : events) {
      if (e.stored != e.computed) {
        differences->push_back("event '" + k.second + "' of customer '" + name(k.first) +
                               "': stored credits " + text(e.stored) + ", its prices give " +
                               text(e.computed));
      }
      if (e.stored.units != 0) {
        wanted.push_back(e.stored);
      }
    }
    std::vector<core::Decimal> got;
    if (auto it = trail.burns.find(k); it != trail.burns.end()) {
      got = it->second;
    }
    std::sort(wanted.begin(), wanted.end());
    std::sort(got.begin(), got.end());
    if (wanted != got) {
      differences->push_back("event '" + k.second + "' of customer '" + name(k.first) +
                             "': " + std::to_string(wanted.size()) + " priced copies, " +
                             std::to_string(got.size()) + " burns that match them");
    }
  }
  for (const auto& [k, amounts] : trail.burns) {
    if (priced.count(k) == 0) {
      differences->push_back("a burn of customer '" + name(k.first) + "' names event '" + k.second +
                             "', which is not stored");
    }
  }
}

}  // namespace

void Engine::Impl::verify_ledger(const std::map<CustomerEvent, std::vector<PricedEvent>>& priced,
                                 const std::unordered_map<std::uint32_t, std::string>& ids,
                                 const std::map<std::uint32_t, core::Decimal>& rerate_differences,
                                 VerifyReport* report) const {
  const NameOf name = [&](std::uint32_t cnum) {
    auto it = ids.find(cnum);
    return it != ids.end() ? it->second : std::to_string(cnum);
  };
  std::vector<std::string>* differences = &report->differences;
  LedgerTrail trail;
  Status scanned =
      store->scan(store::Space::kLedger, "", "", [&](std::string_view key, std::string_view value) {
        const std::uint32_t cnum = key.size() == 12 ? engine::read_be32(key) : 0;
        if (key.size() != 12 || !engine::decode_ledger_block(value, [&](engine::LedgerRecord&& t) {
              trail_txn(trail, cnum, t, name, differences);
            })) {
          differences->push_back("a ledger block cannot be decoded");
        }
        return true;
      });
  if (!scanned.ok()) {
    differences->push_back("the ledger cannot be read: " + scanned.message());
    return;
  }
  // The open reservations' records: (customer, id) -> credits held.
  std::map<CustomerEvent, core::Decimal> open_reservations;
  const std::string rbegin(engine::kReservationKeyPrefix);
  scanned = store->scan(
      store::Space::kMeta, rbegin, engine::prefix_end(rbegin),
      [&](std::string_view key, std::string_view value) {
        engine::ReservationRecord r;
        if (!engine::decode_reservation(value, &r)) {
          differences->push_back("a reservation record cannot be decoded");
        } else {
          open_reservations[{r.customer_num, std::string(key.substr(rbegin.size()))}] = r.credits;
        }
        return true;
      });
  if (!scanned.ok()) {
    differences->push_back("the reservations cannot be read: " + scanned.message());
    return;
  }
  {
    std::shared_lock lock(state_mutex);
    check_wallets(wallets, trail, name, differences);
    check_holds(wallets, trail, std::move(open_reservations), name, differences);
    check_owners(wallets, trail, name, differences);
  }
  check_rerating(trail, rerate_differences, name, differences);
  check_burns(priced, trail, name, differences);
  report->transactions = trail.txns;
}

// ---- the API --------------------------------------------------------------------------------

Result<Wallet> Engine::wallet(const std::string& customer) {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->wallet(customer);
  }
  Impl& d = *impl_;
  std::shared_lock lock(d.state_mutex);
  const engine::CustomerState* cs = d.find_customer(customer);
  if (cs == nullptr) {
    return core::customer_not_found(customer);
  }
  core::Decimal in_flight;
  {
    std::lock_guard limits_lock(d.limits_mutex);
    if (auto lit = d.limits.find(cs->num); lit != d.limits.end()) {
      in_flight = lit->second.credits_in_flight;
    }
  }
  auto it = d.wallets.find(cs->num);
  return engine::wallet_view(d.config, customer, it != d.wallets.end() ? &it->second : nullptr,
                             in_flight);
}

Result<LedgerTransaction> Engine::wallet_transaction(const std::string& customer,
                                                     const WalletTransactionRequest& req,
                                                     const std::string& actor) {
  if (impl_->cluster != nullptr) {
    auto done = impl_->cluster->wallet_transactions_atomic(customer, {req}, false, actor);
    if (!done) {
      return done.error();
    }
    return std::move(done->back());
  }
  Impl& d = *impl_;
  auto work = std::make_shared<LedgerWork>();
  Status s = engine::run_admin(
      d,
      [&d, work, customer, req, actor](store::WriteBatch& wb) -> Status {
        auto it = d.customer_nums.find(customer);
        if (it == d.customer_nums.end()) {
          return core::customer_not_found(customer);
        }
        const core::TimeUs now = d.clock->now_us();
        TALLY_TRY(d.apply_wallet_request(*work, it->second, req, now));
        d.write_ledger(*work, wb);
        const LedgerTransaction t = engine::to_transaction(work->txns.back().second);
        engine::put_audit(d, wb, engine::wallet_record(customer, t, actor, now), now);
        return Status();
      },
      [&d, work]() { d.install_ledger(*work); });
  TALLY_TRY(s);
  LedgerTransaction t = engine::to_transaction(work->txns.back().second);
  t.customer = customer;
  return t;
}

Result<std::vector<LedgerTransaction>> Engine::wallet_transactions_atomic(
    const std::string& customer, const std::vector<WalletTransactionRequest>& requests,
    bool only_if_new) {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->wallet_transactions_atomic(customer, requests, only_if_new);
  }
  Impl& d = *impl_;
  if (requests.empty()) {
    return Status::invalid_argument("no transactions given");
  }
  auto work = std::make_shared<LedgerWork>();
  Status s = engine::run_admin(
      d,
      [&d, work, customer, &requests, only_if_new](store::WriteBatch& wb) -> Status {
        auto it = d.customer_nums.find(customer);
        if (it == d.customer_nums.end()) {
          return core::customer_not_found(customer);
        }
        if (only_if_new) {
          auto w = d.wallets.find(it->second);
          if (w != d.wallets.end() && w->second.transactions > 0) {
            return Status::already_exists("the wallet of customer '" + customer +
                                          "' already has transactions");
          }
        }
        const core::TimeUs now = d.clock->now_us();
        const std::uint64_t first_txn = d.next_txn;
        for (const auto& req : requests) {
          if (Status bad = d.apply_wallet_request(*work, it->second, req, now); !bad.ok()) {
            d.next_txn = first_txn;  // `work` is dropped: nothing of it is written
            return bad;
          }
        }
        d.write_ledger(*work, wb);
        return Status();
      },
      [&d, work]() { d.install_ledger(*work); });
  TALLY_TRY(s);
  std::vector<LedgerTransaction> out;
  for (const auto& [cnum, record] : work->txns) {
    LedgerTransaction t = engine::to_transaction(record);
    t.customer = customer;
    out.push_back(std::move(t));
  }
  return out;
}

Result<LedgerPage> Engine::wallet_transactions(const LedgerQuery& q) const {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->wallet_transactions(q);
  }
  const Impl& d = *impl_;
  if (q.limit == 0 || q.limit > 1000) {
    return Status::invalid_argument("limit must be 1..1000");
  }
  std::uint32_t cnum = 0;
  {
    std::shared_lock lock(d.state_mutex);
    const engine::CustomerState* cs = d.find_customer(q.customer);
    if (cs == nullptr) {
      return core::customer_not_found(q.customer);
    }
    cnum = cs->num;
  }
  std::uint64_t after = 0;
  TALLY_TRY(engine::parse_cursor(q.cursor, &after));
  LedgerPage page;
  Status bad;
  bool more = false;
  const std::string begin = engine::ledger_key(cnum, after + 1);
  const std::string end = engine::ledger_key(cnum + 1, 0);
  bool stop = false;
  TALLY_TRY(d.store->scan(
      store::Space::kLedger, begin, end, [&](std::string_view, std::string_view value) {
        const bool ok = engine::decode_ledger_block(value, [&](engine::LedgerRecord&& r) {
          if (stop || r.seq <= after || (q.type && r.type != *q.type) ||
              r.created_at_us < q.from_us || (q.to_us != 0 && r.created_at_us >= q.to_us)) {
            return;
          }
          if (page.transactions.size() == q.limit) {
            more = true;
            stop = true;
            return;
          }
          LedgerTransaction t = engine::to_transaction(r);  // formatted only when listed
          t.customer = q.customer;
          page.transactions.push_back(std::move(t));
        });
        if (!ok) {
          bad = Status::corruption("a ledger block cannot be decoded");
          return false;
        }
        return !stop;
      }));
  TALLY_TRY(bad);
  if (more) {
    page.next_cursor = std::to_string(page.transactions.back().seq);
  }
  return page;
}

}  // namespace tally
