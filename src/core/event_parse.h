// Parsing ingest bodies into an EventBatch.
//
// Accepted shapes, detected per request:
//   {"events": [EVENT, ...]}     Tally's own batch (and the seed walkthrough's)
//   [EVENT, ...]                 a JSON array, as CloudEvents batches are sent
//   EVENT                        one event object
// Each EVENT may use Tally's field names (id, customer, type, time, properties), the flat shape
// of the seed walkthrough (event_id, customer_id, event_type, timestamp, idempotency_key, and
// every other top-level field a property), or CloudEvents (id, subject, type, time, data; the
// envelope fields specversion, datacontenttype and dataschema are dropped). The dedup key is
// idempotency_key when present, else id, else event_id; an event_id that loses to an
// idempotency_key is kept as a property.
//
// A malformed document fails the whole request; a well-formed event that breaks a rule is
// reported in `errors` with its index while the valid events of the batch go on.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <tally/status.h>

#include "core/event.h"
#include "core/meter.h"
#include "core/time.h"

namespace tally::core {

struct EventError {
  std::uint32_t index = 0;  // position in the request
  std::string id;           // the event's id, when it had a readable one
  std::string code;         // MISSING_FIELD, INVALID_TYPE, INVALID_VALUE, INVALID_TIME, ...
  std::string message;
};

struct ParseOptions {
  TimeUs now_us = 0;  // receive time: the default event time
  TimeUs future_skew_us_max = 300 * kUsPerSecond;
  std::string_view default_customer;  // used when an event names no customer
  std::uint32_t events_max = 10'000;
  // When set, an event whose type is not listed is refused (UNKNOWN_EVENT_TYPE).
  const std::vector<std::string>* known_types = nullptr;
  // Meters whose value must not be negative in this request: an event that feeds one of them
  // (its type and filter match) with a number below zero is refused (NEGATIVE_VALUE).
  const std::vector<const MeterSpec*>* nonnegative = nullptr;
  // An event's "source" (CloudEvents) scopes its id: the id becomes "<source>/<id>", and the
  // source is not kept as a property. Off: "source" is a property like any other field.
  bool source_scopes_id = false;
};

struct ParsedEvents {
  EventBatch batch;                    // the valid events, in request order
  std::vector<std::uint32_t> indexes;  // request position of each valid event
  std::vector<EventError> errors;      // the invalid events
  std::uint32_t total = 0;             // events in the request

  void clear() {
    batch.clear();
    indexes.clear();
    errors.clear();
    total = 0;
  }
};

// Parses `body`. It may grow `body`'s capacity for the parser's padding; its contents stay.
// Errors: kInvalidArgument with kInvalidJsonDetails for malformed JSON or a body of the wrong
// shape (nothing is kept), kPayloadTooLarge when the request holds more than
// options.events_max events.
// Thread safety: uses a thread-local parser; safe to call from many threads at once.
Status parse_events(std::string& body, const ParseOptions& options, ParsedEvents* out);

}  // namespace tally::core
