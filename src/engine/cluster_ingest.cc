// The scale-out mode's ingest (see cluster_mode.h); its queries are cluster_query.cc's.
#include "core/ids.h"
#include "engine/cluster_mode_impl.h"

namespace tally::engine {

// ---- ingest -------------------------------------------------------------------------------

void ClusterMode::ingest(std::string body, const IngestOptions& options,
                         Engine::IngestCallback done) {
  Impl& d = *impl_;
  const std::int64_t start_us = cluster_steady_us();
  core::ParsedEvents parsed;
  core::ParseOptions po;
  po.now_us = d.clock->now_us();
  po.future_skew_us_max = d.config->server.future_skew_seconds_max * core::kUsPerSecond;
  po.default_customer = options.restrict_customer;
  po.events_max = d.config->server.batch_events_max;
  po.source_scopes_id = options.source_scopes_id;
  if (!d.config->server.accept_unmetered_events && !d.catalog->metered_types.empty()) {
    po.known_types = &d.catalog->metered_types;
  }
  po.nonnegative = options.negative_corrections ? &d.catalog->nonnegative_for_admins
                                                : &d.catalog->nonnegative_for_customers;
  Status s = core::parse_events(body, po, &parsed);
  if (!s.ok()) {
    done(s);
    return;
  }
  if (!options.restrict_customer.empty()) {
    for (const auto& e : parsed.batch.events()) {
      if (parsed.batch.text(e.customer) != options.restrict_customer) {
        done(Status::permission_denied(
            "Events contain invalid customer_id. All events must belong to the authenticated "
            "customer."));
        return;
      }
    }
  }
  auto req = std::make_shared<IngestRequest>();
  req->parsed = std::move(parsed);
  req->start_us = start_us;
  req->done = std::move(done);
  if (options.all_or_nothing) {
    d.ingest_whole(*req);
    return;
  }
  const core::EventBatch& b = req->parsed.batch;
  req->known.assign(b.size(), true);
  req->outcome.assign(b.size(), std::nullopt);
  std::vector<std::vector<std::size_t>> by_queue(d.shard_queues.size());
  for (std::size_t i = 0; i < b.size(); ++i) {
    by_queue[d.queue_of(b.text(b.events()[i].customer))].push_back(i);
  }
  for (const auto& events : by_queue) {
    req->parts_left += events.empty() ? 0 : 1;
  }
  if (req->parts_left == 0) {
    d.complete(*req);  // nothing valid: answered without a write
    return;
  }
  {
    std::lock_guard lock(d.work_mutex);
    if (!d.stopping) {
      for (std::size_t q = 0; q < by_queue.size(); ++q) {
        if (!by_queue[q].empty()) {
          d.shard_queues[q].push_back(ShardPart{req, std::move(by_queue[q])});
        }
      }
      d.work_cv.notify_all();
      return;
    }
  }
  req->done(Status::unavailable("the node is stopping"));
}

// The customers of `events` (indexes into b) on shard `shard`, by id: those that do not exist
// yet created first when customers are created on first use; otherwise the unknown ones are
// marked false in *known.
Status ClusterMode::Impl::ensure_customers(const core::EventBatch& b,
                                           const std::vector<std::size_t>& events,
                                           std::size_t shard, std::vector<bool>* known,
                                           std::map<std::string, Customer>* customers) {
  std::vector<std::string> ids;
  for (std::size_t i : events) {
    ids.emplace_back(b.text(b.events()[i].customer));
  }
  std::sort(ids.begin(), ids.end());
  ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
  auto lease = shards[shard]->lease();
  if (!lease) {
    return lease.error();
  }
  if (config->server.auto_create_customers) {
    TALLY_TRY(cluster::create_customers(**lease, ids, clock->now_us()));
  }
  auto found = cluster::find_customers(**lease, ids);
  if (!found) {
    return found.error();
  }
  for (Customer& c : *found) {
    std::string id = c.id;
    customers->emplace(std::move(id), std::move(c));
  }
  for (std::size_t i : events) {
    (*known)[i] = customers->count(std::string(b.text(b.events()[i].customer))) != 0;
  }
  return Status();
}

// What ingested usage adds to one customer's window counters.
struct CounterAdds {
  struct Window {
    std::size_t rule;  // index into rules
    TimeUs start;
    auto operator<=>(const Window&) const = default;
  };

  std::vector<core::LimitRule> rules;
  core::PeriodContext ctx;
  std::map<Window, std::pair<TimeUs, core::Decimal>> amounts;  // an instant in it, the sum

  // Adds `value` at `at_us` to every calendar window of `limits` that contains it and counts it:
  // not when it is dated before a reset of `c` inside the window (counted_from).
  void add(const Customer& c, const std::vector<core::LimitRule>& limits, TimeUs at_us,
           const core::Decimal& value) {
    for (const core::LimitRule& rule : limits) {
      core::Span span;
      if (core::period_is_rate(rule.period) || !core::period_span(rule, at_us, ctx, &span) ||
          at_us < counted_from(c, rule, span)) {
        continue;
      }
      auto rit = std::find(rules.begin(), rules.end(), rule);
      const auto r = static_cast<std::size_t>(rit - rules.begin());
      if (rit == rules.end()) {
        rules.push_back(rule);
      }
      auto& slot = amounts[Window{r, span.start}];
      slot.first = at_us;
      slot.second = slot.second + value;
    }
  }
};

// What the events `written` (indexes into b) add to their customers' window counters: count and
// sum meters, values above zero (a correction below zero leaves the counter, which never goes
// below).
std::map<std::string_view, CounterAdds> ClusterMode::Impl::counter_adds(
    const core::EventBatch& b, const std::vector<std::uint32_t>& written,
    const std::map<std::string, Customer>& customers) const {
  std::map<std::string_view, CounterAdds> out;
  std::string group;
  for (std::uint32_t i : written) {
    const core::Event& e = b.events()[i];
    const std::string_view customer = b.text(e.customer);
    auto cit = customers.find(std::string(customer));
    const std::vector<std::uint32_t>* meters = catalog->meters_of_type(b.text(e.type));
    if (cit == customers.end() || meters == nullptr) {
      continue;
    }
    for (std::uint32_t m : *meters) {
      const core::MeterSpec& spec = catalog->meters[m].spec;
      const bool counted = spec.aggregation == core::Aggregation::kCount ||
                           spec.aggregation == core::Aggregation::kSum;
      core::MeterInput input;
      if (!counted || !core::meter_accepts(spec, b, e, &input, &group)) {
        continue;
      }
      const core::Decimal value = spec.aggregation == core::Aggregation::kCount
                                      ? core::Decimal::from_int(e.quantity)
                                      : input.value;
      if (value.units <= 0) {
        continue;
      }
      auto [it, fresh] = out.try_emplace(customer);
      if (fresh) {
        it->second.ctx = period_context_of(cit->second);
      }
      it->second.add(cit->second, limits_of(*config, cit->second, spec.key), e.time_us, value);
    }
  }
  return out;
}

// Adds the usage of the events written (each inserted) to the limit counters in Redis that
// exist, one call per customer. Redis failing is logged, not answered: PostgreSQL holds the
// events, and a counter not yet seeded is seeded from it.
void ClusterMode::Impl::add_to_counters(const core::EventBatch& b,
                                        const std::vector<std::uint32_t>& written,
                                        const std::map<std::string, Customer>& customers) {
  const std::map<std::string_view, CounterAdds> by_customer = counter_adds(b, written, customers);
  if (by_customer.empty()) {
    return;
  }
  auto slot = lease_redis();
  if (!slot) {
    spdlog::error("cluster: ingested usage not added to the limit counters: {}",
                  slot.error().to_string());
    return;
  }
  for (const auto& [customer, adds] : by_customer) {
    std::vector<cluster::RedisLimits::WindowAdd> calls;
    for (const auto& [window, amount] : adds.amounts) {
      calls.push_back({&adds.rules[window.rule], &adds.ctx, amount.first, amount.second});
    }
    auto added = (*slot)->limits->add(customer, calls);
    if (!added) {
      spdlog::error("cluster: usage of customer '{}' not added to its limit counters: {}", customer,
                    added.error().to_string());
    }
  }
  return_redis(std::move(*slot));
  // Their thresholds, evaluated by the alert thread from the counters (cluster_alerts.cc).
  const TimeUs now = clock->now_us();
  for (const auto& [customer, adds] : by_customer) {
    std::vector<std::string_view> meters;
    for (const core::LimitRule& rule : adds.rules) {
      if (std::find(meters.begin(), meters.end(), rule.meter) == meters.end()) {
        meters.push_back(rule.meter);
        AlertWork w;
        w.customer = customers.at(std::string(customer));
        w.meter = rule.meter;
        w.at_us = now;
        queue_alerts(std::move(w));
      }
    }
  }
}

// Writes the parts waiting for one shard, from every request, in one transaction: their events
// copied into one batch (a duplicate id across requests counts once, for the first), the
// customers created or found, the known ones' events written, the inserted ones added to the
// limit counters, and each event's outcome given back to its request.
void ClusterMode::Impl::commit_group(std::size_t shard, std::vector<ShardPart> parts) {
  core::EventBatch b;
  std::vector<std::pair<std::size_t, std::size_t>> origin;  // (part, event of its request)
  for (std::size_t k = 0; k < parts.size(); ++k) {
    const core::EventBatch& from = parts[k].req->parsed.batch;
    for (std::size_t i : parts[k].events) {
      b.append_from(from, from.events()[i]);
      origin.emplace_back(k, i);
    }
  }
  std::vector<std::size_t> all(b.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    all[i] = i;
  }
  std::vector<bool> known(b.size(), true);
  std::vector<std::optional<cluster::EventOutcome>> outcome(b.size());
  Status s = write_group(b, all, shard, &known, &outcome);
  for (std::size_t i = 0; i < b.size() && s.ok(); ++i) {
    IngestRequest& req = *parts[origin[i].first].req;
    req.known[origin[i].second] = known[i];
    req.outcome[origin[i].second] = outcome[i];
  }
  for (ShardPart& part : parts) {
    finish_part(*part.req, s);
  }
}

// The write of commit_group: customers, events and aggregates, counters.
Status ClusterMode::Impl::write_group(const core::EventBatch& b,
                                      const std::vector<std::size_t>& events, std::size_t shard,
                                      std::vector<bool>* known,
                                      std::vector<std::optional<cluster::EventOutcome>>* outcome) {
  std::map<std::string, Customer> customers;
  TALLY_TRY(ensure_customers(b, events, shard, known, &customers));
  std::vector<std::uint32_t> write;
  for (std::size_t i : events) {
    if ((*known)[i]) {
      write.push_back(static_cast<std::uint32_t>(i));
    }
  }
  if (write.empty()) {
    return Status();
  }
  auto lease = shards[shard]->lease();
  if (!lease) {
    return lease.error();
  }
  WriteCharges charges;
  cluster::EventWriteOptions options;
  TALLY_TRY(prepare_write(b, write, &customers, &charges, &options));
  auto written = cluster::write_events(**lease, b, write, meter_specs, clock->now_us(), options);
  if (!written) {
    return written.error();
  }
  std::vector<std::uint32_t> inserted;
  for (std::size_t k = 0; k < write.size(); ++k) {
    (*outcome)[write[k]] = written->outcomes[k];
    if (written->outcomes[k] == cluster::EventOutcome::kInserted) {
      inserted.push_back(write[k]);
    }
  }
  add_to_counters(b, inserted, customers);
  return Status();
}

// One shard's part of a request is done (`s`: its group's write); the last part answers it.
void ClusterMode::Impl::finish_part(IngestRequest& req, const Status& s) {
  {
    std::lock_guard lock(req.mutex);
    if (!s.ok() && req.failure.ok()) {
      req.failure = s;
    }
    if (--req.parts_left > 0) {
      return;
    }
  }
  complete(req);
}

// Answers a request whose every part is written: the first failure (the other shards' parts
// may have committed: sending the request again counts them as duplicates), or its summary.
void ClusterMode::Impl::complete(IngestRequest& req) {
  if (!req.failure.ok()) {
    req.done(req.failure);
    return;
  }
  const core::ParsedEvents& parsed = req.parsed;
  const core::EventBatch& b = parsed.batch;
  IngestSummary sum;
  for (const auto& err : parsed.errors) {
    sum.errors.push_back(EventError{err.index, err.id, err.code, err.message});
  }
  sum.rejected = static_cast<std::uint32_t>(parsed.errors.size());
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (!req.known[i]) {
      ++sum.rejected;
      sum.errors.push_back(
          EventError{parsed.indexes[i], std::string(b.text(b.events()[i].id)), "UNKNOWN_CUSTOMER",
                     core::customer_not_found(b.text(b.events()[i].customer)).message()});
    } else if (req.outcome[i] == cluster::EventOutcome::kDuplicate) {
      ++sum.duplicates;
    } else {
      ++sum.accepted;
    }
  }
  std::sort(sum.errors.begin(), sum.errors.end(),
            [](const EventError& x, const EventError& y) { return x.index < y.index; });
  if (sum.accepted > 0) {
    sum.batch_id = "bat_" + node_prefix + "_" + std::to_string(batches.fetch_add(1) + 1);
  }
  events_accepted.fetch_add(sum.accepted, std::memory_order_relaxed);
  events_rejected.fetch_add(sum.rejected, std::memory_order_relaxed);
  events_duplicate.fetch_add(sum.duplicates, std::memory_order_relaxed);
  sum.processing_time_us = cluster_steady_us() - req.start_us;
  req.done(std::move(sum));
}

std::size_t ClusterMode::Impl::queue_of(std::string_view customer) const {
  const std::uint64_t h = cluster::fnv1a64(customer);
  const std::size_t n = shards.size();
  return static_cast<std::size_t>(h % n) * kWriterLanes +
         static_cast<std::size_t>((h / n) % kWriterLanes);  // the shard is h % n: shard_of
}

// A writer of one shard's lane: takes every part waiting (up to kGroupEventsMax events, at
// least one part) and writes them as one group, so a node holds one write transaction per lane
// and its concurrent requests lock each hot aggregate row once per group, not once per request.
// The lanes of a shard write disjoint customers, so they never wait for each other's rows.
void ClusterMode::Impl::writer_loop(std::size_t q) {
  const std::size_t shard = q / kWriterLanes;
  std::unique_lock lock(work_mutex);
  std::deque<ShardPart>& queue = shard_queues[q];
  for (;;) {
    work_cv.wait(lock, [&] { return stopping || !queue.empty(); });
    if (queue.empty()) {
      return;  // stopping, and every request taken was answered
    }
    std::vector<ShardPart> group;
    std::size_t events = 0;
    while (!queue.empty() &&
           (group.empty() || events + queue.front().events.size() <= kGroupEventsMax)) {
      events += queue.front().events.size();
      group.push_back(std::move(queue.front()));
      queue.pop_front();
    }
    lock.unlock();
    commit_group(shard, std::move(group));
    lock.lock();
  }
}

}  // namespace tally::engine
