#include "bench/flood_clients.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <thread>

#include "absl/strings/str_format.h"
#include "bench/tiny_programs.h"
#include "datapath/attach.h"
#include "datapath/counters.h"
#include "tests/support/lab.h"

namespace portcullis::bench {
namespace {

using Clock = std::chrono::steady_clock;

constexpr int kRequests = 200;
constexpr auto kRequestEvery = std::chrono::milliseconds(20);
// A request succeeds if it gets its 200 within this (a lost SYN is
// retransmitted after 1 s, so one retransmission fits).
constexpr auto kRequestTimeout = std::chrono::milliseconds(2000);
constexpr int kRounds = 2;
// How long the flood runs before the first request: the receiver's state
// (buckets, queues) is the flood's by then.
constexpr auto kFloodLead = std::chrono::milliseconds(300);
// Every flood stops by itself after this, whatever the clients do.
constexpr auto kFloodLimit = std::chrono::seconds(30);

struct Attempt {
  bool ok = false;
  double connect_ms = 0;  // a connection never made counts as the timeout
};

// One HTTP request to addr:443 in the calling thread's namespace.
Attempt Request(const char* addr) {
  Attempt a;
  a.connect_ms = std::chrono::duration<double, std::milli>(kRequestTimeout).count();
  const auto start = Clock::now(), deadline = start + kRequestTimeout;
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return a;
  auto wait = [&](short events) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    pollfd p = {fd, events, 0};
    return left.count() > 0 && poll(&p, 1, static_cast<int>(left.count())) == 1;
  };
  sockaddr_in sa = {};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(443);
  inet_pton(AF_INET, addr, &sa.sin_addr);
  int err = 0;
  socklen_t len = sizeof(err);
  if ((connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0 || errno == EINPROGRESS) &&
      wait(POLLOUT) && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0) {
    a.connect_ms = std::chrono::duration<double, std::milli>(Clock::now() - start).count();
    static constexpr char kGet[] = "GET / HTTP/1.0\r\n\r\n";
    std::string reply;
    if (send(fd, kGet, sizeof(kGet) - 1, MSG_NOSIGNAL) == sizeof(kGet) - 1) {
      char buf[512];
      while (reply.size() < 12 && wait(POLLIN)) {
        const ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0) break;
        reply.append(buf, static_cast<size_t>(n));
      }
    }
    a.ok = absl::StartsWith(reply, "HTTP/1.1 200");
  }
  close(fd);
  return a;
}

// kRequests requests from the sender's namespace, one every kRequestEvery
// (open loop: a slow answer does not delay the next request).
std::vector<Attempt> Clients(const FloodLab& lab) {
  std::vector<Attempt> out(kRequests);
  std::thread dispatcher([&] {
    lab.EnterTx();  // the request threads inherit it
    std::vector<std::thread> requests;
    const auto start = Clock::now();
    for (int i = 0; i < kRequests; ++i) {
      std::this_thread::sleep_until(start + i * kRequestEvery);
      requests.emplace_back([&out, i] { out[i] = Request(FloodLab::kRxAddr); });
    }
    for (std::thread& t : requests) t.join();
  });
  dispatcher.join();
  return out;
}

// The spoofing sender on CPU 0, in chunks of 50 ms, until Stop() or
// kFloodLimit.
class Flood {
 public:
  Flood(const FloodLab& lab, const SpoofSender& spoof, const std::vector<uint8_t>& frame,
        double mpps)
      : thread_([this, &lab, &spoof, frame, mpps] {
          lab.EnterTx();
          PinToCpu(0);
          const uint32_t chunk = std::max<uint32_t>(1000, static_cast<uint32_t>(mpps * 50'000));
          const auto until = Clock::now() + kFloodLimit;
          while (!stop_.load() && Clock::now() < until) {
            Inject(spoof.prog_fd(), lab.tx_ifindex, frame, chunk);
          }
        }) {}
  ~Flood() { Stop(); }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

struct Config {
  std::string name;
  std::function<void()> setup, teardown;
};

struct Cell {
  int ok = 0, slow = 0;  // slow: connected after a SYN retransmission (1 s)
  std::vector<double> connect_ms;
  std::vector<double> overrun;
  uint64_t answers = 0, answers_lost = 0;    // XDP_TX'd by the receiver, refused by the ring
  std::map<std::string, uint64_t> verdicts;  // Portcullis's, "verdict/reason"
};

// Portcullis's verdict counters, as "verdict/reason" -> packets.
std::map<std::string, uint64_t> Verdicts(datapath::Datapath& dp) {
  std::map<std::string, uint64_t> out;
  auto counts = datapath::ReadVerdictCounters(dp);
  for (const auto& c : counts.value_or(std::vector<datapath::VerdictCount>{})) {
    out[absl::StrCat(VerdictName(c.key.verdict), "/", ReasonName(c.key.reason))] += c.total.packets;
  }
  return out;
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(p * static_cast<double>(v.size())))];
}

// The bulk transfer: kBulkBytes from a server on the receiver's :8443 to
// one client. The machine has no netem to add delay, so the figure is the
// veth's throughput; what the connection negotiated (window scaling, SACK,
// timestamps, MSS) is read from the server's socket.
constexpr size_t kBulkBytes = 256 << 20;
constexpr uint16_t kBulkPort = 8443;

// Serves kBulkBytes to every connection on the receiver's kBulkPort (in the
// calling thread's namespace), until destroyed; keeps the last connection's
// TCP_INFO.
class BulkServer {
 public:
  BulkServer() : fd_(ListenOn(FloodLab::kRxAddr, kBulkPort)) {
    thread_ = std::thread([this] {
      const std::vector<char> chunk(1 << 20, 'x');
      for (;;) {
        const int c = accept(fd_, nullptr, nullptr);
        if (c < 0) return;  // shut down
        tcp_info info = {};
        socklen_t len = sizeof(info);
        getsockopt(c, IPPROTO_TCP, TCP_INFO, &info, &len);
        {
          std::lock_guard<std::mutex> lock(mu_);
          info_ = info;
        }
        for (size_t sent = 0; sent < kBulkBytes;) {
          const ssize_t n = send(c, chunk.data(), chunk.size(), MSG_NOSIGNAL);
          if (n <= 0) break;
          sent += static_cast<size_t>(n);
        }
        close(c);
      }
    });
  }
  ~BulkServer() {
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    close(fd_);
  }
  // What the last connection negotiated, as `ss -i` says it.
  std::string LastOptions() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    if (info_.tcpi_options & TCPI_OPT_WSCALE) {
      absl::StrAppend(&out, "wscale:", info_.tcpi_snd_wscale, ",", info_.tcpi_rcv_wscale, " ");
    }
    if (info_.tcpi_options & TCPI_OPT_SACK) absl::StrAppend(&out, "sack ");
    if (info_.tcpi_options & TCPI_OPT_TIMESTAMPS) absl::StrAppend(&out, "ts ");
    absl::StrAppend(&out, "mss:", info_.tcpi_snd_mss);
    return out;
  }

 private:
  int fd_;
  std::mutex mu_;
  tcp_info info_ = {};
  std::thread thread_;
};

// MB/s of one bulk download from the sender's namespace; 0 on failure.
double BulkDownload(const FloodLab& lab) {
  double mbps = 0;
  std::thread t([&] {
    lab.EnterTx();
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    const timeval timeout = {10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
    sockaddr_in sa = {};
    sa.sin_family = AF_INET;
    sa.sin_port = htons(kBulkPort);
    inet_pton(AF_INET, FloodLab::kRxAddr, &sa.sin_addr);
    const auto start = Clock::now();
    size_t got = 0;
    if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) == 0) {
      std::vector<char> buf(1 << 20);
      for (ssize_t n; (n = recv(fd, buf.data(), buf.size(), 0)) > 0;) got += static_cast<size_t>(n);
    }
    close(fd);
    const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
    if (got == kBulkBytes) mbps = static_cast<double>(got) / seconds / 1e6;
  });
  t.join();
  return mbps;
}

// Tcp: InCsumErrors of /proc/net/snmp in namespace `ns`.
std::string TcpCsumErrors(const std::string& ns) {
  const std::string snmp = RunCommand("ip netns exec " + ns + " cat /proc/net/snmp").out;
  std::vector<std::vector<std::string>> tcp;
  for (absl::string_view line : absl::StrSplit(snmp, '\n')) {
    if (absl::StartsWith(line, "Tcp: ")) tcp.push_back(absl::StrSplit(line, ' '));
  }
  if (tcp.size() != 2) return "unknown";
  for (size_t i = 0; i < tcp[0].size() && i < tcp[1].size(); ++i) {
    if (tcp[0][i] == "InCsumErrors") return tcp[1][i];
  }
  return "unknown";
}

}  // namespace

int RunClients(FloodLab& lab, datapath::Datapath& dp, SpoofSender& spoof,
               const InstallPolicy& install, const std::string& only) {
  // Static: stopped at exit (also on a signal), before the lab goes.
  static testing::TempDir tmp;
  static testing::Process nginx =
      testing::StartNginxIn(lab.rx_ns, {absl::StrCat(FloodLab::kRxAddr, ":443")}, "ok", tmp);
  const std::string xdp_pin = lab.pin_dir + "/xdp", sink_pin = lab.pin_dir + "/tx-sink";
  // The sender's side takes XDP_TX'd SYN-ACKs (a veth delivers them only to
  // a peer that runs XDP itself, as a NIC's driver always does), and drops
  // those to the spoofed sources at once, as the Internet would absorb them.
  lab.EnterTx();
  const bool sink_on =
      datapath::AttachXdp(spoof.sink_fd(), lab.tx_if, datapath::XdpMode::kNative, sink_pin).ok();
  lab.EnterRx();
  if (!sink_on) {
    std::cerr << "bench: cannot attach XDP on " << lab.tx_if << "\n";
    return 1;
  }
  auto portcullis = [&](const std::string& cookies) {
    return [&, cookies] {
      install(FloodPolicyWithCookies(cookies));
      if (!datapath::AttachXdp(dp.xdp_prog_fd(), lab.rx_if, datapath::XdpMode::kNative, xdp_pin)
               .ok() ||
          (cookies != "off" &&
           !datapath::AttachTc(dp.tc_cookie_prog_fd(), lab.rx_if, datapath::TcDirection::kIngress)
                .ok())) {
        std::cerr << "bench: cannot attach Portcullis\n";
        std::exit(1);
      }
    };
  };
  auto portcullis_off = [&] { datapath::DetachXdp(xdp_pin).IgnoreError(); };
  auto portcullis_and_tc_off = [&] {
    datapath::DetachXdp(xdp_pin).IgnoreError();
    datapath::DetachTc(static_cast<int>(if_nametoindex(lab.rx_if.c_str())),
                       datapath::TcDirection::kIngress, true)
        .IgnoreError();
  };
  const std::string in_rx = "ip netns exec " + lab.rx_ns + " ";
  std::vector<Config> configs = {
      {"no filter (kernel SYN cookies)", [] {}, [] {}},
      {"nftables synproxy",
       [&] {
         const std::string rules = tmp.Write(
             "synproxy.nft",
             "table ip pcsynproxy {\n"
             "  chain pre {\n    type filter hook prerouting priority raw; policy accept;\n"
             "    tcp dport 443 tcp flags syn notrack\n  }\n"
             "  chain in {\n    type filter hook input priority filter; policy accept;\n"
             "    tcp dport 443 ct state invalid,untracked synproxy mss 1460 wscale 7 "
             "timestamp sack-perm\n    ct state invalid drop\n  }\n}\n");
         Sh(in_rx + "nft -f " + rules);
         // ACKs must not pick up connections conntrack never saw (the
         // synproxy documentation's setting).
         Sh(in_rx + "sysctl -qw net.netfilter.nf_conntrack_tcp_loose=0");
       },
       [&] {
         RunCommand(in_rx + "nft flush ruleset");
         RunCommand(in_rx + "sysctl -qw net.netfilter.nf_conntrack_tcp_loose=1");
       }},
      {"portcullis, cookies: off", portcullis("off"), portcullis_off},
  };
  if (dp.tc_cookie_prog_fd() >= 0) {
    configs.push_back({"portcullis, cookies: auto", portcullis("auto"), portcullis_and_tc_off});
  } else {
    std::printf("this kernel cannot complete SYN cookies: no `cookies: auto` row\n");
  }
  std::erase_if(configs, [&](const Config& c) { return !absl::StrContains(c.name, only); });

  spoof.Configure(lab.SynFrom("198.19.0.1", 443), 0);
  const std::vector<uint8_t> frame = spoof.frame();
  // The sender's rate by loop count, against a receiver that only drops.
  const int drop_prog = LoadReturnProgram(XDP_DROP, "xdp_drop");
  if (!datapath::AttachXdp(drop_prog, lab.rx_if, datapath::XdpMode::kNative, xdp_pin).ok()) {
    std::cerr << "bench: XDP attach failed\n";
    return 1;
  }
  auto sender_mpps = [&](int spins) {
    spoof.SetSpins(static_cast<uint32_t>(spins));
    const auto start = Clock::now();
    std::thread t([&] {
      lab.EnterTx();
      PinToCpu(0);
      Inject(spoof.prog_fd(), lab.tx_ifindex, frame, 200'000);
    });
    t.join();
    return 0.2 / std::chrono::duration<double>(Clock::now() - start).count();
  };
  const double max_mpps = sender_mpps(0);
  auto spins_for = [&](double mpps) {
    return mpps >= max_mpps ? 0 : SpinsFor(mpps, 50, 2000, sender_mpps);
  };
  datapath::DetachXdp(xdp_pin).IgnoreError();
  close(drop_prog);

  // The highest rate Portcullis's receiver takes without overrun (under 1%
  // of frames refused): down a ladder from the sender's maximum, 0.5 s a step.
  struct Rate {
    std::string name;
    int spins;
    double mpps;
  };
  std::vector<Rate> rates = {{"100 kpps", spins_for(0.1), 0.1}, {"600 kpps", spins_for(0.6), 0.6}};
  {
    const Config& probe = configs.back();
    probe.setup();
    std::printf("sender's maximum %.2f Mpps; overrun with %s:", max_mpps, probe.name.c_str());
    double accepted = 0;
    int accepted_spins = rates.back().spins;
    for (double mpps : {max_mpps, 4.0, 3.0, 2.0, 1.5, 1.2, 1.0, 0.8, 0.7}) {
      if (mpps > max_mpps) continue;
      const int spins = spins_for(mpps);
      spoof.SetSpins(static_cast<uint32_t>(spins));
      const TxCount before = lab.Tx();
      {
        Flood flood(lab, spoof, frame, mpps);
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
      const double overrun = (lab.Tx() - before).overrun();
      std::printf(" %.1f Mpps %.1f%%", mpps, 100 * overrun);
      if (overrun < 0.01) {
        accepted = mpps;
        accepted_spins = spins;
        break;
      }
    }
    probe.teardown();
    std::printf("\n");
    if (accepted > 0.6) {
      rates.push_back(
          {absl::StrFormat("%.1f Mpps (no overrun)", accepted), accepted_spins, accepted});
    }
  }

  std::printf(
      "Clients during a spoofed SYN flood from 198.19.0.0/16: %d requests to nginx, one every "
      "%d ms; success within %d ms; %d rounds, configurations interleaved\n",
      kRequests, static_cast<int>(kRequestEvery.count()), static_cast<int>(kRequestTimeout.count()),
      kRounds);
  // cells[rate][config]; "no flood" first.
  std::map<std::string, std::map<std::string, Cell>> cells;
  std::vector<std::string> rate_names = {"no flood"};
  for (const Rate& r : rates) rate_names.push_back(r.name);
  for (int round = 0; round < kRounds; ++round) {
    for (size_t r = 0; r < rate_names.size(); ++r) {
      for (const Config& config : configs) {
        config.setup();
        Cell& cell = cells[rate_names[r]][config.name];
        const TxCount before = lab.Tx();
        auto rx0 = EthtoolStats(lab.rx_ns, lab.rx_if);
        const auto verdicts0 = Verdicts(dp);
        std::vector<Attempt> attempts;
        if (r == 0) {
          attempts = Clients(lab);
        } else {
          spoof.SetSpins(static_cast<uint32_t>(rates[r - 1].spins));
          Flood flood(lab, spoof, frame, rates[r - 1].mpps);
          std::this_thread::sleep_for(kFloodLead);
          attempts = Clients(lab);
        }
        cell.overrun.push_back((lab.Tx() - before).overrun());
        auto rx = EthtoolStats(lab.rx_ns, lab.rx_if);
        cell.answers += rx["rx_queue_0_xdp_tx"] - rx0["rx_queue_0_xdp_tx"];
        cell.answers_lost += rx["rx_queue_0_xdp_tx_errors"] - rx0["rx_queue_0_xdp_tx_errors"];
        for (const auto& [name, n] : Verdicts(dp)) {
          const auto was = verdicts0.find(name);
          const uint64_t added = n - (was == verdicts0.end() ? 0 : was->second);
          if (added) cell.verdicts[name] += added;
        }
        for (const Attempt& a : attempts) {
          cell.ok += a.ok;
          cell.slow += a.connect_ms >= 1000;
          cell.connect_ms.push_back(a.connect_ms);
        }
        config.teardown();
      }
    }
  }

  for (const std::string& rate : rate_names) {
    std::printf("\n== %s\n", rate.c_str());
    for (const Config& config : configs) {
      const Cell& c = cells[rate][config.name];
      std::printf(
          "  %-32s success %5.1f%%  connect p50 %7.2f ms  p99 %7.2f ms  >= 1 s %3d  overrun",
          config.name.c_str(), 100.0 * c.ok / (kRequests * kRounds), Percentile(c.connect_ms, 0.5),
          Percentile(c.connect_ms, 0.99), c.slow);
      for (double o : c.overrun) std::printf(" %.1f%%", 100 * o);
      if (c.answers) {
        std::printf("  XDP_TX %lu, refused %.1f%%", c.answers, 100.0 * c.answers_lost / c.answers);
      }
      std::printf("\n");
      if (!c.verdicts.empty()) {
        std::printf("   ");
        for (const auto& [name, n] : c.verdicts) std::printf(" %s %lu", name.c_str(), n);
        std::printf("\n");
      }
    }
  }
  // Bulk transfers through a cookie (`always`: every connection is made
  // through one) against ordinary connections, interleaved, with no flood.
  if (dp.tc_cookie_prog_fd() >= 0 && only.empty()) {
    BulkServer server;
    const std::vector<Config> bulk = {
        {"portcullis, cookies: off", portcullis("off"), portcullis_off},
        {"portcullis, cookies: always", portcullis("always"), portcullis_and_tc_off},
    };
    std::printf("\nBulk transfer: %zu MB from the receiver, MB/s by round\n", kBulkBytes >> 20);
    std::map<std::string, std::vector<double>> mbps;
    std::map<std::string, uint64_t> through_cookies;
    std::map<std::string, std::string> options;
    for (int round = 0; round < 3; ++round) {
      for (const Config& config : bulk) {
        config.setup();
        const auto before = datapath::ReadCookieCounts(dp);
        mbps[config.name].push_back(BulkDownload(lab));
        const auto after = datapath::ReadCookieCounts(dp);
        if (before.ok() && after.ok()) {
          through_cookies[config.name] += (*after)[PC_COOKIE_VALID] - (*before)[PC_COOKIE_VALID];
        }
        options[config.name] = server.LastOptions();
        config.teardown();
      }
    }
    for (const Config& config : bulk) {
      std::printf("  %-32s median %7.1f MB/s  rounds:", config.name.c_str(),
                  Percentile(mbps[config.name], 0.5));
      for (double m : mbps[config.name]) std::printf(" %.1f", m);
      std::printf("  made through a cookie: %lu of 3; the server's socket: %s\n",
                  through_cookies[config.name], options[config.name].c_str());
    }
  }

  // The harness's own check: the spoofed SYNs reached the stack intact.
  std::printf("\nreceiver's TCP checksum errors over the run: %s\n",
              TcpCsumErrors(lab.rx_ns).c_str());
  datapath::DetachXdp(sink_pin).IgnoreError();
  return 0;
}

}  // namespace portcullis::bench
