// Credit wallets and their ledger in PostgreSQL (see pg_wallets.h). Values go as parameters or
// COPY fields; a wallet's state (bytes) travels as hex (`decode($n, 'hex')`, `encode(state,
// 'hex')`), times as microseconds turned into timestamptz by SQL.
#include "cluster/pg_wallets.h"

#include <algorithm>

#include "cluster/pg_customers.h"
#include "cluster/pg_sql.h"
#include "common/crypto.h"

namespace tally::cluster {
namespace {

constexpr std::string_view kEnsureWallets =
    "INSERT INTO wallets (customer_id) SELECT x FROM unnest($1::text[]) AS x ORDER BY x "
    "ON CONFLICT (customer_id) DO NOTHING";
constexpr std::string_view kLockWallets =
    "SELECT customer_id, encode(state, 'hex') FROM wallets WHERE customer_id = ANY($1::text[]) "
    "ORDER BY customer_id FOR UPDATE";
constexpr std::string_view kDrawSeqs =
    "WITH s AS MATERIALIZED (SELECT pg_get_serial_sequence('ledger', 'seq')::regclass AS id) "
    "SELECT nextval(s.id) FROM s, generate_series(1, $1::int)";
// COPY writes the identity column's values as given (as OVERRIDING SYSTEM VALUE would).
constexpr std::string_view kCopyLedger =
    "COPY ledger (seq, customer_id, type, amount, balance_before, balance_after, held, event_id, "
    "grant_seq, reservation_id, description, priority, expires_at, created_at) FROM STDIN";
constexpr std::string_view kStoreWallets =
    "UPDATE wallets AS w SET balance = v.balance, last_seq = v.last_seq, "
    "state = decode(v.state, 'hex'), updated_at = now() "
    "FROM unnest($1::text[], $2::numeric[], $3::bigint[], $4::text[]) "
    "AS v (id, balance, last_seq, state) WHERE w.customer_id = v.id";
constexpr std::string_view kReadLedger =
    "SELECT customer_id, seq, type, amount, balance_before, balance_after, held, event_id, "
    "grant_seq, reservation_id, description, priority, "
    "(extract(epoch FROM expires_at) * 1000000)::bigint, "
    "(extract(epoch FROM created_at) * 1000000)::bigint FROM ledger "
    "WHERE customer_id = $1 AND seq > $2::bigint AND ($3::text IS NULL OR type = $3::text) "
    "AND created_at >= timestamptz 'epoch' + $4::bigint * interval '1 microsecond' "
    "AND ($5::bigint = 0 OR created_at < timestamptz 'epoch' + $5::bigint * interval "
    "'1 microsecond') ORDER BY seq LIMIT $6::bigint";

// The schema spells top_up without its underscore.
std::string type_text(LedgerType t) {
  return t == LedgerType::kTopUp ? std::string("topup") : std::string(to_string(t));
}

std::optional<LedgerType> type_of(std::string_view text) {
  return text == "topup" ? std::optional<LedgerType>(LedgerType::kTopUp) : parse_ledger_type(text);
}

Result<std::string> from_hex(std::string_view hex) {
  std::optional<std::string> bytes = bytes_of_hex(hex);
  if (!bytes) {
    return Status::corruption("a wallet state is not hex");
  }
  return std::move(*bytes);
}

pg::Value micros_time(core::TimeUs t) {
  return core::format_rfc3339(t);
}

core::Decimal decimal_of(const pg::Value& v) {
  core::Decimal out;
  if (v) {
    core::try_parse_decimal(*v, &out);
  }
  return out;
}

}  // namespace

Result<std::vector<std::string>> lock_wallets(pg::Connection& conn,
                                              const std::vector<std::string>& customers) {
  const std::string ids = text_array(customers);
  TALLY_TRY(conn.exec(kEnsureWallets, {ids}).status());
  auto rows = conn.exec(kLockWallets, {ids});
  if (!rows) {
    return rows.error();
  }
  if (rows->row_count() != customers.size()) {
    return Status::internal("wallet rows locked: " + std::to_string(rows->row_count()) + " of " +
                            std::to_string(customers.size()));
  }
  std::vector<std::string> out;
  for (std::size_t i = 0; i < customers.size(); ++i) {
    if (rows->at(i, 0) != customers[i]) {
      return Status::internal("wallet rows came back in another order");
    }
    auto state = from_hex(rows->at(i, 1).value_or(""));
    if (!state) {
      return state.error();
    }
    out.push_back(std::move(*state));
  }
  return out;
}

Result<std::string> read_wallet_state(pg::Connection& conn, const std::string& customer) {
  auto rows =
      conn.exec("SELECT encode(state, 'hex') FROM wallets WHERE customer_id = $1", {customer});
  if (!rows) {
    return rows.error();
  }
  if (rows->row_count() == 0) {
    return std::string();
  }
  return from_hex(rows->at(0, 0).value_or(""));
}

Result<core::Decimal> read_wallet_balance(pg::Connection& conn, const std::string& customer) {
  auto rows = conn.exec("SELECT balance FROM wallets WHERE customer_id = $1", {customer});
  if (!rows) {
    return rows.error();
  }
  return rows->row_count() == 0 ? core::Decimal{} : decimal_of(rows->at(0, 0));
}

Result<std::vector<WalletWrite>> read_wallets(pg::Connection& conn) {
  auto rows = conn.exec(
      "SELECT customer_id, balance, last_seq, encode(state, 'hex') FROM wallets WHERE state IS "
      "NOT NULL ORDER BY customer_id");
  if (!rows) {
    return rows.error();
  }
  std::vector<WalletWrite> out;
  for (const auto& row : rows->rows) {
    auto state = from_hex(row[3].value_or(""));
    if (!state) {
      return state.error();
    }
    out.push_back(WalletWrite{row[0].value_or(""), decimal_of(row[1]), pg::int_or_zero(row[2]),
                              std::move(*state)});
  }
  return out;
}

Result<std::vector<std::int64_t>> draw_ledger_seqs(pg::Connection& conn, std::size_t count) {
  std::vector<std::int64_t> out;
  if (count == 0) {
    return out;
  }
  auto rows = conn.exec(kDrawSeqs, {std::to_string(count)});
  if (!rows) {
    return rows.error();
  }
  for (const auto& row : rows->rows) {
    out.push_back(pg::int_or_zero(row[0]));
  }
  std::sort(out.begin(), out.end());
  if (out.size() != count || out.front() <= 0) {
    return Status::internal("ledger sequence numbers not drawn");
  }
  return out;
}

Status insert_ledger(pg::Connection& conn, const std::vector<LedgerRow>& rows) {
  if (rows.empty()) {
    return Status();
  }
  std::vector<std::vector<pg::Value>> fields;
  fields.reserve(rows.size());
  for (const LedgerRow& r : rows) {
    fields.push_back({std::to_string(r.seq), r.customer, type_text(r.type),
                      core::format_decimal(r.amount), core::format_decimal(r.before),
                      core::format_decimal(r.after), core::format_decimal(r.held), r.event_id,
                      r.grant_seq != 0 ? pg::Value(std::to_string(r.grant_seq)) : std::nullopt,
                      r.reservation_id, r.description, std::to_string(r.priority),
                      r.expires_at_us != 0 ? micros_time(r.expires_at_us) : std::nullopt,
                      micros_time(r.created_at_us)});
  }
  auto copied = conn.copy_from(kCopyLedger, fields);
  if (!copied) {
    if (copied.error().code() == StatusCode::kAlreadyExists) {
      return Status::already_exists(
          "an event of these burns was burned already (ledger_burn_once)");
    }
    return copied.error();
  }
  return Status();
}

Status store_wallets(pg::Connection& conn, const std::vector<WalletWrite>& wallets) {
  if (wallets.empty()) {
    return Status();
  }
  std::vector<std::string> ids;
  std::vector<std::string> balances;
  std::vector<std::string> seqs;
  std::vector<std::string> states;
  for (const WalletWrite& w : wallets) {
    ids.push_back(w.customer);
    balances.push_back(core::format_decimal(w.balance));
    seqs.push_back(std::to_string(w.last_seq));
    states.push_back(common::to_hex(w.state));
  }
  return conn
      .exec(kStoreWallets,
            {text_array(ids), text_array(balances), text_array(seqs), text_array(states)})
      .status();
}

Result<std::vector<LedgerRow>> read_ledger(pg::Connection& conn, const std::string& customer,
                                           std::int64_t after_seq, std::optional<LedgerType> type,
                                           core::TimeUs from_us, core::TimeUs to_us,
                                           std::size_t limit) {
  limit = std::min(limit, kLedgerPageMax + 1);
  auto rows = conn.exec(
      kReadLedger,
      {customer, std::to_string(after_seq), type ? pg::Value(type_text(*type)) : std::nullopt,
       std::to_string(from_us), std::to_string(to_us), std::to_string(limit)});
  if (!rows) {
    return rows.error();
  }
  std::vector<LedgerRow> out;
  for (const auto& row : rows->rows) {
    LedgerRow r;
    r.customer = row[0].value_or("");
    r.seq = pg::int_or_zero(row[1]);
    auto t = type_of(row[2].value_or(""));
    if (!t) {
      return Status::corruption("ledger row " + std::to_string(r.seq) + " has an unknown type");
    }
    r.type = *t;
    r.amount = decimal_of(row[3]);
    r.before = decimal_of(row[4]);
    r.after = decimal_of(row[5]);
    r.held = decimal_of(row[6]);
    r.event_id = row[7].value_or("");
    r.grant_seq = pg::int_or_zero(row[8]);
    r.reservation_id = row[9].value_or("");
    r.description = row[10].value_or("");
    r.priority = pg::int_or_zero(row[11]);
    r.expires_at_us = pg::int_or_zero(row[12]);
    r.created_at_us = pg::int_or_zero(row[13]);
    out.push_back(std::move(r));
  }
  return out;
}

}  // namespace tally::cluster
