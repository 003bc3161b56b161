// The in-memory dedup index: an open-addressing hash table from the 64-bit hash of
// (customer, event id) to where that event is stored (its sequence number and customer number).
//
// A hash match is only a candidate: the engine confirms it by reading the stored event and
// comparing the full id, so dedup is exact. 16 bytes per slot, at most 70 % full.
//
// Thread safety: only the commit thread changes it; readers (a retried check's id) read it under
// the engine's state_mutex held shared, the commit thread changes it under that mutex held
// exclusively. Growing a large table takes long (rehashing ten million slots took a second,
// every ingest request waiting), so the commit thread builds the grown table beside the current
// one without the mutex, a little before each commit (prepare_growth: from half full on, it
// copies kCopiedPerEntry slots of the current table per entry the commit adds, reading the
// current table, which nothing else changes), and only swaps it in under the mutex once it is
// whole. An entry added meanwhile goes to the grown table too when its slot was copied already;
// readers only ever read the current table.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace tally::engine {

// One slot of the table.
struct DedupSlot {
  std::uint64_t hash = 0;    // 0 = empty
  std::uint64_t packed = 0;  // customer_num << 40 | seq
};

// The memory of a table's slots: a vector on the heap, or a mapping of its own (dedup_file.cc
// reads a table a clean stop wrote into anonymous memory, on 2 MB pages where the kernel allows,
// without the vector's zeroing pass). Move only.
class SlotTable {
 public:
  SlotTable() = default;
  explicit SlotTable(std::vector<DedupSlot> slots);
  // Owns the writable mapping [map, map + map_bytes) (unmapped when this goes), whose slots are
  // the n at `slots`.
  static SlotTable of_mapping(void* map, std::size_t map_bytes, DedupSlot* slots, std::size_t n);
  SlotTable(SlotTable&& other) noexcept;
  SlotTable& operator=(SlotTable&& other) noexcept;
  SlotTable(const SlotTable&) = delete;
  SlotTable& operator=(const SlotTable&) = delete;
  ~SlotTable();

  std::size_t size() const { return size_; }

  DedupSlot& operator[](std::size_t i) { return data_[i]; }

  const DedupSlot& operator[](std::size_t i) const { return data_[i]; }

  std::span<DedupSlot> span() { return {data_, size_}; }

  std::span<const DedupSlot> span() const { return {data_, size_}; }

  bool mapped() const { return map_ != nullptr; }

 private:
  void release();

  std::vector<DedupSlot> heap_;
  DedupSlot* data_ = nullptr;
  std::size_t size_ = 0;
  void* map_ = nullptr;
  std::size_t map_bytes_ = 0;
};

class DedupIndex {
 public:
  using Slot = DedupSlot;
  static constexpr std::uint64_t kSeqBits = 40;
  static constexpr std::uint64_t kSeqMax = (1ull << kSeqBits) - 1;
  static constexpr std::uint32_t kCustomerMax = (1u << 24) - 1;
  // Slots of the current table copied into the grown one per entry a commit adds: begun at half
  // full, the copy is whole after N / 8 entries, before the table of N slots is 70 % full.
  static constexpr std::size_t kCopiedPerEntry = 8;

  struct Location {
    std::uint64_t seq = 0;
    std::uint32_t customer_num = 0;
  };

  DedupIndex() : slots_(std::vector<Slot>(1024)) {}

  // Adds an entry; several entries may share a hash (true collisions).
  void insert(std::uint64_t hash, std::uint64_t seq, std::uint32_t customer_num);

  // The slot that insert(hash, seq, customer_num) would fill.
  static Slot slot_of(std::uint64_t hash, std::uint64_t seq, std::uint32_t customer_num);

  // Adds every entry at once, as insert() each would (recovery): the table is sized once for
  // all of them, and each entry's home slot is fetched ahead of its turn, so loading tens of
  // millions of entries neither rehashes nor waits on memory one slot at a time.
  void insert_all(const std::vector<Slot>& entries);

  // Calls fn(Location) for every entry with this hash.
  template <typename Fn>
  void find(std::uint64_t hash, Fn&& fn) const {
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const Slot& s = slots_[i];
      if (s.hash == 0) {
        return;
      }
      if (s.hash == hash) {
        fn(Location{s.packed & kSeqMax, static_cast<std::uint32_t>(s.packed >> kSeqBits)});
      }
    }
  }

  // Replaces the location of the entry (hash, old_seq) with new_seq (an event accepted again
  // after its dedup window ran out).
  void replace(std::uint64_t hash, std::uint64_t old_seq, std::uint64_t new_seq,
               std::uint32_t customer_num);

  std::size_t size() const { return size_; }

  // The table as it is, empty slots included: what dedup_file.cc writes, to be read back whole
  // by adopt_table.
  std::span<const Slot> table() const { return slots_.span(); }

  // Whether the table is still the one adopt_table took from a file (it stops being one when the
  // table grows).
  bool table_from_file() const { return slots_.mapped(); }

  // Makes `table`, holding `entries` entries, this index's table, as table() gave it (restart:
  // one block read back instead of every entry inserted again). False, changing nothing, unless
  // this index is empty and the table is one insert() could have made: a power of two of at
  // least 1,024 slots, at most 70 % full. The caller has checked the slots' contents (a file's
  // checksum): `entries` must be its count of non-empty slots.
  [[nodiscard]] bool adopt_table(SlotTable table, std::size_t entries);

  std::size_t bytes() const { return slots_.size() * sizeof(Slot); }

  // Copies the next part of the current table into the grown one (begun once the table is half
  // full), all that is left when `extra` more entries would make it grow; insert() swaps a
  // whole copy in instead of rehashing. Commit thread only, before it takes the mutex to insert
  // its `extra` entries.
  void prepare_growth(std::size_t extra);

  // Whether a grown table is being copied, and how many slots of the current table it holds
  // (for tests).
  bool preparing() const { return !prepared_.empty(); }

  std::size_t copied() const { return copied_; }

 private:
  bool needs_growth(std::size_t extra) const { return needs_growth_of(slots_.size(), extra); }

  bool needs_growth_of(std::size_t slots, std::size_t extra) const {
    return (size_ + extra) * 10 > slots * 7;
  }

  // A table of `n` slots holding the entries of slots_.
  std::vector<Slot> rehashed(std::size_t n) const;
  void grow();

  SlotTable slots_;
  std::vector<Slot> prepared_;  // a grown copy of slots_ (prepare_growth), or empty
  std::size_t copied_ = 0;      // slots_ before this one are in prepared_
  std::size_t size_ = 0;
};

}  // namespace tally::engine
