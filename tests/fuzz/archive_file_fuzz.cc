// Fuzzes archive files (engine::ArchiveReader, then decode_archive_line per line): the zstd
// stream, its frames, line splitting and the checksum computed on the way.
//
// The first byte picks the shape: 0 = the rest is the file as is (zstd or not); 1 = the rest is
// compressed into one frame by this target, so the line handling behind zstd is reached; 2 =
// the same in two frames, split at the second byte's fraction of the text. When the reader
// reaches the end of the file, it must have counted every byte and computed the file's SHA-256.
#include <cstdlib>
#include <string>

#include <unistd.h>
#include <zstd.h>

#include "common/crypto.h"
#include "engine/archive_file.h"
#include "fuzz_util.h"

namespace {

constexpr int kLinesMax = 100'000;  // a bound on one input's work, far above any corpus file

std::string compress(std::string_view text) {
  std::string out(ZSTD_compressBound(text.size()), '\0');
  const std::size_t n = ZSTD_compress(out.data(), out.size(), text.data(), text.size(), 1);
  FUZZ_EXPECT(!ZSTD_isError(n), ZSTD_getErrorName(n));
  out.resize(n);
  return out;
}

// One file per process, rewritten for each input.
const std::string& file_path() {
  static const std::string path = [] {
    const char* dir = std::getenv("TMPDIR");
    std::string templ = std::string(dir != nullptr ? dir : "/tmp") + "/tally-fuzz-archive-XXXXXX";
    const int fd = ::mkstemp(templ.data());
    FUZZ_EXPECT(fd >= 0, "mkstemp " + templ);
    ::close(fd);
    return templ;
  }();
  return path;
}

void write_file(const std::string& path, std::string_view bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  FUZZ_EXPECT(f != nullptr, path);
  FUZZ_EXPECT(std::fwrite(bytes.data(), 1, bytes.size(), f) == bytes.size(), path);
  std::fclose(f);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2) {
    return 0;
  }
  const std::string_view rest = tally::fuzz::as_text(data + 1, size - 1);
  std::string file;
  switch (data[0] % 3) {
    case 0:
      file.assign(rest);
      break;
    case 1:
      file = compress(rest);
      break;
    default: {
      const std::string_view text = rest.substr(1);
      const std::size_t split = text.size() * static_cast<unsigned char>(rest[0]) / 256;
      file = compress(text.substr(0, split)) + compress(text.substr(split));
      break;
    }
  }
  const std::string& path = file_path();
  write_file(path, file);

  tally::engine::ArchiveReader reader;
  const tally::Status opened = reader.open(path);
  FUZZ_EXPECT(opened.ok(), opened.message());
  std::string line;
  for (int i = 0; i < kLinesMax; ++i) {
    tally::Result<bool> more = reader.next_line(&line);
    if (!more) {
      FUZZ_EXPECT(more.error().code() == tally::StatusCode::kCorruption, more.error().message());
      return 0;
    }
    if (!*more) {
      FUZZ_EXPECT(reader.bytes() == file.size(),
                  std::to_string(reader.bytes()) + " of " + std::to_string(file.size()));
      FUZZ_EXPECT(reader.sha256_hex() == tally::common::to_hex(tally::common::sha256(file)),
                  "checksum");
      return 0;
    }
    FUZZ_EXPECT(line.find('\n') == std::string::npos, "a line holds no newline");
    tally::engine::ArchivedEvent e;
    (void)tally::engine::decode_archive_line(line, &e);
  }
  return 0;
}
