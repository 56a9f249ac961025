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
// Three floods: a blocklisted source, SYNs from one source over its bucket,
// and SYNs from random sources in 198.19.0.0/16 (each frame's source
// rewritten by the sender's own XDP program, bench/bpf/spoof_tx.bpf.c): the
// spoofed flood creates a source bucket per frame, churning the LRU.
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
#include "bench/flood_clients.h"
#include "bench/flood_lab.h"
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

constexpr uint32_t kFramesPerRun = 3'000'000;
constexpr int kRounds = 3;
// Equal offered load: below the capacity of the slowest filter here (nftables
// inet input, about 2.5 Mpps), so that no filter is overrun.
constexpr double kPacedMpps = 1.5;
constexpr uint32_t kPacedFramesPerRun = 1'500'000;
// Spoofed floods cost every filter more (a bucket per source): paced lower,
// so that none is overrun.
constexpr double kSpoofPacedMpps = 0.6;
constexpr uint32_t kSpoofPacedFramesPerRun = 600'000;

// The same policy for nftables: blocklist, per-source SYN meters (IPv4
// hosts, IPv6 /64s), then the global SYN budget.
std::string NftRules(const std::string& family_hook, const std::string& dev) {
  const bool netdev = family_hook == "netdev";
  return absl::StrCat(
      "table ", netdev ? "netdev" : "inet", " pcbench {\n  chain c {\n    type filter hook ",
      netdev ? "ingress device " + dev : "input", " priority 0; policy accept;\n",
      netdev ? "    meta protocol != { ip, ip6 } accept\n" : "",
      "    ip saddr 198.18.128.0/17 counter drop\n",
      "    tcp dport 443 tcp flags & (syn|ack) == syn meter synm { ip saddr limit rate over "
      "100/second burst 200 packets } counter drop\n",
      // IPv6 sources by /64, as the policy's sourcePrefix groups them.
      "    tcp dport 443 tcp flags & (syn|ack) == syn meter synm6 { ip6 saddr & "
      "ffff:ffff:ffff:ffff:: limit rate over 100/second burst 200 packets } counter drop\n",
      "    tcp dport 443 tcp flags & (syn|ack) == syn limit rate over 20000/second burst 40000 "
      "packets counter drop\n",
      "  }\n}\n");
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

// Sends with `tx_prog` while `mode` filters: the figures of one run.
struct Mode {
  std::string name;
  std::function<void()> setup, teardown;
  std::function<uint64_t()> handled;  // packets the filter dropped (or answered)
};

int Main(const std::string& part, const std::string& only) {
  if (geteuid() != 0) {
    std::cerr << "bench: needs root\n";
    return 1;
  }
  if (std::thread::hardware_concurrency() < 2) {
    std::cerr << "bench: needs two CPUs (sender and receiver)\n";
    return 1;
  }
  FloodLab& lab = FloodLab::Create();
  const std::string& rx_ns = lab.rx_ns;
  const std::string& rx_if = lab.rx_if;
  const int napi = lab.napi;
  SpoofSender spoof(PC_SPOOF_TX_OBJ);
  spoof.Configure(lab.SynFrom("198.19.0.1", 443), 0);  // for the calibration

  // The receiving side, in its namespace: datapath, policy, programs.
  lab.EnterRx();
  auto dp = datapath::Datapath::Load({});
  if (!dp.ok()) {
    std::cerr << "bench: " << dp.status() << "\n";
    return 1;
  }
  datapath::PolicyInstaller installer(**dp);
  uint64_t version = 0;
  auto install = [&](const std::string& yaml) {
    policy::CheckedPolicyFile checked = policy::CheckPolicyText(yaml);
    if (!checked.ok()) {
      std::cerr << "bench: " << checked.Format("policy");
      std::exit(1);
    }
    auto compiled = policy::Compile(checked.loaded->policy);
    if (!compiled.ok() || !installer.Install(*compiled, ++version).ok()) {
      std::cerr << "bench: cannot install the policy\n" << yaml;
      std::exit(1);
    }
  };
  install(kFloodPolicy);
  if (part == "clients") return RunClients(lab, **dp, spoof, install, only);

  struct Scenario {
    std::vector<uint8_t> frame;
    bool spoofed;  // sent by the spoofing sender
  };
  const std::map<std::string, Scenario> scenarios = {
      {"blocklisted flood", {lab.SynFrom("198.18.200.1", 443), false}},
      {"SYN flood, source bucket", {lab.SynFrom("198.18.66.6", 443), false}},
      {"SYN flood, spoofed sources (IPv4 /16)", {lab.SynFrom("198.19.0.1", 443), true}},
      // Each frame from another /64: one-SYN sources, a bucket table churned.
      {"SYN flood, spoofed sources (IPv6 /64s)", {lab.SynFrom("2001:db8:ffff:ffff::1", 443), true}},
  };
  // A listener behind the policed port, so that `cookies` answers there.
  const int listener = ListenOn(FloodLab::kRxAddr, 443);
  const int drop_prog = LoadReturnProgram(XDP_DROP, "xdp_drop");
  const int read_drop_prog = LoadReadThenDrop();
  const int tx_prog = LoadReturnProgram(XDP_TX, "xdp_tx");
  const std::string link_pin = lab.pin_dir + "/xdp";

  auto counted = [&](std::initializer_list<pc_verdict> verdicts) -> std::function<uint64_t()> {
    return [&, verdicts]() -> uint64_t {
      auto counts = datapath::ReadVerdictCounters(**dp);
      uint64_t n = 0;
      for (const auto& c : counts.value_or(std::vector<datapath::VerdictCount>{})) {
        for (pc_verdict v : verdicts) n += c.key.verdict == v ? c.total.packets : 0;
      }
      return n;
    };
  };
  auto attach = [&](int prog, datapath::XdpMode mode, std::string policy = kFloodPolicy) {
    return [&, prog, mode, policy] {
      if (policy != kFloodPolicy) install(policy);
      if (!datapath::AttachXdp(prog, rx_if, mode, link_pin).ok()) {
        std::cerr << "bench: XDP attach failed\n";
        std::exit(1);
      }
    };
  };
  auto detach = [&] {
    datapath::DetachXdp(link_pin).IgnoreError();
    install(kFloodPolicy);
  };
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
  const std::string no_source_buckets =
      PolicyWith("      perSource: {rate: 100, burst: 200}\n", "");
  const std::string cookies_auto = FloodPolicyWithCookies("auto");
  const std::vector<Mode> modes = {
      {"bare XDP_DROP (native)", attach(drop_prog, datapath::XdpMode::kNative), detach,
       veth_xdp_drops},
      {"XDP_DROP after a header read", attach(read_drop_prog, datapath::XdpMode::kNative), detach,
       veth_xdp_drops},
      {"portcullis XDP native", attach((*dp)->xdp_prog_fd(), datapath::XdpMode::kNative), detach,
       counted({PC_VERDICT_DROP})},
      {"portcullis XDP generic", attach((*dp)->xdp_prog_fd(), datapath::XdpMode::kGeneric), detach,
       counted({PC_VERDICT_DROP})},
      {"portcullis, no source buckets",
       attach((*dp)->xdp_prog_fd(), datapath::XdpMode::kNative, no_source_buckets), detach,
       counted({PC_VERDICT_DROP})},
      {"portcullis, cookies: auto",
       attach((*dp)->xdp_prog_fd(), datapath::XdpMode::kNative, cookies_auto), detach,
       counted({PC_VERDICT_DROP, PC_VERDICT_COOKIE})},
      {"nftables netdev ingress", nft("netdev"), nft_off, [&] { return NftDropped(rx_ns); }},
      {"nftables inet input", nft("inet"), nft_off, [&] { return NftDropped(rx_ns); }},
  };

  struct Run {
    double ns_per_drop;  // receiver CPU per packet the filter handled
    double offered_mpps;
    double overrun;  // share of frames the receiver's ring refused
  };
  // Sends `frames` copies of `frame` with `tx_prog` while `mode` filters.
  auto measure = [&](const Mode& mode, const std::vector<uint8_t>& frame, int tx_prog,
                     uint32_t frames) -> std::optional<Run> {
    mode.setup();
    const uint64_t before = mode.handled();
    const TxCount tx0 = lab.Tx();
    const uint64_t cpu_before = ThreadRuntimeNs(napi);
    const auto start = std::chrono::steady_clock::now();
    std::thread sender([&] {
      lab.EnterTx();
      PinToCpu(0);
      Inject(tx_prog, lab.tx_ifindex, frame, frames);
    });
    sender.join();
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let NAPI drain
    const uint64_t cpu = ThreadRuntimeNs(napi) - cpu_before;
    const uint64_t handled = mode.handled() - before;
    const TxCount tx = lab.Tx() - tx0;
    mode.teardown();
    if (handled == 0) return std::nullopt;
    return Run{double(cpu) / double(handled), frames / seconds / 1e6, tx.overrun()};
  };

  // The paced senders' loop counts for kPacedMpps, each from two calibration
  // runs against the bare program (time per frame is linear in the count).
  const std::vector<uint8_t>& any_frame = scenarios.begin()->second.frame;
  const int paced_spins = SpinsFor(kPacedMpps, 500, 4000, [&](int spins) {
    const int prog = LoadPacedTx(spins);
    auto run = measure(modes[0], any_frame, prog, 300'000);
    close(prog);
    return run ? run->offered_mpps : 0.0;
  });
  const int paced_tx_prog = LoadPacedTx(paced_spins);
  const int spoof_paced_spins = SpinsFor(kSpoofPacedMpps, 50, 2000, [&](int spins) {
    spoof.SetSpins(spins);
    auto run = measure(modes[0], spoof.frame(), spoof.prog_fd(), 300'000);
    return run ? run->offered_mpps : 0.0;
  });

  struct Regime {
    std::string title;
    int tx_prog, spoof_spins;
    uint32_t frames, spoof_frames;
  };
  const std::vector<Regime> regimes = {
      {"overload: the sender as fast as it goes", tx_prog, 0, kFramesPerRun, kFramesPerRun},
      {absl::StrFormat("equal offered load: the sender paced to about %.1f Mpps for every filter "
                       "(spoofed floods: %.1f Mpps)",
                       kPacedMpps, kSpoofPacedMpps),
       paced_tx_prog, spoof_paced_spins, kPacedFramesPerRun, kSpoofPacedFramesPerRun},
  };
  std::printf(
      "Flood benchmark: %d rounds, all filters interleaved in each; receiver NAPI "
      "kthread on CPU 1, sender on CPU 0\n",
      kRounds);
  // runs[regime][scenario][mode], one per round
  std::map<std::string, std::map<std::string, std::map<std::string, std::vector<Run>>>> runs;
  for (int round = 0; round < kRounds; ++round) {
    for (const Regime& regime : regimes) {
      for (const auto& [scenario, sc] : scenarios) {
        spoof.Configure(sc.frame, regime.spoof_spins);
        const int prog = sc.spoofed ? spoof.prog_fd() : regime.tx_prog;
        const std::vector<uint8_t>& frame = sc.spoofed ? spoof.frame() : sc.frame;
        const uint32_t frames = sc.spoofed ? regime.spoof_frames : regime.frames;
        for (const Mode& mode : modes) {
          if (!only.empty() && !absl::StrContains(mode.name, only)) continue;
          if (auto run = measure(mode, frame, prog, frames)) {
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
      // A spoofed frame, written by the sender, is cold in the receiver's
      // cache: its floor is the program that reads a header.
      const std::string floor_name = scenarios.at(scenario).spoofed ? "XDP_DROP after a header read"
                                                                    : "bare XDP_DROP (native)";
      std::printf(
          "%s: receiver CPU ns per packet dropped or answered (median of rounds), Mpps of one "
          "CPU;\n  cost over %s, as a share of nftables netdev ingress's cost over it\n",
          scenario.c_str(), floor_name.c_str());
      auto median_of = [&](const std::string& name) {
        const auto it = by_mode.find(name);
        return it == by_mode.end() ? 0.0 : median(it->second).ns_per_drop;
      };
      const double nft_ingress = median_of("nftables netdev ingress");
      const double bare = median_of(floor_name);
      for (const Mode& mode : modes) {
        auto it = by_mode.find(mode.name);
        if (it == by_mode.end()) continue;
        const Run m = median(it->second);
        std::printf("  %-30s %6.1f ns %6.2f Mpps", mode.name.c_str(), m.ns_per_drop,
                    1000.0 / m.ns_per_drop);
        if (nft_ingress > 0) std::printf("  %5.2fx nft ingress", nft_ingress / m.ns_per_drop);
        if (nft_ingress > bare && bare > 0) {
          std::printf("  over floor %5.2f of nft's", (m.ns_per_drop - bare) / (nft_ingress - bare));
        }
        std::printf("  offered %5.2f Mpps, overrun %4.1f%%  rounds:", m.offered_mpps,
                    100.0 * m.overrun);
        for (const Run& r : it->second) std::printf(" %.0f", r.ns_per_drop);
        std::printf("\n");
      }
    }
  }
  close(listener);
  return 0;
}

}  // namespace
}  // namespace portcullis::bench

// `flood_bench [costs|clients] [FILTER]`: the cost per packet of each
// filter under three floods (`costs`, the default), or the success of real
// clients during a spoofed flood (`clients`, bench/flood_clients.h); FILTER
// runs only the filters whose name contains it, e.g. `flood_bench costs
// "XDP native"`.
int main(int argc, char** argv) {
  struct sigaction sa = {};
  sa.sa_handler = [](int) { std::exit(1); };  // runs the cleanup
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // progress, also into a file
  const std::string part = argc > 1 ? argv[1] : "costs";
  if (part != "costs" && part != "clients") {
    std::fprintf(stderr, "usage: flood_bench [costs|clients] [FILTER]\n");
    return 2;
  }
  return portcullis::bench::Main(part, argc > 2 ? argv[2] : "");
}
