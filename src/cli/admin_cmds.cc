// `tally keys ...` and `tally customers ...`: work on a data directory no server is using
// (use the HTTP API while one runs).
#include <cstdio>

#include <CLI/CLI.hpp>

#include "cli/cli.h"
#include "common/json_writer.h"
#include "http/json_codec.h"

namespace tally::cli {

namespace {

int print_json(const std::string& s) {
  std::printf("%s\n", s.c_str());
  return 0;
}

int fail(const Status& s) {
  std::fprintf(stderr, "tally: %s\n", s.message().c_str());
  return 1;
}

struct KeyCreate {
  DataOptions data;
  bool admin = false;
  std::string customer;
  std::string scopes;
  bool scopes_given = false;
  std::string name;
};

int keys_create(const KeyCreate& o) {
  if (o.admin == !o.customer.empty()) {
    std::fprintf(stderr, "tally: give exactly one of --admin or --customer ID\n");
    return 2;
  }
  NewApiKeyRequest req;
  req.customer = o.customer;
  req.name = o.name;
  std::size_t start = 0;
  while (start < o.scopes.size()) {
    auto comma = o.scopes.find(',', start);
    if (comma == std::string::npos)
      comma = o.scopes.size();
    const std::string s = o.scopes.substr(start, comma - start);
    if (s == "ingest")
      req.scopes |= Scope::kIngest;
    else if (s == "check")
      req.scopes |= Scope::kCheck;
    else if (s == "read")
      req.scopes |= Scope::kRead;
    else if (!s.empty()) {
      std::fprintf(stderr, "tally: unknown scope '%s' (ingest, check, read)\n", s.c_str());
      return 2;
    }
    start = comma + 1;
  }
  if (o.scopes_given && req.scopes == Scope::kNone) {
    std::fprintf(stderr, "tally: --scopes names no scope (ingest, check, read)\n");
    return 2;
  }
  auto engine = open_engine(o.data, false);
  if (!engine)
    return 1;
  auto k = engine->create_key(req);
  if (!k)
    return fail(k.error());
  common::JsonWriter w;
  w.begin_object()
      .key("id")
      .value(k->info.id)
      .key("key")
      .value(k->secret)
      .key("prefix")
      .value(k->info.prefix);
  w.key("customer");
  k->info.customer.empty() ? w.null() : w.value(k->info.customer);
  w.key("scopes");
  http::write_scopes(w, k->info.scopes);
  w.end_object();
  std::fprintf(stderr, "Save the key now: only its hash is stored.\n");
  return print_json(w.take());
}

int keys_list(const DataOptions& data) {
  auto engine = open_engine(data, true);
  if (!engine) {
    return 1;
  }
  common::JsonWriter w;
  w.begin_object().key("keys").begin_array();
  for (const auto& k : engine->list_keys()) {
    http::write_key(w, k);
  }
  w.end_array().end_object();
  return print_json(w.take());
}

int keys_revoke(const DataOptions& data, const std::string& id) {
  auto engine = open_engine(data, false);
  if (!engine) {
    return 1;
  }
  Status s = engine->revoke_key(id);
  return s.ok() ? print_json("{\"id\":\"" + id + "\",\"revoked\":true}") : fail(s);
}

struct CustomerCreate {
  DataOptions data;
  Customer c;
};

int customers_create(const CustomerCreate& o) {
  auto engine = open_engine(o.data, false);
  if (!engine) {
    return 1;
  }
  auto r = engine->create_customer(o.c);
  if (!r) {
    return fail(r.error());
  }
  common::JsonWriter w;
  http::write_customer(w, *r);
  return print_json(w.take());
}

int customers_list(const DataOptions& data) {
  auto engine = open_engine(data, true);
  if (!engine) {
    return 1;
  }
  common::JsonWriter w;
  w.begin_object().key("customers").begin_array();
  for (const auto& c : engine->list_customers()) {
    http::write_customer(w, c);
  }
  w.end_array().end_object();
  return print_json(w.take());
}

// tally keys create | list | revoke
void register_keys(CLI::App& app) {
  auto* keys = app.add_subcommand("keys", "manage API keys (server stopped)");
  keys->require_subcommand(1);

  auto kc = std::make_shared<KeyCreate>();
  auto* create = keys->add_subcommand("create", "create a key and print it once");
  add_data_options(create, &kc->data);
  create->add_flag("--admin", kc->admin, "an admin key");
  create->add_option("--customer", kc->customer, "a key for this customer");
  create->add_option("--scopes", kc->scopes,
                     "comma-separated: ingest,check,read (default: all; with --admin, a key for "
                     "every customer with only these scopes, not an admin key)");
  create->add_option("--name", kc->name, "a label");
  create->callback([kc, create] {
    kc->scopes_given = create->count("--scopes") > 0;
    std::exit(keys_create(*kc));
  });

  auto kl = std::make_shared<DataOptions>();
  auto* list = keys->add_subcommand("list", "list keys (never their secrets)");
  add_data_options(list, kl.get());
  list->callback([kl] { std::exit(keys_list(*kl)); });

  auto kr = std::make_shared<std::pair<DataOptions, std::string>>();
  auto* revoke = keys->add_subcommand("revoke", "revoke a key by id");
  add_data_options(revoke, &kr->first);
  revoke->add_option("id", kr->second, "key id (key_...)")->required();
  revoke->callback([kr] { std::exit(keys_revoke(kr->first, kr->second)); });
}

// tally customers create | list
void register_customers(CLI::App& app) {
  auto* customers = app.add_subcommand("customers", "manage customers (server stopped)");
  customers->require_subcommand(1);

  auto cc = std::make_shared<CustomerCreate>();
  auto* create = customers->add_subcommand("create", "create a customer");
  add_data_options(create, &cc->data);
  create->add_option("id", cc->c.id, "customer id")->required();
  create->add_option("--name", cc->c.name, "display name");
  create->add_option("--email", cc->c.email, "email");
  create->add_option("--timezone", cc->c.timezone, "IANA time zone (default UTC)");
  create->callback([cc] { std::exit(customers_create(*cc)); });

  auto cl = std::make_shared<DataOptions>();
  auto* list = customers->add_subcommand("list", "list customers");
  add_data_options(list, cl.get());
  list->callback([cl] { std::exit(customers_list(*cl)); });
}

}  // namespace

void register_admin(CLI::App& app) {
  register_keys(app);
  register_customers(app);
}

}  // namespace tally::cli
