// Fuzzes one line of an archive file (engine::decode_archive_line), as `tally restore` reads it
// from a file an operator may have edited or damaged. A line that decodes must encode back
// (encode_archive_line, the archiver's writer) to a line that decodes to the same event: what
// a restore puts back is what the archive said.
#include "engine/archive_file.h"
#include "fuzz_util.h"

namespace {

using tally::engine::ArchivedEvent;

bool same(const ArchivedEvent& a, const ArchivedEvent& b) {
  if (a.customer != b.customer || a.seq != b.seq || a.id != b.id || a.type != b.type ||
      a.time_us != b.time_us || a.received_at_us != b.received_at_us || a.flagged != b.flagged ||
      a.priced != b.priced || a.props.size() != b.props.size()) {
    return false;
  }
  if (a.priced && (a.cost != b.cost || a.credits != b.credits)) {
    return false;
  }
  for (std::size_t i = 0; i < a.props.size(); ++i) {
    if (a.props[i].kind != b.props[i].kind || a.props[i].key != b.props[i].key ||
        a.props[i].text != b.props[i].text) {
      return false;
    }
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view line = tally::fuzz::as_text(data, size);
  ArchivedEvent e;
  const tally::Status s = tally::engine::decode_archive_line(line, &e);
  if (!s.ok()) {
    FUZZ_EXPECT(s.code() == tally::StatusCode::kInvalidArgument, s.message());
    return 0;
  }
  FUZZ_EXPECT(e.seq != 0, "a decoded line has a sequence");
  tally::engine::BlockEvent b;
  b.seq = e.seq;
  b.time_us = e.time_us;
  b.flagged = e.flagged;
  b.id = e.id;
  b.type = e.type;
  for (const auto& p : e.props) {
    b.props.push_back({p.kind, p.key, p.text});
  }
  b.priced = e.priced;
  b.cost = e.cost;
  b.credits = e.credits;
  const std::string again = tally::engine::encode_archive_line(e.customer, e.received_at_us, b);
  ArchivedEvent e2;
  const tally::Status s2 = tally::engine::decode_archive_line(again, &e2);
  FUZZ_EXPECT(s2.ok(), s2.message() + " for " + again);
  FUZZ_EXPECT(same(e, e2), "the re-encoded line " + again + " differs from " + std::string(line));
  return 0;
}
