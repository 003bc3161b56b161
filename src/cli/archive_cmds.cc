// `tally archive` and `tally restore`: move old raw events out of a data directory to archive
// files and back (docs/operations.md, "Archiving"). Both open the data directory read-write, so
// they run while the server is stopped; a running server archives on its own schedule and
// through POST /v1/admin/archive.
#include <cstdio>

#include <CLI/CLI.hpp>

#include "cli/cli.h"
#include "config/config.h"
#include "core/time.h"
#include "http/json_codec.h"

namespace tally::cli {

namespace {

struct ArchiveCli {
  DataOptions data;
  std::string older_than;
  std::string before;
  std::string out;
};

struct RestoreCli {
  DataOptions data;
  std::string path;
};

// Opens the data directory read-write; when a server holds it, says what to do instead.
std::unique_ptr<Engine> open_for(const DataOptions& data, const char* command) {
  EngineOptions eo;
  eo.config_path = data.config_path;
  eo.data_dir = data.data_dir;
  auto e = Engine::open(eo);
  if (e) {
    return std::move(*e);
  }
  std::fprintf(stderr, "tally: %s\n", e.error().message().c_str());
  if (e.error().code() == StatusCode::kUnavailable) {
    if (std::string_view(command) == "archive") {
      std::fprintf(stderr,
                   "tally: a running server holds this data directory. It archives by itself "
                   "every [retention] archive_interval when archive_after is set; to archive "
                   "now, send POST /v1/admin/archive with an admin key, e.g. "
                   "{\"older_than\": \"90d\"}.\n");
    } else {
      std::fprintf(stderr,
                   "tally: a running server holds this data directory: stop it, run tally "
                   "%s, then start it again.\n",
                   command);
    }
  }
  return nullptr;
}

bool needs_config(const DataOptions& data, const char* command) {
  if (!data.config_path.empty())
    return true;
  // Archiving records each meter's share of the archived events: it must see the server's
  // meters, which live in the configuration file.
  std::fprintf(stderr,
               "tally: %s needs --config FILE, the server's configuration: meters and prices "
               "are defined there, not stored in the data directory\n",
               command);
  return false;
}

int archive(const ArchiveCli& o) {
  if (!needs_config(o.data, "archive"))
    return 2;
  ArchiveRequest req;
  req.out_dir = o.out;
  if (!o.older_than.empty() && !o.before.empty()) {
    std::fprintf(stderr, "tally: give --older-than or --before, not both\n");
    return 2;
  }
  if (!o.older_than.empty()) {
    Status s = config::parse_duration_seconds(o.older_than, &req.older_than_seconds);
    if (!s.ok() || req.older_than_seconds <= 0) {
      std::fprintf(stderr, "tally: --older-than: %s\n",
                   s.ok() ? "must be positive" : s.message().c_str());
      return 2;
    }
  }
  if (!o.before.empty()) {
    auto t = core::parse_rfc3339(o.before);
    if (!t) {
      std::fprintf(stderr, "tally: --before: %s\n", t.error().message().c_str());
      return 2;
    }
    req.before_us = *t;
  }
  auto engine = open_for(o.data, "archive");
  if (!engine)
    return 1;
  auto r = engine->archive(req);
  if (!r) {
    std::fprintf(stderr, "tally: archive: %s\n", r.error().message().c_str());
    return r.error().code() == StatusCode::kInvalidArgument ? 2 : 1;
  }
  if (r->events == 0) {
    std::fprintf(stderr, "nothing to archive: no event is older than %s\n",
                 core::format_rfc3339(r->cutoff_us).c_str());
  } else {
    std::fprintf(stderr, "archived %llu events (%llu bytes) to %s, manifest %s%s\n",
                 static_cast<unsigned long long>(r->events),
                 static_cast<unsigned long long>(r->bytes), r->file.c_str(), r->manifest.c_str(),
                 r->more ? "; more remain: run it again" : "");
  }
  std::printf("%s\n", http::archive_result_json(*r).c_str());
  return 0;
}

int restore(const RestoreCli& o) {
  if (!needs_config(o.data, "restore"))
    return 2;
  auto engine = open_for(o.data, "restore");
  if (!engine)
    return 1;
  auto r = engine->restore(o.path);
  if (!r) {
    std::fprintf(stderr, "tally: restore: %s\n", r.error().message().c_str());
    return 1;
  }
  std::fprintf(stderr, "restored %llu events from %s (%llu already present)\n",
               static_cast<unsigned long long>(r->events), r->file.c_str(),
               static_cast<unsigned long long>(r->already_present));
  std::printf("%s\n", http::restore_result_json(*r).c_str());
  return 0;
}

}  // namespace

void register_archive(CLI::App& app) {
  auto ao = std::make_shared<ArchiveCli>();
  auto* a = app.add_subcommand("archive",
                               "move raw events older than an age to a zstd JSON Lines file and a "
                               "manifest (server stopped)");
  add_data_options(a, &ao->data);
  a->add_option("--older-than", ao->older_than,
                "archive events older than this duration (e.g. 90d); default: [retention] "
                "archive_after");
  a->add_option("--before", ao->before, "archive events before this RFC 3339 time");
  a->add_option("--out", ao->out, "archive directory (default: [retention] archive_dir)");
  a->callback([ao] { std::exit(archive(*ao)); });

  auto ro = std::make_shared<RestoreCli>();
  auto* r = app.add_subcommand("restore",
                               "put the events of an archive back into the data directory "
                               "(server stopped)");
  add_data_options(r, &ro->data);
  r->add_option("archive", ro->path, "the archive's .jsonl.zst file or its .manifest.json")
      ->required();
  r->callback([ro] { std::exit(restore(*ro)); });
}

}  // namespace tally::cli
