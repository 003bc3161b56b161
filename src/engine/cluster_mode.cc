// The engine's scale-out mode: opening a node, customers, keys and operations (see
// cluster_mode.h).
#include "core/ids.h"
#include "engine/cluster_mode_impl.h"

namespace tally::engine {

// ---- open -----------------------------------------------------------------------------------

Status ClusterMode::not_built(std::string_view what) {
  return Status::not_implemented(std::string(what) +
                                 " is not built in the cluster mode yet (docs/cluster.md)");
}

Status cluster_not_built(std::string_view what) {
  return ClusterMode::not_built(what);
}

namespace {

// What the mode cannot honour yet: refused at open, so nothing differs silently.
Status refuse_unsupported(const config::Config& config) {
  if (config.enforcement.api_rate_limit_per_minute != 0) {
    return Status::invalid_argument(
        "[enforcement] api_rate_limit_per_minute is not built in the cluster mode yet (each node "
        "would count its own requests): remove it or the [cluster] section (docs/cluster.md)");
  }
  return Status();
}

}  // namespace

Result<std::unique_ptr<ClusterMode>> ClusterMode::open(const config::Config& config,
                                                       const Catalog& catalog, const Clock& clock) {
  TALLY_TRY(refuse_unsupported(config));
  const config::ClusterConfig& cc = *config.cluster;
  auto impl = std::make_unique<Impl>();
  impl->config = &config;
  impl->catalog = &catalog;
  impl->clock = &clock;
  // Every meter, by its catalog index: a priced meter's hidden cost and credits meters are
  // aggregated from the charges (cluster::ChargeMeters), never from events' properties.
  for (const auto& m : catalog.meters) {
    impl->meter_specs.push_back(m.spec);
  }
  impl->charge_meters =
      cluster::ChargeMeters::of(catalog.cost_meter, catalog.credits_meter, catalog.meters.size());
  impl->node_prefix = common::to_hex(common::random_bytes(6));
  impl->leases_on = cc.check_lease.units > 0;
  for (std::size_t i = 0; i < cc.postgres.size(); ++i) {
    pg::ConnectOptions co;
    co.conninfo = cc.postgres[i];
    co.connect_timeout_ms = static_cast<std::uint32_t>(cc.connect_timeout_seconds * 1000);
    co.command_timeout_ms = static_cast<std::uint32_t>(cc.command_timeout_seconds * 1000);
    std::string name = "cluster.postgres";
    if (cc.postgres.size() > 1) {
      name += "[" + std::to_string(i) + "]";
    }
    auto pool =
        std::make_unique<cluster::PgPool>(name, co, static_cast<std::size_t>(cc.postgres_pool));
    auto lease = pool->lease();
    if (!lease) {
      return lease.error();
    }
    auto status = pg::schema_status(**lease);
    if (!status) {
      return Status(status.error().code(), name + ": " + status.error().message());
    }
    if (status->state != pg::SchemaState::kKnown) {
      return Status::invalid_argument(name + " (" + (*lease)->describe() +
                                      "): " + status->describe());
    }
    impl->shards.push_back(std::move(pool));
  }
  impl->redis_options.seeds = cc.redis;
  impl->redis_options.connect_timeout_ms =
      static_cast<std::uint32_t>(cc.connect_timeout_seconds * 1000);
  impl->redis_options.command_timeout_ms =
      static_cast<std::uint32_t>(cc.command_timeout_seconds * 1000);
  {
    auto slot = impl->lease_redis();
    if (!slot) {
      return slot.error();
    }
    TALLY_TRY((*slot)->limits->load());
    impl->return_redis(std::move(*slot));
  }
  impl->shard_queues.resize(impl->shards.size() * kWriterLanes);
  for (std::size_t q = 0; q < impl->shard_queues.size(); ++q) {
    impl->writers.emplace_back([p = impl.get(), q] { p->writer_loop(q); });
  }
  impl->usage_writer = std::thread([p = impl.get()] { p->usage_loop(); });
  impl->start_alerts();
  return std::unique_ptr<ClusterMode>(new ClusterMode(std::move(impl)));
}

ClusterMode::ClusterMode(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ClusterMode::~ClusterMode() {
  impl_->stop();
}

void ClusterMode::Impl::stop() {
  {
    std::lock_guard lock(work_mutex);
    stopping = true;
  }
  work_cv.notify_all();
  for (auto& t : writers) {
    t.join();
  }
  usage_writer.join();
  give_back(leases.take_all());  // what this node did not use, for the other nodes
  stop_alerts();                 // after the writers, which queue alert work
}

namespace {

// The nodes' limits: a window counter Redis does not have is seeded from PostgreSQL again.
cluster::RedisLimitsOptions limit_options() {
  cluster::RedisLimitsOptions o;
  o.require_seeded_windows = true;
  return o;
}

}  // namespace

Result<std::unique_ptr<RedisSlot>> ClusterMode::Impl::lease_redis() {
  {
    std::lock_guard lock(redis_mutex);
    if (!redis_idle.empty()) {
      auto slot = std::move(redis_idle.back());
      redis_idle.pop_back();
      return slot;
    }
  }
  auto client = redis::ClusterClient::connect(redis_options);
  if (!client) {
    return Status(client.error().code(), "cluster.redis: " + client.error().message());
  }
  auto slot = std::make_unique<RedisSlot>();
  slot->client = std::move(*client);
  slot->limits = std::make_unique<cluster::RedisLimits>(*slot->client, limit_options());
  return slot;
}

void ClusterMode::Impl::return_redis(std::unique_ptr<RedisSlot> slot) {
  std::lock_guard lock(redis_mutex);
  redis_idle.push_back(std::move(slot));
}

// ---- customers and keys -------------------------------------------------------------------

Result<Customer> ClusterMode::create_customer(const Customer& c) {
  auto lease = impl_->shard_of(c.id).lease();
  if (!lease) {
    return lease.error();
  }
  TALLY_TRY(cluster::insert_customer(**lease, c));
  return c;
}

Result<Customer> ClusterMode::Impl::read_customer(const std::string& id) {
  auto lease = shard_of(id).lease();
  if (!lease) {
    return lease.error();
  }
  auto found = cluster::find_customer(**lease, id);
  if (!found) {
    return found.error();
  }
  if (!found->has_value()) {
    return core::customer_not_found(id);
  }
  return std::move(**found);
}

Result<Customer> ClusterMode::get_customer(const std::string& id) {
  return impl_->read_customer(id);
}

Result<std::vector<Customer>> ClusterMode::list_customers() {
  std::vector<Customer> out;
  for (auto& shard : impl_->shards) {
    auto lease = shard->lease();
    if (!lease) {
      return lease.error();
    }
    auto some = cluster::shard_customers(**lease);
    if (!some) {
      return some.error();
    }
    std::move(some->begin(), some->end(), std::back_inserter(out));
  }
  std::sort(out.begin(), out.end(),
            [](const Customer& a, const Customer& b) { return a.id < b.id; });
  return out;
}

namespace {

// Customer `id`, its row locked (FOR UPDATE) in the transaction open on `conn`, so that two nodes
// changing one customer at once apply both changes, one after the other. Errors: kNotFound; the
// shard's.
Result<Customer> locked_customer(pg::Connection& conn, const std::string& id) {
  auto locked = conn.exec("SELECT 1 FROM customers WHERE id = $1 FOR UPDATE", {id});
  if (!locked) {
    return locked.error();
  }
  auto found = cluster::find_customer(conn, id);
  if (!found) {
    return found.error();
  }
  if (!found->has_value()) {
    return core::customer_not_found(id);
  }
  return std::move(**found);
}

// A transaction open on a connection of customer `id`'s shard, and the customer read in it with
// its row locked (locked_customer); destroyed in reverse order, the transaction (rolled back when
// not committed) before the lease gives its connection back. Errors: kNotFound; the shard's.
struct LockedCustomer {
  cluster::PgPool::Lease lease;
  pg::Transaction txn;
  Customer customer;
};

Result<LockedCustomer> lock_customer(cluster::PgPool& shard, const std::string& id) {
  auto lease = shard.lease();
  if (!lease) {
    return lease.error();
  }
  auto txn = pg::Transaction::begin(**lease);
  if (!txn) {
    return txn.error();
  }
  auto found = locked_customer(**lease, id);
  if (!found) {
    return found.error();
  }
  return LockedCustomer{std::move(*lease), std::move(*txn), std::move(*found)};
}

// `rule`'s bucket (a rate) rebuilt at a reset as the embedded store rebuilds one: filled with the
// usage of the last period that `shard` holds (whole minutes, so up to a minute more than the
// period) as if it had all just happened. The checks of the last few milliseconds that their
// nodes have not written yet are not in it.
Status rebuild_rate(cluster::PgPool& shard, cluster::RedisLimits& limits,
                    const std::string& customer, const core::LimitRule& rule,
                    const core::MeterSpec& meter, TimeUs now) {
  cluster::UsageQuery uq;
  uq.customer = customer;
  uq.from_us = core::floor_to(now - core::rate_period_us(rule.period), core::kUsPerMinute);
  uq.to_us = core::floor_to(now, core::kUsPerMinute) + core::kUsPerMinute;
  auto lease = shard.lease();
  if (!lease) {
    return lease.error();
  }
  auto recent = cluster::read_usage(**lease, meter, uq);
  if (!recent) {
    return recent.error();
  }
  return limits.set_rate(customer, rule, used_value(meter.aggregation, recent->state), now);
}

}  // namespace

Status ClusterMode::Impl::commit_audited(pg::Transaction& txn, pg::Connection& conn,
                                         std::string_view customer,
                                         const std::vector<std::string>& records, TimeUs at) {
  const bool on_home = customer.empty() || cluster::shard_of(customer, shards.size()) == 0;
  if (on_home) {
    for (const std::string& record : records) {
      TALLY_TRY(cluster::insert_audit(conn, at, record));
    }
  }
  TALLY_TRY(txn.commit());
  if (on_home || records.empty()) {
    return Status();
  }
  Status written;
  if (auto lease = home().lease(); !lease) {
    written = lease.error();
  } else {
    for (const std::string& record : records) {
      written = cluster::insert_audit(**lease, at, record);
      if (!written.ok()) {
        break;
      }
    }
  }
  if (!written.ok()) {
    audit_failures.fetch_add(1, std::memory_order_relaxed);
    spdlog::error("cluster: the audit record of a change of customer '{}' was lost: {}", customer,
                  written.to_string());
  }
  return Status();
}

Result<Customer> ClusterMode::update_customer(const std::string& id, const CustomerPatch& patch,
                                              const std::string& actor) {
  // Read and write in one transaction, the row locked: two nodes patching one customer at once
  // apply both patches, one after the other.
  auto locked = lock_customer(impl_->shard_of(id), id);
  if (!locked) {
    return locked.error();
  }
  pg::Connection& conn = *locked->lease;
  const TimeUs now = impl_->clock->now_us();
  const Customer before = locked->customer;
  auto patched = engine::patched_customer(std::move(locked->customer), patch, *impl_->config, now);
  if (!patched) {
    return patched.error();
  }
  if (patch.organization && !patch.organization->empty()) {
    // The organization lives on its own shard: its existence is checked there.
    auto org = get_customer(*patch.organization);
    if (!org) {
      return org.error().code() == StatusCode::kNotFound
                 ? Status::not_found("organization '" + *patch.organization + "' does not exist")
                 : org.error();
    }
    if (cluster::shard_of(*patch.organization, impl_->shards.size()) !=
        cluster::shard_of(id, impl_->shards.size())) {
      return not_built("an organization on another PostgreSQL shard than its member");
    }
  }
  TALLY_TRY(cluster::store_customer(conn, *patched));
  TALLY_TRY(impl_->commit_audited(
      locked->txn, conn, id, customer_update_records(before, *patched, patch, actor, now), now));
  {
    std::lock_guard lock(impl_->auth_mutex);
    impl_->keys_by_hash.clear();  // a suspension takes effect on this node at once
  }
  {
    std::lock_guard lock(impl_->customers_mutex);
    impl_->check_customers.erase(id);  // and so does a plan change
  }
  return std::move(*patched);
}

Result<Customer> ClusterMode::set_overrides(const std::string& customer,
                                            const std::vector<LimitOverride>& overrides) {
  auto locked = lock_customer(impl_->shard_of(customer), customer);
  if (!locked) {
    return locked.error();
  }
  Customer c = std::move(locked->customer);
  c.overrides = overrides;
  c.updated_at_us = impl_->clock->now_us();
  TALLY_TRY(cluster::store_customer(*locked->lease, c));
  TALLY_TRY(impl_->commit_audited(locked->txn, *locked->lease, customer,
                                  {overrides_record(customer, overrides.size(), c.updated_at_us)},
                                  c.updated_at_us));
  std::lock_guard lock(impl_->customers_mutex);
  impl_->check_customers.erase(customer);  // this node's checks apply them at once
  return c;
}

Result<Customer> ClusterMode::reset_period(const std::string& customer, const std::string& meter,
                                           const std::string& actor) {
  Impl& d = *impl_;
  auto slot = d.lease_redis();
  if (!slot) {
    return slot.error();
  }
  RedisSlot& redis = **slot;
  Customer c;
  Status s = [&]() -> Status {
    auto locked = lock_customer(d.shard_of(customer), customer);
    if (!locked) {
      return locked.error();
    }
    const TimeUs now = d.clock->now_us();
    c = with_reset(locked->customer, meter, now);
    TALLY_TRY(cluster::store_customer(*locked->lease, c));
    // The counters restart while the row is locked and before the reset commits: a check on any
    // node after this counts from 0 (its usage is after the reset), and a reset that does not
    // commit drops the counters it restarted, which are then seeded from PostgreSQL again.
    const core::PeriodContext pc = period_context_of(c);
    std::vector<std::string> restarted;
    Status done;
    for (const core::LimitRule& rule : limits_of(*d.config, c, meter)) {
      core::Span span;
      if (!core::period_is_rate(rule.period) && core::period_span(rule, now, pc, &span)) {
        restarted.push_back(cluster::window_key(customer, rule, span.start));
        done = redis.limits->restart(customer, rule, pc, now);
        if (!done.ok()) {
          break;
        }
      }
    }
    if (done.ok()) {
      done = d.commit_audited(locked->txn, *locked->lease, customer,
                              {reset_record(customer, meter, actor, now)}, now);
    }
    if (!done.ok()) {
      for (const std::string& key : restarted) {
        redis.client->command({"DEL", key}).status().ignore_error();  // else it stays restarted
      }
    }
    return done;
  }();
  if (s.ok()) {
    // This node's leases were counted before the reset: dropped, not given back (the counters
    // restarted). Another node's lives on until its end (docs/cluster.md, "Leased checks").
    d.leases.take_customer(customer);
    // The rate buckets after the reset's commit, on a connection of their own.
    const TimeUs now = reset_at(c, meter);
    const MeterDef& def = *d.catalog->find(meter);  // configured: the engine checked
    for (const core::LimitRule& rule : limits_of(*d.config, c, meter)) {
      if (!core::period_is_rate(rule.period) || rule.unlimited) {
        continue;
      }
      if (Status rebuilt =
              rebuild_rate(d.shard_of(customer), *redis.limits, customer, rule, def.spec, now);
          !rebuilt.ok()) {
        spdlog::error("cluster: a reset of customer '{}' left its {} bucket as it was: {}",
                      customer, rule.meter, rebuilt.to_string());
      }
    }
  }
  d.return_redis(std::move(*slot));
  TALLY_TRY(s);
  std::lock_guard lock(d.customers_mutex);
  d.check_customers.erase(customer);  // this node's answers start the windows at the reset
  return c;
}

Status ClusterMode::create_key(const ApiKeyInfo& info, const std::string& secret_sha256,
                               const std::string& actor) {
  if (!info.customer.empty()) {
    auto c = get_customer(info.customer);
    if (!c) {
      return c.error();
    }
  }
  auto lease = impl_->home().lease();
  if (!lease) {
    return lease.error();
  }
  auto txn = pg::Transaction::begin(**lease);
  if (!txn) {
    return txn.error();
  }
  TALLY_TRY(cluster::insert_key(**lease, cluster::KeyRow{info, secret_sha256}));
  return impl_->commit_audited(*txn, **lease, "", {key_create_record(info, actor)},
                               info.created_at_us);
}

Result<std::vector<ApiKeyInfo>> ClusterMode::list_keys() {
  auto lease = impl_->home().lease();
  if (!lease) {
    return lease.error();
  }
  return cluster::all_keys(**lease);
}

Status ClusterMode::revoke_key(const std::string& id, const std::string& actor) {
  auto lease = impl_->home().lease();
  if (!lease) {
    return lease.error();
  }
  auto txn = pg::Transaction::begin(**lease);
  if (!txn) {
    return txn.error();
  }
  const TimeUs now = impl_->clock->now_us();
  auto key = cluster::find_key(**lease, id);
  if (!key) {
    return key.error();
  }
  TALLY_TRY(cluster::revoke_key(**lease, id, now));  // kNotFound for a key that does not exist
  TALLY_TRY(impl_->commit_audited(*txn, **lease, "",
                                  {key_revoke_record(id, (*key)->info.customer, actor, now)}, now));
  std::lock_guard lock(impl_->auth_mutex);
  impl_->keys_by_hash.clear();
  return Status();
}

namespace {

Result<Identity> identity_of(const cluster::KeyRow& key, bool suspended) {
  if (key.info.revoked_at_us != 0) {
    return Status::unauthenticated("this API key has been revoked");
  }
  if (suspended) {
    return Status::permission_denied("customer '" + key.info.customer + "' is suspended");
  }
  return Identity{key.info.id, key.info.customer, key.info.scopes};
}

}  // namespace

Result<Identity> ClusterMode::authenticate_hash(const std::string& secret_sha256) {
  Impl& d = *impl_;
  const TimeUs now = cluster_steady_us();  // the cache ages in real time, whatever the clock
  {
    std::lock_guard lock(d.auth_mutex);
    auto it = d.keys_by_hash.find(secret_sha256);
    if (it != d.keys_by_hash.end() && now - it->second.read_at_us < kAuthCacheUs) {
      return identity_of(it->second.key, it->second.suspended);
    }
  }
  auto lease = d.home().lease();
  if (!lease) {
    return lease.error();
  }
  auto found = cluster::find_key_by_hash(**lease, secret_sha256);
  if (!found) {
    return found.error();
  }
  if (!found->has_value() || !common::constant_time_equal((*found)->secret_sha256, secret_sha256)) {
    return Status::unauthenticated("Invalid or missing API key");
  }
  Impl::CachedKey cached{std::move(**found), false, now};
  if (!cached.key.info.customer.empty()) {
    auto c = get_customer(cached.key.info.customer);
    cached.suspended = c.has_value() && c->status == CustomerStatus::kSuspended;
  }
  Result<Identity> out = identity_of(cached.key, cached.suspended);
  std::lock_guard lock(d.auth_mutex);
  d.keys_by_hash[secret_sha256] = std::move(cached);
  return out;
}

Result<Identity> ClusterMode::authenticate_key_id(const std::string& key_id) {
  auto lease = impl_->home().lease();
  if (!lease) {
    return lease.error();
  }
  auto found = cluster::find_key(**lease, key_id);
  if (!found) {
    return found.error();
  }
  if (!found->has_value()) {
    return Status::unauthenticated("Invalid or missing API key");
  }
  return authenticate_hash((*found)->secret_sha256);
}

// ---- the audit log -------------------------------------------------------------------------

Result<std::vector<std::string>> ClusterMode::audit_log(std::size_t limit) {
  auto lease = impl_->home().lease();
  if (!lease) {
    return lease.error();
  }
  return cluster::newest_audit(**lease, limit);
}

// ---- operations ---------------------------------------------------------------------------

Status ClusterMode::ready() {
  for (auto& shard : impl_->shards) {
    auto lease = shard->lease();
    if (!lease) {
      return Status::unavailable(lease.error().message());
    }
    auto r = (*lease)->exec("SELECT 1");
    if (!r) {
      return Status::unavailable(shard->name() + ": " + r.error().message());
    }
  }
  auto slot = impl_->lease_redis();
  if (!slot) {
    return Status::unavailable(slot.error().message());
  }
  auto pong = (*slot)->client->command({"PING"});
  impl_->return_redis(std::move(*slot));
  if (!pong) {
    return Status::unavailable("cluster.redis: " + pong.error().message());
  }
  return Status();
}

Result<VerifyReport> ClusterMode::verify() {
  VerifyReport out;
  for (auto& shard : impl_->shards) {
    auto lease = shard->lease();
    if (!lease) {
      return lease.error();
    }
    auto checked = cluster::verify_shard(
        **lease, impl_->meter_specs, shard->name(), &impl_->charge_meters,
        [this](const core::EventBatch& b, std::span<const std::uint32_t> indices,
               std::span<const std::optional<cluster::EventCharge>> stored) {
          return impl_->charges_to_verify(b, indices, stored);
        });
    if (!checked) {
      return checked.error();
    }
    out.events += checked->events;
    out.aggregates += checked->aggregates;
    out.transactions += checked->transactions;
    std::move(checked->differences.begin(), checked->differences.end(),
              std::back_inserter(out.differences));
    TALLY_TRY(impl_->verify_wallets(**lease, shard->name(), &out.differences));
  }
  return out;
}

void ClusterMode::flush() {
  {
    std::unique_lock lock(impl_->work_mutex);
    impl_->usage_cv.wait(lock, [&] { return impl_->usage.empty() && impl_->usage_writing == 0; });
  }
  impl_->wait_alerts_idle();
  impl_->expire_reservations();
}

EngineStats ClusterMode::stats() const {
  EngineStats s;
  s.events_accepted = impl_->events_accepted.load(std::memory_order_relaxed);
  s.events_rejected = impl_->events_rejected.load(std::memory_order_relaxed);
  s.events_duplicate = impl_->events_duplicate.load(std::memory_order_relaxed);
  s.batches = impl_->batches.load(std::memory_order_relaxed);
  {
    std::lock_guard lock(impl_->work_mutex);
    s.check_events_not_durable = impl_->usage.size() + impl_->usage_writing;
  }
  return s;
}

}  // namespace tally::engine
