// Which PostgreSQL shard holds a customer (docs/cluster.md, "Shards").
//
// A customer and everything of theirs (events, aggregates, wallet, ledger, alerts) live on one
// shard: the one `shard_of` names for the customer's id. The hash is FNV-1a (64 bits) of the
// id's bytes, reduced modulo the number of shards; it is part of the on-disk layout of a
// sharded cluster, so it never changes (shard_test.cc pins values), and the order of
// `[cluster] postgres` must not either: shard i is the i-th connection string.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace tally::cluster {

// FNV-1a, 64 bits, of `bytes`.
std::uint64_t fnv1a64(std::string_view bytes);

// The shard of `customer` among `shards` (> 0) shards: 0 when there is one.
std::size_t shard_of(std::string_view customer, std::size_t shards);

}  // namespace tally::cluster
