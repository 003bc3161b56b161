// The dedup index: every entry found at every moment of a growth (the old table moved over a
// few slots per insert while lookups read both), a growth spread over many inserts, replaced
// locations, and a bulk load equal to inserting each entry.
#include "engine/dedup_index.h"

#include <map>
#include <random>

#include <gtest/gtest.h>

namespace tally::engine {
namespace {

using Want = std::multimap<std::uint64_t, std::uint64_t>;  // hash -> seq

// Every (hash -> seq) of `want` is in the index with its customer, once.
void expect_all(const DedupIndex& index, const Want& want) {
  for (const auto& entry : want) {
    const std::uint64_t hash = entry.first;
    const std::uint64_t seq = entry.second;
    int found = 0;
    index.find(hash, [&](DedupIndex::Location l) {
      found += (l.seq == seq && l.customer_num == static_cast<std::uint32_t>(seq % 7)) ? 1 : 0;
    });
    ASSERT_EQ(found, 1) << "hash " << hash << " seq " << seq;
  }
  EXPECT_EQ(index.size(), want.size());
}

TEST(DedupIndexTest, EveryEntryIsFoundOnceThroughoutGrowths) {
  std::mt19937_64 rng(11);
  DedupIndex index;
  Want want;
  std::uint64_t seq = 1;
  int inserts_while_growing = 0;
  for (int commit = 0; commit < 120; ++commit) {
    const std::size_t n = 1 + rng() % 300;
    for (std::size_t i = 0; i < n; ++i, ++seq) {
      // Some true collisions: a few hashes repeat.
      const std::uint64_t hash =
          (rng() % 50 == 0 && !want.empty()) ? want.begin()->first : (rng() | 1);
      index.insert(hash, seq, static_cast<std::uint32_t>(seq % 7));
      want.emplace(hash, seq);
      inserts_while_growing += index.growing() ? 1 : 0;
    }
    if (commit % 3 == 0) {
      // An event accepted again after its window: its location moves (during growths too).
      auto it = std::next(want.begin(), static_cast<long>(rng() % want.size()));
      const std::uint64_t moved = seq++;
      index.replace(it->first, it->second, moved, static_cast<std::uint32_t>(moved % 7));
      want.emplace(it->first, moved);
      want.erase(it);
    }
    expect_all(index, want);  // after each commit, in the middle of a growth or not
  }
  EXPECT_GT(inserts_while_growing, 1000) << "commits ran while the table was growing";
  EXPECT_GT(index.bytes(), want.size() * 16 * 10 / 7) << "at most 70 % full";
}

TEST(DedupIndexTest, AGrowthIsSpreadOverInserts) {
  DedupIndex index;
  std::uint64_t seq = 1;
  auto add = [&] {
    index.insert(seq * 0x9E3779B97F4A7C15ull | 1, seq, 0);
    ++seq;
  };
  while (!index.growing()) {
    add();
  }
  // 1,024 slots 70 % full: a table of 2,048 beside them, 8 more of the old moved per insert.
  EXPECT_EQ(index.size(), 717u);
  EXPECT_EQ(index.bytes(), (1024u + 2048u) * 16);
  int inserts = 1;  // the insert that started it moved the first 8
  while (index.growing()) {
    add();
    ++inserts;
  }
  EXPECT_EQ(inserts, 1024 / static_cast<int>(DedupIndex::kMovedPerInsert));
  EXPECT_EQ(index.bytes(), 2048u * 16);
}

TEST(DedupIndexTest, InsertingAllAtOnceIsInsertingEach) {
  std::mt19937_64 rng(5);
  DedupIndex index;
  Want want;
  std::uint64_t seq = 1;
  // Into an empty table, then growing ones, once in the middle of a growth.
  for (std::size_t n : {0, 3, 900, 20000, 9000}) {
    if (n == 9000) {
      while (!index.growing()) {
        const std::uint64_t hash = rng() | 1;
        index.insert(hash, seq, static_cast<std::uint32_t>(seq % 7));
        want.emplace(hash, seq++);
      }
    }
    std::vector<DedupIndex::Slot> all;
    for (std::size_t i = 0; i < n; ++i, ++seq) {
      const std::uint64_t hash =
          (rng() % 40 == 0 && !want.empty()) ? want.begin()->first : (rng() | 1);
      all.push_back(DedupIndex::slot_of(hash, seq, static_cast<std::uint32_t>(seq % 7)));
      want.emplace(hash, seq);
    }
    index.insert_all(all);
    EXPECT_FALSE(index.growing());
    expect_all(index, want);
    EXPECT_GT(index.bytes(), want.size() * 16 * 10 / 7) << "at most 70 % full";
  }
  // One at a time afterwards, across the next growth.
  for (int i = 0; i < 30000; ++i, ++seq) {
    const std::uint64_t hash = rng() | 1;
    index.insert(hash, seq, static_cast<std::uint32_t>(seq % 7));
    want.emplace(hash, seq);
  }
  expect_all(index, want);
}

}  // namespace
}  // namespace tally::engine
