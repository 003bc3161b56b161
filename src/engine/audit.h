// The audit log of operators' actions: one JSON record per action. The embedded store writes a
// record in the same atomic store write as the action itself, so an action is never stored
// without its record nor a record without its action (docs/api.md "GET /v1/admin/audit"); the
// scale-out mode writes the same records into PostgreSQL (docs/cluster.md, "The audit log").
//
// A record is {"action": ..., "customer": ..., "actor": ..., <the action's fields>, "at": ...}:
// `actor` is the id of the API key that acted (null when the engine was called without one: the
// command line). Keys of the audit space order records by time, then by a counter that tells
// apart records of one microsecond.
//
// The records of each action are built here once, for both modes: the modes differ only in
// where they store them.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/json_writer.h"
#include "core/time.h"
#include "tally/engine.h"
#include "tally/types.h"

namespace tally::store {
class WriteBatch;
}  // namespace tally::store

namespace tally::engine {

// The record of `action` on `customer` ("" = none) by `actor` ("" = none) at `at`, with the
// action's own fields written by `fields` between the actor and the time.
std::string audit_record(std::string_view action, std::string_view customer, std::string_view actor,
                         const std::function<void(common::JsonWriter&)>& fields, core::TimeUs at);

// The records of a customer update from `before` to `after` by `patch`: one for a plan change,
// one for a status change (suspend, activate), one naming the other fields the patch set.
// None for a patch that changes nothing.
std::vector<std::string> customer_update_records(const Customer& before, const Customer& after,
                                                 const CustomerPatch& patch, std::string_view actor,
                                                 core::TimeUs at);

// The record of a key created (`info`: its id, name, customer and creation time).
std::string key_create_record(const ApiKeyInfo& info, std::string_view actor);

// The record of key `key` (of `customer`, "" for an admin key) revoked at `at`.
std::string key_revoke_record(std::string_view key, std::string_view customer,
                              std::string_view actor, core::TimeUs at);

// The record of `count` limit overrides set on `customer` (no actor yet: docs/api.md).
std::string overrides_record(std::string_view customer, std::size_t count, core::TimeUs at);

// The record of a reset of `meter`'s periods for `customer`.
std::string reset_record(std::string_view customer, std::string_view meter, std::string_view actor,
                         core::TimeUs at);

// The record of wallet transaction `t` of `customer`.
std::string wallet_record(std::string_view customer, const LedgerTransaction& t,
                          std::string_view actor, core::TimeUs at);

// Adds `record` (made at `at`) to `wb`, keyed after every record before it. Commit thread only
// (inside an admin job's prepare).
void put_audit(Engine::Impl& d, store::WriteBatch& wb, std::string record, core::TimeUs at);

}  // namespace tally::engine
