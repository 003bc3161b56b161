// Archive files: raw events moved out of the hot store, as zstd-compressed JSON Lines, and
// the manifest beside each file. docs/operations.md ("Archiving") describes the format.
//
// Both directions stream: the writer compresses line by line and the reader decompresses a
// buffer at a time, so memory stays flat whatever the size of the file. The SHA-256 of the
// compressed bytes is computed on the way, so checking a file costs one read.
//
// Thread safety: none; one object per thread.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <tally/status.h>
#include <tally/types.h>

#include "common/crypto.h"
#include "core/decimal.h"
#include "engine/codec.h"

namespace tally::engine {

inline constexpr int kArchiveFormatVersion = 1;
// A longer line is refused when reading: no event encodes to anything near it.
inline constexpr std::size_t kArchiveLineBytesMax = 16u << 20;

// One archived event with everything its block held, owning its strings.
struct ArchivedEvent {
  std::string customer;
  std::uint64_t seq = 0;
  std::string id;
  std::string type;
  TimeUs time_us = 0;
  TimeUs received_at_us = 0;
  bool flagged = false;
  bool priced = false;
  core::Decimal cost;
  core::Decimal credits;
  std::uint32_t quantity = 1;  // core::Event::quantity

  struct Prop {
    core::PropKind kind = core::PropKind::kString;
    std::string key;
    std::string text;
  };

  std::vector<Prop> props;
};

// The JSON line of an event read from a block (no trailing newline).
std::string encode_archive_line(std::string_view customer, TimeUs received_at_us,
                                const BlockEvent& e);
// Errors: kInvalidArgument naming what is wrong with the line.
Status decode_archive_line(std::string_view line, ArchivedEvent* out);

struct ArchiveManifest {
  int format_version = kArchiveFormatVersion;
  std::uint64_t archive_id = 0;
  std::string file;    // the data file's name, in the manifest's directory
  std::string sha256;  // of the data file, lower-case hex
  std::uint64_t bytes = 0;
  std::uint64_t events = 0;
  TimeUs cutoff_us = 0;
  TimeUs from_us = 0;
  TimeUs to_us = 0;
  std::uint64_t first_seq = 0;
  std::uint64_t last_seq = 0;
  std::vector<std::string> customers;  // sorted
  TimeUs created_at_us = 0;
};

std::string encode_manifest(const ArchiveManifest& m);
// Errors: kInvalidArgument (not a manifest, or an unknown format version).
Status decode_manifest(std::string_view text, ArchiveManifest* out);

// Writes a new file (refusing to replace one), compressing as it goes.
class ArchiveWriter {
 public:
  ArchiveWriter();
  ~ArchiveWriter();  // an unfinished file is closed and removed
  ArchiveWriter(const ArchiveWriter&) = delete;
  ArchiveWriter& operator=(const ArchiveWriter&) = delete;

  Status open(const std::string& path);      // kIOError, kAlreadyExists
  Status write_line(std::string_view line);  // appends line + '\n'
  // Ends the zstd frame, fsyncs and closes the file.
  Status finish();

  std::uint64_t bytes() const { return bytes_; }

  std::string sha256_hex() { return common::to_hex(sha_.finish()); }  // after finish()

 private:
  Status drain(bool end);  // compresses `pending_`, writes the output
  Status write_out(const char* data, std::size_t n);

  std::string path_;
  int fd_ = -1;
  void* cctx_ = nullptr;  // ZSTD_CCtx
  std::string pending_;   // uncompressed lines not yet given to zstd
  std::string out_;
  common::Sha256 sha_;
  std::uint64_t bytes_ = 0;
};

// Reads a file back line by line, checking the zstd frame and computing the checksum.
class ArchiveReader {
 public:
  ArchiveReader();
  ~ArchiveReader();
  ArchiveReader(const ArchiveReader&) = delete;
  ArchiveReader& operator=(const ArchiveReader&) = delete;

  Status open(const std::string& path);  // kNotFound, kIOError
  // The next line (without '\n') into *line; false at the end of the file.
  // Errors: kIOError, kCorruption (not zstd, truncated, a line too long).
  Result<bool> next_line(std::string* line);

  // After next_line returned false.
  std::uint64_t bytes() const { return bytes_; }

  std::string sha256_hex() { return common::to_hex(sha_.finish()); }

 private:
  Status fill();  // decompresses more into text_

  int fd_ = -1;
  void* dctx_ = nullptr;  // ZSTD_DCtx
  std::string in_;
  std::size_t in_pos_ = 0;
  std::string text_;  // decompressed, not yet returned
  std::size_t text_pos_ = 0;
  bool eof_ = false;
  bool frame_done_ = true;  // the last decompress call ended a frame
  common::Sha256 sha_;
  std::uint64_t bytes_ = 0;
};

// Writes `text` to `path` through a temporary file, fsyncs it and the directory, then renames.
Status write_file_synced(const std::string& path, std::string_view text);
// The same for a file made of `parts`, one after another (a large block written where it is,
// without first copying it beside a header).
Status write_file_synced(const std::string& path, std::span<const std::string_view> parts);
// Reads a whole small file. Errors: kNotFound, kIOError, kInvalidArgument (over `bytes_max`).
Result<std::string> read_small_file(const std::string& path, std::size_t bytes_max);
// fsyncs a directory, so the names of new files in it are durable.
Status sync_dir(const std::string& dir);

}  // namespace tally::engine
