// The scale-out mode's all-or-nothing batch (IngestOptions::all_or_nothing: the Lago API's
// events): stored whole or not at all, by the embedded store's rule (whole_batch.h) and with
// its answers.
//
// The request's thread first reads, on each shard the batch's customers live on, which of them
// exist and which of its (customer, id) pairs are stored already; a fault (an invalid event, an
// unknown customer when customers are not created on first use, a duplicate in the request or
// of a stored event) refuses the batch before anything is written, listing every fault.
//
// A batch whose customers all live on one shard is then written in ONE transaction of that
// shard (cluster::write_events): its events inserted, and before their aggregates every event
// checked to be inserted now (one that another node stored since the read makes the whole
// transaction roll back, and the batch is refused naming it a duplicate, as the embedded store
// answers the second of two such batches), then the customers it names created (so a refused
// batch creates none), then priced, aggregated and burned as any ingest. Its counters and
// alerts follow the commit as ordinary ingest's do.
//
// A batch whose customers live on two or more shards is not written: the shards commit apart,
// and making them commit together needs two-phase commit (PREPARE TRANSACTION, and a recovery
// of the transactions a dead node left prepared), which this version does not do. It is
// answered 501 naming it, after the reads (a faulty one is refused as above, as the embedded
// store refuses it).
#include <set>

#include "common/assert.h"
#include "engine/cluster_mode_impl.h"
#include "engine/whole_batch.h"

namespace tally::engine {

namespace {

// The (customer, id) pairs of `events` (indexes into b) stored on `conn`'s shard.
Status find_stored(pg::Connection& conn, const core::EventBatch& b,
                   const std::vector<std::size_t>& events,
                   std::set<std::pair<std::string, std::string>>* stored) {
  std::vector<std::string> customers;
  std::vector<std::string> ids;
  for (std::size_t i : events) {
    customers.emplace_back(b.text(b.events()[i].customer));
    ids.emplace_back(b.text(b.events()[i].id));
  }
  auto rows = conn.exec(
      "SELECT customer_id, event_id FROM events WHERE (customer_id, event_id) IN (SELECT * FROM "
      "unnest($1::text[], $2::text[]))",
      {cluster::text_array(customers), cluster::text_array(ids)});
  if (!rows) {
    return rows.error();
  }
  for (const auto& row : rows->rows) {
    stored->emplace(row.at(0).value_or(""), row.at(1).value_or(""));
  }
  return Status();
}

}  // namespace

void ClusterMode::Impl::ingest_whole(IngestRequest& req) {
  const core::EventBatch& b = req.parsed.batch;
  std::vector<std::vector<std::size_t>> by_shard(shards.size());
  std::size_t shards_named = 0;
  for (std::size_t i = 0; i < b.size(); ++i) {
    auto& events = by_shard[cluster::shard_of(b.text(b.events()[i].customer), shards.size())];
    shards_named += events.empty() ? 1 : 0;
    events.push_back(i);
  }
  std::map<std::string, Customer> customers;
  std::set<std::pair<std::string, std::string>> stored;
  for (std::size_t shard = 0; shard < by_shard.size(); ++shard) {
    if (by_shard[shard].empty()) {
      continue;
    }
    std::vector<std::string> ids;
    for (std::size_t i : by_shard[shard]) {
      ids.emplace_back(b.text(b.events()[i].customer));
    }
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    auto lease = shards[shard]->lease();
    if (!lease) {
      req.done(lease.error());
      return;
    }
    auto found = cluster::find_customers(**lease, ids);
    Status read = found ? find_stored(**lease, b, by_shard[shard], &stored) : found.error();
    if (!read.ok()) {
      req.done(read);
      return;
    }
    for (Customer& c : *found) {
      std::string id = c.id;
      customers.emplace(std::move(id), std::move(c));
    }
  }
  auto customer_of = [&](std::size_t i) {
    if (customers.count(std::string(b.text(b.events()[i].customer))) != 0) {
      return WholeCustomer::kKnown;
    }
    return config->server.auto_create_customers ? WholeCustomer::kNew : WholeCustomer::kUnknown;
  };
  auto stored_before = [&](std::size_t i, WholeCustomer) {
    return stored.count({std::string(b.text(b.events()[i].customer)),
                         std::string(b.text(b.events()[i].id))}) != 0;
  };
  IngestSummary refusal;
  for (const auto& err : req.parsed.errors) {
    refusal.errors.push_back(EventError{err.index, err.id, err.code, err.message});
  }
  if (refuse_whole_batch(req.parsed, customer_of, stored_before, &refusal)) {
    refuse_whole(req, std::move(refusal));
    return;
  }
  if (shards_named > 1) {
    req.done(not_built(
        "an all-or-nothing batch (the Lago API's events) whose customers live on more than one "
        "shard, which PostgreSQL cannot commit at once without two-phase commit"));
    return;
  }
  req.known.assign(b.size(), true);
  req.outcome.assign(b.size(), cluster::EventOutcome::kInserted);
  if (b.empty()) {
    complete(req);  // an empty request: nothing to write
    return;
  }
  const std::size_t shard = cluster::shard_of(b.text(b.events()[0].customer), shards.size());
  std::vector<bool> inserted;
  Status written = write_whole(b, shard, std::move(customers), &inserted);
  if (!written.ok()) {
    req.done(written);
    return;
  }
  if (!inserted.empty() && std::find(inserted.begin(), inserted.end(), false) != inserted.end()) {
    auto raced = [&](std::size_t i, WholeCustomer) {
      return !inserted[i];
    };
    const bool refused = refuse_whole_batch(req.parsed, customer_of, raced, &refusal);
    TALLY_ASSERT(refused, "an event not inserted is a duplicate");
    refuse_whole(req, std::move(refusal));
    return;
  }
  complete(req);
}

// Writes every event of `b` (all of one shard's customers, none a known duplicate) in one
// transaction of `shard`, the customers not in `customers` created in it. When another node
// stored one of them first, the transaction is rolled back and *inserted tells which were new
// (one false at least); otherwise *inserted is left empty.
Status ClusterMode::Impl::write_whole(const core::EventBatch& b, std::size_t shard,
                                      std::map<std::string, Customer> customers,
                                      std::vector<bool>* inserted) {
  const TimeUs now = clock->now_us();
  std::vector<std::string> new_ids;
  std::vector<std::uint32_t> write(b.size());
  for (std::uint32_t i = 0; i < write.size(); ++i) {
    write[i] = i;
    std::string id(b.text(b.events()[i].customer));
    if (customers.count(id) == 0) {
      Customer c;  // as cluster::create_customers creates it
      c.id = id;
      c.name = id;
      c.created_at_us = now;
      c.updated_at_us = now;
      customers.emplace(id, std::move(c));
      new_ids.push_back(std::move(id));
    }
  }
  std::sort(new_ids.begin(), new_ids.end());
  new_ids.erase(std::unique(new_ids.begin(), new_ids.end()), new_ids.end());
  WriteCharges charges;
  cluster::EventWriteOptions options;
  TALLY_TRY(prepare_write(b, write, &customers, &charges, &options));
  auto priced = std::move(options.before_aggregates);
  bool raced = false;
  options.before_aggregates = [&](pg::Connection& conn, const std::vector<bool>& now_inserted) {
    if (std::find(now_inserted.begin(), now_inserted.end(), false) != now_inserted.end()) {
      raced = true;
      *inserted = now_inserted;
      return Status::already_exists("an event of the batch was stored by another request");
    }
    if (!new_ids.empty()) {
      TALLY_TRY(cluster::create_customers(conn, new_ids, now));
    }
    return priced ? priced(conn, now_inserted) : Status();
  };
  auto lease = shards[shard]->lease();
  if (!lease) {
    return lease.error();
  }
  auto written = cluster::write_events(**lease, b, write, meter_specs, now, options);
  if (!written) {
    return raced ? Status() : written.error();
  }
  inserted->clear();
  add_to_counters(b, write, customers);
  return Status();
}

// Answers a refused batch: nothing of it was written.
void ClusterMode::Impl::refuse_whole(IngestRequest& req, IngestSummary sum) {
  std::sort(sum.errors.begin(), sum.errors.end(),
            [](const EventError& x, const EventError& y) { return x.index < y.index; });
  events_rejected.fetch_add(sum.rejected, std::memory_order_relaxed);
  sum.processing_time_us = cluster_steady_us() - req.start_us;
  req.done(std::move(sum));
}

}  // namespace tally::engine
