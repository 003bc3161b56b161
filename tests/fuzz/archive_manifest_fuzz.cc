// Fuzzes archive manifests (engine::decode_manifest), the JSON file beside each archive that
// `tally restore` and the engine's archive records read. A manifest that decodes names a plain
// file (no '/'), a 64-character checksum and a non-zero id, and encodes back (encode_manifest)
// to a manifest that decodes to the same values.
#include "engine/archive_file.h"
#include "fuzz_util.h"

namespace {

using tally::engine::ArchiveManifest;

bool same(const ArchiveManifest& a, const ArchiveManifest& b) {
  return a.format_version == b.format_version && a.archive_id == b.archive_id && a.file == b.file &&
         a.sha256 == b.sha256 && a.bytes == b.bytes && a.events == b.events &&
         a.cutoff_us == b.cutoff_us && a.from_us == b.from_us && a.to_us == b.to_us &&
         a.first_seq == b.first_seq && a.last_seq == b.last_seq && a.customers == b.customers &&
         a.created_at_us == b.created_at_us;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text = tally::fuzz::as_text(data, size);
  ArchiveManifest m;
  const tally::Status s = tally::engine::decode_manifest(text, &m);
  if (!s.ok()) {
    FUZZ_EXPECT(s.code() == tally::StatusCode::kInvalidArgument, s.message());
    return 0;
  }
  FUZZ_EXPECT(!m.file.empty() && m.file.find('/') == std::string::npos, m.file);
  FUZZ_EXPECT(m.sha256.size() == 64 && m.archive_id != 0, m.sha256);
  const std::string again = tally::engine::encode_manifest(m);
  ArchiveManifest m2;
  const tally::Status s2 = tally::engine::decode_manifest(again, &m2);
  FUZZ_EXPECT(s2.ok(), s2.message() + " for " + again);
  FUZZ_EXPECT(same(m, m2), "the re-encoded manifest " + again + " differs");
  return 0;
}
