// The audit log of the scale-out mode, in PostgreSQL (docs/cluster.md, "The audit log"): one
// row per record on shard 0, the record the JSON text the embedded store keeps (engine/audit.h),
// ordered by its time, then by insertion (the embedded store's order: by time, then by a
// counter).
//
// Thread safety: the functions use the given connection only (see pg/connection.h).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "pg/connection.h"
#include "tally/status.h"
#include "tally/types.h"

namespace tally::cluster {

// Adds `record`, made at `at_us`, after every record stored before it (in the transaction open
// on `conn`, if any).
Status insert_audit(pg::Connection& conn, TimeUs at_us, std::string_view record);

// The newest `limit` records, oldest first.
Result<std::vector<std::string>> newest_audit(pg::Connection& conn, std::size_t limit);

}  // namespace tally::cluster
