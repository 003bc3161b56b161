// Tests of the on-disk record codecs. Quantities (a consuming check of N on a count meter)
// round-trip, and blocks without them read as they always did. Damaged values: each decoder
// must refuse them (false), never throw, crash or allocate by a count the value merely claims. The
// inputs are the ones tests/fuzz/codec_fuzz.cc found, and their neighbours.
#include "engine/codec.h"

#include <fstream>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace tally::engine {
namespace {

std::string varint(std::uint64_t v) {
  std::string out;
  put_varint(out, v);
  return out;
}

std::string decimal_bytes(std::int64_t units) {
  // 128-bit big-endian, as the codec stores a Decimal.
  std::string out;
  put_be64(out, units < 0 ? ~0ull : 0);
  put_be64(out, static_cast<std::uint64_t>(units));
  return out;
}

// A dedup record claiming 2^62 entries made decode_dedup_record reserve them before reading one:
// std::length_error, an uncaught exception at start-up.
TEST(CodecTest, DedupRecordWithAHugeCountIsRefused) {
  for (std::uint64_t n : {1ull << 62, 1ull << 40, 1ull << 20, 2ull}) {
    std::string value = "\x01";
    put_zigzag(value, 1737370800000000);
    value += varint(n);
    value += std::string(8, 'h') + varint(5) + varint(1);  // one entry, not n
    core::TimeUs at = 0;
    std::vector<DedupEntry> entries;
    EXPECT_FALSE(decode_dedup_record(value, &at, &entries)) << n;
  }
}

TEST(CodecTest, DedupRecordsRoundTrip) {
  const std::vector<DedupEntry> entries = {{0x1234, 100, 1}, {0xfeed, 101, 2}};
  const std::string value = encode_dedup_record(1737370800000000, entries);
  core::TimeUs at = 0;
  std::vector<DedupEntry> out;
  ASSERT_TRUE(decode_dedup_record(value, &at, &out));
  EXPECT_EQ(at, 1737370800000000);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[1].hash, 0xfeedu);
  EXPECT_EQ(out[1].seq, 101u);
  EXPECT_EQ(out[1].customer_num, 2u);
  EXPECT_FALSE(decode_dedup_record(value.substr(0, value.size() - 1), &at, &out));
}

// A wallet claiming up to the caps of grants (1,000,000) or holds (10,000,000) made the decoder
// build them all before reading one (hundreds of MB, a second under ASan, for a value of a few
// dozen bytes); it is refused as it was, now without building them.
TEST(CodecTest, WalletWithMoreGrantsOrHoldsThanBytesIsRefused) {
  std::string head = "\x01" + decimal_bytes(0) + decimal_bytes(0) + varint(0) + varint(0);
  WalletRecord w;
  EXPECT_FALSE(decode_wallet(head + varint(999'999), &w));
  EXPECT_FALSE(decode_wallet(head + varint(0) + varint(9'999'999), &w));
  EXPECT_FALSE(
      decode_wallet(head + varint(0) + varint(2) + varint(1) + "a" + decimal_bytes(1), &w));

  WalletRecord full;
  full.balance = core::Decimal::from_int(99);
  full.transactions = 2;
  full.last_txn_seq = 6;
  full.grants.push_back({5, LedgerType::kTopUp, core::Decimal::from_int(100),
                         core::Decimal::from_int(99), 100, 0, 1});
  full.holds.emplace_back("res_1", core::Decimal::from_int(5));
  const std::string value = encode_wallet(full);
  ASSERT_TRUE(decode_wallet(value, &w));
  ASSERT_EQ(w.grants.size(), 1u);
  EXPECT_EQ(w.grants[0].type, LedgerType::kTopUp);
  EXPECT_EQ(w.grants[0].remaining, core::Decimal::from_int(99));
  ASSERT_EQ(w.holds.size(), 1u);
  EXPECT_EQ(w.holds[0].first, "res_1");
  EXPECT_EQ(w.holds[0].second, core::Decimal::from_int(5));
}

namespace tally::engine {
namespace {

core::Event add_event(core::EventBatch& b, const char* id, std::uint32_t quantity) {
  core::Event e;
  e.id = b.add_text(id);
  e.customer = b.add_text("acme");
  e.type = b.add_text("api_call");
  e.time_us = 1'705'312'800'000'000;
  e.quantity = quantity;
  e.prop_begin = static_cast<std::uint32_t>(b.props().size());
  b.props().push_back(
      core::Prop{b.add_text("service"), b.add_text("chat"), core::PropKind::kString});
  e.prop_count = 1;
  b.events().push_back(e);
  return e;
}

TEST(CodecTest, QuantitiesRoundTripBesidePricesAndFlags) {
  core::EventBatch b;
  const core::Event one = add_event(b, "one", 1);
  const core::Event many = add_event(b, "many", 10'000);
  EventBlockWriter w;
  w.begin(100, 5);
  w.add(b, one, 100, false);
  w.add(b, many, 101, true, true, core::Decimal::from_int(3), core::Decimal::from_int(3000));
  const std::string block = w.finish();
  std::vector<std::pair<std::string, std::uint32_t>> seen;
  BlockHeader h;
  ASSERT_TRUE(decode_event_block(block, &h, [&](const BlockEvent& e) {
    seen.emplace_back(std::string(e.id), e.quantity);
    if (e.id == "many") {
      EXPECT_TRUE(e.flagged);
      EXPECT_TRUE(e.priced);
      EXPECT_EQ(e.credits, core::Decimal::from_int(3000));
      ASSERT_EQ(e.props.size(), 1u);
      EXPECT_EQ(e.props[0].text, "chat");
    }
  }));
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0], (std::pair<std::string, std::uint32_t>{"one", 1}));
  EXPECT_EQ(seen[1], (std::pair<std::string, std::uint32_t>{"many", 10'000}));

  // Rewriting a stored event (archiving) keeps the quantity.
  EventBlockWriter again;
  again.begin(100, 5);
  ASSERT_TRUE(decode_event_block(block, &h, [&](const BlockEvent& e) { again.add_stored(e); }));
  EXPECT_EQ(again.finish(), block);
}

TEST(CodecTest, AnEventWithQuantityOneIsWrittenAsBeforeQuantities) {
  // The flags byte of an event without a quantity never has bit 4, so blocks written before
  // quantities existed and blocks of ordinary events are the same bytes.
  core::EventBatch b;
  const core::Event one = add_event(b, "x", 1);
  EventBlockWriter w;
  w.begin(1, 0);
  w.add(b, one, 1, false);
  const std::string block = w.finish();
  // version, count, first_seq, received_at, then the event: seq delta 0, time, flags.
  Reader r(block);
  BlockHeader h;
  ASSERT_TRUE(decode_event_block_header(r, &h));
  std::uint64_t delta = 0;
  std::int64_t time = 0;
  std::uint8_t flags = 0xFF;
  ASSERT_TRUE(r.get_varint(&delta) && r.get_zigzag(&time) && r.get_u8(&flags));
  EXPECT_EQ(flags, 0);
}

TEST(CodecTest, ACorruptQuantityIsRefused) {
  core::EventBatch b;
  core::Event many = add_event(b, "m", 2);
  many.time_us = 0;
  EventBlockWriter w;
  w.begin(1, 0);
  w.add(b, many, 1, false);
  std::string block = w.finish();
  // Version 1, count 1, first_seq 1, received_at 0, then the event: seq delta 0, time 0, flags
  // (4: a quantity follows) and the quantity's varint (2). Make it 1, which is never written.
  const std::size_t flags_at = 6;
  ASSERT_EQ(block.substr(0, 6), std::string("\x01\x01\x01\x00\x00\x00", 6));
  ASSERT_EQ(block[flags_at], '\x04');
  ASSERT_EQ(block[flags_at + 1], '\x02');
  block[flags_at + 1] = '\x01';
  BlockHeader h;
  EXPECT_FALSE(decode_event_block(block, &h, [](const BlockEvent&) {}));
}

// ---- reservations, price versions, re-ratings and ledger blocks of format 2 (issue #17)
// ----------

// Every strict prefix of a valid value is refused, and so is a wrong version byte.
template <typename Decode>
void expect_prefixes_refused(const std::string& value, Decode decode) {
  for (std::size_t n = 0; n < value.size(); ++n) {
    EXPECT_FALSE(decode(value.substr(0, n))) << "a prefix of " << n << " bytes";
  }
  std::string wrong = value;
  wrong[0] = 9;
  EXPECT_FALSE(decode(wrong)) << "an unknown version";
}

TEST(CodecTest, ReservationsRoundTrip) {
  ReservationRecord r;
  r.customer_num = 300;
  r.meter = "tokens";
  r.amount = core::Decimal::from_int(800);
  r.credits = *core::parse_decimal("8.5");
  r.created_us = -5;
  r.expires_us = 1'741'608'060'000'000;
  r.event_id = "k7";
  r.properties = {{"model", "gpt-4"}, {"provider", ""}};
  const std::string v = encode_reservation(r);
  ReservationRecord back;
  ASSERT_TRUE(decode_reservation(v, &back));
  EXPECT_EQ(back.customer_num, 300u);
  EXPECT_EQ(back.meter, "tokens");
  EXPECT_EQ(back.amount, r.amount);
  EXPECT_EQ(back.credits, r.credits);
  EXPECT_EQ(back.created_us, -5);
  EXPECT_EQ(back.expires_us, r.expires_us);
  EXPECT_EQ(back.event_id, "k7");
  EXPECT_EQ(back.properties, r.properties);
  expect_prefixes_refused(v, [](std::string_view x) {
    ReservationRecord out;
    return decode_reservation(x, &out);
  });
  EXPECT_EQ(reservation_key("res_1"), "reservation:res_1");
}

TEST(CodecTest, PriceRecordsAndVersionKeysRoundTripAndSortByTime) {
  PriceLineRecord line{"tokens_in", "TOKEN_USAGE", {{"model", "gpt-4"}}};
  PriceLineRecord line_back;
  ASSERT_TRUE(decode_price_line(encode_price_line(line), &line_back));
  EXPECT_EQ(line_back.meter, "tokens_in");
  EXPECT_EQ(line_back.event_type, "TOKEN_USAGE");
  EXPECT_EQ(line_back.match, line.match);
  expect_prefixes_refused(encode_price_line(line), [](std::string_view x) {
    PriceLineRecord out;
    return decode_price_line(x, &out);
  });

  // Keys sort by effective_from, then creation, negative times (and since-forever) first.
  const std::string forever = price_version_key("p#0", INT64_MIN, 10);
  const std::string before = price_version_key("p#0", -1, 0);
  const std::string later = price_version_key("p#0", 1000, 5);
  const std::string later_created = price_version_key("p#0", 1000, 6);
  EXPECT_LT(forever, before);
  EXPECT_LT(before, later);
  EXPECT_LT(later, later_created);
  std::string_view price;
  core::TimeUs from = 0;
  core::TimeUs created = 0;
  ASSERT_TRUE(decode_price_version_key(forever, &price, &from, &created));
  EXPECT_EQ(price, "p#0");
  EXPECT_EQ(from, INT64_MIN);
  EXPECT_EQ(created, 10);
  EXPECT_FALSE(decode_price_version_key("price_version:p#0", &price, &from, &created));
  EXPECT_FALSE(decode_price_version_key(forever.substr(1), &price, &from, &created));

  core::PriceSpec spec;
  spec.model = core::PriceModel::kGraduated;
  spec.tiers = {core::PriceTier{false, core::Decimal::from_int(10), *core::parse_decimal("0.5"),
                                core::Decimal{}},
                core::PriceTier{true, core::Decimal{}, *core::parse_decimal("0.25"),
                                core::Decimal::from_int(2)}};
  spec.currency = "EUR";
  spec.credits_per_currency_unit = core::Decimal::from_int(120);
  core::PriceSpec back;
  bool ended = false;
  ASSERT_TRUE(decode_price_version(encode_price_version(spec, true), &back, &ended));
  EXPECT_TRUE(ended);
  EXPECT_TRUE(core::same_charges(spec, back));
  expect_prefixes_refused(encode_price_version(spec, false), [](std::string_view x) {
    core::PriceSpec out;
    bool e = false;
    return decode_price_version(x, &out, &e);
  });
}

TEST(CodecTest, RerateRecordsRoundTrip) {
  core::Decimal credits;
  core::TimeUs at = 0;
  const std::string v = encode_rerate(*core::parse_decimal("-3.25"), 77);
  ASSERT_TRUE(decode_rerate(v, &credits, &at));
  EXPECT_EQ(core::format_decimal(credits), "-3.25");
  EXPECT_EQ(at, 77);
  expect_prefixes_refused(v, [](std::string_view x) {
    core::Decimal c;
    core::TimeUs t = 0;
    return decode_rerate(x, &c, &t);
  });
  EXPECT_EQ(rerate_key(1, 2).size(), kRerateKeyPrefix.size() + 12);
}

// The closed sets are stored as their texts (docs/storage.md): a text no Tally writes is damage,
// refused like a record cut short, never read as some default value.
std::string with_text_replaced(std::string value, std::string_view from, std::string_view to) {
  const std::size_t at = value.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  EXPECT_EQ(from.size(), to.size());
  if (at != std::string::npos) {
    value.replace(at, from.size(), to);
  }
  return value;
}

TEST(CodecTest, AStoredTypeKindLevelStatusOrPeriodTallyNeverWritesIsRefused) {
  LedgerRecord t;
  t.seq = 3;
  t.type = LedgerType::kTopUp;
  const std::string block = encode_ledger_block({&t});
  std::vector<LedgerRecord> read;
  auto keep = [&](LedgerRecord&& r) {
    read.push_back(std::move(r));
  };
  ASSERT_TRUE(decode_ledger_block(block, keep));
  ASSERT_EQ(read.size(), 1u);
  EXPECT_EQ(read[0].type, LedgerType::kTopUp);
  EXPECT_FALSE(decode_ledger_block(with_text_replaced(block, "top_up", "top_Up"), keep));
  EXPECT_FALSE(decode_ledger_block(with_text_replaced(block, "top_up", "bonus_"), keep));

  WalletRecord w;
  w.grants.push_back(
      {5, LedgerType::kGrant, core::Decimal::from_int(3), core::Decimal::from_int(3), 0, 0, 1});
  const std::string wallet = encode_wallet(w);
  WalletRecord back;
  ASSERT_TRUE(decode_wallet(wallet, &back));
  EXPECT_EQ(back.grants.at(0).type, LedgerType::kGrant);
  EXPECT_FALSE(decode_wallet(with_text_replaced(wallet, "grant", "grand"), &back));

  Alert a;
  a.id = "alr_1";
  a.kind = AlertKind::kLowBalance;
  a.level = AlertLevel::kCritical;
  const std::string alert = encode_alert(a);
  Alert a2;
  ASSERT_TRUE(decode_alert(alert, &a2));
  EXPECT_EQ(a2.kind, AlertKind::kLowBalance);
  EXPECT_EQ(a2.level, AlertLevel::kCritical);
  EXPECT_FALSE(decode_alert(with_text_replaced(alert, "low_balance", "low_budgets"), &a2));
  EXPECT_FALSE(decode_alert(with_text_replaced(alert, "critical", "CRITICAL"), &a2));
  // A limit's alert stores its period's text; a balance's, none.
  Alert limit = a;
  limit.kind = AlertKind::kLimit;
  limit.period = LimitPeriod::kBillingPeriod;
  const std::string limit_alert = encode_alert(limit);
  ASSERT_TRUE(decode_alert(limit_alert, &a2));
  EXPECT_EQ(a2.period, LimitPeriod::kBillingPeriod);
  EXPECT_FALSE(
      decode_alert(with_text_replaced(limit_alert, "billing_period", "billing_cycle!"), &a2));

  Customer c;
  c.id = "acme";
  c.overrides = {{"api_calls", LimitPeriod::kWeek, 0, "10", true}};
  const std::string customer = encode_customer(1, c);
  std::uint32_t num = 0;
  Customer c2;
  ASSERT_TRUE(decode_customer(customer, &num, &c2));
  ASSERT_EQ(c2.overrides.size(), 1u);
  EXPECT_EQ(c2.overrides[0].period, LimitPeriod::kWeek);
  EXPECT_FALSE(decode_customer(with_text_replaced(customer, "week", "fort"), &num, &c2));

  WebhookDelivery d;
  d.id = "dlv_1";
  d.status = DeliveryStatus::kDelivered;
  const std::string delivery = encode_delivery(d);
  WebhookDelivery d2;
  ASSERT_TRUE(decode_delivery(delivery, &d2));
  EXPECT_EQ(d2.status, DeliveryStatus::kDelivered);
  EXPECT_FALSE(decode_delivery(with_text_replaced(delivery, "delivered", "dispensed"), &d2));
}

// A customer record of each age decodes, clearing what its age did not have; a status Tally
// never writes and an empty organization are refused.
TEST(CodecTest, CustomerRecordsOfEachAgeDecode) {
  Customer c;
  c.id = "acme";
  c.name = "Acme";
  c.status = CustomerStatus::kSuspended;
  c.created_at_us = 5;
  c.updated_at_us = 6;
  // Empty plan fields are five bytes: plan "", trial 0, anchor 0, no overrides, no resets.
  const std::string current = encode_customer(3, c);
  const std::string oldest = current.substr(0, current.size() - 5);
  Customer stale;
  stale.plan = "pro";
  stale.trial_started_at_us = 1;
  stale.billing_anchor_us = 2;
  stale.overrides = {{"api_calls", LimitPeriod::kMonth, 0, "5", true}};
  stale.resets = {{"api_calls", 9}};
  stale.organization = "org";
  for (const std::string& record : {oldest, current}) {
    std::uint32_t num = 0;
    Customer back = stale;
    ASSERT_TRUE(decode_customer(record, &num, &back)) << record.size();
    EXPECT_EQ(num, 3u);
    EXPECT_EQ(back.id, "acme");
    EXPECT_EQ(back.name, "Acme");
    EXPECT_EQ(back.status, CustomerStatus::kSuspended);
    EXPECT_EQ(back.created_at_us, 5);
    EXPECT_EQ(back.updated_at_us, 6);
    EXPECT_EQ(back.plan, "");
    EXPECT_EQ(back.trial_started_at_us, 0);
    EXPECT_EQ(back.billing_anchor_us, 0);
    EXPECT_TRUE(back.overrides.empty());
    EXPECT_TRUE(back.resets.empty());
    EXPECT_EQ(back.organization, "");
  }
  std::uint32_t num = 0;
  Customer back;
  EXPECT_FALSE(decode_customer(with_text_replaced(current, "suspended", "suspendeD"), &num, &back));
  EXPECT_FALSE(decode_customer(current + std::string(1, '\0'), &num, &back))
      << "an organization, when written, is not empty";
  EXPECT_FALSE(decode_customer(oldest.substr(0, oldest.size() - 1), &num, &back));
  EXPECT_FALSE(decode_customer(oldest + std::string(1, '\0'), &num, &back))
      << "plan fields come whole";
}

TEST(CodecTest, LedgerBlocksOfFormatTwoCarryHeldAndPeriodsAndFormatOneStillReads) {
  LedgerRecord hold;
  hold.seq = 7;
  hold.type = LedgerType::kHold;
  hold.held = *core::parse_decimal("8");
  hold.reservation_id = "res_1";
  LedgerRecord adj;
  adj.seq = 8;
  adj.type = LedgerType::kAdjustment;
  adj.amount = *core::parse_decimal("-2");
  adj.period_start_us = 100;
  adj.period_end_us = 200;
  const std::string block = encode_ledger_block({&hold, &adj});
  EXPECT_EQ(block[0], 2) << "format 2";
  std::vector<LedgerRecord> back;
  ASSERT_TRUE(decode_ledger_block(block, [&](LedgerRecord&& r) { back.push_back(std::move(r)); }));
  ASSERT_EQ(back.size(), 2u);
  EXPECT_EQ(back[0].held, hold.held);
  EXPECT_EQ(back[0].reservation_id, "res_1");
  EXPECT_EQ(to_transaction(back[0]).held, "8");
  EXPECT_EQ(back[1].period_start_us, 100);
  EXPECT_EQ(back[1].period_end_us, 200);
  EXPECT_EQ(to_transaction(back[1]).held, "") << "only holds and releases show held";

  // A block of format 1 (before holds): the same fields without held and the periods.
  std::string v1;
  v1 += '\x01';
  put_varint(v1, 1);
  put_varint(v1, 3);                    // seq
  v1 += varint(4) + "burn";             // type
  v1 += decimal_bytes(-5'000'000'000);  // amount -5
  v1 += decimal_bytes(0);               // before
  v1 += decimal_bytes(-5'000'000'000);  // after
  v1 += varint(1) + "e";                // event id
  put_varint(v1, 0);                    // grant seq
  v1 += varint(0);                      // reservation id
  v1 += varint(0);                      // description
  put_zigzag(v1, 1);
  put_zigzag(v1, 0);
  put_zigzag(v1, 0);
  std::vector<LedgerRecord> old;
  ASSERT_TRUE(decode_ledger_block(v1, [&](LedgerRecord&& r) { old.push_back(std::move(r)); }));
  ASSERT_EQ(old.size(), 1u);
  EXPECT_EQ(old[0].type, LedgerType::kBurn);
  EXPECT_EQ(old[0].held.units, 0);
  EXPECT_EQ(old[0].period_end_us, 0);
  expect_prefixes_refused(
      block, [](std::string_view x) { return decode_ledger_block(x, [](LedgerRecord&&) {}); });
}

}  // namespace
}  // namespace tally::engine

// ---- every record: round trip, golden bytes (docs/storage.md), truncation, version -----------

namespace golden {

std::string hex(std::string_view bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (char c : bytes) {
    const auto b = static_cast<unsigned char>(c);
    out += kDigits[b >> 4];
    out += kDigits[b & 0xF];
  }
  return out;
}

core::Decimal dec(std::int64_t units) {
  return core::Decimal{units};
}

constexpr core::TimeUs kT = 1'737'370'800'000'000;  // 2025-01-20T11:00:00Z

// One record type: its encoding of a fixed value with every field set, and a decoder that
// decodes bytes and encodes what it read again (so a lossy decode shows as different bytes).
struct Record {
  std::string name;
  std::string bytes;
  std::function<bool(std::string_view, std::string*)> reencode;
};

std::vector<Record> records() {
  std::vector<Record> out;

  {
    const std::vector<DedupEntry> entries = {{0x1234, 100, 1}, {0xfeed, 101, 2}};
    out.push_back(
        {"dedup", encode_dedup_record(kT, entries), [](std::string_view v, std::string* o) {
           core::TimeUs at = 0;
           std::vector<DedupEntry> e;
           if (!decode_dedup_record(v, &at, &e)) {
             return false;
           }
           *o = encode_dedup_record(at, e);
           return true;
         }});
  }
  {
    core::AggState s;
    s.count = 3;
    s.sum = dec(6'500'000'000);
    s.min = dec(-1'000'000'000);
    s.max = dec(5'000'000'000);
    s.latest = dec(2'500'000'000);
    s.latest_time_us = kT;
    s.latest_seq = 42;
    out.push_back({"agg_state", encode_agg_state(s), [](std::string_view v, std::string* o) {
                     core::AggState d;
                     if (!decode_agg_state(v, &d)) {
                       return false;
                     }
                     *o = encode_agg_state(d);
                     return true;
                   }});
  }
  {
    Customer c;
    c.id = "acme";
    c.name = "Acme";
    c.email = "ops@acme.test";
    c.timezone = "Europe/Paris";
    c.status = CustomerStatus::kSuspended;
    c.metadata_json = R"({"tier":"gold"})";
    c.created_at_us = kT;
    c.updated_at_us = kT + 1;
    c.plan = "pro";
    c.trial_started_at_us = kT + 2;
    c.billing_anchor_us = kT + 3;
    c.overrides = {{"api_calls", LimitPeriod::kMonth, 0, "5000", false},
                   {"tokens", LimitPeriod::kTrial, 14, "10", true}};
    c.resets = {{"api_calls", kT + 4}};
    c.organization = "org_1";
    out.push_back({"customer", encode_customer(7, c), [](std::string_view v, std::string* o) {
                     std::uint32_t num = 0;
                     Customer d;
                     if (!decode_customer(v, &num, &d)) {
                       return false;
                     }
                     *o = encode_customer(num, d);
                     return true;
                   }});
  }
  {
    KeyRecord k;
    k.info.id = "key_1";
    k.info.prefix = "tk_live_ab";
    k.info.customer = "acme";
    k.info.name = "ci";
    k.info.scopes = Scope::kIngest | Scope::kRead;  // 5
    k.info.created_at_us = kT;
    k.info.revoked_at_us = kT + 10;
    k.info.last_used_at_us = kT + 5;
    k.info.total_requests = 99;
    k.hash = std::string(32, '\x5a');
    out.push_back({"key", encode_key_record(k), [](std::string_view v, std::string* o) {
                     KeyRecord d;
                     if (!decode_key_record(v, &d)) {
                       return false;
                     }
                     *o = encode_key_record(d);
                     return true;
                   }});
  }
  {
    LedgerRecord a;
    a.seq = 9;
    a.type = LedgerType::kGrant;
    a.amount = dec(100'000'000'000);
    a.before = dec(0);
    a.after = dec(100'000'000'000);
    a.description = "welcome";
    a.created_at_us = kT;
    a.expires_at_us = kT + 86'400'000'000;
    a.priority = 2;
    LedgerRecord b;
    b.seq = 10;
    b.type = LedgerType::kHold;
    b.event_id = "ev_1";
    b.grant_seq = 9;
    b.reservation_id = "rsv_1";
    b.created_at_us = kT + 1;
    b.held = dec(1'500'000'000);
    b.period_start_us = kT - 1000;
    b.period_end_us = kT + 1000;
    const std::vector<const LedgerRecord*> txns = {&a, &b};
    out.push_back(
        {"ledger_block", encode_ledger_block(txns), [](std::string_view v, std::string* o) {
           std::vector<LedgerRecord> read;
           if (!decode_ledger_block(v, [&](LedgerRecord&& r) { read.push_back(r); })) {
             return false;
           }
           std::vector<const LedgerRecord*> ptrs;
           for (const LedgerRecord& r : read) {
             ptrs.push_back(&r);
           }
           *o = encode_ledger_block(ptrs);
           return true;
         }});
  }
  {
    WalletRecord w;
    w.balance = dec(98'500'000'000);
    w.debt = dec(0);
    w.grants = {{9, LedgerType::kGrant, dec(100'000'000'000), dec(98'500'000'000), 2, kT + 7, kT}};
    w.holds = {{"rsv_1", dec(1'500'000'000)}};
    w.transactions = 2;
    w.last_txn_seq = 10;
    out.push_back({"wallet", encode_wallet(w), [](std::string_view v, std::string* o) {
                     WalletRecord d;
                     if (!decode_wallet(v, &d)) {
                       return false;
                     }
                     *o = encode_wallet(d);
                     return true;
                   }});
  }
  out.push_back(
      {"decimal", encode_decimal(dec(-1'250'000'000)), [](std::string_view v, std::string* o) {
         core::Decimal d;
         if (!decode_decimal(v, &d)) {
           return false;
         }
         *o = encode_decimal(d);
         return true;
       }});
  {
    PriceLineRecord p{"tokens", "llm.call", {{"model", "small"}, {"provider", "x"}}};
    out.push_back({"price_line", encode_price_line(p), [](std::string_view v, std::string* o) {
                     PriceLineRecord d;
                     if (!decode_price_line(v, &d)) {
                       return false;
                     }
                     *o = encode_price_line(d);
                     return true;
                   }});
  }
  {
    core::PriceSpec s;
    s.model = core::PriceModel::kGraduated;
    s.unit_price = dec(10'000'000);
    s.tiers = {{false, dec(1'000'000'000'000), dec(10'000'000), dec(0)},
               {true, dec(0), dec(8'000'000), dec(2'000'000'000)}};
    s.package_size = dec(0);
    s.currency = "EUR";
    s.credits_per_currency_unit = dec(1'100'000'000);
    out.push_back(
        {"price_version", encode_price_version(s, false), [](std::string_view v, std::string* o) {
           core::PriceSpec d;
           bool ended = true;
           if (!decode_price_version(v, &d, &ended)) {
             return false;
           }
           *o = encode_price_version(d, ended);
           return true;
         }});
  }
  out.push_back(
      {"rerate", encode_rerate(dec(3'000'000'000), kT), [](std::string_view v, std::string* o) {
         core::Decimal c;
         core::TimeUs at = 0;
         if (!decode_rerate(v, &c, &at)) {
           return false;
         }
         *o = encode_rerate(c, at);
         return true;
       }});
  {
    ReservationRecord r;
    r.customer_num = 7;
    r.meter = "api_calls";
    r.amount = dec(5'000'000'000);
    r.credits = dec(1'500'000'000);
    r.created_us = kT;
    r.expires_us = kT + 300'000'000;
    r.event_id = "chk_1";
    r.properties = {{"region", "eu"}};
    out.push_back({"reservation", encode_reservation(r), [](std::string_view v, std::string* o) {
                     ReservationRecord d;
                     if (!decode_reservation(v, &d)) {
                       return false;
                     }
                     *o = encode_reservation(d);
                     return true;
                   }});
  }
  {
    Alert a;
    a.id = "alr_1";
    a.customer = "acme";
    a.kind = AlertKind::kLimit;
    a.level = AlertLevel::kWarning;
    a.meter = "api_calls";
    a.period = LimitPeriod::kMonth;
    a.limit = "api_calls per month";
    a.threshold_percent = 80;
    a.limit_amount = "1000";
    a.used = "800";
    a.percent = "80.00";
    a.window_start_us = kT - 1000;
    a.window_end_us = kT + 1000;
    a.threshold_amount = "5";
    a.balance = "4";
    a.created_at_us = kT;
    a.status = AlertStatus::kPending;
    a.sent = true;
    a.delivery_attempts = 3;
    out.push_back({"alert", encode_alert(a), [](std::string_view v, std::string* o) {
                     Alert d;
                     if (!decode_alert(v, &d)) {
                       return false;
                     }
                     *o = encode_alert(d);
                     return true;
                   }});
  }
  {
    WebhookDelivery d;
    d.id = "dlv_1";
    d.alert_id = "alr_1";
    d.event = "alert.triggered";
    d.webhook = 1;
    d.url = "http://127.0.0.1:9/hook";
    d.status = DeliveryStatus::kPending;
    d.attempts = 2;
    d.created_at_us = kT;
    d.next_attempt_at_us = kT + 30'000'000;
    d.last_attempt_at_us = kT + 1;
    d.delivered_at_us = 0;
    d.last_status_code = 503;
    d.last_error = "busy";
    out.push_back({"delivery", encode_delivery(d), [](std::string_view v, std::string* o) {
                     WebhookDelivery r;
                     if (!decode_delivery(v, &r)) {
                       return false;
                     }
                     *o = encode_delivery(r);
                     return true;
                   }});
  }
  {
    ArchivedEventRecord r{kT, "ev_9", 3, true, dec(2'000'000'000)};
    out.push_back(
        {"archived_event", encode_archived_event(r), [](std::string_view v, std::string* o) {
           ArchivedEventRecord d;
           if (!decode_archived_event(v, &d)) {
             return false;
           }
           *o = encode_archived_event(d);
           return true;
         }});
  }
  {
    EventBlockWriter w;
    w.begin(100, kT);
    BlockEvent e;
    e.seq = 100;
    e.time_us = kT - 5;
    e.id = "ev_1";
    e.type = "api.call";
    e.props = {{core::PropKind::kString, "region", "eu"}, {core::PropKind::kNumber, "ms", "12.5"}};
    w.add_stored(e);
    BlockEvent f;
    f.seq = 101;
    f.time_us = kT - 4;
    f.flagged = true;
    f.id = "ev_2";
    f.type = "llm.call";
    f.priced = true;
    f.cost = dec(20'000'000);
    f.credits = dec(22'000'000);
    f.quantity = 3;
    w.add_stored(f);
    out.push_back({"event_block", w.finish(), [](std::string_view v, std::string* o) {
                     BlockHeader h;
                     EventBlockWriter again;
                     bool begun = false;
                     const bool ok = decode_event_block(v, &h, [&](const BlockEvent& be) {
                       if (!begun) {
                         again.begin(h.first_seq, h.received_at_us);
                         begun = true;
                       }
                       again.add_stored(be);
                     });
                     if (!ok) {
                       return false;
                     }
                     if (!begun) {
                       again.begin(h.first_seq, h.received_at_us);
                     }
                     *o = again.finish();
                     return true;
                   }});
  }
  return out;
}

// The "Golden values" table of docs/storage.md: record name -> hex.
std::map<std::string, std::string> documented() {
  std::ifstream in(std::string(TALLY_SOURCE_DIR) + "/docs/storage.md");
  std::map<std::string, std::string> out;
  std::string line;
  bool in_section = false;
  while (std::getline(in, line)) {
    if (line.rfind("## ", 0) == 0) {
      in_section = line == "## Golden values";
      continue;
    }
    // | `name` | what | `hex` |
    if (!in_section || line.rfind("| `", 0) != 0) {
      continue;
    }
    const std::size_t name_end = line.find('`', 3);
    const std::size_t hex_end = line.rfind('`');
    const std::size_t hex_begin = line.rfind('`', hex_end - 1);
    if (name_end == std::string::npos || hex_begin <= name_end) {
      continue;
    }
    out[line.substr(3, name_end - 3)] = line.substr(hex_begin + 1, hex_end - hex_begin - 1);
  }
  return out;
}

}  // namespace golden

TEST(CodecRecords, EveryRecordRoundTripsToTheSameBytes) {
  for (const golden::Record& r : golden::records()) {
    std::string again;
    ASSERT_TRUE(r.reencode(r.bytes, &again)) << r.name;
    EXPECT_EQ(golden::hex(again), golden::hex(r.bytes)) << r.name;
  }
}

// The bytes on disk never change by accident: each record's encoding is written out in
// docs/storage.md ("Golden values"), and a change there is a change of the storage format.
TEST(CodecRecords, EveryRecordHasTheGoldenBytesOfDocsStorage) {
  const std::map<std::string, std::string> docs = golden::documented();
  const std::vector<golden::Record> records = golden::records();
  EXPECT_EQ(docs.size(), records.size()) << "one row per record in docs/storage.md";
  for (const golden::Record& r : records) {
    auto it = docs.find(r.name);
    ASSERT_NE(it, docs.end()) << "docs/storage.md has no golden value for " << r.name
                              << "; its bytes are " << golden::hex(r.bytes);
    EXPECT_EQ(golden::hex(r.bytes), it->second) << r.name;
  }
}

TEST(CodecRecords, ATruncatedValueIsRefused) {
  for (const golden::Record& r : golden::records()) {
    std::string out;
    for (std::size_t len :
         {std::size_t{0}, std::size_t{1}, std::size_t{2}, r.bytes.size() / 2, r.bytes.size() - 1}) {
      EXPECT_FALSE(r.reencode(std::string_view(r.bytes).substr(0, len), &out))
          << r.name << " cut to " << len << " of " << r.bytes.size() << " bytes";
    }
  }
}

TEST(CodecRecords, AWrongVersionByteIsRefused) {
  for (const golden::Record& r : golden::records()) {
    for (int version : {0, 3, 0x7f, 0xff}) {
      std::string bytes = r.bytes;
      bytes[0] = static_cast<char>(version);
      std::string out;
      EXPECT_FALSE(r.reencode(bytes, &out)) << r.name << " with version " << version;
    }
  }
}

TEST(CodecRecords, TrailingBytesAreRefused) {
  for (const golden::Record& r : golden::records()) {
    std::string out;
    EXPECT_FALSE(r.reencode(r.bytes + '\0', &out)) << r.name;
  }
}

}  // namespace
}  // namespace tally::engine
