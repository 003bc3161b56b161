// The few cryptographic operations Tally needs, over OpenSSL: SHA-256 for stored key hashes,
// HMAC-SHA256 for webhook signatures, a CSPRNG for secrets, and constant-time comparison.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tally::common {

// 32 raw bytes.
std::string sha256(std::string_view data);

// SHA-256 over data fed in pieces (archive files, streamed). Not copyable.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(std::string_view data);
  // 32 raw bytes; the object cannot be updated after.
  std::string finish();

 private:
  void* ctx_;  // EVP_MD_CTX, kept out of this header
};

// 32 raw bytes.
std::string hmac_sha256(std::string_view key, std::string_view data);
// n cryptographically random bytes. Aborts if the system's generator fails (nothing sensible
// can be done without one).
std::string random_bytes(std::size_t n);
// Lower-case hex.
std::string to_hex(std::string_view bytes);
// Standard base64 (RFC 4648, with padding).
std::string base64_encode(std::string_view bytes);
// Decodes standard base64 (padding optional); false on any other character.
bool base64_decode(std::string_view text, std::string* out);
// Compares in time independent of where the inputs differ (lengths are not secret).
bool constant_time_equal(std::string_view a, std::string_view b);

}  // namespace tally::common
