// The disk reserve: writes are refused, before the store fails, while the data directory's
// filesystem is nearly full, and after a write that found it full until space is back.
//
// Why: a store that runs out of space mid-write leaves its write-ahead log in an error state;
// RocksDB then refuses writes until DB::Resume(), and its debug assertions (on in Debian's
// librocksdb) abort the process if anything reaches that log file again. So the engine keeps a
// reserve of free space for the store's own flushes and compactions and refuses what would
// write into it, with a status the API answers as 507.
//
// How: the commit thread, the only writer, asks admit() before every store write (one statvfs:
// microseconds next to the fsync that follows) and once a second when idle, so a refusal is
// lifted within a second of space coming back even when nothing is being written. admit()
// refuses while free space is below the reserve; when a write failed for space (written()), it
// also refuses until kResumeFreeBytesMin more than the reserve is free and the store's resume()
// succeeds, so nothing reaches the store in between. Request threads read refusing() (an atomic) to
// answer 507 without queuing work that cannot be committed.
//
// Thread safety: admit() and written() are for the writer's thread (the commit thread, or the
// opening thread before it starts); every other method may be called from any thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>

#include <tally/status.h>

#include "config/config.h"
#include "store/store.h"

namespace tally::engine {

// The reserve on a filesystem of `total_bytes`: the smaller of disk_reserve_bytes and
// disk_reserve_percent of the size, so a small filesystem keeps a reserve that fits it.
// 0 when either is 0 (no reserve).
std::uint64_t disk_reserve_for(const config::StorageConfig& storage, std::uint64_t total_bytes);

// What the last look at the filesystem found, for /metrics and /ready.
struct DiskState {
  bool known = false;  // false: not sampled yet, or a store without a disk (memory)
  std::uint64_t free_bytes = 0;
  std::uint64_t total_bytes = 0;
  std::uint64_t reserve_bytes = 0;
  bool refusing = false;  // writes are refused now
};

class DiskGuard {
 public:
  // After a write found the disk full, writing resumes only once this much is free beyond the
  // reserve: a disk that is still full is not tried again every second (and with no reserve,
  // "space is back" needs some meaning).
  static constexpr std::uint64_t kResumeFreeBytesMin = 8ull << 20;

  // Writer's thread, before every store write: looks at the store's filesystem and, when writes
  // were refused and space is back, resumes the store. Returns OK when the write may go ahead;
  // else why not (kInsufficientStorage, or the store's resume() error), which is also what
  // refusal() answers until a later admit() succeeds. A filesystem whose free space cannot be
  // read does not refuse: the write itself will tell.
  Status admit(store::Store& store, const config::StorageConfig& storage);

  // Writer's thread, after a store write: a write that failed for lack of space refuses every
  // write until admit() finds space above the reserve and the store resumes.
  void written(const Status& status);

  // Whether writes are refused now. Cheap (an atomic): request threads ask it first.
  bool refusing() const { return refusing_.load(std::memory_order_acquire); }

  // Why writes are refused (kInsufficientStorage with the free space and reserve, or a resume
  // error); OK when they are not.
  Status refusal() const;
  DiskState state() const;

 private:
  void refuse(Status why);

  // Writer's thread only.
  bool write_failed_ = false;  // a write found no space: the store must resume first

  std::atomic<bool> refusing_{false};
  std::atomic<bool> known_{false};
  std::atomic<std::uint64_t> free_bytes_{0};
  std::atomic<std::uint64_t> total_bytes_{0};
  std::atomic<std::uint64_t> reserve_bytes_{0};
  mutable std::mutex mutex_;  // guards why_
  Status why_;
};

}  // namespace tally::engine
