// The stable customer-to-shard hash (see shard.h).
#include "cluster/shard.h"

#include "common/assert.h"

namespace tally::cluster {

std::uint64_t fnv1a64(std::string_view bytes) {
  std::uint64_t h = 0xcbf29ce484222325ULL;  // the FNV offset basis
  for (unsigned char c : bytes) {
    h ^= c;
    h *= 0x100000001b3ULL;  // the FNV prime
  }
  return h;
}

std::size_t shard_of(std::string_view customer, std::size_t shards) {
  TALLY_ASSERT(shards > 0, "a cluster has at least one PostgreSQL shard");
  return static_cast<std::size_t>(fnv1a64(customer) % shards);
}

}  // namespace tally::cluster
