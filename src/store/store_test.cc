// Tests for the Store contract (src/store/store.h).
//
// StoreTest runs every behaviour the contract promises against each backend, so the memory
// store stays a faithful fake of RocksDB. RocksStoreTest covers what only a durable backend
// promises: persistence, read-only opens of a live directory, the directory lock, and how open
// failures are reported. The lock and crash tests run this binary again as a child process
// (RocksStoreChild.*), because the situations they model involve two processes.
#include "store/store.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace tally::store {
namespace {

using Rows = std::vector<std::pair<std::string, std::string>>;

constexpr Space kAllSpaces[] = {
    Space::kMeta,      Space::kEvents, Space::kDedup, Space::kAggregates, Space::kUniques,
    Space::kCustomers, Space::kKeys,   Space::kAudit, Space::kLedger,     Space::kArchive};

// Environment variables that turn a RocksStoreChild test from a skip into a child's role.
constexpr const char* kLockedDirEnv = "TALLY_STORE_TEST_LOCKED_DIR";
constexpr const char* kCrashDirEnv = "TALLY_STORE_TEST_CRASH_DIR";

// A fresh directory under /tmp, removed with everything in it when the test ends.
class TempDir {
 public:
  TempDir() {
    std::string pattern = "/tmp/tally-store-test-XXXXXX";
    if (mkdtemp(pattern.data()) != nullptr) {
      path_ = pattern;
    }
  }

  ~TempDir() {
    if (!path_.empty()) {
      std::error_code ignored;
      std::filesystem::remove_all(path_, ignored);
    }
  }

  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  bool ok() const { return !path_.empty(); }

  std::string sub(std::string_view name) const { return path_ + "/" + std::string(name); }

 private:
  std::string path_;
};

Result<std::unique_ptr<Store>> open_rocks(const std::string& path, bool read_only = false) {
  RocksOptions options;
  options.path = path;
  options.read_only = read_only;
  options.block_cache_bytes = 8ull << 20;
  return open_rocksdb_store(options);
}

Status put(Store& store, Space space, std::string key, std::string value, bool sync = false) {
  WriteBatch batch;
  batch.put(space, std::move(key), std::move(value));
  return store.write(batch, sync);
}

// The value of `key`, "<absent>" when missing, "<error: ...>" on failure: one string so a test
// compares it with a single EXPECT_EQ.
std::string get_text(const Store& store, Space space, std::string_view key) {
  Result<std::optional<std::string>> value = store.get(space, key);
  if (!value) {
    return "<error: " + value.error().to_string() + ">";
  }
  return value->has_value() ? **value : "<absent>";
}

Rows scan_rows(const Store& store, Space space, std::string_view begin, std::string_view end) {
  Rows rows;
  Status status = store.scan(space, begin, end, [&](std::string_view key, std::string_view value) {
    rows.emplace_back(key, value);
    return true;
  });
  EXPECT_TRUE(status.ok()) << status.to_string();
  return rows;
}

std::vector<std::string> scan_keys(const Store& store, Space space, std::string_view begin,
                                   std::string_view end) {
  std::vector<std::string> keys;
  for (auto& [key, value] : scan_rows(store, space, begin, end)) {
    keys.push_back(key);
  }
  return keys;
}

// ----------------------------------------------------------------------------------------------
// The shared contract, once per backend.

enum class Backend { kMemory, kRocksDb };

class StoreTest : public ::testing::TestWithParam<Backend> {
 protected:
  void SetUp() override {
    if (GetParam() == Backend::kMemory) {
      store_ = make_memory_store();
      return;
    }
    ASSERT_TRUE(dir_.ok());
    Result<std::unique_ptr<Store>> opened = open_rocks(dir_.sub("db"));
    ASSERT_TRUE(opened) << opened.error().to_string();
    store_ = std::move(opened.value());
  }

  TempDir dir_;
  std::unique_ptr<Store> store_;
};

INSTANTIATE_TEST_SUITE_P(Backends, StoreTest,
                         ::testing::Values(Backend::kMemory, Backend::kRocksDb),
                         [](const ::testing::TestParamInfo<Backend>& param_info) {
                           return param_info.param == Backend::kMemory ? "Memory" : "RocksDb";
                         });

TEST_P(StoreTest, NameMatchesBackend) {
  EXPECT_EQ(store_->name(), GetParam() == Backend::kMemory ? "memory" : "rocksdb");
}

TEST_P(StoreTest, PutThenGet) {
  ASSERT_TRUE(put(*store_, Space::kCustomers, "cus_1", "alice").ok());
  EXPECT_EQ(get_text(*store_, Space::kCustomers, "cus_1"), "alice");
}

TEST_P(StoreTest, MissingKeyIsAbsentNotAnError) {
  EXPECT_EQ(get_text(*store_, Space::kKeys, "nope"), "<absent>");
  ASSERT_TRUE(put(*store_, Space::kKeys, "a", "1").ok());
  EXPECT_EQ(get_text(*store_, Space::kKeys, "b"), "<absent>");
  EXPECT_EQ(get_text(*store_, Space::kKeys, ""), "<absent>");
}

TEST_P(StoreTest, PutOverwrites) {
  ASSERT_TRUE(put(*store_, Space::kMeta, "schema", "1").ok());
  ASSERT_TRUE(put(*store_, Space::kMeta, "schema", "2").ok());
  EXPECT_EQ(get_text(*store_, Space::kMeta, "schema"), "2");
  EXPECT_EQ(scan_rows(*store_, Space::kMeta, "", "").size(), 1u);
}

TEST_P(StoreTest, BinaryKeysAndEmptyValuesRoundTrip) {
  const std::string key("k\0\xff\x01", 4);
  const std::string value("\0\0v\xfe", 4);
  ASSERT_TRUE(put(*store_, Space::kEvents, key, value).ok());
  ASSERT_TRUE(put(*store_, Space::kEvents, "empty", "").ok());
  EXPECT_EQ(get_text(*store_, Space::kEvents, key), value);
  // An empty value is present, not absent.
  EXPECT_EQ(get_text(*store_, Space::kEvents, "empty"), "");
  EXPECT_EQ(get_text(*store_, Space::kEvents, std::string("k\0\xff", 3)), "<absent>");
}

TEST_P(StoreTest, DeleteRemovesKey) {
  ASSERT_TRUE(put(*store_, Space::kAggregates, "a", "1").ok());
  ASSERT_TRUE(put(*store_, Space::kAggregates, "b", "2").ok());
  WriteBatch batch;
  batch.del(Space::kAggregates, "a");
  batch.del(Space::kAggregates, "never-written");  // deleting a missing key is not an error
  ASSERT_TRUE(store_->write(batch, false).ok());
  EXPECT_EQ(get_text(*store_, Space::kAggregates, "a"), "<absent>");
  EXPECT_EQ(scan_keys(*store_, Space::kAggregates, "", ""), std::vector<std::string>{"b"});
}

TEST_P(StoreTest, LaterOpInABatchWins) {
  WriteBatch batch;
  batch.put(Space::kUniques, "x", "1");
  batch.del(Space::kUniques, "x");
  batch.put(Space::kUniques, "y", "1");
  batch.put(Space::kUniques, "y", "2");
  ASSERT_TRUE(store_->write(batch, false).ok());
  EXPECT_EQ(get_text(*store_, Space::kUniques, "x"), "<absent>");
  EXPECT_EQ(get_text(*store_, Space::kUniques, "y"), "2");
}

TEST_P(StoreTest, EmptyBatchIsOk) {
  EXPECT_TRUE(store_->write(WriteBatch(), false).ok());
  EXPECT_TRUE(store_->write(WriteBatch(), true).ok());
}

TEST_P(StoreTest, ScanVisitsKeysInUnsignedByteOrder) {
  // Written out of order; includes a NUL byte, a prefix of another key and a high byte that a
  // signed-char comparison would put first.
  for (std::string key : {std::string("b"), std::string("\xff"), std::string("a\0", 2),
                          std::string("ab"), std::string("a"), std::string("B")}) {
    ASSERT_TRUE(put(*store_, Space::kAudit, key, "v:" + key).ok());
  }
  const std::vector<std::string> expected = {"B", "a", std::string("a\0", 2), "ab", "b", "\xff"};
  EXPECT_EQ(scan_keys(*store_, Space::kAudit, "", ""), expected);
  for (const auto& [key, value] : scan_rows(*store_, Space::kAudit, "", "")) {
    EXPECT_EQ(value, "v:" + key);
  }
}

TEST_P(StoreTest, ScanBoundsAreHalfOpen) {
  for (const char* key : {"a", "b", "c", "d", "e"}) {
    ASSERT_TRUE(put(*store_, Space::kEvents, key, "v").ok());
  }
  using Keys = std::vector<std::string>;
  EXPECT_EQ(scan_keys(*store_, Space::kEvents, "b", "d"), (Keys{"b", "c"}));
  // Bounds between keys.
  EXPECT_EQ(scan_keys(*store_, Space::kEvents, "bb", "dd"), (Keys{"c", "d"}));
  // Empty end: to the end of the space. Empty begin: from its start.
  EXPECT_EQ(scan_keys(*store_, Space::kEvents, "c", ""), (Keys{"c", "d", "e"}));
  EXPECT_EQ(scan_keys(*store_, Space::kEvents, "", "b"), (Keys{"a"}));
  // Empty, inverted and out-of-range intervals visit nothing.
  EXPECT_EQ(scan_keys(*store_, Space::kEvents, "c", "c"), Keys{});
  EXPECT_EQ(scan_keys(*store_, Space::kEvents, "d", "b"), Keys{});
  EXPECT_EQ(scan_keys(*store_, Space::kEvents, "f", ""), Keys{});
  EXPECT_EQ(scan_keys(*store_, Space::kEvents, "", "a"), Keys{});
}

TEST_P(StoreTest, ScanOfAnEmptySpaceVisitsNothing) {
  EXPECT_TRUE(scan_rows(*store_, Space::kDedup, "", "").empty());
}

TEST_P(StoreTest, ScanStopsWhenCallbackReturnsFalse) {
  for (const char* key : {"a", "b", "c", "d"}) {
    ASSERT_TRUE(put(*store_, Space::kEvents, key, "v").ok());
  }
  std::vector<std::string> seen;
  Status status = store_->scan(Space::kEvents, "", "", [&](std::string_view key, std::string_view) {
    seen.emplace_back(key);
    return seen.size() < 2;
  });
  ASSERT_TRUE(status.ok()) << status.to_string();
  EXPECT_EQ(seen, (std::vector<std::string>{"a", "b"}));
}

TEST_P(StoreTest, SpacesAreIsolated) {
  for (Space space : kAllSpaces) {
    const std::string tag = std::to_string(static_cast<int>(space));
    ASSERT_TRUE(put(*store_, space, "same-key", "value-" + tag).ok());
    ASSERT_TRUE(put(*store_, space, "only-" + tag, "x").ok());
  }
  for (Space space : kAllSpaces) {
    const std::string tag = std::to_string(static_cast<int>(space));
    EXPECT_EQ(get_text(*store_, space, "same-key"), "value-" + tag);
    EXPECT_EQ(scan_keys(*store_, space, "", ""),
              (std::vector<std::string>{"only-" + tag, "same-key"}));
  }
  WriteBatch batch;
  batch.del(Space::kEvents, "same-key");
  ASSERT_TRUE(store_->write(batch, false).ok());
  EXPECT_EQ(get_text(*store_, Space::kEvents, "same-key"), "<absent>");
  EXPECT_EQ(get_text(*store_, Space::kDedup, "same-key"), "value-2");
}

TEST_P(StoreTest, BatchAcrossSpacesAppliesEveryOp) {
  ASSERT_TRUE(put(*store_, Space::kCustomers, "old", "x").ok());
  WriteBatch batch;
  batch.put(Space::kEvents, "block-1", "events");
  batch.put(Space::kDedup, "block-1", "hashes");
  batch.put(Space::kAggregates, "cus_1/api_calls", "42");
  batch.put(Space::kMeta, "seq", "1");
  batch.del(Space::kCustomers, "old");
  ASSERT_TRUE(store_->write(batch, true).ok());
  EXPECT_EQ(get_text(*store_, Space::kEvents, "block-1"), "events");
  EXPECT_EQ(get_text(*store_, Space::kDedup, "block-1"), "hashes");
  EXPECT_EQ(get_text(*store_, Space::kAggregates, "cus_1/api_calls"), "42");
  EXPECT_EQ(get_text(*store_, Space::kMeta, "seq"), "1");
  EXPECT_EQ(get_text(*store_, Space::kCustomers, "old"), "<absent>");
}

TEST_P(StoreTest, RejectedBatchAppliesNothing) {
  // An op naming no real space is a caller bug; the batch must fail as a whole.
  WriteBatch batch;
  batch.put(Space::kEvents, "a", "1");
  batch.put(Space::kMeta, "b", "2");
  batch.put(Space::kCount, "c", "3");
  Status status = store_->write(batch, false);
  EXPECT_EQ(status.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(get_text(*store_, Space::kEvents, "a"), "<absent>");
  EXPECT_EQ(get_text(*store_, Space::kMeta, "b"), "<absent>");
  EXPECT_EQ(store_->get(Space::kCount, "c").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->scan(Space::kCount, "", "", [](auto, auto) { return true; }).code(),
            StatusCode::kInvalidArgument);
}

TEST_P(StoreTest, ScansDuringWritesSeeWholeBatchesInOrder) {
  // The writer commits batch i = {key 2i, key 2i+1} in order. Every scan must then see keys
  // 0..2n-1 for some n: no gaps (order), and never half a batch (atomicity).
  constexpr int kBatches = 2000;
  auto key_of = [](int i) {
    char buf[16];
    std::snprintf(buf, sizeof buf, "k%08d", i);
    return std::string(buf);
  };
  std::atomic<bool> done{false};
  Status writer_status;
  std::thread writer([&] {
    for (int i = 0; i < kBatches && writer_status.ok(); ++i) {
      WriteBatch batch;
      batch.put(Space::kEvents, key_of(2 * i), "v");
      batch.put(Space::kEvents, key_of(2 * i + 1), "v");
      batch.put(Space::kMeta, "last", std::to_string(i));
      writer_status = store_->write(batch, false);
    }
    done.store(true);
  });

  // Failures end the loop rather than the test, so the writer is always joined.
  int scans = 0;
  int largest_seen = 0;
  std::string failure;
  bool last_round = false;
  while (!last_round && failure.empty()) {
    last_round = done.load();  // one more scan after the writer finished sees everything
    int count = 0;
    bool in_order = true;
    Status status = store_->scan(Space::kEvents, "", "", [&](std::string_view key, auto) {
      in_order = in_order && key == key_of(count);
      ++count;
      return true;
    });
    // Point reads run alongside too.
    Result<std::optional<std::string>> last = store_->get(Space::kMeta, "last");
    if (!status.ok()) {
      failure = "scan failed: " + status.to_string();
    } else if (!last) {
      failure = "get failed: " + last.error().to_string();
    } else if (!in_order) {
      failure = "a scan has a gap";
    } else if (count % 2 != 0) {
      failure = "a scan saw half a batch";
    } else if (count < largest_seen) {
      failure = "a later scan saw fewer keys";
    }
    largest_seen = count;
    ++scans;
  }
  writer.join();
  ASSERT_EQ(failure, "") << "after " << scans << " scans";
  ASSERT_TRUE(writer_status.ok()) << writer_status.to_string();
  EXPECT_EQ(largest_seen, 2 * kBatches);
  EXPECT_GE(scans, 2);
}

TEST_P(StoreTest, SizeBytes) {
  ASSERT_TRUE(put(*store_, Space::kEvents, "k", std::string(4096, 'x')).ok());
  if (GetParam() == Backend::kMemory) {
    EXPECT_EQ(store_->size_bytes(), 0u);
  } else {
    EXPECT_GT(store_->size_bytes(), 0u);  // at least the memtable holding the value
  }
}

// ----------------------------------------------------------------------------------------------
// RocksDB only.

class RocksStoreTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(dir_.ok()); }

  std::string db_path() const { return dir_.sub("db"); }

  TempDir dir_;
};

TEST_F(RocksStoreTest, DataPersistsAcrossReopen) {
  {
    Result<std::unique_ptr<Store>> store = open_rocks(db_path());
    ASSERT_TRUE(store) << store.error().to_string();
    for (Space space : kAllSpaces) {
      ASSERT_TRUE(put(**store, space, "k", std::to_string(static_cast<int>(space))).ok());
    }
    WriteBatch batch;
    batch.put(Space::kEvents, "gone", "x");
    batch.del(Space::kEvents, "gone");
    ASSERT_TRUE((*store)->write(batch, false).ok());
  }
  Result<std::unique_ptr<Store>> store = open_rocks(db_path());
  ASSERT_TRUE(store) << store.error().to_string();
  for (Space space : kAllSpaces) {
    EXPECT_EQ(get_text(**store, space, "k"), std::to_string(static_cast<int>(space)));
  }
  EXPECT_EQ(get_text(**store, Space::kEvents, "gone"), "<absent>");
}

TEST_F(RocksStoreTest, SyncedWriteSurvivesReopen) {
  {
    Result<std::unique_ptr<Store>> store = open_rocks(db_path());
    ASSERT_TRUE(store) << store.error().to_string();
    WriteBatch batch;
    batch.put(Space::kEvents, "block-7", "payload");
    batch.put(Space::kMeta, "seq", "7");
    ASSERT_TRUE((*store)->write(batch, true).ok());
  }
  Result<std::unique_ptr<Store>> store = open_rocks(db_path());
  ASSERT_TRUE(store) << store.error().to_string();
  EXPECT_EQ(get_text(**store, Space::kEvents, "block-7"), "payload");
  EXPECT_EQ(get_text(**store, Space::kMeta, "seq"), "7");
}

// Runs this test binary again with only `filter` selected and `env_assignment` ("NAME=value")
// added to its environment. Returns the wait() status, or -1 when it could not be started.
int run_child(const std::string& filter, const std::string& env_assignment) {
  std::vector<std::string> env_strings;
  for (char** e = environ; *e != nullptr; ++e) {
    env_strings.emplace_back(*e);
  }
  env_strings.push_back(env_assignment);
  std::vector<char*> envp;
  for (std::string& s : env_strings) {
    envp.push_back(s.data());
  }
  envp.push_back(nullptr);
  std::string exe = "/proc/self/exe";
  std::string filter_arg = "--gtest_filter=" + filter;
  char* argv[] = {exe.data(), filter_arg.data(), nullptr};
  pid_t pid = 0;
  if (posix_spawn(&pid, exe.c_str(), nullptr, nullptr, argv, envp.data()) != 0) {
    return -1;
  }
  int wait_status = 0;
  if (waitpid(pid, &wait_status, 0) != pid) {
    return -1;
  }
  return wait_status;
}

TEST_F(RocksStoreTest, SyncedWriteSurvivesAKilledProcess) {
  // The child writes with sync = true and is killed before its store is closed, as a crash
  // would leave it: the WAL alone must carry the write, with no help from Close(). (Only a
  // power cut could show the fsync itself; a killed process keeps its page cache.)
  const int wait_status =
      run_child("RocksStoreChild.WriteSyncedThenDie", std::string(kCrashDirEnv) + "=" + db_path());
  ASSERT_TRUE(WIFSIGNALED(wait_status)) << "child status " << wait_status;
  ASSERT_EQ(WTERMSIG(wait_status), SIGKILL);
  Result<std::unique_ptr<Store>> store = open_rocks(db_path());
  ASSERT_TRUE(store) << store.error().to_string();
  EXPECT_EQ(get_text(**store, Space::kEvents, "block-1"), "payload");
  EXPECT_EQ(get_text(**store, Space::kMeta, "seq"), "1");
}

TEST_F(RocksStoreTest, ReadOnlyOpenOfALiveDirectory) {
  Result<std::unique_ptr<Store>> writer = open_rocks(db_path());
  ASSERT_TRUE(writer) << writer.error().to_string();
  ASSERT_TRUE(put(**writer, Space::kCustomers, "cus_1", "alice").ok());
  ASSERT_TRUE(put(**writer, Space::kEvents, "e1", "x").ok());

  Result<std::unique_ptr<Store>> reader = open_rocks(db_path(), /*read_only=*/true);
  ASSERT_TRUE(reader) << reader.error().to_string();
  EXPECT_EQ((*reader)->name(), "rocksdb");
  EXPECT_EQ(get_text(**reader, Space::kCustomers, "cus_1"), "alice");
  EXPECT_EQ(scan_keys(**reader, Space::kEvents, "", ""), std::vector<std::string>{"e1"});

  Status status = put(**reader, Space::kCustomers, "cus_2", "bob");
  EXPECT_EQ(status.code(), StatusCode::kUnavailable) << status.to_string();

  // A read-only store is a view as of its open: later commits are not seen.
  ASSERT_TRUE(put(**writer, Space::kCustomers, "cus_3", "carol").ok());
  EXPECT_EQ(get_text(**reader, Space::kCustomers, "cus_3"), "<absent>");
  EXPECT_EQ(get_text(**writer, Space::kCustomers, "cus_2"), "<absent>");
}

TEST_F(RocksStoreTest, ReadOnlyOpenAfterTheWriterClosed) {
  {
    Result<std::unique_ptr<Store>> writer = open_rocks(db_path());
    ASSERT_TRUE(writer) << writer.error().to_string();
    ASSERT_TRUE(put(**writer, Space::kAudit, "a1", "created").ok());
  }
  Result<std::unique_ptr<Store>> reader = open_rocks(db_path(), /*read_only=*/true);
  ASSERT_TRUE(reader) << reader.error().to_string();
  EXPECT_EQ(get_text(**reader, Space::kAudit, "a1"), "created");
  // A read-only store takes no lock: a writer can still open the directory.
  Result<std::unique_ptr<Store>> writer = open_rocks(db_path());
  ASSERT_TRUE(writer) << writer.error().to_string();
}

TEST_F(RocksStoreTest, SecondReadWriteOpenInTheSameProcessIsUnavailable) {
  Result<std::unique_ptr<Store>> first = open_rocks(db_path());
  ASSERT_TRUE(first) << first.error().to_string();
  Result<std::unique_ptr<Store>> second = open_rocks(db_path());
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), StatusCode::kUnavailable) << second.error().to_string();
  EXPECT_EQ(second.error().message(),
            "data directory " + db_path() + " is in use by another process");
  // The lock goes with the store.
  first->reset();
  Result<std::unique_ptr<Store>> third = open_rocks(db_path());
  EXPECT_TRUE(third) << third.error().to_string();
}

TEST_F(RocksStoreTest, OpenWhileAnotherProcessHoldsTheDirectory) {
  Result<std::unique_ptr<Store>> store = open_rocks(db_path());
  ASSERT_TRUE(store) << store.error().to_string();
  ASSERT_TRUE(put(**store, Space::kMeta, "owner", "parent", /*sync=*/true).ok());
  const int wait_status = run_child("RocksStoreChild.OpenLockedDirectory",
                                    std::string(kLockedDirEnv) + "=" + db_path());
  ASSERT_TRUE(WIFEXITED(wait_status)) << "child status " << wait_status;
  EXPECT_EQ(WEXITSTATUS(wait_status), 0) << "the child's checks failed; see its output above";
}

TEST_F(RocksStoreTest, ReadOnlyOpenOfAMissingDirectoryIsNotFound) {
  Result<std::unique_ptr<Store>> store = open_rocks(dir_.sub("missing"), /*read_only=*/true);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code(), StatusCode::kNotFound) << store.error().to_string();
  // Nothing was created on the way.
  EXPECT_FALSE(std::filesystem::exists(dir_.sub("missing")));
}

TEST_F(RocksStoreTest, ReadOnlyOpenOfAnEmptyDirectoryIsNotFound) {
  ASSERT_TRUE(std::filesystem::create_directory(db_path()));
  Result<std::unique_ptr<Store>> store = open_rocks(db_path(), /*read_only=*/true);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code(), StatusCode::kNotFound) << store.error().to_string();
}

TEST_F(RocksStoreTest, OpenWithoutCreateIfMissingIsNotFound) {
  RocksOptions options;
  options.path = db_path();
  options.create_if_missing = false;
  Result<std::unique_ptr<Store>> store = open_rocksdb_store(options);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code(), StatusCode::kNotFound) << store.error().to_string();
}

TEST_F(RocksStoreTest, OpenOfARegularFileIsAnIOErrorNamingThePath) {
  const std::string path = dir_.sub("not-a-directory");
  std::ofstream(path) << "x";
  Result<std::unique_ptr<Store>> store = open_rocks(path);
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code(), StatusCode::kIOError) << store.error().to_string();
  EXPECT_NE(store.error().message().find(path), std::string::npos) << store.error().to_string();
}

TEST_F(RocksStoreTest, EmptyPathIsInvalid) {
  Result<std::unique_ptr<Store>> store = open_rocks("");
  ASSERT_FALSE(store);
  EXPECT_EQ(store.error().code(), StatusCode::kInvalidArgument);
}

TEST_F(RocksStoreTest, ColumnFamiliesAndCompressionOnDisk) {
  // The family names are a persisted format (see kColumnFamilyNames); RocksDB records them,
  // with their options, in the OPTIONS-* file it writes at every open.
  {
    Result<std::unique_ptr<Store>> store = open_rocks(db_path());
    ASSERT_TRUE(store) << store.error().to_string();
  }
  std::string options_text;
  for (const auto& entry : std::filesystem::directory_iterator(db_path())) {
    if (entry.path().filename().string().rfind("OPTIONS-", 0) == 0) {
      std::ifstream in(entry.path());
      std::stringstream text;
      text << in.rdbuf();
      options_text = text.str();
    }
  }
  ASSERT_FALSE(options_text.empty());
  for (const char* name :
       {"default", "events", "dedup", "aggregates", "uniques", "customers", "keys", "audit"}) {
    EXPECT_NE(options_text.find("[CFOptions \"" + std::string(name) + "\"]"), std::string::npos)
        << name;
  }
  // Debian's RocksDB is built with ZSTD, so the event log must use it.
  const std::size_t events = options_text.find("[CFOptions \"events\"]");
  const std::size_t next = options_text.find("[CFOptions", events + 1);
  ASSERT_NE(events, std::string::npos);
  EXPECT_NE(options_text.substr(events, next - events).find("compression=kZSTD"),
            std::string::npos);
}

// ----------------------------------------------------------------------------------------------
// Child roles for the multi-process tests above. Run directly, they skip.

TEST(RocksStoreChild, OpenLockedDirectory) {
  const char* path = std::getenv(kLockedDirEnv);
  if (path == nullptr) {
    GTEST_SKIP() << "runs as a child of OpenWhileAnotherProcessHoldsTheDirectory";
  }
  Result<std::unique_ptr<Store>> writer = open_rocks(path);
  ASSERT_FALSE(writer);
  EXPECT_EQ(writer.error().code(), StatusCode::kUnavailable) << writer.error().to_string();
  EXPECT_EQ(writer.error().message(),
            "data directory " + std::string(path) + " is in use by another process");
  // What `tally verify` does against a live server.
  Result<std::unique_ptr<Store>> reader = open_rocks(path, /*read_only=*/true);
  ASSERT_TRUE(reader) << reader.error().to_string();
  EXPECT_EQ(get_text(**reader, Space::kMeta, "owner"), "parent");
}

// A RocksDB store on a small tmpfs that the test fills. Debian's librocksdb keeps its debug
// assertions: before rocksdb_store.cc handled a full disk, the first write that found no space
// aborted the process (RocksDB's info logger), and so did the first write after a Resume() with
// empty memtables (the failed WAL file reused). Needs root to mount; skips otherwise.
class RocksStoreFullDiskTest : public ::testing::Test {
 protected:
  static constexpr std::uint64_t kMiB = 1ull << 20;

  void SetUp() override {
    ASSERT_TRUE(dir_.ok());
    if (geteuid() != 0) {
      GTEST_SKIP() << "mounting a small tmpfs for a full disk needs root; run as root to test it";
    }
    mount_ = dir_.sub("fs");
    ASSERT_EQ(mkdir(mount_.c_str(), 0700), 0);
    if (mount("tally-test", mount_.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=16m") != 0) {
      const int error = errno;
      mount_.clear();
      GTEST_SKIP() << "cannot mount a 16 MiB tmpfs: " << std::strerror(error);
    }
  }

  void TearDown() override {
    store_.reset();
    if (!mount_.empty() && umount2(mount_.c_str(), 0) != 0) {
      umount2(mount_.c_str(), MNT_DETACH);
    }
  }

  std::uint64_t free_bytes() const {
    struct statvfs fs {};

    EXPECT_EQ(statvfs(mount_.c_str(), &fs), 0);
    return static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
  }

  // Grows a filler file until about `left` bytes are free.
  void fill_until_free(std::uint64_t left) {
    std::ofstream filler(mount_ + "/filler", std::ios::binary | std::ios::app);
    const std::string chunk(64 << 10, 'z');
    while (free_bytes() > left + chunk.size() && filler.good()) {
      filler.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
      filler.flush();
    }
  }

  void remove_filler() { ASSERT_EQ(std::remove((mount_ + "/filler").c_str()), 0); }

  // `bytes` of text that does not compress.
  static std::string incompressible(std::size_t bytes) {
    std::string out(bytes, ' ');
    std::uint64_t x = 88172645463325252ull;
    for (char& c : out) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      c = static_cast<char>('a' + x % 26);
    }
    return out;
  }

  std::string mount_;
  TempDir dir_;
  std::unique_ptr<Store> store_;
};

TEST_F(RocksStoreFullDiskTest, AWriteThatFindsNoSpaceFailsAndTheStoreResumesOnceSpaceIsBack) {
  const std::string db = mount_ + "/db";
  Result<std::unique_ptr<Store>> opened = open_rocks(db);
  ASSERT_TRUE(opened) << opened.error().to_string();
  store_ = std::move(*opened);
  Result<std::optional<DiskSpace>> space = store_->disk_space();
  ASSERT_TRUE(space && space->has_value());
  EXPECT_EQ((*space)->total_bytes, 16 * kMiB);
  EXPECT_GT((*space)->free_bytes, 8 * kMiB);

  // The first write after open finds no space: every memtable is empty, the case in which
  // RocksDB 7.8's Resume() would keep the WAL file that failed.
  fill_until_free(kMiB);
  const std::string big = incompressible(3 * kMiB);
  Status failed = put(*store_, Space::kEvents, "big-1", big);
  ASSERT_EQ(failed.code(), StatusCode::kInsufficientStorage) << failed.to_string();
  EXPECT_NE(failed.message().find("No space left"), std::string::npos) << failed.message();
  // Later writes are refused without reaching RocksDB; reads go on.
  EXPECT_EQ(put(*store_, Space::kMeta, "small", "1").code(), StatusCode::kInsufficientStorage);
  EXPECT_EQ(get_text(*store_, Space::kEvents, "big-1"), "<absent>");

  // Resuming on a disk still full may fail, but reads go on either way.
  store_->resume().ignore_error();
  EXPECT_EQ(get_text(*store_, Space::kEvents, "big-1"), "<absent>");

  remove_filler();
  ASSERT_TRUE(store_->resume().ok());
  ASSERT_TRUE(put(*store_, Space::kMeta, "after-1", "1").ok());
  ASSERT_TRUE(put(*store_, Space::kEvents, "big-2", big).ok());

  // Again with data in the memtables, where RocksDB's own Resume() would do.
  fill_until_free(kMiB);
  failed = put(*store_, Space::kEvents, "big-3", big);
  ASSERT_EQ(failed.code(), StatusCode::kInsufficientStorage) << failed.to_string();
  remove_filler();
  ASSERT_TRUE(store_->resume().ok());
  ASSERT_TRUE(put(*store_, Space::kMeta, "after-2", "2").ok());
  EXPECT_EQ(get_text(*store_, Space::kMeta, "after-1"), "1");
  EXPECT_EQ(get_text(*store_, Space::kEvents, "big-2").size(), big.size());

  // What was acknowledged survives a reopen; what failed is not there.
  store_.reset();
  opened = open_rocks(db);
  ASSERT_TRUE(opened) << opened.error().to_string();
  store_ = std::move(*opened);
  EXPECT_EQ(get_text(*store_, Space::kMeta, "after-1"), "1");
  EXPECT_EQ(get_text(*store_, Space::kMeta, "after-2"), "2");
  EXPECT_EQ(get_text(*store_, Space::kEvents, "big-2").size(), big.size());
  EXPECT_EQ(get_text(*store_, Space::kEvents, "big-1"), "<absent>");
  EXPECT_EQ(get_text(*store_, Space::kEvents, "big-3"), "<absent>");
  EXPECT_EQ(get_text(*store_, Space::kMeta, "small"), "<absent>");
}

TEST(RocksStoreChild, WriteSyncedThenDie) {
  const char* path = std::getenv(kCrashDirEnv);
  if (path == nullptr) {
    GTEST_SKIP() << "runs as a child of SyncedWriteSurvivesAKilledProcess";
  }
  Result<std::unique_ptr<Store>> store = open_rocks(path);
  ASSERT_TRUE(store) << store.error().to_string();
  WriteBatch batch;
  batch.put(Space::kEvents, "block-1", "payload");
  batch.put(Space::kMeta, "seq", "1");
  ASSERT_TRUE((*store)->write(batch, /*sync=*/true).ok());
  // No destructor, no Close: the parent checks that only a SIGKILL ended this process.
  kill(getpid(), SIGKILL);
}

}  // namespace
}  // namespace tally::store
