// Archiving raw events out of the hot store, and restoring them (docs/operations.md,
// "Archiving"; the records it keeps are in docs/storage.md, "Archive records").
//
// Archive: one scan of the event blocks over a store snapshot, on the caller's thread, writes
// the events older than the cutoff to a new zstd JSON Lines file and works out everything the
// hot store must keep of them: their ids and credits (dedup and the ledger check still find
// them), their part of each minute aggregate, distinct value and tiered price usage (verify adds
// it to what it recomputes). The file is fsynced and read back against its checksum and count,
// the manifest written, and only then one admin job on the commit thread deletes or rewrites
// the blocks and writes those records, atomically. Aggregates and the ledger are not touched, so
// queries answer the same before, during and after.
//
// Blocks are immutable except here and in restore, and both run under archive_mutex, so the
// blocks seen by the scan are still the stored ones when the job runs; ingest meanwhile only
// adds blocks with higher sequences, which the scan did not see and the job does not touch.
//
// Restore reads the file twice: once to check it whole against its manifest (nothing changes
// if it does not match), once to put each event back in the block that covers its sequence,
// or in a new block in the gap it left, and to delete the archive's records, in one job.
#include <filesystem>
#include <shared_mutex>

#include "common/crypto.h"
#include "engine/archive_file.h"
#include "engine/engine_impl.h"

namespace tally {

namespace {

namespace fs = std::filesystem;

// Bounds the memory and the size of the one write of a run; the rest waits for the next run.
constexpr std::uint64_t kArchiveEventsMax = 1'000'000;
constexpr std::size_t kManifestBytesMax = 64u << 20;
// Ages beyond this would put the cutoff before 1970 (and overflow microseconds far beyond).
constexpr std::int64_t kAgeSecondsMax = 36500LL * 86400;

// "20240101T000000Z": sortable and safe in file names.
std::string file_time(core::TimeUs t) {
  std::string s = core::format_rfc3339(t);  // 2024-01-01T00:00:00Z or with fraction
  std::string out;
  for (char c : s.substr(0, 19)) {
    if (c != '-' && c != ':') {
      out += c;
    }
  }
  return out + "Z";
}

std::string manifest_name_for(const std::string& data_file) {
  constexpr std::string_view kExt = ".jsonl.zst";
  std::string base = data_file;
  if (base.size() > kExt.size() &&
      base.compare(base.size() - kExt.size(), kExt.size(), kExt) == 0) {
    base.resize(base.size() - kExt.size());
  }
  return base + ".manifest.json";
}

Result<core::TimeUs> archive_cutoff(const Engine::Impl& d, const ArchiveRequest& req) {
  const core::TimeUs now = d.clock->now_us();
  if (req.before_us != 0) {
    if (req.before_us > now) {
      // Archiving events newer than now is never what was meant (a typo in a year, say).
      return Status::invalid_argument("before " + core::format_rfc3339(req.before_us) +
                                      " is in the future");
    }
    return req.before_us;
  }
  std::int64_t age_s = req.older_than_seconds;
  if (age_s < 0 || age_s > kAgeSecondsMax) {
    return Status::invalid_argument("older_than must be 0 to 36500 days");
  }
  if (age_s == 0) {
    age_s = d.config.retention.archive_after_seconds;
  }
  if (age_s == 0) {
    return Status::invalid_argument(
        "no cutoff: give an age (older_than) or a time (before), or set [retention] "
        "archive_after");
  }
  return now - age_s * core::kUsPerSecond;
}

std::string archive_dir(const Engine::Impl& d, const ArchiveRequest& req) {
  if (!req.out_dir.empty()) {
    return req.out_dir;
  }
  if (!d.config.retention.archive_dir.empty()) {
    return d.config.retention.archive_dir;
  }
  return (fs::path(d.config.server.data_dir) / "archive").string();
}

// Everything one archive run gathers before its write.
struct ArchiveWork {
  store::WriteBatch wb;  // block deletes and rewrites, archived event records
  std::map<std::string, core::AggState> aggregates;  // aggregate key -> archived part
  std::map<std::string, bool> uniques;
  engine::LedgerWork units;  // tiered units of archived events
  std::set<std::string> customers;
  ArchiveResult result;
};

// Reads an archive file back and checks it against what was written.
Status check_written(const std::string& path, const std::string& sha256, std::uint64_t bytes,
                     std::uint64_t events) {
  engine::ArchiveReader reader;
  TALLY_TRY(reader.open(path));
  std::string line;
  std::uint64_t lines = 0;
  for (;;) {
    Result<bool> more = reader.next_line(&line);
    if (!more) {
      return more.error();
    }
    if (!*more) {
      break;
    }
    ++lines;
  }
  if (reader.bytes() != bytes || reader.sha256_hex() != sha256 || lines != events) {
    return Status::io_error("archive file " + path + " does not read back as written");
  }
  return Status();
}

}  // namespace

namespace {

// One pass over the stored blocks: writes the archived events to the file and gathers what the
// hot store must keep of them into `w`.
class ArchiveScan {
 public:
  ArchiveScan(const Engine::Impl& d, core::TimeUs cutoff, std::uint64_t archive_id,
              engine::ArchiveWriter* writer, ArchiveWork* w)
      : d_(d), cutoff_(cutoff), archive_id_(archive_id), writer_(writer), w_(*w), repricer_(d) {
    std::shared_lock lock(d.state_mutex);
    for (const auto& [num, cs] : d.customers) {
      ids_[num] = cs.record.id;
    }
    for (const auto& m : d.catalog->meters) {
      if (!m.hidden) {
        specs_.push_back(m.spec);  // hidden cost meters come from repricing
      }
    }
  }

  Status run() {
    TALLY_TRY(repricer_.seed_from_archives());
    TALLY_TRY(d_.store->scan(store::Space::kEvents, "", "",
                             [this](std::string_view k, std::string_view v) {
                               failed_ = block(k, v);
                               return failed_.ok();
                             }));
    return failed_;
  }

 private:
  Status block(std::string_view key, std::string_view value) {
    if (key.size() != 12) {
      return Status::corruption("an event block key has the wrong length");
    }
    const std::uint32_t cnum = engine::read_be32(key);
    auto cit = ids_.find(cnum);
    if (cit == ids_.end()) {
      // A customer created after the snapshot of customers: its events are for the next run.
      return Status();
    }
    const bool take = w_.result.events < kArchiveEventsMax;
    engine::BlockHeader h;
    engine::EventBlockWriter kept;
    std::uint32_t archived = 0;
    std::uint32_t stay = 0;
    Status s;
    const bool ok = engine::decode_event_block(value, &h, [&](const engine::BlockEvent& be) {
      engine::stored_event_batch(cit->second, be, &batch_);
      const bool old = be.time_us < cutoff_;
      w_.result.more = w_.result.more || (old && !take);
      // Every event is priced, in order, so tiered prices see the units before each one.
      core::Decimal credits;
      repricer_.price(cnum, be, batch_, old && take ? &w_.aggregates : nullptr, &credits,
                      old && take ? &w_.units : nullptr);
      if (old && take) {
        ++archived;
        if (s.ok()) {
          s = event(cnum, cit->second, h, be);
        }
        return;
      }
      if (stay++ == 0) {
        kept.begin(be.seq, h.received_at_us);
      }
      kept.add_stored(be);
    });
    if (!ok) {
      return Status::corruption("an event block of customer '" + cit->second +
                                "' cannot be decoded");
    }
    TALLY_TRY(s);
    if (archived > 0 && stay == 0) {
      w_.wb.del(store::Space::kEvents, std::string(key));
      ++w_.result.blocks_deleted;
    } else if (archived > 0) {
      // The key keeps the block's original last sequence: the block holding sequence s is
      // still the first at or after (customer, s), whether or not s itself is still in it.
      w_.wb.put(store::Space::kEvents, std::string(key), kept.finish());
      ++w_.result.blocks_rewritten;
    }
    return Status();
  }

  Status event(std::uint32_t cnum, const std::string& customer, const engine::BlockHeader& h,
               const engine::BlockEvent& be) {
    engine::add_event_aggregates(specs_, cnum, be, batch_, &w_.aggregates, &w_.uniques);
    TALLY_TRY(writer_->write_line(engine::encode_archive_line(customer, h.received_at_us, be)));
    engine::ArchivedEventRecord rec{h.received_at_us, std::string(be.id), archive_id_, be.priced,
                                    be.credits};
    w_.wb.put(store::Space::kArchive, engine::archived_event_key(cnum, be.seq),
              engine::encode_archived_event(rec));
    ArchiveResult& res = w_.result;
    const bool first = res.events == 0;
    res.from_us = first ? be.time_us : std::min(res.from_us, be.time_us);
    res.to_us = first ? be.time_us : std::max(res.to_us, be.time_us);
    res.first_seq = first ? be.seq : std::min(res.first_seq, be.seq);
    res.last_seq = std::max(res.last_seq, be.seq);
    ++res.events;
    w_.customers.insert(customer);
    return Status();
  }

  const Engine::Impl& d_;
  const core::TimeUs cutoff_;
  const std::uint64_t archive_id_;
  engine::ArchiveWriter* writer_;
  ArchiveWork& w_;
  engine::Repricer repricer_;
  std::unordered_map<std::uint32_t, std::string> ids_;
  std::vector<core::MeterSpec> specs_;
  core::EventBatch batch_;
  Status failed_;
};

// Names the finished file after its time range, checks it by reading it back, and writes its
// manifest. Returns the manifest's text. On error, the files are removed.
Result<std::string> publish_files(const std::string& dir, const std::string& tmp_path,
                                  core::TimeUs created, const ArchiveWork& w, ArchiveResult* res) {
  const std::string base = "events-" + file_time(res->from_us) + "-" + file_time(res->to_us) + "-" +
                           file_time(created) + "-" + std::to_string(res->archive_id);
  res->file = (fs::path(dir) / (base + ".jsonl.zst")).string();
  res->manifest = (fs::path(dir) / (base + ".manifest.json")).string();
  std::error_code ec;
  if (fs::exists(res->file, ec)) {
    fs::remove(tmp_path, ec);
    return Status::already_exists("archive file " + res->file + " exists already");
  }
  fs::rename(tmp_path, res->file, ec);
  if (ec) {
    fs::remove(tmp_path, ec);
    return Status::io_error("cannot rename " + tmp_path + ": " + ec.message());
  }
  Status s = engine::sync_dir(dir);
  if (s.ok()) {
    s = check_written(res->file, res->sha256, res->bytes, res->events);
  }
  engine::ArchiveManifest m;
  m.archive_id = res->archive_id;
  m.file = base + ".jsonl.zst";
  m.sha256 = res->sha256;
  m.bytes = res->bytes;
  m.events = res->events;
  m.cutoff_us = res->cutoff_us;
  m.from_us = res->from_us;
  m.to_us = res->to_us;
  m.first_seq = res->first_seq;
  m.last_seq = res->last_seq;
  m.customers.assign(w.customers.begin(), w.customers.end());
  m.created_at_us = created;
  std::string text = engine::encode_manifest(m);
  if (s.ok()) {
    s = engine::write_file_synced(res->manifest, text);
  }
  if (!s.ok()) {
    fs::remove(res->file, ec);
    fs::remove(res->manifest, ec);
    return s;
  }
  return text;
}

// The records verify adds to what it recomputes, for the write that removes the events.
void add_archive_records(const Engine::Impl& d, const std::string& manifest_text, ArchiveWork* w) {
  const std::uint64_t id = w->result.archive_id;
  for (const auto& [key, st] : w->aggregates) {
    w->wb.put(store::Space::kArchive,
              engine::archive_record_key(engine::kArchiveAggregateTag, id, key),
              engine::encode_agg_state(st));
  }
  for (const auto& [key, unused_flag] : w->uniques) {
    w->wb.put(store::Space::kArchive,
              engine::archive_record_key(engine::kArchiveUniqueTag, id, key), "");
  }
  for (const auto& [key, units] : w->units.price_usage) {
    const auto& [price, cnum, start] = key;
    w->wb.put(store::Space::kArchive,
              engine::archive_record_key(
                  engine::kArchivePriceTag, id,
                  engine::price_usage_key(d.catalog->prices[price].key, cnum, start)),
              engine::encode_decimal(units));
  }
  w->wb.put(store::Space::kArchive, engine::archive_record_key(engine::kArchiveManifestTag, id, ""),
            manifest_text);
  std::string next_id;
  engine::put_be64(next_id, id + 1);
  w->wb.put(store::Space::kMeta, std::string(engine::kMetaNextArchive), next_id);
}

// Runs a prepared write on the commit thread.
Status write_on_commit_thread(Engine::Impl& d, store::WriteBatch&& wb) {
  auto batch = std::make_shared<store::WriteBatch>(std::move(wb));
  return engine::run_admin(
      d,
      [batch](store::WriteBatch& target) {
        target = std::move(*batch);
        return Status();
      },
      [] {});
}

// The number of the next archive: the stored one, else 1.
Result<std::uint64_t> next_archive_id(const store::Store& store) {
  auto next = store.get(store::Space::kMeta, std::string(engine::kMetaNextArchive));
  if (!next) {
    return next.error();
  }
  return next->has_value() && (*next)->size() == 8 ? engine::read_be64(**next) : 1;
}

// Writes the events older than `cutoff` to the file `tmp_path` and fills w->result with its
// events, bytes, hash and customers; when there are none, no file is left.
Status write_archive_file(Engine::Impl& d, core::TimeUs cutoff, const std::string& tmp_path,
                          ArchiveWork* w) {
  std::error_code ec;
  fs::remove(tmp_path, ec);
  auto writer = std::make_unique<engine::ArchiveWriter>();
  TALLY_TRY(writer->open(tmp_path));
  TALLY_TRY(ArchiveScan(d, cutoff, w->result.archive_id, writer.get(), w).run());
  if (w->result.events == 0) {
    return Status();  // the writer removes its empty file
  }
  TALLY_TRY(writer->finish());
  w->result.bytes = writer->bytes();
  w->result.sha256 = writer->sha256_hex();
  w->result.customers = static_cast<std::uint32_t>(w->customers.size());
  return Status();
}

}  // namespace

Result<ArchiveResult> Engine::archive(const ArchiveRequest& request) {
  TALLY_EMBEDDED_ONLY("archiving");
  Impl& d = *impl_;
  if (d.read_only) {
    return Status::unavailable("the engine is open read-only");
  }
  // The run ends in a store write: refused before any file is written while the disk reserve
  // refuses writes.
  TALLY_TRY(d.writes_allowed());
  Result<core::TimeUs> cutoff = archive_cutoff(d, request);
  if (!cutoff) {
    return cutoff.error();
  }
  std::unique_lock busy(d.archive_mutex, std::try_to_lock);
  if (!busy.owns_lock()) {
    return Status::unavailable("another archive, restore or verify is running");
  }
  const std::string dir = archive_dir(d, request);
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) {
    return Status::io_error("cannot create archive directory " + dir + ": " + ec.message());
  }
  Result<std::uint64_t> archive_id = next_archive_id(*d.store);
  if (!archive_id) {
    return archive_id.error();
  }
  ArchiveWork w;
  w.result.cutoff_us = *cutoff;
  w.result.archive_id = *archive_id;
  w.units.from_scratch = true;
  const core::TimeUs created = d.clock->now_us();
  // The file is named when its time range is known; written under a temporary name first.
  const std::string tmp_path =
      (fs::path(dir) / ("events-archive-" + std::to_string(w.result.archive_id) + ".partial"))
          .string();
  TALLY_TRY(write_archive_file(d, *cutoff, tmp_path, &w));
  if (w.result.events == 0) {
    return w.result;
  }
  Result<std::string> manifest = publish_files(dir, tmp_path, created, w, &w.result);
  if (!manifest) {
    return manifest.error();
  }
  add_archive_records(d, *manifest, &w);
  ArchiveResult res = w.result;
  if (Status written = write_on_commit_thread(d, std::move(w.wb)); !written.ok()) {
    // The files stay. A write that answered an error may still reach the store (RocksDB finds a
    // write whose fsync failed, or that the process died in, in its log at the restart): the
    // events are then archived and these files are their only copy. When it did not, they are
    // harmless: restoring them finds every event present and changes nothing.
    return written;
  }
  return res;
}

namespace {

// Reads a whole archive and checks it against its manifest; calls fn(ArchivedEvent&&) per line
// when given. Errors: as Engine::restore.
Status read_archive(const std::string& path, const engine::ArchiveManifest& m,
                    const std::function<Status(engine::ArchivedEvent&&)>& fn) {
  engine::ArchiveReader reader;
  TALLY_TRY(reader.open(path));
  std::string line;
  std::uint64_t lines = 0;
  engine::ArchivedEvent e;
  for (;;) {
    Result<bool> more = reader.next_line(&line);
    if (!more) {
      return more.error().code() == StatusCode::kCorruption
                 ? Status::corruption(path + " is damaged: " + more.error().message())
                 : more.error();
    }
    if (!*more) {
      break;
    }
    ++lines;
    if (Status s = engine::decode_archive_line(line, &e); !s.ok()) {
      return Status::corruption(path + ", line " + std::to_string(lines) + ": " + s.message());
    }
    if (fn) {
      TALLY_TRY(fn(std::move(e)));
    }
  }
  if (reader.bytes() != m.bytes || reader.sha256_hex() != m.sha256) {
    return Status::corruption(path +
                              " does not match its manifest's size and SHA-256: the file "
                              "is damaged or not the one archived");
  }
  if (lines != m.events) {
    return Status::corruption(path + " holds " + std::to_string(lines) + " events, its manifest " +
                              std::to_string(m.events));
  }
  return Status();
}

// The stored block that covers `seq` of a customer: the first at or after (customer, seq),
// when its first sequence is at or before seq. Its key and value, or an empty key.
Status covering_block(const store::Store& store, std::uint32_t cnum, std::uint64_t seq,
                      std::string* key, std::string* value, std::string* next_key) {
  key->clear();
  next_key->clear();
  return store.scan(store::Space::kEvents, engine::event_block_key(cnum, seq),
                    engine::event_block_key(cnum + 1, 0),
                    [&](std::string_view k, std::string_view v) {
                      engine::Reader r(v);
                      engine::BlockHeader h;
                      if (engine::decode_event_block_header(r, &h) && h.first_seq <= seq) {
                        key->assign(k);
                        value->assign(v);
                      } else {
                        next_key->assign(k);  // the gap seq is in ends before this block
                      }
                      return false;
                    });
}

engine::BlockEvent view_of(const engine::ArchivedEvent& a) {
  engine::BlockEvent e;
  e.seq = a.seq;
  e.time_us = a.time_us;
  e.flagged = a.flagged;
  e.id = a.id;
  e.type = a.type;
  e.priced = a.priced;
  e.cost = a.cost;
  e.credits = a.credits;
  e.quantity = a.quantity;
  for (const auto& p : a.props) {
    e.props.push_back(engine::BlockEvent::Prop{p.kind, p.key, p.text});
  }
  return e;
}

// Where restored events go: merged into the blocks that cover them, or into new blocks, one per
// run of events that lie in the same gap between stored blocks and came in the same commit.
struct RestorePlan {
  struct Merge {
    std::string value;  // the stored block
    std::vector<engine::ArchivedEvent> events;
  };

  std::map<std::string, Merge> merges;  // block key -> what it gets back

  struct NewBlock {
    std::uint32_t cnum = 0;
    std::string gap;  // key of the stored block after the gap ("" = none)
    core::TimeUs received_at_us = 0;
    std::vector<engine::ArchivedEvent> events;
  };

  std::vector<NewBlock> blocks;
  std::vector<std::pair<std::uint32_t, std::uint64_t>> restored;  // customer, seq
  std::uint64_t already_present = 0;
};

Status plan_event(const store::Store& store, std::uint32_t cnum, engine::ArchivedEvent&& e,
                  RestorePlan* plan) {
  std::string key;
  std::string value;
  std::string next_key;
  TALLY_TRY(covering_block(store, cnum, e.seq, &key, &value, &next_key));
  if (!key.empty()) {
    engine::BlockHeader h;
    bool present = false;
    bool other = false;
    const bool ok = engine::decode_event_block(value, &h, [&](const engine::BlockEvent& be) {
      if (be.seq == e.seq) {
        present = be.id == e.id;
        other = !present;
      }
    });
    if (!ok) {
      return Status::corruption("an event block cannot be decoded");
    }
    if (other) {
      return Status::unprocessable("sequence " + std::to_string(e.seq) + " of customer '" +
                                   e.customer + "' holds another event than the archive's '" +
                                   e.id + "': the archive was made from another data directory");
    }
    if (present) {
      ++plan->already_present;  // restored before
      return Status();
    }
    plan->restored.emplace_back(cnum, e.seq);
    auto& merge = plan->merges[key];
    merge.value = std::move(value);
    merge.events.push_back(std::move(e));
    return Status();
  }
  plan->restored.emplace_back(cnum, e.seq);
  // Lines come in (customer, sequence) order, so a run continues the last block or starts one.
  if (plan->blocks.empty() || plan->blocks.back().cnum != cnum ||
      plan->blocks.back().gap != next_key ||
      plan->blocks.back().received_at_us != e.received_at_us) {
    plan->blocks.push_back(RestorePlan::NewBlock{cnum, next_key, e.received_at_us, {}});
  }
  plan->blocks.back().events.push_back(std::move(e));
  return Status();
}

Status write_plan(RestorePlan& plan, store::WriteBatch* wb) {
  for (auto& [key, merge] : plan.merges) {
    engine::BlockHeader h;
    std::vector<engine::BlockEvent> events;
    const bool ok = engine::decode_event_block(merge.value, &h, [&](const engine::BlockEvent& be) {
      events.push_back(be);  // views into merge.value, which outlives this loop body
    });
    if (!ok) {
      return Status::corruption("an event block cannot be decoded");
    }
    for (const auto& a : merge.events) {
      events.push_back(view_of(a));
    }
    std::sort(
        events.begin(), events.end(),
        [](const engine::BlockEvent& a, const engine::BlockEvent& b) { return a.seq < b.seq; });
    engine::EventBlockWriter writer;
    writer.begin(events.front().seq, h.received_at_us);
    for (const auto& e : events) {
      writer.add_stored(e);
    }
    wb->put(store::Space::kEvents, key, writer.finish());
  }
  for (const auto& b : plan.blocks) {
    engine::EventBlockWriter writer;
    writer.begin(b.events.front().seq, b.received_at_us);
    for (const auto& a : b.events) {
      writer.add_stored(view_of(a));
    }
    wb->put(store::Space::kEvents, engine::event_block_key(b.cnum, b.events.back().seq),
            writer.finish());
  }
  for (const auto& [cnum, seq] : plan.restored) {
    wb->del(store::Space::kArchive, engine::archived_event_key(cnum, seq));
  }
  return Status();
}

Status forget_archive(const store::Store& store, std::uint64_t archive_id, store::WriteBatch* wb) {
  for (char tag :
       {engine::kArchiveAggregateTag, engine::kArchiveUniqueTag, engine::kArchivePriceTag}) {
    const std::string begin = engine::archive_record_key(tag, archive_id, "");
    const std::string end = engine::archive_record_key(tag, archive_id + 1, "");
    TALLY_TRY(
        store.scan(store::Space::kArchive, begin, end, [&](std::string_view k, std::string_view) {
          wb->del(store::Space::kArchive, std::string(k));
          return true;
        }));
  }
  wb->del(store::Space::kArchive,
          engine::archive_record_key(engine::kArchiveManifestTag, archive_id, ""));
  return Status();
}

// The manifest that `path` names (an archive's .manifest.json, or the one beside its data file)
// into *m, with its path.
Status read_manifest(const std::string& path, std::string* manifest_path,
                     engine::ArchiveManifest* m) {
  *manifest_path = path.ends_with(".manifest.json") ? path : manifest_name_for(path);
  Result<std::string> text = engine::read_small_file(*manifest_path, kManifestBytesMax);
  if (!text) {
    return text.error().code() == StatusCode::kNotFound
               ? Status::not_found("no manifest " + *manifest_path + " beside the archive")
               : text.error();
  }
  if (Status s = engine::decode_manifest(*text, m); !s.ok()) {
    return Status::invalid_argument(*manifest_path + ": " + s.message());
  }
  return Status();
}

// Customer id -> number, of the archive's customers that this data directory has.
using CustomerNums = std::unordered_map<std::string, std::uint32_t>;

CustomerNums customer_nums_of(const Engine::Impl& d, const engine::ArchiveManifest& m) {
  CustomerNums nums;
  std::shared_lock lock(d.state_mutex);
  for (const auto& c : m.customers) {
    if (auto it = d.customer_nums.find(c); it != d.customer_nums.end()) {
      nums[c] = it->second;
    }
  }
  return nums;
}

// The first pass: the whole file must match its manifest, and hold only customers this data
// directory has, before anything changes.
Status check_archive(const std::string& data_path, const engine::ArchiveManifest& m,
                     const CustomerNums& nums) {
  return read_archive(data_path, m, [&](engine::ArchivedEvent&& e) -> Status {
    if (nums.count(e.customer) == 0) {
      return Status::unprocessable("the archive holds events of customer '" + e.customer +
                                   "', which this data directory does not have");
    }
    return Status();
  });
}

// Whether this data directory holds the record of the archive (a record of another file under
// its number is refused).
Result<bool> archive_recorded(const store::Store& store, const engine::ArchiveManifest& m,
                              const std::string& data_path) {
  auto record =
      store.get(store::Space::kArchive,
                engine::archive_record_key(engine::kArchiveManifestTag, m.archive_id, ""));
  if (!record) {
    return record.error();
  }
  if (!record->has_value()) {
    return false;
  }
  engine::ArchiveManifest stored;
  if (!engine::decode_manifest(**record, &stored).ok() || stored.sha256 != m.sha256) {
    return Status::unprocessable("archive " + std::to_string(m.archive_id) +
                                 " of this data directory is another file than " + data_path);
  }
  return true;
}

}  // namespace

Result<RestoreResult> Engine::restore(const std::string& path) {
  TALLY_EMBEDDED_ONLY("restoring an archive");
  Impl& d = *impl_;
  if (d.read_only) {
    return Status::unavailable("the engine is open read-only");
  }
  TALLY_TRY(d.writes_allowed());
  std::unique_lock busy(d.archive_mutex, std::try_to_lock);
  if (!busy.owns_lock()) {
    return Status::unavailable("another archive, restore or verify is running");
  }
  std::string manifest_path;
  engine::ArchiveManifest m;
  TALLY_TRY(read_manifest(path, &manifest_path, &m));
  const std::string data_path = (fs::path(manifest_path).parent_path() / m.file).string();
  RestoreResult out;
  out.archive_id = m.archive_id;
  out.file = data_path;
  const CustomerNums nums = customer_nums_of(d, m);
  TALLY_TRY(check_archive(data_path, m, nums));
  Result<bool> recorded = archive_recorded(*d.store, m, data_path);
  if (!recorded) {
    return recorded.error();
  }
  RestorePlan plan;
  TALLY_TRY(read_archive(data_path, m, [&](engine::ArchivedEvent&& e) -> Status {
    return plan_event(*d.store, nums.at(e.customer), std::move(e), &plan);
  }));
  out.already_present = plan.already_present;
  out.events = plan.restored.size();
  if (!*recorded) {
    if (plan.restored.empty()) {
      return out;  // restored before: nothing to do
    }
    return Status::unprocessable("this data directory has no record of archive " +
                                 std::to_string(m.archive_id) + " (" + m.file +
                                 "): it was made from another data directory");
  }
  store::WriteBatch wb;
  TALLY_TRY(write_plan(plan, &wb));
  TALLY_TRY(forget_archive(*d.store, m.archive_id, &wb));
  TALLY_TRY(write_on_commit_thread(d, std::move(wb)));
  return out;
}

}  // namespace tally
