// The scale-out schema's migrations and the code that applies them (see schema.h). Each table
// is described in docs/cluster.md ("Schema"); keep the two in step. A migration, once released,
// is never edited: a change is a new version.
#include "pg/schema.h"

#include <algorithm>
#include <set>
#include <utility>

namespace tally::pg {
namespace {

// Version 1: the tables the scale-out mode keeps its durable truth in (issue #11). Money and
// credits are exact decimals (numeric(38, 9): the engine's 1e-9 fixed point); times are
// timestamptz; a meter's group is the text of its group_by values joined by U+001F, as in the
// embedded store ("" for a meter without group_by).
constexpr std::string_view kInitialSchema = R"sql(
CREATE TABLE customers (
  id text PRIMARY KEY,
  name text NOT NULL DEFAULT '',
  email text NOT NULL DEFAULT '',
  plan text NOT NULL DEFAULT '',
  status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended', 'deleted')),
  time_zone text NOT NULL DEFAULT 'UTC',
  billing_anchor timestamptz,
  parent_id text REFERENCES customers (id),
  metadata jsonb NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
  id text PRIMARY KEY,
  prefix text NOT NULL,
  secret_sha256 bytea NOT NULL UNIQUE CHECK (length(secret_sha256) = 32),
  customer_id text REFERENCES customers (id),
  name text NOT NULL DEFAULT '',
  scopes integer NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz,
  last_used_at timestamptz,
  total_requests bigint NOT NULL DEFAULT 0
);

CREATE TABLE events (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer_id text NOT NULL,
  event_id text NOT NULL,
  type text NOT NULL,
  time timestamptz NOT NULL,
  received_at timestamptz NOT NULL DEFAULT now(),
  quantity bigint NOT NULL DEFAULT 1 CHECK (quantity >= 1),
  properties jsonb NOT NULL DEFAULT '{}',
  cost numeric(38, 9),
  credits numeric(38, 9),
  suspended boolean NOT NULL DEFAULT false,
  CONSTRAINT events_dedup UNIQUE (customer_id, event_id)
);
CREATE INDEX events_customer_time ON events (customer_id, time);

CREATE TABLE aggregates_minute (
  meter text NOT NULL,
  customer_id text NOT NULL,
  group_key text NOT NULL DEFAULT '',
  bucket_start timestamptz NOT NULL,
  count bigint NOT NULL,
  sum numeric(38, 9) NOT NULL,
  min numeric(38, 9) NOT NULL,
  max numeric(38, 9) NOT NULL,
  latest numeric(38, 9) NOT NULL,
  latest_time timestamptz NOT NULL,
  latest_seq bigint NOT NULL,
  PRIMARY KEY (meter, customer_id, group_key, bucket_start)
);

CREATE TABLE aggregates_hour (LIKE aggregates_minute INCLUDING ALL);

CREATE TABLE aggregate_uniques (
  meter text NOT NULL,
  customer_id text NOT NULL,
  group_key text NOT NULL DEFAULT '',
  bucket_start timestamptz NOT NULL,
  value text NOT NULL,
  PRIMARY KEY (meter, customer_id, group_key, bucket_start, value)
);

CREATE TABLE wallets (
  customer_id text PRIMARY KEY,
  balance numeric(38, 9) NOT NULL DEFAULT 0,
  held numeric(38, 9) NOT NULL DEFAULT 0 CHECK (held >= 0),
  last_seq bigint NOT NULL DEFAULT 0,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ledger (
  seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer_id text NOT NULL REFERENCES wallets (customer_id),
  type text NOT NULL CHECK (type IN ('grant', 'topup', 'burn', 'refund', 'adjustment', 'expiry',
                                     'hold', 'release')),
  amount numeric(38, 9) NOT NULL,
  balance_before numeric(38, 9) NOT NULL,
  balance_after numeric(38, 9) NOT NULL,
  held numeric(38, 9) NOT NULL DEFAULT 0,
  event_id text NOT NULL DEFAULT '',
  grant_seq bigint,
  reservation_id text NOT NULL DEFAULT '',
  description text NOT NULL DEFAULT '',
  priority integer NOT NULL DEFAULT 0,
  expires_at timestamptz,
  period_start timestamptz,
  period_end timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_customer ON ledger (customer_id, seq);
CREATE UNIQUE INDEX ledger_burn_once ON ledger (customer_id, event_id) WHERE type = 'burn';

CREATE TABLE alerts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  customer_id text NOT NULL,
  kind text NOT NULL,
  level text NOT NULL DEFAULT '',
  meter text NOT NULL DEFAULT '',
  limit_key text NOT NULL DEFAULT '',
  period text NOT NULL DEFAULT '',
  window_start timestamptz NOT NULL,
  threshold integer NOT NULL,
  usage numeric(38, 9) NOT NULL DEFAULT 0,
  limit_amount numeric(38, 9),
  created_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT alerts_once UNIQUE (customer_id, limit_key, period, window_start, threshold)
);

CREATE TABLE webhook_outbox (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  alert_id bigint REFERENCES alerts (id),
  event text NOT NULL,
  destination integer NOT NULL,
  url text NOT NULL,
  payload jsonb NOT NULL,
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
  attempts integer NOT NULL DEFAULT 0,
  last_error text NOT NULL DEFAULT '',
  next_attempt_at timestamptz NOT NULL DEFAULT now(),
  claimed_by text,
  claimed_until timestamptz,
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_outbox_due ON webhook_outbox (next_attempt_at) WHERE status = 'pending';
)sql";

// Version 2: a customer's trial may start later than its creation (PATCH trial_started_at);
// NULL = at its creation, as in the embedded store.
constexpr std::string_view kTrialStart = R"sql(
ALTER TABLE customers ADD COLUMN trial_started_at timestamptz;
)sql";

// Version 3: what an alert and a delivery answer besides version 1's columns (the limit's text,
// the percentage and the window's end; a delivery's public id, last status code and times), and
// the payload left to the sender, which builds it from the alert at every attempt.
constexpr std::string_view kAlertDetails = R"sql(
ALTER TABLE alerts ADD COLUMN limit_text text NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN percent text NOT NULL DEFAULT '';
ALTER TABLE alerts ADD COLUMN window_end timestamptz;
ALTER TABLE webhook_outbox ADD COLUMN delivery_id text;
ALTER TABLE webhook_outbox ADD COLUMN last_status_code integer NOT NULL DEFAULT 0;
ALTER TABLE webhook_outbox ADD COLUMN last_attempt_at timestamptz;
ALTER TABLE webhook_outbox ADD COLUMN delivered_at timestamptz;
ALTER TABLE webhook_outbox ALTER COLUMN payload DROP NOT NULL;
CREATE UNIQUE INDEX webhook_outbox_delivery_id ON webhook_outbox (delivery_id);
CREATE INDEX webhook_outbox_alert ON webhook_outbox (alert_id);
)sql";

// Version 4: open reservations (cluster/pg_reservations.h), on their customer's shard; properties
// as length-prefixed text (see there).
constexpr std::string_view kReservations = R"sql(
CREATE TABLE reservations (
  id text PRIMARY KEY,
  customer_id text NOT NULL,
  meter text NOT NULL,
  amount numeric(38, 9) NOT NULL CHECK (amount > 0),
  event_id text NOT NULL DEFAULT '',
  properties text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE INDEX reservations_expiry ON reservations (expires_at);
)sql";

// Version 5: a wallet's state beyond its balance (its grants with what is left of each, its
// debt, its transaction count), the bytes of the engine's wallet snapshot
// (engine::encode_wallet), read and written with the row locked; NULL = no transaction yet.
constexpr std::string_view kWalletState = R"sql(
ALTER TABLE wallets ADD COLUMN state bytea;
)sql";

// Version 6: a customer's limit overrides (PUT /v1/customers/{id}/overrides), in order: objects
// {"meter", "period", "days", "amount" (decimal text), "hard"}.
constexpr std::string_view kLimitOverrides = R"sql(
ALTER TABLE customers ADD COLUMN limit_overrides jsonb NOT NULL DEFAULT '[]';
)sql";

// Version 7: the units each tiered price (graduated, volume, package, flat) has counted in a
// customer's billing period (cluster/pg_prices.h), locked and updated in the transaction of the
// events it charges.
constexpr std::string_view kPriceUsage = R"sql(
CREATE TABLE price_usage (
  customer_id text NOT NULL,
  price text NOT NULL,
  period_start timestamptz NOT NULL,
  units numeric(38, 9) NOT NULL DEFAULT 0,
  PRIMARY KEY (customer_id, price, period_start)
);
)sql";

// Version 8: listing events (cluster/pg_event_list.h): each customer's events in seq order by an
// index, customers in order of creation by another, and the properties as the JSON text they
// were written with (key order and number texts as sent; jsonb keeps neither). NULL for events
// written before: they are listed with the jsonb's properties.
constexpr std::string_view kEventListing = R"sql(
ALTER TABLE events ADD COLUMN properties_text text;
CREATE INDEX events_customer_seq ON events (customer_id, seq);
CREATE INDEX customers_created ON customers (created_at, id);
)sql";

// Version 9: the audit log of operators' actions (engine/audit.h), on shard 0, each record the
// embedded store's JSON text, read by time then by insertion; and a customer's period resets
// (POST /v1/customers/{id}/reset), objects {"meter", "at" (microseconds since the epoch)}.
constexpr std::string_view kAuditAndResets = R"sql(
CREATE TABLE audit_log (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at timestamptz NOT NULL,
  record text NOT NULL
);
CREATE INDEX audit_log_order ON audit_log (at, id);
ALTER TABLE customers ADD COLUMN period_resets jsonb NOT NULL DEFAULT '[]';
)sql";

// Version 10: cheaper event writes. Properties are stored once, as the JSON text the node wrote
// (properties_text, since version 8): new rows leave the jsonb column NULL, which saves its parse
// and a second copy of the properties in every row and its WAL; readers take the text, or the
// jsonb's text for rows written before.
constexpr std::string_view kCheaperEvents = R"sql(
ALTER TABLE events ALTER COLUMN properties DROP NOT NULL;
ALTER TABLE events ALTER COLUMN properties DROP DEFAULT;
)sql";

// Version 11: keys of every customer. Keys live on shard 0 and their customer on its own shard,
// so the reference to customers (of shard 0) refused a key of a customer on any other shard; the
// engine checks that the customer exists. A key's scopes are a 32-bit set whose high bit (admin)
// did not fit an integer.
constexpr std::string_view kKeysOfEveryShard = R"sql(
ALTER TABLE api_keys DROP CONSTRAINT IF EXISTS api_keys_customer_id_fkey;
ALTER TABLE api_keys ALTER COLUMN scopes TYPE bigint;
)sql";

constexpr Migration kMigrations[] = {
    {1, "the initial cluster schema", kInitialSchema},
    {2, "customers' trial start", kTrialStart},
    {3, "alert and delivery details", kAlertDetails},
    {4, "open reservations", kReservations},
    {5, "wallets' grants and debt", kWalletState},
    {6, "limit overrides", kLimitOverrides},
    {7, "tiered prices' period units", kPriceUsage},
    {8, "listing events", kEventListing},
    {9, "the audit log and period resets", kAuditAndResets},
    {10, "cheaper event writes", kCheaperEvents},
    {11, "keys of every shard's customers", kKeysOfEveryShard},
};

constexpr std::string_view kCreateVersionTable =
    "CREATE TABLE IF NOT EXISTS tally_schema_version ("
    "version integer PRIMARY KEY, name text NOT NULL, "
    "applied_at timestamptz NOT NULL DEFAULT now())";

std::string join(const std::vector<int>& versions) {
  std::string out;
  for (int v : versions) {
    out += (out.empty() ? "" : ", ") + std::to_string(v);
  }
  return out;
}

// Releases the session advisory lock when the migration ends, however it ends.
class LockGuard {
 public:
  explicit LockGuard(Connection* conn) : conn_(conn) {}

  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;

  ~LockGuard() {
    // On a lost connection the server has released it already.
    conn_->exec("SELECT pg_advisory_unlock($1)", {std::to_string(kMigrationLockKey)})
        .status()
        .ignore_error();
  }

 private:
  Connection* conn_;
};

}  // namespace

std::span<const Migration> migrations() {
  return kMigrations;
}

int latest_schema_version() {
  return kMigrations[std::size(kMigrations) - 1].version;
}

std::string SchemaStatus::describe() const {
  const int version = applied.empty() ? 0 : applied.back();
  const std::string latest = std::to_string(latest_schema_version());
  switch (state) {
    case SchemaState::kKnown:
      return "schema at version " + std::to_string(version) + ", as this binary expects";
    case SchemaState::kOutdated:
      return "schema at version " + std::to_string(version) + "; this binary needs version " +
             latest + " (missing: " + join(missing) + "): run `tally migrate`";
    case SchemaState::kNewer:
      return "schema has version " + join(unknown) + ", which this binary (knowing up to " +
             latest + ") does not know: it was migrated by a newer Tally; upgrade this one";
  }
  return {};
}

Result<SchemaStatus> schema_status(Connection& conn) {
  SchemaStatus status;
  auto exists = conn.exec("SELECT to_regclass('tally_schema_version') IS NOT NULL");
  if (!exists) {
    return exists.error();
  }
  if (exists->at(0, 0) == "t") {
    auto rows = conn.exec("SELECT version FROM tally_schema_version ORDER BY version");
    if (!rows) {
      return rows.error();
    }
    for (const auto& row : rows->rows) {
      status.applied.push_back(std::stoi(row[0].value_or("0")));
    }
  }
  const std::set<int> applied(status.applied.begin(), status.applied.end());
  std::set<int> known;
  for (const Migration& m : kMigrations) {
    known.insert(m.version);
    if (applied.count(m.version) == 0) {
      status.missing.push_back(m.version);
    }
  }
  for (int v : status.applied) {
    if (known.count(v) == 0) {
      status.unknown.push_back(v);
    }
  }
  status.state = !status.unknown.empty()   ? SchemaState::kNewer
                 : !status.missing.empty() ? SchemaState::kOutdated
                                           : SchemaState::kKnown;
  return status;
}

Result<MigrateResult> migrate(Connection& conn) {
  auto locked = conn.exec("SELECT pg_advisory_lock($1)", {std::to_string(kMigrationLockKey)});
  if (!locked) {
    return locked.error();
  }
  LockGuard guard(&conn);
  auto created = conn.exec(kCreateVersionTable);
  if (!created) {
    return created.error();
  }
  auto status = schema_status(conn);
  if (!status) {
    return status.error();
  }
  if (status->state == SchemaState::kNewer) {
    return Status::unprocessable(status->describe() + "; nothing was changed");
  }
  MigrateResult result;
  result.version = status->applied.empty() ? 0 : status->applied.back();
  for (const Migration& m : kMigrations) {
    if (std::find(status->missing.begin(), status->missing.end(), m.version) ==
        status->missing.end()) {
      continue;
    }
    const std::string what =
        "migration " + std::to_string(m.version) + " (" + std::string(m.name) + ")";
    auto tx = Transaction::begin(conn);
    if (!tx) {
      return tx.error();
    }
    auto applied = conn.exec_script(m.sql);
    if (!applied) {
      return Status(applied.error().code(), what + " failed: " + applied.error().message(),
                    applied.error().details_json());
    }
    auto recorded = conn.exec("INSERT INTO tally_schema_version (version, name) VALUES ($1, $2)",
                              {std::to_string(m.version), std::string(m.name)});
    if (!recorded) {
      return recorded.error();
    }
    Status committed = tx->commit();
    if (!committed.ok()) {
      return Status(committed.code(), what + " failed to commit: " + committed.message(),
                    committed.details_json());
    }
    result.applied_now.push_back(m.version);
    result.version = m.version;
  }
  return result;
}

}  // namespace tally::pg
