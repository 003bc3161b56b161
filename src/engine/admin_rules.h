// The rules of customers and keys that both modes follow: the embedded store's commit path
// (admin.cc) and the scale-out mode (cluster_mode.cc) store what these return.
#pragma once

#include <utility>

#include "config/config.h"
#include "engine/codec.h"
#include "tally/status.h"
#include "tally/types.h"

namespace tally::engine {

// A new customer from a request: defaults filled in (name = id, zone UTC, metadata {}), fields
// checked, a named plan configured, created and updated at `now`. Errors: kInvalidArgument.
Result<Customer> new_customer(const Customer& in, const config::Config& config, core::TimeUs now);

// `c` with `patch` applied, checked, updated at `now`. Errors: kInvalidArgument.
Result<Customer> patched_customer(Customer c, const CustomerPatch& patch,
                                  const config::Config& config, core::TimeUs now);

// `record` with the reset of `meter`'s periods at `now` (replacing an earlier reset of it),
// updated at `now`.
Customer with_reset(const Customer& record, const std::string& meter, core::TimeUs now);

// The latest reset of `meter`'s periods in `c`'s record; 0 when none.
core::TimeUs reset_at(const Customer& c, std::string_view meter);

// A new key for `request`: its secret (shown once), id, prefix, default scopes, and the record
// to store (the secret's SHA-256, never the secret). Errors: kInvalidArgument.
Result<std::pair<NewApiKey, KeyRecord>> new_key(const NewApiKeyRequest& request, core::TimeUs now);

}  // namespace tally::engine
