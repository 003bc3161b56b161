// RocksDB's info log, written with plain stdio (see info_log.h).
#include "store/rocksdb/info_log.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

#include <tally/clock.h>

#include "core/time.h"

namespace tally::store {
namespace {

// A line longer than this is cut: RocksDB's lines are short, except its options dump.
constexpr std::size_t kLineBytesMax = 16 << 10;

class InfoLog final : public rocksdb::Logger {
 public:
  InfoLog(std::string dir, std::size_t file_bytes_max)
      : path_(dir + "/LOG"), old_path_(dir + "/LOG.old"), file_bytes_max_(file_bytes_max) {
    std::lock_guard lock(mutex_);
    open_locked();
  }

  ~InfoLog() override {
    std::lock_guard lock(mutex_);
    if (file_ != nullptr) {
      std::fclose(file_);
      file_ = nullptr;
    }
  }

  using rocksdb::Logger::Logv;

  void Logv(const char* format, va_list ap) override {
    // "2025-01-17T14:43:21.169373Z 140233 message": the time, the thread, the line.
    std::string line = core::format_rfc3339(system_clock().now_us());
    line += ' ';
    line += std::to_string(std::hash<std::thread::id>{}(std::this_thread::get_id()) % 1000000);
    line += ' ';
    char text[kLineBytesMax];
    va_list copy;
    va_copy(copy, ap);
    const int n = std::vsnprintf(text, sizeof(text), format, copy);
    va_end(copy);
    if (n > 0) {
      line.append(text, std::min(static_cast<std::size_t>(n), sizeof(text) - 1));
    }
    if (line.empty() || line.back() != '\n') {
      line += '\n';
    }
    std::lock_guard lock(mutex_);
    if (file_ != nullptr && bytes_ + line.size() > file_bytes_max_) {
      std::fclose(file_);
      file_ = nullptr;
      std::rename(path_.c_str(), old_path_.c_str());  // a failure keeps appending to LOG
      open_locked();
    }
    if (file_ == nullptr) {
      open_locked();  // e.g. space came back since the last try
      if (file_ == nullptr) {
        return;
      }
    }
    // A short write (no space) loses the line or its end; the next line tries again.
    bytes_ += std::fwrite(line.data(), 1, line.size(), file_);
    std::fflush(file_);
    std::clearerr(file_);
  }

  void Flush() override {
    std::lock_guard lock(mutex_);
    if (file_ != nullptr) {
      std::fflush(file_);
      std::clearerr(file_);
    }
  }

  std::size_t GetLogFileSize() const override {
    std::lock_guard lock(mutex_);
    return bytes_;
  }

 private:
  // REQUIRES: mutex_ held.
  void open_locked() {
    file_ = std::fopen(path_.c_str(), "a");
    bytes_ = 0;
    if (file_ != nullptr && std::fseek(file_, 0, SEEK_END) == 0) {
      const long at = std::ftell(file_);
      bytes_ = at > 0 ? static_cast<std::size_t>(at) : 0;
    }
  }

  const std::string path_;
  const std::string old_path_;
  const std::size_t file_bytes_max_;
  mutable std::mutex mutex_;
  std::FILE* file_ = nullptr;  // null when it cannot be opened
  std::size_t bytes_ = 0;      // in the current file
};

}  // namespace

std::shared_ptr<rocksdb::Logger> make_info_log(const std::string& dir, std::size_t file_bytes_max) {
  return std::make_shared<InfoLog>(dir, file_bytes_max);
}

}  // namespace tally::store
