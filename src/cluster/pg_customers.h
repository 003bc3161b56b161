// Customers and API keys of the scale-out mode, in PostgreSQL (docs/cluster.md, "Schema").
//
// A customer's row lives on its shard (shard.h); API keys live on shard 0, the cluster's home
// shard, since a presented key names no customer until it is found. Rows are read and written
// with parameters only; times are microseconds since the epoch, sent as bigint and turned into
// timestamptz by SQL (`'epoch' + n * interval '1 microsecond'`) and back with extract(epoch),
// which is exact. Validation (names, time zones, plans) is the engine's: these functions store
// what they are given.
//
// A customer's limit overrides and period resets are columns of its row (jsonb). Not kept here
// yet: the key's last use and request count.
//
// Thread safety: the functions use the given connection only (see pg/connection.h).
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pg/connection.h"
#include "tally/status.h"
#include "tally/types.h"

namespace tally::cluster {

// Inserts `c` (created_at_us and updated_at_us as given). Errors: kAlreadyExists when the id is
// taken; the connection's.
Status insert_customer(pg::Connection& conn, const Customer& c);

// The customer `id`, or nullopt when there is none.
Result<std::optional<Customer>> find_customer(pg::Connection& conn, std::string_view id);

// A PostgreSQL text[] literal of `items` (every element quoted, quotes and backslashes escaped),
// to send as one parameter (`$1::text[]`).
std::string text_array(const std::vector<std::string>& items);

// The customers of `ids` that exist, in no particular order.
Result<std::vector<Customer>> find_customers(pg::Connection& conn,
                                             const std::vector<std::string>& ids);

// Creates the customers of `ids` (sorted, no repeats) that do not exist, as customers are
// created on first use: name = id, created and updated at `now_us`, every other field its
// default. Those that exist are left as they are. Its row locks are taken in id order.
Status create_customers(pg::Connection& conn, const std::vector<std::string>& ids, TimeUs now_us);

// Every customer of the shard, by id.
Result<std::vector<Customer>> shard_customers(pg::Connection& conn);

// Writes every field of `c` over the row `c.id`. Errors: kNotFound when there is none.
Status store_customer(pg::Connection& conn, const Customer& c);

// A stored API key: what the engine needs to authenticate one.
struct KeyRow {
  ApiKeyInfo info;
  std::string secret_sha256;  // 32 bytes
};

// Inserts a key. Errors: kAlreadyExists for a key id or secret hash already stored.
Status insert_key(pg::Connection& conn, const KeyRow& key);

// The key whose secret hashes to `secret_sha256` (32 bytes), or nullopt.
Result<std::optional<KeyRow>> find_key_by_hash(pg::Connection& conn,
                                               std::string_view secret_sha256);

// The key `id`, or nullopt.
Result<std::optional<KeyRow>> find_key(pg::Connection& conn, std::string_view id);

// Every key, by creation.
Result<std::vector<ApiKeyInfo>> all_keys(pg::Connection& conn);

// Marks key `id` revoked at `at_us` (an already revoked key keeps its first revocation).
// Errors: kNotFound.
Status revoke_key(pg::Connection& conn, std::string_view id, TimeUs at_us);

}  // namespace tally::cluster
