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

}  // namespace

Status Engine::Impl::load_prices(engine::Catalog& catalog_building) {
  std::map<std::string, engine::PriceLineRecord> lines;
  std::map<std::string, std::vector<core::PriceVersion>> stored;
  Status bad;
  const std::string line_begin(engine::kPriceLinePrefix);
  TALLY_TRY(store->scan(store::Space::kMeta, line_begin, engine::prefix_end(line_begin),
                        [&](std::string_view key, std::string_view value) {
                          engine::PriceLineRecord r;
                          if (!engine::decode_price_line(value, &r)) {
                            bad = Status::corruption("a price record cannot be decoded");
                            return false;
                          }
                          std::sort(r.match.begin(), r.match.end());
                          lines[std::string(key.substr(line_begin.size()))] = std::move(r);
                          return true;
                        }));
  TALLY_TRY(bad);
  const std::string version_begin(engine::kPriceVersionPrefix);
  TALLY_TRY(store->scan(store::Space::kMeta, version_begin, engine::prefix_end(version_begin),
                        [&](std::string_view key, std::string_view value) {
                          std::string_view price;
                          core::PriceVersion v;
                          if (!engine::decode_price_version_key(key, &price, &v.effective_from,
                                                                &v.created_us) ||
                              !engine::decode_price_version(value, &v.spec, &v.ended)) {
                            bad = Status::corruption("a price version cannot be decoded");
                            return false;
                          }
                          stored[std::string(price)].push_back(std::move(v));
                          return true;
                        }));
  TALLY_TRY(bad);
  // A directory without versions (new, or written before prices had them): the first versions
  // apply since forever, as the configuration priced every event so far.
  const bool history = !stored.empty();
  const core::TimeUs now = clock->now_us();
  store::WriteBatch wb;
  std::map<std::string, long> next_number;  // meter -> first unused key number
  for (const auto& [key, r] : lines) {
    next_number[r.meter] = std::max(next_number[r.meter], key_number(key) + 1);
  }
  std::set<std::string> claimed;
  auto add_version = [&](engine::PriceState& ps, core::TimeUs from, const core::PriceSpec& charges,
                         bool ended) {
    core::PriceVersion v;
    v.effective_from = from;
    v.created_us = now;
    v.ended = ended;
    v.spec = charges;
    v.spec.meter = ps.spec.meter;
    v.spec.match = ps.spec.match;
    wb.put(store::Space::kMeta, engine::price_version_key(ps.key, from, now),
           engine::encode_price_version(charges, ended));
    ps.versions.push_back(std::move(v));
  };

  for (engine::PriceState& ps : catalog_building.prices) {
    for (const auto& [key, r] : lines) {
      if (claimed.count(key) == 0 && r.meter == ps.spec.meter && r.match == ps.spec.match) {
        ps.key = key;
        break;
      }
    }
    if (ps.key.empty()) {
      long& n = next_number[ps.spec.meter];
      ps.key = ps.spec.meter + "#" + std::to_string(n++);
      engine::PriceLineRecord r{ps.spec.meter, ps.event_type, ps.spec.match};
      wb.put(store::Space::kMeta, engine::price_line_key(ps.key), engine::encode_price_line(r));
    }
    claimed.insert(ps.key);
    ps.versions = stored[ps.key];
    for (auto& v : ps.versions) {
      v.spec.meter = ps.spec.meter;
      v.spec.match = ps.spec.match;
    }
    const bool first = ps.versions.empty();
    // The times the configuration names: an entry without effective_from is compared with the
    // version in effect now among the others.
    std::set<core::TimeUs> named;
    for (std::size_t e : ps.entries) {
      if (config.prices[e].has_effective_from) {
        named.insert(config.prices[e].effective_from_us);
      }
    }
    for (std::size_t e : ps.entries) {
      const config::PriceConfig& pc = config.prices[e];
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
      const core::PriceVersion* current = core::version_at(others, now);
      if (current == nullptr || !core::same_charges(current->spec, pc.spec)) {
        add_version(ps, first && !history ? core::kSinceForever : now, pc.spec, false);
      }
    }
  }
  // Prices the configuration no longer has: kept for their history, ended from now on.
  for (auto& [key, r] : lines) {
    if (claimed.count(key) != 0) {
      continue;
    }
    engine::PriceState ps;
    ps.key = key;
    ps.spec.meter = r.meter;
    ps.spec.match = r.match;
    ps.event_type = r.event_type;
    ps.configured = false;
    const engine::MeterDef* m = catalog_building.find(r.meter);
    ps.meter = m == nullptr ? engine::kNoMeter : catalog_building.index_of(m);
    ps.versions = stored[key];
    for (auto& v : ps.versions) {
      v.spec.meter = ps.spec.meter;
      v.spec.match = ps.spec.match;
    }
    const core::PriceVersion* last = nullptr;
    for (const auto& v : ps.versions) {
      if (last == nullptr || v.effective_from > last->effective_from ||
          (v.effective_from == last->effective_from && v.created_us >= last->created_us)) {
        last = &v;
      }
    }
    if (last != nullptr && !last->ended) {
      add_version(ps, now, last->spec, true);
    }
    if (ps.meter != engine::kNoMeter) {
      catalog_building.prices_by_meter[ps.meter].push_back(
          static_cast<std::uint32_t>(catalog_building.prices.size()));
    }
    catalog_building.prices.push_back(std::move(ps));
  }
  for (auto& ps : catalog_building.prices) {
    std::sort(ps.versions.begin(), ps.versions.end(), [](const auto& a, const auto& b) {
      return a.effective_from != b.effective_from ? a.effective_from < b.effective_from
                                                  : a.created_us < b.created_us;
    });
  }
  if (!read_only && !wb.empty()) {
    TALLY_TRY(write_store(wb, true));
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

}  // namespace

Result<RepriceReport> Engine::reprice(const RepriceRequest& request) {
  Impl& d = *impl_;
  if (request.from_us >= request.to_us) {
    return Status::invalid_argument("from must be before to");
  }
  if (d.read_only && !request.dry_run) {
    return Status::unavailable("the engine is open read-only: only a dry run is possible");
  }
  auto work = std::make_shared<RerateWork>();
  auto ledger = std::make_shared<engine::LedgerWork>();
  std::uint32_t cnum = 0;
  // Re-rating reads every event of the customer and writes in one commit-thread job, so no
  // commit of its events or burns runs in between.
  auto prepare = [&d, &request, work, ledger, &cnum](store::WriteBatch& wb) -> Status {
    core::TimeZone tz;
    core::TimeUs anchor = 0;
    {
      std::shared_lock lock(d.state_mutex);
      const engine::CustomerState* cs = d.find_customer(request.customer);
      if (cs == nullptr) {
        return Status::not_found("customer '" + request.customer + "' does not exist");
      }
      cnum = cs->num;
      tz = cs->tz;
      anchor = cs->record.billing_anchor_us != 0 ? cs->record.billing_anchor_us
                                                 : cs->record.created_at_us;
    }
    // What each event is charged now: its last re-rating, else its stored credits.
    std::map<std::uint64_t, core::Decimal> rerated;
    std::string begin(engine::kRerateKeyPrefix);
    engine::put_be32(begin, cnum);
    Status bad;
    TALLY_TRY(d.store->scan(store::Space::kMeta, begin, engine::prefix_end(begin),
                            [&](std::string_view key, std::string_view value) {
                              core::Decimal credits;
                              core::TimeUs at = 0;
                              if (key.size() != begin.size() + 8 ||
                                  !engine::decode_rerate(value, &credits, &at)) {
                                bad = Status::corruption("a re-rating record cannot be decoded");
                                return false;
                              }
                              rerated[engine::read_be64(key.substr(begin.size()))] = credits;
                              return true;
                            }));
    TALLY_TRY(bad);
    // Every event of the customer priced again in order with every version (tiered prices count
    // the period's units from its start, archived ones included); those of the range compared.
    engine::Repricer repricer(d);
    TALLY_TRY(repricer.seed_from_archives());
    core::EventBatch batch;
    TALLY_TRY(d.store->scan(
        store::Space::kEvents, engine::event_block_key(cnum, 0),
        engine::event_block_key(cnum + 1, 0), [&](std::string_view, std::string_view value) {
          engine::BlockHeader h;
          const bool ok = engine::decode_event_block(value, &h, [&](const engine::BlockEvent& be) {
            engine::stored_event_batch(request.customer, be, &batch);
            core::Decimal credits;
            const bool priced = repricer.price(cnum, be, batch, nullptr, &credits, nullptr, false);
            if (be.time_us < request.from_us || be.time_us >= request.to_us ||
                (!priced && !be.priced)) {
              return;
            }
            ++work->events;
            auto it = rerated.find(be.seq);
            const core::Decimal charged = it != rerated.end() ? it->second
                                          : be.priced         ? be.credits
                                                              : core::Decimal{};
            if (credits == charged) {
              return;
            }
            core::TimeUs start = 0;
            core::TimeUs end = 0;
            core::billing_period_span(be.time_us, anchor, tz, &start, &end);
            RepricePeriod& p = work->periods[start];
            p.start_us = start;
            p.end_us = end;
            ++p.events;
            work->charged[start] += charged;
            work->rated[start] += credits;
            work->changed.emplace_back(be.seq, credits);
          });
          if (!ok) {
            bad = Status::corruption("an event block of customer '" + request.customer +
                                     "' cannot be decoded");
          }
          return ok;
        }));
    TALLY_TRY(bad);
    const core::TimeUs now = d.clock->now_us();
    for (auto& [start, p] : work->periods) {
      const core::Decimal difference = work->rated[start] - work->charged[start];
      p.charged = core::format_decimal(work->charged[start]);
      p.rated = core::format_decimal(work->rated[start]);
      p.difference = core::format_decimal(difference);
      if (request.dry_run || difference.units == 0) {
        continue;
      }
      engine::LedgerRecord t;
      t.type = LedgerType::kAdjustment;
      t.description = "re-rating of " + core::format_rfc3339(p.start_us) + " to " +
                      core::format_rfc3339(p.end_us) + ": " + std::to_string(p.events) +
                      " events, " + p.charged + " charged, " + p.rated + " by today's prices";
      t.created_at_us = now;
      t.period_start_us = p.start_us;
      t.period_end_us = p.end_us;
      p.transaction_id = "txn_" + std::to_string(d.next_txn);
      d.adjust_wallet(*ledger, cnum, core::Decimal{} - difference, std::move(t), now);
    }
    if (request.dry_run) {
      return Status();
    }
    for (const auto& [seq, credits] : work->changed) {
      wb.put(store::Space::kMeta, engine::rerate_key(cnum, seq),
             engine::encode_rerate(credits, now));
    }
    d.write_ledger(*ledger, wb);
    return Status();
  };
  if (request.dry_run) {
    // Nothing is written: run on this thread. The shared lock of prepare is enough for a view.
    store::WriteBatch unused;
    TALLY_TRY(prepare(unused));
  } else {
    TALLY_TRY(engine::run_admin(d, prepare, [&d, ledger]() { d.install_ledger(*ledger); }));
  }
  RepriceReport report;
  report.customer = request.customer;
  report.dry_run = request.dry_run;
  report.events = work->events;
  report.changed = work->changed.size();
  for (auto& [start, p] : work->periods) {
    if (p.difference != "0") {
      report.periods.push_back(std::move(p));
    }
  }
  return report;
}

}  // namespace tally
