// The deterministic simulation of Tally's engine (issue #16, "Proof"; TigerBeetle's VOPR is the
// model): one seed drives a random workload of ingest, duplicates, late events, checks,
// reservations, wallet transactions, archive and restore, clock advances and crashes against an
// Engine on a fault-injecting disk (sim_disk.h), and every answer is compared with a small
// in-memory model of what was acknowledged. After each crash the engine is reopened on what
// the disk kept, every customer's events, totals, wallet and limits are compared with the
// model, and Engine::verify() must find no difference.
//
// Determinism: every random choice comes from the seed (the workload's PRNG and the disk's), time
// from a FakeClock, and the workload runs on one thread, waiting (Engine::flush) for the commit
// thread after each step, so the engine's writes reach the disk in the same order every run and
// a failing seed replays exactly. The trace hash says so: two runs of a seed give the same hash.
//
// docs/operations.md ("Simulation") describes the faults, the checks and how to run a seed.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "simulation/sim_disk.h"

namespace tally::sim {

struct SimOptions {
  std::uint64_t seed = 1;
  std::uint32_t steps = 150;         // workload steps (a final crash and check always follow)
  DiskFaults faults;                 // default_faults() unless a test says otherwise
  std::uint32_t crash_ppm = 25'000;  // chance of a crash between two steps
  std::string work_dir;  // for archive files; "" = a fresh temporary directory, removed after
  bool log = false;      // print every step to stderr
};

// The faults a correct engine must survive: failed writes, crashes inside a write (the batch
// kept whole or lost whole), and sync = false writes lost at a crash.
DiskFaults default_faults();

struct SimReport {
  bool ok = true;
  std::string failure;                  // the first difference found, with its step
  std::uint64_t trace_hash = 0;         // of every step and answer: equal for equal seeds
  std::vector<std::string> trace_tail;  // the last steps before the end (or the failure)
  std::uint32_t steps = 0;
  std::uint32_t crashes = 0;
  std::uint64_t events_acknowledged = 0;  // distinct events the model holds at the end
  std::uint32_t checks = 0;
  std::uint32_t audits = 0;
  std::string durability;  // the seed's check_durability
  DiskCounters disk;
};

SimReport run_simulation(const SimOptions& options);

// A failure's report for people: the seed, the difference, the last steps, and the command that
// replays it.
std::string describe_failure(const SimOptions& options, const SimReport& report);

}  // namespace tally::sim
