// A node's leases of limit headroom (see cluster_leases.h).
#include "engine/cluster_leases.h"

#include <utility>

#include "common/assert.h"

namespace tally::engine {

cluster::RedisCheck leased_answer(const CheckLease& lease) {
  cluster::RedisCheck answer = lease.taken;
  for (std::size_t i = 0; i < answer.after.size(); ++i) {
    core::LimitOutcome& o = answer.after[i];
    o.used = o.used - lease.left;
    o.headroom += lease.left;
    if (!lease.rules[i].unlimited) {
      o.remaining += lease.left;
    }
  }
  return answer;
}

std::string CheckLeases::key_of(const std::string& customer, const std::string& meter) {
  std::string key;
  key.reserve(customer.size() + meter.size() + 1);
  key += customer;
  key += '\n';  // in neither a customer id nor a meter key
  key += meter;
  return key;
}

bool CheckLeases::use(const std::string& customer, const std::string& meter,
                      const std::vector<core::LimitRule>& rules, core::Decimal amount,
                      core::TimeUs now_us, cluster::RedisCheck* answer) {
  const std::string key = key_of(customer, meter);
  std::lock_guard lock(mutex_);
  auto it = leases_.find(key);
  if (it == leases_.end()) {
    return false;
  }
  CheckLease& lease = it->second;
  if (now_us >= lease.until_us || now_us < lease.taken_us || lease.left < amount ||
      lease.rules != rules) {
    return false;
  }
  lease.left = lease.left - amount;
  TALLY_DASSERT(lease.left.units >= 0, "a lease used past what it holds");
  *answer = leased_answer(lease);
  return true;
}

std::optional<CheckLease> CheckLeases::put(const std::string& meter, CheckLease lease) {
  const std::string key = key_of(lease.customer, meter);
  std::lock_guard lock(mutex_);
  auto it = leases_.find(key);
  if (it == leases_.end()) {
    if (leases_.size() >= kLeasesMax) {
      return lease;
    }
    leases_.emplace(key, std::move(lease));
    return std::nullopt;
  }
  std::optional<CheckLease> replaced(std::move(it->second));
  it->second = std::move(lease);
  return replaced;
}

bool CheckLeases::cooling(const std::string& customer, const std::string& meter,
                          core::TimeUs now_us) {
  std::lock_guard lock(mutex_);
  if (cooling_.empty()) {
    return false;
  }
  auto it = cooling_.find(key_of(customer, meter));
  if (it == cooling_.end()) {
    return false;
  }
  if (now_us >= it->second) {
    cooling_.erase(it);
    return false;
  }
  return true;
}

void CheckLeases::cool(const std::string& customer, const std::string& meter,
                       core::TimeUs until_us) {
  std::lock_guard lock(mutex_);
  if (cooling_.size() >= kLeasesMax) {
    cooling_.clear();  // bounded: a pair forgotten only tries a lease again
  }
  cooling_[key_of(customer, meter)] = until_us;
}

std::vector<CheckLease> CheckLeases::take_expired(core::TimeUs now_us) {
  std::vector<CheckLease> out;
  std::lock_guard lock(mutex_);
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (now_us >= it->second.until_us || now_us < it->second.taken_us) {
      out.push_back(std::move(it->second));
      it = leases_.erase(it);
    } else {
      ++it;
    }
  }
  return out;
}

std::vector<CheckLease> CheckLeases::take_customer(const std::string& customer) {
  std::vector<CheckLease> out;
  std::lock_guard lock(mutex_);
  for (auto it = leases_.begin(); it != leases_.end();) {
    if (it->second.customer == customer) {
      out.push_back(std::move(it->second));
      it = leases_.erase(it);
    } else {
      ++it;
    }
  }
  std::erase_if(cooling_, [&](const auto& entry) {
    return entry.first.size() > customer.size() && entry.first[customer.size()] == '\n' &&
           entry.first.compare(0, customer.size(), customer) == 0;
  });
  return out;
}

std::vector<CheckLease> CheckLeases::take_all() {
  std::vector<CheckLease> out;
  std::lock_guard lock(mutex_);
  out.reserve(leases_.size());
  for (auto& [key, lease] : leases_) {
    out.push_back(std::move(lease));
  }
  leases_.clear();
  cooling_.clear();
  return out;
}

std::size_t CheckLeases::size() const {
  std::lock_guard lock(mutex_);
  return leases_.size();
}

}  // namespace tally::engine
