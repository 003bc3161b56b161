// Byte encodings of everything the engine stores: keys that sort the way they are scanned,
// and compact values. docs/storage.md describes the same formats in prose.
//
// All multi-byte key parts are big-endian so byte order equals numeric order; values use
// LEB128 varints and length-prefixed bytes. Every value starts with a format version byte.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <tally/types.h>

#include "common/coding.h"
#include "core/aggregate.h"
#include "core/event.h"
#include "core/pricing.h"

namespace tally::engine {

// ---- primitives (common/coding.h), named here as the rest of the engine knows them ----------
using common::get_i128;
using common::put_be32;
using common::put_be64;
using common::put_bytes;
using common::put_i128;
using common::put_varint;
using common::put_zigzag;
using common::read_be32;
using common::read_be64;
using common::Reader;

// The first key after every key that starts with `prefix` (its last byte plus one), the end of
// a scan over the prefix. REQUIRES: prefix non-empty, its last byte not 0xff.
std::string prefix_end(std::string_view prefix);

// ---- event blocks (Space::kEvents) ----------------------------------------------------------
// Key: customer number (be32) + last sequence in the block (be64). One block per customer per
// group commit, so the events of one customer read back in sequence order.
std::string event_block_key(std::uint32_t customer_num, std::uint64_t last_seq);

struct BlockEvent {
  std::uint64_t seq = 0;
  core::TimeUs time_us = 0;
  bool flagged = false;
  std::string_view id;
  std::string_view type;

  struct Prop {
    core::PropKind kind;
    std::string_view key;
    std::string_view text;
  };

  std::vector<Prop> props;
  bool priced = false;
  core::Decimal cost;
  core::Decimal credits;
  std::uint32_t quantity = 1;       // core::Event::quantity
  core::TimeUs received_at_us = 0;  // its block's (when it was committed, and priced)
};

class EventBlockWriter {
 public:
  void begin(std::uint64_t first_seq, core::TimeUs received_at_us);
  // `cost` and `credits` are stored when `priced`.
  void add(const core::EventBatch& batch, const core::Event& e, std::uint64_t seq, bool flagged,
           bool priced = false, core::Decimal cost = {}, core::Decimal credits = {});
  // Adds an event read from a stored block or an archive, keeping every field as it was
  // (archiving rewrites partly archived blocks, restoring puts events back).
  void add_stored(const BlockEvent& e);
  // Finishes the block; returns its value bytes. The writer can begin() again after.
  std::string finish();

  std::uint32_t count() const { return count_; }

 private:
  std::string body_;
  std::uint64_t first_seq_ = 0;
  core::TimeUs received_at_us_ = 0;
  std::uint32_t count_ = 0;
};

// Decodes a block. `fn(const BlockEvent&)` is called per event, in sequence order; the views
// point into `value`. Returns false when the block is corrupt.
struct BlockHeader {
  std::uint64_t first_seq = 0;
  core::TimeUs received_at_us = 0;
  std::uint32_t count = 0;
};

template <typename Fn>
bool decode_event_block(std::string_view value, BlockHeader* header, Fn&& fn);
bool decode_event_block_header(Reader& r, BlockHeader* header);
bool decode_block_event(Reader& r, const BlockHeader& h, BlockEvent* e);

template <typename Fn>
bool decode_event_block(std::string_view value, BlockHeader* header, Fn&& fn) {
  Reader r(value);
  if (!decode_event_block_header(r, header)) {
    return false;
  }
  BlockEvent e;
  for (std::uint32_t i = 0; i < header->count; ++i) {
    if (!decode_block_event(r, *header, &e)) {
      return false;
    }
    fn(static_cast<const BlockEvent&>(e));
  }
  return r.done();
}

// ---- dedup records (Space::kDedup) ----------------------------------------------------------
// Key: first sequence of the commit (be64). Value: received_at, then (hash, seq) per event.
struct DedupEntry {
  std::uint64_t hash = 0;
  std::uint64_t seq = 0;
  std::uint32_t customer_num = 0;
};

std::string dedup_key(std::uint64_t first_seq);
std::string encode_dedup_record(core::TimeUs received_at_us,
                                const std::vector<DedupEntry>& entries);
bool decode_dedup_record(std::string_view value, core::TimeUs* received_at_us,
                         std::vector<DedupEntry>* entries);

// The dedup hash of (customer, id). Never 0.
std::uint64_t dedup_hash(std::string_view customer, std::string_view id);

// ---- aggregates (Space::kAggregates, Space::kUniques) ---------------------------------------
// Key: meter key + '\0' + customer number (be32) + minute start (be64) + group text.
std::string aggregate_key(std::string_view meter, std::uint32_t customer_num,
                          core::TimeUs minute_us, std::string_view group);
std::string aggregate_meter_prefix(std::string_view meter);  // meter key + '\0'

struct AggregateKey {
  std::string_view meter;
  std::uint32_t customer_num = 0;
  core::TimeUs minute_us = 0;
  std::string_view group;
};

bool decode_aggregate_key(std::string_view key, AggregateKey* out);
std::string encode_agg_state(const core::AggState& s);
bool decode_agg_state(std::string_view value, core::AggState* s);

// Key: aggregate key's parts with the group length-prefixed, then the distinct value.
std::string unique_key(std::string_view meter, std::uint32_t customer_num, core::TimeUs minute_us,
                       std::string_view group, std::string_view value);

struct UniqueKey {
  std::string_view meter;
  std::uint32_t customer_num = 0;
  core::TimeUs minute_us = 0;
  std::string_view group;
  std::string_view value;
};

bool decode_unique_key(std::string_view key, UniqueKey* out);

// ---- customers and keys ---------------------------------------------------------------------
std::string encode_customer(std::uint32_t num, const Customer& c);
bool decode_customer(std::string_view value, std::uint32_t* num, Customer* c);

struct KeyRecord {
  ApiKeyInfo info;
  std::string hash;  // 32 raw bytes of SHA-256(secret)
};

std::string encode_key_record(const KeyRecord& k);
bool decode_key_record(std::string_view value, KeyRecord* k);

// ---- ledger (Space::kLedger) -------------------------------------------------------------
// One block per customer per commit, like event blocks: key = customer number (be32) + the
// sequence of the block's last transaction (be64); value = the block's transactions in order,
// each a LedgerTransaction without its customer (the key's number names it). A commit of many
// burns writes one key per customer, not one per burn.
std::string ledger_key(std::uint32_t customer_num, std::uint64_t last_txn_seq);

// A transaction as stored: amounts as Decimals (formatted only when read through the API).
struct LedgerRecord {
  std::uint64_t seq = 0;
  LedgerType type = LedgerType::kGrant;  // stored as its text (to_string)
  core::Decimal amount;
  core::Decimal before;
  core::Decimal after;
  std::string event_id;
  std::uint64_t grant_seq = 0;  // the grant a grant/expiry names; 0 = none
  std::string reservation_id;
  std::string description;
  core::TimeUs created_at_us = 0;
  core::TimeUs expires_at_us = 0;
  std::int64_t priority = 0;
  // A hold or release: the credits it holds or frees. It moves `available`, never the balance
  // (amount is 0). Blocks of format 1, written before holds were ledger entries, read as 0.
  core::Decimal held;
  // A re-rating adjustment: the billing period it adjusts (both 0 for any other transaction).
  core::TimeUs period_start_us = 0;
  core::TimeUs period_end_us = 0;
};

// The API's view of a record (customer left empty).
LedgerTransaction to_transaction(const LedgerRecord& r);
std::string encode_ledger_block(const std::vector<const LedgerRecord*>& txns);
// Calls fn(LedgerRecord&&) per transaction in order; false when the block is corrupt.
bool decode_ledger_block(std::string_view value, const std::function<void(LedgerRecord&&)>& fn);

// Wallet snapshots (Space::kMeta, key wallet_key(num)): the state the ledger leads to, so start-up
// need not replay every transaction.
struct GrantRecord {
  std::uint64_t txn_seq = 0;             // the transaction that created it
  LedgerType type = LedgerType::kGrant;  // stored as its text (to_string)
  core::Decimal amount;
  core::Decimal remaining;
  std::int64_t priority = 0;
  core::TimeUs expires_us = 0;
  core::TimeUs created_us = 0;
};

struct WalletRecord {
  core::Decimal balance;
  core::Decimal debt;  // usage burned beyond the grants: the negative part of the balance
  std::vector<GrantRecord> grants;
  std::vector<std::pair<std::string, core::Decimal>> holds;  // reservation id -> credits
  std::uint64_t transactions = 0;
  std::uint64_t last_txn_seq = 0;
};

std::string wallet_key(std::uint32_t customer_num);  // "wallet:" + be32
inline constexpr std::string_view kWalletKeyPrefix = "wallet:";
std::string encode_wallet(const WalletRecord& w);
bool decode_wallet(std::string_view value, WalletRecord* w);

// Units a tiered price has counted in one billing period of one customer (Space::kMeta).
// Key: "price_usage:" + price key + '\0' + customer (be32) + period start (be64).
inline constexpr std::string_view kPriceUsagePrefix = "price_usage:";
std::string price_usage_key(std::string_view price_key, std::uint32_t customer_num,
                            core::TimeUs period_start_us);
bool decode_price_usage_key(std::string_view key, std::string_view* price_key,
                            std::uint32_t* customer_num, core::TimeUs* period_start_us);
std::string encode_decimal(core::Decimal d);
bool decode_decimal(std::string_view value, core::Decimal* d);

// ---- price versions (Space::kMeta) ---------------------------------------------------------
// "price_line:" + price key -> the meter, its event type and the match of one price (a meter
// and match; the key is meter + '#' + a number that never changes). "price_version:" + price
// key + '\0' + effective_from (be64, sign bit flipped so it sorts) + created (be64) -> what the
// version charges. Versions are only ever added.
inline constexpr std::string_view kPriceLinePrefix = "price_line:";
inline constexpr std::string_view kPriceVersionPrefix = "price_version:";

struct PriceLineRecord {
  std::string meter;
  std::string event_type;
  std::vector<std::pair<std::string, std::string>> match;
};

std::string price_line_key(std::string_view price_key);
std::string encode_price_line(const PriceLineRecord& r);
bool decode_price_line(std::string_view value, PriceLineRecord* r);
std::string price_version_key(std::string_view price_key, core::TimeUs effective_from,
                              core::TimeUs created_us);
bool decode_price_version_key(std::string_view key, std::string_view* price_key,
                              core::TimeUs* effective_from, core::TimeUs* created_us);
// The charges of a version (spec.meter and spec.match are not stored) and whether it ends it.
std::string encode_price_version(const core::PriceSpec& spec, bool ended);
bool decode_price_version(std::string_view value, core::PriceSpec* spec, bool* ended);

// "rerate:" + customer (be32) + event sequence (be64) -> the credits the event's last re-rating
// gave it (a Decimal) and when (zigzag): what it is charged in place of its stored credits.
inline constexpr std::string_view kRerateKeyPrefix = "rerate:";
std::string rerate_key(std::uint32_t customer_num, std::uint64_t seq);
std::string encode_rerate(core::Decimal credits, core::TimeUs at_us);
bool decode_rerate(std::string_view value, core::Decimal* credits, core::TimeUs* at_us);

// ---- reservations (Space::kMeta) ------------------------------------------------------------
// "reservation:" + id -> an open reservation, written when it is answered and deleted in the
// write that commits, releases or expires it, so holds survive restarts and crashes.
inline constexpr std::string_view kReservationKeyPrefix = "reservation:";

struct ReservationRecord {
  std::uint32_t customer_num = 0;
  std::string meter;  // the meter's key
  core::Decimal amount;
  core::Decimal credits;  // held on a prepaid plan (a `hold` transaction), else 0
  core::TimeUs created_us = 0;
  core::TimeUs expires_us = 0;
  std::string event_id;  // the check's, or "" (the usage event then takes the reservation id)
  std::vector<std::pair<std::string, std::string>> properties;
};

std::string reservation_key(std::string_view id);
std::string encode_reservation(const ReservationRecord& r);
bool decode_reservation(std::string_view value, ReservationRecord* r);

// ---- alerts (Space::kMeta) ------------------------------------------------------------------
// "alert:" + number (be64) -> an Alert without its deliveries; "delivery:" + number (be64) -> a
// WebhookDelivery (the outbox: pending ones are sent after a restart); "balance_low:" +
// customer (be32) -> "" while that customer's low-balance alert has fired and not re-armed.
inline constexpr std::string_view kAlertKeyPrefix = "alert:";
inline constexpr std::string_view kDeliveryKeyPrefix = "delivery:";
inline constexpr std::string_view kBalanceLowKeyPrefix = "balance_low:";
std::string alert_key(std::uint64_t num);
std::string delivery_key(std::uint64_t num);
std::string balance_low_key(std::uint32_t customer_num);
std::string encode_alert(const Alert& a);
bool decode_alert(std::string_view value, Alert* a);
std::string encode_delivery(const WebhookDelivery& d);
bool decode_delivery(std::string_view value, WebhookDelivery* d);

// ---- archive records (Space::kArchive) -----------------------------------------------------
// What archiving removed from the hot store and what still depends on it. Keys start with a
// tag byte:
//   'e' + customer (be32) + seq (be64): an archived event's id (dedup confirms hits with it)
//       and its stored credits (verify matches its burn with them)
//   'a' + archive id (be64) + aggregate key: the archived events' part of that minute aggregate
//   'u' + archive id (be64) + unique key: a distinct value that only archived events carried
//   'p' + archive id (be64) + price usage key: tiered units the archived events counted
//   'm' + archive id (be64): the archive's manifest (JSON), present while it is archived
inline constexpr char kArchivedEventTag = 'e';
inline constexpr char kArchiveAggregateTag = 'a';
inline constexpr char kArchiveUniqueTag = 'u';
inline constexpr char kArchivePriceTag = 'p';
inline constexpr char kArchiveManifestTag = 'm';
std::string archived_event_key(std::uint32_t customer_num, std::uint64_t seq);

struct ArchivedEventRecord {
  core::TimeUs received_at_us = 0;
  std::string id;
  std::uint64_t archive_id = 0;
  bool priced = false;
  core::Decimal credits;
};

std::string encode_archived_event(const ArchivedEventRecord& r);
bool decode_archived_event(std::string_view value, ArchivedEventRecord* r);
// tag + archive id (be64) + inner key; with an empty inner key, the prefix of one archive's
// records of that tag.
std::string archive_record_key(char tag, std::uint64_t archive_id, std::string_view inner);

// ---- meta (Space::kMeta) --------------------------------------------------------------------
inline constexpr std::string_view kMetaNextSeq = "next_seq";
inline constexpr std::string_view kMetaNextCustomer = "next_customer";
inline constexpr std::string_view kMetaSchema = "schema";
inline constexpr std::string_view kMetaNextTxn = "next_txn";
inline constexpr std::string_view kMetaNextArchive = "next_archive";  // be64
std::string meter_fingerprint_key(std::string_view meter);            // "meter:" + key

}  // namespace tally::engine
