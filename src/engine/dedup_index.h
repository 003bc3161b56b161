// The in-memory dedup index: an open-addressing hash table from the 64-bit hash of
// (customer, event id) to where that event is stored (its sequence number and customer number).
//
// A hash match is only a candidate: the engine confirms it by reading the stored event and
// comparing the full id, so dedup is exact. 16 bytes per slot, at most 70 % full.
//
// Growing never stops the commit thread for long: rehashing tens of millions of slots at once
// took a second. A table that reaches 70 % gets a twice larger one beside it, allocated
// zeroed by the kernel page by page as it is written; new entries go to the larger one, and
// every insert moves the next kMovedPerInsert slots of the old one over, so the old one is
// emptied long before the larger one could fill. Meanwhile a lookup reads both: the larger one,
// then the old one from the first slot not moved yet (entries are never removed from the old
// one, so its probe chains stay whole; those before that slot are in the larger one).
//
// Thread safety: only the commit thread changes it; readers (a retried check's id) read it under
// the engine's state_mutex held shared, the commit thread changes it under that mutex held
// exclusively.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <new>
#include <utility>
#include <vector>

namespace tally::engine {

class DedupIndex {
 public:
  static constexpr std::uint64_t kSeqBits = 40;
  static constexpr std::uint64_t kSeqMax = (1ull << kSeqBits) - 1;
  static constexpr std::uint32_t kCustomerMax = (1u << 24) - 1;
  // Slots of the old table moved per insert while growing: a growth that starts at 70 % of N
  // slots ends after N / 8 inserts, when the new table of 2N is at most 41 % full.
  static constexpr std::size_t kMovedPerInsert = 8;

  struct Location {
    std::uint64_t seq = 0;
    std::uint32_t customer_num = 0;
  };

  struct Slot {
    std::uint64_t hash = 0;    // 0 = empty
    std::uint64_t packed = 0;  // customer_num << 40 | seq
  };

  DedupIndex() : table_(kSlotsMin) {}

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
    if (growing()) {
      find_in(grown_, hash, 0, fn);
    }
    find_in(table_, hash, moved_, fn);
  }

  // Replaces the location of the entry (hash, old_seq) with new_seq (an event accepted again
  // after its dedup window ran out).
  void replace(std::uint64_t hash, std::uint64_t old_seq, std::uint64_t new_seq,
               std::uint32_t customer_num);

  std::size_t size() const { return size_; }

  std::size_t bytes() const { return (table_.size() + grown_.size()) * sizeof(Slot); }

  // Whether a growth is under way (two tables).
  bool growing() const { return grown_.size() != 0; }

 private:
  static constexpr std::size_t kSlotsMin = 1024;  // a power of two

  // A power-of-two array of slots, zeroed by calloc: a large one is mapped pages the kernel
  // zeroes when first written, not memset up front.
  class Table {
   public:
    Table() = default;

    explicit Table(std::size_t n)
        : slots_(static_cast<Slot*>(std::calloc(n, sizeof(Slot)))), size_(n) {
      if (slots_ == nullptr) {
        throw std::bad_alloc();
      }
    }

    Table(Table&& o) noexcept : slots_(std::move(o.slots_)), size_(std::exchange(o.size_, 0)) {}

    Table& operator=(Table&& o) noexcept {
      slots_ = std::move(o.slots_);
      size_ = std::exchange(o.size_, 0);
      return *this;
    }

    std::size_t size() const { return size_; }

    Slot& operator[](std::size_t i) { return slots_.get()[i]; }

    const Slot& operator[](std::size_t i) const { return slots_.get()[i]; }

   private:
    struct Free {
      void operator()(Slot* p) const { std::free(p); }
    };

    std::unique_ptr<Slot, Free> slots_;
    std::size_t size_ = 0;
  };

  // fn(Location) for the entries with this hash in slots from `first` on of `t`'s probe chain.
  template <typename Fn>
  static void find_in(const Table& t, std::uint64_t hash, std::size_t first, Fn& fn) {
    const std::size_t mask = t.size() - 1;
    for (std::size_t i = hash & mask;; i = (i + 1) & mask) {
      const Slot& s = t[i];
      if (s.hash == 0) {
        return;
      }
      if (s.hash == hash && i >= first) {
        fn(Location{s.packed & kSeqMax, static_cast<std::uint32_t>(s.packed >> kSeqBits)});
      }
    }
  }

  static bool full_at(std::size_t slots, std::size_t entries) { return entries * 10 > slots * 7; }

  // The table new entries go to.
  Table& newest() { return growing() ? grown_ : table_; }

  // Moves up to `n` more slots of table_ into grown_; when all are, grown_ becomes table_.
  void move_along(std::size_t n);

  Table table_;            // the table; while growing, the one being moved out of
  Table grown_;            // while growing: table_'s slots before moved_, and every entry since
  std::size_t moved_ = 0;  // while growing: table_'s slots before this one are in grown_
  std::size_t size_ = 0;
};

}  // namespace tally::engine
