#include "engine/dedup_index.h"

#include <algorithm>

#include "common/assert.h"

namespace tally::engine {

namespace {

template <typename Table>
void put(Table& t, const DedupIndex::Slot& s) {
  const std::size_t mask = t.size() - 1;
  for (std::size_t i = s.hash & mask;; i = (i + 1) & mask) {
    if (t[i].hash == 0) {
      t[i] = s;
      return;
    }
  }
}

// Sets the location of (hash, old seq) in the slots from `first` on of its probe chain to
// `packed`; false when the entry is not there.
template <typename Table>
bool set(Table& t, std::uint64_t hash, std::size_t first, std::uint64_t old_seq,
         std::uint64_t packed) {
  const std::size_t mask = t.size() - 1;
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    DedupIndex::Slot& s = t[i];
    if (s.hash == 0) {
      return false;
    }
    if (s.hash == hash && i >= first && (s.packed & DedupIndex::kSeqMax) == old_seq) {
      s.packed = packed;
      return true;
    }
  }
}

}  // namespace

DedupIndex::Slot DedupIndex::slot_of(std::uint64_t hash, std::uint64_t seq,
                                     std::uint32_t customer_num) {
  TALLY_ASSERT(hash != 0, "dedup hash 0 is reserved for empty slots");
  TALLY_ASSERT(seq <= kSeqMax && customer_num <= kCustomerMax, "dedup location out of range");
  return Slot{hash, (static_cast<std::uint64_t>(customer_num) << kSeqBits) | seq};
}

void DedupIndex::insert_all(const std::vector<Slot>& entries) {
  if (growing()) {
    move_along(table_.size());  // finishes it
  }
  if (full_at(table_.size(), size_ + entries.size())) {
    std::size_t n = table_.size();
    while (full_at(n, size_ + entries.size())) {
      n *= 2;
    }
    Table sized(n);
    for (std::size_t i = 0; i < table_.size(); ++i) {
      if (table_[i].hash != 0) {
        put(sized, table_[i]);
      }
    }
    table_ = std::move(sized);
  }
  // Far enough ahead that the line arrives before its turn, near enough that it stays cached.
  constexpr std::size_t kAhead = 16;
  const std::size_t mask = table_.size() - 1;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (i + kAhead < entries.size()) {
      __builtin_prefetch(&table_[entries[i + kAhead].hash & mask], 1);
    }
    TALLY_ASSERT(entries[i].hash != 0, "dedup hash 0 is reserved for empty slots");
    put(table_, entries[i]);
  }
  size_ += entries.size();
}

void DedupIndex::insert(std::uint64_t hash, std::uint64_t seq, std::uint32_t customer_num) {
  if (!growing() && full_at(table_.size(), size_ + 1)) {
    grown_ = Table(table_.size() * 2);
    moved_ = 0;
  }
  put(newest(), slot_of(hash, seq, customer_num));
  ++size_;
  if (growing()) {
    move_along(kMovedPerInsert);
  }
}

void DedupIndex::replace(std::uint64_t hash, std::uint64_t old_seq, std::uint64_t new_seq,
                         std::uint32_t customer_num) {
  const std::uint64_t packed = (static_cast<std::uint64_t>(customer_num) << kSeqBits) | new_seq;
  if (growing() && set(grown_, hash, 0, old_seq, packed)) {
    return;
  }
  if (!set(table_, hash, moved_, old_seq, packed)) {
    insert(hash, new_seq, customer_num);
  }
}

void DedupIndex::move_along(std::size_t n) {
  const std::size_t end = std::min(table_.size(), moved_ + n);
  for (; moved_ < end; ++moved_) {
    if (table_[moved_].hash != 0) {
      put(grown_, table_[moved_]);
    }
  }
  if (moved_ == table_.size()) {
    table_ = std::move(grown_);
    grown_ = Table();
    moved_ = 0;
  }
}

}  // namespace tally::engine
