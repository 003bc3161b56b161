// Events as they travel from the parser to the store: a batch owns one byte arena, and each
// event and property refers into it by (offset, size). One batch of 1,000 events is a handful
// of allocations, not thousands of small strings.
//
// A property's `text` is the unescaped string for strings, the JSON number text for numbers
// (kept exactly as sent), and "true"/"false" for booleans. Nested objects are flattened with
// dotted keys: {"usage": {"input": 3}} becomes the property "usage.input".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "core/time.h"

namespace tally::core {

struct Slice {
  std::uint32_t offset = 0;
  std::uint32_t size = 0;
};

enum class PropKind : std::uint8_t {
  kString = 0,
  kNumber = 1,
  kBool = 2,
  kNull = 3,
};

struct Prop {
  Slice key;
  Slice text;
  PropKind kind = PropKind::kString;
};

struct Event {
  Slice id;        // the idempotency key (1..128 bytes)
  Slice customer;  // customer id (1..128 bytes)
  Slice type;      // event type (1..128 bytes)
  TimeUs time_us = 0;
  std::uint32_t prop_begin = 0;  // index into EventBatch::props
  std::uint32_t prop_count = 0;
  // How many occurrences this one record stands for on count meters: 1 for every ingested
  // event; a consuming check of N on a count meter records one event carrying N (not N events),
  // so what one request may store stays bounded by its size.
  std::uint32_t quantity = 1;
};

// The largest quantity one record may carry (a check's count amount is bounded far below).
inline constexpr std::uint32_t kEventQuantityMax = 1'000'000;

// Limits on what one event may carry.
inline constexpr std::size_t kEventIdBytesMax = 128;
inline constexpr std::size_t kEventNameBytesMax = 128;  // customer and type
inline constexpr std::size_t kEventPropsMax = 256;
inline constexpr std::size_t kPropKeyBytesMax = 256;
inline constexpr std::size_t kPropTextBytesMax = 8192;

class EventBatch {
 public:
  Slice add_text(std::string_view s) {
    Slice out{static_cast<std::uint32_t>(arena_.size()), static_cast<std::uint32_t>(s.size())};
    arena_.append(s);
    return out;
  }

  std::string_view text(Slice s) const { return std::string_view(arena_).substr(s.offset, s.size); }

  std::vector<Event>& events() { return events_; }

  const std::vector<Event>& events() const { return events_; }

  std::vector<Prop>& props() { return props_; }

  const std::vector<Prop>& props() const { return props_; }

  std::size_t size() const { return events_.size(); }

  bool empty() const { return events_.empty(); }

  std::size_t arena_bytes() const { return arena_.size(); }

  // Looks up property `key` of event e; returns nullptr when absent. Linear in the event's
  // property count, which is small.
  const Prop* find_prop(const Event& e, std::string_view key) const {
    for (std::uint32_t i = e.prop_begin; i < e.prop_begin + e.prop_count; ++i) {
      if (text(props_[i].key) == key) {
        return &props_[i];
      }
    }
    return nullptr;
  }

  // Copies event `e` of `from` (with its properties) into this batch.
  void append_from(const EventBatch& from, const Event& e) {
    Event out = e;
    out.id = add_text(from.text(e.id));
    out.customer = add_text(from.text(e.customer));
    out.type = add_text(from.text(e.type));
    out.prop_begin = static_cast<std::uint32_t>(props_.size());
    for (std::uint32_t i = e.prop_begin; i < e.prop_begin + e.prop_count; ++i) {
      const Prop& p = from.props()[i];
      props_.push_back(Prop{add_text(from.text(p.key)), add_text(from.text(p.text)), p.kind});
    }
    events_.push_back(out);
  }

  void clear() {
    arena_.clear();
    events_.clear();
    props_.clear();
  }

 private:
  std::string arena_;
  std::vector<Event> events_;
  std::vector<Prop> props_;
};

}  // namespace tally::core
