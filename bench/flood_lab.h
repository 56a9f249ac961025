// The flood benchmark's lab (docs/BENCHMARKS.md): a veth pair between a
// sender namespace and a receiver namespace, the receiving veth with GRO and
// threaded NAPI, its kthread pinned to CPU 1; and the sender, which injects
// frames with BPF_PROG_TEST_RUN in live-frames mode and XDP_TX from CPU 0.
#pragma once

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "tests/support/command.h"

namespace portcullis::bench {

using testing::RunCommand;

// Runs `cmd`; a benchmark cannot go on without it, so failure exits.
inline void Sh(const std::string& cmd) {
  auto r = RunCommand(cmd);
  if (r.exit_code != 0) {
    std::cerr << "bench: `" << cmd << "` failed: " << r.err << "\n";
    std::exit(1);
  }
}

inline void PinToCpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

// CPU time a thread has run, from /proc/PID/schedstat.
inline uint64_t ThreadRuntimeNs(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/schedstat"));
  uint64_t runtime = 0;
  in >> runtime;
  return runtime;
}

inline int FindNapiThread(const std::string& ifname) {
  const std::string want = ("napi/" + ifname).substr(0, 15);
  DIR* d = opendir("/proc");
  int found = -1;
  while (struct dirent* e = readdir(d)) {
    int pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid)) continue;
    std::ifstream comm(absl::StrCat("/proc/", pid, "/comm"));
    std::string name;
    std::getline(comm, name);
    if (absl::StartsWith(name, want)) found = pid;
  }
  closedir(d);
  return found;
}

// Sends `count` copies of `frame` out of `ifindex` (in the calling thread's
// netns) with live-frames XDP_TX, as fast as `tx_prog` lets them go.
inline void Inject(int tx_prog, int ifindex, const std::vector<uint8_t>& frame, uint32_t count) {
  struct xdp_md ctx = {};
  ctx.data_end = static_cast<__u32>(frame.size());
  ctx.ingress_ifindex = static_cast<__u32>(ifindex);
  LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
              .data_size_in = static_cast<__u32>(frame.size()), .ctx_in = &ctx,
              .ctx_size_in = sizeof(ctx), .repeat = static_cast<int>(count),
              .flags = BPF_F_TEST_XDP_LIVE_FRAMES, .batch_size = 64);
  if (bpf_prog_test_run_opts(tx_prog, &opts) != 0) {
    std::perror("bpf_prog_test_run_opts(live frames)");
    std::exit(1);
  }
}

// The counters of `ethtool -S dev` in namespace `ns`, by name.
inline std::map<std::string, uint64_t> EthtoolStats(const std::string& ns, const std::string& dev) {
  std::map<std::string, uint64_t> out;
  const std::string stats = RunCommand("ip netns exec " + ns + " ethtool -S " + dev).out;
  for (absl::string_view line : absl::StrSplit(stats, '\n')) {
    const size_t colon = line.find(':');
    uint64_t v = 0;
    if (colon != absl::string_view::npos &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(line.substr(colon + 1)), &v)) {
      out[std::string(absl::StripAsciiWhitespace(line.substr(0, colon)))] = v;
    }
  }
  return out;
}

// The sender's veth counts what its peer's ring took and what it refused.
struct TxCount {
  uint64_t sent = 0, refused = 0;
  double overrun() const { return sent + refused ? double(refused) / double(sent + refused) : 0; }
  TxCount operator-(const TxCount& o) const { return {sent - o.sent, refused - o.refused}; }
};

// The policy every flood is measured against (the nftables rules of
// flood_bench.cc say the same).
inline constexpr char kFloodPolicy[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: flood}
spec:
  defaultAction: deny
  blocklist: [198.18.128.0/17]
  failsafe:
    - {ports: [22], proto: tcp, from: any}
  ports:
    - {ports: [443, 8443], proto: tcp, from: any}
  rateLimits:
    syn:
      perSource: {rate: 100, burst: 200}
      global: {rate: 20000, burst: 40000}
)";

// kFloodPolicy with its `line` replaced by `with`.
inline std::string PolicyWith(const std::string& line, const std::string& with) {
  std::string p = kFloodPolicy;
  p.replace(p.find(line), line.size(), with);
  return p;
}

// kFloodPolicy with `cookies: mode`.
inline std::string FloodPolicyWithCookies(const std::string& mode) {
  const std::string global = "      global: {rate: 20000, burst: 40000}\n";
  return PolicyWith(global, absl::StrCat(global, "      cookies: ", mode, "\n"));
}

// A TCP socket listening on addr:port in the calling thread's namespace;
// exits on failure.
int ListenOn(const char* addr, uint16_t port);

// The loop count that paces a sender to `mpps`, from its rates at `lo` and
// `hi` spins (`mpps_at(spins)`): time per frame is linear in the count.
int SpinsFor(double mpps, int lo, int hi, const std::function<double(int)>& mpps_at);

// bench/bpf/spoof_tx.bpf.c, loaded: a sender whose frames come from random
// sources, paced by `spins` (docs/BENCHMARKS.md). Configure() before the
// first run.
class SpoofSender {
 public:
  // Loads the object at `path`; exits on failure.
  explicit SpoofSender(const std::string& path);
  ~SpoofSender();
  SpoofSender(const SpoofSender&) = delete;
  SpoofSender& operator=(const SpoofSender&) = delete;

  int prog_fd() const { return prog_fd_; }
  // The XDP program for the sender's veth that drops what the receiver
  // sends back to the spoofed sources.
  int sink_fd() const { return sink_fd_; }
  // Sends copies of `frame` (an untagged TCP SYN without options: from
  // 198.19.0.0/16 for IPv4, any /64 of its /32 for IPv6), after `spins`
  // loop iterations each. Inject() frame() with prog_fd().
  void Configure(const std::vector<uint8_t>& frame, uint32_t spins);
  void SetSpins(uint32_t spins) { Configure(template_, spins); }
  const std::vector<uint8_t>& frame() const { return frame_; }

 private:
  std::vector<uint8_t> template_, frame_;  // as given; padded for the program
  struct bpf_object* obj_ = nullptr;
  int prog_fd_ = -1, sink_fd_ = -1, cfg_fd_ = -1;
};

// The namespaces, veths and pin dir of one run. The destructor removes them
// (the benchmark's signal handler exits, which runs it).
class FloodLab {
 public:
  static constexpr char kTxAddr[] = "198.18.0.1", kRxAddr[] = "198.18.0.10";
  static constexpr char kTxAddr6[] = "2001:db8:18::1", kRxAddr6[] = "2001:db8:18::10";

  // Builds the lab; exits on failure.
  static FloodLab& Create() {
    static FloodLab lab;
    lab.Build();
    return lab;
  }
  ~FloodLab() {
    if (tx_ns.empty()) return;
    RunCommand("ip netns del " + tx_ns);
    RunCommand("ip netns del " + rx_ns);
    RunCommand("rm -rf " + pin_dir);
  }

  // Enters a namespace (the calling thread's network namespace only).
  void EnterRx() const { setns(rx_fd, CLONE_NEWNET); }
  void EnterTx() const { setns(tx_fd, CLONE_NEWNET); }
  TxCount Tx() const {
    std::map<std::string, uint64_t> s = EthtoolStats(tx_ns, tx_if);
    return {s["tx_queue_0_xdp_xmit"], s["tx_queue_0_xdp_xmit_errors"]};
  }
  // A SYN from `src` to the receiver's port `dport` (its IPv4 or IPv6
  // address, as `src`'s), addressed to its MAC.
  std::vector<uint8_t> SynFrom(const std::string& src, uint16_t dport) const;

  std::string tx_ns, rx_ns, tx_if, rx_if, pin_dir;
  int tx_fd = -1, rx_fd = -1, tx_ifindex = 0, napi = -1;
  uint8_t rx_mac[6] = {};

 private:
  FloodLab() = default;
  void Build();
};

}  // namespace portcullis::bench
