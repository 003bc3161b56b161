// The simulated disk (sim_disk.h).
#include "simulation/sim_disk.h"

#include <utility>

namespace tally::sim {

namespace {

constexpr std::size_t kSpaceCount = static_cast<std::size_t>(store::Space::kCount);

bool valid_space(store::Space space) {
  return static_cast<std::size_t>(space) < kSpaceCount;
}

}  // namespace

// The store::Store the engine holds: every call goes to the disk, writes tagged with the
// generation the store was opened in.
class Disk::DiskStore final : public store::Store {
 public:
  DiskStore(Disk* disk, std::uint64_t generation) : disk_(disk), generation_(generation) {}

  Status write(const store::WriteBatch& batch, bool sync) override {
    return disk_->write(generation_, batch, sync);
  }

  Result<std::optional<std::string>> get(store::Space space, std::string_view key) const override {
    return disk_->get(space, key);
  }

  Status scan(store::Space space, std::string_view begin, std::string_view end,
              const store::ScanFn& fn) const override {
    return disk_->scan(space, begin, end, fn);
  }

  std::uint64_t size_bytes() const override { return 0; }

  std::string_view name() const override { return "simulated"; }

 private:
  Disk* disk_;
  std::uint64_t generation_;
};

Disk::Disk(std::uint64_t seed, DiskFaults faults) : rng_(seed), faults_(faults) {}

Disk::~Disk() = default;

std::unique_ptr<store::Store> Disk::store() {
  std::lock_guard lock(mu_);
  return std::make_unique<DiskStore>(this, generation_);
}

void Disk::crash() {
  {
    std::lock_guard lock(mu_);
    held_ = false;
    if (!crashed_) {
      crashed_ = true;
      ++generation_;
      ++counters_.crashes;
    }
  }
  held_cv_.notify_all();
}

bool Disk::crashed() const {
  std::lock_guard lock(mu_);
  return crashed_;
}

void Disk::recover() {
  std::lock_guard lock(mu_);
  if (!crashed_) {
    return;
  }
  if (torn_.has_value()) {
    // The write the process died in reached the log, so everything logged before it did too.
    unsynced_.clear();
    store::WriteBatch batch = std::move(*torn_);
    torn_.reset();
    apply(batch, nullptr);
  } else {
    // The log survives up to some point after the last sync: a prefix of the unsynced writes.
    const std::size_t kept = faults_.lose_unsynced && faults_enabled_
                                 ? static_cast<std::size_t>(rng_.below(unsynced_.size() + 1))
                                 : unsynced_.size();
    counters_.unsynced_lost += unsynced_.size() - kept;
    for (std::size_t i = unsynced_.size(); i > kept; --i) {
      const std::vector<Undo>& undo = unsynced_[i - 1];
      for (auto it = undo.rbegin(); it != undo.rend(); ++it) {
        Map& map = live_[static_cast<std::size_t>(it->space)];
        if (it->previous.has_value()) {
          map.insert_or_assign(it->key, *it->previous);
        } else {
          map.erase(it->key);
        }
      }
    }
    unsynced_.clear();
  }
  crashed_ = false;
}

void Disk::hold_writes() {
  std::lock_guard lock(mu_);
  held_ = true;
}

void Disk::release_writes() {
  {
    std::lock_guard lock(mu_);
    held_ = false;
  }
  held_cv_.notify_all();
}

void Disk::set_faults_enabled(bool on) {
  std::lock_guard lock(mu_);
  faults_enabled_ = on;
}

DiskCounters Disk::counters() const {
  std::lock_guard lock(mu_);
  return counters_;
}

void Disk::apply(const store::WriteBatch& batch, std::vector<Undo>* undo) {
  for (const store::WriteBatch::Op& op : batch.ops()) {
    Map& map = live_[static_cast<std::size_t>(op.space)];
    auto it = map.find(op.key);
    if (undo != nullptr) {
      undo->push_back(
          Undo{op.space, op.key,
               it == map.end() ? std::nullopt : std::optional<std::string>(it->second)});
    }
    if (op.is_delete) {
      if (it != map.end()) {
        map.erase(it);
      }
    } else if (it != map.end()) {
      it->second = op.value;
    } else {
      map.emplace(op.key, op.value);
    }
  }
}

Status Disk::write(std::uint64_t generation, const store::WriteBatch& batch, bool sync) {
  for (const store::WriteBatch::Op& op : batch.ops()) {
    if (!valid_space(op.space)) {
      return Status::invalid_argument("write batch names an unknown key space");
    }
  }
  std::unique_lock lock(mu_);
  held_cv_.wait(lock, [&] { return !held_ || crashed_; });
  if (crashed_ || generation != generation_) {
    ++counters_.refused;
    return Status::io_error("simulated: the process has crashed");
  }
  if (faults_enabled_ && rng_.chance(faults_.write_fail_ppm)) {
    ++counters_.failed;
    return Status::io_error("simulated: write failed");
  }
  if (faults_enabled_ && rng_.chance(faults_.write_crash_ppm)) {
    ++counters_.crashed_in_write;
    if (rng_.below(2) == 0) {
      ++counters_.torn_applied;
      torn_ = batch;
    }
    crashed_ = true;
    ++generation_;
    ++counters_.crashes;
    lock.unlock();
    held_cv_.notify_all();
    return Status::io_error("simulated: the process crashed during the write");
  }
  ++counters_.writes;
  bool durable = sync;
  if (sync && faults_enabled_ && rng_.chance(faults_.lie_sync_ppm)) {
    ++counters_.lied_syncs;
    durable = false;
  }
  if (durable) {
    // An fsync of the log makes every earlier write durable with this one.
    unsynced_.clear();
    apply(batch, nullptr);
  } else {
    std::vector<Undo> undo;
    apply(batch, &undo);
    unsynced_.push_back(std::move(undo));
  }
  return Status();
}

Result<std::optional<std::string>> Disk::get(store::Space space, std::string_view key) const {
  if (!valid_space(space)) {
    return Status::invalid_argument("get names an unknown key space");
  }
  std::lock_guard lock(mu_);
  const Map& map = live_[static_cast<std::size_t>(space)];
  auto it = map.find(key);
  if (it == map.end()) {
    return std::optional<std::string>();
  }
  return std::optional<std::string>(it->second);
}

Status Disk::scan(store::Space space, std::string_view begin, std::string_view end,
                  const store::ScanFn& fn) const {
  if (!valid_space(space)) {
    return Status::invalid_argument("scan names an unknown key space");
  }
  // Copied under the lock, visited after it, as the memory store does: a slow callback never
  // blocks a write and never sees half of one.
  std::vector<std::pair<std::string, std::string>> rows;
  {
    std::lock_guard lock(mu_);
    const Map& map = live_[static_cast<std::size_t>(space)];
    auto it = map.lower_bound(begin);
    auto last = end.empty() ? map.end() : map.lower_bound(end);
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

}  // namespace tally::sim
