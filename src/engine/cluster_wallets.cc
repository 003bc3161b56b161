// The scale-out mode's credit wallets (see cluster_mode.h): the embedded engine's wallet rules
// (engine/wallet_rules.h) applied to wallet rows of the customer's shard (cluster/pg_wallets.h).
//
// Every change (an admin's transactions, the burns of an ingest) locks the wallet rows it
// changes (in customer order), reads their state, applies the rules, numbers the new
// transactions from the shard's ledger sequence and writes them with the new state before the
// transaction commits. Burns run inside the ingest's own transaction (write_events'
// in_transaction), after its events are inserted: an event inserted is burned once; a
// duplicate, on any node, is not inserted and burns nothing; a write that fails writes neither.
//
// Differences from the embedded store: ledger ids ("txn_<seq>") are numbered per shard (a
// customer's are unique and ascending); a grant past its expiry is taken out by the next change
// of its wallet (the embedded store also has a background pass), so a wallet read before then
// still lists it; no audit log entry is written (the audit log is not built in the mode).
#include "engine/cluster_mode_impl.h"
#include "engine/engine_impl.h"
#include "engine/wallet_rules.h"

namespace tally::engine {

namespace {

// Transactions are numbered from here while their wallets change, then given the seqs drawn
// from the ledger's sequence (number_transactions).
constexpr std::uint64_t kProvisionalSeq = std::uint64_t{1} << 62;

Result<WalletRecord> decode_state(const std::string& customer, const std::string& state) {
  WalletRecord w;
  if (!state.empty() && !decode_wallet(state, &w)) {
    return Status::corruption("the wallet of customer '" + customer + "' cannot be decoded");
  }
  return w;
}

std::uint64_t renumbered(std::uint64_t seq, const std::vector<std::int64_t>& seqs) {
  return seq >= kProvisionalSeq ? static_cast<std::uint64_t>(seqs[seq - kProvisionalSeq]) : seq;
}

// A ledger record as its row of `customer`, and back: the one mapping of the two shapes.
cluster::LedgerRow row_of(const std::string& customer, const LedgerRecord& t) {
  cluster::LedgerRow r;
  r.customer = customer;
  r.seq = static_cast<std::int64_t>(t.seq);
  r.type = t.type;
  r.amount = t.amount;
  r.before = t.before;
  r.after = t.after;
  r.held = t.held;
  r.event_id = t.event_id;
  r.grant_seq = static_cast<std::int64_t>(t.grant_seq);
  r.reservation_id = t.reservation_id;
  r.description = t.description;
  r.priority = t.priority;
  r.expires_at_us = t.expires_at_us;
  r.created_at_us = t.created_at_us;
  return r;
}

LedgerRecord record_of(const cluster::LedgerRow& r) {
  LedgerRecord t;
  t.seq = static_cast<std::uint64_t>(r.seq);
  t.type = r.type;
  t.amount = r.amount;
  t.before = r.before;
  t.after = r.after;
  t.held = r.held;
  t.event_id = r.event_id;
  t.grant_seq = static_cast<std::uint64_t>(r.grant_seq);
  t.reservation_id = r.reservation_id;
  t.description = r.description;
  t.priority = r.priority;
  t.expires_at_us = r.expires_at_us;
  t.created_at_us = r.created_at_us;
  return t;
}

// The changed wallets (customer -> state) and their new transactions (customer, record), in
// order, numbered from kProvisionalSeq.
struct WalletChanges {
  std::map<std::string, WalletRecord> wallets;
  std::vector<std::pair<std::string, LedgerRecord>> txns;
  std::uint64_t next = kProvisionalSeq;
};

// Gives the changes' transactions (and the grants and wallets that name them) their seqs from
// the ledger's sequence, then writes them and the wallets. REQUIRES: the wallets' rows are
// locked in the open transaction.
Status write_changes(pg::Connection& conn, WalletChanges& changes) {
  auto seqs = cluster::draw_ledger_seqs(conn, changes.txns.size());
  if (!seqs) {
    return seqs.error();
  }
  std::vector<cluster::LedgerRow> rows;
  for (auto& [customer, t] : changes.txns) {
    t.seq = renumbered(t.seq, *seqs);
    t.grant_seq = renumbered(t.grant_seq, *seqs);
    rows.push_back(row_of(customer, t));
  }
  std::vector<cluster::WalletWrite> writes;
  for (auto& [customer, w] : changes.wallets) {
    for (GrantRecord& g : w.grants) {
      g.txn_seq = renumbered(g.txn_seq, *seqs);
    }
    w.last_txn_seq = renumbered(w.last_txn_seq, *seqs);
    writes.push_back(cluster::WalletWrite{
        customer, w.balance, static_cast<std::int64_t>(w.last_txn_seq), encode_wallet(w)});
  }
  TALLY_TRY(cluster::insert_ledger(conn, rows));
  return cluster::store_wallets(conn, writes);
}

// Locks the wallets of `customers` (sorted, distinct) into changes->wallets, each with its
// expired grants taken out.
Status lock_into(pg::Connection& conn, const std::vector<std::string>& customers, core::TimeUs now,
                 WalletChanges* changes) {
  auto states = cluster::lock_wallets(conn, customers);
  if (!states) {
    return states.error();
  }
  for (std::size_t i = 0; i < customers.size(); ++i) {
    auto w = decode_state(customers[i], (*states)[i]);
    if (!w) {
      return w.error();
    }
    WalletRecord& slot = changes->wallets[customers[i]] = std::move(*w);
    std::vector<LedgerRecord> expired;
    expire_wallet_grants(slot, now, &changes->next, &expired);
    for (auto& t : expired) {
      changes->txns.emplace_back(customers[i], std::move(t));
    }
  }
  return Status();
}

}  // namespace

Status ClusterMode::Impl::burn_credits(pg::Connection& conn, const core::EventBatch& b,
                                       std::span<const std::uint32_t> indices,
                                       std::span<const std::optional<cluster::EventCharge>> charges,
                                       const std::vector<bool>& inserted) {
  std::vector<std::size_t> burns;  // positions in indices
  std::vector<std::string> customers;
  for (std::size_t k = 0; k < charges.size(); ++k) {
    if (inserted[k] && charges[k] && charges[k]->credits.units != 0) {
      burns.push_back(k);
      customers.emplace_back(b.text(b.events()[indices[k]].customer));
    }
  }
  if (burns.empty()) {
    return Status();
  }
  std::sort(customers.begin(), customers.end());
  customers.erase(std::unique(customers.begin(), customers.end()), customers.end());
  const core::TimeUs now = clock->now_us();
  WalletChanges changes;
  TALLY_TRY(lock_into(conn, customers, now, &changes));
  for (std::size_t k : burns) {
    const core::Event& e = b.events()[indices[k]];
    const std::string customer(b.text(e.customer));
    std::vector<LedgerRecord> out;
    burn_wallet(changes.wallets[customer], charges[k]->credits, b.text(e.id), now, "",
                &changes.next, &out);
    for (auto& t : out) {
      changes.txns.emplace_back(customer, std::move(t));
    }
  }
  return write_changes(conn, changes);
}

Status ClusterMode::Impl::verify_wallets(pg::Connection& conn, const std::string& shard,
                                         std::vector<std::string>* differences) {
  auto wallets = cluster::read_wallets(conn);
  if (!wallets) {
    return wallets.error();
  }
  for (const cluster::WalletWrite& row : *wallets) {
    const std::string where = shard + ": wallet of customer '" + row.customer + "'";
    auto w = decode_state(row.customer, row.state);
    if (!w) {
      differences->push_back(where + ": its state cannot be decoded");
      continue;
    }
    core::Decimal granted;
    for (const GrantRecord& g : w->grants) {
      granted += g.remaining;
    }
    if (w->balance != row.balance || static_cast<std::int64_t>(w->last_txn_seq) != row.last_seq) {
      differences->push_back(where + ": its row and its state differ (balance " +
                             core::format_decimal(row.balance) + " and " +
                             core::format_decimal(w->balance) + ")");
    } else if (w->balance != granted - w->debt) {
      differences->push_back(where + ": grants and debt do not add up to the balance");
    }
  }
  return Status();
}

Result<Wallet> ClusterMode::wallet(const std::string& customer) {
  TALLY_TRY(impl_->read_customer(customer).status());
  auto lease = impl_->shard_of(customer).lease();
  if (!lease) {
    return lease.error();
  }
  auto state = cluster::read_wallet_state(**lease, customer);
  if (!state) {
    return state.error();
  }
  auto w = decode_state(customer, *state);
  if (!w) {
    return w.error();
  }
  return wallet_view(*impl_->config, customer, state->empty() ? nullptr : &*w, core::Decimal{});
}

Result<std::vector<LedgerTransaction>> ClusterMode::wallet_transactions_atomic(
    const std::string& customer, const std::vector<WalletTransactionRequest>& requests,
    bool only_if_new) {
  if (requests.empty()) {
    return Status::invalid_argument("no transactions given");
  }
  TALLY_TRY(impl_->read_customer(customer).status());
  auto lease = impl_->shard_of(customer).lease();
  if (!lease) {
    return lease.error();
  }
  auto txn = pg::Transaction::begin(**lease);
  if (!txn) {
    return txn.error();
  }
  const core::TimeUs now = impl_->clock->now_us();
  WalletChanges changes;
  TALLY_TRY(lock_into(**lease, {customer}, now, &changes));
  WalletRecord& w = changes.wallets[customer];
  if (only_if_new && w.transactions > 0) {
    return Status::already_exists("the wallet of customer '" + customer +
                                  "' already has transactions");
  }
  // Every request is checked before any is applied; a failure writes nothing (the transaction
  // rolls back).
  for (const auto& req : requests) {
    core::Decimal amount;
    TALLY_TRY(check_wallet_transaction(req, now, &amount));
  }
  for (const auto& req : requests) {
    std::vector<LedgerRecord> out;
    TALLY_TRY(apply_wallet_transaction(w, req, now, &changes.next, &out));
    for (auto& t : out) {
      changes.txns.emplace_back(customer, std::move(t));
    }
  }
  TALLY_TRY(write_changes(**lease, changes));
  TALLY_TRY(txn->commit());
  std::vector<LedgerTransaction> result;
  for (const auto& [id, record] : changes.txns) {
    LedgerTransaction t = to_transaction(record);
    t.customer = customer;
    result.push_back(std::move(t));
  }
  return result;
}

Result<LedgerPage> ClusterMode::wallet_transactions(const LedgerQuery& q) {
  if (q.limit == 0 || q.limit > 1000) {
    return Status::invalid_argument("limit must be 1..1000");
  }
  TALLY_TRY(impl_->read_customer(q.customer).status());
  std::uint64_t after = 0;
  TALLY_TRY(parse_cursor(q.cursor, &after));
  auto lease = impl_->shard_of(q.customer).lease();
  if (!lease) {
    return lease.error();
  }
  auto rows = cluster::read_ledger(**lease, q.customer, static_cast<std::int64_t>(after), q.type,
                                   q.from_us, q.to_us, q.limit + 1);
  if (!rows) {
    return rows.error();
  }
  LedgerPage page;
  for (const cluster::LedgerRow& r : *rows) {
    if (page.transactions.size() == q.limit) {
      page.next_cursor = std::to_string(page.transactions.back().seq);
      break;
    }
    LedgerTransaction t = to_transaction(record_of(r));
    t.customer = q.customer;
    page.transactions.push_back(std::move(t));
  }
  return page;
}

}  // namespace tally::engine
