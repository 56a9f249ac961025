// A test network of namespaces, created fresh and removed on destruction
// (also when a test fails): a bridge ("lan") joining an ingress namespace
// (198.18.0.10, where nginx and the agent run) and one namespace per other
// host. Addresses are in 198.18.0.0/16; nothing leaves the namespaces.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/command.h"
#include "tests/support/temp_dir.h"

extern char** environ;

namespace portcullis::testing {

// A child process (in a namespace) in its own process group; on destruction
// the whole group is stopped (SIGTERM, then SIGKILL) and reaped, so that
// daemons' workers (nginx) go too.
class Process {
 public:
  Process() = default;
  Process(const std::vector<std::string>& argv, const std::string& log) {
    std::vector<char*> args;
    for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    if (posix_spawnp(&pid_, args[0], &actions, &attr, args.data(), environ) != 0) pid_ = -1;
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&actions);
  }
  Process(Process&& o) noexcept : pid_(std::exchange(o.pid_, -1)) {}
  Process& operator=(Process&& o) noexcept {
    Stop();
    pid_ = std::exchange(o.pid_, -1);
    return *this;
  }
  ~Process() { Stop(); }

  // SIGTERM to the group, up to 2 s for it to finish, then SIGKILL.
  void Stop() {
    if (pid_ <= 0) return;
    kill(-pid_, SIGTERM);
    for (int i = 0; i < 100; ++i) {
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        kill(-pid_, SIGKILL);  // stragglers of the group
        pid_ = -1;
        return;
      }
      usleep(20000);
    }
    Kill(SIGKILL);
  }

  bool running() const { return pid_ > 0 && kill(pid_, 0) == 0; }
  pid_t pid() const { return pid_; }
  // Waits for the process to end by itself; returns its exit code.
  int Wait() {
    if (pid_ <= 0) return -1;
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }
  // Sends `sig` to the process (not its group) and reaps it; returns the
  // wait status (or -1). With SIGKILL, the rest of the group is killed too.
  int Kill(int sig) {
    if (pid_ <= 0) return -1;
    kill(pid_, sig);
    int status = 0;
    waitpid(pid_, &status, 0);
    if (sig == SIGKILL) kill(-pid_, SIGKILL);
    pid_ = -1;
    return status;
  }

 private:
  pid_t pid_ = -1;
};

// Runs a shell command inside network namespace `ns` (`ip netns exec`:
// fine for clients; programs that pin BPF objects need nsenter --net).
inline CommandResult InNetns(const std::string& ns, const std::string& command) {
  return RunCommand(absl::StrCat("ip netns exec ", ns, " sh -c '", command, "'"));
}

// The HTTP status of a GET from namespace `ns`, "000" when refused or timed out.
inline std::string HttpStatusFrom(const std::string& ns, const std::string& url,
                                  double timeout = 2) {
  return InNetns(ns, absl::StrCat("curl -s -o /dev/null -w %{http_code} --max-time ", timeout, " ",
                                  url))
      .out;
}

// The sum of the samples of metric `name` in a Prometheus text exposition
// whose lines contain every `want` (label pairs such as `reason="blocklist"`).
inline double SumMetric(absl::string_view text, const std::string& name,
                        const std::vector<std::string>& want = {}) {
  double sum = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name + "{") && !absl::StartsWith(line, name + " ")) continue;
    bool match = true;
    for (const std::string& w : want) match = match && absl::StrContains(line, w);
    double v = 0;
    if (match && absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &v)) sum += v;
  }
  return sum;
}

// nginx in network namespace `ns` answering 200 with `body` on every
// `listen` (ADDR:PORT or [V6]:PORT, plain HTTP), its files in `tmp`; waits
// until the first one answers.
inline Process StartNginxIn(const std::string& ns, const std::vector<std::string>& listen,
                            const std::string& body, const TempDir& tmp) {
  const std::string dir = absl::StrCat(tmp.path(), "/nginx-", ns);
  RunCommand("mkdir -p " + dir);
  std::string lines;
  for (const std::string& l : listen) absl::StrAppend(&lines, "    listen ", l, ";\n");
  tmp.Write(absl::StrCat("nginx-", ns, "/nginx.conf"),
            absl::StrCat("pid ", dir, "/nginx.pid;\nerror_log ", dir,
                         "/error.log;\nevents {}\nhttp {\n  access_log off;\n  server {\n", lines,
                         "    location / { return 200 \"", body, "\\n\"; }\n  }\n}\n"));
  Process p({"ip", "netns", "exec", ns, "nginx", "-c", dir + "/nginx.conf", "-p", dir, "-g",
             "daemon off;"},
            dir + "/stdout.log");
  for (int i = 0; i < 100; ++i) {
    if (RunCommand(absl::StrCat("ip netns exec ", ns, " curl -s -o /dev/null --max-time 1 http://",
                                listen[0], "/"))
            .exit_code == 0) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return p;
}

class Lab {
 public:
  struct Host {
    std::string ns, address;
  };

  // `hosts`: name -> address, e.g. {"cli", "198.18.2.9"}.
  explicit Lab(const std::map<std::string, std::string>& hosts)
      : prefix_(absl::StrCat("pc", getpid() % 100000)) {
    Sh(absl::StrCat("ip netns add ", Ns("lan")));
    namespaces_.push_back(Ns("lan"));
    Sh(absl::StrCat("ip -n ", Ns("lan"), " link add br0 type bridge"));
    Sh(absl::StrCat("ip -n ", Ns("lan"), " link set br0 up"));
    Add("ing", "198.18.0.10");
    for (const auto& [name, address] : hosts) Add(name, address);
  }

  ~Lab() {
    for (auto it = namespaces_.rbegin(); it != namespaces_.rend(); ++it) {
      RunCommand(absl::StrCat("ip netns del ", *it));
    }
  }

  Lab(const Lab&) = delete;
  Lab& operator=(const Lab&) = delete;

  std::string Ns(const std::string& name) const { return prefix_ + name; }
  std::string Link(const std::string& name) const { return prefix_ + name + "0"; }
  const std::string& prefix() const { return prefix_; }
  std::string Address(const std::string& name) const { return addresses_.at(name); }
  const std::string& tmp() const { return tmp_.path(); }

  // Runs a shell command inside a namespace.
  CommandResult In(const std::string& name, const std::string& command) const {
    return InNetns(Ns(name), command);
  }
  // The HTTP status of a GET from host `from`, "000" when refused or timed out.
  std::string Get(const std::string& from, const std::string& url, double timeout = 2) const {
    return HttpStatusFrom(Ns(from), url, timeout);
  }

  // nginx in namespace `name` answering 200 on `ports` (plain HTTP), at the
  // host's address and at each of `also` (addresses added by AddAddress;
  // IPv6 ones in brackets).
  Process StartNginx(const std::string& name, const std::vector<int>& ports,
                     const std::vector<std::string>& also = {}) const {
    std::vector<std::string> listen;
    for (int p : ports) listen.push_back(absl::StrCat(Address(name), ":", p));
    for (const std::string& a : also) {
      for (int p : ports) listen.push_back(absl::StrCat(a, ":", p));
    }
    return StartNginxIn(Ns(name), listen, "ok", tmp_);
  }

  // A second address (ADDR/LEN) on host `name`'s link; IPv6 ones without
  // duplicate address detection, so that they are usable at once.
  void AddAddress(const std::string& name, const std::string& cidr) {
    Sh(absl::StrCat("ip -n ", Ns(name), " addr add ", cidr, " dev ", Link(name),
                    absl::StrContains(cidr, ':') ? " nodad" : ""));
  }

 private:
  void Sh(const std::string& cmd) { RunCommand(cmd); }

  void Add(const std::string& name, const std::string& address) {
    const std::string ns = Ns(name), a = Link(name), b = prefix_ + name + "1";
    Sh("ip netns add " + ns);
    namespaces_.push_back(ns);
    Sh(absl::StrCat("ip link add ", a, " type veth peer name ", b));
    Sh(absl::StrCat("ip link set ", a, " netns ", ns));
    Sh(absl::StrCat("ip link set ", b, " netns ", Ns("lan")));
    Sh(absl::StrCat("ip -n ", Ns("lan"), " link set ", b, " master br0 up"));
    Sh(absl::StrCat("ip -n ", ns, " addr add ", address, "/16 dev ", a));
    Sh(absl::StrCat("ip -n ", ns, " link set ", a, " up"));
    Sh(absl::StrCat("ip -n ", ns, " link set lo up"));
    addresses_[name] = address;
  }

  std::string prefix_;
  TempDir tmp_;
  std::vector<std::string> namespaces_{};
  std::map<std::string, std::string> addresses_;
};

}  // namespace portcullis::testing
