// Organizations rolled up for an operator's list (Engine::organization_summaries): every
// organization that customers name, with its members counted, the highest limit percent of any
// member now and every meter's total this calendar month.
//
// Built only on reads both modes answer alike (every_customer, limits_report,
// organization_usage, and highest_limit over a limits report, as the customer summaries use it),
// so a member's percent is exactly its limits report's, an organization's totals exactly
// GET /v1/organizations/{id}/usage's, and the scale-out mode's answer the embedded one. It
// evaluates every member's limits: callers run it off the I/O threads (the HTTP route is on the
// work pool).
#include <algorithm>
#include <map>

#include <tally/engine.h>

#include "core/decimal.h"
#include "engine/limits_impl.h"

namespace tally {

namespace {

// A member's highest limit now, counted in its organization's: it takes the organization's place
// when higher (the first member to reach a percent keeps it).
void add_member_usage(const Customer& c, const LimitsReport& r, OrganizationSummary* o) {
  core::Decimal percent;
  const LimitState* l = engine::highest_limit(r, &percent);
  if (l == nullptr) {
    return;
  }
  core::Decimal best;
  if (!o->max_percent.empty() && !core::try_parse_decimal(o->max_percent, &best)) {
    best = core::Decimal();
  }
  if (o->max_percent.empty() || percent > best) {
    o->max_percent = l->percent();
    o->max_customer = c.id;
    o->max_rule = l->rule();
  }
}

// Every organization that the customers of `all` name, with its members counted and their
// highest limit.
Result<std::vector<OrganizationSummary>> organizations_of(Engine& e,
                                                          const std::vector<Customer>& all) {
  std::map<std::string, OrganizationSummary> orgs;
  for (const Customer& c : all) {
    if (c.organization.empty()) {
      continue;
    }
    OrganizationSummary& o = orgs[c.organization];
    o.organization = c.organization;
    ++o.customers;
    if (c.status == CustomerStatus::kSuspended) {
      ++o.suspended;
    }
    Result<LimitsReport> r = e.limits_report(c.id);
    if (r) {
      add_member_usage(c, *r, &o);
    } else if (!engine::removed_meanwhile(r.error())) {
      return r.error();
    }
  }
  std::vector<OrganizationSummary> rows;
  rows.reserve(orgs.size());
  for (auto& [id, o] : orgs) {
    rows.push_back(std::move(o));
  }
  return rows;
}

// Highest percent first, organizations without a limit last, ties by id.
void sort_organizations(std::vector<OrganizationSummary>& rows) {
  auto percent_of = [](const OrganizationSummary& o, core::Decimal* p) {
    return !o.max_percent.empty() && core::try_parse_decimal(o.max_percent, p);
  };
  std::stable_sort(rows.begin(), rows.end(),
                   [&](const OrganizationSummary& a, const OrganizationSummary& b) {
                     core::Decimal x;
                     core::Decimal y;
                     const bool ha = percent_of(a, &x);
                     const bool hb = percent_of(b, &y);
                     if (ha != hb) {
                       return ha;
                     }
                     if (ha && x != y) {
                       return y < x;
                     }
                     return a.organization < b.organization;
                   });
}

}  // namespace

Result<OrganizationSummaryPage> Engine::organization_summaries(std::uint32_t offset,
                                                               std::uint32_t limit) {
  if (limit == 0 || limit > 100) {
    return Status::invalid_argument("limit must be 1..100");
  }
  Result<std::vector<Customer>> all = engine::every_customer(*impl_, *this);
  if (!all) {
    return all.error();
  }
  Result<std::vector<OrganizationSummary>> orgs = organizations_of(*this, *all);
  if (!orgs) {
    return orgs.error();
  }
  std::vector<OrganizationSummary>& rows = *orgs;
  sort_organizations(rows);
  OrganizationSummaryPage out;
  out.total = rows.size();
  const std::size_t from = std::min<std::size_t>(offset, rows.size());
  const std::size_t to = std::min<std::size_t>(from + limit, rows.size());
  for (std::size_t i = from; i < to; ++i) {
    Result<OrganizationUsage> u = organization_usage(rows[i].organization, 0, 0, "");
    if (u) {
      rows[i].meters = std::move(u->meters);
    } else if (!engine::removed_meanwhile(u.error())) {
      return u.error();
    }
    out.organizations.push_back(std::move(rows[i]));
  }
  return out;
}

}  // namespace tally
