#include "engine/dedup_index.h"

#include <algorithm>
#include <string>
#include <utility>

#include <sys/mman.h>

#include "common/assert.h"

namespace tally::engine {

namespace {

using Slots = std::span<DedupIndex::Slot>;

// Puts `s` in its first free slot from its home on; that slot's position.
std::size_t put(Slots slots, const DedupIndex::Slot& s) {
  const std::size_t mask = slots.size() - 1;
  for (std::size_t i = s.hash & mask;; i = (i + 1) & mask) {
    if (slots[i].hash == 0) {
      slots[i] = s;
      return i;
    }
  }
}

// Sets the location of (hash, old packed seq) to `packed`; the slot's position, or npos when
// the entry is absent.
std::size_t set(Slots slots, std::uint64_t hash, std::uint64_t old_seq, std::uint64_t packed) {
  const std::size_t mask = slots.size() - 1;
  for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
    DedupIndex::Slot& s = slots[i];
    if (s.hash == 0) {
      return std::string::npos;
    }
    if (s.hash == hash && (s.packed & DedupIndex::kSeqMax) == old_seq) {
      s.packed = packed;
      return i;
    }
  }
}

}  // namespace

SlotTable::SlotTable(std::vector<DedupSlot> slots)
    : heap_(std::move(slots)), data_(heap_.data()), size_(heap_.size()) {}

SlotTable SlotTable::of_mapping(void* map, std::size_t map_bytes, DedupSlot* slots, std::size_t n) {
  SlotTable t;
  t.data_ = slots;
  t.size_ = n;
  t.map_ = map;
  t.map_bytes_ = map_bytes;
  return t;
}

SlotTable::SlotTable(SlotTable&& other) noexcept {
  *this = std::move(other);
}

SlotTable& SlotTable::operator=(SlotTable&& other) noexcept {
  if (this != &other) {
    release();
    heap_ = std::move(other.heap_);
    data_ = other.map_ != nullptr ? other.data_ : heap_.data();
    size_ = other.size_;
    map_ = other.map_;
    map_bytes_ = other.map_bytes_;
    other.heap_ = {};
    other.data_ = nullptr;
    other.size_ = 0;
    other.map_ = nullptr;
    other.map_bytes_ = 0;
  }
  return *this;
}

SlotTable::~SlotTable() {
  release();
}

void SlotTable::release() {
  if (map_ != nullptr) {
    ::munmap(map_, map_bytes_);
    map_ = nullptr;
    map_bytes_ = 0;
  }
  heap_ = {};
  data_ = nullptr;
  size_ = 0;
}

DedupIndex::Slot DedupIndex::slot_of(std::uint64_t hash, std::uint64_t seq,
                                     std::uint32_t customer_num) {
  TALLY_ASSERT(hash != 0, "dedup hash 0 is reserved for empty slots");
  TALLY_ASSERT(seq <= kSeqMax && customer_num <= kCustomerMax, "dedup location out of range");
  return Slot{hash, (static_cast<std::uint64_t>(customer_num) << kSeqBits) | seq};
}

void DedupIndex::insert_all(const std::vector<Slot>& entries) {
  prepared_ = {};
  copied_ = 0;
  if (needs_growth(entries.size())) {
    std::size_t n = slots_.size();
    while (needs_growth_of(n, entries.size())) {
      n *= 2;
    }
    slots_ = SlotTable(rehashed(n));
  }
  // Far enough ahead that the line arrives before its turn, near enough that it stays cached.
  constexpr std::size_t kAhead = 16;
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    if (i + kAhead < entries.size()) {
      __builtin_prefetch(&slots_[entries[i + kAhead].hash & mask], 1);
    }
    TALLY_ASSERT(entries[i].hash != 0, "dedup hash 0 is reserved for empty slots");
    put(slots_.span(), entries[i]);
  }
  size_ += entries.size();
}

bool DedupIndex::adopt_table(SlotTable table, std::size_t entries) {
  const std::size_t n = table.size();
  if (size_ != 0 || n < 1024 || (n & (n - 1)) != 0 || needs_growth_of(n, entries)) {
    return false;
  }
  slots_ = std::move(table);
  prepared_ = {};
  copied_ = 0;
  size_ = entries;
  return true;
}

void DedupIndex::insert(std::uint64_t hash, std::uint64_t seq, std::uint32_t customer_num) {
  if (needs_growth(1)) {
    grow();
  }
  const Slot s = slot_of(hash, seq, customer_num);
  if (put(slots_.span(), s) < copied_) {
    put(prepared_, s);  // its slot was copied already: the prepared table gets it now
  }
  ++size_;
}

void DedupIndex::replace(std::uint64_t hash, std::uint64_t old_seq, std::uint64_t new_seq,
                         std::uint32_t customer_num) {
  const std::uint64_t packed = (static_cast<std::uint64_t>(customer_num) << kSeqBits) | new_seq;
  const std::size_t at = set(slots_.span(), hash, old_seq, packed);
  if (at == std::string::npos) {
    insert(hash, new_seq, customer_num);
    return;
  }
  if (at < copied_) {
    set(prepared_, hash, old_seq, packed);
  }
}

std::vector<DedupIndex::Slot> DedupIndex::rehashed(std::size_t n) const {
  std::vector<Slot> out(n);
  for (const Slot& s : slots_.span()) {
    if (s.hash != 0) {
      put(out, s);
    }
  }
  return out;
}

void DedupIndex::prepare_growth(std::size_t extra) {
  if (prepared_.empty()) {
    // Begun at half full, a table that takes kCopiedPerEntry slots' copying per entry added is
    // copied whole before it is 70 % full, unless commits outrun that (below).
    if ((size_ + extra) * 2 <= slots_.size()) {
      return;
    }
    std::size_t n = slots_.size() * 2;
    while ((size_ + extra) * 10 > n * 7) {
      n *= 2;
    }
    prepared_.assign(n, Slot{});
    copied_ = 0;
  }
  // What this commit's entries pay for, or all that is left when they would fill the table.
  const std::size_t n = needs_growth(extra) ? slots_.size() : (extra + 1) * kCopiedPerEntry;
  const std::size_t end = std::min(slots_.size(), copied_ + n);
  for (; copied_ < end; ++copied_) {
    if (slots_[copied_].hash != 0) {
      put(prepared_, slots_[copied_]);
    }
  }
}

void DedupIndex::grow() {
  // A prepared table copied whole holds exactly the current entries (every change after its
  // slot was copied went to both).
  if (copied_ == slots_.size() && prepared_.size() > slots_.size() &&
      !needs_growth_of(prepared_.size(), 1)) {
    slots_ = SlotTable(std::move(prepared_));
    prepared_ = {};
    copied_ = 0;
    return;
  }
  prepared_ = {};
  copied_ = 0;
  slots_ = SlotTable(rehashed(slots_.size() * 2));
}

}  // namespace tally::engine
