// Dashboard sessions: what a browser holds instead of an API key.
//
// Signing in to the dashboard exchanges an API key for a session: a random token set as an
// HttpOnly cookie, and a second random token for CSRF that the page keeps in memory and sends
// as a header with every write. The store keeps only the SHA-256 of each session token, the id
// of the key it was made from (never the key itself) and the CSRF token; the key's scopes,
// customer, revocation and suspension are looked up again on every request (Api::admit), so a
// session can never do more than its key may do now.
//
// Sessions live in memory only: a restart signs every browser out. Each lasts `ttl_us` from
// its creation (no sliding renewal), and the store is bounded twice: at most `sessions_max`
// in all (a sign-in beyond it, once expired sessions are dropped, is refused) and at most
// kSessionsPerKeyMax per key (a newer sign-in with the same key ends that key's oldest).
//
// Thread safety: every method may be called from any thread at once.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include <tally/clock.h>
#include <tally/status.h>

namespace tally::dashboard {

inline constexpr std::size_t kSessionsPerKeyMax = 32;

struct NewSession {
  std::string token;       // the cookie's value: 64 hex digits; shown once, stored as a hash
  std::string csrf_token;  // 64 hex digits
  std::int64_t expires_at_us = 0;
};

struct Session {
  std::string key_id;
  std::string csrf_token;
  std::int64_t created_at_us = 0;
  std::int64_t expires_at_us = 0;
  std::uint64_t sequence = 0;  // creation order, for ending a key's oldest
};

class SessionStore {
 public:
  // REQUIRES: ttl_us > 0, sessions_max > 0; `clock` outlives the store.
  SessionStore(const Clock& clock, std::int64_t ttl_us, std::size_t sessions_max);

  // A new session for the key `key_id`. Errors: kResourceExhausted when sessions_max live
  // sessions exist already.
  Result<NewSession> create(const std::string& key_id);
  // The live session of a presented token; nullopt for an unknown, ended or expired one (an
  // expired one is dropped).
  std::optional<Session> find(std::string_view token);
  // Ends the session of `token`; false when there was none.
  bool end(std::string_view token);
  // Ends every session made from `key_id`; returns how many.
  std::size_t end_key(const std::string& key_id);

  std::size_t size() const;

  std::int64_t ttl_us() const { return ttl_us_; }

 private:
  void drop_expired_locked(std::int64_t now);
  void erase_locked(const std::string& hash);

  const Clock& clock_;
  const std::int64_t ttl_us_;
  const std::size_t sessions_max_;
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Session> by_hash_;  // SHA-256 of the token (raw) -> session
  // Per key, its sessions' hashes by creation order.
  std::unordered_map<std::string, std::map<std::uint64_t, std::string>> by_key_;
  std::uint64_t sequence_ = 0;
};

}  // namespace tally::dashboard
