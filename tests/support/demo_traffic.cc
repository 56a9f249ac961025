#include "tests/support/demo_traffic.h"

#include <netinet/in.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "tests/support/frame.h"
#include "tests/support/pcap_writer.h"

namespace portcullis::testing {

namespace {

// Collects frames out of order, writes them sorted by time, as a capture has them.
class Timeline {
 public:
  void Write(uint64_t ns, std::vector<uint8_t> frame) {
    frames_.emplace_back(ns, std::move(frame));
  }
  absl::Status Flush(const std::string& path) {
    auto writer = PcapWriter::Create(path);
    if (!writer.ok()) return writer.status();
    std::stable_sort(frames_.begin(), frames_.end(),
                     [](const auto& a, const auto& b) { return a.first < b.first; });
    for (const auto& [ns, frame] : frames_) (*writer)->Write(ns, frame);
    return absl::OkStatus();
  }

 private:
  std::vector<std::pair<uint64_t, std::vector<uint8_t>>> frames_;
};

}  // namespace

absl::Status WriteDemoCapture(const std::string& path) {
  Timeline w;
  const uint64_t t0 = 1'764'115'200ULL * 1'000'000'000ULL;  // 2025-11-26T00:00:00Z
  uint64_t t = t0;
  auto at = [&](uint64_t ms) { t = t0 + ms * 1'000'000ULL; };
  const std::string ingress = "198.18.0.10", ingress6 = "2001:db8:10::10";

  for (int i = 0; i < 40; ++i) {  // 4 s of legitimate HTTPS
    at(i * 100);
    w.Write(t, Syn(absl::StrCat("198.18.20.", 1 + i % 20), ingress, 443, 40000 + i).Build());
    w.Write(t + 1000,
            Tcp(absl::StrCat("198.18.20.", 1 + i % 20), ingress, 40000 + i, 443, kAck).Build());
    w.Write(t + 2000,
            Syn(absl::StrCat("2001:db8:20::", 1 + i % 9), ingress6, 443, 41000 + i).Build());
  }
  at(500);
  w.Write(t, Udp("198.18.21.1", ingress, 50000, 443).Build());  // QUIC
  w.Write(t, Syn("198.18.2.40", ingress, 31000).Build());       // office NodePort
  w.Write(t, Syn("2001:db8:100::40", ingress6, 30080).Build());
  w.Write(t, Syn("198.18.1.3", ingress, 10254).Build());  // admin endpoint
  w.Write(t, Syn("198.18.1.3", ingress, 22).Build());     // failsafe ssh
  at(600);
  w.Write(t, Syn("198.18.30.9", ingress, 10254).Build());  // outsider on the admin port
  w.Write(t, Syn("198.18.30.9", ingress, 31000).Build());  // ... and on a NodePort
  for (uint16_t port = 1; port <= 24; ++port) {            // a port scan
    at(700 + port);
    w.Write(t, Syn("198.18.31.7", ingress, port * 111).Build());
  }
  at(800);
  w.Write(t, Syn("198.18.200.1", ingress, 443).Build());  // blocklisted network
  w.Write(t, Udp("198.18.200.2", ingress, 53, 443).Build());
  for (int i = 0; i < 400; ++i) {  // SYN flood from one source: 400 SYNs in 0.4 s
    at(1000 + i);
    w.Write(t, Syn("198.18.66.6", ingress, 443, 1024 + i).Build());
  }
  at(1500);
  Frame frag = Udp("198.18.21.1", ingress, 50000, 443);
  frag.frag_offset = 185;
  w.Write(t, frag.Build());  // non-first fragment
  w.Write(t, Icmp("198.18.21.1", ingress, 8, 0).Build());
  w.Write(t, Icmp("2001:db8:20::1", ingress6, 135, 0).Build());  // neighbour solicitation
  w.Write(t, Arp());
  std::vector<uint8_t> bad = Syn("198.18.21.1", ingress, 443).Build();
  bad.resize(bad.size() - 8);  // truncated TCP header
  w.Write(t, bad);
  w.Write(t, Syn("198.18.21.1", "198.18.0.99", 8080).Build());  // not a policed address
  return w.Flush(path);
}

}  // namespace portcullis::testing
