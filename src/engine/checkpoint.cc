// The aggregates checkpoint: at a clean stop the engine writes its in-memory series (packed as
// they are) and group totals to `<data_dir>/aggregates.checkpoint`, so the next open reads one
// file instead of every minute aggregate of the store and rebuilding the hours and days from
// them. The store stays the truth: the file is used only when it was written at the store's
// current sequence numbers for the same meters, and a writer deletes it as it opens, so a crash
// (which writes none) falls back to the full load. `tally verify` checks the stored records
// against the events whichever way memory was filled.
//
// Format (common/coding primitives): "TALLYCKP", varint version 1, varint next_seq, varint
// next_customer, the meters (varint count; key and fingerprint as bytes each), the group texts
// (varint count; bytes each, in id order), varint aggregates_live, then per meter the series
// (varint count; customer number, group id, Series::save) and the group totals (varint count;
// group id, GroupTotals::save), and last the SHA-256 of everything before it (32 bytes).
#include <filesystem>
#include <system_error>

#include "common/crypto.h"
#include "engine/archive_file.h"
#include "engine/engine_impl.h"

namespace tally {

namespace {

constexpr std::string_view kMagic = "TALLYCKP";
constexpr std::uint64_t kVersion = 1;
constexpr std::size_t kDigestBytes = 32;
constexpr std::size_t kCheckpointBytesMax = std::size_t{64} << 30;

}  // namespace

Status Engine::Impl::save_checkpoint() const {
  std::string out(kMagic);
  common::put_varint(out, kVersion);
  common::put_varint(out, next_seq);
  common::put_varint(out, next_customer);
  common::put_varint(out, catalog->meters.size());
  for (const auto& m : catalog->meters) {
    common::put_bytes(out, m.spec.key);
    common::put_bytes(out, m.spec.fingerprint());
  }
  common::put_varint(out, group_texts.size());
  for (const auto& g : group_texts) {
    common::put_bytes(out, g);
  }
  common::put_varint(out, aggregates_live);
  for (const auto& ma : meter_aggregates) {
    std::size_t n = 0;
    for (const auto& [cnum, by_group] : ma.series) {
      n += by_group.size();
    }
    common::put_varint(out, n);
    for (const auto& [cnum, by_group] : ma.series) {
      for (const auto& [gid, series] : by_group) {
        common::put_varint(out, cnum);
        common::put_varint(out, gid);
        series.save(out);
      }
    }
    common::put_varint(out, ma.totals.size());
    for (const auto& [gid, totals] : ma.totals) {
      common::put_varint(out, gid);
      totals.save(out);
    }
  }
  out += common::sha256(out);
  return engine::write_file_synced(checkpoint_path, out);
}

bool Engine::Impl::load_checkpoint() {
  if (checkpoint_path.empty()) {
    return false;
  }
  auto text = engine::read_small_file(checkpoint_path, kCheckpointBytesMax);
  if (!read_only) {
    std::error_code ignored;
    std::filesystem::remove(checkpoint_path, ignored);
  }
  if (!text || text->size() < kMagic.size() + kDigestBytes ||
      text->compare(0, kMagic.size(), kMagic) != 0) {
    return false;
  }
  const std::string_view body(text->data(), text->size() - kDigestBytes);
  if (common::sha256(body) != std::string_view(*text).substr(body.size())) {
    return false;
  }
  common::Reader in(body.substr(kMagic.size()));
  std::uint64_t version = 0;
  std::uint64_t seq = 0;
  std::uint64_t customer = 0;
  std::uint64_t meters = 0;
  if (!in.get_varint(&version) || version != kVersion || !in.get_varint(&seq) || seq != next_seq ||
      !in.get_varint(&customer) || customer != next_customer || !in.get_varint(&meters) ||
      meters != catalog->meters.size()) {
    return false;
  }
  for (const auto& m : catalog->meters) {
    std::string_view key;
    std::string_view fingerprint;
    if (!in.get_bytes(&key) || !in.get_bytes(&fingerprint) || key != m.spec.key ||
        fingerprint != m.spec.fingerprint()) {
      return false;
    }
  }
  // Group ids are the file's; groups interned already (none, today) keep theirs.
  std::uint64_t groups = 0;
  if (!in.get_varint(&groups) || groups > in.remaining()) {
    return false;
  }
  std::vector<std::uint32_t> group_of(groups);
  for (auto& g : group_of) {
    std::string_view text_of_group;
    if (!in.get_bytes(&text_of_group)) {
      return false;
    }
    g = intern_group(text_of_group);
  }
  std::uint64_t live = 0;
  if (!in.get_varint(&live)) {
    return false;
  }
  std::vector<engine::MeterAggregates> loaded(catalog->meters.size());
  auto group_at = [&](std::uint64_t file_gid, std::uint32_t* gid) {
    if (file_gid >= group_of.size()) {
      return false;
    }
    *gid = group_of[file_gid];
    return true;
  };
  for (auto& ma : loaded) {
    std::uint64_t n = 0;
    if (!in.get_varint(&n) || n > in.remaining()) {
      return false;
    }
    for (std::uint64_t i = 0; i < n; ++i) {
      std::uint64_t cnum = 0;
      std::uint64_t file_gid = 0;
      std::uint32_t gid = 0;
      if (!in.get_varint(&cnum) || cnum > UINT32_MAX || !in.get_varint(&file_gid) ||
          !group_at(file_gid, &gid) ||
          !ma.series[static_cast<std::uint32_t>(cnum)][gid].restore(in)) {
        return false;
      }
    }
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
  if (!in.done()) {
    return false;
  }
  meter_aggregates = std::move(loaded);
  aggregates_live = live;
  return true;
}

}  // namespace tally
