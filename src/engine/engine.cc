// The engine's front door: opening (the config, the store, the meter and price tables) and
// recovery of the in-memory state, the ingest entry points, statistics and readiness.
//
// Ingest path: a caller's thread parses the body (core/event_parse), computes the events'
// dedup hashes and queues an IngestJob (CommitQueue, group_commit.h). The commit thread commits
// the queued jobs together (group_commit.cc): one store write, durable before anything of it is
// visible or acknowledged.
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

namespace {

std::int64_t steady_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

namespace engine {

const std::vector<std::uint64_t>& Histogram::bounds_us() {
  static const std::vector<std::uint64_t> kBounds = {100,    250,    500,     1000,    2500,
                                                     5000,   10000,  25000,   50000,   100000,
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

const Clock& Engine::clock() const {
  return *impl_->clock;
}

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
    message +=
        (message.empty() ? "" : "; ") +
        ("plan '" + plan + "' is used by " + std::to_string(n) + " customer" + (n == 1 ? "" : "s"));
  }
  return Status::invalid_argument(
      message +
      " but is not in the configuration. Add it back to [[plans]], or say where its "
      "customers go with [enforcement] replaced_plans = { " +
      orphans.begin()->first + " = \"<a configured plan>\" }");
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
  TALLY_TRY(
      store->scan(store::Space::kCustomers, "", "", [&](std::string_view, std::string_view v) {
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
    TALLY_TRY(
        store->scan(store::Space::kMeta, begin, end, [&](std::string_view k, std::string_view) {
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
  TALLY_TRY(
      store->scan(store::Space::kAggregates, "", "", [&](std::string_view k, std::string_view v) {
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

void Engine::Impl::install_state(std::uint32_t meter, std::uint32_t customer_num,
                                 std::uint32_t group, core::TimeUs minute_us,
                                 const core::AggState& delta) {
  if (meters[meter].series[customer_num][group].add(minute_us, delta)) {
    ++aggregates_live;
  }
  meters[meter].totals[group].add(minute_us, delta);
}

void Engine::Impl::install_unique(std::uint32_t meter, std::uint32_t customer_num,
                                  std::uint32_t group, core::TimeUs minute_us,
                                  const std::string& value) {
  meters[meter].series[customer_num][group].add_unique(minute_us, value);
}

const core::AggState* Engine::Impl::minute_state(std::uint32_t meter, std::uint32_t customer_num,
                                                 std::uint32_t group,
                                                 core::TimeUs minute_us) const {
  const engine::MeterState& ms = meters[meter];
  auto cit = ms.series.find(customer_num);
  if (cit == ms.series.end()) {
    return nullptr;
  }
  auto git = cit->second.find(group);
  return git == cit->second.end() ? nullptr : git->second.minute(minute_us);
}

void Engine::Impl::start() {
  // A first look at the disk, so a server started on a full disk refuses writes (and says so
  // in /ready) from its first request.
  disk.admit(*store, config.storage).ignore_error();
  // Customers named in the config are created before anything else is accepted.
  touch_all_for_alerts();
  commit_queue.start();
  committer = std::thread([this] { run_committer(); });
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

void Engine::Impl::stop() {
  commit_queue.stop();
  {
    std::lock_guard lock(alerts_mutex);
    alerts_closing = true;
  }
  deliveries_cv.notify_all();
  if (committer.joinable()) {
    committer.join();
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
  po.nonnegative =
      options.negative_corrections ? &d.nonnegative_for_admins : &d.nonnegative_for_customers;
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
  d.commit_queue.wait_idle();
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
  s.pending_events = d.commit_queue.queued_events();
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
