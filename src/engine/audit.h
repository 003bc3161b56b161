// The audit log of operators' actions: one JSON record per action, written in the same atomic
// store write as the action itself, so an action is never stored without its record nor a
// record without its action (docs/api.md "GET /v1/admin/audit").
//
// A record is {"action": ..., "customer": ..., "actor": ..., <the action's fields>, "at": ...}:
// `actor` is the id of the API key that acted (null when the engine was called without one: the
// command line). Keys of the audit space order records by time, then by a counter that tells
// apart records of one microsecond.
#pragma once

#include <functional>
#include <string_view>

#include "common/json_writer.h"
#include "core/time.h"
#include "engine/engine_impl.h"

namespace tally::engine {

// Adds one audit record to `wb`. Commit thread only (inside an admin job's prepare).
void put_audit(Engine::Impl& d, store::WriteBatch& wb, std::string_view action,
               std::string_view customer, std::string_view actor,
               const std::function<void(common::JsonWriter&)>& fields, core::TimeUs at);

}  // namespace tally::engine
