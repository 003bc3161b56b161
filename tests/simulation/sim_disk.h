// A simulated disk for the deterministic simulation: an in-memory image of every key space
// that survives the "process", with the faults a real disk and RocksDB can show, drawn from a
// seeded PRNG.
//
// What RocksDB guarantees, and so what is modelled (docs/operations.md, "Simulation"):
//  - A WriteBatch is atomic: after a crash it is present whole or not at all, never in part.
//  - The write-ahead log is replayed in order up to its first damaged record, so what survives
//    a crash is a prefix of the writes: every write acknowledged with sync = true, then some
//    (possibly none, possibly all) of the sync = false writes made after the last sync.
//  - A write can fail. A clean failure (kWriteFail) applies nothing and the store goes on. A
//    write the process dies in (kWriteCrash), or whose fsync fails, answers an error but may
//    still be found in the log after the restart: it is applied to the surviving image or not
//    (a coin flip), and the store refuses every later write until the crash is handled.
// The default faults are those a correct engine must survive. kLieSync (a sync = true write
// acknowledged but lost at the next crash, as a disk that ignores flushes) breaks the store's
// contract, and exists to show that the simulation notices acknowledged data being lost.
//
// The engine sees the disk through store() (a store::Store). crash() kills the "process":
// every later write is refused, nothing more becomes durable. recover() then computes what
// survived, and the next store() sees exactly that. The PRNG is consumed only by writes on a
// live disk and by recover(), so a workload whose writes come in a deterministic order replays
// exactly from its seed.
//
// Thread safety: every method may be called from any thread; a write blocked by hold_writes()
// waits until release_writes() or crash().
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "store/store.h"

namespace tally::sim {

// splitmix64: small, fast, and the same sequence on every platform and standard library.
class Rng {
 public:
  // The seed is mixed first: splitmix64 steps its state by a constant, so seeds s and s + 1
  // would otherwise give the same sequence shifted by one.
  explicit Rng(std::uint64_t seed) : state_(seed) { state_ = next(); }

  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }

  // Uniform in [0, n); 0 when n is 0.
  std::uint64_t below(std::uint64_t n) { return n == 0 ? 0 : next() % n; }

  // Uniform in [lo, hi].
  std::int64_t range(std::int64_t lo, std::int64_t hi) {
    return lo + static_cast<std::int64_t>(below(static_cast<std::uint64_t>(hi - lo) + 1));
  }

  // True with probability per_million / 1,000,000.
  bool chance(std::uint32_t per_million) { return below(1'000'000) < per_million; }

 private:
  std::uint64_t state_;
};

// Fault rates, in parts per million of writes.
struct DiskFaults {
  std::uint32_t write_fail_ppm = 0;   // the write fails cleanly: nothing applied, store goes on
  std::uint32_t write_crash_ppm = 0;  // the process dies in the write: applied whole or not
  bool lose_unsynced = true;          // at a crash, sync = false writes after the last sync
                                      // survive only as a prefix (possibly empty)
  std::uint32_t lie_sync_ppm = 0;     // opt-in, breaks the contract: a sync write not synced
};

struct DiskCounters {
  std::uint64_t writes = 0;  // applied
  std::uint64_t failed = 0;  // kWriteFail injected
  std::uint64_t crashed_in_write = 0;
  std::uint64_t torn_applied = 0;  // of those, present after the crash
  std::uint64_t refused = 0;       // writes after a crash
  std::uint64_t crashes = 0;
  std::uint64_t unsynced_lost = 0;  // sync = false (or lied-about) writes lost at crashes
  std::uint64_t lied_syncs = 0;
};

class Disk {
 public:
  Disk(std::uint64_t seed, DiskFaults faults);
  ~Disk();
  Disk(const Disk&) = delete;
  Disk& operator=(const Disk&) = delete;

  // A store on the surviving image. REQUIRES: the disk is not crashed (recover() first). The
  // store reads and writes this disk until the next crash(); after it, it refuses writes.
  std::unique_ptr<store::Store> store();

  // The process dies now: every write from now on is refused (also one blocked by
  // hold_writes()). Idempotent.
  void crash();
  // Whether the process is dead (crash(), or a kWriteCrash write).
  bool crashed() const;
  // Computes what survived the crash. REQUIRES: crashed() and no store in use.
  void recover();

  // While held, writes wait (as a disk that is slow to answer); crash() or release ends it.
  void hold_writes();
  void release_writes();

  // Turns injected faults off (or on again), e.g. while a test reads the image back.
  void set_faults_enabled(bool on);

  DiskCounters counters() const;

 private:
  class DiskStore;
  friend class DiskStore;
  using Map = std::map<std::string, std::string, std::less<>>;

  // What a write replaced, so it can be taken back: (space, key, previous value or absent).
  struct Undo {
    store::Space space;
    std::string key;
    std::optional<std::string> previous;
  };

  Status write(std::uint64_t generation, const store::WriteBatch& batch, bool sync);
  Result<std::optional<std::string>> get(store::Space space, std::string_view key) const;
  Status scan(store::Space space, std::string_view begin, std::string_view end,
              const store::ScanFn& fn) const;
  // Applies `batch` to the live image; its undo records go to `undo` when given.
  void apply(const store::WriteBatch& batch, std::vector<Undo>* undo);

  mutable std::mutex mu_;
  std::condition_variable held_cv_;
  Rng rng_;            // guarded by mu_
  DiskFaults faults_;  // guarded by mu_
  bool faults_enabled_ = true;
  bool crashed_ = false;
  bool held_ = false;
  std::uint64_t generation_ = 0;  // bumped by crash(): older stores refuse writes
  std::array<Map, static_cast<std::size_t>(store::Space::kCount)> live_;
  // Writes not yet durable, oldest first: each one's undo records.
  std::vector<std::vector<Undo>> unsynced_;
  // A write the process died in that made it to the log: applied at recover().
  std::optional<store::WriteBatch> torn_;
  DiskCounters counters_;
};

}  // namespace tally::sim
