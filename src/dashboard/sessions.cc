// Dashboard sessions (see sessions.h).
#include "dashboard/sessions.h"

#include <vector>

#include "common/assert.h"
#include "common/crypto.h"

namespace tally::dashboard {

namespace {
constexpr std::size_t kTokenBytes = 32;

std::string hash_of(std::string_view token) {
  return common::sha256(token);
}
}  // namespace

SessionStore::SessionStore(const Clock& clock, std::int64_t ttl_us, std::size_t sessions_max)
    : clock_(clock), ttl_us_(ttl_us), sessions_max_(sessions_max) {
  TALLY_ASSERT(ttl_us > 0, "a session must last");
  TALLY_ASSERT(sessions_max > 0, "sessions must fit");
}

Result<NewSession> SessionStore::create(const std::string& key_id) {
  const std::int64_t now = clock_.now_us();
  NewSession out;
  out.token = common::to_hex(common::random_bytes(kTokenBytes));
  out.csrf_token = common::to_hex(common::random_bytes(kTokenBytes));
  out.expires_at_us = now + ttl_us_;
  std::lock_guard lock(mutex_);
  auto& of_key = by_key_[key_id];
  if (of_key.size() >= kSessionsPerKeyMax) {
    erase_locked(of_key.begin()->second);  // the key's oldest
  }
  if (by_hash_.size() >= sessions_max_) {
    drop_expired_locked(now);
    if (by_hash_.size() >= sessions_max_) {
      if (by_key_[key_id].empty()) {
        by_key_.erase(key_id);
      }
      return Status::resource_exhausted(
          "too many dashboard sessions are open (server.dashboard_sessions_max); retry later");
    }
  }
  const std::string hash = hash_of(out.token);
  Session s{key_id, out.csrf_token, now, out.expires_at_us, ++sequence_};
  by_key_[key_id].emplace(s.sequence, hash);
  by_hash_.emplace(hash, std::move(s));
  return out;
}

std::optional<Session> SessionStore::find(std::string_view token) {
  if (token.empty() || token.size() > 2 * kTokenBytes) {
    return std::nullopt;
  }
  const std::string hash = hash_of(token);
  std::lock_guard lock(mutex_);
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) {
    return std::nullopt;
  }
  if (it->second.expires_at_us <= clock_.now_us()) {
    erase_locked(hash);
    return std::nullopt;
  }
  return it->second;
}

bool SessionStore::end(std::string_view token) {
  const std::string hash = hash_of(token);
  std::lock_guard lock(mutex_);
  if (by_hash_.count(hash) == 0) {
    return false;
  }
  erase_locked(hash);
  return true;
}

std::size_t SessionStore::end_key(const std::string& key_id) {
  std::lock_guard lock(mutex_);
  auto it = by_key_.find(key_id);
  if (it == by_key_.end()) {
    return 0;
  }
  std::vector<std::string> hashes;
  for (const auto& [seq, hash] : it->second) {
    hashes.push_back(hash);
  }
  for (const auto& h : hashes) {
    erase_locked(h);
  }
  return hashes.size();
}

std::size_t SessionStore::size() const {
  std::lock_guard lock(mutex_);
  return by_hash_.size();
}

void SessionStore::drop_expired_locked(std::int64_t now) {
  std::vector<std::string> expired;
  for (const auto& [hash, s] : by_hash_) {
    if (s.expires_at_us <= now) {
      expired.push_back(hash);
    }
  }
  for (const auto& h : expired) {
    erase_locked(h);
  }
}

void SessionStore::erase_locked(const std::string& hash) {
  auto it = by_hash_.find(hash);
  if (it == by_hash_.end()) {
    return;
  }
  auto k = by_key_.find(it->second.key_id);
  if (k != by_key_.end()) {
    k->second.erase(it->second.sequence);
    if (k->second.empty()) {
      by_key_.erase(k);
    }
  }
  by_hash_.erase(it);
}

}  // namespace tally::dashboard
