// The disk reserve (see disk_guard.h).
#include "engine/disk_guard.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>

#include <spdlog/spdlog.h>

namespace tally::engine {
namespace {

constexpr std::uint64_t kMiB = 1ull << 20;

// "3355443 bytes (3.2 MiB)": exact for scripts, readable for people.
std::string bytes_text(std::uint64_t bytes) {
  const std::uint64_t tenths = bytes * 10 / kMiB;
  return std::to_string(bytes) + " bytes (" + std::to_string(tenths / 10) + "." +
         std::to_string(tenths % 10) + " MiB)";
}

}  // namespace

std::uint64_t disk_reserve_for(const config::StorageConfig& storage, std::uint64_t total_bytes) {
  // total / 100 * percent cannot overflow (percent <= 50) and loses less than 50 bytes.
  const std::uint64_t by_percent = total_bytes / 100 * storage.disk_reserve_percent;
  return std::min(storage.disk_reserve_bytes, by_percent);
}

Status DiskGuard::admit(store::Store& store, const config::StorageConfig& storage) {
  const Result<std::optional<store::DiskSpace>> space = store.disk_space();
  if (space && space->has_value()) {
    const store::DiskSpace& disk = **space;
    const std::uint64_t reserve = disk_reserve_for(storage, disk.total_bytes);
    free_bytes_.store(disk.free_bytes, std::memory_order_relaxed);
    total_bytes_.store(disk.total_bytes, std::memory_order_relaxed);
    reserve_bytes_.store(reserve, std::memory_order_relaxed);
    known_.store(true, std::memory_order_release);
    if (disk.free_bytes < reserve) {
      refuse(Status::insufficient_storage(
          "the data directory's filesystem has " + bytes_text(disk.free_bytes) +
          " free, less than the reserve of " + bytes_text(reserve) +
          " ([storage] disk_reserve_bytes, disk_reserve_percent): writes are refused until "
          "space is freed"));
      return refusal();
    }
    if (write_failed_ && disk.free_bytes < reserve + kResumeFreeBytesMin) {
      refuse(Status::insufficient_storage(
          "a write found the data directory's filesystem full; writes are refused until " +
          bytes_text(reserve + kResumeFreeBytesMin) + " are free (the reserve and " +
          bytes_text(kResumeFreeBytesMin) + "), now " + bytes_text(disk.free_bytes)));
      return refusal();
    }
  } else if (space) {
    known_.store(false, std::memory_order_release);  // a store without a disk
  }
  // else the free space could not be read: the write itself will tell whether there is room.

  if (write_failed_ || refusing()) {
    // Space is back (or the store has no disk to watch). After a failed write the store must
    // resume before anything reaches it; after a refusal for the reserve, resume() is a no-op
    // unless the store stopped by itself meanwhile (a background flush that found no space).
    const Status resumed = store.resume();
    if (!resumed.ok()) {
      refuse(Status(resumed.code(),
                    "writes are refused until the store can write again: " + resumed.message()));
      return refusal();
    }
    write_failed_ = false;
  }
  if (refusing()) {
    {
      std::lock_guard lock(mutex_);
      why_ = Status();
      refusing_.store(false, std::memory_order_release);
    }
    spdlog::info("disk space is back ({} free, reserve {}): writes are accepted again",
                 bytes_text(free_bytes_.load(std::memory_order_relaxed)),
                 bytes_text(reserve_bytes_.load(std::memory_order_relaxed)));
  }
  return Status();
}

void DiskGuard::written(const Status& status) {
  if (status.code() != StatusCode::kInsufficientStorage) {
    return;
  }
  write_failed_ = true;
  refuse(Status::insufficient_storage(
      "a write found the data directory's filesystem full; writes are refused until space is "
      "freed (" +
      status.message() + ")"));
}

Status DiskGuard::refusal() const {
  std::lock_guard lock(mutex_);
  return why_;
}

DiskState DiskGuard::state() const {
  DiskState s;
  s.known = known_.load(std::memory_order_acquire);
  s.free_bytes = free_bytes_.load(std::memory_order_relaxed);
  s.total_bytes = total_bytes_.load(std::memory_order_relaxed);
  s.reserve_bytes = reserve_bytes_.load(std::memory_order_relaxed);
  s.refusing = refusing();
  return s;
}

void DiskGuard::refuse(Status why) {
  bool was_refusing = false;
  std::string message;
  {
    std::lock_guard lock(mutex_);
    was_refusing = refusing_.load(std::memory_order_relaxed);
    message = why.message();
    why_ = std::move(why);
    refusing_.store(true, std::memory_order_release);
  }
  if (!was_refusing) {
    spdlog::warn("{}", message);  // once per refusal, not once per refused request
  }
}

}  // namespace tally::engine
