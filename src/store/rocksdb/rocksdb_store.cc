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
#include <algorithm>
#include <array>
#include <cctype>
#include <cstdarg>
#include <cstddef>
#include <filesystem>
#include <initializer_list>
#include <memory>
#include <optional>
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
#include <rocksdb/options.h>
#include <rocksdb/slice.h>
#include <rocksdb/snapshot.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include "store/store.h"

namespace tally::store {
namespace {

constexpr std::size_t kSpaceCount = static_cast<std::size_t>(Space::kCount);

// Column family names, indexed by Space. Persisted in the MANIFEST: never rename. kMeta lives in
// RocksDB's default column family, which always exists.
constexpr std::array<std::string_view, kSpaceCount> kColumnFamilyNames = {
    "default", "events", "dedup", "aggregates", "uniques", "customers", "keys", "audit", "ledger",
    "archive",
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
// Bounds on RocksDB's own info log (the LOG files in the data directory).
constexpr std::size_t kInfoLogFileBytesMax = 16ull << 20;
constexpr std::size_t kInfoLogFilesMax = 5;
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

rocksdb::DBOptions db_options(const RocksOptions& options) {
  rocksdb::DBOptions db;
  db.create_if_missing = options.create_if_missing;
  db.create_missing_column_families = true;
  db.max_background_jobs = kBackgroundJobsMax;
  db.bytes_per_sync = kBytesPerSync;
  db.wal_bytes_per_sync = kBytesPerSync;
  db.db_write_buffer_size = kWriteBufferTotalBytesMax;
  db.max_total_wal_size = kWalTotalBytesMax;
  db.max_log_file_size = kInfoLogFileBytesMax;
  db.keep_log_file_num = kInfoLogFilesMax;
  if (options.read_only) {
    db.info_log = std::make_shared<DiscardLogger>();
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

class RocksStore final : public Store {
 public:
  // Takes ownership of `db` and of every handle in `all_handles`. `handles` indexes those by
  // Space; an entry is null when a read-only store opened a directory without that family.
  RocksStore(std::string path, bool read_only, std::unique_ptr<rocksdb::DB> db,
             std::vector<rocksdb::ColumnFamilyHandle*> all_handles,
             std::array<rocksdb::ColumnFamilyHandle*, kSpaceCount> handles)
      : path_(std::move(path)),
        read_only_(read_only),
        db_(std::move(db)),
        all_handles_(std::move(all_handles)),
        handles_(handles) {}

  RocksStore(const RocksStore&) = delete;
  RocksStore& operator=(const RocksStore&) = delete;

  ~RocksStore() override {
    for (rocksdb::ColumnFamilyHandle* handle : all_handles_) {
      db_->DestroyColumnFamilyHandle(handle).PermitUncheckedError();
    }
    // No flush: every acknowledged write is in the WAL. A failing Close has nobody left to tell
    // and loses nothing that was acknowledged, so its status is dropped.
    db_->Close().PermitUncheckedError();
  }

  Status write(const WriteBatch& batch, bool sync) override {
    if (read_only_) {
      return Status::unavailable("store " + path_ + " is open read-only");
    }
    rocksdb::WriteBatch rocks_batch(batch.bytes() + batch.ops().size() * kOpOverheadBytes);
    for (const WriteBatch::Op& op : batch.ops()) {
      if (!valid_space(op.space)) {
        return Status::invalid_argument("write batch names an unknown key space");
      }
      rocksdb::ColumnFamilyHandle* handle = handles_[static_cast<std::size_t>(op.space)];
      rocksdb::Status status = op.is_delete ? rocks_batch.Delete(handle, op.key)
                                            : rocks_batch.Put(handle, op.key, op.value);
      if (!status.ok()) {
        return from_rocks(status, path_, "cannot build a write batch for");
      }
    }
    rocksdb::WriteOptions write_options;
    write_options.sync = sync;
    return from_rocks(db_->Write(write_options, &rocks_batch), path_, "cannot write to");
  }

  Result<std::optional<std::string>> get(Space space, std::string_view key) const override {
    if (!valid_space(space)) {
      return Status::invalid_argument("get names an unknown key space");
    }
    rocksdb::ColumnFamilyHandle* handle = handles_[static_cast<std::size_t>(space)];
    if (handle == nullptr) {
      return std::optional<std::string>();  // a read-only store of a directory without it
    }
    rocksdb::PinnableSlice value;
    rocksdb::Status status = db_->Get(rocksdb::ReadOptions(), handle, key, &value);
    if (status.IsNotFound()) {
      return std::optional<std::string>();
    }
    if (!status.ok()) {
      return from_rocks(status, path_, "cannot read from");
    }
    return std::optional<std::string>(std::in_place, value.data(), value.size());
  }

  Status scan(Space space, std::string_view begin, std::string_view end,
              const ScanFn& fn) const override {
    if (!valid_space(space)) {
      return Status::invalid_argument("scan names an unknown key space");
    }
    rocksdb::ColumnFamilyHandle* handle = handles_[static_cast<std::size_t>(space)];
    if (handle == nullptr) {
      return Status();
    }
    // Declared before the iterator, so released after it.
    rocksdb::ManagedSnapshot snapshot(db_.get());
    rocksdb::Slice upper_bound(end.data(), end.size());
    rocksdb::ReadOptions read_options;
    read_options.snapshot = snapshot.snapshot();
    if (!end.empty()) {
      // Lets RocksDB stop at the bound inside its own files rather than read past it.
      read_options.iterate_upper_bound = &upper_bound;
    }
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(read_options, handle));
    for (it->Seek(rocksdb::Slice(begin.data(), begin.size())); it->Valid(); it->Next()) {
      const rocksdb::Slice key = it->key();
      const rocksdb::Slice value = it->value();
      if (!fn(std::string_view(key.data(), key.size()),
              std::string_view(value.data(), value.size()))) {
        return Status();
      }
    }
    return from_rocks(it->status(), path_, "cannot scan " + std::string(space_name(space)) + " in");
  }

  std::uint64_t size_bytes() const override {
    std::uint64_t sst_bytes = 0;
    std::uint64_t memtable_bytes = 0;
    // Either property can only be missing on a RocksDB without it; 0 is then the honest answer.
    if (!db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kTotalSstFilesSize, &sst_bytes)) {
      sst_bytes = 0;
    }
    if (!db_->GetAggregatedIntProperty(rocksdb::DB::Properties::kCurSizeAllMemTables,
                                       &memtable_bytes)) {
      memtable_bytes = 0;
    }
    return sst_bytes + memtable_bytes;
  }

  std::string_view name() const override { return "rocksdb"; }

 private:
  // Per-op framing in a rocksdb::WriteBatch (tag, family id, two varint lengths), used only to
  // size its buffer once.
  static constexpr std::size_t kOpOverheadBytes = 16;

  const std::string path_;
  const bool read_only_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> all_handles_;
  std::array<rocksdb::ColumnFamilyHandle*, kSpaceCount> handles_;
};

}  // namespace

Result<std::unique_ptr<Store>> open_rocksdb_store(const RocksOptions& options) {
  const std::string& path = options.path;
  if (path.empty()) {
    return Status::invalid_argument("the RocksDB data directory path is empty");
  }
  const rocksdb::DBOptions db = db_options(options);

  // CURRENT names the live MANIFEST; a directory without it holds no database.
  std::error_code error;
  const bool exists = std::filesystem::exists(std::filesystem::path(path) / "CURRENT", error);
  if (error) {
    return Status::io_error("cannot inspect data directory " + path + ": " + error.message());
  }
  if (!exists && (options.read_only || !options.create_if_missing)) {
    return Status::not_found("no Tally data directory at " + path);
  }

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

  const std::shared_ptr<rocksdb::Cache> cache = rocksdb::NewLRUCache(options.block_cache_bytes);
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.reserve(family_names.size());
  for (const std::string& name : family_names) {
    const std::optional<Space> space = space_for_family(name);
    // A family Tally does not know (left by a newer version) is opened with defaults, only
    // because RocksDB insists; nothing reads or writes it.
    descriptors.emplace_back(
        name, space ? family_options(*space, cache) : rocksdb::ColumnFamilyOptions());
  }

  std::vector<rocksdb::ColumnFamilyHandle*> all_handles;
  rocksdb::DB* raw_db = nullptr;
  const rocksdb::Status status =
      options.read_only ? rocksdb::DB::OpenForReadOnly(db, path, descriptors, &all_handles, &raw_db)
                        : rocksdb::DB::Open(db, path, descriptors, &all_handles, &raw_db);
  if (!status.ok()) {
    return from_rocks(status, path, "cannot open data directory");
  }
  std::unique_ptr<rocksdb::DB> rocks_db(raw_db);

  std::array<rocksdb::ColumnFamilyHandle*, kSpaceCount> handles{};
  for (rocksdb::ColumnFamilyHandle* handle : all_handles) {
    if (const std::optional<Space> space = space_for_family(handle->GetName())) {
      handles[static_cast<std::size_t>(*space)] = handle;
    }
  }
  return std::unique_ptr<Store>(std::make_unique<RocksStore>(
      path, options.read_only, std::move(rocks_db), std::move(all_handles), handles));
}

}  // namespace tally::store
