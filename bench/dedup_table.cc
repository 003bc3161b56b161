// tally_dedup_bench: the dedup index's half of a restart, on N entries (default 10 M, as the
// 10 M-event directory of bench/README.md), in the two ways an open can fill it:
//
//   insert_all       what the open does without a dedup table file (or with a dedup window):
//                    every entry of the dedup records inserted into a table sized once (the
//                    store's scan and the records' decoding, which come before it, not counted)
//   read_dedup_file  what it does after a clean stop wrote dedup.checkpoint: the table read back
//                    as one block and checked (engine/dedup_file.h)
//   then_100000_inserts  the entries of the next 100 commits of 1,000 events into each table
//                    (what the first commits after the open pay)
//
// Usage: tally_dedup_bench [--entries N] [--rounds R] [--dir DIR]. One JSON line per figure and
// round; the file is written once, to DIR (default /tmp), and removed at the end.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "engine/dedup_file.h"
#include "engine/dedup_index.h"

namespace {

using tally::engine::DedupIndex;

// Entries inserted after the open, as 100 commits of 1,000 events would.
constexpr std::size_t kLaterEntries = 100'000;

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::size_t entries = 10'000'000;
  int rounds = 3;
  std::string dir = "/tmp";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--entries") {
      entries = std::strtoull(argv[i + 1], nullptr, 10);
    } else if (flag == "--rounds") {
      rounds = std::atoi(argv[i + 1]);
    } else if (flag == "--dir") {
      dir = argv[i + 1];
    } else {
      std::fprintf(stderr, "usage: tally_dedup_bench [--entries N] [--rounds R] [--dir DIR]\n");
      return 2;
    }
  }
  // Entries as the store's records list them: in sequence order, 1,000 customers.
  std::mt19937_64 rng(12);
  std::vector<DedupIndex::Slot> slots;
  slots.reserve(entries);
  for (std::size_t i = 0; i < entries; ++i) {
    slots.push_back(
        DedupIndex::slot_of(rng() | 1, i + 1, static_cast<std::uint32_t>(i % 1000 + 1)));
  }
  const std::string path = tally::engine::dedup_file_path(dir);
  for (int round = 0; round < rounds; ++round) {
    auto start = std::chrono::steady_clock::now();
    DedupIndex inserted;
    inserted.insert_all(slots);
    std::printf(
        "{\"figure\":\"insert_all\",\"round\":%d,\"entries\":%zu,\"table_bytes\":%zu,"
        "\"seconds\":%.3f}\n",
        round, inserted.size(), inserted.bytes(), seconds_since(start));
    if (round == 0) {
      start = std::chrono::steady_clock::now();
      if (tally::Status s = tally::engine::write_dedup_file(path, inserted, entries + 1); !s.ok()) {
        std::fprintf(stderr, "cannot write %s: %s\n", path.c_str(), s.message().c_str());
        return 1;
      }
      std::printf("{\"figure\":\"write_dedup_file\",\"bytes\":%ju,\"seconds\":%.3f}\n",
                  static_cast<std::uintmax_t>(std::filesystem::file_size(path)),
                  seconds_since(start));
    }
    start = std::chrono::steady_clock::now();
    DedupIndex read;
    std::string why;
    const auto seq = tally::engine::read_dedup_file(path, entries + 1, 1001, &read, &why);
    const double took = seconds_since(start);
    if (!seq || read.size() != entries) {
      std::fprintf(stderr, "the file was not used: %s\n", why.c_str());
      return 1;
    }
    std::printf(
        "{\"figure\":\"read_dedup_file\",\"round\":%d,\"entries\":%zu,\"from_file\":%s,"
        "\"seconds\":%.3f}\n",
        round, read.size(), read.table_from_file() ? "true" : "false", took);
    // What the first commits after the open pay (nothing more than usual: a table whose pages
    // the kernel only gave on first write, as a private mapping of the file would, took 13 s).
    for (DedupIndex* index : {&inserted, &read}) {
      start = std::chrono::steady_clock::now();
      for (std::size_t i = 0; i < kLaterEntries; ++i) {
        index->insert(rng() | 1, entries + 1 + i, static_cast<std::uint32_t>(i % 1000 + 1));
      }
      std::printf(
          "{\"figure\":\"then_%zu_inserts\",\"round\":%d,\"into\":\"%s\",\"seconds\":%.3f}\n",
          kLaterEntries, round, index == &read ? "read_dedup_file" : "insert_all",
          seconds_since(start));
    }
    std::fflush(stdout);
  }
  std::filesystem::remove(path);
  return 0;
}
