// Customers and API keys: created and changed through the commit thread like everything else,
// so a record is visible only once it is durable. Their rules (defaults, checks, a key's
// scopes and secret) are functions of their own (admin_rules.h), for every mode of storage.
#include <future>

#include <spdlog/spdlog.h>

#include "common/crypto.h"
#include "core/ids.h"
#include "engine/admin_rules.h"
#include "engine/audit.h"
#include "engine/cluster_mode.h"
#include "engine/engine_impl.h"

namespace tally {

namespace engine {

namespace {

Status validate_customer_fields(const Customer& c) {
  auto tz = core::TimeZone::find(c.timezone);
  if (!tz) {
    return Status::invalid_argument("timezone '" + c.timezone + "' is not an IANA time zone name");
  }
  if (c.name.size() > 256 || c.email.size() > 256) {
    return Status::invalid_argument("name and email are at most 256 bytes");
  }
  if (c.metadata_json.size() > 16384) {
    return Status::invalid_argument("metadata is at most 16 KiB");
  }
  if (!c.organization.empty()) {
    TALLY_TRY(core::check_name("organization", c.organization));
  }
  return Status();
}

}  // namespace

Result<Customer> new_customer(const Customer& in, const config::Config& config, core::TimeUs now) {
  TALLY_TRY(core::check_name("id", in.id));
  Customer c = in;
  if (c.name.empty()) {
    c.name = c.id;
  }
  if (c.timezone.empty()) {
    c.timezone = "UTC";
  }
  if (c.metadata_json.empty()) {
    c.metadata_json = "{}";
  }
  TALLY_TRY(validate_customer_fields(c));
  if (!c.plan.empty() && config.find_plan(c.plan) == nullptr) {
    return Status::invalid_argument("plan '" + c.plan + "' is not a configured plan");
  }
  c.created_at_us = now;
  c.updated_at_us = now;
  return c;
}

Result<Customer> patched_customer(Customer c, const CustomerPatch& patch,
                                  const config::Config& config, core::TimeUs now) {
  if (patch.name)
    c.name = *patch.name;
  if (patch.email)
    c.email = *patch.email;
  if (patch.timezone)
    c.timezone = *patch.timezone;
  if (patch.status)
    c.status = *patch.status;
  if (patch.metadata_json)
    c.metadata_json = *patch.metadata_json;
  if (patch.plan)
    c.plan = *patch.plan;
  if (patch.trial_started_at_us)
    c.trial_started_at_us = *patch.trial_started_at_us;
  if (patch.billing_anchor_us)
    c.billing_anchor_us = *patch.billing_anchor_us;
  if (patch.organization)
    c.organization = *patch.organization;
  TALLY_TRY(validate_customer_fields(c));
  // Only a plan the patch names is checked: a customer of a replaced plan
  // ([enforcement] replaced_plans) can still be renamed or suspended.
  if (patch.plan && !c.plan.empty() && config.find_plan(c.plan) == nullptr) {
    return Status::invalid_argument("plan '" + c.plan + "' is not a configured plan");
  }
  c.updated_at_us = now;
  return c;
}

Result<std::pair<NewApiKey, KeyRecord>> new_key(const NewApiKeyRequest& request, core::TimeUs now) {
  if (request.name.size() > 256) {
    return Status::invalid_argument("name is at most 256 bytes");
  }
  Scope scopes = request.scopes;
  if ((scopes & ~(kDataScopes | Scope::kAdmin)) != Scope::kNone) {
    return Status::invalid_argument("unknown scope; scopes are ingest, check, read");
  }
  if (request.customer.empty()) {
    // No scopes (or admin): a full admin key. Given scopes: a key for every customer that
    // holds exactly those scopes and may not administer.
    if (scopes == Scope::kNone || has(scopes, Scope::kAdmin)) {
      scopes = Scope::kAdmin | kDataScopes;
    }
  } else if (scopes == Scope::kNone) {
    scopes = kDataScopes;
  } else if (has(scopes, Scope::kAdmin)) {
    return Status::invalid_argument("a customer key cannot have the admin scope");
  }
  NewApiKey out;
  out.secret = "tk_" + common::to_hex(common::random_bytes(32));
  KeyRecord rec;
  rec.info.id = "key_" + common::to_hex(common::random_bytes(8));
  rec.info.prefix = out.secret.substr(0, 11);
  rec.info.customer = request.customer;
  rec.info.name = request.name;
  rec.info.scopes = scopes;
  rec.info.created_at_us = now;
  rec.hash = common::sha256(out.secret);
  out.info = rec.info;
  return std::make_pair(std::move(out), std::move(rec));
}

Status run_admin(Engine::Impl& d, std::function<Status(store::WriteBatch&)> prepare,
                 std::function<void()> install) {
  if (d.read_only) {
    return Status::unavailable("the engine is open read-only");
  }
  TALLY_TRY(d.writes_allowed());  // the disk reserve; the commit thread checks again
  auto promise = std::make_shared<std::promise<Status>>();
  auto future = promise->get_future();
  auto job = std::make_unique<engine::AdminJob>();
  job->prepare = std::move(prepare);
  job->install = std::move(install);
  job->done = [promise](Status s) {
    promise->set_value(std::move(s));
  };
  d.commit_queue.push_admin(std::move(job));
  return future.get();
}

}  // namespace engine

Result<Customer> Engine::create_customer(const Customer& in) {
  Impl& d = *impl_;
  auto made = engine::new_customer(in, d.config, d.clock->now_us());
  if (!made) {
    return made.error();
  }
  if (d.cluster != nullptr) {
    return d.cluster->create_customer(*made);
  }
  const Customer& c = *made;
  auto num = std::make_shared<std::uint32_t>(0);
  Status s = engine::run_admin(
      d,
      [&d, c, num](store::WriteBatch& wb) -> Status {
        if (d.customer_nums.count(c.id) != 0) {
          return Status::already_exists("customer '" + c.id + "' already exists");
        }
        if (d.next_customer > engine::DedupIndex::kCustomerMax) {
          return Status::resource_exhausted("the customer table is full");
        }
        *num = d.next_customer++;
        wb.put(store::Space::kCustomers, c.id, engine::encode_customer(*num, c));
        std::string n;
        engine::put_be32(n, d.next_customer);
        wb.put(store::Space::kMeta, std::string(engine::kMetaNextCustomer), n);
        return Status();
      },
      [&d, c, num]() {
        engine::CustomerState cs;
        cs.num = *num;
        cs.record = c;
        auto tz = core::TimeZone::find(c.timezone);
        cs.tz = tz ? *tz : core::TimeZone();
        d.customer_nums.emplace(c.id, cs.num);
        d.customers.emplace(cs.num, std::move(cs));
      });
  if (!s.ok()) {
    return s;
  }
  return c;
}

Result<Customer> Engine::get_customer(const std::string& id) const {
  if (impl_->cluster != nullptr) {
    return impl_->cluster->get_customer(id);
  }
  std::shared_lock lock(impl_->state_mutex);
  const auto* cs = impl_->find_customer(id);
  if (cs == nullptr) {
    return core::customer_not_found(id);
  }
  return cs->record;
}

std::vector<Customer> Engine::list_customers() const {
  if (impl_->cluster != nullptr) {
    auto all = impl_->cluster->list_customers();
    if (!all) {
      spdlog::error("cluster: listing customers failed: {}", all.error().to_string());
      return {};
    }
    return std::move(*all);
  }
  std::shared_lock lock(impl_->state_mutex);
  std::vector<Customer> out;
  out.reserve(impl_->customers.size());
  for (const auto& [num, cs] : impl_->customers) {
    out.push_back(cs.record);
  }
  std::sort(out.begin(), out.end(),
            [](const Customer& a, const Customer& b) { return a.id < b.id; });
  return out;
}

Result<Customer> Engine::update_customer(const std::string& id, const CustomerPatch& patch,
                                         const std::string& actor) {
  Impl& d = *impl_;
  if (d.cluster != nullptr) {
    return d.cluster->update_customer(id, patch, actor);
  }
  auto updated = std::make_shared<Customer>();
  auto num = std::make_shared<std::uint32_t>(0);
  const core::TimeUs now = d.clock->now_us();
  Status s = engine::run_admin(
      d,
      [&d, id, patch, actor, updated, num, now](store::WriteBatch& wb) -> Status {
        auto it = d.customer_nums.find(id);
        if (it == d.customer_nums.end()) {
          return core::customer_not_found(id);
        }
        *num = it->second;
        auto patched = engine::patched_customer(d.customers.at(*num).record, patch, d.config, now);
        if (!patched) {
          return patched.error();
        }
        const Customer& c = *patched;
        for (std::string& record :
             engine::customer_update_records(d.customers.at(*num).record, c, patch, actor, now)) {
          engine::put_audit(d, wb, std::move(record), now);
        }
        *updated = c;
        wb.put(store::Space::kCustomers, c.id, engine::encode_customer(*num, c));
        return Status();
      },
      [&d, updated, num]() {
        engine::CustomerState& cs = d.customers.at(*num);
        cs.record = *updated;
        auto tz = core::TimeZone::find(updated->timezone);
        cs.tz = tz ? *tz : core::TimeZone();
        // Plan, zone or anchors may have changed: windows are recomputed on the next check.
        std::lock_guard limits_lock(d.limits_mutex);
        auto lit = d.limits.find(*num);
        if (lit != d.limits.end()) {
          lit->second.counters.clear();
        }
      });
  if (!s.ok()) {
    return s;
  }
  return *updated;
}

// ---- keys -----------------------------------------------------------------------------------

Result<NewApiKey> Engine::create_key(const NewApiKeyRequest& request, const std::string& actor) {
  Impl& d = *impl_;
  auto made = engine::new_key(request, d.clock->now_us());
  if (!made) {
    return made.error();
  }
  if (d.cluster != nullptr) {
    TALLY_TRY(d.cluster->create_key(made->second.info, made->second.hash, actor));
    return made->first;
  }
  const NewApiKey& out = made->first;
  const engine::KeyRecord& rec = made->second;
  Status s = engine::run_admin(
      d,
      [&d, rec, actor](store::WriteBatch& wb) -> Status {
        if (!rec.info.customer.empty() && d.customer_nums.count(rec.info.customer) == 0) {
          return core::customer_not_found(rec.info.customer);
        }
        wb.put(store::Space::kKeys, rec.info.id, engine::encode_key_record(rec));
        engine::put_audit(d, wb, engine::key_create_record(rec.info, actor),
                          rec.info.created_at_us);
        return Status();
      },
      [&d, rec]() {
        auto ks = std::make_unique<engine::KeyState>();
        ks->record = rec;
        d.keys_by_id[rec.info.id] = ks.get();
        d.keys_by_hash[rec.hash] = std::move(ks);
      });
  if (!s.ok()) {
    return s;
  }
  return out;
}

std::vector<ApiKeyInfo> Engine::list_keys() const {
  if (impl_->cluster != nullptr) {
    auto all = impl_->cluster->list_keys();
    if (!all) {
      spdlog::error("cluster: listing keys failed: {}", all.error().to_string());
      return {};
    }
    return std::move(*all);
  }
  std::shared_lock lock(impl_->state_mutex);
  std::vector<ApiKeyInfo> out;
  for (const auto& [id, ks] : impl_->keys_by_id) {
    ApiKeyInfo info = ks->record.info;
    info.total_requests = ks->total_requests.load();
    info.last_used_at_us = ks->last_used_at_us.load();
    out.push_back(std::move(info));
  }
  std::sort(out.begin(), out.end(), [](const ApiKeyInfo& a, const ApiKeyInfo& b) {
    return a.created_at_us != b.created_at_us ? a.created_at_us < b.created_at_us : a.id < b.id;
  });
  return out;
}

Status Engine::revoke_key(const std::string& key_id, const std::string& actor) {
  Impl& d = *impl_;
  if (d.cluster != nullptr) {
    return d.cluster->revoke_key(key_id, actor);
  }
  const core::TimeUs now = d.clock->now_us();
  return engine::run_admin(
      d,
      [&d, key_id, actor, now](store::WriteBatch& wb) -> Status {
        auto it = d.keys_by_id.find(key_id);
        if (it == d.keys_by_id.end()) {
          return Status::not_found("key '" + key_id + "' does not exist");
        }
        engine::KeyRecord rec = it->second->record;
        if (rec.info.revoked_at_us == 0) {
          rec.info.revoked_at_us = now;
        }
        rec.info.total_requests = it->second->total_requests.load();
        rec.info.last_used_at_us = it->second->last_used_at_us.load();
        wb.put(store::Space::kKeys, rec.info.id, engine::encode_key_record(rec));
        engine::put_audit(
            d, wb, engine::key_revoke_record(rec.info.id, rec.info.customer, actor, now), now);
        return Status();
      },
      [&d, key_id, now]() {
        auto& rec = d.keys_by_id.at(key_id)->record;
        if (rec.info.revoked_at_us == 0) {
          rec.info.revoked_at_us = now;
        }
      });
}

namespace {

// What a key may do now: refused when revoked or its customer is suspended; counts the use.
// REQUIRES: d.state_mutex held (shared).
Result<Identity> identity_of(Engine::Impl& d, engine::KeyState& ks) {
  if (ks.record.info.revoked_at_us != 0) {
    return Status::unauthenticated("this API key has been revoked");
  }
  ks.total_requests.fetch_add(1, std::memory_order_relaxed);
  ks.last_used_at_us.store(d.clock->now_us(), std::memory_order_relaxed);
  ks.dirty.store(true, std::memory_order_relaxed);
  if (!ks.record.info.customer.empty()) {
    const auto* cs = d.find_customer(ks.record.info.customer);
    if (cs != nullptr && cs->record.status == CustomerStatus::kSuspended) {
      return Status::permission_denied("customer '" + ks.record.info.customer + "' is suspended");
    }
  }
  return Identity{ks.record.info.id, ks.record.info.customer, ks.record.info.scopes};
}

constexpr std::string_view kEnvAdminKeyId = "admin-env";

}  // namespace

Result<Identity> Engine::authenticate(std::string_view secret) {
  Impl& d = *impl_;
  if (secret.empty() || secret.size() > 512) {
    return Status::unauthenticated("Invalid or missing API key");
  }
  const std::string hash = common::sha256(secret);
  if (!d.admin_key_hash.empty() && common::constant_time_equal(hash, d.admin_key_hash)) {
    return Identity{std::string(kEnvAdminKeyId), "", Scope::kAdmin | kDataScopes};
  }
  if (d.cluster != nullptr) {
    return d.cluster->authenticate_hash(hash);
  }
  std::shared_lock lock(d.state_mutex);
  auto it = d.keys_by_hash.find(hash);
  if (it == d.keys_by_hash.end() || !common::constant_time_equal(it->second->record.hash, hash)) {
    return Status::unauthenticated("Invalid or missing API key");
  }
  return identity_of(d, *it->second);
}

Result<Identity> Engine::authenticate_key_id(const std::string& key_id) {
  Impl& d = *impl_;
  if (key_id == kEnvAdminKeyId) {
    if (d.admin_key_hash.empty()) {
      return Status::unauthenticated("Invalid or missing API key");
    }
    return Identity{std::string(kEnvAdminKeyId), "", Scope::kAdmin | kDataScopes};
  }
  if (d.cluster != nullptr) {
    return d.cluster->authenticate_key_id(key_id);
  }
  std::shared_lock lock(d.state_mutex);
  auto it = d.keys_by_id.find(key_id);
  if (it == d.keys_by_id.end()) {
    return Status::unauthenticated("Invalid or missing API key");
  }
  return identity_of(d, *it->second);
}

}  // namespace tally
