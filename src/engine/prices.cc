// Price versions and re-rating.
//
// A price is a meter and a match; its key ("tokens_in#0") is given once and kept, so stored
// tiered usage and versions stay its own whatever the configuration's order. Each `[[prices]]`
// entry is a version of its price; at open, an entry that differs from what is stored becomes a
// new version (effective from its `effective_from`, or from now), and a price the configuration
// no longer has gets an ending version: its history stays, and nothing is charged by it from
// then on. Versions are only ever added, each with the time the server first ran with it, so
// `tally verify` can price every event as its commit did (core::version_at with the event's
// commit time), and re-rating can apply the versions of today.
//
// Re-rating (Engine::reprice) prices the customer's events again with every version, compares
// each event of the range with what it is charged (its stored credits, or its last re-rating),
// and writes one `adjustment` per billing period for the difference, with the new charge of
// each changed event ("rerate:" records). The ledger stays a pure sum; verify checks that the
// re-rating adjustments of a customer add up to its re-rated events' differences.
#include <algorithm>
#include <map>
#include <set>

#include "core/ids.h"
#include "core/time.h"
#include "engine/engine_impl.h"

namespace tally {

namespace {

// The number of a price key ("meter#7" -> 7), or -1.
long key_number(std::string_view key) {
  const auto hash = key.rfind('#');
  if (hash == std::string_view::npos || hash + 1 >= key.size()) {
    return -1;
  }
  long n = 0;
  for (char c : key.substr(hash + 1)) {
    if (c < '0' || c > '9' || n > 1'000'000) {
      return -1;
    }
    n = n * 10 + (c - '0');
  }
  return n;
}

// What the store holds of prices: each price line (its match sorted) and each price's versions.
struct StoredPrices {
  std::map<std::string, engine::PriceLineRecord> lines;
  std::map<std::string, std::vector<core::PriceVersion>> versions;
};

// The stored price lines ("price_line:" keys) into stored->lines.
Status load_price_lines(const store::Store& store, StoredPrices* stored) {
  Status bad;
  const std::string line_begin(engine::kPriceLinePrefix);
  TALLY_TRY(store.scan(store::Space::kMeta, line_begin, engine::prefix_end(line_begin),
                       [&](std::string_view key, std::string_view value) {
                         engine::PriceLineRecord r;
                         if (!engine::decode_price_line(value, &r)) {
                           bad = Status::corruption("a price record cannot be decoded");
                           return false;
                         }
                         std::sort(r.match.begin(), r.match.end());
                         stored->lines[std::string(key.substr(line_begin.size()))] = std::move(r);
                         return true;
                       }));
  return bad;
}

// The stored price versions ("price_version:" keys) into stored->versions, by price key.
Status load_price_versions(const store::Store& store, StoredPrices* stored) {
  Status bad;
  const std::string version_begin(engine::kPriceVersionPrefix);
  TALLY_TRY(store.scan(store::Space::kMeta, version_begin, engine::prefix_end(version_begin),
                       [&](std::string_view key, std::string_view value) {
                         std::string_view price;
                         core::PriceVersion v;
                         if (!engine::decode_price_version_key(key, &price, &v.effective_from,
                                                               &v.created_us) ||
                             !engine::decode_price_version(value, &v.spec, &v.ended)) {
                           bad = Status::corruption("a price version cannot be decoded");
                           return false;
                         }
                         stored->versions[std::string(price)].push_back(std::move(v));
                         return true;
                       }));
  return bad;
}

// The latest version of `versions` (by effective_from, then creation), or null.
const core::PriceVersion* last_version(const std::vector<core::PriceVersion>& versions) {
  const core::PriceVersion* last = nullptr;
  for (const auto& v : versions) {
    if (last == nullptr || v.effective_from > last->effective_from ||
        (v.effective_from == last->effective_from && v.created_us >= last->created_us)) {
      last = &v;
    }
  }
  return last;
}

// Gives the prices of a catalog being built their keys and versions: the stored ones, and those
// this open adds (created now), whose records and those of new price lines go in batch().
class PriceVersioning {
 public:
  PriceVersioning(const config::Config& config, StoredPrices stored, core::TimeUs now)
      : config_(config),
        stored_(std::move(stored)),
        now_(now),
        // A directory without versions (new, or written before prices had them): the first
        // versions apply since forever, as the configuration priced every event so far.
        history_(!stored_.versions.empty()) {
    for (const auto& [key, r] : stored_.lines) {
      next_number_[r.meter] = std::max(next_number_[r.meter], key_number(key) + 1);
    }
  }

  // A configured price: its stored key and versions, and a version for each of its entries
  // that no stored one matches.
  void configured(engine::PriceState& ps) {
    claim_key(ps);
    take_stored_versions(ps);
    add_entry_versions(ps);
  }

  // Prices the configuration no longer has: kept for their history, ended from now on.
  void removed(engine::Catalog& catalog) {
    for (auto& [key, r] : stored_.lines) {
      if (claimed_.count(key) == 0) {
        add_removed(catalog, key, r);
      }
    }
  }

  const store::WriteBatch& batch() const { return wb_; }

 private:
  // A stored line of the same meter and match not yet claimed, else the meter's next number
  // (written as a new line).
  void claim_key(engine::PriceState& ps) {
    for (const auto& [key, r] : stored_.lines) {
      if (claimed_.count(key) == 0 && r.meter == ps.spec.meter && r.match == ps.spec.match) {
        ps.key = key;
        break;
      }
    }
    if (ps.key.empty()) {
      long& n = next_number_[ps.spec.meter];
      ps.key = ps.spec.meter + "#" + std::to_string(n++);
      engine::PriceLineRecord r{ps.spec.meter, ps.event_type, ps.spec.match};
      wb_.put(store::Space::kMeta, engine::price_line_key(ps.key), engine::encode_price_line(r));
    }
    claimed_.insert(ps.key);
  }

  // The stored versions of ps.key, with the price's meter and match (not stored with each).
  void take_stored_versions(engine::PriceState& ps) {
    ps.versions = stored_.versions[ps.key];
    for (auto& v : ps.versions) {
      v.spec.meter = ps.spec.meter;
      v.spec.match = ps.spec.match;
    }
  }

  // An entry with effective_from is added unless a version of that instant has its charges; an
  // entry without it is compared with the version in effect now among those of instants no
  // entry names, and added from now (or since forever, the first in a directory without
  // versions) when it differs.
  void add_entry_versions(engine::PriceState& ps) {
    const bool first = ps.versions.empty();
    std::set<core::TimeUs> named;
    for (std::size_t e : ps.entries) {
      if (config_.prices[e].has_effective_from) {
        named.insert(config_.prices[e].effective_from_us);
      }
    }
    for (std::size_t e : ps.entries) {
      const config::PriceConfig& pc = config_.prices[e];
      if (pc.has_effective_from) {
        const bool have = std::any_of(ps.versions.begin(), ps.versions.end(), [&](const auto& v) {
          return v.effective_from == pc.effective_from_us && !v.ended &&
                 core::same_charges(v.spec, pc.spec);
        });
        if (!have) {
          add_version(ps, pc.effective_from_us, pc.spec, false);
        }
        continue;
      }
      std::vector<core::PriceVersion> others;
      for (const auto& v : ps.versions) {
        if (named.count(v.effective_from) == 0) {
          others.push_back(v);
        }
      }
      const core::PriceVersion* current = core::version_at(others, now_);
      if (current == nullptr || !core::same_charges(current->spec, pc.spec)) {
        add_version(ps, first && !history_ ? core::kSinceForever : now_, pc.spec, false);
      }
    }
  }

  // The stored price line `key`, which no configured price claimed: added to the catalog (under
  // its meter when that is still configured) with an ending version unless its last one ended.
  void add_removed(engine::Catalog& catalog, const std::string& key,
                   const engine::PriceLineRecord& r) {
    engine::PriceState ps;
    ps.key = key;
    ps.spec.meter = r.meter;
    ps.spec.match = r.match;
    ps.event_type = r.event_type;
    ps.configured = false;
    const engine::MeterDef* m = catalog.find(r.meter);
    ps.meter = m == nullptr ? engine::kNoMeter : catalog.index_of(m);
    take_stored_versions(ps);
    const core::PriceVersion* last = last_version(ps.versions);
    if (last != nullptr && !last->ended) {
      add_version(ps, now_, last->spec, true);
    }
    if (ps.meter != engine::kNoMeter) {
      catalog.prices_by_meter[ps.meter].push_back(
          static_cast<std::uint32_t>(catalog.prices.size()));
    }
    catalog.prices.push_back(std::move(ps));
  }

  // A version of ps from `from`, created now, with `charges`.
  void add_version(engine::PriceState& ps, core::TimeUs from, const core::PriceSpec& charges,
                   bool ended) {
    core::PriceVersion v;
    v.effective_from = from;
    v.created_us = now_;
    v.ended = ended;
    v.spec = charges;
    v.spec.meter = ps.spec.meter;
    v.spec.match = ps.spec.match;
    wb_.put(store::Space::kMeta, engine::price_version_key(ps.key, from, now_),
            engine::encode_price_version(charges, ended));
    ps.versions.push_back(std::move(v));
  }

  const config::Config& config_;
  StoredPrices stored_;
  const core::TimeUs now_;
  const bool history_;
  store::WriteBatch wb_;
  std::map<std::string, long> next_number_;  // meter -> first unused key number
  std::set<std::string> claimed_;
};

// Each price's versions in stored order: by effective_from, then creation.
void sort_versions(engine::Catalog& catalog) {
  for (auto& ps : catalog.prices) {
    std::sort(ps.versions.begin(), ps.versions.end(), [](const auto& a, const auto& b) {
      return a.effective_from != b.effective_from ? a.effective_from < b.effective_from
                                                  : a.created_us < b.created_us;
    });
  }
}

}  // namespace

Status Engine::Impl::load_prices(engine::Catalog& catalog_building) {
  StoredPrices stored;
  TALLY_TRY(load_price_lines(*store, &stored));
  TALLY_TRY(load_price_versions(*store, &stored));
  PriceVersioning versioning(config, std::move(stored), clock->now_us());
  for (engine::PriceState& ps : catalog_building.prices) {
    versioning.configured(ps);
  }
  versioning.removed(catalog_building);
  sort_versions(catalog_building);
  if (!read_only && !versioning.batch().empty()) {
    TALLY_TRY(write_store(versioning.batch(), true));
  }
  return Status();
}

// ---- the API --------------------------------------------------------------------------------

std::vector<PriceInfo> Engine::prices() const {
  const Impl& d = *impl_;
  const core::TimeUs now = clock().now_us();
  std::vector<PriceInfo> out;
  for (const auto& ps : d.catalog->prices) {
    PriceInfo p;
    p.id = ps.key;
    p.meter = ps.spec.meter;
    p.match = ps.spec.match;
    p.configured = ps.configured;
    const core::PriceVersion* current = core::version_at(ps.versions, now);
    for (const auto& v : ps.versions) {
      PriceVersionInfo info;
      info.effective_from_us = v.effective_from;
      info.created_at_us = v.created_us;
      info.ended = v.ended;
      info.in_effect = &v == current;
      info.model = v.spec.model;
      info.unit_price = core::format_decimal(v.spec.unit_price);
      for (const auto& t : v.spec.tiers) {
        info.tiers.push_back(PriceTierInfo{t.unbounded ? "" : core::format_decimal(t.up_to),
                                           core::format_decimal(t.unit_price),
                                           core::format_decimal(t.flat_fee)});
      }
      info.package_size = core::format_decimal(v.spec.package_size);
      info.package_price = core::format_decimal(v.spec.package_price);
      info.flat_fee = core::format_decimal(v.spec.flat_fee);
      info.currency = v.spec.currency;
      info.credits_per_currency_unit = core::format_decimal(v.spec.credits_per_currency_unit);
      p.versions.push_back(std::move(info));
    }
    out.push_back(std::move(p));
  }
  return out;
}

namespace {

// What re-rating found, before it is written.
struct RerateWork {
  std::map<core::TimeUs, RepricePeriod> periods;                 // by period start
  std::map<core::TimeUs, core::Decimal> charged, rated;          // by period start
  std::vector<std::pair<std::uint64_t, core::Decimal>> changed;  // seq -> new credits
  std::uint64_t events = 0;
};

// The customer re-rated: its number, and the zone and anchor of its billing periods.
struct RerateCustomer {
  std::uint32_t num = 0;
  core::TimeZone tz;
  core::TimeUs anchor = 0;
};

Status find_rerate_customer(const Engine::Impl& d, const std::string& id, RerateCustomer* out) {
  std::shared_lock lock(d.state_mutex);
  const engine::CustomerState* cs = d.find_customer(id);
  if (cs == nullptr) {
    return core::customer_not_found(id);
  }
  out->num = cs->num;
  out->tz = cs->tz;
  out->anchor =
      cs->record.billing_anchor_us != 0 ? cs->record.billing_anchor_us : cs->record.created_at_us;
  return Status();
}

// The customer's re-rating records: seq -> the credits its last re-rating charged.
Status load_rerated(const store::Store& store, std::uint32_t cnum,
                    std::map<std::uint64_t, core::Decimal>* rerated) {
  std::string begin(engine::kRerateKeyPrefix);
  engine::put_be32(begin, cnum);
  Status bad;
  TALLY_TRY(store.scan(store::Space::kMeta, begin, engine::prefix_end(begin),
                       [&](std::string_view key, std::string_view value) {
                         core::Decimal credits;
                         core::TimeUs at = 0;
                         if (key.size() != begin.size() + 8 ||
                             !engine::decode_rerate(value, &credits, &at)) {
                           bad = Status::corruption("a re-rating record cannot be decoded");
                           return false;
                         }
                         (*rerated)[engine::read_be64(key.substr(begin.size()))] = credits;
                         return true;
                       }));
  return bad;
}

// An event of the range whose credits change from `charged` to `credits`, counted in its
// billing period.
void add_change(RerateWork& work, const RerateCustomer& c, const engine::BlockEvent& be,
                core::Decimal charged, core::Decimal credits) {
  core::TimeUs start = 0;
  core::TimeUs end = 0;
  core::billing_period_span(be.time_us, c.anchor, c.tz, &start, &end);
  RepricePeriod& p = work.periods[start];
  p.start_us = start;
  p.end_us = end;
  ++p.events;
  work.charged[start] += charged;
  work.rated[start] += credits;
  work.changed.emplace_back(be.seq, credits);
}

// Every event of the customer priced again in order with every version (tiered prices count
// the period's units from its start, archived ones included); those of the range that a price
// applies to (now or when committed) compared with what each is charged now: its last
// re-rating, else its stored credits.
Status rate_events(const Engine::Impl& d, const RepriceRequest& request, const RerateCustomer& c,
                   const std::map<std::uint64_t, core::Decimal>& rerated, RerateWork* work) {
  engine::Repricer repricer(d);
  TALLY_TRY(repricer.seed_from_archives());
  core::EventBatch batch;
  Status bad;
  TALLY_TRY(d.store->scan(
      store::Space::kEvents, engine::event_block_key(c.num, 0),
      engine::event_block_key(c.num + 1, 0), [&](std::string_view, std::string_view value) {
        engine::BlockHeader h;
        const bool ok = engine::decode_event_block(value, &h, [&](const engine::BlockEvent& be) {
          engine::stored_event_batch(request.customer, be, &batch);
          core::Decimal credits;
          const bool priced = repricer.price(c.num, be, batch, nullptr, &credits, nullptr, false);
          if (be.time_us < request.from_us || be.time_us >= request.to_us ||
              (!priced && !be.priced)) {
            return;
          }
          ++work->events;
          auto it = rerated.find(be.seq);
          const core::Decimal charged = it != rerated.end() ? it->second
                                        : be.priced         ? be.credits
                                                            : core::Decimal{};
          if (credits != charged) {
            add_change(*work, c, be, charged, credits);
          }
        });
        if (!ok) {
          bad = Status::corruption("an event block of customer '" + request.customer +
                                   "' cannot be decoded");
        }
        return ok;
      }));
  return bad;
}

// Each period's sums as text and, unless in a dry run, an adjustment for each non-zero
// difference (taking it from the wallet) in `ledger`.
void adjust_periods(Engine::Impl& d, const RepriceRequest& request, std::uint32_t cnum,
                    core::TimeUs now, RerateWork& work, engine::LedgerWork& ledger) {
  for (auto& [start, p] : work.periods) {
    const core::Decimal difference = work.rated[start] - work.charged[start];
    p.charged = core::format_decimal(work.charged[start]);
    p.rated = core::format_decimal(work.rated[start]);
    p.difference = core::format_decimal(difference);
    if (request.dry_run || difference.units == 0) {
      continue;
    }
    engine::LedgerRecord t;
    t.type = LedgerType::kAdjustment;
    t.description = "re-rating of " + core::format_rfc3339(p.start_us) + " to " +
                    core::format_rfc3339(p.end_us) + ": " + std::to_string(p.events) + " events, " +
                    p.charged + " charged, " + p.rated + " by today's prices";
    t.created_at_us = now;
    t.period_start_us = p.start_us;
    t.period_end_us = p.end_us;
    p.transaction_id = "txn_" + std::to_string(d.next_txn);
    d.adjust_wallet(ledger, cnum, core::Decimal{} - difference, std::move(t), now);
  }
}

// Re-rating reads every event of the customer and writes in one commit-thread job, so no commit
// of its events or burns runs in between: the changed events' new charges ("rerate:" records)
// and the adjustments go in `wb` (nothing in a dry run).
Status prepare_rerate(Engine::Impl& d, const RepriceRequest& request, RerateWork& work,
                      engine::LedgerWork& ledger, store::WriteBatch& wb) {
  RerateCustomer c;
  TALLY_TRY(find_rerate_customer(d, request.customer, &c));
  std::map<std::uint64_t, core::Decimal> rerated;
  TALLY_TRY(load_rerated(*d.store, c.num, &rerated));
  TALLY_TRY(rate_events(d, request, c, rerated, &work));
  const core::TimeUs now = d.clock->now_us();
  adjust_periods(d, request, c.num, now, work, ledger);
  if (request.dry_run) {
    return Status();
  }
  for (const auto& [seq, credits] : work.changed) {
    wb.put(store::Space::kMeta, engine::rerate_key(c.num, seq),
           engine::encode_rerate(credits, now));
  }
  d.write_ledger(ledger, wb);
  return Status();
}

// The answer: the periods with a difference.
RepriceReport reprice_report(const RepriceRequest& request, RerateWork& work) {
  RepriceReport report;
  report.customer = request.customer;
  report.dry_run = request.dry_run;
  report.events = work.events;
  report.changed = work.changed.size();
  for (auto& [start, p] : work.periods) {
    if (p.difference != "0") {
      report.periods.push_back(std::move(p));
    }
  }
  return report;
}

}  // namespace

Result<RepriceReport> Engine::reprice(const RepriceRequest& request) {
  TALLY_EMBEDDED_ONLY("repricing");
  Impl& d = *impl_;
  if (request.from_us >= request.to_us) {
    return Status::invalid_argument("from must be before to");
  }
  if (d.read_only && !request.dry_run) {
    return Status::unavailable("the engine is open read-only: only a dry run is possible");
  }
  auto work = std::make_shared<RerateWork>();
  auto ledger = std::make_shared<engine::LedgerWork>();
  auto prepare = [&d, &request, work, ledger](store::WriteBatch& wb) -> Status {
    return prepare_rerate(d, request, *work, *ledger, wb);
  };
  if (request.dry_run) {
    // Nothing is written: run on this thread. The shared lock of prepare is enough for a view.
    store::WriteBatch unused;
    TALLY_TRY(prepare(unused));
  } else {
    TALLY_TRY(engine::run_admin(d, prepare, [&d, ledger]() { d.install_ledger(*ledger); }));
  }
  return reprice_report(request, *work);
}

}  // namespace tally
