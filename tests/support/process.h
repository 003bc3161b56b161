// Child processes and temporary files for end-to-end tests (a real `tally serve`, crash tests).
//
// ChildProcess owns one child: it is signalled and reaped by pid only, never by name, so tests
// running in parallel cannot touch each other's servers. A child still running when its
// ChildProcess is destroyed is killed (SIGKILL) and reaped, so a failing test leaves no server
// behind; on Linux the child is also killed if the test process dies (PR_SET_PDEATHSIG, which
// fires when the *thread* that started it exits: start children from the test's main thread).
//
// Thread safety: a ChildProcess is used from one thread. The free functions are thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <sys/types.h>

#include "tally/status.h"

namespace tally::testing {

struct ProcessOptions {
  std::string executable;         // path to the program (not searched in PATH)
  std::vector<std::string> args;  // argv[1...]; argv[0] is `executable`
  // Added to the test's own environment, replacing variables of the same name.
  std::vector<std::pair<std::string, std::string>> env;
  // stdout and stderr are appended here (created if missing); empty = inherit the test's.
  std::string log_path;
  std::string working_dir;  // empty = the test's
};

class ChildProcess {
 public:
  // Starts the process. Returns kIOError when the log file cannot be opened, fork fails, or the
  // exec fails (e.g. no such executable), naming the executable and the errno text.
  static Result<ChildProcess> start(const ProcessOptions& options);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  // Kills (SIGKILL) and reaps the child if it is still running.
  ~ChildProcess();

  pid_t pid() const { return pid_; }

  // Sends `signal` to the child. False when it has already been reaped or kill(2) fails.
  bool send_signal(int signal);
  // SIGKILL, by pid. Use wait_exit() afterwards to reap it.
  bool kill_hard();
  // Waits up to `timeout_ms` for the child to exit and reaps it. Returns its exit code, or
  // 128 + N when it was killed by signal N (the shell's convention); nullopt on timeout.
  // Once reaped, every later call returns the same value at once.
  std::optional<int> wait_exit(std::uint32_t timeout_ms);
  // True while the child has not been observed to exit.
  bool running();

 private:
  explicit ChildProcess(pid_t pid) : pid_(pid) {}

  void reap_or_kill();

  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

// Creates a fresh directory /tmp/<prefix>XXXXXX (mkdtemp) and returns its path, or "" on failure.
std::string make_temp_dir(std::string_view prefix);

// Deletes `path` and everything under it. Refuses (does nothing) unless the path is inside
// /tmp/, so a bad variable cannot wipe anything else.
void remove_tree(const std::string& path);

// The whole file, or nullopt when it cannot be read.
std::optional<std::string> read_file(const std::string& path);

// Waits up to `timeout_ms` for `path` to exist. True when it does.
bool wait_for_file(const std::string& path, std::uint32_t timeout_ms);

// Whether 127.0.0.1:`port` can be bound now (nothing listens there).
bool loopback_port_free(std::uint16_t port);

// A random port in [low, high] that is free on loopback now and that `also` accepts (a server
// needing a second port checks it there); 0 when 200 tries find none. Another process may take
// it before the caller binds it: servers started on it retry with another.
std::uint16_t pick_loopback_port(std::uint16_t low, std::uint16_t high,
                                 const std::function<bool(std::uint16_t)>& also = {});

}  // namespace tally::testing
