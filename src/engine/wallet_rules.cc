// A credit wallet's rules (see wallet_rules.h).
#include "engine/wallet_rules.h"

#include <algorithm>

#include "config/config.h"

namespace tally::engine {

namespace {

constexpr std::int64_t kPromotionalPriority = 0;
constexpr std::int64_t kPaidPriority = 100;

bool burns_before(const GrantRecord& a, const GrantRecord& b) {
  if (a.priority != b.priority) {
    return a.priority < b.priority;
  }
  const core::TimeUs ea = a.expires_us == 0 ? INT64_MAX : a.expires_us;
  const core::TimeUs eb = b.expires_us == 0 ? INT64_MAX : b.expires_us;
  if (ea != eb) {
    return ea < eb;
  }
  return a.txn_seq < b.txn_seq;
}

std::string text(core::Decimal d) {
  return core::format_decimal(d);
}

// Takes up to `credits` from the grants in burn order; returns what they could not cover.
core::Decimal take_from_grants(WalletRecord& w, core::Decimal credits) {
  std::sort(w.grants.begin(), w.grants.end(), burns_before);
  for (auto& g : w.grants) {
    if (credits.units <= 0) {
      break;
    }
    const core::Decimal taken = std::min(g.remaining, credits);
    g.remaining = g.remaining - taken;
    credits = credits - taken;
  }
  std::erase_if(w.grants, [](const GrantRecord& g) { return g.remaining.units <= 0; });
  return credits;
}

// Adds credits: pays off debt first, the rest becomes a grant.
void add_credits(WalletRecord& w, GrantRecord g) {
  const core::Decimal paid = std::min(w.debt, g.amount);
  w.debt = w.debt - paid;
  g.remaining = g.amount - paid;
  if (g.remaining.units > 0) {
    w.grants.push_back(std::move(g));
    std::sort(w.grants.begin(), w.grants.end(), burns_before);
  }
}

std::int64_t priority_of(const WalletTransactionRequest& req) {
  return req.priority >= 0                ? req.priority
         : req.type == LedgerType::kGrant ? kPromotionalPriority
                                          : kPaidPriority;
}

}  // namespace

void append_to_wallet(WalletRecord& w, std::uint64_t* next_seq, core::Decimal amount,
                      LedgerRecord t, std::vector<LedgerRecord>* out) {
  t.seq = (*next_seq)++;
  t.amount = amount;
  t.before = w.balance;
  w.balance += amount;
  t.after = w.balance;
  ++w.transactions;
  w.last_txn_seq = t.seq;
  out->push_back(std::move(t));
}

void expire_wallet_grants(WalletRecord& w, core::TimeUs now, std::uint64_t* next_seq,
                          std::vector<LedgerRecord>* out) {
  std::vector<GrantRecord> expired;
  for (const auto& g : w.grants) {
    if (g.expires_us != 0 && g.expires_us <= now && g.remaining.units > 0) {
      expired.push_back(g);
    }
  }
  for (const auto& g : expired) {
    std::erase_if(w.grants, [&](const GrantRecord& x) { return x.txn_seq == g.txn_seq; });
    LedgerRecord t;
    t.type = LedgerType::kExpiry;
    t.grant_seq = g.txn_seq;
    t.description =
        "expiry of " + std::string(to_string(g.type)) + " txn_" + std::to_string(g.txn_seq);
    t.created_at_us = now;
    append_to_wallet(w, next_seq, core::Decimal{} - g.remaining, std::move(t), out);
  }
}

void burn_wallet(WalletRecord& w, core::Decimal credits, std::string_view event_id,
                 core::TimeUs now, std::string_view reservation_id, std::uint64_t* next_seq,
                 std::vector<LedgerRecord>* out) {
  LedgerRecord t;
  t.event_id = std::string(event_id);
  t.reservation_id = std::string(reservation_id);
  t.created_at_us = now;
  if (credits.units >= 0) {
    // A burn only ever takes credits: usage can never mint them.
    w.debt += take_from_grants(w, credits);
    t.type = LedgerType::kBurn;
    t.description = "usage credit burn";
    append_to_wallet(w, next_seq, core::Decimal{} - credits, std::move(t), out);
    return;
  }
  // A negative cost is not a burn: volume pricing crossing into a cheaper tier lowers the
  // period's price, or an admin's correction (a meter with allow_negative) takes usage back.
  // Either gives credits back as a refund tied to the event, never as a burn.
  GrantRecord g;
  g.txn_seq = *next_seq;  // the transaction appended below
  g.type = LedgerType::kRefund;
  g.amount = core::Decimal{} - credits;
  g.priority = kPaidPriority;
  g.created_us = now;
  add_credits(w, std::move(g));
  t.type = LedgerType::kRefund;
  t.grant_seq = *next_seq;
  t.priority = kPaidPriority;
  t.description = "usage credit refund (the event lowered the period's price)";
  append_to_wallet(w, next_seq, core::Decimal{} - credits, std::move(t), out);
}

void adjust_wallet_by(WalletRecord& w, core::Decimal amount, LedgerRecord t, core::TimeUs now,
                      std::uint64_t* next_seq, std::vector<LedgerRecord>* out) {
  if (amount.units > 0) {
    GrantRecord g;
    g.txn_seq = *next_seq;  // the transaction appended below
    g.type = t.type;
    g.amount = amount;
    g.priority = kPaidPriority;
    g.created_us = now;
    add_credits(w, std::move(g));
    t.grant_seq = *next_seq;
    t.priority = kPaidPriority;
  } else {
    w.debt += take_from_grants(w, core::Decimal{} - amount);
  }
  append_to_wallet(w, next_seq, amount, std::move(t), out);
}

Status check_wallet_transaction(const WalletTransactionRequest& req, core::TimeUs now,
                                core::Decimal* amount_out) {
  const bool credit_type = req.type == LedgerType::kGrant || req.type == LedgerType::kTopUp ||
                           req.type == LedgerType::kRefund;
  if (!credit_type && req.type != LedgerType::kAdjustment) {
    return Status::invalid_argument(
        "type must be one of grant, top_up, refund, adjustment "
        "(burns come from events)");
  }
  Result<core::Decimal> amount = core::parse_decimal(req.amount);
  if (!amount) {
    return Status::invalid_argument("amount '" + req.amount + "' is not a decimal number");
  }
  if (credit_type && amount->units <= 0) {
    return Status::invalid_argument("the amount of a " + std::string(to_string(req.type)) +
                                    " must be positive");
  }
  if (amount->units == 0) {
    return Status::invalid_argument("the amount of an adjustment must not be zero");
  }
  if (req.expires_at_us != 0 && req.type != LedgerType::kGrant && req.type != LedgerType::kTopUp) {
    return Status::invalid_argument("only grants and top-ups can expire");
  }
  if (req.expires_at_us != 0 && req.expires_at_us <= now) {
    return Status::invalid_argument("expires_at must be in the future");
  }
  if (req.priority < -1 || req.priority > 1'000'000) {
    return Status::invalid_argument("priority must be 0..1000000");
  }
  if (req.description.size() > 1024) {
    return Status::invalid_argument("description is at most 1024 bytes");
  }
  *amount_out = *amount;
  return Status();
}

Status apply_wallet_transaction(WalletRecord& w, const WalletTransactionRequest& req,
                                core::TimeUs now, std::uint64_t* next_seq,
                                std::vector<LedgerRecord>* out) {
  core::Decimal amount;
  TALLY_TRY(check_wallet_transaction(req, now, &amount));
  if (amount.units > 0) {
    GrantRecord g;
    g.txn_seq = *next_seq;  // the transaction appended below
    g.type = req.type;
    g.amount = amount;
    g.priority = priority_of(req);
    g.expires_us = req.expires_at_us;
    g.created_us = now;
    add_credits(w, g);
  } else {
    w.debt += take_from_grants(w, core::Decimal{} - amount);
  }
  LedgerRecord t;
  t.type = req.type;
  t.grant_seq = *next_seq;
  t.description = req.description;
  t.created_at_us = now;
  t.expires_at_us = req.expires_at_us;
  t.priority = priority_of(req);
  append_to_wallet(w, next_seq, amount, std::move(t), out);
  return Status();
}

core::Decimal wallet_held(const WalletRecord& w) {
  core::Decimal held;
  for (const auto& [id, credits] : w.holds) {
    held += credits;
  }
  return held;
}

Wallet wallet_view(const config::Config& config, const std::string& customer, const WalletRecord* w,
                   core::Decimal in_flight) {
  Wallet out;
  out.customer = customer;
  out.currency = config.credits.currency;
  out.credits_per_currency_unit = text(config.credits.per_currency_unit);
  const WalletRecord empty;
  const WalletRecord& r = w != nullptr ? *w : empty;
  out.balance = text(r.balance);
  out.available = text(r.balance - in_flight);
  out.held = text(wallet_held(r));
  out.exhausted = r.balance.units <= 0;
  out.transactions = r.transactions;
  for (const auto& g : r.grants) {
    WalletGrant wg;
    wg.id = "txn_" + std::to_string(g.txn_seq);
    wg.type = g.type;
    wg.amount = text(g.amount);
    wg.remaining = text(g.remaining);
    wg.priority = g.priority;
    wg.expires_at_us = g.expires_us;
    wg.created_at_us = g.created_us;
    out.grants.push_back(std::move(wg));
  }
  return out;
}

}  // namespace tally::engine
