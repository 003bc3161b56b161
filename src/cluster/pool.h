// A bounded pool of PostgreSQL connections to one shard, shared by the threads of a node.
//
// lease() hands out an idle connection, opens a new one while fewer than `size` exist, or waits
// (up to the connect timeout) for one to come back. A lease returns its connection when it is
// destroyed; a connection that was lost (Connection::alive() false) is dropped instead, so the
// next lease opens a fresh one: a restarted PostgreSQL costs each pooled connection one failed
// call, not the node.
//
// Thread safety: every method may be called from any thread; a Lease (and its connection) is
// used by one thread at a time.
#pragma once

#include <condition_variable>
#include <cstddef>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "pg/connection.h"
#include "tally/status.h"

namespace tally::cluster {

class PgPool {
 public:
  class Lease {
   public:
    Lease(Lease&& other) noexcept : pool_(other.pool_), conn_(std::move(other.conn_)) {}

    Lease& operator=(Lease&&) = delete;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    pg::Connection& operator*() const { return *conn_; }

    pg::Connection* operator->() const { return conn_.get(); }

   private:
    friend class PgPool;

    Lease(PgPool* pool, std::unique_ptr<pg::Connection> conn)
        : pool_(pool), conn_(std::move(conn)) {}

    PgPool* pool_;
    std::unique_ptr<pg::Connection> conn_;
  };

  // `name` says which shard it is in messages ("cluster.postgres[1]": never the connection
  // string, which may hold a password). REQUIRES: size > 0. Opens nothing until the first lease.
  PgPool(std::string name, pg::ConnectOptions options, std::size_t size);
  PgPool(const PgPool&) = delete;
  PgPool& operator=(const PgPool&) = delete;

  // A connection for this thread's use. Errors: kUnavailable when none could be opened, or when
  // every connection stayed leased for the connect timeout.
  Result<Lease> lease();

  const std::string& name() const { return name_; }

 private:
  void give_back(std::unique_ptr<pg::Connection> conn);

  const std::string name_;
  const pg::ConnectOptions options_;
  const std::size_t size_;
  std::mutex mutex_;
  std::condition_variable returned_;
  std::vector<std::unique_ptr<pg::Connection>> idle_;
  std::size_t open_ = 0;  // idle + leased (+ being opened)
};

}  // namespace tally::cluster
