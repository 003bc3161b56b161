// Listing stored events in the scale-out mode (Engine::list_events; docs/cluster.md, "Listing
// events"): one customer's from its shard, every customer's from every shard at once, each
// shard's page read through its indexes (cluster/pg_event_list.h) and the pages merged in the
// listing order: customers by (created_at, id), each customer's events in the order they were
// stored. Exports of events page through the same listing.
//
// The cursor names the last event of the page (its customer's created_at, its customer, its
// seq), not a shard: the next page starts after it on every shard, so it stays valid whichever
// node answers and however the customers are spread. Its text is "<created_at hex>.<seq hex>.<the
// customer id's bytes in hex>"; a cursor of the embedded store ("<number>.<seq>") is refused as
// one this listing did not return.
#include <cinttypes>
#include <cstdio>

#include "cluster/pg_event_list.h"
#include "cluster/pg_sql.h"
#include "engine/cluster_mode_impl.h"

namespace tally::engine {
namespace {

std::string encode_cursor(const cluster::EventPosition& p) {
  char buf[48];
  std::snprintf(buf, sizeof(buf), "%" PRIx64 ".%" PRIx64 ".",
                static_cast<std::uint64_t>(p.created_at_us), static_cast<std::uint64_t>(p.seq));
  std::string out = buf;
  static constexpr char kHex[] = "0123456789abcdef";
  for (unsigned char c : p.customer) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

bool decode_cursor(const std::string& text, cluster::EventPosition* p) {
  unsigned long long created = 0;
  unsigned long long seq = 0;
  int used = 0;
  if (std::sscanf(text.c_str(), "%llx.%llx.%n", &created, &seq, &used) != 2 || used == 0 ||
      text.find_first_not_of("0123456789abcdef.") != std::string::npos) {
    return false;
  }
  auto customer =
      cluster::bytes_of_hex(std::string_view(text).substr(static_cast<std::size_t>(used)));
  if (!customer || customer->empty() || seq > static_cast<unsigned long long>(INT64_MAX)) {
    return false;
  }
  p->created_at_us = static_cast<TimeUs>(created);
  p->seq = static_cast<std::int64_t>(seq);
  p->customer = std::move(*customer);
  return true;
}

}  // namespace

Result<EventPage> ClusterMode::list_events(const EventListQuery& q) {
  Impl& d = *impl_;
  // Refused in the embedded store's order (query.cc): the customer, then the cursor.
  if (!q.customer.empty()) {
    TALLY_TRY(d.read_customer(q.customer).status());
  }
  cluster::EventListRead read;
  read.customer = q.customer;
  read.type = q.type;
  read.from_us = q.from_us;
  read.to_us = q.to_us;
  // One more than the page: whether there is a next page.
  read.limit = q.limit + 1;
  if (!q.cursor.empty()) {
    cluster::EventPosition after;
    if (!decode_cursor(q.cursor, &after) || (!q.customer.empty() && after.customer != q.customer)) {
      return Status::invalid_argument("cursor is not one this listing returned");
    }
    read.after = std::move(after);
  }
  std::vector<std::size_t> asked;
  if (!q.customer.empty()) {
    asked.push_back(cluster::shard_of(q.customer, d.shards.size()));
  } else {
    for (std::size_t s = 0; s < d.shards.size(); ++s) {
      asked.push_back(s);
    }
  }
  auto read_shard = [&d, &read](std::size_t shard) -> Result<std::vector<cluster::ListedEvent>> {
    auto lease = d.shards[shard]->lease();
    if (!lease) {
      return lease.error();
    }
    return cluster::list_events(**lease, read);
  };
  std::vector<std::future<Result<std::vector<cluster::ListedEvent>>>> reads;
  for (std::size_t k = 1; k < asked.size(); ++k) {
    reads.push_back(std::async(std::launch::async, read_shard, asked[k]));
  }
  std::vector<Result<std::vector<cluster::ListedEvent>>> answers;
  answers.push_back(read_shard(asked[0]));
  for (auto& r : reads) {
    answers.push_back(r.get());
  }
  std::vector<cluster::ListedEvent> all;
  for (auto& answer : answers) {
    if (!answer) {
      return answer.error();
    }
    std::move(answer->begin(), answer->end(), std::back_inserter(all));
  }
  // Each shard gave its first limit + 1 after the cursor: the first limit + 1 of them all are
  // among them.
  std::sort(all.begin(), all.end(),
            [](const cluster::ListedEvent& a, const cluster::ListedEvent& b) {
              return cluster::before(a.position, b.position);
            });
  EventPage page;
  const bool more = all.size() > q.limit;
  if (more) {
    all.resize(q.limit);
    page.next_cursor = encode_cursor(all.back().position);
  }
  page.events.reserve(all.size());
  for (auto& l : all) {
    page.events.push_back(std::move(l.event));
  }
  return page;
}

}  // namespace tally::engine
