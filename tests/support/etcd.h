// A real etcd cluster for tests: N members of Debian's `etcd` on loopback,
// each with its own data dir in a temp dir and ports the kernel picked free.
// Members can be killed and started again (same data, same ports) to test
// what a lost member or a lost quorum does. Everything is stopped and
// removed on destruction, also when a test fails.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "tests/support/command.h"
#include "tests/support/lab.h"
#include "tests/support/temp_dir.h"

namespace portcullis::testing {

// A loopback TCP port nobody listens on now (the kernel picks it).
inline int UnusedLoopbackPort() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(a);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a));
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

class EtcdCluster {
 public:
  // `extra` goes to every member's command line (--max-request-bytes ...).
  // `wrap` goes before it and before etcdctl's (nsenter --net=... runs the
  // cluster on a test namespace's loopback). With `also_on` (a loopback
  // address such as 127.0.0.2), members also serve clients there, on the
  // same ports: a client given Endpoints(also_on) can be cut off alone.
  explicit EtcdCluster(int members, std::vector<std::string> extra = {},
                       std::vector<std::string> wrap = {}, std::string also_on = "")
      : extra_(std::move(extra)), wrap_(std::move(wrap)), also_on_(std::move(also_on)) {
    for (int i = 0; i < members; ++i) {
      members_.push_back({absl::StrCat("m", i), UnusedLoopbackPort(), UnusedLoopbackPort()});
    }
    std::vector<std::string> peers;
    for (const Member& m : members_) peers.push_back(m.name + "=" + m.PeerUrl());
    initial_cluster_ = absl::StrJoin(peers, ",");
    for (int i = 0; i < members; ++i) Start(i);
  }

  // Starts member i again after Kill(i), with its data and ports.
  void Start(int i) {
    Member& m = members_[i];
    std::vector<std::string> argv = {
        "etcd",
        "--name",
        m.name,
        "--data-dir",
        dir_.File(m.name),
        "--listen-client-urls",
        also_on_.empty() ? m.ClientUrl() : m.ClientUrl() + "," + m.ClientUrl(also_on_),
        "--advertise-client-urls",
        m.ClientUrl(),
        "--listen-peer-urls",
        m.PeerUrl(),
        "--initial-advertise-peer-urls",
        m.PeerUrl(),
        "--initial-cluster",
        initial_cluster_,
        "--initial-cluster-token",
        "portcullis-test",
        "--heartbeat-interval",
        "50",
        "--election-timeout",
        "500",
        "--log-level",
        "warn"};
    argv.insert(argv.end(), extra_.begin(), extra_.end());
    argv.insert(argv.begin(), wrap_.begin(), wrap_.end());
    m.process = Process(argv, dir_.File(m.name + ".log"));
  }
  // kill -9: the member is gone at once, as on a lost node.
  void Kill(int i) { members_[i].process.Kill(SIGKILL); }

  // Waits up to `timeout` until every running member serves: etcdctl finds
  // it healthy (a leader is elected). A client channel made before then
  // waits out gRPC's connect timeout on its first call.
  bool WaitHealthy(std::chrono::seconds timeout = std::chrono::seconds(30)) const {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    for (const Member& m : members_) {
      while (
          m.process.running() &&
          RunCommand(absl::StrCat(absl::StrJoin(wrap_, " "), " etcdctl --endpoints=", m.ClientUrl(),
                                  " --dial-timeout=1s --command-timeout=1s endpoint health"))
                  .exit_code != 0) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
      }
    }
    return true;
  }

  // "http://127.0.0.1:P1,http://127.0.0.1:P2,...", as --etcd-endpoints takes
  // (on `host`: 127.0.0.1, or the cluster's `also_on`).
  std::string Endpoints(const std::string& host = "127.0.0.1") const {
    std::vector<std::string> urls;
    for (const Member& m : members_) urls.push_back(m.ClientUrl(host));
    return absl::StrJoin(urls, ",");
  }
  std::string Endpoint(int i) const { return members_[i].ClientUrl(); }
  int ClientPort(int i) const { return members_[i].client_port; }
  std::string LogOf(int i) const { return dir_.File(members_[i].name + ".log"); }

 private:
  struct Member {
    std::string name;
    int client_port, peer_port;
    Process process;
    std::string ClientUrl(const std::string& host = "127.0.0.1") const {
      return absl::StrCat("http://", host, ":", client_port);
    }
    std::string PeerUrl() const { return absl::StrCat("http://127.0.0.1:", peer_port); }
  };

  TempDir dir_;
  std::vector<std::string> extra_, wrap_;
  std::string also_on_;
  std::string initial_cluster_;
  std::vector<Member> members_;
};

}  // namespace portcullis::testing
