// Redis Cluster key slots: which of the 16384 hash slots a key belongs to.
//
// The rule is the Redis Cluster specification's: the slot is CRC16 (the XMODEM variant:
// polynomial 0x1021, initial value 0, no reflection, no final xor) of the key, modulo 16384. When
// the key holds a hash tag, only the tag is hashed: the bytes between the first '{' and the first
// '}' after it, provided at least one byte lies between them. So `{user1000}.following` and
// `{user1000}.followers` share a slot, `foo{}{bar}` hashes the whole key (the first tag is
// empty), `foo{{bar}}zap` hashes `{bar` and `foo{bar}{zap}` hashes `bar`.
//
// Thread safety: pure functions.
#pragma once

#include <cstdint>
#include <string_view>

namespace tally::redis {

inline constexpr std::uint16_t kSlotCount = 16384;

// CRC16/XMODEM of `bytes` (CRC16("123456789") == 0x31C3).
std::uint16_t crc16(std::string_view bytes);

// The part of `key` that decides its slot: the hash tag when there is a non-empty one, else the
// whole key. The view points into `key`.
std::string_view hashed_part(std::string_view key);

// The slot of `key`, in [0, kSlotCount).
std::uint16_t key_slot(std::string_view key);

}  // namespace tally::redis
