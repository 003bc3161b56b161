// Recovery: the engine's in-memory state read back from the store when it opens. The store
// holds everything durable (customers, keys, minute aggregates and distinct values, the dedup
// records of the window, prices, wallets, reservations, alerts); memory holds the same, indexed
// for the hot paths, plus the hour and day sums the series derive from the minutes. A meter
// whose definition changed since its aggregates were written (its stored fingerprint differs)
// is rebuilt from the stored events first, so what is loaded always matches the events. The
// aggregates come from the checkpoint when it matches the meters and the store (checkpoint.cc:
// the customers with events after it are read again from the store), else from every stored
// minute aggregate and distinct value.
#include <algorithm>
#include <filesystem>
#include <map>
#include <system_error>
#include <thread>

#include <spdlog/spdlog.h>

#include "engine/dedup_file.h"
#include "engine/engine_impl.h"

namespace tally {

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

namespace {

// The next sequence and customer numbers.
Status load_counters(Engine::Impl& d) {
  auto seq = d.store->get(store::Space::kMeta, engine::kMetaNextSeq);
  if (!seq) {
    return seq.error();
  }
  if (seq->has_value() && (*seq)->size() == 8) {
    d.next_seq = engine::read_be64(**seq);
  }
  auto cust = d.store->get(store::Space::kMeta, engine::kMetaNextCustomer);
  if (!cust) {
    return cust.error();
  }
  if (cust->has_value() && (*cust)->size() == 4) {
    d.next_customer = engine::read_be32(**cust);
  }
  return Status();
}

Status load_customers(Engine::Impl& d) {
  Status bad;
  TALLY_TRY(d.store->scan_once(
      store::Space::kCustomers, "", "", [&](std::string_view, std::string_view v) {
        engine::CustomerState cs;
        if (!engine::decode_customer(v, &cs.num, &cs.record)) {
          bad = Status::corruption("a customer record cannot be decoded");
          return false;
        }
        auto tz = core::TimeZone::find(cs.record.timezone.empty() ? "UTC" : cs.record.timezone);
        cs.tz = tz ? *tz : core::TimeZone();
        d.customer_nums.emplace(cs.record.id, cs.num);
        d.customers.emplace(cs.num, std::move(cs));
        return true;
      }));
  return bad;
}

Status load_keys(Engine::Impl& d) {
  Status bad;
  TALLY_TRY(
      d.store->scan_once(store::Space::kKeys, "", "", [&](std::string_view, std::string_view v) {
        auto ks = std::make_unique<engine::KeyState>();
        if (!engine::decode_key_record(v, &ks->record)) {
          bad = Status::corruption("a key record cannot be decoded");
          return false;
        }
        ks->total_requests.store(ks->record.info.total_requests);
        ks->last_used_at_us.store(ks->record.info.last_used_at_us);
        d.keys_by_id[ks->record.info.id] = ks.get();
        d.keys_by_hash[ks->record.hash] = std::move(ks);
        return true;
      }));
  return bad;
}

// A meter no longer configured gets no aggregates from now on, so its fingerprint record goes:
// re-adding the meter later, even unchanged, must rebuild it from the events stored meanwhile.
// (A read-only open writes nothing; a writer removes the records on its open.)
Status drop_removed_meters(Engine::Impl& d) {
  if (d.read_only) {
    return Status();
  }
  const std::string begin = engine::meter_fingerprint_key("");
  std::string end = begin;
  ++end.back();
  store::WriteBatch stale;
  TALLY_TRY(d.store->scan_once(
      store::Space::kMeta, begin, end, [&](std::string_view k, std::string_view) {
        const std::string_view key = k.substr(begin.size());
        if (std::none_of(d.catalog->meters.begin(), d.catalog->meters.end(),
                         [&](const engine::MeterDef& m) { return m.spec.key == key; })) {
          stale.del(store::Space::kMeta, std::string(k));
        }
        return true;
      }));
  return stale.empty() ? Status() : d.write_store(stale, true);
}

// Meters whose definition changed since their aggregates were written are rebuilt (a read-only
// open refuses to start instead).
Status rebuild_changed_meters(Engine::Impl& d) {
  for (std::uint32_t i = 0; i < d.catalog->meters.size(); ++i) {
    const auto& spec = d.catalog->meters[i].spec;
    if (d.catalog->meters[i].hidden) {
      continue;  // costs are what was burned: never recomputed from the events
    }
    auto fp = d.store->get(store::Space::kMeta, engine::meter_fingerprint_key(spec.key));
    if (!fp) {
      return fp.error();
    }
    if (!fp->has_value() || **fp != spec.fingerprint()) {
      if (d.read_only) {
        return Status::unavailable("meter '" + spec.key +
                                   "' changed since its aggregates were written; start the "
                                   "server once to rebuild them");
      }
      TALLY_TRY(d.rebuild_meter(i));
    }
  }
  return Status();
}

}  // namespace

Status Engine::Impl::load() {
  // Minutes before the horizon are never held: each series drops them as it is read.
  old_minutes = engine::make_store_minutes(*this);
  minutes_from = minute_horizon(clock->now_us());
  TALLY_TRY(load_counters(*this));
  TALLY_TRY(load_customers(*this));
  TALLY_TRY(load_keys(*this));
  TALLY_TRY(drop_removed_meters(*this));
  TALLY_TRY(rebuild_changed_meters(*this));

  // Aggregates and distinct values: from the checkpoint when it matches the meters and the
  // store, else from every stored record. The dedup index meanwhile, on a thread of its own
  // (the two share nothing; each is about half of a large store's restart); a read-only engine
  // neither ingests nor checks, so it has no use for the index and does not load it.
  Status dedup_loaded;
  std::thread dedup_loader;
  if (!read_only) {
    dedup_loader = std::thread([&] { dedup_loaded = load_dedup(); });
  }
  Result<bool> from_checkpoint = load_checkpoint();
  restored_from_checkpoint = from_checkpoint.has_value() && *from_checkpoint;
  const Status aggregates_loaded = !from_checkpoint           ? from_checkpoint.error()
                                   : restored_from_checkpoint ? Status()
                                                              : load_aggregates();
  if (dedup_loader.joinable()) {
    dedup_loader.join();
  }
  TALLY_TRY(aggregates_loaded);
  TALLY_TRY(dedup_loaded);
  if (restored_from_checkpoint && !read_only) {  // read-only commands print to stdout: not there
    spdlog::info(
        "aggregates read from the checkpoint; {} customer(s) with later events read again "
        "from the store",
        checkpoint_customers_reloaded);
  }
  // Everything stored is in memory: a checkpoint from now on covers it.
  installed_seq = next_seq;
  installed_customer = next_customer;
  TALLY_TRY(load_wallets());
  TALLY_TRY(load_reservations());
  TALLY_TRY(load_alerts());

  // Customers from the config that do not exist yet are created in the first commit.
  return Status();
}

Status Engine::Impl::load_dedup() {
  const std::int64_t window_us = config.storage.dedup_window_seconds * core::kUsPerSecond;
  const core::TimeUs now = clock->now_us();
  // With the window forever, the table a clean stop wrote (engine/dedup_file.h) holds every
  // entry before its S: only the records from dedup_key(S) on are read.
  std::uint64_t from_seq = 0;
  if (window_us == 0 && !checkpoint_path.empty()) {
    const std::string path =
        engine::dedup_file_path(std::filesystem::path(checkpoint_path).parent_path().string());
    std::string why;
    if (auto seq = engine::read_dedup_file(path, next_seq, next_customer, &dedup, &why)) {
      from_seq = *seq;
    } else if (!why.empty()) {
      spdlog::warn("the dedup table {} is not used ({}): the dedup records are read instead", path,
                   why);
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
    }
  }
  std::vector<engine::DedupEntry> entries;
  std::vector<engine::DedupIndex::Slot> slots;
  Status bad;
  TALLY_TRY(store->scan_once(
      store::Space::kDedup, from_seq == 0 ? std::string() : engine::dedup_key(from_seq), "",
      [&](std::string_view, std::string_view v) {
        core::TimeUs received = 0;
        if (!engine::decode_dedup_record(v, &received, &entries)) {
          bad = Status::corruption("a dedup record cannot be decoded");
          return false;
        }
        if (window_us > 0 && received < now - window_us) {
          return true;
        }
        for (const auto& e : entries) {
          if (e.seq >= from_seq) {
            slots.push_back(engine::DedupIndex::slot_of(e.hash, e.seq, e.customer_num));
          }
        }
        return true;
      }));
  TALLY_TRY(bad);
  dedup.insert_all(slots);
  return Status();
}

Status Engine::Impl::load_aggregates() {
  Status bad;
  std::unordered_map<std::string, std::uint32_t> meter_index;
  for (std::uint32_t i = 0; i < catalog->meters.size(); ++i) {
    meter_index[catalog->meters[i].spec.key] = i;
  }
  TALLY_TRY(store->scan_once(
      store::Space::kAggregates, "", "", [&](std::string_view k, std::string_view v) {
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
  TALLY_TRY(
      store->scan_once(store::Space::kUniques, "", "", [&](std::string_view k, std::string_view) {
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

  return Status();
}

Status Engine::Impl::rebuild_meter(std::uint32_t meter_index) {
  const core::MeterSpec& spec = catalog->meters[meter_index].spec;
  // Its series in the file are of the old definition (the fingerprint would refuse it anyway).
  remove_checkpoint();
  // Delete the meter's old aggregates and distinct values.
  const std::string prefix = engine::aggregate_meter_prefix(spec.key);
  std::string end = prefix;
  end.back() = '\x01';
  for (auto space : {store::Space::kAggregates, store::Space::kUniques}) {
    store::WriteBatch wb;
    TALLY_TRY(store->scan_once(space, prefix, end, [&](std::string_view k, std::string_view) {
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

}  // namespace tally
