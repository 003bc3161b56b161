// The memory store: an in-process Store for tests and simulations.
//
// One ordered std::map per Space, all behind a single std::shared_mutex. A single lock (rather
// than one per space) is what makes a WriteBatch that touches several spaces atomic: readers see
// all of its ops or none of them.
//
// scan() copies the requested range under a shared lock and calls `fn` after releasing it, so a
// slow callback never blocks the writer and never sees a half-applied batch. The copy costs
// memory proportional to the range, which is fine for the test and simulation sizes this store
// exists for.
//
// Never durable: `sync` is accepted and ignored. size_bytes() is 0.
#include <array>
#include <cstddef>
#include <map>
#include <mutex>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "store/store.h"

namespace tally::store {
namespace {

constexpr std::size_t kSpaceCount = static_cast<std::size_t>(Space::kCount);

bool valid_space(Space space) {
  return static_cast<std::size_t>(space) < kSpaceCount;
}

class MemoryStore final : public Store {
 public:
  Status write(const WriteBatch& batch, bool /*sync*/) override {
    // Validate first so an invalid op cannot leave half a batch applied.
    for (const WriteBatch::Op& op : batch.ops()) {
      if (!valid_space(op.space)) {
        return Status::invalid_argument("write batch names an unknown key space");
      }
    }
    std::unique_lock lock(mu_);
    for (const WriteBatch::Op& op : batch.ops()) {
      Map& map = spaces_[static_cast<std::size_t>(op.space)];
      if (op.is_delete) {
        auto it = map.find(op.key);
        if (it != map.end()) {
          map.erase(it);
        }
      } else {
        map.insert_or_assign(op.key, op.value);
      }
    }
    return Status();
  }

  Result<std::optional<std::string>> get(Space space, std::string_view key) const override {
    if (!valid_space(space)) {
      return Status::invalid_argument("get names an unknown key space");
    }
    std::shared_lock lock(mu_);
    const Map& map = spaces_[static_cast<std::size_t>(space)];
    auto it = map.find(key);
    if (it == map.end()) {
      return std::optional<std::string>();
    }
    return std::optional<std::string>(it->second);
  }

  Status scan(Space space, std::string_view begin, std::string_view end,
              const ScanFn& fn) const override {
    if (!valid_space(space)) {
      return Status::invalid_argument("scan names an unknown key space");
    }
    std::vector<std::pair<std::string, std::string>> rows;
    {
      std::shared_lock lock(mu_);
      const Map& map = spaces_[static_cast<std::size_t>(space)];
      auto it = map.lower_bound(begin);
      auto last = end.empty() ? map.end() : map.lower_bound(end);
      // An inverted range (end < begin) is empty, as it is for RocksDB's upper bound.
      if (!end.empty() && end <= begin) {
        last = it;
      }
      for (; it != last; ++it) {
        rows.emplace_back(it->first, it->second);
      }
    }
    for (const auto& [key, value] : rows) {
      if (!fn(key, value)) {
        break;
      }
    }
    return Status();
  }

  std::uint64_t size_bytes() const override { return 0; }

  std::string_view name() const override { return "memory"; }

 private:
  // std::less<> lets lookups take a string_view without building a std::string.
  using Map = std::map<std::string, std::string, std::less<>>;

  mutable std::shared_mutex mu_;
  std::array<Map, kSpaceCount> spaces_;  // guarded by mu_
};

}  // namespace

std::unique_ptr<Store> make_memory_store() {
  return std::make_unique<MemoryStore>();
}

}  // namespace tally::store
