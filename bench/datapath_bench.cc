// Datapath cost per packet, through BPF_PROG_TEST_RUN with a large repeat on
// one pinned CPU, several rounds, min/median/max. Every figure is printed
// beside a floor measured in the same run (an XDP program that only returns
// XDP_DROP), as "median minus floor", so that a noisy shared machine still
// gives comparable numbers. Also: policy compile+load time, and a
// head-to-head with xdp-filter (Debian's xdp-tools) on its own workload.
// Method and results: docs/BENCHMARKS.md. Not a test: it asserts nothing.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <linux/bpf.h>
#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "bench/tiny_programs.h"
#include "datapath/datapath.h"
#include "datapath/policy_installer.h"
#include "datapath/test_run.h"
#include "policy/compiler.h"
#include "tests/support/frame.h"

namespace portcullis::bench {
namespace {

using Clock = std::chrono::steady_clock;
using testing::Syn;

constexpr uint32_t kRepeat = 2'000'000;
constexpr int kRounds = 7;
constexpr char kSource[] = "198.18.77.1";  // inside 198.18.77.0/24, a set prefix
constexpr char kDest[] = "198.18.0.10";

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

struct Stats {
  double min, median, max;
};

Stats Summarise(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return {v.front(), v[v.size() / 2], v.back()};
}

// Mean ns per run of `prog_fd` over `frame`, per round.
std::vector<double> Measure(int prog_fd, const std::vector<uint8_t>& frame,
                            int round_count = kRounds) {
  std::vector<double> rounds;
  for (int r = 0; r < round_count; ++r) {
    LIBBPF_OPTS(bpf_test_run_opts, opts, .data_in = frame.data(),
                .data_size_in = static_cast<__u32>(frame.size()), .repeat = kRepeat);
    if (bpf_prog_test_run_opts(prog_fd, &opts) != 0) {
      std::perror("bpf_prog_test_run_opts");
      std::exit(1);
    }
    rounds.push_back(opts.duration);
  }
  return rounds;
}

// Sources for N prefixes: half IPv4, half IPv6; 70% hosts, 30% shorter.
// Addresses avoid 198.18.0.0/15, where the measured packet comes from.
std::vector<std::string> Prefixes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::string> out;
  out.reserve(n + 1);
  out.push_back("198.18.77.0/24");
  while (out.size() < n) {
    const bool host = rng() % 10 < 7;
    if (out.size() % 2 == 0) {
      uint32_t a = rng();
      if ((a >> 17) == (0xC612u >> 1)) continue;  // 198.18.0.0/15
      a = (a % 223 + 1) << 24 | (a & 0xFFFFFF);
      const int len = host ? 32 : 16 + static_cast<int>(rng() % 16);
      if (len < 32) a &= ~((1u << (32 - len)) - 1);
      out.push_back(absl::StrFormat("%d.%d.%d.%d/%d", a >> 24, (a >> 16) & 255, (a >> 8) & 255,
                                    a & 255, len));
    } else {
      const int len = host ? 128 : 32 + static_cast<int>(rng() % 64);
      uint16_t w[8] = {0x2001,
                       0x0db8,
                       static_cast<uint16_t>(rng()),
                       static_cast<uint16_t>(rng()),
                       static_cast<uint16_t>(rng()),
                       static_cast<uint16_t>(rng()),
                       static_cast<uint16_t>(rng()),
                       static_cast<uint16_t>(rng())};
      for (int bit = len; bit < 128; ++bit) w[bit / 16] &= ~(1u << (15 - bit % 16));
      out.push_back(absl::StrFormat("%x:%x:%x:%x:%x:%x:%x:%x/%d", w[0], w[1], w[2], w[3], w[4],
                                    w[5], w[6], w[7], len));
    }
  }
  return out;
}

v1::Rate MakeRate(uint64_t rate, uint64_t burst) {
  v1::Rate r;
  r.set_rate(rate);
  r.set_burst(burst);
  return r;
}

// Every stage on: destinations, failsafe, blocklist, a set-restricted port,
// SYN (per source and global) and connection buckets.
v1::Policy BenchPolicy(const std::vector<std::string>& prefixes, uint64_t syn_burst) {
  v1::Policy p;
  p.set_api_version("portcullis/v1");
  p.set_kind("IngressPolicy");
  p.mutable_metadata()->set_name("bench");
  v1::PolicySpec* s = p.mutable_spec();
  s->set_mode(v1::MODE_ENFORCE);
  s->set_default_action(v1::ACTION_DENY);
  s->add_destinations("198.18.0.0/24");
  v1::CidrSet* clients = s->add_sets();
  clients->set_name("clients");
  for (const std::string& c : prefixes) clients->add_cidrs(c);
  v1::CidrSet* admins = s->add_sets();
  admins->set_name("admins");
  admins->add_cidrs("198.18.1.0/28");
  s->add_blocklist("198.18.200.0/24");
  v1::PortRule* fs = s->add_failsafe();
  fs->set_proto(v1::PROTOCOL_TCP);
  fs->add_ports()->set_first(22);
  fs->mutable_ports(0)->set_last(22);
  fs->mutable_from()->add_sets("admins");
  v1::PortRule* web = s->add_ports();
  web->set_proto(v1::PROTOCOL_TCP);
  web->add_ports()->set_first(443);
  web->mutable_ports(0)->set_last(443);
  web->mutable_from()->add_sets("clients");
  v1::RateLimits* rl = s->mutable_rate_limits();
  *rl->mutable_syn()->mutable_per_source() = MakeRate(syn_burst > 1 ? 1'000'000'000 : 1, syn_burst);
  *rl->mutable_syn()->mutable_global() = MakeRate(1'000'000'000, 1'000'000'000);
  *rl->mutable_connections()->mutable_per_source() = MakeRate(1'000'000'000, 1'000'000'000);
  return p;
}

void PrintRow(const std::string& name, const Stats& s, double floor) {
  std::printf("  %-44s %7.1f %7.1f %7.1f   %+7.1f\n", name.c_str(), s.min, s.median, s.max,
              s.median - floor);
}

struct XdpFilter {
  struct bpf_object* obj = nullptr;
  int prog_fd = -1;
};

// Loads xdp-filter's own program (policy allow, all features) and fills its
// maps as `xdp-filter ip ADDR --mode src` and `xdp-filter port P --mode dst` do.
bool LoadXdpFilter(const std::vector<uint32_t>& denied_ips, const std::vector<uint16_t>& ports,
                   XdpFilter* out) {
  const char* path = "/usr/lib/" PC_MULTIARCH "/bpf/xdpfilt_alw_all.o";
  out->obj = bpf_object__open_file(path, nullptr);
  if (out->obj == nullptr) return false;
  struct bpf_map* map;
  bpf_object__for_each_map(map, out->obj) bpf_map__set_pin_path(map, nullptr);  // no pins
  if (bpf_object__load(out->obj) != 0) return false;
  struct bpf_program* prog = bpf_object__next_program(out->obj, nullptr);
  out->prog_fd = bpf_program__fd(prog);
  const int ipv4 = bpf_object__find_map_fd_by_name(out->obj, "filter_ipv4");
  const int port_map = bpf_object__find_map_fd_by_name(out->obj, "filter_ports");
  constexpr uint64_t kSrc = 1 << 0, kDst = 1 << 1, kTcp = 1 << 2, kUdp = 1 << 3;
  for (uint32_t ip : denied_ips) {
    const uint64_t v = kSrc;
    if (bpf_map_update_elem(ipv4, &ip, &v, BPF_ANY)) return false;
  }
  for (uint16_t port : ports) {
    const uint32_t key = port;
    const uint64_t v = kDst | kTcp | kUdp;
    if (bpf_map_update_elem(port_map, &key, &v, BPF_ANY)) return false;
  }
  return true;
}

int Main(bool quick) {
  if (geteuid() != 0) {
    std::cerr << "bench: needs root (BPF_PROG_TEST_RUN)\n";
    return 1;
  }
  cpu_set_t set;
  CPU_ZERO(&set);
  const int cpu = static_cast<int>(std::max(1L, sysconf(_SC_NPROCESSORS_ONLN)) - 1);
  CPU_SET(cpu, &set);
  sched_setaffinity(0, sizeof(set), &set);
  std::printf("Portcullis datapath benchmark: BPF_PROG_TEST_RUN, repeat %u, %d rounds, CPU %d\n",
              kRepeat, kRounds, cpu);
  std::printf("  %-44s %7s %7s %7s   %8s\n", "ns per packet", "min", "median", "max", "-floor");

  const int drop_fd = LoadReturnProgram(XDP_DROP, "xdp_drop");
  const std::vector<uint8_t> syn = Syn(kSource, kDest, 443).Build();
  const std::vector<uint8_t> blocked_syn = Syn("198.18.200.7", kDest, 443).Build();
  auto floor = [&] { return Summarise(Measure(drop_fd, syn)); };

  auto dp = datapath::Datapath::Load({});
  if (!dp.ok()) {
    std::cerr << "bench: " << dp.status() << "\n";
    return 1;
  }
  datapath::PolicyInstaller installer(**dp);
  uint64_t version = 0;

  std::vector<std::string> load_lines;
  const std::vector<size_t> sizes = quick ? std::vector<size_t>{10, 100'000}
                                          : std::vector<size_t>{10, 10'000, 100'000, 1'000'000};
  for (size_t n : sizes) {
    const std::vector<std::string> prefixes = Prefixes(n, 42);
    for (bool limited : {false, true}) {
      const v1::Policy policy = BenchPolicy(prefixes, limited ? 1 : 1'000'000'000);
      const auto t0 = Clock::now();
      auto compiled = policy::Compile(policy);
      const auto t1 = Clock::now();
      if (!compiled.ok()) {
        std::cerr << "bench: " << compiled.status() << "\n";
        return 1;
      }
      if (absl::Status s = installer.Install(*compiled, ++version); !s.ok()) {
        std::cerr << "bench: " << s << "\n";
        return 1;
      }
      const auto t2 = Clock::now();
      if (!limited) {
        load_lines.push_back(absl::StrFormat(
            "  %9d prefixes: compile %7.1f ms, load into maps %7.1f ms, total %7.1f ms", n,
            Ms(t1 - t0), Ms(t2 - t1), Ms(t2 - t0)));
      }
      const Stats f = floor();
      const Stats s = Summarise(Measure((*dp)->xdp_prog_fd(), syn));
      PrintRow("floor: XDP_DROP only", f, f.median);
      PrintRow(
          absl::StrCat(limited ? "SYN dropped by its source bucket, " : "SYN passing every stage, ",
                       n, " prefixes"),
          s, f.median);
      if (!limited) {
        const Stats b = Summarise(Measure((*dp)->xdp_prog_fd(), blocked_syn));
        PrintRow(absl::StrCat("SYN dropped by the blocklist, ", n, " prefixes"), b, f.median);
      }
    }
  }
  std::printf(
      "\nPolicy load time (compile, then diff-write the idle slot and switch; the idle\n"
      "slot held the previous, smaller policy):\n");
  for (const std::string& l : load_lines) std::printf("%s\n", l.c_str());

  // Head to head with xdp-filter: 1,000 exact source IPs and 100 destination
  // ports denied, everything else passed, no rate limits.
  std::vector<uint32_t> ips;
  v1::Policy equivalent;
  equivalent.set_api_version("portcullis/v1");
  equivalent.set_kind("IngressPolicy");
  equivalent.mutable_metadata()->set_name("xdp-filter-workload");
  v1::PolicySpec* spec = equivalent.mutable_spec();
  spec->set_default_action(v1::ACTION_ALLOW);
  for (uint32_t i = 0; i < 1000; ++i) {
    const uint32_t host = (10u << 24) | (i * 7919u % (1u << 24));
    ips.push_back(htonl(host));
    spec->add_blocklist(absl::StrFormat("%d.%d.%d.%d", host >> 24, (host >> 16) & 255,
                                        (host >> 8) & 255, host & 255));
  }
  v1::CidrSet* nobody = spec->add_sets();
  nobody->set_name("nobody");  // an empty set: the ports are open to no one
  std::vector<uint16_t> ports;
  for (v1::Protocol proto : {v1::PROTOCOL_TCP, v1::PROTOCOL_UDP}) {
    v1::PortRule* closed = spec->add_ports();
    closed->set_proto(proto);
    closed->mutable_from()->add_sets("nobody");
    for (uint16_t p = 0; p < 100; ++p) {
      v1::PortRange* r = closed->add_ports();
      r->set_first(5000 + p * 10);
      r->set_last(5000 + p * 10);
      if (proto == v1::PROTOCOL_TCP) ports.push_back(5000 + p * 10);
    }
  }
  auto compiled = policy::Compile(equivalent);
  if (!compiled.ok() || !installer.Install(*compiled, ++version).ok()) {
    std::cerr << "bench: cannot install the xdp-filter workload\n";
    return 1;
  }
  std::printf(
      "\nHead to head, xdp-filter's workload (1000 denied source IPs, 100 denied ports),"
      " a passing TCP SYN:\n");
  XdpFilter xf;
  const std::vector<uint8_t> pass_syn = Syn("198.18.77.1", kDest, 443).Build();
  const Stats f = Summarise(Measure(drop_fd, pass_syn));
  PrintRow("floor: XDP_DROP only", f, f.median);
  const Stats ours = Summarise(Measure((*dp)->xdp_prog_fd(), pass_syn));
  PrintRow("portcullis", ours, f.median);
  if (LoadXdpFilter(ips, ports, &xf)) {
    const Stats theirs = Summarise(Measure(xf.prog_fd, pass_syn));
    PrintRow("xdp-filter (xdpfilt_alw_all)", theirs, f.median);
    std::printf("  portcullis / xdp-filter, over the floor: %.2f\n",
                (ours.median - f.median) / std::max(0.1, theirs.median - f.median));
    bpf_object__close(xf.obj);
  } else {
    std::printf("  xdp-filter: not available (install xdp-tools)\n");
  }

  // Shadow evaluation (docs/CONTROL.md): a candidate judged beside the live
  // policy, round by round against none, on the 100k-prefix policy.
  {
    const v1::Policy live = BenchPolicy(Prefixes(100'000, 42), 1'000'000'000);
    v1::Policy alike = live;  // another blocklist entry: judges the SYN as live does
    alike.mutable_spec()->add_blocklist("198.18.201.0/24");
    v1::Policy differs = live;  // blocklists its source: every packet is a counted change
    differs.mutable_spec()->add_blocklist("198.18.77.0/24");
    auto l = policy::Compile(live), a = policy::Compile(alike), d = policy::Compile(differs);
    if (!l.ok() || !a.ok() || !d.ok() || !installer.Install(*l, ++version).ok()) {
      std::cerr << "bench: cannot install the shadow workload\n";
      return 1;
    }
    std::vector<double> floors, none, same, changed;
    for (int r = 0; r < kRounds; ++r) {
      auto one = [&](std::vector<double>& into, int fd) { into.push_back(Measure(fd, syn, 1)[0]); };
      one(floors, drop_fd);
      if (!installer.DiscardShadow().ok()) return 1;
      one(none, (*dp)->xdp_prog_fd());
      if (!installer.InstallShadow(*a, version).ok()) return 1;
      one(same, (*dp)->xdp_prog_fd());
      if (!installer.InstallShadow(*d, version).ok()) return 1;
      one(changed, (*dp)->xdp_prog_fd());
    }
    if (!installer.DiscardShadow().ok()) return 1;
    std::printf(
        "\nShadow evaluation, a SYN passing every stage, 100000 prefixes (rounds interleaved):\n");
    const Stats f = Summarise(floors), n = Summarise(none), s = Summarise(same),
                c = Summarise(changed);
    PrintRow("floor: XDP_DROP only", f, f.median);
    PrintRow("no shadow candidate", n, f.median);
    PrintRow("a candidate judging it alike", s, f.median);
    PrintRow("a candidate that would drop it (counted)", c, f.median);
    std::printf("  over the floor, candidate / none: alike %.2f, counted %.2f\n",
                (s.median - f.median) / std::max(0.1, n.median - f.median),
                (c.median - f.median) / std::max(0.1, n.median - f.median));
  }
  close(drop_fd);
  return 0;
}

}  // namespace
}  // namespace portcullis::bench

// --quick: only 10 and 100k prefixes (for iterating on the datapath).
int main(int argc, char** argv) {
  return portcullis::bench::Main(argc > 1 && std::string(argv[1]) == "--quick");
}
