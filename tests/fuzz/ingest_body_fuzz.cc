// Fuzzes ingest bodies (core::parse_events): Tally's {"events": [...]}, a bare array, one event,
// with Tally's field names, the flat seed shape or CloudEvents.
//
// The first byte picks the options (a default customer, a list of known types, a small
// events_max), the rest is the body. Beyond not crashing, the parser must keep its documented
// limits: every event it accepts has an id, customer and type of 1..128 bytes, at most 256
// properties (plus the event_id an idempotency_key replaced), property names of 1..256 bytes,
// string values of at most 8 KiB, a time no later than now + skew; and every event of the
// request is either accepted or reported, once, by its index.
#include <string>
#include <vector>

#include "core/decimal.h"
#include "core/event_parse.h"
#include "fuzz_util.h"

namespace {

using namespace tally::core;

constexpr TimeUs kNowUs = 1'737'374'400'000'000;  // 2025-01-20T12:00:00Z

void check_result(const tally::Status& s, const ParseOptions& o, const ParsedEvents& out) {
  if (!s.ok()) {
    FUZZ_EXPECT(s.code() == tally::StatusCode::kInvalidArgument ||
                    s.code() == tally::StatusCode::kPayloadTooLarge,
                s.message());
    return;
  }
  const EventBatch& b = out.batch;
  FUZZ_EXPECT(out.total >= 1 && out.total <= o.events_max, std::to_string(out.total));
  FUZZ_EXPECT(b.size() == out.indexes.size(), "an index per accepted event");
  FUZZ_EXPECT(b.size() + out.errors.size() == out.total, "each event accepted or reported once");
  std::vector<bool> seen(out.total, false);
  for (std::uint32_t i : out.indexes) {
    FUZZ_EXPECT(i < out.total && !seen[i], "index " + std::to_string(i));
    seen[i] = true;
  }
  for (const EventError& e : out.errors) {
    FUZZ_EXPECT(e.index < out.total && !seen[e.index], "error index " + std::to_string(e.index));
    seen[e.index] = true;
    FUZZ_EXPECT(!e.code.empty() && !e.message.empty(), "an error says what is wrong");
    FUZZ_EXPECT(e.id.size() <= kEventIdBytesMax, "error ids are cut to the id limit");
  }
  for (const Event& e : b.events()) {
    const std::string_view id = b.text(e.id);
    const std::string_view customer = b.text(e.customer);
    const std::string_view type = b.text(e.type);
    FUZZ_EXPECT(!id.empty() && id.size() <= kEventIdBytesMax, id);
    FUZZ_EXPECT(!customer.empty() && customer.size() <= kEventNameBytesMax, customer);
    FUZZ_EXPECT(!type.empty() && type.size() <= kEventNameBytesMax, type);
    FUZZ_EXPECT(e.time_us <= o.now_us + o.future_skew_us_max, std::to_string(e.time_us));
    FUZZ_EXPECT(e.prop_count <= kEventPropsMax + 1, std::to_string(e.prop_count));
    FUZZ_EXPECT(e.prop_begin + e.prop_count <= b.props().size(), "properties in range");
    for (std::uint32_t i = e.prop_begin; i < e.prop_begin + e.prop_count; ++i) {
      const Prop& p = b.props()[i];
      const std::string_view key = b.text(p.key);
      FUZZ_EXPECT(!key.empty() && key.size() <= kPropKeyBytesMax, key);
      FUZZ_EXPECT(b.text(p.text).size() <= kPropTextBytesMax,
                  "property '" + std::string(key) + "' of " +
                      std::to_string(b.text(p.text).size()) + " bytes");
      if (p.kind == PropKind::kNumber) {
        FUZZ_EXPECT(parse_decimal(b.text(p.text)).has_value(), b.text(p.text));
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  static const std::vector<std::string> kKnownTypes = {"TOKEN_USAGE", "api_call", "tokens"};
  const std::uint8_t mode = data[0];
  ParseOptions o;
  o.now_us = kNowUs;
  if ((mode & 1) != 0) {
    o.default_customer = "key-customer";
  }
  if ((mode & 2) != 0) {
    o.known_types = &kKnownTypes;
  }
  o.events_max = (mode & 4) != 0 ? 3 : 10'000;
  const std::string text = std::string(tally::fuzz::as_text(data + 1, size - 1));

  std::string body = text;
  ParsedEvents out;
  const tally::Status s = parse_events(body, o, &out);
  FUZZ_EXPECT(body == text, "the body's contents stay");
  check_result(s, o, out);

  // The same body parses the same way again (the parser is a reused thread_local).
  std::string again = text;
  ParsedEvents out2;
  const tally::Status s2 = parse_events(again, o, &out2);
  FUZZ_EXPECT(s.code() == s2.code() && s.message() == s2.message(), s2.message());
  FUZZ_EXPECT(out.batch.size() == out2.batch.size() && out.errors.size() == out2.errors.size() &&
                  out.total == out2.total,
              "a second parse agrees");
  return 0;
}
