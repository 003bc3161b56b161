// Byte coding primitives (coding.h), after LevelDB's util/coding.cc.
#include "common/coding.h"

namespace tally::common {

// The bytes are made in a local buffer and appended once: appending them one by one checked the
// string's capacity per byte, and the commit thread writes several varints per event.
void put_varint(std::string& out, std::uint64_t v) {
  char buf[10];
  std::size_t n = 0;
  while (v >= 0x80) {
    buf[n++] = static_cast<char>((v & 0x7F) | 0x80);
    v >>= 7;
  }
  buf[n++] = static_cast<char>(v);
  out.append(buf, n);
}

void put_zigzag(std::string& out, std::int64_t v) {
  put_varint(out, (static_cast<std::uint64_t>(v) << 1) ^ static_cast<std::uint64_t>(v >> 63));
}

void put_bytes(std::string& out, std::string_view s) {
  put_varint(out, s.size());
  out.append(s);
}

void put_be32(std::string& out, std::uint32_t v) {
  char buf[4];
  for (int i = 0; i < 4; ++i) {
    buf[i] = static_cast<char>((v >> (24 - 8 * i)) & 0xFF);
  }
  out.append(buf, sizeof(buf));
}

void put_be64(std::string& out, std::uint64_t v) {
  char buf[8];
  for (int i = 0; i < 8; ++i) {
    buf[i] = static_cast<char>((v >> (56 - 8 * i)) & 0xFF);
  }
  out.append(buf, sizeof(buf));
}

std::uint32_t read_be32(std::string_view s) {
  std::uint32_t v = 0;
  for (int i = 0; i < 4; ++i) {
    v = (v << 8) | static_cast<unsigned char>(s[static_cast<std::size_t>(i)]);
  }
  return v;
}

std::uint64_t read_be64(std::string_view s) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) {
    v = (v << 8) | static_cast<unsigned char>(s[static_cast<std::size_t>(i)]);
  }
  return v;
}

bool Reader::get_varint(std::uint64_t* v) {
  std::uint64_t result = 0;
  for (int shift = 0; shift <= 63 && !in_.empty(); shift += 7) {
    auto byte = static_cast<unsigned char>(in_.front());
    in_.remove_prefix(1);
    if (shift == 63 && byte > 1) {
      return false;  // a tenth byte holds only bit 63: anything more overflows 64 bits
    }
    result |= static_cast<std::uint64_t>(byte & 0x7F) << shift;
    if ((byte & 0x80) == 0) {
      *v = result;
      return true;
    }
  }
  return false;
}

bool Reader::get_zigzag(std::int64_t* v) {
  std::uint64_t u = 0;
  if (!get_varint(&u)) {
    return false;
  }
  *v = static_cast<std::int64_t>(u >> 1) ^ -static_cast<std::int64_t>(u & 1);
  return true;
}

bool Reader::get_bytes(std::string_view* s) {
  std::uint64_t n = 0;
  if (!get_varint(&n) || n > in_.size()) {
    return false;
  }
  *s = in_.substr(0, n);
  in_.remove_prefix(n);
  return true;
}

bool Reader::get_u8(std::uint8_t* v) {
  if (in_.empty()) {
    return false;
  }
  *v = static_cast<std::uint8_t>(in_.front());
  in_.remove_prefix(1);
  return true;
}

bool Reader::get_be32(std::uint32_t* v) {
  if (in_.size() < 4) {
    return false;
  }
  *v = read_be32(in_);
  in_.remove_prefix(4);
  return true;
}

bool Reader::get_be64(std::uint64_t* v) {
  if (in_.size() < 8) {
    return false;
  }
  *v = read_be64(in_);
  in_.remove_prefix(8);
  return true;
}

bool Reader::get_raw(std::size_t n, std::string_view* s) {
  if (in_.size() < n) {
    return false;
  }
  *s = in_.substr(0, n);
  in_.remove_prefix(n);
  return true;
}

bool Reader::get_i128(__int128* v) {
  std::uint64_t hi = 0;
  std::uint64_t lo = 0;
  if (!get_be64(&hi) || !get_be64(&lo)) {
    return false;
  }
  *v = static_cast<__int128>((static_cast<unsigned __int128>(hi) << 64) | lo);
  return true;
}

void put_i128(std::string& out, __int128 v) {
  auto u = static_cast<unsigned __int128>(v);
  put_be64(out, static_cast<std::uint64_t>(u >> 64));
  put_be64(out, static_cast<std::uint64_t>(u));
}

}  // namespace tally::common
