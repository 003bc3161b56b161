// The dedup table's file: what is written reads back as the same index, and a file that cannot
// be used (absent, damaged, cut short, written past the store, of another version) leaves the
// index empty and says why.
#include "engine/dedup_file.h"

#include <cstdio>
#include <filesystem>
#include <map>
#include <random>

#include <gtest/gtest.h>
#include <stdlib.h>

namespace tally::engine {
namespace {

class DedupFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/tally-dedup-file-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    path_ = dedup_file_path(dir_);
  }

  void TearDown() override { std::filesystem::remove_all(dir_); }

  // An index of `n` entries numbered 1..n (customer seq % 5 + 1), some hashes shared.
  void fill(DedupIndex* index, std::uint64_t n) {
    std::mt19937_64 rng(7);
    for (std::uint64_t seq = 1; seq <= n; ++seq) {
      const std::uint64_t hash =
          (seq % 97 == 0 && !want_.empty()) ? want_.begin()->first : (rng() | 1);
      index->insert(hash, seq, static_cast<std::uint32_t>(seq % 5 + 1));
      want_.emplace(hash, seq);
    }
  }

  void expect_same(const DedupIndex& read) {
    EXPECT_EQ(read.size(), want_.size());
    for (const auto& [hash, seq] : want_) {
      bool found = false;
      read.find(hash, [&](DedupIndex::Location l) {
        found = found || (l.seq == seq && l.customer_num == seq % 5 + 1);
      });
      ASSERT_TRUE(found) << "hash " << hash << " seq " << seq;
    }
  }

  // Changes the byte at `at` of the file.
  void flip(std::uint64_t at) {
    std::FILE* f = std::fopen(path_.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, static_cast<long>(at), SEEK_SET);
    const int c = std::fgetc(f);
    std::fseek(f, static_cast<long>(at), SEEK_SET);
    std::fputc(c ^ 0x21, f);
    std::fclose(f);
  }

  // Reads the file into a fresh index: nullopt expected, the index left empty, and `why` named.
  void expect_unusable(std::uint64_t next_seq, std::uint32_t next_customer, const char* why) {
    DedupIndex read;
    std::string reason;
    EXPECT_EQ(read_dedup_file(path_, next_seq, next_customer, &read, &reason), std::nullopt);
    EXPECT_EQ(read.size(), 0u);
    EXPECT_NE(reason.find(why), std::string::npos) << reason;
    read.insert(5, 1, 1);  // still an index that works
    bool found = false;
    read.find(5, [&](DedupIndex::Location) { found = true; });
    EXPECT_TRUE(found);
  }

  std::string dir_;
  std::string path_;
  std::multimap<std::uint64_t, std::uint64_t> want_;
};

TEST_F(DedupFileTest, TheWrittenTableReadsBackAsTheSameIndex) {
  DedupIndex index;
  fill(&index, 5000);
  ASSERT_TRUE(write_dedup_file(path_, index, 5001).ok());
  EXPECT_EQ(std::filesystem::file_size(path_), 64 + index.table().size() * 16);
  EXPECT_EQ(dedup_file_seq(path_), 5001u);

  DedupIndex read;
  std::string why;
  EXPECT_EQ(read_dedup_file(path_, 5001, 6, &read, &why), 5001u);
  EXPECT_EQ(why, "");
  expect_same(read);
  EXPECT_EQ(read.bytes(), index.bytes());
  EXPECT_TRUE(read.table_from_file());
  // It takes entries as one built by inserting does, also past its next growth.
  for (std::uint64_t seq = 5001; seq <= 9000; ++seq) {
    read.insert(seq * 0x9e3779b97f4a7c15ull | 1, seq, static_cast<std::uint32_t>(seq % 5 + 1));
    want_.emplace(seq * 0x9e3779b97f4a7c15ull | 1, seq);
  }
  expect_same(read);
  EXPECT_FALSE(read.table_from_file()) << "grown onto the heap";
  // A store that went on after the file (a crash after a restart that read it) can use it.
  DedupIndex later;
  EXPECT_EQ(read_dedup_file(path_, 9000, 6, &later, &why), 5001u);
}

TEST_F(DedupFileTest, NoFileIsNoReasonAndAnEmptyIndexReadsBackEmpty) {
  DedupIndex read;
  std::string why = "stale";
  EXPECT_EQ(read_dedup_file(path_, 1, 1, &read, &why), std::nullopt);
  EXPECT_EQ(why, "");
  EXPECT_EQ(dedup_file_seq(path_), std::nullopt);

  const DedupIndex empty;
  ASSERT_TRUE(write_dedup_file(path_, empty, 1).ok());
  EXPECT_EQ(read_dedup_file(path_, 1, 1, &read, &why), 1u);
  EXPECT_EQ(read.size(), 0u);
}

TEST_F(DedupFileTest, AFileThatCannotBeUsedLeavesTheIndexEmptyAndSaysWhy) {
  DedupIndex index;
  fill(&index, 3000);
  ASSERT_TRUE(write_dedup_file(path_, index, 3001).ok());
  const std::uint64_t size = std::filesystem::file_size(path_);

  // Written at a sequence number, or naming customers, the store has not reached.
  expect_unusable(3000, 6, "written after entries the store does not hold");
  expect_unusable(3001, 5, "numbered past the file's sequence or customer numbers");

  // A byte changed in the table, and in the header's count of entries.
  flip(size / 2);
  expect_unusable(3001, 6, "checksum does not match");
  flip(size / 2);
  flip(32);
  expect_unusable(3001, 6, "checksum does not match");
  flip(32);
  {
    DedupIndex read;
    std::string why;
    ASSERT_EQ(read_dedup_file(path_, 3001, 6, &read, &why), 3001u) << "the flips undone";
  }

  // Another version, another byte order, and a file cut short or longer.
  flip(8);
  expect_unusable(3001, 6, "not a dedup table of this version and byte order");
  EXPECT_EQ(dedup_file_seq(path_), std::nullopt);
  flip(8);
  flip(16);
  expect_unusable(3001, 6, "not a dedup table of this version and byte order");
  flip(16);
  std::filesystem::resize_file(path_, size - 16);
  expect_unusable(3001, 6, "its size is not that of its table");
  std::filesystem::resize_file(path_, size + 16);
  expect_unusable(3001, 6, "its size is not that of its table");
  std::filesystem::resize_file(path_, 40);
  expect_unusable(3001, 6, "not a dedup table of this version and byte order");
}

}  // namespace
}  // namespace tally::engine
