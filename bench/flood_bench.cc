// Packets per second dropped on a veth pair between two namespaces, for the
// agent's XDP program (native and generic) against the same policy written
// for nftables (netdev ingress hook, and an inet input chain). Not a test.
//
// Method (docs/BENCHMARKS.md): a sender thread in one namespace injects
// frames with BPF_PROG_TEST_RUN in live-frames mode and XDP_TX, so they
// leave through the sender's veth and arrive at the receiver's; the
// receiving veth has GRO on and threaded NAPI, its kthread pinned to a CPU
// of its own. Every filter is measured in every round, interleaved; the
// figure is the receiving kthread's CPU time (/proc/PID/schedstat) per
// packet the filter dropped, and its inverse as Mpps of one CPU.
//
// Two regimes, both printed: "overload" (the sender as fast as it goes, the
// issue's method) and "equal offered load" (the sender paced to the same
// rate for every filter, below every filter's capacity). Each row also shows
// the overrun: the share of frames the receiver's full veth ring refused.
// Refused frames go back to the sender's page pool under the same lock the
// receiver's drops take, so an overrun filter also pays for the contention.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <dirent.h>
#include <fcntl.h>
#include <linux/bpf.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "bench/tiny_programs.h"
#include "datapath/attach.h"
#include "datapath/counters.h"
#include "datapath/datapath.h"
#include "datapath/policy_installer.h"
#include "policy/compiler.h"
#include "policy/validator.h"
#include "tests/support/command.h"
#include "tests/support/frame.h"

namespace portcullis::bench {
namespace {

using testing::RunCommand;

constexpr uint32_t kFramesPerRun = 3'000'000;
constexpr int kRounds = 3;
// Equal offered load: below the capacity of the slowest filter here (nftables
// inet input, about 2.5 Mpps), so that no filter is overrun.
constexpr double kPacedMpps = 1.5;
constexpr uint32_t kPacedFramesPerRun = 1'500'000;

constexpr char kPolicy[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: flood}
spec:
  defaultAction: deny
  blocklist: [198.18.128.0/17]
  failsafe:
    - {ports: [22], proto: tcp, from: any}
  ports:
    - {ports: [443], proto: tcp, from: any}
  rateLimits:
    syn:
      perSource: {rate: 100, burst: 200}
)";

// The same policy for nftables: blocklist, then a per-source SYN meter.
std::string NftRules(const std::string& family_hook, const std::string& dev) {
  const bool netdev = family_hook == "netdev";
  return absl::StrCat(
      "table ", netdev ? "netdev" : "inet", " pcbench {\n  chain c {\n    type filter hook ",
      netdev ? "ingress device " + dev : "input", " priority 0; policy accept;\n",
      netdev ? "    meta protocol != ip accept\n" : "",
      "    ip saddr 198.18.128.0/17 counter drop\n",
      "    tcp dport 443 tcp flags & (syn|ack) == syn meter synm { ip saddr limit rate over "
      "100/second burst 200 packets } counter drop\n",
      "  }\n}\n");
}

void Sh(const std::string& cmd) {
  auto r = RunCommand(cmd);
  if (r.exit_code != 0) {
    std::cerr << "bench: `" << cmd << "` failed: " << r.err << "\n";
    std::exit(1);
  }
}

int NetnsFd(const std::string& ns) { return open(("/run/netns/" + ns).c_str(), O_RDONLY); }

void PinToCpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
}

uint64_t ThreadRuntimeNs(int pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/schedstat"));
  uint64_t runtime = 0;
  in >> runtime;
  return runtime;
}

int FindNapiThread(const std::string& ifname) {
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
// netns) with live-frames XDP_TX, as fast as the kernel takes them.
void Inject(int tx_prog, int ifindex, const std::vector<uint8_t>& frame, uint32_t count) {
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
std::map<std::string, uint64_t> EthtoolStats(const std::string& ns, const std::string& dev) {
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

uint64_t NftDropped(const std::string& ns) {
  const std::string out =
      RunCommand(
          "ip netns exec " + ns + " nft list table " +
          (RunCommand("ip netns exec " + ns + " nft list table netdev pcbench").exit_code == 0
               ? "netdev"
               : "inet") +
          " pcbench")
          .out;
  uint64_t total = 0;
  for (absl::string_view line : absl::StrSplit(out, '\n')) {
    // "counter packets N bytes M" (a meter's "burst 200 packets" precedes it).
    const size_t at = line.find("counter packets ");
    if (at == absl::string_view::npos) continue;
    uint64_t n = 0;
    absl::string_view rest = line.substr(at + 16);
    if (absl::SimpleAtoi(rest.substr(0, rest.find(' ')), &n)) total += n;
  }
  return total;
}

// The namespaces and pins of this run, removed at exit (also on SIGINT and
// SIGTERM, whose handler exits).
struct Cleanup {
  std::string a, b, pins;
  ~Cleanup() {
    if (a.empty()) return;
    RunCommand("ip netns del " + a);
    RunCommand("ip netns del " + b);
    RunCommand("rm -rf " + pins);
  }
};
Cleanup cleanup;

int Main(const std::string& only) {
  if (geteuid() != 0) {
    std::cerr << "bench: needs root\n";
    return 1;
  }
  if (std::thread::hardware_concurrency() < 2) {
    std::cerr << "bench: needs two CPUs (sender and receiver)\n";
    return 1;
  }
  const std::string id = std::to_string(getpid() % 10000);
  const std::string tx_ns = "pb" + id + "tx", rx_ns = "pb" + id + "rx";
  const std::string tx_if = "pb" + id + "t", rx_if = "pb" + id + "r";
  const std::string pin_dir = "/sys/fs/bpf/pb" + id;
  cleanup = {tx_ns, rx_ns, pin_dir};

  Sh("ip netns add " + tx_ns);
  Sh("ip netns add " + rx_ns);
  Sh(absl::StrCat("ip link add ", tx_if, " type veth peer name ", rx_if));
  Sh(absl::StrCat("ip link set ", tx_if, " netns ", tx_ns));
  Sh(absl::StrCat("ip link set ", rx_if, " netns ", rx_ns));
  Sh(absl::StrCat("ip -n ", tx_ns, " addr add 198.18.0.1/24 dev ", tx_if));
  Sh(absl::StrCat("ip -n ", rx_ns, " addr add 198.18.0.10/24 dev ", rx_if));
  Sh(absl::StrCat("ip -n ", tx_ns, " link set ", tx_if, " up"));
  Sh(absl::StrCat("ip -n ", rx_ns, " link set ", rx_if, " up"));
  // The sender's veth needs an XDP program for XDP_TX to be accepted by its peer path.
  Sh(absl::StrCat("ip netns exec ", rx_ns, " ethtool -K ", rx_if, " gro on"));
  Sh(absl::StrCat("ip netns exec ", rx_ns, " sh -c 'echo 1 > /sys/class/net/", rx_if,
                  "/threaded'"));
  const int napi = FindNapiThread(rx_if);
  if (napi < 0) {
    std::cerr << "bench: no threaded NAPI kthread for " << rx_if << "\n";
    return 1;
  }
  Sh(absl::StrCat("taskset -p -c 1 ", napi, " >/dev/null"));
  Sh("mkdir -p " + pin_dir);

  // Frames addressed to the receiver's MAC, so that the stack takes them in.
  const std::string mac_text =
      RunCommand(absl::StrCat("ip netns exec ", rx_ns, " cat /sys/class/net/", rx_if, "/address"))
          .out;
  uint8_t mac[6];
  if (std::sscanf(mac_text.c_str(), "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &mac[0], &mac[1], &mac[2],
                  &mac[3], &mac[4], &mac[5]) != 6) {
    std::cerr << "bench: cannot read the receiver's MAC\n";
    return 1;
  }
  auto frame_from = [&](const std::string& src) {
    std::vector<uint8_t> f = testing::Syn(src, "198.18.0.10", 443).Build();
    std::copy(mac, mac + 6, f.begin());
    return f;
  };
  const std::map<std::string, std::vector<uint8_t>> scenarios = {
      {"blocklisted flood", frame_from("198.18.200.1")},
      {"SYN flood, source bucket", frame_from("198.18.66.6")},
  };

  // The receiving side, in its namespace: datapath, policy, programs.
  const int rx_fd = NetnsFd(rx_ns), tx_fd = NetnsFd(tx_ns);
  setns(rx_fd, CLONE_NEWNET);
  auto dp = datapath::Datapath::Load({});
  if (!dp.ok()) {
    std::cerr << "bench: " << dp.status() << "\n";
    return 1;
  }
  datapath::PolicyInstaller installer(**dp);
  policy::CheckedPolicyFile checked = policy::CheckPolicyText(kPolicy);
  auto compiled = policy::Compile(checked.loaded->policy);
  if (!compiled.ok() || !installer.Install(*compiled, 1).ok()) {
    std::cerr << "bench: cannot install the policy\n";
    return 1;
  }
  const int drop_prog = LoadReturnProgram(XDP_DROP, "xdp_drop");
  const int read_drop_prog = LoadReadThenDrop();
  const int tx_prog = LoadReturnProgram(XDP_TX, "xdp_tx");
  const std::string link_pin = pin_dir + "/xdp";

  struct Mode {
    std::string name;
    std::function<void()> setup, teardown;
    std::function<uint64_t()> dropped;
  };
  auto our_drops = [&]() -> uint64_t {
    auto counts = datapath::ReadVerdictCounters(**dp);
    uint64_t n = 0;
    for (const auto& c : counts.value_or(std::vector<datapath::VerdictCount>{})) {
      if (c.key.verdict == PC_VERDICT_DROP) n += c.total.packets;
    }
    return n;
  };
  auto attach = [&](int prog, datapath::XdpMode mode) {
    return [&, prog, mode] {
      if (!datapath::AttachXdp(prog, rx_if, mode, link_pin).ok()) {
        std::cerr << "bench: XDP attach failed\n";
        std::exit(1);
      }
    };
  };
  auto detach = [&] { datapath::DetachXdp(link_pin).IgnoreError(); };
  auto nft = [&](const std::string& family) {
    return [&, family] {
      testing::TempDir tmp;
      const std::string rules = tmp.Write("rules.nft", NftRules(family, rx_if));
      Sh("ip netns exec " + rx_ns + " nft -f " + rules);
    };
  };
  auto nft_off = [&] { RunCommand("ip netns exec " + rx_ns + " nft flush ruleset"); };
  // The bare programs count nothing; the veth counts their XDP drops.
  auto veth_xdp_drops = [&] { return EthtoolStats(rx_ns, rx_if)["rx_queue_0_xdp_drops"]; };
  const std::vector<Mode> modes = {
      {"bare XDP_DROP (native)", attach(drop_prog, datapath::XdpMode::kNative), detach,
       veth_xdp_drops},
      {"XDP_DROP after a header read", attach(read_drop_prog, datapath::XdpMode::kNative), detach,
       veth_xdp_drops},
      {"portcullis XDP native", attach((*dp)->xdp_prog_fd(), datapath::XdpMode::kNative), detach,
       our_drops},
      {"portcullis XDP generic", attach((*dp)->xdp_prog_fd(), datapath::XdpMode::kGeneric), detach,
       our_drops},
      {"nftables netdev ingress", nft("netdev"), nft_off, [&] { return NftDropped(rx_ns); }},
      {"nftables inet input", nft("inet"), nft_off, [&] { return NftDropped(rx_ns); }},
  };
  const int tx_ifindex = [&] {
    setns(tx_fd, CLONE_NEWNET);
    const int i = static_cast<int>(if_nametoindex(tx_if.c_str()));
    setns(rx_fd, CLONE_NEWNET);
    return i;
  }();

  struct Run {
    double ns_per_drop;  // receiver CPU per dropped packet
    double offered_mpps;
    double overrun;  // share of frames the receiver's ring refused
  };
  // Sends `frames` copies of `frame` with `tx_prog` while `mode` filters.
  auto measure = [&](const Mode& mode, const std::vector<uint8_t>& frame, int tx_prog,
                     uint32_t frames) -> std::optional<Run> {
    mode.setup();
    const uint64_t before = mode.dropped();
    // The sender's veth counts what its peer's ring took and refused.
    std::map<std::string, uint64_t> tx = EthtoolStats(tx_ns, tx_if);
    const uint64_t sent0 = tx["tx_queue_0_xdp_xmit"], refused0 = tx["tx_queue_0_xdp_xmit_errors"];
    const uint64_t cpu_before = ThreadRuntimeNs(napi);
    const auto start = std::chrono::steady_clock::now();
    std::thread sender([&] {
      setns(tx_fd, CLONE_NEWNET);
      PinToCpu(0);
      Inject(tx_prog, tx_ifindex, frame, frames);
    });
    sender.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let NAPI drain
    const uint64_t cpu = ThreadRuntimeNs(napi) - cpu_before;
    const uint64_t dropped = mode.dropped() - before;
    tx = EthtoolStats(tx_ns, tx_if);
    const uint64_t sent = tx["tx_queue_0_xdp_xmit"] - sent0;
    const uint64_t refused = tx["tx_queue_0_xdp_xmit_errors"] - refused0;
    mode.teardown();
    if (dropped == 0) return std::nullopt;
    return Run{double(cpu) / double(dropped), frames / seconds / 1e6,
               sent + refused ? double(refused) / double(sent + refused) : 0.0};
  };

  // The paced sender's loop count for kPacedMpps, from two calibration runs
  // against the bare program (time per frame is linear in the count).
  auto frame_time_ns = [&](int spins) {
    const int prog = LoadPacedTx(spins);
    auto run = measure(modes[0], scenarios.begin()->second, prog, 300'000);
    close(prog);
    return run ? 1000.0 / run->offered_mpps : 0.0;
  };
  const int lo_spins = 500, hi_spins = 4000;
  const double lo_ns = frame_time_ns(lo_spins), hi_ns = frame_time_ns(hi_spins);
  const double ns_per_spin = (hi_ns - lo_ns) / (hi_spins - lo_spins);
  const int paced_spins =
      ns_per_spin > 0
          ? std::clamp(static_cast<int>(lo_spins + (1000.0 / kPacedMpps - lo_ns) / ns_per_spin), 1,
                       100'000)
          : hi_spins;
  const int paced_tx_prog = LoadPacedTx(paced_spins);

  struct Regime {
    std::string title;
    int tx_prog;
    uint32_t frames;
  };
  const std::vector<Regime> regimes = {
      {"overload: the sender as fast as it goes", tx_prog, kFramesPerRun},
      {absl::StrFormat("equal offered load: the sender paced to about %.1f Mpps for every filter",
                       kPacedMpps),
       paced_tx_prog, kPacedFramesPerRun},
  };
  std::printf(
      "Flood benchmark: %d rounds, all filters interleaved in each; receiver NAPI "
      "kthread on CPU 1, sender on CPU 0\n",
      kRounds);
  // runs[regime][scenario][mode], one per round
  std::map<std::string, std::map<std::string, std::map<std::string, std::vector<Run>>>> runs;
  for (int round = 0; round < kRounds; ++round) {
    for (const Regime& regime : regimes) {
      for (const auto& [scenario, frame] : scenarios) {
        for (const Mode& mode : modes) {
          if (!only.empty() && !absl::StrContains(mode.name, only)) continue;
          if (auto run = measure(mode, frame, regime.tx_prog, regime.frames)) {
            runs[regime.title][scenario][mode.name].push_back(*run);
          }
        }
      }
    }
  }

  // The round with the median ns per drop stands for the filter.
  auto median = [](std::vector<Run> v) {
    std::sort(v.begin(), v.end(),
              [](const Run& a, const Run& b) { return a.ns_per_drop < b.ns_per_drop; });
    return v[v.size() / 2];
  };
  for (const Regime& regime : regimes) {
    std::printf("\n== %s (%u frames a run)\n", regime.title.c_str(), regime.frames);
    for (const auto& [scenario, by_mode] : runs[regime.title]) {
      std::printf("%s: receiver CPU ns per dropped packet (median of rounds), Mpps of one CPU\n",
                  scenario.c_str());
      const auto nft = by_mode.find("nftables netdev ingress");
      const double nft_ingress = nft == by_mode.end() ? 0 : median(nft->second).ns_per_drop;
      for (const Mode& mode : modes) {
        auto it = by_mode.find(mode.name);
        if (it == by_mode.end()) continue;
        const Run m = median(it->second);
        std::printf("  %-29s %6.1f ns %6.2f Mpps", mode.name.c_str(), m.ns_per_drop,
                    1000.0 / m.ns_per_drop);
        if (nft_ingress > 0) std::printf("  %5.2fx nft ingress", nft_ingress / m.ns_per_drop);
        std::printf("  offered %5.2f Mpps, overrun %4.1f%%  rounds:", m.offered_mpps,
                    100.0 * m.overrun);
        for (const Run& r : it->second) std::printf(" %.0f", r.ns_per_drop);
        std::printf("\n");
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace portcullis::bench

// An optional argument runs only the filters whose name contains it (for
// profiling one of them), e.g. `flood_bench "XDP native"`.
int main(int argc, char** argv) {
  struct sigaction sa = {};
  sa.sa_handler = [](int) { std::exit(1); };  // runs the cleanup
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  return portcullis::bench::Main(argc > 1 ? argv[1] : "");
}
