// The engine's front door: opening (the config, the store, the catalog of meters and prices,
// then recovery.cc's load), the ingest entry points, statistics and readiness.
//
// Ingest path: a caller's thread parses the body (core/event_parse), computes the events'
// dedup hashes and queues an IngestJob (CommitQueue, group_commit.h). The commit thread commits
// the queued jobs together (group_commit.cc): one store write, durable before anything of it is
// visible or acknowledged.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <set>

#include <spdlog/spdlog.h>

#include "common/assert.h"
#include "common/crypto.h"
#include "engine/cluster_mode.h"
#include "engine/dedup_file.h"
#include "engine/engine_impl.h"
#include "engine/price_match.h"

namespace tally {

using engine::AdminJob;
using engine::IngestJob;

namespace {

std::int64_t steady_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

namespace engine {

void Histogram::record(std::uint64_t us) {
  std::size_t i = 0;
  while (i < kBoundsUs.size() && us > kBoundsUs[i]) {
    ++i;
  }
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(us, std::memory_order_relaxed);
}

std::vector<std::uint64_t> Histogram::cumulative() const {
  std::vector<std::uint64_t> out;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= kBoundsUs.size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    out.push_back(total);
  }
  return out;
}

}  // namespace engine

// ---- open -----------------------------------------------------------------------------------

namespace {

// The SHA-256 of the extra admin key (the option's, else the configuration's), or "".
std::string admin_key_hash_of(const EngineOptions& options, const config::Config& config) {
  const std::string& key = options.admin_key.empty() ? config.server.admin_key : options.admin_key;
  return key.empty() ? std::string() : common::sha256(key);
}

}  // namespace

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() {
  impl_->stop();
}

Result<std::unique_ptr<Engine>> Engine::open(const EngineOptions& options) {
  return Impl::open(options, nullptr);
}

Result<std::unique_ptr<Engine>> Engine::Impl::open(const EngineOptions& options,
                                                   std::unique_ptr<store::Store> given_store) {
  auto impl = std::make_unique<Impl>();
  if (!options.config_path.empty()) {
    auto c = config::load_config_file(options.config_path);
    if (!c) {
      return c.error();
    }
    impl->config = std::move(*c);
  } else if (!options.config_toml.empty()) {
    auto c = config::parse_config(options.config_toml, "<config>");
    if (!c) {
      return c.error();
    }
    impl->config = std::move(*c);
  }
  if (impl->config.cluster) {
    return open_cluster(std::move(impl), options);
  }
  if (!options.data_dir.empty()) {
    impl->config.server.data_dir = options.data_dir;
  }
  impl->clock = options.clock != nullptr ? options.clock : &system_clock();
  impl->read_only = options.read_only;
  impl->admin_key_hash = admin_key_hash_of(options, impl->config);

  if (given_store != nullptr) {
    impl->store = std::move(given_store);
  } else if (options.in_memory) {
    impl->store = store::make_memory_store();
  } else {
    store::RocksOptions ro;
    ro.path = impl->config.server.data_dir;
    ro.read_only = options.read_only;
    ro.create_if_missing = !options.read_only;
    ro.block_cache_bytes = impl->config.storage.block_cache_bytes;
    auto s = store::open_rocksdb_store(ro);
    if (!s) {
      return s.error();
    }
    impl->store = std::move(*s);
    impl->checkpoint_path = (std::filesystem::path(ro.path) / "aggregates.checkpoint").string();
  }

  impl->token_prefix = common::to_hex(common::random_bytes(6));
  engine::Catalog catalog = engine::Catalog::build(impl->config);
  TALLY_TRY(impl->load_prices(catalog));
  catalog.mark_merged_usage();
  impl->catalog = std::make_unique<const engine::Catalog>(std::move(catalog));
  impl->meter_aggregates.resize(impl->catalog->meters.size());

  TALLY_TRY(impl->load());
  if (!impl->read_only) {
    TALLY_TRY(impl->check_plans_configured());
    impl->start();
  }
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

// The scale-out mode: no data directory; the node's state is in PostgreSQL and Redis.
Result<std::unique_ptr<Engine>> Engine::Impl::open_cluster(std::unique_ptr<Impl> impl,
                                                           const EngineOptions& options) {
  if (options.in_memory) {
    return Status::invalid_argument(
        "the configuration has a [cluster] section: its state is in PostgreSQL and Redis, not in "
        "a data directory (docs/cluster.md)");
  }
  impl->clock = options.clock != nullptr ? options.clock : &system_clock();
  impl->admin_key_hash = admin_key_hash_of(options, impl->config);
  engine::Catalog catalog = engine::Catalog::build(impl->config);
  TALLY_TRY(engine::add_config_versions(catalog, impl->config));
  catalog.mark_merged_usage();
  impl->catalog = std::make_unique<const engine::Catalog>(std::move(catalog));
  auto node = engine::ClusterMode::open(impl->config, *impl->catalog, *impl->clock);
  if (!node) {
    return node.error();
  }
  impl->cluster = std::move(*node);
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

Engine::Impl& Engine::Impl::of(Engine& e) {
  return *e.impl_;
}

const Clock& Engine::clock() const {
  return *impl_->clock;
}

std::uint32_t Engine::Impl::intern_group(std::string_view group) {
  auto it = group_ids.find(group);
  if (it != group_ids.end()) {
    return it->second;
  }
  const auto id = static_cast<std::uint32_t>(group_texts.size());
  // Readers resolve group ids to texts, so growing the table takes the lock.
  std::unique_lock lock(state_mutex, std::defer_lock);
  if (committer.joinable()) {
    lock.lock();
  }
  group_texts.emplace_back(group);
  group_ids.emplace(std::string(group), id);
  return id;
}

engine::Series& Engine::Impl::series_for(std::uint32_t meter, std::uint32_t customer_num,
                                         std::uint32_t group) {
  engine::Series& s = meter_aggregates[meter].series[customer_num][group];
  if (!s.bound()) {
    s.bind(old_minutes.get(), engine::SeriesKey{meter, customer_num, group});
    if (minutes_from != engine::Series::kHoldsAll) {
      aggregates_live -= s.forget_minutes_before(minutes_from);
    }
  }
  return s;
}

void Engine::Impl::install_state(std::uint32_t meter, std::uint32_t customer_num,
                                 std::uint32_t group, core::TimeUs minute_us,
                                 const core::AggState& delta) {
  if (series_for(meter, customer_num, group).add(minute_us, delta)) {
    ++aggregates_live;
  }
  meter_aggregates[meter].totals[group].add(minute_us, delta);
}

Engine::Impl::Impl() = default;
Engine::Impl::~Impl() = default;

void Engine::Impl::install_unique(std::uint32_t meter, std::uint32_t customer_num,
                                  std::uint32_t group, core::TimeUs minute_us,
                                  const std::string& value) {
  series_for(meter, customer_num, group).add_unique(minute_us, value);
}

Result<bool> Engine::Impl::minute_state(std::uint32_t meter, std::uint32_t customer_num,
                                        std::uint32_t group, core::TimeUs minute_us,
                                        core::AggState* out) const {
  const engine::MeterAggregates& ms = meter_aggregates[meter];
  auto cit = ms.series.find(customer_num);
  if (cit != ms.series.end()) {
    if (auto git = cit->second.find(group); git != cit->second.end()) {
      return git->second.minute(minute_us, out);
    }
  }
  // No series: nothing held, but a minute before the horizon may still be stored (a series is
  // made on its first install, so this is the store's answer only when there is a horizon).
  if (minute_us < minutes_from && old_minutes != nullptr) {
    return old_minutes->get(engine::SeriesKey{meter, customer_num, group}, minute_us, out);
  }
  return false;
}

void Engine::Impl::start() {
  // A first look at the disk, so a server started on a full disk refuses writes (and says so
  // in /ready) from its first request.
  disk.admit(*store, config.storage).ignore_error();
  // Customers named in the config are created before anything else is accepted.
  touch_all_for_alerts();
  commit_queue.start();
  committer = std::thread([this] { run_committer(); });
  if (!checkpoint_path.empty() && config.storage.checkpoint_interval_seconds > 0) {
    checkpointer = std::thread([this] { run_checkpointer(); });
  }
  bool seeded = false;
  for (const auto& seed : config.customers) {
    if (customer_nums.count(seed.id) != 0) {
      continue;
    }
    Customer c;
    c.id = seed.id;
    c.name = seed.name.empty() ? seed.id : seed.name;
    c.email = seed.email;
    c.timezone = seed.timezone.empty() ? "UTC" : seed.timezone;
    c.plan = seed.plan;
    auto done = std::make_shared<std::promise<Status>>();
    auto job = std::make_unique<AdminJob>();
    const core::TimeUs now = clock->now_us();
    c.created_at_us = now;
    c.updated_at_us = now;
    auto tz = core::TimeZone::find(c.timezone);
    auto num_holder = std::make_shared<std::uint32_t>(0);
    auto work = std::make_shared<engine::LedgerWork>();
    const std::string credits = seed.credits;
    job->prepare = [this, c, num_holder, work, credits](store::WriteBatch& wb) -> Status {
      if (customer_nums.count(c.id) != 0) {
        return Status::already_exists("customer exists");
      }
      *num_holder = next_customer++;
      wb.put(store::Space::kCustomers, c.id, engine::encode_customer(*num_holder, c));
      std::string n;
      engine::put_be32(n, next_customer);
      wb.put(store::Space::kMeta, std::string(engine::kMetaNextCustomer), n);
      if (!credits.empty() && credits != "0") {
        WalletTransactionRequest top_up;
        top_up.type = LedgerType::kTopUp;
        top_up.amount = credits;
        top_up.description = "initial credits from the configuration";
        TALLY_TRY(apply_wallet_request(*work, *num_holder, top_up, c.created_at_us));
        write_ledger(*work, wb);
      }
      return Status();
    };
    job->install = [this, c, num_holder, tz, work]() {
      install_ledger(*work);
      engine::CustomerState cs;
      cs.num = *num_holder;
      cs.record = c;
      cs.tz = tz ? *tz : core::TimeZone();
      customer_nums.emplace(c.id, cs.num);
      customers.emplace(cs.num, std::move(cs));
    };
    job->done = [](Status) {
    };
    commit_queue.push_admin(std::move(job));
    seeded = true;
  }
  if (seeded) {
    // Checks read memory, not the queue: they must find these customers from the first one.
    commit_queue.wait_idle();
  }
}

namespace {

// After the commit thread stopped, the dedup table for the next open (engine/dedup_file.h), when
// that open will read it (the window forever) and the file does not hold it already. A failure
// costs the next open the scan of every dedup record: logged, nothing else.
void save_dedup_table(Engine::Impl& d) {
  if (d.checkpoint_path.empty() || d.config.storage.dedup_window_seconds != 0 ||
      !d.writes_allowed().ok()) {
    return;
  }
  const std::string path =
      engine::dedup_file_path(std::filesystem::path(d.checkpoint_path).parent_path().string());
  if (engine::dedup_file_seq(path) == d.next_seq) {
    return;
  }
  if (Status s = engine::write_dedup_file(path, d.dedup, d.next_seq); !s.ok()) {
    spdlog::warn("the dedup table could not be written: {}", s.message());
  }
}

}  // namespace

void Engine::Impl::stop() {
  if (checkpointer.joinable()) {
    checkpoint_abandon.store(true, std::memory_order_relaxed);
    {
      std::lock_guard lock(checkpointer_mutex);
      checkpointer_stopping = true;
    }
    checkpointer_cv.notify_all();
    checkpointer.join();
    checkpoint_abandon.store(false, std::memory_order_relaxed);
  }
  commit_queue.stop();
  {
    std::lock_guard lock(alerts_mutex);
    alerts_closing = true;
  }
  deliveries_cv.notify_all();
  if (committer.joinable()) {
    committer.join();
    // Nothing changes the aggregates any more: they are what the store holds. Not on a disk
    // the guard already refuses writes on: the file could take the store's reserve. Without
    // it, the next open reads the last periodic one and the customers committed after it.
    if (!checkpoint_path.empty() && writes_allowed().ok() &&
        installed_seq != checkpoint_written_seq) {
      save_checkpoint().ignore_error();
    }
    save_dedup_table(*this);
  }
}

Status Engine::Impl::write_store(const store::WriteBatch& wb, bool sync) {
  TALLY_TRY(disk.admit(*store, config.storage));
  Status written = store->write(wb, sync);
  disk.written(written);
  return written;
}

Status Engine::Impl::writes_allowed() const {
  return disk.refusing() ? disk.refusal() : Status();
}

Result<bool> Engine::Impl::read_stored_event(std::uint32_t customer_num, std::uint64_t seq,
                                             std::string* id, core::TimeUs* received_at_us) const {
  bool found = false;
  bool decoded = true;
  const std::string begin = engine::event_block_key(customer_num, seq);
  const std::string end = engine::event_block_key(customer_num + 1, 0);
  // A failed read is an error, never "not found": that would store a duplicate.
  TALLY_TRY(
      store->scan(store::Space::kEvents, begin, end, [&](std::string_view, std::string_view v) {
        engine::BlockHeader h;
        decoded = engine::decode_event_block(v, &h, [&](const engine::BlockEvent& e) {
          if (e.seq == seq) {
            id->assign(e.id);
            *received_at_us = h.received_at_us;
            found = true;
          }
        });
        return false;  // only the first block at or after seq can hold it
      }));
  if (!decoded) {
    return Status::corruption("an event block cannot be decoded");
  }
  if (found) {
    return true;
  }
  // An archived event keeps its id here, so a retry is still known for what it is.
  auto archived = store->get(store::Space::kArchive, engine::archived_event_key(customer_num, seq));
  if (!archived) {
    return archived.error();
  }
  if (!archived->has_value()) {
    return false;
  }
  engine::ArchivedEventRecord rec;
  if (!engine::decode_archived_event(**archived, &rec)) {
    return Status::corruption("an archived event record cannot be decoded");
  }
  *id = std::move(rec.id);
  *received_at_us = rec.received_at_us;
  return true;
}

bool Engine::Impl::event_id_stored(const engine::CustomerState& cs, std::string_view customer,
                                   std::string_view id) const {
  bool found = false;
  dedup.find(engine::dedup_hash(customer, id), [&](engine::DedupIndex::Location loc) {
    found = found || loc.customer_num == cs.num;
  });
  return found;
}

// ---- ingest entry points --------------------------------------------------------------------

void Engine::ingest_json_async(std::string body, const IngestOptions& options,
                               IngestCallback done) {
  Impl& d = *impl_;
  if (d.cluster != nullptr) {
    d.cluster->ingest(std::move(body), options, std::move(done));
    return;
  }
  if (d.read_only) {
    done(Status::unavailable("the engine is open read-only"));
    return;
  }
  auto job = std::make_unique<IngestJob>();
  job->start_us = steady_us();
  core::ParseOptions po;
  po.now_us = d.clock->now_us();
  po.future_skew_us_max = d.config.server.future_skew_seconds_max * core::kUsPerSecond;
  po.default_customer = options.restrict_customer;
  po.events_max = d.config.server.batch_events_max;
  po.source_scopes_id = options.source_scopes_id;
  if (!d.config.server.accept_unmetered_events && !d.catalog->metered_types.empty()) {
    po.known_types = &d.catalog->metered_types;
  }
  po.nonnegative = options.negative_corrections ? &d.catalog->nonnegative_for_admins
                                                : &d.catalog->nonnegative_for_customers;
  Status parsed = core::parse_events(body, po, &job->parsed);
  if (!parsed.ok()) {
    done(parsed);
    return;
  }
  const core::EventBatch& b = job->parsed.batch;
  if (!options.restrict_customer.empty()) {
    for (const auto& e : b.events()) {
      if (b.text(e.customer) != options.restrict_customer) {
        done(Status::permission_denied(
            "Events contain invalid customer_id. All events must belong to the authenticated "
            "customer."));
        return;
      }
    }
  }
  if (b.empty()) {
    // Nothing valid: answered without touching the store.
    IngestSummary sum;
    sum.rejected = static_cast<std::uint32_t>(options.all_or_nothing ? job->parsed.total
                                                                     : job->parsed.errors.size());
    for (const auto& err : job->parsed.errors) {
      sum.errors.push_back(EventError{err.index, err.id, err.code, err.message});
    }
    sum.processing_time_us = steady_us() - job->start_us;
    d.events_rejected.fetch_add(sum.rejected, std::memory_order_relaxed);
    done(std::move(sum));
    return;
  }
  const std::uint64_t n = b.size();
  if (Status allowed = d.writes_allowed(); !allowed.ok()) {
    done(std::move(allowed));  // the disk reserve: nothing is queued that cannot be stored
    return;
  }
  // Dedup hashes on this thread, not the commit thread's.
  job->hashes.reserve(n);
  for (const auto& e : b.events()) {
    job->hashes.push_back(engine::dedup_hash(b.text(e.customer), b.text(e.id)));
  }
  job->options = options;
  job->done = std::move(done);
  if (Status queued = d.commit_queue.push_ingest(job, n); !queued.ok()) {
    job->done(std::move(queued));
  }
}

Result<IngestSummary> Engine::ingest_json(std::string body, const IngestOptions& options) {
  std::promise<Result<IngestSummary>> p;
  auto f = p.get_future();
  ingest_json_async(std::move(body), options,
                    [&p](Result<IngestSummary> r) { p.set_value(std::move(r)); });
  return f.get();
}

void Engine::flush() {
  Impl& d = *impl_;
  if (d.cluster != nullptr) {
    d.cluster->flush();
    return;
  }
  d.commit_queue.wait_idle();
}

EngineStats Engine::stats() const {
  const Impl& d = *impl_;
  if (d.cluster != nullptr) {
    return d.cluster->stats();
  }
  EngineStats s;
  s.events_accepted = d.events_accepted.load();
  s.events_rejected = d.events_rejected.load();
  s.events_duplicate = d.events_duplicate.load();
  s.batches = d.batches.load();
  s.commits = d.commits.load();
  {
    std::shared_lock lock(d.state_mutex);
    s.customers = d.customers.size();
    s.aggregates_live = d.aggregates_live;
    s.aggregates_from_checkpoint = d.restored_from_checkpoint;
    s.aggregates_customers_reloaded = d.checkpoint_customers_reloaded;
  }
  s.store_bytes = d.store->size_bytes();
  s.pending_events = d.commit_queue.queued_events();
  s.check_events_not_durable = d.check_events_not_durable.load(std::memory_order_relaxed);
  s.latency_bounds_us.assign(engine::Histogram::kBoundsUs.begin(),
                             engine::Histogram::kBoundsUs.end());
  s.commit_latency_counts = d.commit_latency.cumulative();
  s.commit_latency_sum_us = d.commit_latency.sum_us();
  s.batch_latency_counts = d.batch_latency.cumulative();
  s.batch_latency_sum_us = d.batch_latency.sum_us();
  const engine::DiskState disk = d.disk.state();
  s.disk_known = disk.known;
  s.disk_free_bytes = disk.free_bytes;
  s.disk_total_bytes = disk.total_bytes;
  s.disk_reserve_bytes = disk.reserve_bytes;
  s.writes_refused = disk.refusing;
  {
    std::lock_guard lock(d.alerts_mutex);
    s.alerts = d.alert_records.size();
    s.deliveries_pending = d.pending_deliveries.size();
    if (!d.pending_deliveries.empty()) {
      // Delivery numbers grow with time: the first pending one is the oldest.
      s.oldest_pending_delivery_at_us =
          d.delivery_records.at(*d.pending_deliveries.begin()).created_at_us;
    }
    s.deliveries_failed = d.deliveries_failed;
    s.delivery_attempts_failed = d.delivery_attempts_failed;
  }
  return s;
}

Status Engine::ready() const {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->ready();
  }
  auto r = impl_->store->get(store::Space::kMeta, engine::kMetaSchema);
  if (!r) {
    return r.error();
  }
  return impl_->writes_allowed();
}

}  // namespace tally
