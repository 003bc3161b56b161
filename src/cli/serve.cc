// `tally serve`: the HTTP server on the embedded store.
#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <thread>

#include <CLI/CLI.hpp>
#include <signal.h>
#include <spdlog/spdlog.h>

#include "cli/cli.h"
#include "config/config.h"
#include "core/time.h"
#include "http/api.h"
#include "http/server.h"
#include "webhook/sender.h"

namespace tally::cli {

namespace {

struct ServeOptions {
  DataOptions data;
  std::string listen;
  std::string port_file;
  int threads = -1;
};

// Archives raw events every [retention] archive_interval while the server runs, when
// archive_after is set, on its own thread: ingest and checks go on meanwhile (see
// Engine::archive). The first run comes a minute after start (or one interval, if shorter), so
// a server restarted more often than the interval still archives.
class ArchiveSchedule {
 public:
  // `r`: the [retention] section of the configuration the engine was opened with.
  ArchiveSchedule(Engine& engine, const config::RetentionConfig& r) : engine_(engine) {
    if (r.archive_after_seconds > 0) {
      thread_ = std::thread([this, r] { run(r); });
    }
  }

  ~ArchiveSchedule() { stop(); }

  ArchiveSchedule(const ArchiveSchedule&) = delete;
  ArchiveSchedule& operator=(const ArchiveSchedule&) = delete;

  // Waits for a run in progress to finish.
  void stop() {
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) {
      thread_.join();
    }
  }

 private:
  void run(const config::RetentionConfig& r) {
    spdlog::info("archiving events older than {}s every {}s", r.archive_after_seconds,
                 r.archive_interval_seconds);
    auto wait = std::chrono::seconds(std::min<std::int64_t>(60, r.archive_interval_seconds));
    for (;;) {
      {
        std::unique_lock lock(mutex_);
        if (cv_.wait_for(lock, wait, [this] { return stopping_; })) {
          return;
        }
      }
      wait = std::chrono::seconds(r.archive_interval_seconds);
      // A run stops at its bound; the rest follows at once rather than an interval later.
      while (archive_once() && !stopped()) {
      }
    }
  }

  bool stopped() {
    std::lock_guard lock(mutex_);
    return stopping_;
  }

  // One run; true when it stopped at its bound with older events left.
  bool archive_once() {
    auto res = engine_.archive(ArchiveRequest{});
    if (!res) {
      spdlog::error("scheduled archive failed: {}", res.error().message());
      return false;
    }
    if (res->events == 0) {
      spdlog::debug("scheduled archive: nothing before {}", core::format_rfc3339(res->cutoff_us));
    } else {
      spdlog::info("scheduled archive: {} events before {} to {} ({} bytes, manifest {}){}",
                   res->events, core::format_rfc3339(res->cutoff_us), res->file, res->bytes,
                   res->manifest, res->more ? "; more remain: running again" : "");
    }
    return res->more;
  }

  Engine& engine_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool stopping_ = false;
  std::thread thread_;
};

// ---- the steps of serve ------------------------------------------------------------------------

// Blocks the stop signals in every thread (the caller waits for them) and ignores SIGPIPE.
sigset_t block_stop_signals() {
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return stop_signals;
}

// The configuration file (or the defaults), with the command line's --listen and --threads.
// False after printing why it cannot be served.
bool load_serve_config(const ServeOptions& o, config::Config* cfg) {
  if (!o.data.config_path.empty()) {
    auto c = config::load_config_file(o.data.config_path);
    if (!c) {
      std::fprintf(stderr, "tally: %s\n", c.error().message().c_str());
      return false;
    }
    *cfg = std::move(*c);
  }
  if (!o.listen.empty()) {
    Status s = config::parse_listen(o.listen, &cfg->server.listen_host, &cfg->server.listen_port);
    if (!s.ok()) {
      std::fprintf(stderr, "tally: --listen: %s\n", s.message().c_str());
      return false;
    }
  }
  if (o.threads >= 0) {
    cfg->server.threads = o.threads;
  }
  return true;
}

// The SMTP passwords of [[notifications]], from the environment (never from the file), one per
// entry. False after printing what is missing.
bool smtp_passwords_of(const config::Config& cfg, std::vector<std::string>* passwords) {
  for (std::size_t i = 0; i < cfg.notifications.size(); ++i) {
    const config::NotificationConfig& n = cfg.notifications[i];
    std::string password;
    if (!n.password_env.empty()) {
      const char* p = std::getenv(n.password_env.c_str());
      if (p == nullptr || *p == '\0') {
        std::fprintf(stderr,
                     "tally: notifications[%zu].password_env: the environment variable %s is not "
                     "set (or empty); it must hold the SMTP password of user '%s'\n",
                     i, n.password_env.c_str(), n.user.c_str());
        return false;
      }
      password = p;
    }
    if (!n.ca_file.empty() && !std::ifstream(n.ca_file).good()) {
      std::fprintf(stderr, "tally: notifications[%zu].ca_file: cannot read '%s'\n", i,
                   n.ca_file.c_str());
      return false;
    }
    if (!n.starttls && !n.user.empty()) {
      spdlog::warn(
          "notifications[{}]: starttls = \"off\": the SMTP password of '{}' goes to {} "
          "in plain text",
          i, n.user, n.host);
    }
    passwords->push_back(std::move(password));
  }
  return true;
}

// The engine's options: the data options and TALLY_ADMIN_KEY. False after printing why the
// key is refused.
bool engine_options_of(const ServeOptions& o, EngineOptions* eo) {
  eo->config_path = o.data.config_path;
  eo->data_dir = o.data.data_dir;
  if (const char* k = std::getenv("TALLY_ADMIN_KEY"); k != nullptr && *k != '\0') {
    // The same bounds as server.admin_key in the config: a short key is guessable.
    const std::size_t n = std::strlen(k);
    if (n < 16 || n > 256) {
      std::fprintf(stderr,
                   "tally: TALLY_ADMIN_KEY must be 16 to 256 bytes long, got %zu "
                   "(`openssl rand -hex 32` makes a good one)\n",
                   n);
      return false;
    }
    eo->admin_key = k;
  }
  return true;
}

// Warns when no key can administer the server.
void warn_without_admin_key(const Engine& engine, const EngineOptions& eo,
                            const config::Config& cfg) {
  const std::vector<ApiKeyInfo> keys = engine.list_keys();
  const bool stored_admin = std::any_of(keys.begin(), keys.end(), [](const ApiKeyInfo& k) {
    return k.customer.empty() && k.revoked_at_us == 0 && has(k.scopes, Scope::kAdmin);
  });
  if (eo.admin_key.empty() && cfg.server.admin_key.empty() && !stored_admin) {
    spdlog::warn(
        "no admin key: nobody can manage customers, keys or plans over the API. Set "
        "TALLY_ADMIN_KEY (or [server] admin_key), or create one on the stopped server's data "
        "directory with `tally keys create --admin`");
  }
}

http::ApiOptions api_options_of(const config::Config& cfg) {
  http::ApiOptions api_options;
  api_options.future_skew_seconds_max = cfg.server.future_skew_seconds_max;
  api_options.scan_threads = cfg.server.scan_threads;
  api_options.scan_queue_max = cfg.server.scan_queue_max;
  api_options.page_budget_ms = cfg.server.page_budget_ms;
  api_options.dashboard_session_seconds = cfg.server.dashboard_session_seconds;
  api_options.dashboard_sessions_max = cfg.server.dashboard_sessions_max;
  api_options.currency = cfg.credits.currency;
  api_options.authorize_key_header = cfg.enforcement.authorize_key_header;
  api_options.routes = cfg.routes;
  return api_options;
}

http::ServerOptions server_options_of(const config::Config& cfg) {
  http::ServerOptions so;
  so.host = cfg.server.listen_host;
  so.port = cfg.server.listen_port;
  so.threads = cfg.server.threads;
  if (so.threads == 0 && cfg.cluster) {
    // A cluster node's requests wait on PostgreSQL and Redis rather than on its CPU.
    so.threads = 8 * static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }
  so.body_bytes_max = cfg.server.body_bytes_max;
  so.connections_max = cfg.server.connections_max;
  so.connections_per_address_max = cfg.server.connections_per_address_max;
  so.header_timeout_ms = cfg.server.header_timeout_ms;
  so.idle_timeout_ms = cfg.server.idle_timeout_ms;
  return so;
}

// Says where the server listens: the log, standard output, and --port-file (written whole, by
// a rename).
void announce(const http::Server& server, const std::string& listen_host, const ServeOptions& o,
              const config::Config& cfg) {
  const std::string host =
      listen_host.find(':') != std::string::npos ? "[" + listen_host + "]" : listen_host;
  spdlog::info("tally {} listening on http://{}:{} (data: {})", TALLY_VERSION, host, server.port(),
               o.data.data_dir.empty() ? cfg.server.data_dir : o.data.data_dir);
  std::printf("tally listening on http://%s:%u\n", host.c_str(), server.port());
  std::fflush(stdout);
  if (!o.port_file.empty()) {
    const std::string tmp = o.port_file + ".tmp";
    {
      std::ofstream f(tmp);
      f << server.port() << "\n";
    }
    std::rename(tmp.c_str(), o.port_file.c_str());
  }
}

int serve(const ServeOptions& o) {
  sigset_t stop_signals = block_stop_signals();
  config::Config cfg;
  std::vector<std::string> smtp_passwords;
  EngineOptions eo;
  if (!load_serve_config(o, &cfg) || !smtp_passwords_of(cfg, &smtp_passwords) ||
      !engine_options_of(o, &eo)) {
    return 2;
  }
  auto engine = Engine::open(eo);
  if (!engine) {
    std::fprintf(stderr, "tally: %s\n", engine.error().message().c_str());
    return 1;
  }
  warn_without_admin_key(**engine, eo, cfg);

  http::Api api(**engine, api_options_of(cfg));
  const http::ServerOptions so = server_options_of(cfg);
  // Heads first: a request is authenticated and authorized before its body is read.
  http::Server server(so, [&api](const http::Request& head) { return api.admit(head); });
  api.set_server(&server);
  Status started = server.start();
  if (!started.ok()) {
    std::fprintf(stderr, "tally: %s\n", started.message().c_str());
    return 1;
  }
  announce(server, so.host, o, cfg);

  // Webhook and email deliveries from the outbox, pending ones from before a restart included.
  std::unique_ptr<webhook::Sender> sender;
  if (!cfg.webhooks.empty() || !cfg.notifications.empty()) {
    sender = std::make_unique<webhook::Sender>(**engine, cfg.webhooks, cfg.notifications,
                                               std::move(smtp_passwords), (*engine)->clock());
    sender->start();
  }
  ArchiveSchedule archive_schedule(**engine, cfg.retention);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  spdlog::info("signal {}: finishing in-flight requests", sig);
  server.stop();  // stops accepting; in-flight ingest batches are answered
  api.set_server(nullptr);
  api.stop();               // finishes the scans running on the work pool
  sender.reset();           // finishes the deliveries under way (each within its timeout)
  archive_schedule.stop();  // lets a run in progress finish: its files and write stay whole
  engine->reset();          // drains the commit queue and closes the store
  spdlog::info("stopped");
  return 0;
}

}  // namespace

void register_serve(CLI::App& app) {
  auto o = std::make_shared<ServeOptions>();
  auto* cmd = app.add_subcommand("serve", "run the HTTP server");
  add_data_options(cmd, &o->data);
  cmd->add_option("-l,--listen", o->listen, "HOST:PORT to listen on (overrides the config)");
  cmd->add_option("--threads", o->threads, "HTTP worker threads (0 = one per core)");
  cmd->add_option("--port-file", o->port_file, "write the bound port to this file once listening");
  cmd->callback([o] { std::exit(serve(*o)); });
}

}  // namespace tally::cli
