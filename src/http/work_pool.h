// The pool of threads that runs the requests that may take long (scans of stored events,
// exports, reports, archiving), so they never run on the HTTP I/O threads, each of which serves
// many connections: a one-second scan there would stall every connection of its thread.
//
// Bounded: at most `queue_max` new tasks wait; beyond that try_submit refuses and the caller
// answers 503. The next step of work already under way (the next piece of a streamed export)
// is queued past the bound, so an export is never cut short for lack of room; each stream has
// at most one such step waiting, so they are bounded by the number of connections.
//
// Thread safety: every method may be called from any thread, tasks included.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tally::http {

struct WorkPoolStats {
  std::uint64_t queued = 0;    // tasks waiting now
  std::uint64_t running = 0;   // tasks running now
  std::uint64_t rejected = 0;  // try_submit refusals since the start
};

class WorkPool {
 public:
  // Starts `threads` threads (at least one).
  WorkPool(int threads, std::uint32_t queue_max);
  // Stops the pool (see stop()).
  ~WorkPool();

  WorkPool(const WorkPool&) = delete;
  WorkPool& operator=(const WorkPool&) = delete;

  // Queues `task` unless queue_max new tasks wait already or the pool stopped. Returns whether
  // it was queued; a refused task is destroyed by the caller's copy going out of scope.
  bool try_submit(std::function<void()> task);
  // Queues the next step of work already admitted, past the bound. False once stopped.
  bool submit_continuation(std::function<void()> task);

  // Takes no more tasks, lets the running ones finish, destroys the waiting ones without running
  // them (a dropped Responder answers its request as dropped), and joins the threads.
  // Idempotent.
  void stop();

  WorkPoolStats stats() const;

 private:
  struct Task {
    std::function<void()> fn;
    bool continuation = false;
  };

  void run();

  const std::uint32_t queue_max_;
  mutable std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Task> tasks_;         // guarded by mutex_
  std::uint32_t new_waiting_ = 0;  // tasks_ that are not continuations; guarded by mutex_
  std::uint64_t running_ = 0;      // guarded by mutex_
  std::uint64_t rejected_ = 0;     // guarded by mutex_
  bool stopping_ = false;          // guarded by mutex_
  std::vector<std::thread> threads_;
};

}  // namespace tally::http
