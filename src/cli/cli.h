// The `tally` command: one function per subcommand, each a thin client of tally::Engine.
#pragma once

#include <string>

#include <tally/engine.h>

#include "config/config.h"

namespace CLI {
class App;
}

namespace tally::cli {

// Options every data command shares.
struct DataOptions {
  std::string config_path;
  std::string data_dir;
};

void add_data_options(CLI::App* cmd, DataOptions* o);
// The command's own copy of the configuration (the engine keeps its copy to itself): the
// --config file, or the defaults without one. Prints the error and returns false on failure.
bool load_config(const DataOptions& o, config::Config* out);
// Opens the engine for a command; prints the error and returns nullptr on failure.
std::unique_ptr<Engine> open_engine(const DataOptions& o, bool read_only);

void register_serve(CLI::App& app);
void register_admin(CLI::App& app);    // keys, customers
void register_data(CLI::App& app);     // ingest, query, usage, verify
void register_export(CLI::App& app);   // export
void register_archive(CLI::App& app);  // archive, restore
void register_migrate(CLI::App& app);  // migrate (the cluster mode's PostgreSQL schema)

}  // namespace tally::cli
