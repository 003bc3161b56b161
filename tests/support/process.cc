// Child processes and temporary files for tests (see process.h).
//
// start() prepares everything the child needs (argv, envp, the log descriptor) before fork(), so
// the child only makes async-signal-safe calls between fork and exec: the test binary has
// threads, and anything else could deadlock on a lock another thread held at fork time. Exec
// failure travels back through a close-on-exec pipe: zero bytes read means exec succeeded.
#include "support/process.h"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;

namespace tally::testing {

namespace {

std::string errno_text(int error) {
  return std::strerror(error);
}

int decode_wait_status(int status) {
  if (WIFEXITED(status)) {
    return WEXITSTATUS(status);
  }
  if (WIFSIGNALED(status)) {
    return 128 + WTERMSIG(status);
  }
  return -1;
}

// Blocking waitpid that retries on EINTR. Returns the decoded status, or -1 when the child is
// not ours to reap (ECHILD).
int wait_blocking(pid_t pid) {
  int status = 0;
  for (;;) {
    pid_t r = ::waitpid(pid, &status, 0);
    if (r == pid) {
      return decode_wait_status(status);
    }
    if (r < 0 && errno != EINTR) {
      return -1;
    }
  }
}

}  // namespace

Result<ChildProcess> ChildProcess::start(const ProcessOptions& options) {
  // Everything the child touches is built here, before fork.
  std::vector<std::string> arg_storage;
  arg_storage.push_back(options.executable);
  arg_storage.insert(arg_storage.end(), options.args.begin(), options.args.end());
  std::vector<char*> argv;
  for (auto& a : arg_storage) {
    argv.push_back(a.data());
  }
  argv.push_back(nullptr);

  std::vector<std::string> env_storage;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    std::string_view entry(*e);
    std::string_view name = entry.substr(0, entry.find('='));
    bool overridden = std::any_of(options.env.begin(), options.env.end(),
                                  [&](const auto& kv) { return kv.first == name; });
    if (!overridden) {
      env_storage.emplace_back(entry);
    }
  }
  for (const auto& [name, value] : options.env) {
    env_storage.push_back(name + "=" + value);
  }
  std::vector<char*> envp;
  for (auto& e : env_storage) {
    envp.push_back(e.data());
  }
  envp.push_back(nullptr);

  int log_fd = -1;
  if (!options.log_path.empty()) {
    log_fd = ::open(options.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) {
      return Status::io_error("cannot open log file " + options.log_path + ": " +
                              errno_text(errno));
    }
  }
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  int exec_pipe[2];
  if (::pipe2(exec_pipe, O_CLOEXEC) != 0) {
    int error = errno;
    if (log_fd >= 0) {
      ::close(log_fd);
    }
    if (null_fd >= 0) {
      ::close(null_fd);
    }
    return Status::io_error("pipe2 failed: " + errno_text(error));
  }
  const char* working_dir = options.working_dir.empty() ? nullptr : options.working_dir.c_str();
  const pid_t parent = ::getpid();

  pid_t pid = ::fork();
  if (pid == 0) {
    // Child: async-signal-safe calls only.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) {
      ::_exit(127);  // the test died before prctl took effect
    }
    sigset_t none;
    ::sigemptyset(&none);
    ::sigprocmask(SIG_SETMASK, &none, nullptr);

    struct sigaction dfl {};

    dfl.sa_handler = SIG_DFL;
    ::sigaction(SIGPIPE, &dfl, nullptr);
    if (null_fd >= 0) {
      ::dup2(null_fd, STDIN_FILENO);
    }
    if (log_fd >= 0) {
      ::dup2(log_fd, STDOUT_FILENO);
      ::dup2(log_fd, STDERR_FILENO);
    }
    int error = 0;
    if (working_dir != nullptr && ::chdir(working_dir) != 0) {
      error = errno;
    } else {
      ::execve(argv[0], argv.data(), envp.data());
      error = errno;
    }
    ssize_t ignored = ::write(exec_pipe[1], &error, sizeof(error));
    (void)ignored;
    ::_exit(127);
  }

  int fork_error = errno;
  ::close(exec_pipe[1]);
  if (log_fd >= 0) {
    ::close(log_fd);
  }
  if (null_fd >= 0) {
    ::close(null_fd);
  }
  if (pid < 0) {
    ::close(exec_pipe[0]);
    return Status::io_error("fork failed: " + errno_text(fork_error));
  }
  int child_error = 0;
  ssize_t n;
  do {
    n = ::read(exec_pipe[0], &child_error, sizeof(child_error));
  } while (n < 0 && errno == EINTR);
  ::close(exec_pipe[0]);
  if (n > 0) {
    wait_blocking(pid);
    return Status::io_error("cannot start " + options.executable + ": " + errno_text(child_error));
  }
  return ChildProcess(pid);
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept
    : pid_(std::exchange(other.pid_, -1)), exit_code_(std::move(other.exit_code_)) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    reap_or_kill();
    pid_ = std::exchange(other.pid_, -1);
    exit_code_ = std::move(other.exit_code_);
  }
  return *this;
}

ChildProcess::~ChildProcess() {
  reap_or_kill();
}

void ChildProcess::reap_or_kill() {
  if (pid_ > 0 && !exit_code_) {
    ::kill(pid_, SIGKILL);
    exit_code_ = wait_blocking(pid_);
  }
}

bool ChildProcess::send_signal(int signal) {
  if (pid_ <= 0 || exit_code_) {
    return false;
  }
  return ::kill(pid_, signal) == 0;
}

bool ChildProcess::kill_hard() {
  return send_signal(SIGKILL);
}

std::optional<int> ChildProcess::wait_exit(std::uint32_t timeout_ms) {
  if (exit_code_ || pid_ <= 0) {
    return exit_code_;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  auto pause = std::chrono::milliseconds(1);
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      exit_code_ = decode_wait_status(status);
      return exit_code_;
    }
    if (r < 0 && errno != EINTR) {
      exit_code_ = -1;  // ECHILD: not ours to reap any more
      return exit_code_;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return std::nullopt;
    }
    std::this_thread::sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(10));
  }
}

bool ChildProcess::running() {
  return !wait_exit(0).has_value();
}

std::string make_temp_dir(std::string_view prefix) {
  std::string path = "/tmp/";
  for (char c : prefix) {
    bool safe = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                c == '-' || c == '_' || c == '.';
    path += safe ? c : '_';
  }
  path += "XXXXXX";
  if (::mkdtemp(path.data()) == nullptr) {
    return {};
  }
  return path;
}

void remove_tree(const std::string& path) {
  std::filesystem::path normal = std::filesystem::path(path).lexically_normal();
  auto it = normal.begin();
  // Inside /tmp means exactly: "/", "tmp", then at least one more component.
  if (!normal.is_absolute() || it == normal.end() || *it != "/" || ++it == normal.end() ||
      *it != "tmp" || ++it == normal.end() || it->empty()) {
    return;
  }
  std::error_code ignored;
  std::filesystem::remove_all(normal, ignored);
}

std::optional<std::string> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return std::nullopt;
  }
  std::ostringstream out;
  out << in.rdbuf();
  if (in.bad()) {
    return std::nullopt;
  }
  return out.str();
}

bool wait_for_file(const std::string& path, std::uint32_t timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    std::error_code ec;
    if (std::filesystem::exists(path, ec)) {
      return true;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      return false;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

bool loopback_port_free(std::uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return false;
  }
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::uint16_t pick_loopback_port(std::uint16_t low, std::uint16_t high,
                                 const std::function<bool(std::uint16_t)>& also) {
  static thread_local std::mt19937 rng(std::random_device{}());
  std::uniform_int_distribution<int> dist(low, high);
  for (int attempt = 0; attempt < 200; ++attempt) {
    auto port = static_cast<std::uint16_t>(dist(rng));
    if (loopback_port_free(port) && (!also || also(port))) {
      return port;
    }
  }
  return 0;
}

}  // namespace tally::testing
