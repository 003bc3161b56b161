// The shard connection pool (see pool.h).
#include "cluster/pool.h"

#include <chrono>
#include <utility>

#include "common/assert.h"

namespace tally::cluster {

PgPool::Lease::~Lease() {
  if (pool_ != nullptr && conn_ != nullptr) {
    pool_->give_back(std::move(conn_));
  }
}

PgPool::PgPool(std::string name, pg::ConnectOptions options, std::size_t size)
    : name_(std::move(name)), options_(std::move(options)), size_(size) {
  TALLY_ASSERT(size_ > 0, "a pool holds at least one connection");
}

Result<PgPool::Lease> PgPool::lease() {
  std::unique_lock lock(mutex_);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(options_.connect_timeout_ms);
  while (idle_.empty() && open_ >= size_) {
    if (returned_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() &&
        open_ >= size_) {
      return Status::unavailable("every connection to " + name_ + " stayed busy for " +
                                 std::to_string(options_.connect_timeout_ms) + " ms");
    }
  }
  if (!idle_.empty()) {
    std::unique_ptr<pg::Connection> conn = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(conn));
  }
  ++open_;
  lock.unlock();
  auto conn = pg::Connection::connect(options_);
  if (!conn) {
    lock.lock();
    --open_;
    returned_.notify_one();
    return Status(conn.error().code(), name_ + ": " + conn.error().message(),
                  conn.error().details_json());
  }
  return Lease(this, std::move(*conn));
}

void PgPool::give_back(std::unique_ptr<pg::Connection> conn) {
  std::lock_guard lock(mutex_);
  if (conn->alive()) {
    idle_.push_back(std::move(conn));
  } else {
    --open_;
  }
  returned_.notify_one();
}

}  // namespace tally::cluster
