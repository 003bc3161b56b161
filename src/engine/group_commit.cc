// The commit thread and its group commit.
//
// The commit thread takes queued jobs in order (CommitQueue::take). An admin job runs alone:
// prepare its writes, write, install. Ingest jobs are committed together, as named steps
// (IngestCommit): for each job, read the stored copies behind its dedup index hits; then for
// each event resolve the customer, decide whether it is a duplicate (within this commit, then
// against the stored copies), give it the next sequence number, feed its meters and price it,
// and add it to its customer's block. One store write carries the blocks, the dedup record,
// the new state of every touched minute aggregate, new distinct values, new customers, the next
// sequence number, reservations and the ledger; with fsync on it returns only when durable.
// Only then is the in-memory state installed and are the callers answered, so nothing a reader
// sees or a client was told can be lost by a crash. A failed write rolls the commit back: its
// sequence numbers and customers are not used, its checks' holds are freed.
#include "engine/group_commit.h"

#include <algorithm>
#include <unordered_map>

#include "common/assert.h"
#include "core/ids.h"
#include "engine/engine_impl.h"
#include "engine/whole_batch.h"

namespace tally {

namespace engine {

// ---- the queue ------------------------------------------------------------------------------

Status CommitQueue::push_ingest(std::unique_ptr<IngestJob>& job, std::uint64_t events) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_) {
      return Status::unavailable("shutting down");
    }
    if (queued_events_ + events > kEventsMax) {
      return Status::unavailable("the ingest queue is full; retry shortly");
    }
    Job j;
    j.ingest = std::move(job);
    queue_.push_back(std::move(j));
    queued_events_ += events;
    ++submitted_;
  }
  work_cv_.notify_one();
  return Status();
}

void CommitQueue::push_admin(std::unique_ptr<AdminJob> job) {
  {
    std::lock_guard lock(mutex_);
    Job j;
    j.admin = std::move(job);
    queue_.push_back(std::move(j));
    ++submitted_;
  }
  work_cv_.notify_one();
}

bool CommitQueue::full() const {
  std::lock_guard lock(mutex_);
  return queued_events_ >= kEventsMax;
}

std::uint64_t CommitQueue::queued_events() const {
  std::lock_guard lock(mutex_);
  return queued_events_;
}

void CommitQueue::wait_idle() {
  std::unique_lock lock(mutex_);
  const std::uint64_t target = submitted_;
  idle_cv_.wait(lock, [&] { return finished_ >= target || !running_; });
}

void CommitQueue::start() {
  std::lock_guard lock(mutex_);
  running_ = true;
}

void CommitQueue::stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  work_cv_.notify_all();
}

CommitQueue::Taken CommitQueue::take(std::chrono::milliseconds idle_wait,
                                     std::chrono::microseconds gather, std::uint64_t events_max,
                                     Group* out) {
  out->admin.reset();
  out->ingest.clear();
  std::unique_lock lock(mutex_);
  work_cv_.wait_for(lock, idle_wait, [this] { return stopping_ || !queue_.empty(); });
  if (queue_.empty()) {
    if (!stopping_) {
      return Taken::kIdle;
    }
    running_ = false;
    idle_cv_.notify_all();
    return Taken::kStop;
  }
  if (queue_.front().ingest && gather.count() > 0 && queue_.front().ingest->weight() < events_max) {
    // Give concurrent batches a moment to join this commit.
    work_cv_.wait_for(lock, gather);
  }
  wait_for_checks(lock, events_max);
  if (queue_.front().admin) {
    out->admin = std::move(queue_.front().admin);
    queue_.pop_front();
    return Taken::kGroup;
  }
  std::uint64_t events = 0;
  while (!queue_.empty() && queue_.front().ingest &&
         (out->ingest.empty() || events + queue_.front().ingest->weight() <= events_max)) {
    events += queue_.front().ingest->weight();
    if (queue_.front().ingest.get() == open_check_job_) {
      open_check_job_ = nullptr;  // taken: later check events start a new job
    }
    out->ingest.push_back(std::move(queue_.front().ingest));
    queue_.pop_front();
  }
  TALLY_ASSERT(events <= queued_events_, "the queue counts the events of its jobs");
  queued_events_ -= events;
  TALLY_DASSERT(open_check_job_ == nullptr || queue_.back().ingest.get() == open_check_job_,
                "the open check job is the last queued job");
  return Taken::kGroup;
}

void CommitQueue::wait_for_checks(std::unique_lock<std::mutex>& lock, std::uint64_t events_max) {
  auto only_async_checks = [&] {
    const IngestJob* job = queue_.size() == 1 ? queue_.front().ingest.get() : nullptr;
    return job != nullptr && job == open_check_job_ && job->check_waiters.empty() &&
           job->reservation_ops.empty() && job->weight() < events_max;
  };
  if (!only_async_checks()) {
    return;
  }
  const auto until = std::chrono::steady_clock::time_point(
                         std::chrono::microseconds(queue_.front().ingest->start_us)) +
                     kCheckGather;
  // Woken by a new job (a request waiting, or a new check job after a full one) or a stop.
  work_cv_.wait_until(lock, until, [&] { return stopping_ || !only_async_checks(); });
}

void CommitQueue::finished(std::size_t jobs) {
  {
    std::lock_guard lock(mutex_);
    finished_ += jobs;
    TALLY_DASSERT(finished_ <= submitted_, "a job finishes once, after it was queued");
  }
  idle_cv_.notify_all();
}

namespace {

std::int64_t steady_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

constexpr std::int64_t kKeyFlushIntervalUs = 1'000'000;
constexpr std::chrono::milliseconds kIdleWait{1000};

// ---- one group commit of ingest jobs ----------------------------------------------------------

struct BucketKey {
  std::uint32_t meter;
  std::uint32_t customer_num;
  std::uint32_t group;
  core::TimeUs minute_us;
  bool operator==(const BucketKey&) const = default;
};

struct BucketKeyHash {
  std::size_t operator()(const BucketKey& k) const {
    std::uint64_t h = k.meter;
    h = h * 0x9E3779B97F4A7C15ull + k.customer_num;
    h = h * 0x9E3779B97F4A7C15ull + k.group;
    h = h * 0x9E3779B97F4A7C15ull + static_cast<std::uint64_t>(k.minute_us);
    return static_cast<std::size_t>(h ^ (h >> 29));
  }
};

// What the commit adds to one minute aggregate.
struct Touched {
  core::AggState delta;
  std::vector<std::string> new_uniques;
};

struct PendingCustomer {
  std::uint32_t num;
  Customer record;
};

// The customer an event names, as the commit resolves it.
struct EventCustomer {
  std::uint32_t num = 0;
  const CustomerState* state = nullptr;  // null: created by this commit
  bool suspended = false;
};

// The ids accepted by a commit, for duplicates inside it: open addressing on the dedup hash
// (never 0), at most half full, so a lookup or an insert is a probe or two and no allocation.
class CommitIds {
 public:
  bool contains(std::uint64_t hash, std::uint32_t cnum, std::string_view id) const {
    if (slots_.empty()) {
      return false;
    }
    const std::size_t mask = slots_.size() - 1;
    for (std::size_t i = hash & mask; slots_[i].hash != 0; i = (i + 1) & mask) {
      const Slot& slot = slots_[i];
      if (slot.hash == hash && slot.cnum == cnum && slot.id == id) {
        return true;
      }
    }
    return false;
  }

  // REQUIRES: !contains(hash, cnum, id).
  void add(std::uint64_t hash, std::uint32_t cnum, std::string_view id) {
    TALLY_DASSERT(hash != 0, "dedup_hash is never 0");
    if ((size_ + 1) * 2 > slots_.size()) {
      grow();
    }
    place(Slot{hash, cnum, id});
    ++size_;
  }

 private:
  struct Slot {
    std::uint64_t hash = 0;  // 0: empty
    std::uint32_t cnum = 0;
    std::string_view id;
  };

  void place(const Slot& slot) {
    const std::size_t mask = slots_.size() - 1;
    std::size_t i = slot.hash & mask;
    while (slots_[i].hash != 0) {
      i = (i + 1) & mask;
    }
    slots_[i] = slot;
  }

  void grow() {
    std::vector<Slot> old(std::max<std::size_t>(64, slots_.size() * 2));
    old.swap(slots_);
    for (const Slot& slot : old) {
      if (slot.hash != 0) {
        place(slot);
      }
    }
  }

  std::vector<Slot> slots_;  // a power of two in size
  std::size_t size_ = 0;
};

// The block of events a commit writes for one customer.
struct Block {
  EventBlockWriter writer;
  std::uint64_t last_seq = 0;
};

// Per event of a job: what its stored copies say. kNoCopy, kStoredDuplicate (a copy within the
// dedup window), or the seq of a copy outside it (accepted again, replacing it in the index).
constexpr std::uint64_t kNoCopy = 0;
constexpr std::uint64_t kStoredDuplicate = ~std::uint64_t{0};

// One commit of a group of ingest jobs. Used once, in this order: add_jobs,
// add_reservation_ops, encode, then write, then roll_back or install and answer.
class IngestCommit {
 public:
  IngestCommit(Engine::Impl& d, std::vector<std::unique_ptr<IngestJob>>& jobs)
      : d_(d),
        jobs_(jobs),
        now_(d.clock->now_us()),
        start_us_(steady_us()),
        first_seq_(d.next_seq),
        first_customer_(d.next_customer),
        window_us_(d.config.storage.dedup_window_seconds * core::kUsPerSecond),
        summaries_(jobs.size()),
        failed_(jobs.size()) {}

  void add_jobs();
  void add_reservation_ops();
  // Errors: reading a minute before the horizon from the store (then nothing is written).
  Status encode(store::WriteBatch& wb);
  void roll_back(const Status& written);
  void install();
  void answer();

 private:
  void collect_reservation_usage();
  Status read_stored_copies(const IngestJob& job);
  void fail_job(std::size_t j, const Status& read);
  bool refuse_whole(const IngestJob& job, IngestSummary* sum) const;
  bool resolve_customer(const IngestJob& job, std::size_t i, IngestSummary& sum,
                        EventCustomer* out);
  bool is_duplicate(std::uint64_t hash, std::uint32_t cnum, std::string_view id,
                    std::uint64_t stored_copy) const;
  void add_event(IngestJob& job, std::size_t i, IngestSummary& sum);
  // Feeds the event's meters and prices it; true when some price applied.
  bool meter_event(const core::EventBatch& b, const core::Event& e, const EventCustomer& c,
                   std::uint64_t seq, std::uint64_t token, core::Decimal* cost,
                   core::Decimal* credits);
  void note_unique(std::uint32_t m, std::uint32_t cnum, std::uint32_t gid, core::TimeUs minute,
                   Touched& t);
  void burn(std::uint32_t cnum, std::uint64_t token, std::string_view id,
            const core::Decimal& credits);
  void settle_merged(const IngestJob& job, std::size_t i, std::uint32_t cnum);

  Engine::Impl& d_;
  std::vector<std::unique_ptr<IngestJob>>& jobs_;
  const core::TimeUs now_;
  const std::int64_t start_us_;
  const std::uint64_t first_seq_;
  const std::uint32_t first_customer_;
  const std::int64_t window_us_;

  std::vector<IngestSummary> summaries_;
  std::vector<Status> failed_;  // per job: OK, or why it failed alone
  std::uint64_t accepted_ = 0;
  std::unordered_map<std::string, PendingCustomer, StringHash, std::equal_to<>> new_customers_;
  std::unordered_map<std::uint32_t, Block> blocks_;  // per customer number
  std::vector<DedupEntry> dedup_entries_;
  CommitIds commit_ids_;
  // Dedup entries that replace a stored copy outside the window: hash -> the copy's seq.
  std::unordered_map<std::uint64_t, std::uint64_t> dedup_replacements_;
  std::unordered_map<BucketKey, Touched, BucketKeyHash> touched_;
  std::vector<LimitDelta> limit_deltas_;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> settled_;  // customer num, check token
  // Check tokens of jobs that failed alone: their usage is not stored, so their ids are forgotten.
  std::vector<std::pair<std::uint32_t, std::uint64_t>> lost_;
  std::size_t merged_next_ = 0;  // the next of the job's merged tokens to settle
  LedgerWork ledger_;
  // The usage events of reservation commits (token -> reservation id): their burns name the
  // reservation, and what they burn is taken from its hold before the rest is released.
  std::unordered_map<std::uint64_t, std::string_view> reservation_usage_;
  std::unordered_map<std::uint64_t, core::Decimal> burned_;
  std::vector<ReservationOp> reservation_ops_;
  std::vector<ReservationOp> expired_;  // taken from expired_reservation_ops

  // Per event of the job being added (read_stored_copies): its dedup hash, its customer's
  // number when stored (else 0), and what its stored copies say.
  std::vector<std::uint64_t> hashes_;
  std::vector<std::uint32_t> stored_nums_;
  std::vector<std::uint64_t> stored_copies_;
  // Scratch.
  core::MeterInput input_;
  std::string group_;
  std::string stored_id_;
  std::vector<std::pair<std::string_view, std::string_view>> event_props_;
};

void IngestCommit::add_jobs() {
  collect_reservation_usage();
  for (std::size_t j = 0; j < jobs_.size(); ++j) {
    IngestJob& job = *jobs_[j];
    IngestSummary& sum = summaries_[j];
    if (Status read = read_stored_copies(job); !read.ok()) {
      fail_job(j, read);
      continue;
    }
    for (const auto& err : job.parsed.errors) {
      sum.errors.push_back(EventError{err.index, err.id, err.code, err.message});
    }
    sum.rejected = static_cast<std::uint32_t>(job.parsed.errors.size());
    if (job.options.all_or_nothing && refuse_whole(job, &sum)) {
      continue;  // nothing of it joins the commit
    }
    if (!job.merged_tokens.empty()) {
      std::stable_sort(job.merged_tokens.begin(), job.merged_tokens.end(),
                       [](const auto& a, const auto& b) { return a.first < b.first; });
    }
    merged_next_ = 0;
    for (std::size_t i = 0; i < job.parsed.batch.size(); ++i) {
      add_event(job, i, sum);
    }
  }
  TALLY_ASSERT(d_.next_seq == first_seq_ + accepted_,
               "a commit gives each accepted event the next sequence number, once");
}

void IngestCommit::collect_reservation_usage() {
  for (const auto& job : jobs_) {
    for (const auto& op : job->reservation_ops) {
      if (!op.open && op.usage_token != 0 && op.record.credits.units > 0) {
        reservation_usage_.emplace(op.usage_token, op.id);
      }
    }
  }
}

// The stored copies behind a job's dedup index hits are read before any of its events joins
// the commit, so a failed read fails that job alone: nothing of it is written and its caller
// gets the error, instead of a possible duplicate going through.
Status IngestCommit::read_stored_copies(const IngestJob& job) {
  const core::EventBatch& b = job.parsed.batch;
  if (job.hashes.size() == b.size()) {
    hashes_ = job.hashes;
  } else {
    hashes_.resize(b.size());
    for (std::size_t i = 0; i < b.size(); ++i) {
      hashes_[i] = dedup_hash(b.text(b.events()[i].customer), b.text(b.events()[i].id));
    }
  }
  stored_nums_.assign(b.size(), 0);
  stored_copies_.assign(b.size(), kNoCopy);
  Status read_failed;
  for (std::size_t i = 0; i < b.size() && read_failed.ok(); ++i) {
    auto it = d_.customer_nums.find(b.text(b.events()[i].customer));
    if (it == d_.customer_nums.end()) {
      continue;  // a customer created by this commit has nothing stored
    }
    const std::uint32_t cnum = it->second;
    stored_nums_[i] = cnum;
    const std::string_view id = b.text(b.events()[i].id);
    std::uint64_t& copy = stored_copies_[i];
    d_.dedup.find(hashes_[i], [&](DedupIndex::Location loc) {
      if (!read_failed.ok() || copy == kStoredDuplicate || loc.customer_num != cnum) {
        return;
      }
      core::TimeUs received = 0;
      auto found = d_.read_stored_event(loc.customer_num, loc.seq, &stored_id_, &received);
      if (!found) {
        read_failed = found.error();
      } else if (*found && stored_id_ == id) {
        if (window_us_ > 0 && received < now_ - window_us_) {
          copy = loc.seq;  // seen, but outside the window: accept again
        } else {
          copy = kStoredDuplicate;
        }
      }
    });
  }
  return read_failed;
}

void IngestCommit::fail_job(std::size_t j, const Status& read) {
  const IngestJob& job = *jobs_[j];
  const core::EventBatch& b = job.parsed.batch;
  failed_[j] =
      Status(read.code(), "the events could not be checked for duplicates: " + read.message());
  // Its checks' usage is lost, as when a commit fails: free their holds.
  auto lose = [&](std::size_t i, std::uint64_t token) {
    auto it = d_.customer_nums.find(b.text(b.events()[i].customer));
    if (token != 0 && it != d_.customer_nums.end()) {
      settled_.emplace_back(it->second, token);
      lost_.emplace_back(it->second, token);
    }
  };
  for (std::size_t i = 0; i < job.check_tokens.size() && i < b.size(); ++i) {
    lose(i, job.check_tokens[i]);
  }
  for (const auto& [i, token] : job.merged_tokens) {
    lose(i, token);
  }
}

// The checks merged into event i after its first (IngestJob::merged_tokens, sorted by event by
// add_jobs) are settled with it. Events are added in order, so one cursor walks them.
void IngestCommit::settle_merged(const IngestJob& job, std::size_t i, std::uint32_t cnum) {
  const auto& merged = job.merged_tokens;
  while (merged_next_ < merged.size() && merged[merged_next_].first < i) {
    ++merged_next_;  // of an event not added (its customer unknown)
  }
  for (; merged_next_ < merged.size() && merged[merged_next_].first == i; ++merged_next_) {
    settled_.emplace_back(cnum, merged[merged_next_].second);
  }
}

// An all-or-nothing request: every event must be valid, name a customer that exists (or may
// be created), and be new. Checked before any of its events joins the commit; true (with the
// faults in *sum) when it is refused whole.
bool IngestCommit::refuse_whole(const IngestJob& job, IngestSummary* sum) const {
  TALLY_ASSERT(job.check_tokens.empty(), "checks' usage events are never all-or-nothing");
  const core::EventBatch& b = job.parsed.batch;
  std::uint32_t cnum = 0;  // the customer number of the event customer_of last saw
  auto customer_of = [&](std::size_t i) {
    const std::string_view customer = b.text(b.events()[i].customer);
    if (auto it = d_.customer_nums.find(customer); it != d_.customer_nums.end()) {
      cnum = it->second;
    } else if (auto nit = new_customers_.find(customer); nit != new_customers_.end()) {
      cnum = nit->second.num;
    } else {
      return d_.config.server.auto_create_customers ? WholeCustomer::kNew : WholeCustomer::kUnknown;
    }
    return WholeCustomer::kKnown;
  };
  auto stored = [&](std::size_t i, WholeCustomer kind) {
    return stored_copies_[i] == kStoredDuplicate ||
           (kind == WholeCustomer::kKnown &&
            is_duplicate(hashes_[i], cnum, b.text(b.events()[i].id), kNoCopy));
  };
  return refuse_whole_batch(job.parsed, customer_of, stored, sum);
}

// The customer of event i: stored, created earlier in this commit, or created now when
// customers are created on first use; false (with the error in `sum`) when it does not exist.
bool IngestCommit::resolve_customer(const IngestJob& job, std::size_t i, IngestSummary& sum,
                                    EventCustomer* out) {
  const core::EventBatch& b = job.parsed.batch;
  const std::string_view customer = b.text(b.events()[i].customer);
  if (stored_nums_[i] != 0) {  // found by read_stored_copies
    out->num = stored_nums_[i];
    out->state = &d_.customers.at(out->num);
    out->suspended = out->state->record.status == CustomerStatus::kSuspended;
    return true;
  }
  if (auto nit = new_customers_.find(customer); nit != new_customers_.end()) {
    out->num = nit->second.num;
    return true;
  }
  if (d_.config.server.auto_create_customers && d_.next_customer <= DedupIndex::kCustomerMax) {
    PendingCustomer pc;
    pc.num = d_.next_customer++;
    pc.record.id = customer;
    pc.record.name = customer;
    pc.record.created_at_us = now_;
    pc.record.updated_at_us = now_;
    out->num = pc.num;
    new_customers_.emplace(std::string(customer), std::move(pc));
    return true;
  }
  ++sum.rejected;
  const std::string_view id = b.text(b.events()[i].id);
  sum.errors.push_back(EventError{job.parsed.indexes[i], std::string(id), "UNKNOWN_CUSTOMER",
                                  core::customer_not_found(customer).message()});
  return false;
}

// Dedup: an id accepted earlier in this commit, else what read_stored_copies found.
bool IngestCommit::is_duplicate(std::uint64_t hash, std::uint32_t cnum, std::string_view id,
                                std::uint64_t stored_copy) const {
  return stored_copy == kStoredDuplicate || commit_ids_.contains(hash, cnum, id);
}

void IngestCommit::add_event(IngestJob& job, std::size_t i, IngestSummary& sum) {
  const core::EventBatch& b = job.parsed.batch;
  const core::Event& e = b.events()[i];
  const std::string_view id = b.text(e.id);
  const std::uint64_t token = job.check_tokens.empty() ? 0 : job.check_tokens[i];

  EventCustomer c;
  if (!resolve_customer(job, i, sum, &c)) {
    return;
  }
  const std::uint64_t h = hashes_[i];
  const bool duplicate = is_duplicate(h, c.num, id, stored_copies_[i]);
  if (token != 0) {
    settled_.emplace_back(c.num, token);  // counted by its check: settled either way
    settle_merged(job, i, c.num);
  }
  if (duplicate) {
    ++sum.duplicates;
    return;
  }

  // Admit: the next sequence number, and the id into this commit's dedup entries.
  const std::uint64_t seq = d_.next_seq++;
  ++accepted_;
  ++sum.accepted;
  commit_ids_.add(h, c.num, id);
  dedup_entries_.push_back(DedupEntry{h, seq, c.num});
  if (stored_copies_[i] != kNoCopy) {
    dedup_replacements_.emplace(h, stored_copies_[i]);
  }

  core::Decimal cost;
  core::Decimal credits;
  const bool priced = meter_event(b, e, c, seq, token, &cost, &credits);

  auto [bit, fresh] = blocks_.try_emplace(c.num);
  Block& block = bit->second;
  if (fresh) {
    block.writer.begin(seq, now_);
  }
  block.writer.add(b, e, seq, c.suspended, priced, cost, credits);
  block.last_seq = seq;
  if (priced && credits.units != 0) {
    burn(c.num, token, id, credits);
  }
}

bool IngestCommit::meter_event(const core::EventBatch& b, const core::Event& e,
                               const EventCustomer& c, std::uint64_t seq, std::uint64_t token,
                               core::Decimal* event_cost, core::Decimal* event_credits) {
  static const core::TimeZone kUtc;
  bool priced = false;
  event_props_.clear();
  const std::string_view type = b.text(e.type);
  const core::TimeUs minute = core::floor_to(e.time_us, core::kUsPerMinute);
  const std::vector<std::uint32_t>* fed = d_.catalog->meters_of_type(type);
  if (fed == nullptr) {
    return false;
  }
  for (std::uint32_t m : *fed) {
    if (!core::meter_accepts(d_.catalog->meters[m].spec, b, e, &input_, &group_)) {
      continue;
    }
    const std::uint32_t gid = d_.intern_group(group_);
    Touched& t = touched_[BucketKey{m, c.num, gid, minute}];
    t.delta.add(input_.value, e.time_us, seq);
    if (d_.catalog->meters[m].limitable) {
      limit_deltas_.push_back(LimitDelta{c.num, m, e.time_us, input_.value, seq, token != 0});
    }
    if (!d_.catalog->prices_by_meter[m].empty()) {
      if (event_props_.empty()) {
        for (std::uint32_t p = e.prop_begin; p < e.prop_begin + e.prop_count; ++p) {
          event_props_.emplace_back(b.text(b.props()[p].key), b.text(b.props()[p].text));
        }
      }
      core::Decimal cost;
      core::Decimal credits;
      const core::TimeUs anchor = c.state == nullptr ? now_
                                  : c.state->record.billing_anchor_us != 0
                                      ? c.state->record.billing_anchor_us
                                      : c.state->record.created_at_us;
      if (d_.price_of(m, c.num, c.state != nullptr ? c.state->tz : kUtc, anchor, e.time_us,
                      input_.value, event_props_, &ledger_, &cost, &credits)) {
        touched_[BucketKey{d_.catalog->cost_meter[m], c.num, gid, minute}].delta.add(
            cost, e.time_us, seq);
        touched_[BucketKey{d_.catalog->credits_meter[m], c.num, gid, minute}].delta.add(
            credits, e.time_us, seq);
        priced = true;
        *event_cost += cost;
        *event_credits += credits;
      }
    }
    if (d_.catalog->meters[m].spec.aggregation == core::Aggregation::kUniqueCount) {
      note_unique(m, c.num, gid, minute, t);  // t stays valid: a rehash moves no element
    }
  }
  return priced;
}

// A distinct value of a unique-count meter that neither the installed state nor this commit
// has yet for its minute.
void IngestCommit::note_unique(std::uint32_t m, std::uint32_t cnum, std::uint32_t gid,
                               core::TimeUs minute, Touched& t) {
  bool known = false;
  auto cit = d_.meter_aggregates[m].series.find(cnum);
  if (cit != d_.meter_aggregates[m].series.end()) {
    auto git = cit->second.find(gid);
    known = git != cit->second.end() && git->second.has_unique(minute, input_.unique);
  }
  if (!known &&
      std::find(t.new_uniques.begin(), t.new_uniques.end(), input_.unique) == t.new_uniques.end()) {
    t.new_uniques.emplace_back(input_.unique);
  }
}

void IngestCommit::burn(std::uint32_t cnum, std::uint64_t token, std::string_view id,
                        const core::Decimal& credits) {
  std::string_view reservation;
  if (token != 0 && !reservation_usage_.empty()) {
    if (auto rit = reservation_usage_.find(token); rit != reservation_usage_.end()) {
      reservation = rit->second;
      burned_[token] += credits;
    }
  }
  d_.burn(ledger_, cnum, credits, id, now_, reservation);
}

// Reservations opened and closed by the jobs, then those expiry closed: after the events, so
// a commit's release knows what its usage burned.
void IngestCommit::add_reservation_ops() {
  for (std::size_t j = 0; j < jobs_.size(); ++j) {
    if (failed_[j].ok()) {
      reservation_ops_.insert(reservation_ops_.end(), jobs_[j]->reservation_ops.begin(),
                              jobs_[j]->reservation_ops.end());
    }
  }
  {
    std::lock_guard lock(d_.limits_mutex);
    expired_.swap(d_.expired_reservation_ops);
  }
  reservation_ops_.insert(reservation_ops_.end(), expired_.begin(), expired_.end());
}

// The commit's one write.
Status IngestCommit::encode(store::WriteBatch& wb) {
  for (auto& [cnum, block] : blocks_) {
    wb.put(store::Space::kEvents, event_block_key(cnum, block.last_seq), block.writer.finish());
  }
  if (!dedup_entries_.empty()) {
    wb.put(store::Space::kDedup, dedup_key(first_seq_), encode_dedup_record(now_, dedup_entries_));
  }
  for (const auto& [k, t] : touched_) {
    core::AggState state;  // left empty when the minute has no state yet
    // A minute before the horizon (a late event) is read from its stored record.
    TALLY_TRY(d_.minute_state(k.meter, k.customer_num, k.group, k.minute_us, &state).status());
    state.merge(t.delta);
    const std::string& key = d_.catalog->meters[k.meter].spec.key;
    const std::string& gtext = d_.group_texts[k.group];
    wb.put(store::Space::kAggregates, aggregate_key(key, k.customer_num, k.minute_us, gtext),
           encode_agg_state(state));
    for (const auto& u : t.new_uniques) {
      wb.put(store::Space::kUniques, unique_key(key, k.customer_num, k.minute_us, gtext, u), "");
    }
  }
  for (const auto& [id, pc] : new_customers_) {
    wb.put(store::Space::kCustomers, id, encode_customer(pc.num, pc.record));
  }
  if (d_.next_seq != first_seq_) {
    std::string v;
    put_be64(v, d_.next_seq);
    wb.put(store::Space::kMeta, std::string(kMetaNextSeq), v);
  }
  if (d_.next_customer != first_customer_) {
    std::string v;
    put_be32(v, d_.next_customer);
    wb.put(store::Space::kMeta, std::string(kMetaNextCustomer), v);
  }
  d_.flush_key_counters(wb, false);
  d_.write_reservations(reservation_ops_, burned_, ledger_, wb, now_);
  d_.write_ledger(ledger_, wb);
  return Status();
}

// Nothing of the commit was stored: its numbers are given back, its checks' holds freed, and
// every waiter gets the failure.
void IngestCommit::roll_back(const Status& written) {
  d_.next_seq = first_seq_;
  d_.next_customer = first_customer_;
  if (!expired_.empty()) {
    std::lock_guard lock(d_.limits_mutex);  // written by a later commit
    d_.expired_reservation_ops.insert(d_.expired_reservation_ops.end(), expired_.begin(),
                                      expired_.end());
  }
  if (!settled_.empty()) {
    std::unique_lock lock(d_.state_mutex);
    d_.settle_limits({}, settled_);  // the checks' usage is lost, as in a crash: free its hold
    d_.forget_check_ids(settled_);   // and a retry of one of them must count
  }
  const StatusCode code = written.code() == StatusCode::kInsufficientStorage
                              ? StatusCode::kInsufficientStorage
                              : StatusCode::kIOError;
  for (std::size_t j = 0; j < jobs_.size(); ++j) {
    jobs_[j]->done(failed_[j].ok()
                       ? Status(code, "the events could not be stored: " + written.message())
                       : failed_[j]);
  }
}

// Durable: now make it visible. A dedup table that must grow for this commit's entries is
// built first, without the lock: under it, growing is a swap, not a rehash (checks, which read
// the index under the lock held shared, never wait for a rehash; the commit thread does).
void IngestCommit::install() {
  d_.dedup.prepare_growth(dedup_entries_.size());
  std::unique_lock lock(d_.state_mutex);
  for (auto& [id, pc] : new_customers_) {
    CustomerState cs;
    cs.num = pc.num;
    cs.record = std::move(pc.record);
    d_.customer_nums.emplace(id, cs.num);
    d_.customers.emplace(cs.num, std::move(cs));
  }
  for (const auto& [k, t] : touched_) {
    d_.install_state(k.meter, k.customer_num, k.group, k.minute_us, t.delta);
    for (const auto& u : t.new_uniques) {
      d_.install_unique(k.meter, k.customer_num, k.group, k.minute_us, u);
    }
  }
  if (!limit_deltas_.empty() || !settled_.empty()) {
    d_.settle_limits(limit_deltas_, settled_);
  }
  if (!lost_.empty()) {
    d_.forget_check_ids(lost_);
  }
  if (d_.alerts_enabled) {
    for (const auto& delta : limit_deltas_) {
      const std::pair<std::uint32_t, std::uint32_t> limit{delta.customer_num, delta.meter};
      if (d_.alert_touched_limits.empty() || d_.alert_touched_limits.back() != limit) {
        d_.alert_touched_limits.push_back(limit);  // a customer's events come together
      }
    }
  }
  d_.install_ledger(ledger_);
  d_.install_reservations(reservation_ops_);
  // Under the lock too: checks read the index (a retried check's event id) while holding
  // state_mutex shared.
  for (const auto& entry : dedup_entries_) {
    if (auto rep = dedup_replacements_.find(entry.hash); rep != dedup_replacements_.end()) {
      d_.dedup.replace(entry.hash, rep->second, entry.seq, entry.customer_num);
    } else {
      d_.dedup.insert(entry.hash, entry.seq, entry.customer_num);
    }
  }
  // What a checkpoint started from now covers (checkpoint.cc).
  d_.installed_seq = d_.next_seq;
  d_.installed_customer = d_.next_customer;
}

void IngestCommit::answer() {
  const std::int64_t end = steady_us();
  d_.commits.fetch_add(1, std::memory_order_relaxed);
  d_.commit_latency.record(static_cast<std::uint64_t>(end - start_us_));
  for (std::size_t j = 0; j < jobs_.size(); ++j) {
    if (!failed_[j].ok()) {
      jobs_[j]->done(failed_[j]);
      continue;
    }
    IngestSummary& sum = summaries_[j];
    d_.events_accepted.fetch_add(sum.accepted, std::memory_order_relaxed);
    d_.events_rejected.fetch_add(sum.rejected, std::memory_order_relaxed);
    d_.events_duplicate.fetch_add(sum.duplicates, std::memory_order_relaxed);
    d_.batches.fetch_add(1, std::memory_order_relaxed);
    sum.processing_time_us = end - jobs_[j]->start_us;
    d_.batch_latency.record(static_cast<std::uint64_t>(sum.processing_time_us));
    if (sum.accepted > 0) {
      sum.batch_id = "batch_" + std::to_string(first_seq_) + "_" + std::to_string(j);
    }
    std::sort(sum.errors.begin(), sum.errors.end(),
              [](const EventError& a, const EventError& b) { return a.index < b.index; });
    jobs_[j]->done(std::move(sum));
  }
}

}  // namespace

}  // namespace engine

// ---- the commit thread ------------------------------------------------------------------------

void Engine::Impl::commit_ingest(std::vector<std::unique_ptr<engine::IngestJob>>& jobs) {
  engine::IngestCommit c(*this, jobs);
  c.add_jobs();
  c.add_reservation_ops();
  store::WriteBatch wb;
  Status written = c.encode(wb);
  if (written.ok() && !wb.empty()) {
    written = write_store(wb, config.storage.fsync);
  }
  if (!written.ok()) {
    c.roll_back(written);
    return;
  }
  c.install();
  c.answer();
}

void Engine::Impl::commit_admin(engine::AdminJob& job) {
  store::WriteBatch wb;
  Status s = job.prepare(wb);
  if (s.ok() && !wb.empty()) {
    s = write_store(wb, config.storage.fsync);
  }
  if (s.ok()) {
    std::unique_lock lock(state_mutex);
    job.install();
  }
  job.done(s);
}

void Engine::Impl::run_committer() {
  engine::CommitQueue::Group group;
  const std::chrono::microseconds gather(config.storage.commit_interval_us);
  for (;;) {
    switch (
        commit_queue.take(engine::kIdleWait, gather, config.storage.commit_events_max, &group)) {
      case engine::CommitQueue::Taken::kStop: {
        store::WriteBatch wb;
        if (disk.admit(*store, config.storage).ok()) {
          flush_key_counters(wb, true);
        }
        if (!wb.empty()) {
          write_store(wb, true).ignore_error();  // best effort: counters are not ledger data
        }
        return;
      }
      case engine::CommitQueue::Taken::kIdle: {
        // The disk reserve's cadence when idle: a refusal is lifted within a second of space
        // coming back, though request threads queue nothing while it lasts.
        store::WriteBatch wb;
        if (disk.admit(*store, config.storage).ok()) {
          flush_key_counters(wb, false);
        }
        if (!wb.empty()) {
          write_store(wb, config.storage.fsync).ignore_error();  // counters are not ledger data
        }
        expire_grants(clock->now_us());
        expire_reservations_idle(clock->now_us());
        evaluate_alerts(clock->now_us());
        continue;
      }
      case engine::CommitQueue::Taken::kGroup:
        if (group.admin) {
          commit_admin(*group.admin);
        } else {
          commit_ingest(group.ingest);
        }
        evaluate_alerts(clock->now_us());
        commit_queue.finished(group.jobs());
        continue;
    }
  }
}

void Engine::Impl::flush_key_counters(store::WriteBatch& wb, bool force) {
  const std::int64_t now = engine::steady_us();
  if (!force && now - last_key_flush_us < engine::kKeyFlushIntervalUs) {
    return;
  }
  last_key_flush_us = now;
  std::shared_lock lock(state_mutex);
  for (auto& [hash, ks] : keys_by_hash) {
    if (!ks->dirty.exchange(false)) {
      continue;
    }
    engine::KeyRecord rec = ks->record;
    rec.info.total_requests = ks->total_requests.load();
    rec.info.last_used_at_us = ks->last_used_at_us.load();
    wb.put(store::Space::kKeys, rec.info.id, engine::encode_key_record(rec));
  }
}

}  // namespace tally
