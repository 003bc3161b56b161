// The rule of an all-or-nothing batch (IngestOptions::all_or_nothing, the Lago API's events),
// which both stores apply: the embedded commit (group_commit.cc) and the scale-out mode
// (cluster_batch.cc) each say what they know of an event's customer and stored copy; this
// decides which events are at fault and what the refusal says.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <utility>

#include "core/event_parse.h"
#include "core/ids.h"
#include "tally/types.h"

namespace tally::engine {

// What the store knows of an event's customer.
enum class WholeCustomer : std::uint8_t {
  kKnown,    // stored (or created earlier in the same commit)
  kNew,      // not stored, and would be created on first use: nothing of it is stored
  kUnknown,  // not stored, and customers are not created on first use
};

// Appends to sum->errors the faults of `parsed`'s valid events, in order: UNKNOWN_CUSTOMER for a
// kUnknown customer, else DUPLICATE for an id that came earlier in the request for the same
// customer or that `stored(i, customer)` says is stored. When there is a fault or an invalid
// event, sets sum->rejected to every event of the request and returns true: nothing of it may
// be stored. `customer_of(i)` is the WholeCustomer of valid event i; `stored(i, kind)` is asked
// only for kKnown and kNew customers. sum->errors should hold the invalid events already.
template <class CustomerOf, class Stored>
bool refuse_whole_batch(const core::ParsedEvents& parsed, CustomerOf&& customer_of, Stored&& stored,
                        IngestSummary* sum) {
  const core::EventBatch& b = parsed.batch;
  std::set<std::pair<std::string_view, std::string_view>> in_request;  // customer, id
  bool faulty = !parsed.errors.empty();
  for (std::size_t i = 0; i < b.size(); ++i) {
    const std::string_view customer = b.text(b.events()[i].customer);
    const std::string_view id = b.text(b.events()[i].id);
    const WholeCustomer kind = customer_of(i);
    if (kind == WholeCustomer::kUnknown) {
      sum->errors.push_back(EventError{parsed.indexes[i], std::string(id), "UNKNOWN_CUSTOMER",
                                       core::customer_not_found(customer).message()});
      faulty = true;
      continue;
    }
    if (!in_request.emplace(customer, id).second || stored(i, kind)) {
      sum->errors.push_back(EventError{parsed.indexes[i], std::string(id), "DUPLICATE",
                                       "event '" + std::string(id) + "' of customer '" +
                                           std::string(customer) + "' is already stored"});
      faulty = true;
    }
  }
  if (faulty) {
    sum->rejected = parsed.total;
  }
  return faulty;
}

}  // namespace tally::engine
