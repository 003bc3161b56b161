// The dedup index: every entry found after growth, whether the grown table was prepared
// beforehand (outside the engine's lock) or built on the spot, and a prepared table kept equal
// to the current one by every change until it is swapped in.
#include "engine/dedup_index.h"

#include <map>
#include <random>

#include <gtest/gtest.h>

namespace tally::engine {
namespace {

// Every (hash -> seq) of `want` is in the index with its customer.
void expect_all(const DedupIndex& index, const std::multimap<std::uint64_t, std::uint64_t>& want) {
  for (const auto& [hash, seq] : want) {
    bool found = false;
    index.find(hash, [&](DedupIndex::Location l) {
      found = found || (l.seq == seq && l.customer_num == static_cast<std::uint32_t>(seq % 7));
    });
    ASSERT_TRUE(found) << "hash " << hash << " seq " << seq;
  }
  EXPECT_EQ(index.size(), want.size());
}

TEST(DedupIndexTest, PreparedGrowthIsTheSameIndexAsGrowthOnTheSpot) {
  std::mt19937_64 rng(11);
  for (bool prepare : {false, true}) {
    DedupIndex index;
    std::multimap<std::uint64_t, std::uint64_t> want;
    std::uint64_t seq = 1;
    for (int commit = 0; commit < 200; ++commit) {
      const std::size_t n = 1 + rng() % 300;
      if (prepare) {
        index.prepare_growth(n);
      }
      for (std::size_t i = 0; i < n; ++i, ++seq) {
        // Some true collisions: a few hashes repeat.
        const std::uint64_t hash =
            (rng() % 50 == 0 && !want.empty()) ? want.begin()->first : (rng() | 1);
        index.insert(hash, seq, static_cast<std::uint32_t>(seq % 7));
        want.emplace(hash, seq);
      }
      if (commit % 17 == 0) {
        // An event accepted again after its window: its location moves.
        auto it = std::next(want.begin(), static_cast<long>(rng() % want.size()));
        const std::uint64_t moved = seq++;
        index.replace(it->first, it->second, moved, static_cast<std::uint32_t>(moved % 7));
        want.emplace(it->first, moved);
        want.erase(it);
      }
    }
    expect_all(index, want);
    EXPECT_GT(index.bytes(), want.size() * 16) << "at most 70 % full";
  }
}

TEST(DedupIndexTest, APreparedTableStaysEqualWhenTheCommitIsLostAndMoreComesFirst) {
  DedupIndex index;
  std::multimap<std::uint64_t, std::uint64_t> want;
  std::uint64_t seq = 1;
  auto add = [&](std::size_t n) {
    for (std::size_t i = 0; i < n; ++i, ++seq) {
      const std::uint64_t hash = seq * 0x9E3779B97F4A7C15ull | 1;
      index.insert(hash, seq, static_cast<std::uint32_t>(seq % 7));
      want.emplace(hash, seq);
    }
  };
  add(700);
  index.prepare_growth(500);  // a commit that then fails: nothing inserted
  add(10);                    // the next commits insert without growing at first ...
  add(600);                   // ... then grow: the prepared table must hold all of them
  expect_all(index, want);
}

TEST(DedupIndexTest, InsertingAllAtOnceIsInsertingEach) {
  std::mt19937_64 rng(5);
  DedupIndex index;
  std::multimap<std::uint64_t, std::uint64_t> want;
  std::uint64_t seq = 1;
  for (std::size_t n : {0, 3, 900, 20000}) {  // into an empty table, then growing ones
    index.prepare_growth(n);                  // a prepared table is dropped, not left behind stale
    std::vector<DedupIndex::Slot> all;
    for (std::size_t i = 0; i < n; ++i, ++seq) {
      const std::uint64_t hash =
          (rng() % 40 == 0 && !want.empty()) ? want.begin()->first : (rng() | 1);
      all.push_back(DedupIndex::slot_of(hash, seq, static_cast<std::uint32_t>(seq % 7)));
      want.emplace(hash, seq);
    }
    index.insert_all(all);
    expect_all(index, want);
    EXPECT_GT(index.bytes(), want.size() * 16) << "at most 70 % full";
  }
  // One at a time afterwards, across the next growth.
  for (int i = 0; i < 30000; ++i, ++seq) {
    const std::uint64_t hash = rng() | 1;
    index.insert(hash, seq, static_cast<std::uint32_t>(seq % 7));
    want.emplace(hash, seq);
  }
  expect_all(index, want);
}

TEST(DedupIndexTest, TheGrownTableIsCopiedAPartPerCommitAndSwappedInWhole) {
  DedupIndex index;
  std::multimap<std::uint64_t, std::uint64_t> want;
  std::uint64_t seq = 1;
  int commits_copying = 0;
  // Commits of 10 entries, each prepared first, as the commit thread does.
  while (index.bytes() == 1024 * sizeof(DedupIndex::Slot)) {
    const std::size_t before = index.copied();
    index.prepare_growth(10);
    if (index.copied() != before) {
      ++commits_copying;
      // Half full at least, and no more copied than this commit pays for.
      EXPECT_GE(index.size() + 10, 512u);
      EXPECT_LE(index.copied() - before, 11 * DedupIndex::kCopiedPerEntry);
    }
    for (int i = 0; i < 10; ++i, ++seq) {
      const std::uint64_t hash = seq * 0x9E3779B97F4A7C15ull | 1;
      index.insert(hash, seq, static_cast<std::uint32_t>(seq % 7));
      want.emplace(hash, seq);
    }
    expect_all(index, want);  // readers see the current table, whole, throughout
  }
  // 1,024 slots copied 88 a commit: 12 commits, swapped in when the table reached 70 % (717
  // entries), with no rehash: no commit copied more.
  EXPECT_EQ(commits_copying, 12);
  EXPECT_EQ(index.size(), 720u);
  EXPECT_EQ(index.bytes(), 2048 * sizeof(DedupIndex::Slot));
  EXPECT_FALSE(index.preparing());
  expect_all(index, want);
}

// A heap copy of an index's table.
SlotTable copy_of(const DedupIndex& index) {
  return SlotTable(std::vector<DedupIndex::Slot>(index.table().begin(), index.table().end()));
}

TEST(DedupIndexTest, AnAdoptedTableIsTheIndexItWasAndOnlyAWellFormedOneIsAdopted) {
  DedupIndex index;
  std::multimap<std::uint64_t, std::uint64_t> want;
  std::mt19937_64 rng(5);
  for (std::uint64_t seq = 1; seq <= 2000; ++seq) {
    const std::uint64_t hash = rng() | 1;
    index.insert(hash, seq, static_cast<std::uint32_t>(seq % 7));
    want.emplace(hash, seq);
  }
  DedupIndex adopted;
  ASSERT_TRUE(adopted.adopt_table(copy_of(index), index.size()));
  expect_all(adopted, want);
  EXPECT_EQ(adopted.bytes(), index.bytes());
  EXPECT_FALSE(adopted.table_from_file());
  for (std::uint64_t seq = 2001; seq <= 6000; ++seq) {  // grows past it
    const std::uint64_t hash = rng() | 1;
    adopted.insert(hash, seq, static_cast<std::uint32_t>(seq % 7));
    want.emplace(hash, seq);
  }
  expect_all(adopted, want);

  // Refused, changing nothing: into an index holding entries, a size not a power of two or
  // under 1,024 slots, more entries than 70 % of the slots.
  EXPECT_FALSE(adopted.adopt_table(copy_of(index), index.size()));
  expect_all(adopted, want);
  DedupIndex fresh;
  EXPECT_FALSE(fresh.adopt_table(SlotTable(std::vector<DedupIndex::Slot>(3000)), 0));
  EXPECT_FALSE(fresh.adopt_table(SlotTable(std::vector<DedupIndex::Slot>(512)), 0));
  EXPECT_FALSE(fresh.adopt_table(SlotTable(std::vector<DedupIndex::Slot>(1024)), 717));
  EXPECT_EQ(fresh.size(), 0u);
  EXPECT_EQ(fresh.bytes(), 1024u * 16);
  EXPECT_TRUE(fresh.adopt_table(SlotTable(std::vector<DedupIndex::Slot>(2048)), 0));
  EXPECT_EQ(fresh.bytes(), 2048u * 16);
}

}  // namespace
}  // namespace tally::engine
