// The deterministic simulation in the test suite: the simulated disk's own guarantees, a few
// hundred seeds of the workload (simulation.h), that a seed replays exactly, and that the
// simulation catches a disk that loses acknowledged writes.
//
// Environment (scripts/simulate.sh sets them):
//   TALLY_SIM_SEEDS       how many seeds Simulation.Seeds runs (default kSeedsDefault)
//   TALLY_SIM_FIRST_SEED  the first of them (default 1)
//   TALLY_SIM_SEED        run only this seed (a reproduction)
//   TALLY_SIM_STEPS       workload steps per seed (default SimOptions::steps)
//   TALLY_SIM_LOG=1       print every step of every seed to stderr
#include "simulation/simulation.h"

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "simulation/sim_disk.h"

namespace tally::sim {
namespace {

constexpr std::uint64_t kSeedsDefault = 200;

std::uint64_t env_u64(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    return fallback;
  }
  return std::strtoull(v, nullptr, 10);
}

std::optional<std::string> read(store::Store& s, const std::string& key) {
  auto r = s.get(store::Space::kMeta, key);
  EXPECT_TRUE(r.has_value());
  return r ? *r : std::nullopt;
}

Status put(store::Store& s, const std::string& key, const std::string& value, bool sync) {
  store::WriteBatch wb;
  wb.put(store::Space::kMeta, key, value);
  return s.write(wb, sync);
}

// ---- the simulated disk ---------------------------------------------------------------------

TEST(SimDisk, SyncedWritesSurviveACrashAndUnsyncedOnesSurviveAsAPrefix) {
  // Over many seeds: every synced write survives; of the unsynced ones after the last sync, a
  // prefix survives (never a later one without an earlier one), and sometimes none, sometimes
  // all.
  bool saw_none = false;
  bool saw_all = false;
  for (std::uint64_t seed = 1; seed <= 64; ++seed) {
    Disk disk(seed, DiskFaults{});
    auto s = disk.store();
    ASSERT_TRUE(put(*s, "a", "1", true).ok());
    ASSERT_TRUE(put(*s, "b", "1", false).ok());
    ASSERT_TRUE(put(*s, "a", "2", true).ok());  // syncs "b" too
    ASSERT_TRUE(put(*s, "u1", "x", false).ok());
    ASSERT_TRUE(put(*s, "u2", "x", false).ok());
    ASSERT_TRUE(put(*s, "a", "3", false).ok());
    EXPECT_EQ(read(*s, "a"), "3");  // reads see every write before the crash
    disk.crash();
    EXPECT_FALSE(put(*s, "late", "x", true).ok()) << "a dead process writes nothing";
    s.reset();
    disk.recover();
    s = disk.store();
    EXPECT_EQ(read(*s, "b"), "1");
    EXPECT_FALSE(read(*s, "late").has_value());
    const bool u1 = read(*s, "u1").has_value();
    const bool u2 = read(*s, "u2").has_value();
    const std::string a = read(*s, "a").value_or("");
    const bool a3 = a == "3";
    EXPECT_TRUE(a == "2" || a3) << a;
    EXPECT_TRUE(u1 || !u2) << "seed " << seed << ": a later write survived an earlier one";
    EXPECT_TRUE(u2 || !a3) << "seed " << seed << ": a later write survived an earlier one";
    saw_none = saw_none || !u1;
    saw_all = saw_all || a3;
  }
  EXPECT_TRUE(saw_none);
  EXPECT_TRUE(saw_all);
}

TEST(SimDisk, AWriteTheProcessDiesInIsKeptWholeOrLostWhole) {
  DiskFaults f;
  f.write_crash_ppm = 1'000'000;
  bool saw_kept = false;
  bool saw_lost = false;
  for (std::uint64_t seed = 1; seed <= 32; ++seed) {
    Disk disk(seed, f);
    disk.set_faults_enabled(false);
    auto s = disk.store();
    ASSERT_TRUE(put(*s, "k0", "old", true).ok());
    disk.set_faults_enabled(true);
    store::WriteBatch wb;
    wb.put(store::Space::kMeta, "k0", "new");
    wb.put(store::Space::kMeta, "k1", "new");
    wb.put(store::Space::kEvents, "k2", "new");
    EXPECT_EQ(s->write(wb, true).code(), StatusCode::kIOError);
    EXPECT_TRUE(disk.crashed());
    EXPECT_EQ(read(*s, "k0"), "old") << "the process never saw its write applied";
    s.reset();
    disk.recover();
    s = disk.store();
    const bool k0 = read(*s, "k0") == "new";
    const bool k1 = read(*s, "k1").has_value();
    auto k2 = s->get(store::Space::kEvents, "k2");
    ASSERT_TRUE(k2.has_value());
    EXPECT_EQ(k0, k1);
    EXPECT_EQ(k0, k2->has_value());
    saw_kept = saw_kept || k0;
    saw_lost = saw_lost || !k0;
  }
  EXPECT_TRUE(saw_kept);
  EXPECT_TRUE(saw_lost);
}

TEST(SimDisk, AFailedWriteAppliesNothingAndTheStoreGoesOn) {
  DiskFaults f;
  f.write_fail_ppm = 1'000'000;
  Disk disk(3, f);
  auto s = disk.store();
  EXPECT_EQ(put(*s, "k", "v", true).code(), StatusCode::kIOError);
  EXPECT_FALSE(read(*s, "k").has_value());
  EXPECT_FALSE(disk.crashed());
  disk.set_faults_enabled(false);
  EXPECT_TRUE(put(*s, "k", "v", true).ok());
  EXPECT_EQ(read(*s, "k"), "v");
  EXPECT_EQ(disk.counters().failed, 1u);
}

TEST(SimDisk, HeldWritesAreRefusedByACrash) {
  Disk disk(4, DiskFaults{});
  auto s = disk.store();
  disk.hold_writes();
  Status result;
  std::thread writer([&] { result = put(*s, "k", "v", true); });
  disk.crash();
  writer.join();
  EXPECT_EQ(result.code(), StatusCode::kIOError);
  s.reset();
  disk.recover();
  s = disk.store();
  EXPECT_FALSE(read(*s, "k").has_value());
  EXPECT_TRUE(put(*s, "k", "v", true).ok()) << "recovery ends the hold";
}

// ---- the simulation ---------------------------------------------------------------------------

TEST(Simulation, Seeds) {
  const std::uint64_t only = env_u64("TALLY_SIM_SEED", 0);
  const std::uint64_t first = only != 0 ? only : env_u64("TALLY_SIM_FIRST_SEED", 1);
  const std::uint64_t count = only != 0 ? 1 : env_u64("TALLY_SIM_SEEDS", kSeedsDefault);
  SimOptions base;
  base.faults = default_faults();
  base.steps = static_cast<std::uint32_t>(env_u64("TALLY_SIM_STEPS", base.steps));
  base.log = env_u64("TALLY_SIM_LOG", 0) != 0;
  std::uint64_t failures = 0;
  std::uint64_t crashes = 0;
  std::uint64_t events = 0;
  std::uint64_t checks = 0;
  std::uint64_t audits = 0;
  for (std::uint64_t seed = first; seed < first + count; ++seed) {
    SimOptions o = base;
    o.seed = seed;
    const SimReport r = run_simulation(o);
    crashes += r.crashes;
    events += r.events_acknowledged;
    checks += r.checks;
    audits += r.audits;
    if (!r.ok) {
      ++failures;
      std::printf("failing seed %llu: %s\n", static_cast<unsigned long long>(seed),
                  r.failure.c_str());
      ADD_FAILURE() << describe_failure(o, r);
    }
  }
  std::printf("seeds %llu failures %llu (crashes %llu, events %llu, checks %llu, audits %llu)\n",
              static_cast<unsigned long long>(count), static_cast<unsigned long long>(failures),
              static_cast<unsigned long long>(crashes), static_cast<unsigned long long>(events),
              static_cast<unsigned long long>(checks), static_cast<unsigned long long>(audits));
  std::fflush(stdout);
}

TEST(Simulation, ASeedReplaysExactly) {
  for (std::uint64_t seed : {11u, 12u}) {
    SimOptions o;
    o.seed = seed;
    o.faults = default_faults();
    o.crash_ppm = 60'000;
    const SimReport a = run_simulation(o);
    const SimReport b = run_simulation(o);
    ASSERT_TRUE(a.ok) << describe_failure(o, a);
    EXPECT_EQ(a.trace_hash, b.trace_hash) << "seed " << seed << " ran differently twice";
    EXPECT_EQ(a.crashes, b.crashes);
    EXPECT_EQ(a.disk.writes, b.disk.writes);
    EXPECT_GT(a.crashes, 1u) << "the seed should crash more than at its end";
    SimOptions other = o;
    other.seed = seed + 1000;
    EXPECT_NE(run_simulation(other).trace_hash, a.trace_hash);
  }
}

TEST(Simulation, ExercisesEveryFault) {
  // Over the seeds of the suite's first few, each kind of fault happens: otherwise the
  // simulation would pass without testing what it claims to.
  DiskCounters total;
  for (std::uint64_t seed = 1; seed <= 12; ++seed) {
    SimOptions o;
    o.seed = seed;
    o.faults = default_faults();
    const SimReport r = run_simulation(o);
    ASSERT_TRUE(r.ok) << describe_failure(o, r);
    total.failed += r.disk.failed;
    total.crashed_in_write += r.disk.crashed_in_write;
    total.torn_applied += r.disk.torn_applied;
    total.unsynced_lost += r.disk.unsynced_lost;
    total.crashes += r.disk.crashes;
  }
  EXPECT_GT(total.failed, 0u);
  EXPECT_GT(total.crashed_in_write, 0u);
  EXPECT_GT(total.torn_applied, 0u);
  EXPECT_LT(total.torn_applied, total.crashed_in_write);
  EXPECT_GT(total.crashes, 12u);
  EXPECT_GT(total.unsynced_lost, 0u) << "seeds with fsync = false lose unsynced writes";
}

TEST(Simulation, CatchesADiskThatLiesAboutFsync) {
  // With a disk that acknowledges fsyncs it did not do, acknowledged events are lost at a crash:
  // the simulation must say so (and name the loss).
  std::uint64_t caught = 0;
  std::string example;
  for (std::uint64_t seed = 1; seed <= 10; ++seed) {
    SimOptions o;
    o.seed = seed;
    o.faults = DiskFaults{};
    o.faults.lie_sync_ppm = 1'000'000;
    o.crash_ppm = 50'000;
    const SimReport r = run_simulation(o);
    if (!r.ok) {
      ++caught;
      example = r.failure;
    }
  }
  EXPECT_GE(caught, 5u) << "a lying fsync went unnoticed";
  EXPECT_NE(example.find("lost"), std::string::npos) << example;
}

}  // namespace
}  // namespace tally::sim
