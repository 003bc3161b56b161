// Byte coding primitives, after LevelDB's util/coding.h: LEB128 varints, zigzag signed varints,
// length-prefixed bytes, big-endian fixed-width integers (so that byte order equals numeric
// order in keys) and 128-bit integers, and a cursor that reads them back.
//
// Guarantees: every put_* appends to `out` and never fails; every Reader::get_* returns false,
// consuming an unspecified part of the input, when the input is short or malformed (a varint
// longer than 10 bytes, a length beyond the input). Nothing here allocates for a length read
// from the input before checking it against what is left. These formats are on disk
// (docs/storage.md): changing one is a change of Tally's storage format.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace tally::common {

void put_varint(std::string& out, std::uint64_t v);    // 1..10 bytes, 7 bits each, low first
void put_zigzag(std::string& out, std::int64_t v);     // 0, -1, 1, -2, ... as 0, 1, 2, 3, ...
void put_bytes(std::string& out, std::string_view s);  // varint length + bytes
void put_be32(std::string& out, std::uint32_t v);
void put_be64(std::string& out, std::uint64_t v);
void put_i128(std::string& out, __int128 v);  // two's complement, big-endian, 16 bytes

std::uint32_t read_be32(std::string_view s);  // REQUIRES: s.size() >= 4
std::uint64_t read_be64(std::string_view s);  // REQUIRES: s.size() >= 8

// A cursor over an encoded value. Every get_* returns false when the input is short or bad.
// Not thread-safe; it does not own the bytes it reads, which must outlive it.
class Reader {
 public:
  explicit Reader(std::string_view in) : in_(in) {}

  bool get_varint(std::uint64_t* v);
  bool get_zigzag(std::int64_t* v);
  bool get_bytes(std::string_view* s);  // a view into the input
  bool get_u8(std::uint8_t* v);
  bool get_be32(std::uint32_t* v);
  bool get_be64(std::uint64_t* v);
  bool get_i128(__int128* v);
  bool get_raw(std::size_t n, std::string_view* s);  // a view into the input

  bool done() const { return in_.empty(); }

  // Bytes not read yet: a count read from the value is checked against it before anything is
  // allocated for that many items.
  std::size_t remaining() const { return in_.size(); }

 private:
  std::string_view in_;
};

// The 128-bit integer of put_i128, read by `r` (for callers holding a Reader).
inline bool get_i128(Reader& r, __int128* v) {
  return r.get_i128(v);
}

}  // namespace tally::common
