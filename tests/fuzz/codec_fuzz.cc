// Fuzzes every decoder of the engine's on-disk records (src/engine/codec.h): event blocks,
// dedup records, aggregate and unique keys, aggregate states, customers, API keys, ledger
// blocks, wallets, price usage keys, stored decimals, archived-event records, alerts, webhook
// deliveries, reservations, price records and version keys, price versions and re-ratings. These
// read bytes the engine wrote, but a damaged disk or a bug in an older version may hand them
// anything: they must refuse it (false), never crash or allocate without bound.
//
// The first byte picks the decoder, the rest is the value (or key). A record that decodes must
// encode back to bytes that decode and encode to the same bytes again (the encoding of a
// decoded record is a fixed point), so a decoder and its encoder agree on every field.
#include <string>
#include <vector>

#include "engine/codec.h"
#include "fuzz_util.h"

namespace {

using namespace tally;
using namespace tally::engine;

// Event blocks: decode, then write every event back with add_stored.
bool reencode_block(std::string_view value, std::string* out) {
  BlockHeader h;
  EventBlockWriter w;
  bool begun = false;
  const bool ok = decode_event_block(value, &h, [&](const BlockEvent& e) {
    if (!begun) {
      w.begin(h.first_seq, h.received_at_us);
      begun = true;
    }
    FUZZ_EXPECT(e.props.size() <= core::kEventPropsMax + 1, std::to_string(e.props.size()));
    w.add_stored(e);
  });
  if (!ok) {
    return false;
  }
  if (!begun) {
    w.begin(h.first_seq, h.received_at_us);
  }
  *out = w.finish();
  return true;
}

bool reencode_dedup(std::string_view value, std::string* out) {
  core::TimeUs at = 0;
  std::vector<DedupEntry> entries;
  if (!decode_dedup_record(value, &at, &entries)) {
    return false;
  }
  *out = encode_dedup_record(at, entries);
  return true;
}

bool reencode_aggregate_key(std::string_view key, std::string* out) {
  AggregateKey k;
  if (!decode_aggregate_key(key, &k)) {
    return false;
  }
  *out = aggregate_key(k.meter, k.customer_num, k.minute_us, k.group);
  FUZZ_EXPECT(*out == key, "aggregate keys are fixed-width");
  return true;
}

bool reencode_agg_state(std::string_view value, std::string* out) {
  core::AggState s;
  if (!decode_agg_state(value, &s)) {
    return false;
  }
  *out = encode_agg_state(s);
  return true;
}

bool reencode_unique_key(std::string_view key, std::string* out) {
  UniqueKey k;
  if (!decode_unique_key(key, &k)) {
    return false;
  }
  *out = unique_key(k.meter, k.customer_num, k.minute_us, k.group, k.value);
  return true;
}

bool reencode_customer(std::string_view value, std::string* out) {
  std::uint32_t num = 0;
  Customer c;
  if (!decode_customer(value, &num, &c)) {
    return false;
  }
  *out = encode_customer(num, c);
  return true;
}

bool reencode_key(std::string_view value, std::string* out) {
  KeyRecord k;
  if (!decode_key_record(value, &k)) {
    return false;
  }
  *out = encode_key_record(k);
  return true;
}

bool reencode_ledger(std::string_view value, std::string* out) {
  std::vector<LedgerRecord> records;
  if (!decode_ledger_block(value, [&](LedgerRecord&& r) { records.push_back(std::move(r)); })) {
    return false;
  }
  std::vector<const LedgerRecord*> ptrs;
  for (const auto& r : records) {
    ptrs.push_back(&r);
    (void)to_transaction(r);  // formats the amounts, as the API does
  }
  *out = encode_ledger_block(ptrs);
  return true;
}

bool reencode_wallet(std::string_view value, std::string* out) {
  WalletRecord w;
  if (!decode_wallet(value, &w)) {
    return false;
  }
  *out = encode_wallet(w);
  return true;
}

bool reencode_price_usage_key(std::string_view key, std::string* out) {
  std::string_view price;
  std::uint32_t customer = 0;
  core::TimeUs start = 0;
  if (!decode_price_usage_key(key, &price, &customer, &start)) {
    return false;
  }
  *out = price_usage_key(price, customer, start);
  FUZZ_EXPECT(*out == key, "price usage keys are fixed-width");
  return true;
}

bool reencode_decimal(std::string_view value, std::string* out) {
  core::Decimal d;
  if (!decode_decimal(value, &d)) {
    return false;
  }
  *out = encode_decimal(d);
  return true;
}

bool reencode_archived_event(std::string_view value, std::string* out) {
  ArchivedEventRecord r;
  if (!decode_archived_event(value, &r)) {
    return false;
  }
  *out = encode_archived_event(r);
  return true;
}

bool reencode_alert(std::string_view value, std::string* out) {
  Alert a;
  if (!decode_alert(value, &a)) {
    return false;
  }
  *out = encode_alert(a);
  return true;
}

bool reencode_delivery(std::string_view value, std::string* out) {
  WebhookDelivery d;
  if (!decode_delivery(value, &d)) {
    return false;
  }
  *out = encode_delivery(d);
  return true;
}

bool reencode_reservation(std::string_view value, std::string* out) {
  ReservationRecord r;
  if (!decode_reservation(value, &r)) {
    return false;
  }
  *out = encode_reservation(r);
  return true;
}

bool reencode_price_line(std::string_view value, std::string* out) {
  PriceLineRecord r;
  if (!decode_price_line(value, &r)) {
    return false;
  }
  *out = encode_price_line(r);
  return true;
}

bool reencode_price_version_key(std::string_view key, std::string* out) {
  std::string_view price;
  core::TimeUs from = 0;
  core::TimeUs created = 0;
  if (!decode_price_version_key(key, &price, &from, &created)) {
    return false;
  }
  *out = price_version_key(price, from, created);
  FUZZ_EXPECT(*out == key, "price version keys are fixed-width");
  return true;
}

bool reencode_price_version(std::string_view value, std::string* out) {
  core::PriceSpec spec;
  bool ended = false;
  if (!decode_price_version(value, &spec, &ended)) {
    return false;
  }
  *out = encode_price_version(spec, ended);
  return true;
}

bool reencode_rerate(std::string_view value, std::string* out) {
  core::Decimal credits;
  core::TimeUs at = 0;
  if (!decode_rerate(value, &credits, &at)) {
    return false;
  }
  *out = encode_rerate(credits, at);
  return true;
}

using Reencode = bool (*)(std::string_view, std::string*);
constexpr Reencode kDecoders[] = {
    reencode_block,
    reencode_dedup,
    reencode_aggregate_key,
    reencode_agg_state,
    reencode_unique_key,
    reencode_customer,
    reencode_key,
    reencode_ledger,
    reencode_wallet,
    reencode_price_usage_key,
    reencode_decimal,
    reencode_archived_event,
    reencode_alert,
    reencode_delivery,
    reencode_reservation,
    reencode_price_line,
    reencode_price_version_key,
    reencode_price_version,
    reencode_rerate,
};
constexpr std::size_t kDecoderCount = sizeof(kDecoders) / sizeof(kDecoders[0]);

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) {
    return 0;
  }
  const std::size_t which = data[0] % kDecoderCount;
  const std::string_view value = tally::fuzz::as_text(data + 1, size - 1);
  std::string once;
  if (!kDecoders[which](value, &once)) {
    return 0;
  }
  std::string twice;
  FUZZ_EXPECT(kDecoders[which](once, &twice),
              "decoder " + std::to_string(which) + " refuses its own encoding");
  FUZZ_EXPECT(once == twice, "decoder " + std::to_string(which) + ": encoding is not stable");
  return 0;
}
