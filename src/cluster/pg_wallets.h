// Credit wallets and their ledger in PostgreSQL, on the customer's shard (docs/cluster.md,
// "Prices, wallets and credits"; schema versions 1 and 3 of src/pg/schema.cc).
//
// A wallet is one `wallets` row: its balance, the sequence number of its last transaction, and
// its state (the engine's wallet snapshot, opaque bytes here: grants with what is left of each,
// debt, counts). Its ledger is the `ledger` rows of the customer, numbered from the shard's
// `ledger.seq` identity. Whoever changes a wallet holds its row locked (lock_wallets, SELECT
// ... FOR UPDATE, in customer order) from reading its state to writing the new one and its
// transactions, in one transaction, so changes from every node apply one after the other and
// each transaction's balance_before is the previous one's balance_after. A burn names its event
// (ledger_burn_once: at most one per customer and event id).
//
// Thread safety: the functions use the given connection only (see pg/connection.h).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "core/decimal.h"
#include "core/time.h"
#include "pg/connection.h"
#include "tally/status.h"
#include "tally/types.h"

namespace tally::cluster {

// At most this many transactions listed by one read_ledger call.
inline constexpr std::size_t kLedgerPageMax = 1000;

// One ledger row.
struct LedgerRow {
  std::string customer;
  std::int64_t seq = 0;
  LedgerType type = LedgerType::kGrant;
  core::Decimal amount;
  core::Decimal before;
  core::Decimal after;
  core::Decimal held;
  std::string event_id;
  std::int64_t grant_seq = 0;  // 0 = none (NULL)
  std::string reservation_id;
  std::string description;
  std::int64_t priority = 0;
  core::TimeUs expires_at_us = 0;  // 0 = none (NULL)
  core::TimeUs created_at_us = 0;
};

// A wallet row's new values.
struct WalletWrite {
  std::string customer;
  core::Decimal balance;
  std::int64_t last_seq = 0;
  std::string state;  // opaque bytes
};

// Locks the wallet rows of `customers` (sorted, distinct; created empty when missing) and
// returns their states in that order ("" for a wallet without one yet). REQUIRES: a transaction
// is open on `conn`; the locks last until it ends.
Result<std::vector<std::string>> lock_wallets(pg::Connection& conn,
                                              const std::vector<std::string>& customers);

// The state of `customer`'s wallet without locking it; "" when it has none.
Result<std::string> read_wallet_state(pg::Connection& conn, const std::string& customer);

// The balance of `customer`'s wallet without locking it; 0 when it has none.
Result<core::Decimal> read_wallet_balance(pg::Connection& conn, const std::string& customer);

// Every wallet of the shard that has a state: customer, balance and state, in customer order.
// For `tally verify` (its memory: every wallet of the shard).
Result<std::vector<WalletWrite>> read_wallets(pg::Connection& conn);

// `count` new sequence numbers of ledger.seq, ascending.
Result<std::vector<std::int64_t>> draw_ledger_seqs(pg::Connection& conn, std::size_t count);

// Inserts `rows` (COPY; their seqs drawn by draw_ledger_seqs). Errors: kAlreadyExists for a
// second burn of one event (ledger_burn_once); the connection's.
Status insert_ledger(pg::Connection& conn, const std::vector<LedgerRow>& rows);

// Writes the wallets' new balance, last seq and state (their rows exist: lock_wallets).
Status store_wallets(pg::Connection& conn, const std::vector<WalletWrite>& wallets);

// Up to `limit` transactions of `customer` with seq > after_seq, oldest first, of `type` when
// given, created in [from_us, to_us) (to_us 0 = no bound).
Result<std::vector<LedgerRow>> read_ledger(pg::Connection& conn, const std::string& customer,
                                           std::int64_t after_seq, std::optional<LedgerType> type,
                                           core::TimeUs from_us, core::TimeUs to_us,
                                           std::size_t limit);

}  // namespace tally::cluster
