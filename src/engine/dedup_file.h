// The dedup index's table in a file, `<data_dir>/dedup.checkpoint`, so that a restart reads one
// block instead of scanning every dedup record of the store and inserting each entry again (on
// 10 M events, the larger half of the open).
//
// Written at a clean stop, after the commit thread has stopped (nothing changes the index then),
// at S = the next sequence number: the table holds every entry numbered below S. Read at open
// when the dedup window is forever (the default): with a window, the open must leave out the
// entries received before it, which the table does not record, so it scans the records as
// before. The file is used when it is whole (its checksum), of this layout and byte order, and
// written at an S the store has reached; then the dedup records from dedup_key(S) on (the
// commits after it: a crash after a restart that read the file) are inserted as the scan would.
// So a duplicate is caught after a restart exactly as before; a file that cannot be used is
// removed and the records are scanned instead.
//
// Format: a 64-byte header of eight 64-bit words in the machine's byte order: "TALLYDDX", the
// version (1), 0x0102030405060708 (a file of the other byte order does not read as one), S, the
// entries, the slots (a power of two), the checksum of the header's words before it and of every
// word of the table, and 0; then the slots (DedupIndex::Slot: hash, packed location), empty
// ones included, exactly as the table holds them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include <tally/status.h>

#include "engine/dedup_index.h"

namespace tally::engine {

// The file's path in a data directory.
std::string dedup_file_path(const std::string& data_dir);

// Writes `index`'s table, which holds every entry numbered below `seq`, through a temporary
// file, fsynced, then renamed over the old one. Errors: kIOError naming the file.
Status write_dedup_file(const std::string& path, const DedupIndex& index, std::uint64_t seq);

// The S of the file at `path` when its header is this version's (the table is not read), else
// nullopt.
std::optional<std::uint64_t> dedup_file_seq(const std::string& path);

// Reads the file into the empty `index` when it can be used for a store whose next sequence
// number is `next_seq` and next customer number `next_customer` (every entry below both): the
// file's S. Nullopt, the index left empty, when there is no file or it cannot be used (the
// reason in *why, empty when there is none).
std::optional<std::uint64_t> read_dedup_file(const std::string& path, std::uint64_t next_seq,
                                             std::uint32_t next_customer, DedupIndex* index,
                                             std::string* why);

}  // namespace tally::engine
