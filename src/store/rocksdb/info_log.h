// RocksDB's info log (the LOG file in the data directory), written by Tally instead of RocksDB.
//
// Why: RocksDB's own logger writes through a WritableFileWriter, which remembers a failed write
// and, in a build with assertions (Debian's librocksdb is one), aborts the process on the next
// line it is asked to log. On a full disk the first log line that finds no space is such a
// failure, and RocksDB logs as soon as it handles the error: a full disk killed the server with
// SIGABRT (`Assertion 'sync_without_flush_called_' failed`). This logger writes each line with
// plain stdio and drops what the disk cannot take: a lost log line is the only loss possible.
//
// The file is bounded: past `file_bytes_max` it becomes LOG.old (replacing the previous one)
// and a new LOG starts, so the two never hold more than twice that.
//
// Thread safety: RocksDB logs from any of its threads; every method may be called concurrently.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

#include <rocksdb/env.h>

namespace tally::store {

// A logger writing to `dir`/LOG (appending when it exists). Never fails: a file that cannot be
// opened or written loses its lines, and the store works on without them.
std::shared_ptr<rocksdb::Logger> make_info_log(const std::string& dir, std::size_t file_bytes_max);

}  // namespace tally::store
