#include "engine/dedup_index.h"

#include "common/assert.h"

namespace tally::engine {

void DedupIndex::insert(std::uint64_t hash, std::uint64_t seq, std::uint32_t customer_num) {
  TALLY_ASSERT(hash != 0, "dedup hash 0 is reserved for empty slots");
  TALLY_ASSERT(seq <= kSeqMax && customer_num <= kCustomerMax, "dedup location out of range");
  if ((size_ + 1) * 10 > slots_.size() * 7) {
    grow();
  }
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    if (slots_[i].hash == 0) {
      slots_[i] = Slot{hash, (static_cast<std::uint64_t>(customer_num) << kSeqBits) | seq};
      ++size_;
      return;
    }
  }
}

void DedupIndex::replace(std::uint64_t hash, std::uint64_t old_seq, std::uint64_t new_seq,
                         std::uint32_t customer_num) {
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    Slot& s = slots_[i];
    if (s.hash == 0) {
      insert(hash, new_seq, customer_num);
      return;
    }
    if (s.hash == hash && (s.packed & kSeqMax) == old_seq) {
      s.packed = (static_cast<std::uint64_t>(customer_num) << kSeqBits) | new_seq;
      return;
    }
  }
}

void DedupIndex::grow() {
  std::vector<Slot> old;
  old.swap(slots_);
  slots_.assign(old.size() * 2, Slot{});
  const std::size_t mask = slots_.size() - 1;
  for (const Slot& s : old) {
    if (s.hash == 0) {
      continue;
    }
    for (std::size_t i = s.hash & mask;; i = (i + 1) & mask) {
      if (slots_[i].hash == 0) {
        slots_[i] = s;
        break;
      }
    }
  }
}

}  // namespace tally::engine
