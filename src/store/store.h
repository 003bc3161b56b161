// The store: the one interface every backend hides behind.
//
// A store is a set of ordered key spaces of byte strings with atomic multi-key writes. The
// engine encodes its own keys and values (src/engine/codec.h); a backend only has to keep
// bytes, in order, durably. A WriteBatch is applied all-or-nothing; with sync = true, write()
// returns only after the batch is on stable storage (fsync), which is what lets the engine
// answer 202 only for durable events.
//
// Thread safety: write() may be called from one thread at a time (the engine's committer);
// get() and scan() may run concurrently with each other and with write().
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <tally/status.h>

namespace tally::store {

// Key spaces. Values are persisted: never renumber.
enum class Space : std::uint8_t {
  kMeta = 0,        // schema version, sequence numbers, meter fingerprints
  kEvents = 1,      // raw event blocks
  kDedup = 2,       // per-block lists of event-id hashes
  kAggregates = 3,  // meter aggregates per customer, window and group
  kUniques = 4,     // distinct values for unique_count meters
  kCustomers = 5,   // customer records
  kKeys = 6,        // API key records
  kAudit = 7,       // audit log
  kLedger = 8,      // wallet transactions, per customer in order
  kArchive = 9,     // what archiving removed: archived ids, aggregate baselines, manifests
  kCount = 10,
};

class WriteBatch {
 public:
  struct Op {
    Space space;
    bool is_delete;
    std::string key;
    std::string value;
  };

  void put(Space space, std::string key, std::string value) {
    bytes_ += key.size() + value.size();
    ops_.push_back(Op{space, false, std::move(key), std::move(value)});
  }

  void del(Space space, std::string key) {
    bytes_ += key.size();
    ops_.push_back(Op{space, true, std::move(key), {}});
  }

  const std::vector<Op>& ops() const { return ops_; }

  bool empty() const { return ops_.empty(); }

  std::size_t bytes() const { return bytes_; }

  void clear() {
    ops_.clear();
    bytes_ = 0;
  }

 private:
  std::vector<Op> ops_;
  std::size_t bytes_ = 0;
};

// The filesystem under a store's files, as the engine's disk reserve sees it.
struct DiskSpace {
  std::uint64_t free_bytes = 0;   // available to this process (statvfs f_bavail)
  std::uint64_t total_bytes = 0;  // the filesystem's size
};

// Called per key in order; return false to stop the scan early.
using ScanFn = std::function<bool(std::string_view key, std::string_view value)>;

class Store {
 public:
  virtual ~Store() = default;

  // Applies every op of `batch` atomically. With sync, returns after the data is durable.
  // Errors: kIOError (disk), kUnavailable (read-only store), kInsufficientStorage (no space
  // left: nothing of the batch is applied, and the store refuses every later write, without
  // touching its files, until resume() succeeds).
  virtual Status write(const WriteBatch& batch, bool sync) = 0;

  // The value of `key`, or nullopt when absent. Errors: kIOError.
  virtual Result<std::optional<std::string>> get(Space space, std::string_view key) const = 0;

  // Visits keys in [begin, end) in ascending byte order; an empty `end` means "to the end of
  // the space". Errors: kIOError.
  virtual Status scan(Space space, std::string_view begin, std::string_view end,
                      const ScanFn& fn) const = 0;

  // scan() of data read once and not again soon (loading at open, `tally verify`): the read
  // cache is left to the data read often. Errors: kIOError.
  virtual Status scan_once(Space space, std::string_view begin, std::string_view end,
                           const ScanFn& fn) const {
    return scan(space, begin, end, fn);
  }

  // Approximate bytes on disk (0 for memory stores).
  virtual std::uint64_t size_bytes() const = 0;

  // A short name for logs and /ready: "rocksdb", "memory".
  virtual std::string_view name() const = 0;

  // The filesystem holding the store's files; nullopt for a store without one (memory). One
  // statvfs, cheap enough to call before every commit. Errors: kIOError.
  virtual Result<std::optional<DiskSpace>> disk_space() const { return std::optional<DiskSpace>(); }

  // Makes the store writable again after a write failed with kInsufficientStorage, once space
  // is back (RocksDB: opens the database again, replaying its log, or DB::Resume() after a
  // background error); reads go on meanwhile. OK at once when the store is writable.
  // Errors: kInsufficientStorage (still no room), kIOError, kUnavailable. Called by the
  // writer's thread only, like write().
  virtual Status resume() { return Status(); }
};

// An in-memory store for tests and simulations. Never durable; write() ignores `sync`.
std::unique_ptr<Store> make_memory_store();

struct RocksOptions {
  std::string path;               // the data directory
  bool read_only = false;         // open a live directory without taking its lock
  bool create_if_missing = true;  // ignored when read_only
  // One LRU block cache shared by every space.
  std::uint64_t block_cache_bytes = 64ull << 20;
};

// Opens (or creates) a RocksDB store. Errors: kIOError naming the path, kUnavailable when
// another process holds the directory's lock ("data directory is in use").
// Also: kNotFound when `path` holds no database and read_only or !create_if_missing;
// kCorruption when RocksDB finds damaged files; kInvalidArgument for an empty path.
// A read-only store sees what was committed when it was opened, not later writes; its write()
// returns kUnavailable. The lock also holds within one process: a second read-write open of the
// same directory gets kUnavailable while the first is alive.
Result<std::unique_ptr<Store>> open_rocksdb_store(const RocksOptions& options);

}  // namespace tally::store
