// `tally`: the server, and the tools that work on its data directory.
#include <cstdio>
#include <utility>

#include <CLI/CLI.hpp>

#include "cli/cli.h"

namespace tally::cli {

void add_data_options(CLI::App* cmd, DataOptions* o) {
  cmd->add_option("-c,--config", o->config_path, "TOML configuration file");
  cmd->add_option("-d,--data,--data-dir", o->data_dir,
                  "data directory (overrides the config's data_dir)");
}

bool load_config(const DataOptions& o, config::Config* out) {
  *out = config::Config{};
  if (o.config_path.empty()) {
    return true;
  }
  auto c = config::load_config_file(o.config_path);
  if (!c) {
    std::fprintf(stderr, "tally: %s\n", c.error().message().c_str());
    return false;
  }
  *out = std::move(*c);
  return true;
}

std::unique_ptr<Engine> open_engine(const DataOptions& o, bool read_only) {
  EngineOptions eo;
  eo.config_path = o.config_path;
  eo.data_dir = o.data_dir;
  eo.read_only = read_only;
  auto e = Engine::open(eo);
  if (!e) {
    std::fprintf(stderr, "tally: %s\n", e.error().message().c_str());
    return nullptr;
  }
  return std::move(*e);
}

}  // namespace tally::cli

int main(int argc, char** argv) {
  CLI::App app{"Tally: usage metering and quota enforcement"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string("tally ") + TALLY_VERSION);
  auto* version = app.add_subcommand("version", "print the version");
  version->callback([] { std::printf("tally %s\n", TALLY_VERSION); });
  tally::cli::register_serve(app);
  tally::cli::register_admin(app);
  tally::cli::register_data(app);
  tally::cli::register_export(app);
  tally::cli::register_archive(app);
  tally::cli::register_migrate(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tally: %s\n", e.what());
    return 1;
  }
  return 0;
}
