// Archiving and restoring raw events, on real files and real zstd: queries answer the same,
// listings lose the archived events, verify passes, a retried id stays a duplicate, restore
// brings every event back exactly (twice is harmless), a damaged archive is refused with
// nothing changed, and ingest concurrent with an archive loses nothing.
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <limits>
#include <memory>
#include <optional>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include <tally/clock.h>
#include <tally/engine.h>

#include "core/time.h"
#include "engine/archive_file.h"
#include "engine/codec.h"
#include "engine/engine_impl.h"
#include "engine/engine_test_util.h"
#include "store/store.h"

namespace tally {
namespace {

namespace fs = std::filesystem;

constexpr const char* kConfig = R"(
[credits]
per_currency_unit = 100

[[meters]]
key = "calls"
event_type = "call"
aggregation = "count"
group_by = ["service"]

[[meters]]
key = "users"
event_type = "call"
aggregation = "unique_count"
value = "$.user"

[[meters]]
key = "last_size"
event_type = "call"
aggregation = "latest"
value = "$.size"

[[meters]]
key = "gb"
event_type = "storage"
aggregation = "sum"
value = "$.gb"

[[prices]]
meter = "calls"
unit_price = "0.01"

[[prices]]
meter = "gb"
model = "graduated"
tiers = [{ up_to = 10, unit_price = "1" }, { unit_price = "0.5" }]
)";

TimeUs at(const char* rfc3339) {
  return *core::parse_rfc3339(rfc3339);
}

class ArchiveTest : public EngineDirTest {
 protected:
  ArchiveTest() : EngineDirTest("tally-archive-", at("2025-03-10T00:00:00Z")) {}

  void SetUp() override {
    EngineDirTest::SetUp();
    out_ = (dir_ / "archive").string();
  }

  std::unique_ptr<Engine> open() { return open_engine(kConfig); }

  static void ingest(Engine& e, const std::string& body) {
    auto r = e.ingest_json(body);
    ASSERT_TRUE(r.has_value()) << r.error().message();
    EXPECT_EQ(r->rejected, 0u);
  }

  static std::string event(const std::string& id, const std::string& customer, const char* time,
                           const std::string& props = R"({"service":"chat","user":"u1","size":3})",
                           const std::string& type = "call") {
    return R"({"id":")" + id + R"(","customer":")" + customer + R"(","type":")" + type +
           R"(","time":")" + time + R"(","properties":)" + props + "}";
  }

  // January and March events for two customers, mixed in commits so that some blocks are
  // archived whole and some only in part.
  void fill(Engine& e) {
    Customer c;
    c.id = "acme";
    ASSERT_TRUE(e.create_customer(c).has_value());
    WalletTransactionRequest r;
    r.type = LedgerType::kTopUp;
    r.amount = "1000";
    ASSERT_TRUE(e.wallet_transaction("acme", r).has_value());
    ingest(e, "{\"events\":[" + event("a1", "acme", "2025-01-10T10:00:00Z") + "," +
                  event("a2", "acme", "2025-01-10T10:00:30Z",
                        R"({"service":"search","user":"u2","size":7,"deep":{"x":null,"y":true}})") +
                  "," + event("b1", "beta", "2025-01-11T00:00:00Z") + "]}");
    ingest(e, "{\"events\":[" + event("a3", "acme", "2025-01-10T10:00:45Z") + "," +
                  event("a4", "acme", "2025-03-01T00:00:00Z") + "," +
                  event("g1", "acme", "2025-01-20T00:00:00Z", R"({"gb":8})", "storage") + "," +
                  event("g2", "acme", "2025-02-05T00:00:00Z", R"({"gb":4.5})", "storage") + "]}");
    ingest(e, "{\"events\":[" + event("b2", "beta", "2025-03-05T00:00:00Z") + "]}");
  }

  static std::string query(Engine& e, const std::string& meter, Measure measure = Measure::kUnits) {
    MeterQuery q;
    q.meter = meter;
    q.from_us = at("2025-01-01T00:00:00Z");
    q.to_us = at("2025-04-01T00:00:00Z");
    q.window = Window::kMinute;
    q.measure = measure;
    auto r = e.query(q);
    EXPECT_TRUE(r.has_value()) << r.error().message();
    std::string out;
    for (const auto& row : r ? r->rows : std::vector<QueryRow>{}) {
      out += row.customer + "@" + std::to_string(row.window_start_us) + "=" + row.value + ";";
    }
    return out;
  }

  static std::string answers(Engine& e) {
    return query(e, "calls") + "|" + query(e, "users") + "|" + query(e, "last_size") + "|" +
           query(e, "gb") + "|" + query(e, "gb", Measure::kCredits) + "|" +
           query(e, "calls", Measure::kCost);
  }

  static std::vector<StoredEvent> events(Engine& e) {
    EventListQuery q;
    q.limit = 1000;
    auto page = e.list_events(q);
    EXPECT_TRUE(page.has_value()) << page.error().message();
    return page ? page->events : std::vector<StoredEvent>{};
  }

  static std::string describe(const std::vector<StoredEvent>& evs) {
    std::string out;
    for (const auto& ev : evs) {
      out += ev.customer + "/" + std::to_string(ev.seq) + "/" + ev.id + "/" + ev.type + "/" +
             std::to_string(ev.time_us) + "/" + std::to_string(ev.received_at_us) + "/" +
             (ev.flagged ? "f" : "-") + (ev.priced ? ev.cost + "," + ev.credits : "") + "/";
      for (const auto& p : ev.properties) {
        out += p.key + "=" + p.text + ":" + std::to_string(static_cast<int>(p.kind)) + ",";
      }
      out += "\n";
    }
    return out;
  }

  static void expect_verified(Engine& e) {
    auto v = e.verify();
    ASSERT_TRUE(v.has_value()) << v.error().message();
    for (const auto& d : v->differences) {
      ADD_FAILURE() << d;
    }
  }

  ArchiveRequest before_february() const {
    ArchiveRequest r;
    r.before_us = at("2025-02-01T00:00:00Z");
    r.out_dir = out_;
    return r;
  }

  std::string out_;
};

TEST_F(ArchiveTest, ArchiveKeepsAnswersAndVerifyAndRestoreBringsEventsBack) {
  auto e = open();
  fill(*e);
  const std::string before_answers = answers(*e);
  const std::vector<StoredEvent> before_events = events(*e);
  ASSERT_EQ(before_events.size(), 8u);
  expect_verified(*e);

  auto a = e->archive(before_february());
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->events, 5u);  // a1 a2 a3 b1 g1
  EXPECT_EQ(a->customers, 2u);
  EXPECT_EQ(a->from_us, at("2025-01-10T10:00:00Z"));
  EXPECT_EQ(a->to_us, at("2025-01-20T00:00:00Z"));
  EXPECT_EQ(a->blocks_deleted, 2u);    // the first commit's blocks: all of January
  EXPECT_EQ(a->blocks_rewritten, 1u);  // the second commit's acme block keeps a4 and g2
  EXPECT_FALSE(a->more);
  EXPECT_TRUE(fs::exists(a->file));
  EXPECT_TRUE(fs::exists(a->manifest));
  EXPECT_GT(a->bytes, 0u);
  EXPECT_EQ(a->bytes, fs::file_size(a->file));

  // Queries read aggregates, which stay; listings read the hot store, which lost them.
  EXPECT_EQ(answers(*e), before_answers);
  std::vector<StoredEvent> left = events(*e);
  ASSERT_EQ(left.size(), 3u);
  for (const auto& ev : left) {
    EXPECT_GE(ev.time_us, at("2025-02-01T00:00:00Z")) << ev.id;
  }
  expect_verified(*e);
  auto v = e->verify();
  EXPECT_EQ(v->archived_events, 5u);

  // A retry of an archived event is still a duplicate, and is not billed again.
  const std::string wallet_before = e->wallet("acme")->balance;
  auto dup = e->ingest_json("{\"events\":[" + event("a1", "acme", "2025-01-10T10:00:00Z") + "]}");
  ASSERT_TRUE(dup.has_value());
  EXPECT_EQ(dup->duplicates, 1u);
  EXPECT_EQ(dup->accepted, 0u);
  EXPECT_EQ(e->wallet("acme")->balance, wallet_before);
  EXPECT_EQ(answers(*e), before_answers);

  // The same after a restart: the dedup index is rebuilt from the kept hash lists.
  e.reset();
  e = open();
  dup =
      e->ingest_json("{\"events\":[" +
                     event("g1", "acme", "2025-01-20T00:00:00Z", R"({"gb":8})", "storage") + "]}");
  ASSERT_TRUE(dup.has_value());
  EXPECT_EQ(dup->duplicates, 1u);
  expect_verified(*e);

  // Restore: every event back with its sequence and every field; verify passes.
  auto r = e->restore(a->manifest);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->events, 5u);
  EXPECT_EQ(r->already_present, 0u);
  EXPECT_EQ(describe(events(*e)), describe(before_events));
  EXPECT_EQ(answers(*e), before_answers);
  expect_verified(*e);
  EXPECT_EQ(e->verify()->archived_events, 0u);

  // Twice is harmless, through the data file's name too.
  auto again = e->restore(a->file);
  ASSERT_TRUE(again.has_value()) << again.error().message();
  EXPECT_EQ(again->events, 0u);
  EXPECT_EQ(again->already_present, 5u);
  EXPECT_EQ(describe(events(*e)), describe(before_events));
  expect_verified(*e);

  // Archived again after the restore: a new archive of the same events.
  auto a2 = e->archive(before_february());
  ASSERT_TRUE(a2.has_value()) << a2.error().message();
  EXPECT_EQ(a2->events, 5u);
  EXPECT_NE(a2->archive_id, a->archive_id);
  expect_verified(*e);
  EXPECT_EQ(answers(*e), before_answers);
}

TEST_F(ArchiveTest, FileAndManifestDescribeTheEvents) {
  auto e = open();
  fill(*e);
  auto a = e->archive(before_february());
  ASSERT_TRUE(a.has_value()) << a.error().message();
  std::ifstream in(a->manifest);
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  engine::ArchiveManifest m;
  ASSERT_TRUE(engine::decode_manifest(text, &m).ok()) << text;
  EXPECT_EQ(m.file, fs::path(a->file).filename().string());
  EXPECT_EQ(m.sha256, a->sha256);
  EXPECT_EQ(m.events, 5u);
  EXPECT_EQ(m.customers, (std::vector<std::string>{"acme", "beta"}));
  EXPECT_EQ(m.cutoff_us, at("2025-02-01T00:00:00Z"));
  EXPECT_EQ(m.created_at_us, clock_.now_us());
  EXPECT_TRUE(fs::path(a->file).filename().string().starts_with("events-20250110T100000Z-"));

  engine::ArchiveReader reader;
  ASSERT_TRUE(reader.open(a->file).ok());
  std::string line;
  std::vector<std::string> ids;
  for (;;) {
    auto more = reader.next_line(&line);
    ASSERT_TRUE(more.has_value());
    if (!*more) {
      break;
    }
    engine::ArchivedEvent ev;
    ASSERT_TRUE(engine::decode_archive_line(line, &ev).ok()) << line;
    ids.push_back(ev.customer + ":" + ev.id);
    if (ev.id == "a1") {
      EXPECT_TRUE(ev.priced);
      EXPECT_EQ(core::format_decimal(ev.credits), "1");
    }
  }
  EXPECT_EQ(ids, (std::vector<std::string>{"acme:a1", "acme:a2", "acme:a3", "acme:g1", "beta:b1"}));
  EXPECT_EQ(reader.sha256_hex(), a->sha256);
}

TEST_F(ArchiveTest, NothingToArchiveIsNotAnError) {
  auto e = open();
  fill(*e);
  ArchiveRequest r = before_february();
  r.before_us = at("2024-01-01T00:00:00Z");
  auto a = e->archive(r);
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->events, 0u);
  EXPECT_TRUE(a->file.empty());
  EXPECT_TRUE(fs::is_empty(out_));  // no partial file left behind
  EXPECT_EQ(events(*e).size(), 8u);
}

TEST_F(ArchiveTest, CutoffFromAgeOrConfigAndErrors) {
  auto e = open();
  fill(*e);
  ArchiveRequest r;
  r.out_dir = out_;
  auto none = e->archive(r);  // no age given, none configured
  ASSERT_FALSE(none.has_value());
  EXPECT_EQ(none.error().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(none.error().message().find("archive_after"), std::string::npos);
  r.older_than_seconds = -1;
  EXPECT_EQ(e->archive(r).error().code(), StatusCode::kInvalidArgument);
  r.older_than_seconds = std::numeric_limits<std::int64_t>::max();  // no overflow
  EXPECT_EQ(e->archive(r).error().code(), StatusCode::kInvalidArgument);
  r.older_than_seconds = 0;
  r.before_us = at("2100-01-01T00:00:00Z");
  auto future = e->archive(r);
  ASSERT_FALSE(future.has_value());
  EXPECT_NE(future.error().message().find("is in the future"), std::string::npos);
  r.before_us = 0;
  EXPECT_EQ(events(*e).size(), 8u);

  // A read-only engine (as `tally verify` opens one) cannot archive or restore.
  {
    EngineOptions o;
    o.config_toml = kConfig;
    o.data_dir = data_dir();
    o.clock = &clock_;
    o.read_only = true;
    auto ro = Engine::open(o);
    ASSERT_TRUE(ro.has_value()) << ro.error().message();
    EXPECT_EQ((*ro)->archive(before_february()).error().code(), StatusCode::kUnavailable);
    EXPECT_EQ((*ro)->restore(out_ + "/x.manifest.json").error().code(), StatusCode::kUnavailable);
  }

  r.older_than_seconds = 30 * 86400;  // before 2025-02-08
  auto a = e->archive(r);
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_EQ(a->cutoff_us, clock_.now_us() - 30 * 86400 * core::kUsPerSecond);
  EXPECT_EQ(a->events, 6u);  // and g2 of 2025-02-05
  expect_verified(*e);
}

TEST_F(ArchiveTest, VerifyStillFindsARealMismatchAfterArchiving) {
  {
    auto e = open();
    fill(*e);
    ASSERT_TRUE(e->archive(before_february()).has_value());
    expect_verified(*e);
  }
  // The stored aggregate of a minute whose events are all archived gains one count, written
  // past the engine: the baseline no longer explains it.
  {
    store::RocksOptions ro;
    ro.path = data_dir();
    auto st = store::open_rocksdb_store(ro);
    ASSERT_TRUE(st.has_value()) << st.error().message();
    const std::string key = engine::aggregate_key("calls", 1, at("2025-01-10T10:00:00Z"), "chat");
    auto v = (*st)->get(store::Space::kAggregates, key);
    ASSERT_TRUE(v.has_value() && v->has_value());
    core::AggState s;
    ASSERT_TRUE(engine::decode_agg_state(**v, &s));
    EXPECT_EQ(s.count, 2);  // a1 and a3, both archived
    s.add(core::Decimal::from_int(1), at("2025-01-10T10:00:50Z"), 999);
    store::WriteBatch wb;
    wb.put(store::Space::kAggregates, key, engine::encode_agg_state(s));
    ASSERT_TRUE((*st)->write(wb, true).ok());
  }
  auto e = open();
  auto v = e->verify();
  ASSERT_TRUE(v.has_value());
  ASSERT_EQ(v->differences.size(), 1u);
  EXPECT_NE(v->differences[0].find("meter 'calls', customer 'acme', minute 2025-01-10T10:00:00Z"),
            std::string::npos)
      << v->differences[0];
}

TEST_F(ArchiveTest, DamagedArchiveIsRefusedAndNothingChanges) {
  auto e = open();
  fill(*e);
  auto a = e->archive(before_february());
  ASSERT_TRUE(a.has_value()) << a.error().message();
  const std::string listed = describe(events(*e));
  const std::string answered = answers(*e);

  // One byte flipped in the middle of the compressed file.
  std::string bytes;
  {
    std::ifstream in(a->file, std::ios::binary);
    bytes.assign((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  }
  std::string damaged = bytes;
  damaged[damaged.size() / 2] = static_cast<char>(damaged[damaged.size() / 2] ^ 0x40);
  std::ofstream(a->file, std::ios::binary | std::ios::trunc) << damaged;
  auto r = e->restore(a->manifest);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorruption) << r.error().message();
  EXPECT_EQ(describe(events(*e)), listed);
  EXPECT_EQ(answers(*e), answered);
  expect_verified(*e);

  // Truncated.
  std::ofstream(a->file, std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.size() - 9);
  r = e->restore(a->file);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kCorruption) << r.error().message();
  EXPECT_EQ(describe(events(*e)), listed);

  // Not zstd at all.
  std::ofstream(a->file, std::ios::binary | std::ios::trunc) << "hello\n";
  EXPECT_EQ(e->restore(a->file).error().code(), StatusCode::kCorruption);

  // No manifest, or not a manifest.
  EXPECT_EQ(e->restore(out_ + "/missing.jsonl.zst").error().code(), StatusCode::kNotFound);
  std::ofstream(out_ + "/x.manifest.json") << "{\"format\":\"other\"}";
  EXPECT_EQ(e->restore(out_ + "/x.manifest.json").error().code(), StatusCode::kInvalidArgument);

  // The intact file restores.
  std::ofstream(a->file, std::ios::binary | std::ios::trunc) << bytes;
  auto ok = e->restore(a->manifest);
  ASSERT_TRUE(ok.has_value()) << ok.error().message();
  EXPECT_EQ(ok->events, 5u);
  expect_verified(*e);
}

TEST_F(ArchiveTest, ArchiveOfAnotherDataDirectoryIsRefused) {
  std::string manifest;
  {
    auto e = open();
    fill(*e);
    auto a = e->archive(before_february());
    ASSERT_TRUE(a.has_value());
    manifest = a->manifest;
  }
  fs::remove_all(data_dir());
  auto e = open();
  // Customers it does not have.
  auto r = e->restore(manifest);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnprocessable) << r.error().message();
  EXPECT_NE(r.error().message().find("customer 'acme'"), std::string::npos);
  // The customers, but other events under those sequences.
  ingest(*e, "{\"events\":[" + event("x1", "acme", "2025-03-01T00:00:00Z") + "," +
                 event("x2", "beta", "2025-03-01T00:00:00Z") + "]}");
  r = e->restore(manifest);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), StatusCode::kUnprocessable) << r.error().message();
  EXPECT_EQ(events(*e).size(), 2u);
  expect_verified(*e);
}

// Each refusal of a restore by its whole message, nothing changed by any.
TEST_F(ArchiveTest, RestoreRefusalsNameTheirFault) {
  std::string manifest;
  std::string file;
  {
    auto e = open();
    fill(*e);
    auto a = e->archive(before_february());
    ASSERT_TRUE(a.has_value()) << a.error().message();
    manifest = a->manifest;
    file = a->file;
    auto missing = e->restore(out_ + "/missing.jsonl.zst");
    ASSERT_FALSE(missing.has_value());
    EXPECT_EQ(missing.error().message(),
              "no manifest " + out_ + "/missing.manifest.json beside the archive");
    std::ofstream(out_ + "/x.manifest.json") << "{\"format\":\"other\"}";
    auto foreign = e->restore(out_ + "/x.manifest.json");
    ASSERT_FALSE(foreign.has_value());
    EXPECT_EQ(foreign.error().message(), out_ + "/x.manifest.json: not a Tally archive manifest");
  }
  // A directory without the archive's customers.
  fs::remove_all(data_dir());
  {
    auto e = open();
    auto r = e->restore(manifest);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().message(),
              "the archive holds events of customer 'acme', which this data directory does not "
              "have");
    // With them, but no record of the archive.
    Customer c;
    for (const char* id : {"acme", "beta"}) {
      c.id = id;
      ASSERT_TRUE(e->create_customer(c).has_value());
    }
    r = e->restore(manifest);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), StatusCode::kUnprocessable);
    EXPECT_EQ(r.error().message(), "this data directory has no record of archive 1 (" +
                                       fs::path(file).filename().string() +
                                       "): it was made from another data directory");
    EXPECT_TRUE(events(*e).empty());
    // Its own archive 1, another file.
    ingest(*e, "{\"events\":[" + event("z1", "acme", "2025-01-03T00:00:00Z") + "]}");
    ArchiveRequest own = before_february();
    own.out_dir = (dir_ / "own").string();
    auto a = e->archive(own);
    ASSERT_TRUE(a.has_value()) << a.error().message();
    ASSERT_EQ(a->archive_id, 1u);
    r = e->restore(manifest);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().code(), StatusCode::kUnprocessable);
    EXPECT_EQ(r.error().message(), "archive 1 of this data directory is another file than " + file);
    EXPECT_TRUE(events(*e).empty());
    auto back = e->restore(a->manifest);
    ASSERT_TRUE(back.has_value()) << back.error().message();
    EXPECT_EQ(back->archive_id, 1u);
    EXPECT_EQ(back->file, a->file);
    EXPECT_EQ(back->events, 1u);
    EXPECT_EQ(back->already_present, 0u);
    // Restored before: nothing to do.
    auto again = e->restore(a->manifest);
    ASSERT_TRUE(again.has_value()) << again.error().message();
    EXPECT_EQ(again->events, 0u);
    EXPECT_EQ(again->already_present, 1u);
    EXPECT_EQ(events(*e).size(), 1u);
    expect_verified(*e);
  }
}

// A memory store shared by successive engines (a "disk" across restarts) whose writes that
// record an archive fail while `fail` is set: cleanly, or after the write reached the store, as a
// write does when the process dies in it or its fsync fails after the log write (RocksDB then
// finds it in its log at the restart).
class ArchiveWriteFails final : public store::Store {
 public:
  enum class Mode { kOff, kNothingWritten, kWrittenAnyway };

  explicit ArchiveWriteFails(std::shared_ptr<store::Store> inner, Mode* mode)
      : inner_(std::move(inner)), mode_(mode) {}

  Status write(const store::WriteBatch& batch, bool sync) override {
    const bool archive = std::any_of(batch.ops().begin(), batch.ops().end(), [](const auto& op) {
      return op.space == store::Space::kArchive;
    });
    if (!archive || *mode_ == Mode::kOff) {
      return inner_->write(batch, sync);
    }
    if (*mode_ == Mode::kWrittenAnyway) {
      EXPECT_TRUE(inner_->write(batch, sync).ok());
    }
    return Status::io_error("injected: the archive's write failed");
  }

  Result<std::optional<std::string>> get(store::Space space, std::string_view key) const override {
    return inner_->get(space, key);
  }

  Status scan(store::Space space, std::string_view begin, std::string_view end,
              const store::ScanFn& fn) const override {
    return inner_->scan(space, begin, end, fn);
  }

  std::uint64_t size_bytes() const override { return 0; }

  std::string_view name() const override { return "archive-write-fails"; }

 private:
  std::shared_ptr<store::Store> inner_;
  Mode* mode_;
};

// Found by the simulation (tests/simulation, seed 2): an archive whose write answered an error
// removed its files, but such a write may still be in the store after a restart, and then the
// files were the only copy of the archived events.
TEST_F(ArchiveTest, AFailedArchiveWriteKeepsItsFiles) {
  auto disk = std::shared_ptr<store::Store>(store::make_memory_store());
  ArchiveWriteFails::Mode mode = ArchiveWriteFails::Mode::kOff;
  auto reopen = [&]() {
    EngineOptions o;
    o.config_toml = kConfig;
    o.clock = &clock_;
    auto e = Engine::Impl::open(o, std::make_unique<ArchiveWriteFails>(disk, &mode));
    EXPECT_TRUE(e.has_value()) << e.error().message();
    return e ? std::move(*e) : nullptr;
  };
  auto e = reopen();
  fill(*e);
  const std::string before = answers(*e);
  const std::string listed = describe(events(*e));

  // The write did not happen: the events stay hot, and the files left behind change nothing
  // when restored.
  mode = ArchiveWriteFails::Mode::kNothingWritten;
  auto a = e->archive(before_february());
  ASSERT_FALSE(a.has_value());
  EXPECT_EQ(a.error().code(), StatusCode::kIOError);
  mode = ArchiveWriteFails::Mode::kOff;
  std::vector<std::string> manifests;
  for (const auto& f : fs::directory_iterator(out_)) {
    if (f.path().string().ends_with(".manifest.json")) {
      manifests.push_back(f.path().string());
    }
  }
  ASSERT_EQ(manifests.size(), 1u) << "the failed run's files are kept";
  EXPECT_EQ(describe(events(*e)), listed);
  auto r = e->restore(manifests[0]);
  ASSERT_TRUE(r.has_value()) << r.error().message();
  EXPECT_EQ(r->events, 0u);
  EXPECT_EQ(describe(events(*e)), listed);
  expect_verified(*e);

  // The write happened although it answered an error: after the restart the events are
  // archived, and their file is there to restore them from.
  clock_.advance_us(1'000'000);
  mode = ArchiveWriteFails::Mode::kWrittenAnyway;
  a = e->archive(before_february());
  ASSERT_FALSE(a.has_value());
  mode = ArchiveWriteFails::Mode::kOff;
  e.reset();
  e = reopen();
  EXPECT_EQ(events(*e).size(), 3u) << "the January events are archived";
  EXPECT_EQ(answers(*e), before);
  expect_verified(*e);
  manifests.clear();
  for (const auto& f : fs::directory_iterator(out_)) {
    if (f.path().string().ends_with(".manifest.json")) {
      manifests.push_back(f.path().string());
    }
  }
  ASSERT_EQ(manifests.size(), 2u);
  std::uint64_t restored = 0;
  for (const auto& m : manifests) {
    auto rr = e->restore(m);
    ASSERT_TRUE(rr.has_value()) << m << ": " << rr.error().message();
    restored += rr->events;
  }
  EXPECT_EQ(restored, 5u);
  EXPECT_EQ(describe(events(*e)), listed);
  EXPECT_EQ(answers(*e), before);
  expect_verified(*e);
}

TEST_F(ArchiveTest, IngestConcurrentWithArchiveLosesNothing) {
  auto e = open();
  fill(*e);
  // Many old events in many commits, so the archive's scan has work while ingest runs.
  for (int i = 0; i < 200; ++i) {
    std::string body = "{\"events\":[";
    for (int j = 0; j < 20; ++j) {
      body += (j > 0 ? "," : "") +
              event("old" + std::to_string(i * 20 + j), "acme", "2025-01-15T00:00:00Z");
    }
    ingest(*e, body + "]}");
  }
  std::atomic<bool> done{false};
  std::atomic<int> accepted{0};
  std::thread writer([&] {
    for (int i = 0; !done.load() || i < 50; ++i) {
      auto r = e->ingest_json(
          "{\"events\":[" + event("new" + std::to_string(i), "acme", "2025-03-09T00:00:00Z") + "," +
          event("late" + std::to_string(i), "beta", "2025-01-05T00:00:00Z") + "]}");
      ASSERT_TRUE(r.has_value()) << r.error().message();
      accepted += static_cast<int>(r->accepted);
    }
  });
  auto a = e->archive(before_february());
  done = true;
  writer.join();
  ASSERT_TRUE(a.has_value()) << a.error().message();
  EXPECT_GE(a->events, 4005u);
  // Everything accepted is either still stored or in the archive.
  const std::uint64_t listed = [&] {
    std::uint64_t n = 0;
    EventListQuery q;
    q.limit = 1000;
    for (;;) {
      auto page = e->list_events(q);
      EXPECT_TRUE(page.has_value());
      n += page->events.size();
      if (page->next_cursor.empty()) {
        return n;
      }
      q.cursor = page->next_cursor;
    }
  }();
  EXPECT_EQ(listed + a->events, 8u + 4000u + static_cast<std::uint64_t>(accepted.load()));
  expect_verified(*e);
  // The late old events that arrived during the archive go with the next one.
  auto b = e->archive(before_february());
  ASSERT_TRUE(b.has_value());
  EXPECT_EQ(listed - b->events + a->events + b->events,
            8u + 4000u + static_cast<std::uint64_t>(accepted.load()));
  expect_verified(*e);
  ASSERT_TRUE(e->restore(a->manifest).has_value());
  ASSERT_TRUE(e->restore(b->manifest).has_value());
  expect_verified(*e);
}

}  // namespace
}  // namespace tally
