// The RocksDB backend: Tally's durable store.
//
// Design: one column family per Space, so each key space gets options that fit how the engine
// uses it (a large ZSTD-compressed memtable for the event log, bloom filters where the engine
// does point lookups) and is flushed and compacted on its own. All column families share one LRU
// block cache and one memtable budget, so memory stays bounded whatever the mix of spaces. The
// tuning targets a high write rate on a small (2-core) machine: two background jobs, large
// memtables for the hot space, and incremental syncing of SST and WAL files so that writeback
// never arrives as one large stall.
//
// Guarantees:
//  - write() maps to exactly one rocksdb::WriteBatch, so it is atomic across spaces; with
//    sync = true it returns after the WAL has been fsynced, which makes it the engine's one
//    fsync per group commit. The WAL is always on; after a crash RocksDB recovers every write
//    that returned (kPointInTimeRecovery drops only a torn tail that was never acknowledged).
//  - scan() iterates over a snapshot taken when it starts: a concurrent write() is seen
//    entirely or not at all.
//  - A read-only store does not take the directory's LOCK, so `tally verify` and the read-only
//    CLI commands can open the directory of a live server. It sees what was committed when it
//    was opened and nothing later; write() returns kUnavailable.
//  - RocksDB reports errors as rocksdb::Status (it does not throw); this file is the one place
//    they become tally::Status.
//  - A full disk never aborts the process. Debian's librocksdb keeps its debug assertions, and
//    two of them fire after a write that found no space: RocksDB's own info logger asserts on
//    the line after one it could not write (so the LOG file is written by info_log.cc instead),
//    and RocksDB 7.8's Resume() may keep the WAL file that failed, which asserts when written
//    again. So a write that finds no space answers kInsufficientStorage and every later write
//    is refused without reaching RocksDB until resume() has opened the database again, which
//    always starts a new WAL file. RocksDB's own recovery from a full disk is turned off: it
//    waits for 64 MiB of free space, and the engine's disk reserve decides when to resume.
#include <algorithm>
#include <array>
#include <cctype>
#include <cstdarg>
#include <cstddef>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <rocksdb/cache.h>
#include <rocksdb/convenience.h>
#include <rocksdb/db.h>
#include <rocksdb/env.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/listener.h>
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include "store/rocksdb/info_log.h"
#include "store/store.h"

namespace tally::store {
namespace {

constexpr std::size_t kSpaceCount = static_cast<std::size_t>(Space::kCount);

// Column family names, indexed by Space. Persisted in the MANIFEST: never rename. kMeta lives in
// RocksDB's default column family, which always exists.
constexpr std::array<std::string_view, kSpaceCount> kColumnFamilyNames = {
    "default",   "events", "dedup", "aggregates", "uniques",
    "customers", "keys",   "audit", "ledger",     "archive",
};
static_assert(kColumnFamilyNames[0] == "default", "kMeta must map to RocksDB's default family");

// Memtable sizes. Events take most of the write volume, so they get the large memtable (fewer,
// larger L0 files and less write amplification); a third buffer lets writes continue while two
// are flushing. The other spaces are small and share the rest of the budget.
constexpr std::size_t kEventsWriteBufferBytes = 64ull << 20;
constexpr int kEventsWriteBuffersMax = 3;
constexpr std::size_t kOtherWriteBufferBytes = 16ull << 20;
// Upper bound on all memtables together; past it RocksDB flushes early instead of growing.
constexpr std::size_t kWriteBufferTotalBytesMax = 256ull << 20;
// A WAL file can only be deleted once every family with data in it has flushed. Rarely
// written families (keys, customers) would otherwise pin WAL files forever; past this size
// RocksDB flushes them so the log stays bounded.
constexpr std::uint64_t kWalTotalBytesMax = 512ull << 20;
// Sync written data every this many bytes, in the background, so the kernel never has a large
// backlog of dirty pages to write at once.
constexpr std::uint64_t kBytesPerSync = 1ull << 20;
// Two cores: one flush and one compaction at a time is all the machine can usefully run.
constexpr int kBackgroundJobsMax = 2;
// Bound on RocksDB's info log (the LOG file in the data directory, and LOG.old before it).
constexpr std::size_t kInfoLogFileBytesMax = 16ull << 20;
// Event blocks are read by range; larger blocks compress better and scans read fewer of them.
constexpr std::size_t kEventsBlockBytes = 16ull << 10;
constexpr double kBloomBitsPerKey = 10.0;  // about 1% false positives

std::string_view space_name(Space space) {
  return kColumnFamilyNames[static_cast<std::size_t>(space)];
}

bool valid_space(Space space) {
  return static_cast<std::size_t>(space) < kSpaceCount;
}

std::optional<Space> space_for_family(std::string_view family) {
  for (std::size_t i = 0; i < kSpaceCount; ++i) {
    if (kColumnFamilyNames[i] == family) {
      return static_cast<Space>(i);
    }
  }
  return std::nullopt;
}

bool contains_ignoring_case(std::string_view haystack, std::string_view needle) {
  auto it = std::search(haystack.begin(), haystack.end(), needle.begin(), needle.end(),
                        [](char a, char b) {
                          return std::tolower(static_cast<unsigned char>(a)) ==
                                 std::tolower(static_cast<unsigned char>(b));
                        });
  return it != haystack.end();
}

// RocksDB has no status code for "the LOCK file is held": it is an IOError whose message says
// "While lock file: <dir>/LOCK: Resource temporarily unavailable" (another process) or "lock
// hold by current process" (this one). Other IOErrors that mention the LOCK file, such as
// permission denied when opening it, are not matched and stay kIOError.
bool is_lock_held(const rocksdb::Status& status) {
  if (!status.IsIOError()) {
    return false;
  }
  const std::string text = status.ToString();
  return contains_ignoring_case(text, "while lock file") ||
         contains_ignoring_case(text, "lock hold by");
}

Status from_rocks(const rocksdb::Status& status, const std::string& path, std::string_view what) {
  if (status.ok()) {
    return Status();
  }
  if (is_lock_held(status)) {
    return Status::unavailable("data directory " + path + " is in use by another process");
  }
  std::string message = std::string(what) + " " + path + ": " + status.ToString();
  if (status.IsNoSpace()) {
    return Status::insufficient_storage(std::move(message) +
                                        " (the filesystem is full: free space on it)");
  }
  if (status.IsCorruption()) {
    return Status::corruption(std::move(message));
  }
  return Status::io_error(std::move(message));
}

// The first of `preferred` that this build of RocksDB supports, else none. Debian's librocksdb
// is built with all of them, but a different build must still open.
rocksdb::CompressionType pick_compression(
    std::initializer_list<rocksdb::CompressionType> preferred) {
  const std::vector<rocksdb::CompressionType> supported = rocksdb::GetSupportedCompressions();
  for (rocksdb::CompressionType type : preferred) {
    if (std::find(supported.begin(), supported.end(), type) != supported.end()) {
      return type;
    }
  }
  return rocksdb::kNoCompression;
}

// Drops RocksDB's info log. A read-only store uses it so that opening a live directory never
// rotates or writes the server's LOG file.
class DiscardLogger final : public rocksdb::Logger {
 public:
  void Logv(const char* /*format*/, va_list /*ap*/) override {}

  void Logv(const rocksdb::InfoLogLevel /*level*/, const char* /*format*/,
            va_list /*ap*/) override {}
};

// Keeps RocksDB from recovering by itself from a full disk. Its own recovery (through the
// SstFileManager) waits for a free write buffer's worth of space (64 MiB here) and, while it
// waits, makes DB::Resume() answer Busy; the engine instead watches free space against its own
// reserve and calls resume() when space is back, so one party decides when writing starts again.
class NoAutoRecoveryFromNoSpace final : public rocksdb::EventListener {
 public:
  void OnErrorRecoveryBegin(rocksdb::BackgroundErrorReason /*reason*/, rocksdb::Status bg_error,
                            bool* auto_recovery) override {
    if (bg_error.IsNoSpace()) {
      *auto_recovery = false;
    }
    bg_error.PermitUncheckedError();
  }
};

rocksdb::DBOptions db_options(const RocksOptions& options) {
  rocksdb::DBOptions db;
  db.create_if_missing = options.create_if_missing;
  db.create_missing_column_families = true;
  db.max_background_jobs = kBackgroundJobsMax;
  db.bytes_per_sync = kBytesPerSync;
  db.wal_bytes_per_sync = kBytesPerSync;
  db.db_write_buffer_size = kWriteBufferTotalBytesMax;
  db.max_total_wal_size = kWalTotalBytesMax;
  if (options.read_only) {
    db.info_log = std::make_shared<DiscardLogger>();
  } else {
    // Not RocksDB's own logger: on a full disk it aborts the process (info_log.h).
    db.info_log = make_info_log(options.path, kInfoLogFileBytesMax);
    db.listeners.push_back(std::make_shared<NoAutoRecoveryFromNoSpace>());
  }
  return db;
}

rocksdb::ColumnFamilyOptions family_options(Space space,
                                            const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions cf;
  // Bounded space amplification: level sizes follow the data instead of fixed targets.
  cf.level_compaction_dynamic_level_bytes = true;

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  // Index and filter blocks count against the shared cache, so it really is the bound on read
  // memory; L0's are pinned because every read consults them.
  table.cache_index_and_filter_blocks = true;
  table.pin_l0_filter_and_index_blocks_in_cache = true;

  switch (space) {
    case Space::kEvents:
      cf.write_buffer_size = kEventsWriteBufferBytes;
      cf.max_write_buffer_number = kEventsWriteBuffersMax;
      cf.compression =
          pick_compression({rocksdb::kZSTD, rocksdb::kLZ4Compression, rocksdb::kSnappyCompression});
      table.block_size = kEventsBlockBytes;
      break;
    case Space::kDedup:
    case Space::kCustomers:
    case Space::kKeys:
      // Point lookups, many of them for keys that are absent (a new event id, an unknown
      // key): a bloom filter answers those without touching a data block.
      cf.write_buffer_size = kOtherWriteBufferBytes;
      cf.compression = pick_compression({rocksdb::kLZ4Compression});
      table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(kBloomBitsPerKey));
      break;
    case Space::kMeta:
    case Space::kAggregates:
    case Space::kUniques:
    case Space::kAudit:
    case Space::kLedger:
    case Space::kArchive:
    case Space::kCount:
      cf.write_buffer_size = kOtherWriteBufferBytes;
      cf.compression = pick_compression({rocksdb::kLZ4Compression});
      break;
  }
  cf.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return cf;
}

// An open database: the DB and its column family handles.
struct OpenDb {
  std::unique_ptr<rocksdb::DB> db;
  std::vector<rocksdb::ColumnFamilyHandle*> all_handles;  // owned; destroyed by close_db
  // all_handles indexed by Space; an entry is null when a read-only open found a directory
  // without that family.
  std::array<rocksdb::ColumnFamilyHandle*, kSpaceCount> handles{};
};

void close_db(OpenDb& open) {
  if (open.db == nullptr) {
    return;
  }
  for (rocksdb::ColumnFamilyHandle* handle : open.all_handles) {
    open.db->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
  }
  // No flush: every acknowledged write is in the WAL. A failing Close (as after a write that
  // found no space) has nobody to tell and loses nothing that was acknowledged.
  open.db->Close().PermitUncheckedError();
  open = OpenDb();
}

// Opens the database at options.path with Tally's families (see open_rocksdb_store).
Result<OpenDb> open_db(const RocksOptions& options, const std::shared_ptr<rocksdb::Cache>& cache) {
  const std::string& path = options.path;
  // CURRENT names the live MANIFEST; a directory without it holds no database.
  std::error_code error;
  const bool exists = std::filesystem::exists(std::filesystem::path(path) / "CURRENT", error);
  if (error) {
    return Status::io_error("cannot inspect data directory " + path + ": " + error.message());
  }
  if (!exists && (options.read_only || !options.create_if_missing)) {
    return Status::not_found("no Tally data directory at " + path);
  }
  if (!options.read_only) {
    // The info log opens its file in the directory before RocksDB would create it.
    std::filesystem::create_directories(path, error);
    if (error) {
      return Status::io_error("cannot create data directory " + path + ": " + error.message());
    }
  }
  const rocksdb::DBOptions db = db_options(options);

  // RocksDB requires every existing family to be opened (read-write) and the caller to name
  // them, so start from what the directory has, then add the ones Tally needs.
  std::vector<std::string> family_names;
  if (exists) {
    TALLY_TRY(from_rocks(rocksdb::DB::ListColumnFamilies(db, path, &family_names), path,
                         "cannot list column families of"));
  }
  if (!options.read_only) {
    for (std::string_view name : kColumnFamilyNames) {
      if (std::find(family_names.begin(), family_names.end(), name) == family_names.end()) {
        family_names.emplace_back(name);
      }
    }
  }

  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.reserve(family_names.size());
  for (const std::string& name : family_names) {
    const std::optional<Space> space = space_for_family(name);
    // A family Tally does not know (left by a newer version) is opened with defaults, only
    // because RocksDB insists; nothing reads or writes it.
    descriptors.emplace_back(
        name, space ? family_options(*space, cache) : rocksdb::ColumnFamilyOptions());
  }

  OpenDb open;
  rocksdb::DB* raw_db = nullptr;
  const rocksdb::Status status =
      options.read_only
          ? rocksdb::DB::OpenForReadOnly(db, path, descriptors, &open.all_handles, &raw_db)
          : rocksdb::DB::Open(db, path, descriptors, &open.all_handles, &raw_db);
  if (!status.ok()) {
    return from_rocks(status, path, "cannot open data directory");
  }
  open.db.reset(raw_db);
  for (rocksdb::ColumnFamilyHandle* handle : open.all_handles) {
    if (const std::optional<Space> space = space_for_family(handle->GetName())) {
      open.handles[static_cast<std::size_t>(*space)] = handle;
    }
  }
  return open;
}

class RocksStore final : public Store {
 public:
  RocksStore(RocksOptions options, std::shared_ptr<rocksdb::Cache> cache, OpenDb open)
      : options_(std::move(options)), cache_(std::move(cache)), open_(std::move(open)) {}

  RocksStore(const RocksStore&) = delete;
  RocksStore& operator=(const RocksStore&) = delete;

  ~RocksStore() override { close_db(open_); }

  Status write(const WriteBatch& batch, bool sync) override {
    if (options_.read_only) {
      return Status::unavailable("store " + options_.path + " is open read-only");
    }
    std::shared_lock lock(mutex_);
    if (needs_reopen_ || open_.db == nullptr) {
      // After a write that found no space, RocksDB's current WAL file may hold an error that
      // RocksDB 7.8 (built with assertions, as Debian's is) aborts on if the file is written
      // again: nothing may reach it until resume() has moved to a new one.
      return Status::insufficient_storage("cannot write to " + options_.path +
                                          ": a write found the filesystem full; writes wait "
                                          "for free space");
    }
    rocksdb::WriteBatch rocks_batch(batch.bytes() + batch.ops().size() * kOpOverheadBytes);
    for (const WriteBatch::Op& op : batch.ops()) {
      if (!valid_space(op.space)) {
        return Status::invalid_argument("write batch names an unknown key space");
      }
      rocksdb::ColumnFamilyHandle* handle = open_.handles[static_cast<std::size_t>(op.space)];
      rocksdb::Status status = op.is_delete ? rocks_batch.Delete(handle, op.key)
                                            : rocks_batch.Put(handle, op.key, op.value);
      if (!status.ok()) {
        return from_rocks(status, options_.path, "cannot build a write batch for");
      }
    }
    rocksdb::WriteOptions write_options;
    write_options.sync = sync;
    Status written =
        from_rocks(open_.db->Write(write_options, &rocks_batch), options_.path, "cannot write to");
    if (written.code() == StatusCode::kInsufficientStorage) {
      needs_reopen_ = true;  // write() and resume() share one thread: no other writer sees it
    }
    return written;
  }

  Result<std::optional<std::string>> get(Space space, std::string_view key) const override {
    if (!valid_space(space)) {
      return Status::invalid_argument("get names an unknown key space");
    }
    std::shared_lock lock(mutex_);
    TALLY_TRY(readable());
    rocksdb::ColumnFamilyHandle* handle = open_.handles[static_cast<std::size_t>(space)];
    if (handle == nullptr) {
      return std::optional<std::string>();  // a read-only store of a directory without it
    }
    rocksdb::PinnableSlice value;
    rocksdb::Status status = open_.db->Get(rocksdb::ReadOptions(), handle, key, &value);
    if (status.IsNotFound()) {
      return std::optional<std::string>();
    }
    if (!status.ok()) {
      return from_rocks(status, options_.path, "cannot read from");
    }
    return std::optional<std::string>(std::in_place, value.data(), value.size());
  }

  Status scan(Space space, std::string_view begin, std::string_view end,
              const ScanFn& fn) const override {
    return scan_with(space, begin, end, fn, true);
  }

  Status scan_once(Space space, std::string_view begin, std::string_view end,
                   const ScanFn& fn) const override {
    return scan_with(space, begin, end, fn, false);
  }

  std::uint64_t size_bytes() const override {
    std::shared_lock lock(mutex_);
    if (open_.db == nullptr) {
      return 0;
    }
    std::uint64_t sst_bytes = 0;
    std::uint64_t memtable_bytes = 0;
    // Either property can only be missing on a RocksDB without it; 0 is then the honest answer.
    if (!open_.db->GetAggregatedIntProperty(rocksdb::DB::Properties::kTotalSstFilesSize,
                                            &sst_bytes)) {
      sst_bytes = 0;
    }
    if (!open_.db->GetAggregatedIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables,
                                            &memtable_bytes)) {
      memtable_bytes = 0;
    }
    return sst_bytes + memtable_bytes;
  }

  std::string_view name() const override { return "rocksdb"; }

  Result<std::optional<DiskSpace>> disk_space() const override {
    std::error_code error;
    const std::filesystem::space_info space = std::filesystem::space(options_.path, error);
    if (error) {
      return Status::io_error("cannot read the free space of " + options_.path + ": " +
                              error.message());
    }
    return std::optional<DiskSpace>(DiskSpace{space.available, space.capacity});
  }

  Status resume() override {
    if (options_.read_only) {
      return Status();
    }
    if (!needs_reopen_) {
      // No write failed, but a background flush or compaction may have stopped RocksDB (a
      // no-op otherwise). Its WAL file saw no error, so Resume() is safe here.
      std::shared_lock lock(mutex_);
      const rocksdb::Status resumed = open_.db->Resume();
      if (resumed.IsBusy()) {
        return Status::unavailable("the store at " + options_.path + " is recovering");
      }
      return from_rocks(resumed, options_.path, "cannot resume writing to");
    }
    // A write found no space. RocksDB's Resume() would flush the memtables and, only when one
    // holds data, move to a new WAL file; with all of them empty it keeps writing the file that
    // failed, and the next write aborts (fixed upstream in RocksDB 9.5). Opening the database
    // again always starts a new WAL file, replaying the old one up to its last whole record:
    // every acknowledged write, never the failed one. Readers wait meanwhile.
    std::unique_lock lock(mutex_);
    close_db(open_);
    Result<OpenDb> reopened = open_db(options_, cache_);
    if (reopened) {
      open_ = std::move(*reopened);
      needs_reopen_ = false;
      return Status();
    }
    // Still no room to open for writing: reads go on from what is on disk (every acknowledged
    // write), and the next resume() tries again.
    RocksOptions read_only = options_;
    read_only.read_only = true;
    Result<OpenDb> for_reads = open_db(read_only, cache_);
    if (for_reads) {
      open_ = std::move(*for_reads);
    } else {
      reopen_error_ = for_reads.error();
    }
    return reopened.error();
  }

 private:
  // scan(), the blocks it reads kept in the read cache when `fill_cache`.
  Status scan_with(Space space, std::string_view begin, std::string_view end, const ScanFn& fn,
                   bool fill_cache) const {
    if (!valid_space(space)) {
      return Status::invalid_argument("scan names an unknown key space");
    }
    std::shared_lock lock(mutex_);
    TALLY_TRY(readable());
    rocksdb::ColumnFamilyHandle* handle = open_.handles[static_cast<std::size_t>(space)];
    if (handle == nullptr) {
      return Status();
    }
    // Declared before the iterator, so released after it.
    rocksdb::ManagedSnapshot snapshot(open_.db.get());
    rocksdb::Slice upper_bound(end.data(), end.size());
    rocksdb::ReadOptions read_options;
    read_options.fill_cache = fill_cache;
    read_options.snapshot = snapshot.snapshot();
    if (!end.empty()) {
      // Lets RocksDB stop at the bound inside its own files rather than read past it.
      read_options.iterate_upper_bound = &upper_bound;
    }
    std::unique_ptr<rocksdb::Iterator> it(open_.db->NewIterator(read_options, handle));
    for (it->Seek(rocksdb::Slice(begin.data(), begin.size())); it->Valid(); it->Next()) {
      const rocksdb::Slice key = it->key();
      const rocksdb::Slice value = it->value();
      if (!fn(std::string_view(key.data(), key.size()),
              std::string_view(value.data(), value.size()))) {
        return Status();
      }
    }
    return from_rocks(it->status(), options_.path,
                      "cannot scan " + std::string(space_name(space)) + " in");
  }

  // Per-op framing in a rocksdb::WriteBatch (tag, family id, two varint lengths), used only to
  // size its buffer once.
  static constexpr std::size_t kOpOverheadBytes = 16;

  // REQUIRES: mutex_ held (shared or exclusive).
  Status readable() const {
    if (open_.db == nullptr) {
      return Status(reopen_error_.code(),
                    "the store at " + options_.path +
                        " could not be opened again: " + reopen_error_.message());
    }
    return Status();
  }

  const RocksOptions options_;
  const std::shared_ptr<rocksdb::Cache> cache_;
  // Guards open_: shared for reads and writes, exclusive while resume() opens it again.
  mutable std::shared_mutex mutex_;
  OpenDb open_;  // db null only after a failed reopen (reads answer reopen_error_)
  Status reopen_error_;
  // Set when a write found no space; cleared when resume() has opened the database again.
  // Written and read by the writer's thread only (write() and resume()).
  bool needs_reopen_ = false;
};

}  // namespace

Result<std::unique_ptr<Store>> open_rocksdb_store(const RocksOptions& options) {
  if (options.path.empty()) {
    return Status::invalid_argument("the RocksDB data directory path is empty");
  }
  std::shared_ptr<rocksdb::Cache> cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  Result<OpenDb> open = open_db(options, cache);
  if (!open) {
    return open.error();
  }
  return std::unique_ptr<Store>(
      std::make_unique<RocksStore>(options, std::move(cache), std::move(*open)));
}

}  // namespace tally::store
