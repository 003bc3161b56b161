// Tests of the on-disk record codecs. Quantities (a consuming check of N on a count meter)
// round-trip, and blocks without them read as they always did. Damaged values: each decoder
// must refuse them (false), never throw, crash or allocate by a count the value merely claims. The inputs are the ones
// tests/fuzz/codec_fuzz.cc found, and their neighbours.
#include "engine/codec.h"

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
  full.grants.push_back(
      {5, "top_up", core::Decimal::from_int(100), core::Decimal::from_int(99), 100, 0, 1});
  full.holds.emplace_back("res_1", core::Decimal::from_int(5));
  const std::string value = encode_wallet(full);
  ASSERT_TRUE(decode_wallet(value, &w));
  ASSERT_EQ(w.grants.size(), 1u);
  EXPECT_EQ(w.grants[0].type, "top_up");
  EXPECT_EQ(w.grants[0].remaining, core::Decimal::from_int(99));
  ASSERT_EQ(w.holds.size(), 1u);
  EXPECT_EQ(w.holds[0].first, "res_1");
  EXPECT_EQ(w.holds[0].second, core::Decimal::from_int(5));
}

}  // namespace
}  // namespace tally::engine

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
  b.props().push_back(core::Prop{b.add_text("service"), b.add_text("chat"), core::PropKind::kString});
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

// ---- reservations, price versions, re-ratings and ledger blocks of format 2 (issue #17) ----------

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

TEST(CodecTest, LedgerBlocksOfFormatTwoCarryHeldAndPeriodsAndFormatOneStillReads) {
  LedgerRecord hold;
  hold.seq = 7;
  hold.type = "hold";
  hold.held = *core::parse_decimal("8");
  hold.reservation_id = "res_1";
  LedgerRecord adj;
  adj.seq = 8;
  adj.type = "adjustment";
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
  put_varint(v1, 3);                   // seq
  v1 += varint(4) + "burn";            // type
  v1 += decimal_bytes(-5'000'000'000);  // amount -5
  v1 += decimal_bytes(0);              // before
  v1 += decimal_bytes(-5'000'000'000);  // after
  v1 += varint(1) + "e";               // event id
  put_varint(v1, 0);                   // grant seq
  v1 += varint(0);                     // reservation id
  v1 += varint(0);                     // description
  put_zigzag(v1, 1);
  put_zigzag(v1, 0);
  put_zigzag(v1, 0);
  std::vector<LedgerRecord> old;
  ASSERT_TRUE(decode_ledger_block(v1, [&](LedgerRecord&& r) { old.push_back(std::move(r)); }));
  ASSERT_EQ(old.size(), 1u);
  EXPECT_EQ(old[0].type, "burn");
  EXPECT_EQ(old[0].held.units, 0);
  EXPECT_EQ(old[0].period_end_us, 0);
  expect_prefixes_refused(block, [](std::string_view x) {
    return decode_ledger_block(x, [](LedgerRecord&&) {});
  });
}

}  // namespace
}  // namespace tally::engine
