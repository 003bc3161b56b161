// The engine: opening and recovery, the ingest pipeline and its group commit.
//
// Ingest path: a caller's thread parses the body (core/event_parse) and queues an IngestJob.
// The commit thread takes every queued job (up to commit_events_max events), then for each
// event resolves the customer, checks the dedup index (a hash hit is confirmed by reading the
// stored event, so dedup is exact), assigns a sequence number, and adds the event to its
// customer's block and to per-minute aggregate deltas. One store write carries the blocks, the
// dedup record, the new state of every touched minute aggregate, new distinct values, new
// customers and the next sequence number; with fsync on, it returns only when durable. Only
// then is the in-memory state updated and are the callers answered, so nothing a reader sees
// or a client was told can be lost by a crash.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <future>
#include <set>

#include "common/assert.h"
#include "common/crypto.h"
#include "engine/engine_impl.h"

namespace tally {

using engine::AdminJob;
using engine::IngestJob;
using engine::Job;

namespace {

std::int64_t steady_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

constexpr std::int64_t kKeyFlushIntervalUs = 1'000'000;

}  // namespace

namespace engine {

const std::vector<std::uint64_t>& Histogram::bounds_us() {
  static const std::vector<std::uint64_t> kBounds = {100,    250,    500,     1000,   2500,
                                                     5000,   10000,  25000,   50000,  100000,
                                                     250000, 500000, 1000000, 2500000, 5000000};
  return kBounds;
}

void Histogram::record(std::uint64_t us) {
  const auto& b = bounds_us();
  std::size_t i = 0;
  while (i < b.size() && us > b[i]) {
    ++i;
  }
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_us_.fetch_add(us, std::memory_order_relaxed);
}

std::vector<std::uint64_t> Histogram::cumulative() const {
  std::vector<std::uint64_t> out;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i <= bounds_us().size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    out.push_back(total);
  }
  return out;
}

}  // namespace engine

// ---- open -----------------------------------------------------------------------------------

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

Engine::~Engine() { impl_->stop(); }

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
  if (!options.data_dir.empty()) {
    impl->config.server.data_dir = options.data_dir;
  }
  impl->clock = options.clock != nullptr ? options.clock : &system_clock();
  impl->read_only = options.read_only;
  std::string admin_key = options.admin_key;
  if (admin_key.empty()) {
    admin_key = impl->config.server.admin_key;
  }
  if (!admin_key.empty()) {
    impl->admin_key_hash = common::sha256(admin_key);
  }

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
  }

  for (const auto& spec : impl->config.meters) {
    engine::MeterState m;
    m.spec = spec;
    impl->meters.push_back(std::move(m));
  }
  for (const auto& m : impl->meters) {
    const core::Aggregation a = m.spec.aggregation;
    impl->meter_limited.push_back(a == core::Aggregation::kCount || a == core::Aggregation::kSum ||
                                  a == core::Aggregation::kLatest || a == core::Aggregation::kMax);
  }
  impl->token_prefix = common::to_hex(common::random_bytes(6));
  // One price per meter and match; its config entries are its versions. Keys and versions
  // come from the store at load (load_prices); stored prices the config lost join there too.
  impl->prices_by_meter.resize(impl->meters.size());
  for (std::size_t e = 0; e < impl->config.prices.size(); ++e) {
    const core::PriceSpec& spec = impl->config.prices[e].spec;
    std::vector<std::pair<std::string, std::string>> match = spec.match;
    std::sort(match.begin(), match.end());
    auto same = std::find_if(impl->prices.begin(), impl->prices.end(), [&](const auto& ps) {
      return ps.spec.meter == spec.meter && ps.spec.match == match;
    });
    if (same != impl->prices.end()) {
      same->entries.push_back(e);
      continue;
    }
    engine::PriceState ps;
    ps.spec.meter = spec.meter;
    ps.spec.match = std::move(match);
    for (std::uint32_t i = 0; i < impl->meters.size(); ++i) {
      if (impl->meters[i].spec.key == spec.meter) {
        ps.meter = i;
        ps.event_type = impl->meters[i].spec.event_type;
      }
    }
    ps.entries.push_back(e);
    impl->prices_by_meter[ps.meter].push_back(static_cast<std::uint32_t>(impl->prices.size()));
    impl->prices.push_back(std::move(ps));
  }
  for (std::uint32_t i = 0; i < impl->meters.size(); ++i) {
    const std::string& type = impl->meters[i].spec.event_type;
    auto it = std::find_if(impl->meters_by_type.begin(), impl->meters_by_type.end(),
                           [&](const auto& p) { return p.first == type; });
    if (it == impl->meters_by_type.end()) {
      impl->meters_by_type.push_back({type, {i}});
    } else {
      it->second.push_back(i);
    }
  }

  for (const auto& [type, indexes] : impl->meters_by_type) {
    impl->metered_types.push_back(type);
  }
  for (const auto& m : impl->meters) {
    if (!m.hidden && !m.spec.value_property.empty() &&
        m.spec.aggregation != core::Aggregation::kUniqueCount) {
      impl->value_meters.push_back(m.spec);
    }
  }
  for (const auto& spec : impl->value_meters) {
    impl->nonnegative_for_customers.push_back(&spec);
    if (!spec.allow_negative) {
      impl->nonnegative_for_admins.push_back(&spec);
    }
  }
  // Hidden sum meters for the cost and credits of each priced meter, grouped like it.
  const std::size_t configured = impl->meters.size();
  impl->cost_meter.assign(configured, Impl::kNoMeter);
  impl->credits_meter.assign(configured, Impl::kNoMeter);
  for (std::uint32_t i = 0; i < configured; ++i) {
    if (impl->prices_by_meter[i].empty()) {
      continue;
    }
    for (const char* measure : {"cost", "credits"}) {
      engine::MeterState hidden;
      hidden.hidden = true;
      hidden.spec.key = impl->meters[i].spec.key + ":" + measure;
      hidden.spec.event_type = impl->meters[i].spec.event_type;
      hidden.spec.aggregation = core::Aggregation::kSum;
      hidden.spec.value_property = measure;
      hidden.spec.group_by = impl->meters[i].spec.group_by;
      (std::string_view(measure) == "cost" ? impl->cost_meter : impl->credits_meter)[i] =
          static_cast<std::uint32_t>(impl->meters.size());
      impl->meters.push_back(std::move(hidden));
      impl->meter_limited.push_back(false);
    }
  }

  TALLY_TRY(impl->load());
  if (!impl->read_only) {
    TALLY_TRY(impl->check_plans_configured());
    impl->start();
  }
  return std::unique_ptr<Engine>(new Engine(std::move(impl)));
}

const Clock& Engine::clock() const { return *impl_->clock; }

const config::Config& Engine::config() const { return impl_->config; }

Status Engine::Impl::check_plans_configured() const {
  // Fail closed: a customer whose plan left the config would be checked as unlimited.
  std::map<std::string, std::size_t> orphans;  // plan -> customers
  for (const auto& [num, cs] : customers) {
    const std::string& plan = cs.record.plan;
    if (!plan.empty() && engine::plan_of(config, cs.record) == nullptr) {
      ++orphans[plan];
    }
  }
  if (orphans.empty()) {
    return Status();
  }
  std::string message;
  for (const auto& [plan, n] : orphans) {
    message += (message.empty() ? "" : "; ") + ("plan '" + plan + "' is used by " +
                                                 std::to_string(n) + " customer" +
                                                 (n == 1 ? "" : "s"));
  }
  return Status::invalid_argument(
      message + " but is not in the configuration. Add it back to [[plans]], or say where its "
                "customers go with [enforcement] replaced_plans = { " + orphans.begin()->first +
      " = \"<a configured plan>\" }");
}

Status Engine::Impl::load() {
  // Meta: sequence numbers.
  auto seq = store->get(store::Space::kMeta, engine::kMetaNextSeq);
  if (!seq) {
    return seq.error();
  }
  if (seq->has_value() && (*seq)->size() == 8) {
    next_seq = engine::read_be64(**seq);
  }
  auto cust = store->get(store::Space::kMeta, engine::kMetaNextCustomer);
  if (!cust) {
    return cust.error();
  }
  if (cust->has_value() && (*cust)->size() == 4) {
    next_customer = engine::read_be32(**cust);
  }

  // Customers.
  Status bad;
  TALLY_TRY(store->scan(store::Space::kCustomers, "", "", [&](std::string_view, std::string_view v) {
    engine::CustomerState cs;
    if (!engine::decode_customer(v, &cs.num, &cs.record)) {
      bad = Status::corruption("a customer record cannot be decoded");
      return false;
    }
    auto tz = core::TimeZone::find(cs.record.timezone.empty() ? "UTC" : cs.record.timezone);
    cs.tz = tz ? *tz : core::TimeZone();
    customer_nums.emplace(cs.record.id, cs.num);
    customers.emplace(cs.num, std::move(cs));
    return true;
  }));
  TALLY_TRY(bad);

  // Keys.
  TALLY_TRY(store->scan(store::Space::kKeys, "", "", [&](std::string_view, std::string_view v) {
    auto ks = std::make_unique<engine::KeyState>();
    if (!engine::decode_key_record(v, &ks->record)) {
      bad = Status::corruption("a key record cannot be decoded");
      return false;
    }
    ks->total_requests.store(ks->record.info.total_requests);
    ks->last_used_at_us.store(ks->record.info.last_used_at_us);
    keys_by_id[ks->record.info.id] = ks.get();
    keys_by_hash[ks->record.hash] = std::move(ks);
    return true;
  }));
  TALLY_TRY(bad);

  // A meter no longer configured gets no aggregates from now on, so its fingerprint record
  // goes: re-adding the meter later, even unchanged, must rebuild it from the events stored
  // meanwhile. (A read-only open writes nothing; a writer removes the records on its open.)
  if (!read_only) {
    const std::string begin = engine::meter_fingerprint_key("");
    std::string end = begin;
    ++end.back();
    store::WriteBatch stale;
    TALLY_TRY(store->scan(store::Space::kMeta, begin, end, [&](std::string_view k, std::string_view) {
      const std::string_view key = k.substr(begin.size());
      if (std::none_of(meters.begin(), meters.end(),
                       [&](const engine::MeterState& m) { return m.spec.key == key; })) {
        stale.del(store::Space::kMeta, std::string(k));
      }
      return true;
    }));
    if (!stale.empty()) {
      TALLY_TRY(write_store(stale, true));
    }
  }

  // Meters whose definition changed since the aggregates were written are rebuilt.
  for (std::uint32_t i = 0; i < meters.size(); ++i) {
    const auto& spec = meters[i].spec;
    if (meters[i].hidden) {
      continue;  // costs are what was burned: never recomputed from the events
    }
    auto fp = store->get(store::Space::kMeta, engine::meter_fingerprint_key(spec.key));
    if (!fp) {
      return fp.error();
    }
    if (!fp->has_value() || **fp != spec.fingerprint()) {
      if (read_only) {
        return Status::unavailable("meter '" + spec.key +
                                   "' changed since its aggregates were written; start the "
                                   "server once to rebuild them");
      }
      TALLY_TRY(rebuild_meter(i));
    }
  }

  // Aggregates and distinct values.
  std::unordered_map<std::string, std::uint32_t> meter_index;
  for (std::uint32_t i = 0; i < meters.size(); ++i) {
    meter_index[meters[i].spec.key] = i;
  }
  TALLY_TRY(store->scan(store::Space::kAggregates, "", "", [&](std::string_view k, std::string_view v) {
    engine::AggregateKey ak;
    core::AggState s;
    if (!engine::decode_aggregate_key(k, &ak) || !engine::decode_agg_state(v, &s)) {
      bad = Status::corruption("an aggregate record cannot be decoded");
      return false;
    }
    auto it = meter_index.find(std::string(ak.meter));
    if (it != meter_index.end()) {
      install_state(it->second, ak.customer_num, intern_group(ak.group), ak.minute_us, s);
    }
    return true;
  }));
  TALLY_TRY(bad);
  TALLY_TRY(store->scan(store::Space::kUniques, "", "", [&](std::string_view k, std::string_view) {
    engine::UniqueKey uk;
    if (!engine::decode_unique_key(k, &uk)) {
      bad = Status::corruption("a distinct-value record cannot be decoded");
      return false;
    }
    auto it = meter_index.find(std::string(uk.meter));
    if (it != meter_index.end()) {
      install_unique(it->second, uk.customer_num, intern_group(uk.group), uk.minute_us,
                     std::string(uk.value));
    }
    return true;
  }));
  TALLY_TRY(bad);

  // The dedup index, within the dedup window.
  const std::int64_t window_us = config.storage.dedup_window_seconds * core::kUsPerSecond;
  const core::TimeUs now = clock->now_us();
  std::vector<engine::DedupEntry> entries;
  TALLY_TRY(store->scan(store::Space::kDedup, "", "", [&](std::string_view, std::string_view v) {
    core::TimeUs received = 0;
    if (!engine::decode_dedup_record(v, &received, &entries)) {
      bad = Status::corruption("a dedup record cannot be decoded");
      return false;
    }
    if (window_us > 0 && received < now - window_us) {
      return true;
    }
    for (const auto& e : entries) {
      dedup.insert(e.hash, e.seq, e.customer_num);
    }
    return true;
  }));
  TALLY_TRY(bad);
  TALLY_TRY(load_prices());
  TALLY_TRY(load_wallets());
  TALLY_TRY(load_reservations());
  TALLY_TRY(load_alerts());

  // Customers from the config that do not exist yet are created in the first commit.
  return Status();
}

Status Engine::Impl::rebuild_meter(std::uint32_t meter_index) {
  const core::MeterSpec& spec = meters[meter_index].spec;
  // Delete the meter's old aggregates and distinct values.
  const std::string prefix = engine::aggregate_meter_prefix(spec.key);
  std::string end = prefix;
  end.back() = '\x01';
  for (auto space : {store::Space::kAggregates, store::Space::kUniques}) {
    store::WriteBatch wb;
    TALLY_TRY(store->scan(space, prefix, end, [&](std::string_view k, std::string_view) {
      wb.del(space, std::string(k));
      return true;
    }));
    if (!wb.empty()) {
      TALLY_TRY(write_store(wb, true));
    }
  }
  // Recompute from the events.
  std::unordered_map<std::uint32_t, std::string> ids;
  for (const auto& [num, cs] : customers) {
    ids[num] = cs.record.id;
  }
  engine::Recomputed r;
  TALLY_TRY(engine::recompute(*store, {spec}, ids, &r));
  store::WriteBatch wb;
  for (const auto& [k, s] : r.aggregates) {
    wb.put(store::Space::kAggregates, k, engine::encode_agg_state(s));
    if (wb.bytes() > (8u << 20)) {
      TALLY_TRY(write_store(wb, false));
      wb.clear();
    }
  }
  for (const auto& [k, unused] : r.uniques) {
    wb.put(store::Space::kUniques, k, "");
    if (wb.bytes() > (8u << 20)) {
      TALLY_TRY(write_store(wb, false));
      wb.clear();
    }
  }
  wb.put(store::Space::kMeta, engine::meter_fingerprint_key(spec.key), spec.fingerprint());
  return write_store(wb, true);
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

namespace {

// The entry of `key`, made when absent. Usage mostly arrives in time order, so the key is
// usually the last one or after it: then no search of the tree is needed.
core::AggState& entry_at(std::map<core::TimeUs, core::AggState>& m, core::TimeUs key,
                         bool* inserted) {
  if (!m.empty()) {
    auto last = std::prev(m.end());
    if (last->first == key) {
      *inserted = false;
      return last->second;
    }
    if (last->first < key) {
      *inserted = true;
      return m.emplace_hint(m.end(), key, core::AggState{})->second;
    }
  }
  auto [it, added] = m.try_emplace(key);
  *inserted = added;
  return it->second;
}

// The entry of `key`, or null; as entry_at, a key at or after the last takes no search.
const core::AggState* find_entry(const std::map<core::TimeUs, core::AggState>& m,
                                 core::TimeUs key) {
  if (!m.empty()) {
    auto last = std::prev(m.end());
    if (last->first == key) {
      return &last->second;
    }
    if (last->first < key) {
      return nullptr;
    }
  }
  auto it = m.find(key);
  return it == m.end() ? nullptr : &it->second;
}

}  // namespace

void Engine::Impl::install_state(std::uint32_t meter, std::uint32_t customer_num,
                                 std::uint32_t group, core::TimeUs minute_us,
                                 const core::AggState& delta) {
  engine::Series& s = meters[meter].series[customer_num][group];
  bool inserted = false;
  entry_at(s.minutes, minute_us, &inserted).merge(delta);
  if (inserted) {
    ++aggregates_live;
  }
  const core::TimeUs hour = core::floor_to(minute_us, core::kUsPerHour);
  const core::TimeUs day = core::floor_to(minute_us, core::kUsPerDay);
  entry_at(s.hours, hour, &inserted).merge(delta);
  entry_at(s.days, day, &inserted).merge(delta);
  engine::GroupTotals& t = meters[meter].totals[group];
  entry_at(t.hours, hour, &inserted).merge(delta);
  entry_at(t.days, day, &inserted).merge(delta);
}

void Engine::Impl::install_unique(std::uint32_t meter, std::uint32_t customer_num,
                                  std::uint32_t group, core::TimeUs minute_us,
                                  const std::string& value) {
  engine::Series& s = meters[meter].series[customer_num][group];
  s.minute_uniques[minute_us].insert(value);
  const core::TimeUs hour = core::floor_to(minute_us, core::kUsPerHour);
  s.hour_uniques[hour].insert(value);
}

// ---- the commit thread ----------------------------------------------------------------------

void Engine::Impl::start() {
  // A first look at the disk, so a server started on a full disk refuses writes (and says so
  // in /ready) from its first request.
  disk.admit(*store, config.storage).ignore_error();
  // Customers named in the config are created before anything else is accepted.
  touch_all_for_alerts();
  committer = std::thread([this] { run_committer(); });
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
        top_up.type = "top_up";
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
    job->done = [](Status) {};
    Job j;
    j.admin = std::move(job);
    submit(std::move(j), 0);
  }
}

void Engine::Impl::stop() {
  {
    std::lock_guard lock(queue_mutex);
    stopping = true;
  }
  queue_cv.notify_all();
  {
    std::lock_guard lock(alerts_mutex);
    alerts_closing = true;
  }
  deliveries_cv.notify_all();
  if (committer.joinable()) {
    committer.join();
  }
}

void Engine::Impl::submit(Job job, std::uint64_t events) {
  {
    std::lock_guard lock(queue_mutex);
    queued_events += events;
    ++jobs_submitted;
    queue.push_back(std::move(job));
  }
  queue_cv.notify_one();
}

void Engine::Impl::run_committer() {
  std::vector<std::unique_ptr<IngestJob>> ingest_jobs;
  for (;;) {
    Job admin_job;
    std::uint64_t taken = 0;
    ingest_jobs.clear();
    {
      std::unique_lock lock(queue_mutex);
      const bool woke = queue_cv.wait_for(lock, std::chrono::milliseconds(1000), [this] {
        return stopping || !queue.empty();
      });
      if (!woke || queue.empty()) {
        if (stopping && queue.empty()) {
          lock.unlock();
          store::WriteBatch wb;
          if (disk.admit(*store, config.storage).ok()) {
            flush_key_counters(wb, true);
          }
          if (!wb.empty()) {
            // Best effort: counters are not ledger data.
            write_store(wb, true).ignore_error();
          }
          break;
        }
        lock.unlock();
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
      if (queue.front().ingest && config.storage.commit_interval_us > 0 &&
          queue.front().ingest->parsed.batch.size() < config.storage.commit_events_max) {
        // Give concurrent batches a moment to join this commit.
        queue_cv.wait_for(lock, std::chrono::microseconds(config.storage.commit_interval_us));
      }
      if (queue.front().admin) {
        admin_job = std::move(queue.front());
        queue.pop_front();
        taken = 1;
      } else {
        std::uint64_t events = 0;
        while (!queue.empty() && queue.front().ingest &&
               (ingest_jobs.empty() ||
                events + queue.front().ingest->parsed.batch.size() <=
                    config.storage.commit_events_max)) {
          events += queue.front().ingest->parsed.batch.size();
          if (queue.front().ingest.get() == open_check_job) {
            open_check_job = nullptr;  // taken: later check events start a new job
          }
          ingest_jobs.push_back(std::move(queue.front().ingest));
          queue.pop_front();
        }
        queued_events -= events;
        taken = ingest_jobs.size();
      }
    }
    if (admin_job.admin) {
      commit_admin(*admin_job.admin);
    } else {
      commit_ingest(ingest_jobs);
    }
    evaluate_alerts(clock->now_us());
    {
      std::lock_guard lock(queue_mutex);
      jobs_finished += taken;
    }
    idle_cv.notify_all();
  }
}

void Engine::Impl::flush_key_counters(store::WriteBatch& wb, bool force) {
  const std::int64_t now = steady_us();
  if (!force && now - last_key_flush_us < kKeyFlushIntervalUs) {
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

Status Engine::Impl::write_store(const store::WriteBatch& wb, bool sync) {
  TALLY_TRY(disk.admit(*store, config.storage));
  Status written = store->write(wb, sync);
  disk.written(written);
  return written;
}

Status Engine::Impl::writes_allowed() const {
  return disk.refusing() ? disk.refusal() : Status();
}

void Engine::Impl::commit_admin(AdminJob& job) {
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

Result<bool> Engine::Impl::read_stored_event(std::uint32_t customer_num, std::uint64_t seq,
                                             std::string* id, core::TimeUs* received_at_us) const {
  bool found = false;
  bool decoded = true;
  const std::string begin = engine::event_block_key(customer_num, seq);
  const std::string end = engine::event_block_key(customer_num + 1, 0);
  // A failed read is an error, never "not found": that would store a duplicate.
  TALLY_TRY(store->scan(store::Space::kEvents, begin, end, [&](std::string_view, std::string_view v) {
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

namespace {

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

struct Touched {
  core::AggState delta;
  std::vector<std::string> new_uniques;
};

struct PendingCustomer {
  std::uint32_t num;
  Customer record;
};

template <typename NewCustomers, typename CommitIds>
bool refuse_whole(const Engine::Impl& d, const engine::IngestJob& job,
                  const std::vector<std::uint64_t>& stored_copies, std::uint64_t stored_duplicate,
                  const NewCustomers& new_customers, const CommitIds& commit_ids,
                  IngestSummary* sum) {
  // An all-or-nothing request: every event must be valid, name a customer that exists (or may
  // be created), and be new. Checked before any of its events joins the commit.
  TALLY_ASSERT(job.check_tokens.empty(), "checks' usage events are never all-or-nothing");
  const core::EventBatch& b = job.parsed.batch;
  std::vector<EventError> faults;
  std::set<std::pair<std::string_view, std::string_view>> in_request;  // customer, id
  for (std::size_t i = 0; i < b.size(); ++i) {
    const std::string_view customer = b.text(b.events()[i].customer);
    const std::string_view id = b.text(b.events()[i].id);
    std::uint32_t cnum = 0;
    bool known = true;
    if (auto it = d.customer_nums.find(customer); it != d.customer_nums.end()) {
      cnum = it->second;
    } else if (auto nit = new_customers.find(customer); nit != new_customers.end()) {
      cnum = nit->second.num;
    } else if (!d.config.server.auto_create_customers) {
      faults.push_back(EventError{job.parsed.indexes[i], std::string(id), "UNKNOWN_CUSTOMER",
                                  "customer '" + std::string(customer) + "' does not exist"});
      continue;
    } else {
      known = false;  // created by this request: nothing of it is stored yet
    }
    bool duplicate =
        !in_request.emplace(customer, id).second || stored_copies[i] == stored_duplicate;
    if (!duplicate && known) {
      auto range = commit_ids.equal_range(engine::dedup_hash(customer, id));
      for (auto it = range.first; it != range.second && !duplicate; ++it) {
        duplicate = it->second.first == cnum && it->second.second == id;
      }
    }
    if (duplicate) {
      faults.push_back(EventError{job.parsed.indexes[i], std::string(id), "DUPLICATE",
                                  "event '" + std::string(id) + "' of customer '" +
                                      std::string(customer) + "' is already stored"});
    }
  }
  if (faults.empty() && job.parsed.errors.empty()) {
    return false;
  }
  sum->errors.insert(sum->errors.end(), faults.begin(), faults.end());
  sum->rejected = job.parsed.total;
  return true;
}

}  // namespace

void Engine::Impl::commit_ingest(std::vector<std::unique_ptr<IngestJob>>& jobs) {
  const std::int64_t commit_start = steady_us();
  const core::TimeUs now = clock->now_us();
  const std::uint64_t first_seq = next_seq;
  const std::uint32_t first_customer = next_customer;
  const std::int64_t window_us = config.storage.dedup_window_seconds * core::kUsPerSecond;

  std::vector<IngestSummary> summaries(jobs.size());
  std::unordered_map<std::string, PendingCustomer, engine::StringHash, std::equal_to<>> new_customers;
  // Per customer number: the block of this commit.
  std::unordered_map<std::uint32_t, engine::EventBlockWriter> blocks;
  std::unordered_map<std::uint32_t, std::uint64_t> block_last_seq;
  std::vector<engine::DedupEntry> dedup_entries;
  // Ids accepted in this commit, for duplicates inside it: hash -> (customer num, id).
  std::unordered_multimap<std::uint64_t, std::pair<std::uint32_t, std::string_view>> commit_ids;
  std::unordered_map<BucketKey, Touched, BucketKeyHash> touched;
  std::vector<std::pair<std::uint64_t, std::uint64_t>> dedup_replacements;  // hash, old seq
  std::vector<engine::LimitDelta> limit_deltas;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> settled;  // customer num, check token
  core::MeterInput input;
  std::string group;
  std::string stored_id;
  engine::LedgerWork ledger;
  std::vector<std::pair<std::string_view, std::string_view>> event_props;
  std::vector<Status> failed(jobs.size());  // per job: OK, or why it failed alone
  // Check tokens of jobs that failed alone: their usage is not stored, so their ids are forgotten.
  std::vector<std::pair<std::uint32_t, std::uint64_t>> lost;

  // The stored copies behind a job's dedup index hits are read before any of its events joins
  // the commit, so a failed read fails that job alone: nothing of it is written and its caller
  // gets the error, instead of a possible duplicate going through. Per event: 0 = no stored
  // copy, kStoredDuplicate = a copy within the dedup window, else the seq of a copy outside
  // it (accepted again, replacing that copy in the index).
  constexpr std::uint64_t kStoredDuplicate = ~std::uint64_t{0};
  std::vector<std::uint64_t> stored_copies;
  auto read_stored_copies = [&](const IngestJob& job) -> Status {
    const core::EventBatch& b = job.parsed.batch;
    stored_copies.assign(b.size(), 0);
    Status read_failed;
    for (std::size_t i = 0; i < b.size() && read_failed.ok(); ++i) {
      const std::string_view customer = b.text(b.events()[i].customer);
      auto it = customer_nums.find(customer);
      if (it == customer_nums.end()) {
        continue;  // a customer created by this commit has nothing stored
      }
      const std::uint32_t cnum = it->second;
      const std::string_view id = b.text(b.events()[i].id);
      std::uint64_t& copy = stored_copies[i];
      dedup.find(engine::dedup_hash(customer, id), [&](engine::DedupIndex::Location loc) {
        if (!read_failed.ok() || copy == kStoredDuplicate || loc.customer_num != cnum) {
          return;
        }
        core::TimeUs received = 0;
        auto found = read_stored_event(loc.customer_num, loc.seq, &stored_id, &received);
        if (!found) {
          read_failed = found.error();
        } else if (*found && stored_id == id) {
          if (window_us > 0 && received < now - window_us) {
            copy = loc.seq;  // seen, but outside the window: accept again
          } else {
            copy = kStoredDuplicate;
          }
        }
      });
    }
    return read_failed;
  };

  // The usage events of reservation commits (token -> reservation id): their burns name the
  // reservation, and what they burn is taken from its hold before the rest is released.
  std::unordered_map<std::uint64_t, std::string_view> reservation_usage;
  std::unordered_map<std::uint64_t, core::Decimal> burned;
  for (const auto& job : jobs) {
    for (const auto& op : job->reservation_ops) {
      if (!op.open && op.usage_token != 0 && op.record.credits.units > 0) {
        reservation_usage.emplace(op.usage_token, op.id);
      }
    }
  }

  for (std::size_t j = 0; j < jobs.size(); ++j) {
    IngestJob& job = *jobs[j];
    IngestSummary& sum = summaries[j];
    const core::EventBatch& b = job.parsed.batch;
    if (Status read = read_stored_copies(job); !read.ok()) {
      failed[j] = Status(read.code(), "the events could not be checked for duplicates: " +
                                          read.message());
      // Its checks' usage is lost, as when a commit fails: free their holds.
      for (std::size_t i = 0; i < job.check_tokens.size() && i < b.size(); ++i) {
        auto it = customer_nums.find(b.text(b.events()[i].customer));
        if (job.check_tokens[i] != 0 && it != customer_nums.end()) {
          settled.emplace_back(it->second, job.check_tokens[i]);
          lost.emplace_back(it->second, job.check_tokens[i]);
        }
      }
      continue;
    }
    for (const auto& err : job.parsed.errors) {
      sum.errors.push_back(EventError{err.index, err.id, err.code, err.message});
    }
    sum.rejected = static_cast<std::uint32_t>(job.parsed.errors.size());
    if (job.options.all_or_nothing && refuse_whole(*this, job, stored_copies, kStoredDuplicate,
                                                   new_customers, commit_ids, &sum)) {
      continue;  // nothing of it joins the commit
    }
    for (std::size_t i = 0; i < b.size(); ++i) {
      const core::Event& e = b.events()[i];
      const std::string_view customer = b.text(e.customer);
      const std::string_view id = b.text(e.id);
      const std::uint64_t token = job.check_tokens.empty() ? 0 : job.check_tokens[i];

      // The customer.
      std::uint32_t cnum = 0;
      bool suspended = false;
      const engine::CustomerState* cstate = nullptr;
      if (auto it = customer_nums.find(customer); it != customer_nums.end()) {
        cnum = it->second;
        cstate = &customers.at(cnum);
        suspended = cstate->record.status == "suspended";
      } else if (auto nit = new_customers.find(customer); nit != new_customers.end()) {
        cnum = nit->second.num;
      } else if (config.server.auto_create_customers && next_customer <= engine::DedupIndex::kCustomerMax) {
        PendingCustomer pc;
        pc.num = next_customer++;
        pc.record.id = customer;
        pc.record.name = customer;
        pc.record.created_at_us = now;
        pc.record.updated_at_us = now;
        cnum = pc.num;
        new_customers.emplace(std::string(customer), std::move(pc));
      } else {
        ++sum.rejected;
        sum.errors.push_back(EventError{job.parsed.indexes[i], std::string(id), "UNKNOWN_CUSTOMER",
                                        "customer '" + std::string(customer) + "' does not exist"});
        continue;
      }

      // Dedup: within this commit, then against the index (confirmed by the stored id).
      const std::uint64_t h = engine::dedup_hash(customer, id);
      bool duplicate = false;
      auto range = commit_ids.equal_range(h);
      for (auto it = range.first; it != range.second && !duplicate; ++it) {
        duplicate = it->second.first == cnum && it->second.second == id;
      }
      std::uint64_t expired_seq = 0;
      if (!duplicate) {
        duplicate = stored_copies[i] == kStoredDuplicate;  // read by read_stored_copies
        expired_seq = duplicate ? 0 : stored_copies[i];
      }
      if (token != 0) {
        settled.emplace_back(cnum, token);
      }
      if (duplicate) {
        ++sum.duplicates;
        continue;
      }

      const std::uint64_t seq = next_seq++;
      commit_ids.emplace(h, std::make_pair(cnum, id));
      dedup_entries.push_back(engine::DedupEntry{h, seq, cnum});
      if (expired_seq != 0) {
        dedup_replacements.emplace_back(h, expired_seq);
      }
      ++sum.accepted;

      // Meters, and the event's price.
      bool priced = false;
      core::Decimal event_cost;
      core::Decimal event_credits;
      event_props.clear();
      const std::string_view type = b.text(e.type);
      for (const auto& [mtype, indexes] : meters_by_type) {
        if (mtype != type) {
          continue;
        }
        for (std::uint32_t m : indexes) {
          if (!core::meter_accepts(meters[m].spec, b, e, &input, &group)) {
            continue;
          }
          const core::TimeUs minute = core::floor_to(e.time_us, core::kUsPerMinute);
          Touched& t = touched[BucketKey{m, cnum, intern_group(group), minute}];
          t.delta.add(input.value, e.time_us, seq);
          if (meter_limited[m]) {
            limit_deltas.push_back(
                engine::LimitDelta{cnum, m, e.time_us, input.value, seq, token != 0});
          }
          if (!prices_by_meter[m].empty()) {
            if (event_props.empty()) {
              for (std::uint32_t p = e.prop_begin; p < e.prop_begin + e.prop_count; ++p) {
                event_props.emplace_back(b.text(b.props()[p].key), b.text(b.props()[p].text));
              }
            }
            static const core::TimeZone kUtc;
            core::Decimal cost;
            core::Decimal credits;
            const core::TimeUs anchor =
                cstate == nullptr ? now
                : cstate->record.billing_anchor_us != 0 ? cstate->record.billing_anchor_us
                                                        : cstate->record.created_at_us;
            if (price_of(m, cnum, cstate != nullptr ? cstate->tz : kUtc, anchor, e.time_us,
                         input.value, event_props, &ledger, &cost, &credits)) {
              const std::uint32_t gid = intern_group(group);
              touched[BucketKey{cost_meter[m], cnum, gid, minute}].delta.add(cost, e.time_us, seq);
              touched[BucketKey{credits_meter[m], cnum, gid, minute}].delta.add(credits, e.time_us,
                                                                                seq);
              priced = true;
              event_cost += cost;
              event_credits += credits;
            }
          }
          if (meters[m].spec.aggregation == core::Aggregation::kUniqueCount) {
            bool known = false;
            auto cit = meters[m].series.find(cnum);
            if (cit != meters[m].series.end()) {
              auto git = cit->second.find(group_ids.find(group)->second);
              if (git != cit->second.end()) {
                auto uit = git->second.minute_uniques.find(minute);
                known = uit != git->second.minute_uniques.end() &&
                        uit->second.count(std::string(input.unique)) != 0;
              }
            }
            if (!known && std::find(t.new_uniques.begin(), t.new_uniques.end(), input.unique) ==
                              t.new_uniques.end()) {
              t.new_uniques.emplace_back(input.unique);
            }
          }
        }
      }
      auto [bit, fresh] = blocks.try_emplace(cnum);
      if (fresh) {
        bit->second.begin(seq, now);
      }
      bit->second.add(b, e, seq, suspended, priced, event_cost, event_credits);
      block_last_seq[cnum] = seq;
      if (priced && event_credits.units != 0) {
        std::string_view reservation;
        if (token != 0 && !reservation_usage.empty()) {
          if (auto rit = reservation_usage.find(token); rit != reservation_usage.end()) {
            reservation = rit->second;
            burned[token] += event_credits;
          }
        }
        burn(ledger, cnum, event_credits, id, now, reservation);
      }
    }
  }

  // Reservations opened and closed by the jobs, then those expiry closed: after the events, so
  // a commit's release knows what its usage burned.
  std::vector<engine::ReservationOp> reservation_ops;
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    if (failed[j].ok()) {
      reservation_ops.insert(reservation_ops.end(), jobs[j]->reservation_ops.begin(),
                             jobs[j]->reservation_ops.end());
    }
  }
  std::vector<engine::ReservationOp> expired;
  {
    std::lock_guard lock(limits_mutex);
    expired.swap(expired_reservation_ops);
  }
  reservation_ops.insert(reservation_ops.end(), expired.begin(), expired.end());

  // One write for the whole commit.
  store::WriteBatch wb;
  for (auto& [cnum, writer] : blocks) {
    wb.put(store::Space::kEvents, engine::event_block_key(cnum, block_last_seq[cnum]),
           writer.finish());
  }
  if (!dedup_entries.empty()) {
    wb.put(store::Space::kDedup, engine::dedup_key(first_seq),
           engine::encode_dedup_record(now, dedup_entries));
  }
  for (const auto& [k, t] : touched) {
    const engine::MeterState& ms = meters[k.meter];
    core::AggState state;
    auto cit = ms.series.find(k.customer_num);
    if (cit != ms.series.end()) {
      auto git = cit->second.find(k.group);
      if (git != cit->second.end()) {
        if (const core::AggState* current = find_entry(git->second.minutes, k.minute_us)) {
          state = *current;
        }
      }
    }
    state.merge(t.delta);
    const std::string& gtext = group_texts[k.group];
    wb.put(store::Space::kAggregates,
           engine::aggregate_key(ms.spec.key, k.customer_num, k.minute_us, gtext),
           engine::encode_agg_state(state));
    for (const auto& u : t.new_uniques) {
      wb.put(store::Space::kUniques,
             engine::unique_key(ms.spec.key, k.customer_num, k.minute_us, gtext, u), "");
    }
  }
  for (const auto& [id, pc] : new_customers) {
    wb.put(store::Space::kCustomers, id, engine::encode_customer(pc.num, pc.record));
  }
  if (next_seq != first_seq) {
    std::string v;
    engine::put_be64(v, next_seq);
    wb.put(store::Space::kMeta, std::string(engine::kMetaNextSeq), v);
  }
  if (next_customer != first_customer) {
    std::string v;
    engine::put_be32(v, next_customer);
    wb.put(store::Space::kMeta, std::string(engine::kMetaNextCustomer), v);
  }
  flush_key_counters(wb, false);
  write_reservations(reservation_ops, burned, ledger, wb, now);
  write_ledger(ledger, wb);

  Status written;
  if (!wb.empty()) {
    written = write_store(wb, config.storage.fsync);
  }
  if (!written.ok()) {
    next_seq = first_seq;
    next_customer = first_customer;
    if (!expired.empty()) {
      std::lock_guard lock(limits_mutex);  // written by a later commit
      expired_reservation_ops.insert(expired_reservation_ops.end(), expired.begin(),
                                     expired.end());
    }
    if (!settled.empty()) {
      std::unique_lock lock(state_mutex);
      settle_limits({}, settled);  // the checks' usage is lost, as in a crash: free its hold
      forget_check_ids(settled);   // and a retry of one of them must count
    }
    // Every waiter of the commit gets the failure: nothing of it was stored, or acknowledged.
    const StatusCode code = written.code() == StatusCode::kInsufficientStorage
                                ? StatusCode::kInsufficientStorage
                                : StatusCode::kIOError;
    for (std::size_t j = 0; j < jobs.size(); ++j) {
      jobs[j]->done(failed[j].ok()
                        ? Status(code, "the events could not be stored: " + written.message())
                        : failed[j]);
    }
    return;
  }

  // Durable: now make it visible. A dedup table that must grow for this commit's entries is
  // built first, without the lock: under it, growing is a swap, not a rehash.
  dedup.prepare_growth(dedup_entries.size());
  {
    std::unique_lock lock(state_mutex);
    for (auto& [id, pc] : new_customers) {
      engine::CustomerState cs;
      cs.num = pc.num;
      cs.record = std::move(pc.record);
      customer_nums.emplace(id, cs.num);
      customers.emplace(cs.num, std::move(cs));
    }
    for (const auto& [k, t] : touched) {
      install_state(k.meter, k.customer_num, k.group, k.minute_us, t.delta);
      for (const auto& u : t.new_uniques) {
        install_unique(k.meter, k.customer_num, k.group, k.minute_us, u);
      }
    }
    if (!limit_deltas.empty() || !settled.empty()) {
      settle_limits(limit_deltas, settled);
    }
    if (!lost.empty()) {
      forget_check_ids(lost);
    }
    if (alerts_enabled) {
      for (const auto& delta : limit_deltas) {
        const std::pair<std::uint32_t, std::uint32_t> touched_limit{delta.customer_num, delta.meter};
        if (alert_touched_limits.empty() || alert_touched_limits.back() != touched_limit) {
          alert_touched_limits.push_back(touched_limit);  // a customer's events come together
        }
      }
    }
    install_ledger(ledger);
    install_reservations(reservation_ops);
    // Under the lock too: checks read the index (a retried check's event id) while holding
    // state_mutex shared.
    for (const auto& d : dedup_entries) {
      const auto replacement =
          std::find_if(dedup_replacements.begin(), dedup_replacements.end(),
                       [&](const auto& rep) { return rep.first == d.hash; });
      if (replacement != dedup_replacements.end()) {
        dedup.replace(d.hash, replacement->second, d.seq, d.customer_num);
      } else {
        dedup.insert(d.hash, d.seq, d.customer_num);
      }
    }
  }

  const std::int64_t end = steady_us();
  commits.fetch_add(1, std::memory_order_relaxed);
  commit_latency.record(static_cast<std::uint64_t>(end - commit_start));
  for (std::size_t j = 0; j < jobs.size(); ++j) {
    if (!failed[j].ok()) {
      jobs[j]->done(failed[j]);
      continue;
    }
    IngestSummary& sum = summaries[j];
    events_accepted.fetch_add(sum.accepted, std::memory_order_relaxed);
    events_rejected.fetch_add(sum.rejected, std::memory_order_relaxed);
    events_duplicate.fetch_add(sum.duplicates, std::memory_order_relaxed);
    batches.fetch_add(1, std::memory_order_relaxed);
    sum.processing_time_us = end - jobs[j]->start_us;
    batch_latency.record(static_cast<std::uint64_t>(sum.processing_time_us));
    if (sum.accepted > 0) {
      sum.batch_id = "batch_" + std::to_string(first_seq) + "_" + std::to_string(j);
    }
    std::sort(sum.errors.begin(), sum.errors.end(),
              [](const EventError& a, const EventError& b) { return a.index < b.index; });
    jobs[j]->done(std::move(sum));
  }
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
  if (!d.config.server.accept_unmetered_events && !d.metered_types.empty()) {
    po.known_types = &d.metered_types;
  }
  po.nonnegative = options.negative_corrections ? &d.nonnegative_for_admins
                                                : &d.nonnegative_for_customers;
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
  {
    std::lock_guard lock(d.queue_mutex);
    if (d.stopping) {
      done(Status::unavailable("shutting down"));
      return;
    }
    if (d.queued_events + n > Impl::kQueuedEventsMax) {
      done(Status::unavailable("the ingest queue is full; retry shortly"));
      return;
    }
  }
  job->options = options;
  job->done = std::move(done);
  Job j;
  j.ingest = std::move(job);
  d.submit(std::move(j), n);
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
  std::unique_lock lock(d.queue_mutex);
  const std::uint64_t target = d.jobs_submitted;
  d.idle_cv.wait(lock, [&] { return d.jobs_finished >= target || !d.committer.joinable(); });
}

EngineStats Engine::stats() const {
  const Impl& d = *impl_;
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
  }
  s.store_bytes = d.store->size_bytes();
  {
    std::lock_guard lock(const_cast<Impl&>(d).queue_mutex);
    s.pending_events = d.queued_events;
  }
  s.check_events_not_durable = d.check_events_not_durable.load(std::memory_order_relaxed);
  s.latency_bounds_us = engine::Histogram::bounds_us();
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
  auto r = impl_->store->get(store::Space::kMeta, engine::kMetaSchema);
  if (!r) {
    return r.error();
  }
  return impl_->writes_allowed();
}

}  // namespace tally
