#include "http/work_pool.h"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <utility>

namespace tally::http {

WorkPool::WorkPool(int threads, std::uint32_t queue_max) : queue_max_(queue_max) {
  const int n = std::max(threads, 1);
  threads_.reserve(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    threads_.emplace_back([this] { run(); });
  }
}

WorkPool::~WorkPool() {
  stop();
}

bool WorkPool::try_submit(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || new_waiting_ >= queue_max_) {
      ++rejected_;
      return false;
    }
    tasks_.push_back(Task{std::move(task), false});
    ++new_waiting_;
  }
  ready_.notify_one();
  return true;
}

bool WorkPool::submit_continuation(std::function<void()> task) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      return false;
    }
    tasks_.push_back(Task{std::move(task), true});
  }
  ready_.notify_one();
  return true;
}

void WorkPool::stop() {
  std::deque<Task> dropped;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    dropped.swap(tasks_);
    new_waiting_ = 0;
  }
  ready_.notify_all();
  dropped.clear();  // outside the lock: destroying a task may answer its request
  for (auto& t : threads_) {
    if (t.joinable()) {
      t.join();
    }
  }
}

WorkPoolStats WorkPool::stats() const {
  std::lock_guard lock(mutex_);
  WorkPoolStats s;
  s.queued = tasks_.size();
  s.running = running_;
  s.rejected = rejected_;
  return s;
}

void WorkPool::run() {
  for (;;) {
    Task task;
    {
      std::unique_lock lock(mutex_);
      ready_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
      if (tasks_.empty()) {
        return;  // stopping
      }
      task = std::move(tasks_.front());
      tasks_.pop_front();
      if (!task.continuation) {
        --new_waiting_;
      }
      ++running_;
    }
    try {
      task.fn();
    } catch (const std::exception& e) {
      // Tasks answer their own errors; this is bad_alloc or a bug. Keep the thread.
      std::fprintf(stderr, "tally: work pool task threw: %s\n", e.what());
    } catch (...) {
      std::fprintf(stderr, "tally: work pool task threw\n");
    }
    task.fn = nullptr;  // what it holds goes before the thread waits again
    std::lock_guard lock(mutex_);
    --running_;
  }
}

}  // namespace tally::http
