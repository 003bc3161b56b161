// The event block codec: quantities (a consuming check of N on a count meter) round-trip, and
// blocks without them read as they always did.
#include "engine/codec.h"

#include <vector>

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace tally::engine
