// The commit thread's work: the jobs it takes, and the queue they wait in.
//
// Request threads queue jobs (CommitQueue::push, or append_check_usage for consuming checks);
// the one commit thread takes them in order (CommitQueue::take): an admin job alone, or a group
// of ingest jobs up to commit_events_max events, which group_commit.cc turns into one store
// write (Engine::Impl::commit_ingest). No other file touches the queue's state.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include <tally/engine.h>

#include "core/event_parse.h"
#include "engine/codec.h"
#include "store/store.h"

namespace tally::engine {

// A change to the durable reservations, written by a group commit (Impl::write_reservations):
// an open (the record, and a `hold` transaction when it holds credits) or a close (the record
// deleted, and a `release` of what its commit's burn did not take).
struct ReservationOp {
  bool open = false;
  std::string id;
  ReservationRecord record;       // open: the whole record; close: customer_num and credits
  std::uint64_t usage_token = 0;  // close by a commit: the token of its usage event, else 0

  enum Reason { kCommit, kRelease, kExpiry } reason = kCommit;  // of a close
};

// Events for the commit thread: an ingest request, or the usage events of consuming checks.
struct IngestJob {
  core::ParsedEvents parsed;
  IngestOptions options;
  Engine::IngestCallback done;
  std::int64_t start_us = 0;  // steady clock, for latency
  // Usage events of consuming checks: one token per event (already counted against limits
  // in memory), and the callers waiting for durability (check_durability = "sync").
  std::vector<std::uint64_t> check_tokens;
  std::vector<std::function<void(Status)>> check_waiters;
  // Consuming checks whose usage adds up (MeterDef::merges_check_usage) share one event per
  // customer, meter and settle span (check.cc): its quantity or value is their amounts summed,
  // its token the first check's; the tokens of the others are here, with their event's index.
  std::vector<std::pair<std::uint32_t, std::uint64_t>> merged_tokens;

  struct MergedUsage {
    std::uint32_t event = 0;       // index in parsed.batch
    std::uint32_t value_prop = 0;  // index in parsed.batch.props() of a sum meter's value
    core::TimeUs lo = 0;           // the settle span of its first check
    core::TimeUs hi = 0;
    core::Decimal amount;  // the checks' amounts summed
  };

  // (customer number << 32 | meter) -> the job's open merged event of that customer and meter.
  std::unordered_map<std::uint64_t, MergedUsage> merged_usage;
  std::uint64_t checks = 0;                    // consuming checks whose usage the job holds
  std::vector<ReservationOp> reservation_ops;  // written in the same commit as the events
  // dedup_hash of each event's customer and id, computed by the thread that made the job so
  // the commit thread does not (empty: the commit computes them).
  std::vector<std::uint64_t> hashes;

  // What the job weighs in the queue and in a group commit: its checks for checks' usage (an
  // event may hold several), else its events.
  std::uint64_t weight() const { return checks != 0 ? checks : parsed.batch.size(); }
};

struct AdminJob {
  // Runs on the commit thread; adds its writes. A non-OK status fails the job, writes nothing.
  std::function<Status(store::WriteBatch&)> prepare;
  // Runs after the write succeeded, with state_mutex held exclusively.
  std::function<void()> install;
  std::function<void(Status)> done;
};

struct Job {
  std::unique_ptr<IngestJob> ingest;
  std::unique_ptr<AdminJob> admin;
};

// The jobs waiting for the commit thread, in order. Its invariants, kept under its mutex:
// `queued_events_` is the weight (IngestJob::weight: events, or checks) of the queued ingest
// jobs; `open_check_job_` is null or the last queued job; `finished_` <= `submitted_`.
class CommitQueue {
 public:
  // Past this many queued events, ingest and consuming checks are refused (kUnavailable) until
  // the commit thread catches up: memory stays bounded however fast callers are.
  static constexpr std::uint64_t kEventsMax = 500'000;

  // ---- request threads ----
  // Queues an ingest job of `events` events: the queue takes `job` (it is left null). Errors:
  // kUnavailable when shutting down or when the queue cannot take `events` more; `job` is
  // left to the caller then.
  Status push_ingest(std::unique_ptr<IngestJob>& job, std::uint64_t events);
  // Queues an admin job; never refused.
  void push_admin(std::unique_ptr<AdminJob> job);
  // Whether consuming checks must be refused now (the queue holds kEventsMax events).
  bool full() const;
  // Appends usage events to the open check job at the tail of the queue, or to a new one (made
  // by `make_job()`) when there is none or it already holds `job_events_max` events: `fill(job)`
  // adds them. A full job is left to its commit, so group commits stay within
  // commit_events_max and a job's buffers stop growing while the commit thread catches up.
  template <typename MakeJob, typename Fill>
  void append_check_usage(std::size_t job_events_max, MakeJob&& make_job, Fill&& fill);
  std::uint64_t queued_events() const;
  // Returns once every job queued before the call is finished, or at once when no commit
  // thread runs.
  void wait_idle();
  // The commit thread takes what is queued, then stops (take returns kStop).
  void stop();

  // ---- the commit thread ----
  struct Group {
    std::unique_ptr<AdminJob> admin;                 // an admin job, alone
    std::vector<std::unique_ptr<IngestJob>> ingest;  // or ingest jobs, in queue order

    std::size_t jobs() const { return admin ? 1 : ingest.size(); }
  };
  enum class Taken { kGroup, kIdle, kStop };
  void start();
  // Waits up to `idle_wait` for a job. kIdle: none came; kStop: stopping and nothing is left;
  // kGroup: `*out` holds the next admin job, or the ingest jobs at the front up to
  // `events_max` events (at least one job). When the front ingest job has fewer than
  // `events_max` events, waits `gather` first so concurrent requests join the commit.
  Taken take(std::chrono::milliseconds idle_wait, std::chrono::microseconds gather,
             std::uint64_t events_max, Group* out);
  // The jobs of a group taken are finished (answered).
  void finished(std::size_t jobs);

  // How long the usage of answered checks (check_durability = "async", nothing waiting on it)
  // may wait, from its job's first check, for more checks to join its commit while nothing else
  // is queued: one write and fsync for more checks. It adds this much to what a crash can lose.
  static constexpr std::chrono::microseconds kCheckGather{2000};

 private:
  // In take(): waits up to kCheckGather while the queue holds only the open job of async
  // checks' usage, below `events_max`; returns at once when anything else is queued.
  void wait_for_checks(std::unique_lock<std::mutex>& lock, std::uint64_t events_max);

  mutable std::mutex mutex_;
  std::condition_variable work_cv_;
  std::condition_variable idle_cv_;
  std::deque<Job> queue_;
  IngestJob* open_check_job_ = nullptr;  // the queue's last job, taking check events
  std::uint64_t queued_events_ = 0;
  std::uint64_t submitted_ = 0;
  std::uint64_t finished_ = 0;
  bool running_ = false;
  bool stopping_ = false;
};

template <typename MakeJob, typename Fill>
void CommitQueue::append_check_usage(std::size_t job_events_max, MakeJob&& make_job, Fill&& fill) {
  bool wake = false;
  {
    std::lock_guard lock(mutex_);
    IngestJob* job = open_check_job_;
    if (job == nullptr || job->weight() >= job_events_max) {
      Job j;
      j.ingest = make_job();
      job = j.ingest.get();
      queue_.push_back(std::move(j));
      ++submitted_;
      open_check_job_ = job;
      wake = true;
    }
    const std::uint64_t before = job->weight();
    fill(*job);
    queued_events_ += job->weight() - before;
    // A caller now waits on the job: the commit thread stops gathering (wait_for_checks).
    wake = wake || !job->check_waiters.empty() || !job->reservation_ops.empty();
  }
  if (wake) {
    work_cv_.notify_one();
  }
}

}  // namespace tally::engine
