#include "bench/flood_lab.h"

#include <arpa/inet.h>
#include <sys/socket.h>

#include <algorithm>

#include "tests/support/frame.h"

namespace portcullis::bench {

void FloodLab::Build() {
  const std::string id = std::to_string(getpid() % 10000);
  tx_ns = "pb" + id + "tx";
  rx_ns = "pb" + id + "rx";
  tx_if = "pb" + id + "t";
  rx_if = "pb" + id + "r";
  pin_dir = "/sys/fs/bpf/pb" + id;

  Sh("ip netns add " + tx_ns);
  Sh("ip netns add " + rx_ns);
  Sh(absl::StrCat("ip link add ", tx_if, " type veth peer name ", rx_if));
  Sh(absl::StrCat("ip link set ", tx_if, " netns ", tx_ns));
  Sh(absl::StrCat("ip link set ", rx_if, " netns ", rx_ns));
  Sh(absl::StrCat("ip -n ", tx_ns, " addr add ", kTxAddr, "/24 dev ", tx_if));
  Sh(absl::StrCat("ip -n ", rx_ns, " addr add ", kRxAddr, "/24 dev ", rx_if));
  Sh(absl::StrCat("ip -n ", tx_ns, " addr add ", kTxAddr6, "/64 dev ", tx_if, " nodad"));
  Sh(absl::StrCat("ip -n ", rx_ns, " addr add ", kRxAddr6, "/64 dev ", rx_if, " nodad"));
  Sh(absl::StrCat("ip -n ", tx_ns, " link set ", tx_if, " up"));
  Sh(absl::StrCat("ip -n ", rx_ns, " link set ", rx_if, " up"));
  Sh(absl::StrCat("ip -n ", tx_ns, " link set lo up"));
  Sh(absl::StrCat("ip -n ", rx_ns, " link set lo up"));
  // The receiver answers spoofed sources towards the sender's side, as a
  // node answers the Internet through its uplink; the sender drops them.
  Sh(absl::StrCat("ip -n ", rx_ns, " route add 198.19.0.0/16 via ", kTxAddr));
  Sh(absl::StrCat("ip -n ", rx_ns, " route add 2001:db8::/32 via ", kTxAddr6));
  Sh(absl::StrCat("ip netns exec ", rx_ns, " ethtool -K ", rx_if, " gro on"));
  Sh(absl::StrCat("ip netns exec ", rx_ns, " sh -c 'echo 1 > /sys/class/net/", rx_if,
                  "/threaded'"));
  napi = FindNapiThread(rx_if);
  if (napi < 0) {
    std::cerr << "bench: no threaded NAPI kthread for " << rx_if << "\n";
    std::exit(1);
  }
  Sh(absl::StrCat("taskset -p -c 1 ", napi, " >/dev/null"));
  Sh("mkdir -p " + pin_dir);

  // Frames addressed to the receiver's MAC, so that the stack takes them in.
  const std::string mac_text =
      RunCommand(absl::StrCat("ip netns exec ", rx_ns, " cat /sys/class/net/", rx_if, "/address"))
          .out;
  if (std::sscanf(mac_text.c_str(), "%hhx:%hhx:%hhx:%hhx:%hhx:%hhx", &rx_mac[0], &rx_mac[1],
                  &rx_mac[2], &rx_mac[3], &rx_mac[4], &rx_mac[5]) != 6) {
    std::cerr << "bench: cannot read the receiver's MAC\n";
    std::exit(1);
  }
  rx_fd = open(("/run/netns/" + rx_ns).c_str(), O_RDONLY);
  tx_fd = open(("/run/netns/" + tx_ns).c_str(), O_RDONLY);
  EnterTx();
  tx_ifindex = static_cast<int>(if_nametoindex(tx_if.c_str()));
  EnterRx();
}

int ListenOn(const char* addr, uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in sa = {};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  inet_pton(AF_INET, addr, &sa.sin_addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0 || listen(fd, 4096) != 0) {
    std::perror("bench: listen");
    std::exit(1);
  }
  return fd;
}

int SpinsFor(double mpps, int lo, int hi, const std::function<double(int)>& mpps_at) {
  const double lo_ns = 1000.0 / mpps_at(lo), hi_ns = 1000.0 / mpps_at(hi);
  const double ns_per_spin = (hi_ns - lo_ns) / (hi - lo);
  if (!(ns_per_spin > 0)) return hi;
  return std::clamp(static_cast<int>(lo + (1000.0 / mpps - lo_ns) / ns_per_spin), 0, 1'000'000);
}

// spoof_tx.bpf.c's struct spoof_cfg.
constexpr size_t kSpoofFrameMax = 74;
struct SpoofConfig {
  uint32_t spins, src_word, random_bits, ip_csum, tcp;
  uint8_t frame[kSpoofFrameMax];
};

SpoofSender::SpoofSender(const std::string& path) {
  obj_ = bpf_object__open_file(path.c_str(), nullptr);
  if (!obj_ || bpf_object__load(obj_) != 0) {
    std::cerr << "bench: cannot load " << path << "\n";
    std::exit(1);
  }
  prog_fd_ = bpf_program__fd(bpf_object__find_program_by_name(obj_, "spoof_tx"));
  sink_fd_ = bpf_program__fd(bpf_object__find_program_by_name(obj_, "sink"));
  cfg_fd_ = bpf_map__fd(bpf_object__find_map_by_name(obj_, "spoof_cfg"));
}

SpoofSender::~SpoofSender() { bpf_object__close(obj_); }

void SpoofSender::Configure(const std::vector<uint8_t>& frame, uint32_t spins) {
  // Untagged TCP SYNs without options: the offsets below are theirs.
  const bool v4 = frame.size() == 54 && frame[12] == 0x08 && frame[13] == 0x00;
  const bool v6 = frame.size() == 74 && frame[12] == 0x86 && frame[13] == 0xdd;
  if (!v4 && !v6) {
    std::cerr << "bench: the spoofing sender takes untagged TCP SYNs without options\n";
    std::exit(1);
  }
  template_ = frame;
  frame_ = frame;
  frame_.resize(kSpoofFrameMax, 0);  // IPv4: Ethernet padding, outside the datagram
  SpoofConfig cfg = {};
  cfg.spins = spins;
  cfg.src_word = 26;  // IPv4: the source; IPv6: its bits 32-63 (the /64 varies)
  cfg.random_bits = v4 ? htonl(0x0000ffff) : 0xffffffff;  // 198.19.0.0/16; any /64
  cfg.ip_csum = v4 ? 24 : 0;
  cfg.tcp = v4 ? 34 : 54;
  std::copy(frame_.begin(), frame_.end(), cfg.frame);
  const uint32_t zero = 0;
  if (bpf_map_update_elem(cfg_fd_, &zero, &cfg, BPF_ANY) != 0) {
    std::perror("bench: spoof_cfg");
    std::exit(1);
  }
}

std::vector<uint8_t> FloodLab::SynFrom(const std::string& src, uint16_t dport) const {
  const bool v6 = src.find(':') != std::string::npos;
  std::vector<uint8_t> f = testing::Syn(src, v6 ? kRxAddr6 : kRxAddr, dport).Build();
  std::copy(rx_mac, rx_mac + 6, f.begin());
  return f;
}

}  // namespace portcullis::bench
