// A credit wallet's rules as pure functions over its state (engine::WalletRecord): what a burn,
// a grant, a top-up, a refund, an adjustment or the passing of a grant's expiry does to it, and
// the ledger transactions that record each change. The embedded engine (wallet.cc) applies them
// to the wallets of a commit; the scale-out mode (cluster_wallets.cc) to a wallet row it holds
// locked in PostgreSQL. Same rules, same answers.
//
// The balance is sum(grant remaining) - debt. Burns take credits from grants in burn order
// (lowest priority first, then the soonest expiry, then the oldest); what no grant can cover
// becomes debt, the negative part of the balance, which the next credits pay off first.
//
// Every function numbers the transactions it appends from *next_seq (incremented per
// transaction), chains them on the wallet's balance (balance_before is the previous
// balance_after) and appends them to *out; the wallet is left as they lead it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/codec.h"
#include "tally/types.h"

namespace tally::config {
struct Config;
}

namespace tally::engine {

// Appends `t` with `amount` to w's chain: its seq, before and after; counts it on the wallet.
void append_to_wallet(WalletRecord& w, std::uint64_t* next_seq, core::Decimal amount,
                      LedgerRecord t, std::vector<LedgerRecord>* out);

// Grants of w past their expiry at `now` are taken out, each with an `expiry` transaction, so
// nothing burns credits that are gone.
void expire_wallet_grants(WalletRecord& w, core::TimeUs now, std::uint64_t* next_seq,
                          std::vector<LedgerRecord>* out);

// An event's credits: a burn from the grants (debt for the rest), or, when negative (a cheaper
// volume tier, an admin's correction), a refund tied to the event. REQUIRES: expired grants
// were taken out (expire_wallet_grants).
void burn_wallet(WalletRecord& w, core::Decimal credits, std::string_view event_id,
                 core::TimeUs now, std::string_view reservation_id, std::uint64_t* next_seq,
                 std::vector<LedgerRecord>* out);

// An admin's adjustment of `amount` (t its transaction, without amount): credits become a paid
// grant; a negative amount takes from the grants (debt for the rest).
void adjust_wallet_by(WalletRecord& w, core::Decimal amount, LedgerRecord t, core::TimeUs now,
                      std::uint64_t* next_seq, std::vector<LedgerRecord>* out);

// Checks an admin's transaction without applying it; its amount into *amount. Errors:
// kInvalidArgument saying what is wrong.
Status check_wallet_transaction(const WalletTransactionRequest& req, core::TimeUs now,
                                core::Decimal* amount);

// An admin's transaction (grant, top_up, refund or adjustment), checked and applied. Errors:
// kInvalidArgument saying what is wrong (nothing applied). REQUIRES: expired grants were taken
// out.
Status apply_wallet_transaction(WalletRecord& w, const WalletTransactionRequest& req,
                                core::TimeUs now, std::uint64_t* next_seq,
                                std::vector<LedgerRecord>* out);

// The credits w holds for open reservations.
core::Decimal wallet_held(const WalletRecord& w);

// The API's view of a customer's wallet (an empty one when `w` is null); `in_flight` is what
// open reservations hold beyond the wallet's own holds.
Wallet wallet_view(const config::Config& config, const std::string& customer, const WalletRecord* w,
                   core::Decimal in_flight);

}  // namespace tally::engine
