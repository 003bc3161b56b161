#include "engine/codec.h"

#include <cstring>
#include <limits>

#include "common/coding.h"

namespace tally::engine {

// ---- event blocks ---------------------------------------------------------------------------

namespace {
constexpr std::uint8_t kBlockVersion = 1;
constexpr std::uint8_t kRecordVersion = 1;
// Ledger blocks since holds became ledger entries: each transaction ends with `held`.
constexpr std::uint8_t kLedgerBlockVersion = 2;
}  // namespace

std::string event_block_key(std::uint32_t customer_num, std::uint64_t last_seq) {
  std::string k;
  k.reserve(12);
  put_be32(k, customer_num);
  put_be64(k, last_seq);
  return k;
}

void EventBlockWriter::begin(std::uint64_t first_seq, core::TimeUs received_at_us) {
  body_.clear();
  first_seq_ = first_seq;
  received_at_us_ = received_at_us;
  count_ = 0;
}

namespace {
// An event's flags byte: 1 flagged, 2 priced (cost and credits follow), 4 a quantity other than
// 1 follows (as a varint, after cost and credits). Blocks written before quantities existed
// never set 4, so they read unchanged.
constexpr std::uint8_t kEventFlagsMax = 7;

std::uint8_t event_flags(bool flagged, bool priced, std::uint32_t quantity) {
  return static_cast<std::uint8_t>((flagged ? 1 : 0) | (priced ? 2 : 0) | (quantity != 1 ? 4 : 0));
}
}  // namespace

void EventBlockWriter::add(const core::EventBatch& batch, const core::Event& e, std::uint64_t seq,
                           bool flagged, bool priced, core::Decimal cost, core::Decimal credits) {
  put_varint(body_, seq - first_seq_);
  put_zigzag(body_, e.time_us);
  body_ += static_cast<char>(event_flags(flagged, priced, e.quantity));
  if (priced) {
    put_i128(body_, cost.units);
    put_i128(body_, credits.units);
  }
  if (e.quantity != 1) {
    put_varint(body_, e.quantity);
  }
  put_bytes(body_, batch.text(e.id));
  put_bytes(body_, batch.text(e.type));
  put_varint(body_, e.prop_count);
  for (std::uint32_t i = e.prop_begin; i < e.prop_begin + e.prop_count; ++i) {
    const core::Prop& p = batch.props()[i];
    body_ += static_cast<char>(p.kind);
    put_bytes(body_, batch.text(p.key));
    put_bytes(body_, batch.text(p.text));
  }
  ++count_;
}

void EventBlockWriter::add_stored(const BlockEvent& e) {
  put_varint(body_, e.seq - first_seq_);
  put_zigzag(body_, e.time_us);
  body_ += static_cast<char>(event_flags(e.flagged, e.priced, e.quantity));
  if (e.priced) {
    put_i128(body_, e.cost.units);
    put_i128(body_, e.credits.units);
  }
  if (e.quantity != 1) {
    put_varint(body_, e.quantity);
  }
  put_bytes(body_, e.id);
  put_bytes(body_, e.type);
  put_varint(body_, e.props.size());
  for (const auto& p : e.props) {
    body_ += static_cast<char>(p.kind);
    put_bytes(body_, p.key);
    put_bytes(body_, p.text);
  }
  ++count_;
}

std::string EventBlockWriter::finish() {
  std::string out;
  out.reserve(body_.size() + 24);
  out += static_cast<char>(kBlockVersion);
  put_varint(out, count_);
  put_varint(out, first_seq_);
  put_zigzag(out, received_at_us_);
  out += body_;
  return out;
}

bool decode_event_block_header(Reader& r, BlockHeader* header) {
  std::uint8_t version = 0;
  std::uint64_t count = 0;
  if (!r.get_u8(&version) || version != kBlockVersion || !r.get_varint(&count) ||
      !r.get_varint(&header->first_seq) || !r.get_zigzag(&header->received_at_us)) {
    return false;
  }
  header->count = static_cast<std::uint32_t>(count);
  return true;
}

bool decode_block_event(Reader& r, const BlockHeader& h, BlockEvent* e) {
  std::uint64_t delta = 0;
  std::uint8_t flags = 0;
  std::uint64_t nprops = 0;
  if (!r.get_varint(&delta) || !r.get_zigzag(&e->time_us) || !r.get_u8(&flags) ||
      flags > kEventFlagsMax) {
    return false;
  }
  e->seq = h.first_seq + delta;
  e->received_at_us = h.received_at_us;
  e->flagged = (flags & 1) != 0;
  e->priced = (flags & 2) != 0;
  if (e->priced) {
    if (!get_i128(r, &e->cost.units) || !get_i128(r, &e->credits.units)) {
      return false;
    }
  } else {
    e->cost = core::Decimal{};
    e->credits = core::Decimal{};
  }
  e->quantity = 1;
  if ((flags & 4) != 0) {
    std::uint64_t quantity = 0;
    if (!r.get_varint(&quantity) || quantity < 2 || quantity > core::kEventQuantityMax) {
      return false;
    }
    e->quantity = static_cast<std::uint32_t>(quantity);
  }
  if (!r.get_bytes(&e->id) || !r.get_bytes(&e->type) || !r.get_varint(&nprops) ||
      nprops > core::kEventPropsMax + 1) {
    return false;
  }
  e->props.resize(nprops);
  for (auto& p : e->props) {
    std::uint8_t kind = 0;
    if (!r.get_u8(&kind) || kind > 3 || !r.get_bytes(&p.key) || !r.get_bytes(&p.text)) {
      return false;
    }
    p.kind = static_cast<core::PropKind>(kind);
  }
  return true;
}

// ---- dedup ----------------------------------------------------------------------------------

std::string dedup_key(std::uint64_t first_seq) {
  std::string k;
  put_be64(k, first_seq);
  return k;
}

std::string encode_dedup_record(core::TimeUs received_at_us,
                                const std::vector<DedupEntry>& entries) {
  std::string out;
  out.reserve(entries.size() * 16 + 16);
  out += static_cast<char>(kRecordVersion);
  put_zigzag(out, received_at_us);
  put_varint(out, entries.size());
  for (const auto& e : entries) {
    char buf[8];
    std::memcpy(buf, &e.hash, 8);
    out.append(buf, 8);
    put_varint(out, e.seq);
    put_varint(out, e.customer_num);
  }
  return out;
}

bool decode_dedup_record(std::string_view value, core::TimeUs* received_at_us,
                         std::vector<DedupEntry>* entries) {
  Reader r(value);
  std::uint8_t version = 0;
  std::uint64_t n = 0;
  // An entry takes at least 10 bytes (hash, then two varints): a larger count is damage, and
  // reserving it would throw.
  constexpr std::size_t kEntryBytesMin = 10;
  if (!r.get_u8(&version) || version != kRecordVersion || !r.get_zigzag(received_at_us) ||
      !r.get_varint(&n) || n > r.remaining() / kEntryBytesMin) {
    return false;
  }
  entries->clear();
  entries->reserve(n);
  for (std::uint64_t i = 0; i < n; ++i) {
    DedupEntry e;
    std::string_view raw;
    std::uint64_t cust = 0;
    if (!r.get_raw(8, &raw) || !r.get_varint(&e.seq) || !r.get_varint(&cust)) {
      return false;
    }
    std::memcpy(&e.hash, raw.data(), 8);
    e.customer_num = static_cast<std::uint32_t>(cust);
    entries->push_back(e);
  }
  return r.done();
}

std::uint64_t dedup_hash(std::string_view customer, std::string_view id) {
  // FNV-1a over customer, a separator, and id, then a final avalanche (splitmix64's mixer) so
  // that the low bits used for table slots are well spread.
  std::uint64_t h = 0xcbf29ce484222325ull;
  auto mix = [&h](std::string_view s) {
    for (char c : s) {
      h ^= static_cast<unsigned char>(c);
      h *= 0x100000001b3ull;
    }
  };
  mix(customer);
  h ^= 0xFF;
  h *= 0x100000001b3ull;
  mix(id);
  h ^= h >> 30;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 27;
  h *= 0x94d049bb133111ebull;
  h ^= h >> 31;
  return h == 0 ? 1 : h;
}

// ---- aggregates -----------------------------------------------------------------------------

std::string aggregate_meter_prefix(std::string_view meter) {
  std::string k(meter);
  k += '\0';
  return k;
}

std::string aggregate_key(std::string_view meter, std::uint32_t customer_num,
                          core::TimeUs minute_us, std::string_view group) {
  std::string k;
  k.reserve(meter.size() + 13 + group.size());
  k.append(meter);
  k += '\0';
  put_be32(k, customer_num);
  put_be64(k, static_cast<std::uint64_t>(minute_us));
  k.append(group);
  return k;
}

bool decode_aggregate_key(std::string_view key, AggregateKey* out) {
  auto zero = key.find('\0');
  if (zero == std::string_view::npos || key.size() < zero + 13) {
    return false;
  }
  out->meter = key.substr(0, zero);
  out->customer_num = read_be32(key.substr(zero + 1));
  out->minute_us = static_cast<core::TimeUs>(read_be64(key.substr(zero + 5)));
  out->group = key.substr(zero + 13);
  return true;
}

std::string encode_agg_state(const core::AggState& s) {
  std::string out;
  out.reserve(96);
  out += static_cast<char>(kRecordVersion);
  put_zigzag(out, s.count);
  put_i128(out, s.sum.units);
  put_i128(out, s.min.units);
  put_i128(out, s.max.units);
  put_i128(out, s.latest.units);
  put_zigzag(out, s.latest_time_us);
  put_varint(out, s.latest_seq);
  return out;
}

bool decode_agg_state(std::string_view value, core::AggState* s) {
  Reader r(value);
  std::uint8_t version = 0;
  return r.get_u8(&version) && version == kRecordVersion && r.get_zigzag(&s->count) &&
         get_i128(r, &s->sum.units) && get_i128(r, &s->min.units) && get_i128(r, &s->max.units) &&
         get_i128(r, &s->latest.units) && r.get_zigzag(&s->latest_time_us) &&
         r.get_varint(&s->latest_seq) && r.done();
}

std::string unique_key(std::string_view meter, std::uint32_t customer_num, core::TimeUs minute_us,
                       std::string_view group, std::string_view value) {
  std::string k;
  k.reserve(meter.size() + 16 + group.size() + value.size());
  k.append(meter);
  k += '\0';
  put_be32(k, customer_num);
  put_be64(k, static_cast<std::uint64_t>(minute_us));
  put_bytes(k, group);
  k.append(value);
  return k;
}

bool decode_unique_key(std::string_view key, UniqueKey* out) {
  auto zero = key.find('\0');
  if (zero == std::string_view::npos || key.size() < zero + 13) {
    return false;
  }
  out->meter = key.substr(0, zero);
  out->customer_num = read_be32(key.substr(zero + 1));
  out->minute_us = static_cast<core::TimeUs>(read_be64(key.substr(zero + 5)));
  Reader r(key.substr(zero + 13));
  std::string_view group;
  if (!r.get_bytes(&group)) {
    return false;
  }
  out->group = group;
  // The value is whatever follows the group.
  std::size_t group_end = static_cast<std::size_t>(group.data() - key.data()) + group.size();
  out->value = key.substr(group_end);
  return true;
}

// ---- customers and keys ---------------------------------------------------------------------

std::string encode_customer(std::uint32_t num, const Customer& c) {
  std::string out;
  out += static_cast<char>(kRecordVersion);
  put_varint(out, num);
  put_bytes(out, c.id);
  put_bytes(out, c.name);
  put_bytes(out, c.email);
  put_bytes(out, c.timezone);
  put_bytes(out, to_string(c.status));
  put_bytes(out, c.metadata_json);
  put_zigzag(out, c.created_at_us);
  put_zigzag(out, c.updated_at_us);
  // Plan fields (appended later: a record without them decodes with none).
  put_bytes(out, c.plan);
  put_zigzag(out, c.trial_started_at_us);
  put_zigzag(out, c.billing_anchor_us);
  put_varint(out, c.overrides.size());
  for (const auto& o : c.overrides) {
    put_bytes(out, o.meter);
    put_bytes(out, to_string(o.period));
    put_zigzag(out, o.days);
    put_bytes(out, o.amount);
    out += static_cast<char>(o.hard ? 1 : 0);
  }
  put_varint(out, c.resets.size());
  for (const auto& [meter, at] : c.resets) {
    put_bytes(out, meter);
    put_zigzag(out, at);
  }
  // The parent organization (appended later still: a record without it decodes with none).
  if (!c.organization.empty()) {
    put_bytes(out, c.organization);
  }
  return out;
}

namespace {

// The fields every customer record has: its number, id, name, email, time zone, status,
// metadata and times.
bool decode_customer_base(Reader& r, std::uint32_t* num, Customer* c) {
  std::uint8_t version = 0;
  std::uint64_t n = 0;
  std::string_view id, name, email, tz, status, meta;
  if (!r.get_u8(&version) || version != kRecordVersion || !r.get_varint(&n) || !r.get_bytes(&id) ||
      !r.get_bytes(&name) || !r.get_bytes(&email) || !r.get_bytes(&tz) || !r.get_bytes(&status) ||
      !r.get_bytes(&meta) || !r.get_zigzag(&c->created_at_us) || !r.get_zigzag(&c->updated_at_us)) {
    return false;
  }
  *num = static_cast<std::uint32_t>(n);
  c->id = id;
  c->name = name;
  c->email = email;
  c->timezone = tz;
  const std::optional<CustomerStatus> standing = parse_customer_status(status);
  if (!standing) {
    return false;
  }
  c->status = *standing;
  c->metadata_json = meta;
  return true;
}

// `n` limit overrides.
bool decode_overrides(Reader& r, std::uint64_t n, std::vector<LimitOverride>* overrides) {
  for (std::uint64_t i = 0; i < n; ++i) {
    std::string_view meter, period, amount;
    LimitOverride o;
    std::uint8_t hard = 0;
    if (!r.get_bytes(&meter) || !r.get_bytes(&period) || !r.get_zigzag(&o.days) ||
        !r.get_bytes(&amount) || !r.get_u8(&hard)) {
      return false;
    }
    const std::optional<LimitPeriod> p = parse_limit_period(period);
    if (!p) {
      return false;
    }
    o.meter = meter;
    o.period = *p;
    o.amount = amount;
    o.hard = hard != 0;
    overrides->push_back(std::move(o));
  }
  return true;
}

// The count of resets, and each: meter and instant.
bool decode_resets(Reader& r, std::vector<std::pair<std::string, TimeUs>>* resets) {
  std::uint64_t n = 0;
  if (!r.get_varint(&n)) {
    return false;
  }
  for (std::uint64_t i = 0; i < n; ++i) {
    std::string_view meter;
    TimeUs at = 0;
    if (!r.get_bytes(&meter) || !r.get_zigzag(&at)) {
      return false;
    }
    resets->emplace_back(std::string(meter), at);
  }
  return true;
}

// The plan fields, appended later: plan, trial start, billing anchor, overrides and resets.
bool decode_customer_plan(Reader& r, Customer* c) {
  std::string_view plan;
  std::uint64_t n_overrides = 0;
  if (!r.get_bytes(&plan) || !r.get_zigzag(&c->trial_started_at_us) ||
      !r.get_zigzag(&c->billing_anchor_us) || !r.get_varint(&n_overrides)) {
    return false;
  }
  c->plan = plan;
  return decode_overrides(r, n_overrides, &c->overrides) && decode_resets(r, &c->resets);
}

}  // namespace

bool decode_customer(std::string_view value, std::uint32_t* num, Customer* c) {
  Reader r(value);
  if (!decode_customer_base(r, num, c)) {
    return false;
  }
  c->plan.clear();
  c->trial_started_at_us = 0;
  c->billing_anchor_us = 0;
  c->overrides.clear();
  c->resets.clear();
  c->organization.clear();
  if (r.done()) {
    return true;
  }
  if (!decode_customer_plan(r, c)) {
    return false;
  }
  if (r.done()) {
    return true;
  }
  // The parent organization, appended later still.
  std::string_view organization;
  if (!r.get_bytes(&organization) || organization.empty()) {
    return false;
  }
  c->organization = organization;
  return r.done();
}

std::string encode_key_record(const KeyRecord& k) {
  std::string out;
  out += static_cast<char>(kRecordVersion);
  put_bytes(out, k.info.id);
  put_bytes(out, k.info.prefix);
  put_bytes(out, k.hash);
  put_bytes(out, k.info.customer);
  put_bytes(out, k.info.name);
  put_varint(out, static_cast<std::uint32_t>(k.info.scopes));
  put_zigzag(out, k.info.created_at_us);
  put_zigzag(out, k.info.revoked_at_us);
  put_zigzag(out, k.info.last_used_at_us);
  put_varint(out, k.info.total_requests);
  return out;
}

bool decode_key_record(std::string_view value, KeyRecord* k) {
  Reader r(value);
  std::uint8_t version = 0;
  std::string_view id, prefix, hash, customer, name;
  std::uint64_t scopes = 0;
  if (!r.get_u8(&version) || version != kRecordVersion || !r.get_bytes(&id) ||
      !r.get_bytes(&prefix) || !r.get_bytes(&hash) || !r.get_bytes(&customer) ||
      !r.get_bytes(&name) || !r.get_varint(&scopes) || !r.get_zigzag(&k->info.created_at_us) ||
      !r.get_zigzag(&k->info.revoked_at_us) || !r.get_zigzag(&k->info.last_used_at_us) ||
      !r.get_varint(&k->info.total_requests) || !r.done()) {
    return false;
  }
  k->info.id = id;
  k->info.prefix = prefix;
  k->hash = hash;
  k->info.customer = customer;
  k->info.name = name;
  k->info.scopes = static_cast<Scope>(static_cast<std::uint32_t>(scopes));
  return true;
}

std::string meter_fingerprint_key(std::string_view meter) {
  std::string k("meter:");
  k.append(meter);
  return k;
}

// ---- ledger ------------------------------------------------------------------------------

std::string ledger_key(std::uint32_t customer_num, std::uint64_t txn_seq) {
  std::string k;
  put_be32(k, customer_num);
  put_be64(k, txn_seq);
  return k;
}

namespace {
bool get_decimal(Reader& r, core::Decimal* d) {
  return get_i128(r, &d->units);
}

void put_decimal(std::string& out, core::Decimal d) {
  put_i128(out, d.units);
}
}  // namespace

namespace {
void put_ledger_record(std::string& out, const LedgerRecord& t) {
  put_varint(out, t.seq);
  put_bytes(out, to_string(t.type));
  put_decimal(out, t.amount);
  put_decimal(out, t.before);
  put_decimal(out, t.after);
  put_bytes(out, t.event_id);
  put_varint(out, t.grant_seq);
  put_bytes(out, t.reservation_id);
  put_bytes(out, t.description);
  put_zigzag(out, t.created_at_us);
  put_zigzag(out, t.expires_at_us);
  put_zigzag(out, t.priority);
  put_decimal(out, t.held);
  put_zigzag(out, t.period_start_us);
  put_zigzag(out, t.period_end_us);
}

// `version` 1: blocks written before holds were ledger entries, without `held`.
bool get_ledger_record(Reader& r, std::uint8_t version, LedgerRecord* t) {
  std::string_view type, event_id, reservation_id, description;
  if (!r.get_varint(&t->seq) || !r.get_bytes(&type) || !get_decimal(r, &t->amount) ||
      !get_decimal(r, &t->before) || !get_decimal(r, &t->after) || !r.get_bytes(&event_id) ||
      !r.get_varint(&t->grant_seq) || !r.get_bytes(&reservation_id) || !r.get_bytes(&description) ||
      !r.get_zigzag(&t->created_at_us) || !r.get_zigzag(&t->expires_at_us) ||
      !r.get_zigzag(&t->priority) ||
      (version >= kLedgerBlockVersion &&
       (!get_decimal(r, &t->held) || !r.get_zigzag(&t->period_start_us) ||
        !r.get_zigzag(&t->period_end_us)))) {
    return false;
  }
  const std::optional<LedgerType> known = parse_ledger_type(type);
  if (!known) {
    return false;  // a type Tally never writes: the block is damaged
  }
  t->type = *known;
  t->event_id = event_id;
  t->reservation_id = reservation_id;
  t->description = description;
  return true;
}
}  // namespace

LedgerTransaction to_transaction(const LedgerRecord& r) {
  LedgerTransaction t;
  t.seq = r.seq;
  t.id = "txn_" + std::to_string(r.seq);
  t.type = r.type;
  t.amount = core::format_decimal(r.amount);
  t.balance_before = core::format_decimal(r.before);
  t.balance_after = core::format_decimal(r.after);
  t.event_id = r.event_id;
  if (r.grant_seq != 0) {
    t.grant_id = "txn_" + std::to_string(r.grant_seq);
  }
  t.reservation_id = r.reservation_id;
  if (r.type == LedgerType::kHold || r.type == LedgerType::kRelease) {
    t.held = core::format_decimal(r.held);
  }
  t.period_start_us = r.period_start_us;
  t.period_end_us = r.period_end_us;
  t.description = r.description;
  t.created_at_us = r.created_at_us;
  t.expires_at_us = r.expires_at_us;
  t.priority = r.priority;
  return t;
}

std::string encode_ledger_block(const std::vector<const LedgerRecord*>& txns) {
  std::string out;
  out.reserve(txns.size() * 112 + 8);
  out += static_cast<char>(kLedgerBlockVersion);
  put_varint(out, txns.size());
  for (const LedgerRecord* t : txns) {
    put_ledger_record(out, *t);
  }
  return out;
}

bool decode_ledger_block(std::string_view value, const std::function<void(LedgerRecord&&)>& fn) {
  Reader r(value);
  std::uint8_t version = 0;
  std::uint64_t n = 0;
  if (!r.get_u8(&version) || (version != kRecordVersion && version != kLedgerBlockVersion) ||
      !r.get_varint(&n)) {
    return false;
  }
  for (std::uint64_t i = 0; i < n; ++i) {
    LedgerRecord t;
    if (!get_ledger_record(r, version, &t)) {
      return false;
    }
    fn(std::move(t));
  }
  return r.done();
}

std::string wallet_key(std::uint32_t customer_num) {
  std::string k(kWalletKeyPrefix);
  put_be32(k, customer_num);
  return k;
}

std::string encode_wallet(const WalletRecord& w) {
  std::string out;
  out += static_cast<char>(kRecordVersion);
  put_decimal(out, w.balance);
  put_decimal(out, w.debt);
  put_varint(out, w.transactions);
  put_varint(out, w.last_txn_seq);
  put_varint(out, w.grants.size());
  for (const auto& g : w.grants) {
    put_varint(out, g.txn_seq);
    put_bytes(out, to_string(g.type));
    put_decimal(out, g.amount);
    put_decimal(out, g.remaining);
    put_zigzag(out, g.priority);
    put_zigzag(out, g.expires_us);
    put_zigzag(out, g.created_us);
  }
  put_varint(out, w.holds.size());
  for (const auto& [id, credits] : w.holds) {
    put_bytes(out, id);
    put_decimal(out, credits);
  }
  return out;
}

bool decode_wallet(std::string_view value, WalletRecord* w) {
  Reader r(value);
  std::uint8_t version = 0;
  std::uint64_t n = 0;
  // The fewest bytes a grant (txn, type, amount, remaining, priority, expiry, creation) and a
  // hold (id, credits) take: a count beyond what the value holds is damage, refused before
  // the records are built.
  constexpr std::size_t kGrantBytesMin = 1 + 1 + 16 + 16 + 1 + 1 + 1;
  constexpr std::size_t kHoldBytesMin = 1 + 16;
  if (!r.get_u8(&version) || version != kRecordVersion || !get_decimal(r, &w->balance) ||
      !get_decimal(r, &w->debt) || !r.get_varint(&w->transactions) ||
      !r.get_varint(&w->last_txn_seq) || !r.get_varint(&n) || n > 1'000'000 ||
      n > r.remaining() / kGrantBytesMin) {
    return false;
  }
  w->grants.resize(n);
  for (auto& g : w->grants) {
    std::string_view type;
    if (!r.get_varint(&g.txn_seq) || !r.get_bytes(&type) || !get_decimal(r, &g.amount) ||
        !get_decimal(r, &g.remaining) || !r.get_zigzag(&g.priority) ||
        !r.get_zigzag(&g.expires_us) || !r.get_zigzag(&g.created_us)) {
      return false;
    }
    const std::optional<LedgerType> known = parse_ledger_type(type);
    if (!known) {
      return false;  // a type Tally never writes: the snapshot is damaged
    }
    g.type = *known;
  }
  if (!r.get_varint(&n) || n > 10'000'000 || n > r.remaining() / kHoldBytesMin) {
    return false;
  }
  w->holds.resize(n);
  for (auto& [id, credits] : w->holds) {
    std::string_view text;
    if (!r.get_bytes(&text) || !get_decimal(r, &credits)) {
      return false;
    }
    id = text;
  }
  return r.done();
}

std::string price_line_key(std::string_view price_key) {
  std::string k(kPriceLinePrefix);
  k += price_key;
  return k;
}

std::string encode_price_line(const PriceLineRecord& r) {
  std::string out;
  out += static_cast<char>(kRecordVersion);
  put_bytes(out, r.meter);
  put_bytes(out, r.event_type);
  put_varint(out, r.match.size());
  for (const auto& [k, v] : r.match) {
    put_bytes(out, k);
    put_bytes(out, v);
  }
  return out;
}

bool decode_price_line(std::string_view value, PriceLineRecord* r) {
  Reader in(value);
  std::uint8_t version = 0;
  std::uint64_t n = 0;
  std::string_view meter, type;
  if (!in.get_u8(&version) || version != kRecordVersion || !in.get_bytes(&meter) ||
      !in.get_bytes(&type) || !in.get_varint(&n) || n > in.remaining() / 2) {
    return false;
  }
  r->meter = meter;
  r->event_type = type;
  r->match.resize(n);
  for (auto& [k, v] : r->match) {
    std::string_view key, text;
    if (!in.get_bytes(&key) || !in.get_bytes(&text)) {
      return false;
    }
    k = key;
    v = text;
  }
  return in.done();
}

std::string price_version_key(std::string_view price_key, core::TimeUs effective_from,
                              core::TimeUs created_us) {
  std::string k(kPriceVersionPrefix);
  k += price_key;
  k += '\0';
  put_be64(k, static_cast<std::uint64_t>(effective_from) ^ (std::uint64_t{1} << 63));
  put_be64(k, static_cast<std::uint64_t>(created_us) ^ (std::uint64_t{1} << 63));
  return k;
}

bool decode_price_version_key(std::string_view key, std::string_view* price_key,
                              core::TimeUs* effective_from, core::TimeUs* created_us) {
  if (key.size() < kPriceVersionPrefix.size() + 17 ||
      key.substr(0, kPriceVersionPrefix.size()) != kPriceVersionPrefix) {
    return false;
  }
  const std::string_view rest = key.substr(kPriceVersionPrefix.size());
  if (rest[rest.size() - 17] != '\0') {
    return false;
  }
  *price_key = rest.substr(0, rest.size() - 17);
  *effective_from = static_cast<core::TimeUs>(read_be64(rest.substr(rest.size() - 16)) ^
                                              (std::uint64_t{1} << 63));
  *created_us =
      static_cast<core::TimeUs>(read_be64(rest.substr(rest.size() - 8)) ^ (std::uint64_t{1} << 63));
  return true;
}

std::string encode_price_version(const core::PriceSpec& spec, bool ended) {
  std::string out;
  out += static_cast<char>(kRecordVersion);
  out += static_cast<char>(ended ? 1 : 0);
  out += static_cast<char>(spec.model);
  put_decimal(out, spec.unit_price);
  put_varint(out, spec.tiers.size());
  for (const auto& t : spec.tiers) {
    out += static_cast<char>(t.unbounded ? 1 : 0);
    put_decimal(out, t.up_to);
    put_decimal(out, t.unit_price);
    put_decimal(out, t.flat_fee);
  }
  put_decimal(out, spec.package_size);
  put_decimal(out, spec.package_price);
  put_decimal(out, spec.flat_fee);
  put_bytes(out, spec.currency);
  put_decimal(out, spec.credits_per_currency_unit);
  return out;
}

bool decode_price_version(std::string_view value, core::PriceSpec* spec, bool* ended) {
  Reader in(value);
  std::uint8_t version = 0;
  std::uint8_t end = 0;
  std::uint8_t model = 0;
  std::uint64_t n = 0;
  if (!in.get_u8(&version) || version != kRecordVersion || !in.get_u8(&end) || end > 1 ||
      !in.get_u8(&model) || model > static_cast<std::uint8_t>(core::PriceModel::kFlat) ||
      !get_decimal(in, &spec->unit_price) || !in.get_varint(&n) || n > in.remaining() / 49) {
    return false;
  }
  *ended = end == 1;
  spec->model = static_cast<core::PriceModel>(model);
  spec->tiers.resize(n);
  for (auto& t : spec->tiers) {
    std::uint8_t unbounded = 0;
    if (!in.get_u8(&unbounded) || unbounded > 1 || !get_decimal(in, &t.up_to) ||
        !get_decimal(in, &t.unit_price) || !get_decimal(in, &t.flat_fee)) {
      return false;
    }
    t.unbounded = unbounded == 1;
  }
  std::string_view currency;
  if (!get_decimal(in, &spec->package_size) || !get_decimal(in, &spec->package_price) ||
      !get_decimal(in, &spec->flat_fee) || !in.get_bytes(&currency) ||
      !get_decimal(in, &spec->credits_per_currency_unit)) {
    return false;
  }
  spec->currency = currency;
  return in.done();
}

std::string rerate_key(std::uint32_t customer_num, std::uint64_t seq) {
  std::string k(kRerateKeyPrefix);
  put_be32(k, customer_num);
  put_be64(k, seq);
  return k;
}

std::string encode_rerate(core::Decimal credits, core::TimeUs at_us) {
  std::string out;
  out += static_cast<char>(kRecordVersion);
  put_decimal(out, credits);
  put_zigzag(out, at_us);
  return out;
}

bool decode_rerate(std::string_view value, core::Decimal* credits, core::TimeUs* at_us) {
  Reader in(value);
  std::uint8_t version = 0;
  return in.get_u8(&version) && version == kRecordVersion && get_decimal(in, credits) &&
         in.get_zigzag(at_us) && in.done();
}

std::string prefix_end(std::string_view prefix) {
  std::string end(prefix);
  end.back() = static_cast<char>(end.back() + 1);
  return end;
}

std::string reservation_key(std::string_view id) {
  std::string k(kReservationKeyPrefix);
  k += id;
  return k;
}

std::string encode_reservation(const ReservationRecord& r) {
  std::string out;
  out += static_cast<char>(kRecordVersion);
  put_varint(out, r.customer_num);
  put_bytes(out, r.meter);
  put_decimal(out, r.amount);
  put_decimal(out, r.credits);
  put_zigzag(out, r.created_us);
  put_zigzag(out, r.expires_us);
  put_bytes(out, r.event_id);
  put_varint(out, r.properties.size());
  for (const auto& [k, v] : r.properties) {
    put_bytes(out, k);
    put_bytes(out, v);
  }
  return out;
}

bool decode_reservation(std::string_view value, ReservationRecord* r) {
  Reader in(value);
  std::uint8_t version = 0;
  std::uint64_t cnum = 0;
  std::uint64_t n = 0;
  std::string_view meter, event_id;
  if (!in.get_u8(&version) || version != kRecordVersion || !in.get_varint(&cnum) ||
      cnum > UINT32_MAX || !in.get_bytes(&meter) || !get_decimal(in, &r->amount) ||
      !get_decimal(in, &r->credits) || !in.get_zigzag(&r->created_us) ||
      !in.get_zigzag(&r->expires_us) || !in.get_bytes(&event_id) || !in.get_varint(&n) ||
      n > in.remaining() / 2) {  // a property takes at least two length bytes
    return false;
  }
  r->customer_num = static_cast<std::uint32_t>(cnum);
  r->meter = meter;
  r->event_id = event_id;
  r->properties.resize(n);
  for (auto& [k, v] : r->properties) {
    std::string_view key, text;
    if (!in.get_bytes(&key) || !in.get_bytes(&text)) {
      return false;
    }
    k = key;
    v = text;
  }
  return in.done();
}

std::string price_usage_key(std::string_view price_key, std::uint32_t customer_num,
                            core::TimeUs period_start_us) {
  std::string k(kPriceUsagePrefix);
  k += price_key;
  k += '\0';
  put_be32(k, customer_num);
  put_be64(k, static_cast<std::uint64_t>(period_start_us));
  return k;
}

bool decode_price_usage_key(std::string_view key, std::string_view* price_key,
                            std::uint32_t* customer_num, core::TimeUs* period_start_us) {
  if (key.substr(0, kPriceUsagePrefix.size()) != kPriceUsagePrefix) {
    return false;
  }
  key.remove_prefix(kPriceUsagePrefix.size());
  const std::size_t zero = key.find('\0');
  if (zero == std::string_view::npos || key.size() != zero + 13) {
    return false;
  }
  *price_key = key.substr(0, zero);
  *customer_num = read_be32(key.substr(zero + 1));
  *period_start_us = static_cast<core::TimeUs>(read_be64(key.substr(zero + 5)));
  return true;
}

std::string encode_decimal(core::Decimal d) {
  std::string out;
  out += static_cast<char>(kRecordVersion);
  put_decimal(out, d);
  return out;
}

bool decode_decimal(std::string_view value, core::Decimal* d) {
  Reader r(value);
  std::uint8_t version = 0;
  return r.get_u8(&version) && version == kRecordVersion && get_decimal(r, d) && r.done();
}

// ---- archive records ------------------------------------------------------------------------

std::string archived_event_key(std::uint32_t customer_num, std::uint64_t seq) {
  std::string k(1, kArchivedEventTag);
  put_be32(k, customer_num);
  put_be64(k, seq);
  return k;
}

std::string encode_archived_event(const ArchivedEventRecord& r) {
  std::string out(1, '\x01');
  put_zigzag(out, r.received_at_us);
  put_bytes(out, r.id);
  put_varint(out, r.archive_id);
  out += static_cast<char>(r.priced ? 1 : 0);
  if (r.priced) {
    put_i128(out, r.credits.units);
  }
  return out;
}

bool decode_archived_event(std::string_view value, ArchivedEventRecord* r) {
  Reader rd(value);
  std::uint8_t version = 0;
  std::uint8_t priced = 0;
  std::string_view id;
  if (!rd.get_u8(&version) || version != 1 || !rd.get_zigzag(&r->received_at_us) ||
      !rd.get_bytes(&id) || !rd.get_varint(&r->archive_id) || !rd.get_u8(&priced)) {
    return false;
  }
  r->id.assign(id);
  r->priced = priced != 0;
  r->credits = core::Decimal{};
  if (r->priced && !get_i128(rd, &r->credits.units)) {
    return false;
  }
  return rd.done();
}

std::string archive_record_key(char tag, std::uint64_t archive_id, std::string_view inner) {
  std::string k(1, tag);
  put_be64(k, archive_id);
  k += inner;
  return k;
}

// ---- alerts ---------------------------------------------------------------------------------

namespace {

std::string numbered_key(std::string_view prefix, std::uint64_t num) {
  std::string k(prefix);
  put_be64(k, num);
  return k;
}

bool get_string(Reader& r, std::string* out) {
  std::string_view s;
  if (!r.get_bytes(&s)) {
    return false;
  }
  out->assign(s);
  return true;
}

// A closed set's stored text: false (damage) for a text no Tally writes.
template <typename E>
bool get_enum(std::string_view text, std::optional<E> (*parse)(std::string_view), E* out) {
  const std::optional<E> v = parse(text);
  if (!v) {
    return false;
  }
  *out = *v;
  return true;
}

bool get_int(Reader& r, std::int64_t* out) {
  return r.get_zigzag(out);
}

bool get_u32(Reader& r, std::uint32_t* out) {
  std::uint64_t v = 0;
  if (!r.get_varint(&v) || v > std::numeric_limits<std::uint32_t>::max()) {
    return false;
  }
  *out = static_cast<std::uint32_t>(v);
  return true;
}

}  // namespace

std::string alert_key(std::uint64_t num) {
  return numbered_key(kAlertKeyPrefix, num);
}

std::string delivery_key(std::uint64_t num) {
  return numbered_key(kDeliveryKeyPrefix, num);
}

std::string balance_low_key(std::uint32_t customer_num) {
  std::string k(kBalanceLowKeyPrefix);
  put_be32(k, customer_num);
  return k;
}

std::string encode_alert(const Alert& a) {
  std::string out;
  out += static_cast<char>(kRecordVersion);
  put_bytes(out, a.id);
  put_bytes(out, a.customer);
  put_bytes(out, to_string(a.kind));
  put_bytes(out, to_string(a.level));
  put_bytes(out, a.meter);
  put_bytes(out, a.kind == AlertKind::kLimit ? to_string(a.period) : "");  // "" for a balance
  for (const std::string* s :
       {&a.limit, &a.limit_amount, &a.used, &a.percent, &a.threshold_amount, &a.balance}) {
    put_bytes(out, *s);
  }
  for (std::int64_t v :
       {a.threshold_percent, a.window_start_us, a.window_end_us, a.created_at_us}) {
    put_zigzag(out, v);
  }
  return out;
}

bool decode_alert(std::string_view value, Alert* a) {
  Reader r(value);
  std::uint8_t version = 0;
  if (!r.get_u8(&version) || version != kRecordVersion) {
    return false;
  }
  std::string_view kind, level;
  if (!get_string(r, &a->id) || !get_string(r, &a->customer) || !r.get_bytes(&kind) ||
      !r.get_bytes(&level) || !get_enum(kind, parse_alert_kind, &a->kind) ||
      !get_enum(level, parse_alert_level, &a->level)) {
    return false;
  }
  std::string_view period;
  if (!get_string(r, &a->meter) || !r.get_bytes(&period) ||
      (a->kind == AlertKind::kLimit ? !get_enum(period, parse_limit_period, &a->period)
                                    : !period.empty())) {
    return false;
  }
  for (std::string* s :
       {&a->limit, &a->limit_amount, &a->used, &a->percent, &a->threshold_amount, &a->balance}) {
    if (!get_string(r, s)) {
      return false;
    }
  }
  for (std::int64_t* v :
       {&a->threshold_percent, &a->window_start_us, &a->window_end_us, &a->created_at_us}) {
    if (!get_int(r, v)) {
      return false;
    }
  }
  return r.done();
}

std::string encode_delivery(const WebhookDelivery& d) {
  std::string out;
  out += static_cast<char>(kRecordVersion);
  for (const std::string* s : {&d.id, &d.alert_id, &d.event, &d.url}) {
    put_bytes(out, *s);
  }
  put_bytes(out, to_string(d.status));
  put_bytes(out, d.last_error);
  put_varint(out, d.webhook);
  put_varint(out, d.attempts);
  for (std::int64_t v : {d.created_at_us, d.next_attempt_at_us, d.last_attempt_at_us,
                         d.delivered_at_us, static_cast<std::int64_t>(d.last_status_code)}) {
    put_zigzag(out, v);
  }
  return out;
}

bool decode_delivery(std::string_view value, WebhookDelivery* d) {
  Reader r(value);
  std::uint8_t version = 0;
  if (!r.get_u8(&version) || version != kRecordVersion) {
    return false;
  }
  for (std::string* s : {&d->id, &d->alert_id, &d->event, &d->url}) {
    if (!get_string(r, s)) {
      return false;
    }
  }
  std::string_view status;
  if (!r.get_bytes(&status) || !get_enum(status, parse_delivery_status, &d->status) ||
      !get_string(r, &d->last_error)) {
    return false;
  }
  std::int64_t status_code = 0;
  if (!get_u32(r, &d->webhook) || !get_u32(r, &d->attempts)) {
    return false;
  }
  for (std::int64_t* v : {&d->created_at_us, &d->next_attempt_at_us, &d->last_attempt_at_us,
                          &d->delivered_at_us, &status_code}) {
    if (!get_int(r, v)) {
      return false;
    }
  }
  d->last_status_code = static_cast<int>(status_code);
  return r.done();
}

}  // namespace tally::engine
