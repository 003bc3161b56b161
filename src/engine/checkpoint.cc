// The aggregates checkpoint: the engine's in-memory series (packed as they are) and group totals
// in `<data_dir>/aggregates.checkpoint`, so an open reads one file instead of every minute
// aggregate of the store and rebuilding the hours and days from them. Written every
// storage.checkpoint_interval_seconds by a thread of its own while the server runs, and at a
// clean stop; the store stays the truth.
//
// Written while commits go on: the writer reads S = installed_seq (every sequence number below
// it is installed in memory or was given back) and the customer numbers of every meter's series
// under one hold of state_mutex shared, then copies one series (customer and group) per hold,
// looking it up again. Aggregates change only through commits, and a commit's minutes all belong
// to the customers of its events; so a series copied after S moved on belongs to a customer with
// an event numbered S or later, and every other series is exactly its state at S, which is also
// what the store holds for it. The group texts are copied last (ids only grow, so every id used
// is in the table then); the totals are exact only when nothing was committed after S.
//
// Read at open: the file is used when it was written for the configured meters (keys and
// fingerprints) at an S and a customer count the store has reached. Every dedup record from
// dedup_key(S) on (one per commit, keyed by its first sequence number, never deleted) names the
// customers of the events numbered S or later: their series are dropped and read again from
// their stored minute aggregates and distinct values (one key range per meter and customer),
// and then every group total is made again from the series. So a checkpoint stays valid after a
// crash, however long after it the server ran: a writer keeps a file it used, and removes one it
// rejected; rebuilding a meter removes it too.
//
// Format (common/coding primitives): "TALLYCKP", varint version 3, varint S, varint the next
// customer number at S, the meters (varint count; key and fingerprint as bytes each), then per
// meter its series by customer (varint customers; each: customer number, varint groups, each:
// group id, Series::save), then per meter the group totals (varint count; group id,
// GroupTotals::save), then the group texts (varint count; bytes each, in id order), then the
// offset of the group texts (8 bytes, big-endian), and last the SHA-256 of everything before it
// (32 bytes).
#include <algorithm>
#include <chrono>
#include <filesystem>
#include <set>
#include <system_error>

#include <spdlog/spdlog.h>

#include "common/assert.h"
#include "common/crypto.h"
#include "engine/archive_file.h"
#include "engine/engine_impl.h"

namespace tally {

namespace {

constexpr std::string_view kMagic = "TALLYCKP";
constexpr std::uint64_t kVersion = 3;
constexpr std::size_t kDigestBytes = 32;
constexpr std::size_t kOffsetBytes = 8;
constexpr std::size_t kCheckpointBytesMax = std::size_t{64} << 30;

// The key range of one customer of one meter in Space::kAggregates and Space::kUniques (both
// keyed meter + '\0' + be32 customer + ...).
std::pair<std::string, std::string> customer_range(std::string_view meter, std::uint32_t cnum) {
  std::string begin = engine::aggregate_meter_prefix(meter);
  engine::put_be32(begin, cnum);
  return {begin, engine::prefix_end(begin)};
}

const engine::Series* find_series(const engine::MeterAggregates& ma, std::uint32_t cnum,
                                  std::uint32_t gid) {
  auto cit = ma.series.find(cnum);
  if (cit == ma.series.end()) {
    return nullptr;
  }
  auto git = cit->second.find(gid);
  return git == cit->second.end() ? nullptr : &git->second;
}

}  // namespace

// ---- writing --------------------------------------------------------------------------------

Status Engine::Impl::save_checkpoint(std::uint64_t* seq_out) {
  const std::size_t meters = catalog->meters.size();
  std::vector<std::vector<std::uint32_t>> customers_of(meters);
  std::vector<std::vector<std::uint32_t>> groups_of(meters);
  std::uint64_t seq = 0;
  std::uint32_t customer_end = 0;
  {
    // The keys, not the maps: they may rehash once the lock is released.
    std::shared_lock lock(state_mutex);
    seq = installed_seq;
    customer_end = installed_customer;
    for (std::size_t m = 0; m < meters; ++m) {
      customers_of[m].reserve(meter_aggregates[m].series.size());
      for (const auto& [cnum, by_group] : meter_aggregates[m].series) {
        customers_of[m].push_back(cnum);
      }
      for (const auto& [gid, totals] : meter_aggregates[m].totals) {
        groups_of[m].push_back(gid);
      }
    }
  }
  std::string out(kMagic);
  common::put_varint(out, kVersion);
  common::put_varint(out, seq);
  common::put_varint(out, customer_end);
  common::put_varint(out, meters);
  for (const auto& m : catalog->meters) {
    common::put_bytes(out, m.spec.key);
    common::put_bytes(out, m.spec.fingerprint());
  }
  const engine::Series empty;
  auto between_chunks = [this] {
    if (checkpoint_between_chunks) {
      checkpoint_between_chunks();
    }
    return !checkpoint_abandon.load(std::memory_order_relaxed);
  };
  const Status abandoned = Status::unavailable("stopping: the checkpoint was abandoned");
  for (std::size_t m = 0; m < meters; ++m) {
    std::sort(customers_of[m].begin(), customers_of[m].end());
    common::put_varint(out, customers_of[m].size());
    for (const std::uint32_t cnum : customers_of[m]) {
      common::put_varint(out, cnum);
      // The customer's groups, then one group's series per hold: a customer with most of the
      // events holds the lock no longer than one of its series takes to copy.
      std::vector<std::uint32_t> gids;
      {
        std::shared_lock lock(state_mutex);
        const auto& series = meter_aggregates[m].series;
        if (auto it = series.find(cnum); it != series.end()) {
          for (const auto& [gid, s] : it->second) {
            gids.push_back(gid);
          }
        }
      }
      common::put_varint(out, gids.size());
      for (const std::uint32_t gid : gids) {
        common::put_varint(out, gid);
        {
          std::shared_lock lock(state_mutex);
          // Series are never removed while running: found, unless a bug removed it (then an
          // empty one; its customer's next commit is what recovery would miss, so say so).
          const engine::Series* found = find_series(meter_aggregates[m], cnum, gid);
          TALLY_BUG(found != nullptr, "a series went away while it was checkpointed");
          (found != nullptr ? *found : empty).save(out);
        }
        if (!between_chunks()) {
          return abandoned;
        }
      }
    }
  }
  const engine::GroupTotals none;
  for (std::size_t m = 0; m < meters; ++m) {
    common::put_varint(out, groups_of[m].size());
    for (const std::uint32_t gid : groups_of[m]) {
      common::put_varint(out, gid);
      std::shared_lock lock(state_mutex);
      const auto& totals = meter_aggregates[m].totals;
      auto it = totals.find(gid);
      (it == totals.end() ? none : it->second).save(out);
    }
    if (!between_chunks()) {
      return abandoned;
    }
  }
  const std::uint64_t groups_at = out.size();
  {
    std::shared_lock lock(state_mutex);
    common::put_varint(out, group_texts.size());
    for (const auto& g : group_texts) {
      common::put_bytes(out, g);
    }
  }
  engine::put_be64(out, groups_at);
  out += common::sha256(out);
  TALLY_TRY(engine::write_file_synced(checkpoint_path, out));
  if (seq_out != nullptr) {
    *seq_out = seq;
  }
  return Status();
}

Status Engine::Impl::write_checkpoint_now() {
  if (checkpoint_path.empty() || read_only || !writes_allowed().ok()) {
    return Status();  // the file could take the store's reserve
  }
  {
    std::shared_lock lock(state_mutex);
    if (installed_seq == checkpoint_written_seq) {
      return Status();  // nothing new since the last one
    }
  }
  return save_checkpoint(&checkpoint_written_seq);
}

void Engine::Impl::run_checkpointer() {
  const std::chrono::seconds interval(config.storage.checkpoint_interval_seconds);
  std::unique_lock lock(checkpointer_mutex);
  for (;;) {
    if (checkpointer_cv.wait_for(lock, interval, [this] { return checkpointer_stopping; })) {
      return;
    }
    lock.unlock();
    if (Status s = forget_old_minutes(); !s.ok() && !checkpoint_abandon.load()) {
      // Held a while longer; the next tick tries again.
      spdlog::warn("minutes before the memory horizon could not be dropped: {}", s.message());
    }
    if (Status s = write_checkpoint_now(); !s.ok() && !checkpoint_abandon.load()) {
      // The next open reads more of the store; nothing is lost.
      spdlog::warn("the aggregates checkpoint could not be written: {}", s.message());
    }
    lock.lock();
  }
}

// ---- reading --------------------------------------------------------------------------------

void Engine::Impl::remove_checkpoint() {
  if (!checkpoint_path.empty() && !read_only) {
    std::error_code ignored;
    std::filesystem::remove(checkpoint_path, ignored);
  }
}

namespace {

// The parts of a checkpoint file whose magic and digest are right: the fields before the group
// texts, and the group texts; false when the file is not a whole checkpoint.
bool split_checkpoint(const std::string& text, std::string_view* fields, std::string_view* groups) {
  if (text.size() < kMagic.size() + kOffsetBytes + kDigestBytes ||
      text.compare(0, kMagic.size(), kMagic) != 0) {
    return false;
  }
  const std::string_view body(text.data(), text.size() - kDigestBytes);
  if (common::sha256(body) != std::string_view(text).substr(body.size())) {
    return false;
  }
  const std::uint64_t groups_at = engine::read_be64(body.substr(body.size() - kOffsetBytes));
  const std::string_view content = body.substr(0, body.size() - kOffsetBytes);
  if (groups_at < kMagic.size() || groups_at > content.size()) {
    return false;
  }
  *fields = content.substr(kMagic.size(), groups_at - kMagic.size());
  *groups = content.substr(groups_at);
  return true;
}

// What the header says: the first sequence number not covered, and the customer numbers below
// which every customer of the file is.
struct CheckpointHeader {
  std::uint64_t seq = 0;
  std::uint64_t customer_end = 0;
};

// Reads the header and the meters; false unless it is this version's, for a store that has
// reached its S and customer count, and for exactly the configured meters (keys and
// fingerprints).
bool read_header(common::Reader& in, const engine::Catalog& catalog, std::uint64_t next_seq,
                 std::uint64_t next_customer, CheckpointHeader* out) {
  std::uint64_t version = 0;
  std::uint64_t meters = 0;
  if (!in.get_varint(&version) || version != kVersion || !in.get_varint(&out->seq) ||
      out->seq > next_seq || !in.get_varint(&out->customer_end) ||
      out->customer_end > next_customer || !in.get_varint(&meters) ||
      meters != catalog.meters.size()) {
    return false;
  }
  for (const auto& m : catalog.meters) {
    std::string_view key;
    std::string_view fingerprint;
    if (!in.get_bytes(&key) || !in.get_bytes(&fingerprint) || key != m.spec.key ||
        fingerprint != m.spec.fingerprint()) {
      return false;
    }
  }
  return true;
}

// The customers of every event numbered `seq` or later (their series may be past the file's, or
// missing from it), from the dedup records from dedup_key(seq) on.
Result<std::set<std::uint32_t>> customers_since(store::Store& store, std::uint64_t seq) {
  std::set<std::uint32_t> touched;
  std::vector<engine::DedupEntry> entries;
  Status bad;
  TALLY_TRY(store.scan_once(store::Space::kDedup, engine::dedup_key(seq), "",
                            [&](std::string_view, std::string_view v) {
                              core::TimeUs received = 0;
                              if (!engine::decode_dedup_record(v, &received, &entries)) {
                                bad = Status::corruption("a dedup record cannot be decoded");
                                return false;
                              }
                              for (const auto& e : entries) {
                                if (e.seq >= seq) {
                                  touched.insert(e.customer_num);
                                }
                              }
                              return true;
                            }));
  TALLY_TRY(bad);
  return touched;
}

// The group texts of the file, interned by `intern`, into *group_of (the engine's id of each of
// the file's ids); false when they do not read whole.
template <typename Intern>
bool read_groups(std::string_view groups, Intern&& intern, std::vector<std::uint32_t>* group_of) {
  common::Reader in(groups);
  std::uint64_t n = 0;
  if (!in.get_varint(&n) || n > in.remaining()) {
    return false;
  }
  group_of->resize(n);
  for (auto& g : *group_of) {
    std::string_view text;
    if (!in.get_bytes(&text)) {
      return false;
    }
    g = intern(text);
  }
  return in.done();
}

// The series and group totals of every meter into *loaded (one per meter), the file's group ids
// mapped by group_of; `on_series(series, meter, customer, group)` is called on each series read.
// False when they do not read whole, or name a customer at or past customer_end or a group the
// file does not hold.
template <typename OnSeries>
bool read_aggregates(common::Reader& in, std::uint64_t customer_end,
                     const std::vector<std::uint32_t>& group_of, OnSeries&& on_series,
                     std::vector<engine::MeterAggregates>* loaded) {
  auto group_at = [&](std::uint64_t file_gid, std::uint32_t* gid) {
    if (file_gid >= group_of.size()) {
      return false;
    }
    *gid = group_of[file_gid];
    return true;
  };
  for (std::size_t m = 0; m < loaded->size(); ++m) {
    engine::MeterAggregates& ma = (*loaded)[m];
    std::uint64_t customers_in_file = 0;
    if (!in.get_varint(&customers_in_file) || customers_in_file > in.remaining()) {
      return false;
    }
    for (std::uint64_t i = 0; i < customers_in_file; ++i) {
      std::uint64_t cnum = 0;
      std::uint64_t n = 0;
      if (!in.get_varint(&cnum) || cnum >= customer_end || !in.get_varint(&n) ||
          n > in.remaining()) {
        return false;
      }
      auto& by_group = ma.series[static_cast<std::uint32_t>(cnum)];
      for (std::uint64_t j = 0; j < n; ++j) {
        std::uint64_t file_gid = 0;
        std::uint32_t gid = 0;
        if (!in.get_varint(&file_gid) || !group_at(file_gid, &gid) || !by_group[gid].restore(in)) {
          return false;
        }
        on_series(by_group[gid], static_cast<std::uint32_t>(m), static_cast<std::uint32_t>(cnum),
                  gid);
      }
    }
  }
  for (auto& ma : *loaded) {
    std::uint64_t n = 0;
    if (!in.get_varint(&n) || n > in.remaining()) {
      return false;
    }
    for (std::uint64_t i = 0; i < n; ++i) {
      std::uint64_t file_gid = 0;
      std::uint32_t gid = 0;
      if (!in.get_varint(&file_gid) || !group_at(file_gid, &gid) || !ma.totals[gid].restore(in)) {
        return false;
      }
    }
  }
  return in.done();
}

}  // namespace

Result<bool> Engine::Impl::load_checkpoint() {
  if (checkpoint_path.empty()) {
    return false;
  }
  auto text = engine::read_small_file(checkpoint_path, kCheckpointBytesMax);
  if (!text) {
    return false;  // none (or unreadable: then the store's records)
  }
  auto reject = [this] {
    remove_checkpoint();
    return false;
  };
  std::string_view fields;
  std::string_view groups;
  if (!split_checkpoint(*text, &fields, &groups)) {
    return reject();
  }
  common::Reader in(fields);
  CheckpointHeader header;
  if (!read_header(in, *catalog, next_seq, next_customer, &header)) {
    return reject();
  }
  std::set<std::uint32_t> touched;
  if (header.seq < next_seq) {
    auto since = customers_since(*store, header.seq);
    if (!since) {
      return since.error();
    }
    touched = std::move(*since);
  }
  // Reloading customer by customer reads their key ranges one by one: when most customers have
  // events after S, one pass over every stored record is cheaper (on 10 M events, every one of
  // 1,000 customers reloaded took 17.4 s against 12-14 s for the full load). The file stays: it
  // is still valid, and the next one replaces it.
  if (touched.size() * 2 > customers.size()) {
    if (!read_only) {  // read-only commands print to stdout
      spdlog::info("aggregates checkpoint not used: {} of {} customers have events after it",
                   touched.size(), customers.size());
    }
    return false;
  }
  // Group ids are the file's; groups interned already (none, today) keep theirs.
  std::vector<std::uint32_t> group_of;
  if (!read_groups(
          groups, [this](std::string_view g) { return intern_group(g); }, &group_of)) {
    return reject();
  }
  std::vector<engine::MeterAggregates> loaded(catalog->meters.size());
  // Minutes the file holds from before today's horizon are dropped at once.
  auto bind_series = [this](engine::Series& series, std::uint32_t meter, std::uint32_t cnum,
                            std::uint32_t gid) {
    series.bind(old_minutes.get(), engine::SeriesKey{meter, cnum, gid});
    if (minutes_from != engine::Series::kHoldsAll) {
      series.forget_minutes_before(minutes_from);
    }
  };
  if (!read_aggregates(in, header.customer_end, group_of, bind_series, &loaded)) {
    return reject();
  }
  meter_aggregates = std::move(loaded);
  for (const std::uint32_t cnum : touched) {
    TALLY_TRY(reload_customer(cnum));
  }
  if (header.seq < next_seq) {
    rebuild_totals();  // the file's are exact only when nothing was committed after S
  }
  aggregates_live = 0;
  for (const auto& ma : meter_aggregates) {
    for (const auto& [cnum, by_group] : ma.series) {
      for (const auto& [gid, s] : by_group) {
        aggregates_live += s.minutes();
      }
    }
  }
  checkpoint_customers_reloaded = touched.size();
  return true;
}

Status Engine::Impl::reload_customer(std::uint32_t cnum) {
  Status bad;
  for (std::uint32_t m = 0; m < catalog->meters.size(); ++m) {
    auto& series = meter_aggregates[m].series;
    series.erase(cnum);
    const auto [begin, end] = customer_range(catalog->meters[m].spec.key, cnum);
    TALLY_TRY(store->scan_once(
        store::Space::kAggregates, begin, end, [&](std::string_view k, std::string_view v) {
          engine::AggregateKey ak;
          core::AggState s;
          if (!engine::decode_aggregate_key(k, &ak) || !engine::decode_agg_state(v, &s)) {
            bad = Status::corruption("an aggregate record cannot be decoded");
            return false;
          }
          series_for(m, cnum, intern_group(ak.group)).add(ak.minute_us, s);
          return true;
        }));
    TALLY_TRY(bad);
    TALLY_TRY(store->scan_once(
        store::Space::kUniques, begin, end, [&](std::string_view k, std::string_view) {
          engine::UniqueKey uk;
          if (!engine::decode_unique_key(k, &uk)) {
            bad = Status::corruption("a distinct-value record cannot be decoded");
            return false;
          }
          series_for(m, cnum, intern_group(uk.group))
              .add_unique(uk.minute_us, std::string(uk.value));
          return true;
        }));
    TALLY_TRY(bad);
  }
  return Status();
}

void Engine::Impl::rebuild_totals() {
  for (auto& ma : meter_aggregates) {
    ma.totals.clear();
    for (const auto& [cnum, by_group] : ma.series) {
      for (const auto& [gid, s] : by_group) {
        ma.totals[gid].add_series(s);
      }
    }
  }
}

}  // namespace tally
