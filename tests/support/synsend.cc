// portcullis-synsend: sends exactly COUNT TCP SYNs from SRC to DST:PORT
// through a raw socket (source ports vary), as fast as it can, and stops by
// itself after COUNT packets or SECONDS seconds. For tests and benchmarks
// inside network namespaces only.
//   portcullis-synsend SRC DST PORT COUNT [SECONDS [ack=N] [pps=N]]
// SRC may be an IPv4 prefix (198.19.0.0/16): each SYN then comes from a
// random address in it, as in a spoofed flood. With ack=N it sends bare ACKs
// acknowledging N instead (a forged cookie), from source port 1024 on. With
// pps=N it sends at most N packets a second (a flood that lasts).
// SRC and DST may be IPv6 (a prefix such as 2001:db8:ff::/48 too).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>

#include "tests/support/frame.h"

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr,
                 "usage: portcullis-synsend SRC DST PORT COUNT [SECONDS [ack=N] [pps=N]]\n");
    return 2;
  }
  const std::string src = argv[1], dst = argv[2];
  const int port = std::atoi(argv[3]);
  const long count = std::atol(argv[4]);
  const double seconds = argc > 5 ? std::atof(argv[5]) : 30;
  bool ack = false;
  uint32_t ack_number = 0;
  double pps = 0;  // 0: as fast as it can
  for (int i = 6; i < argc; ++i) {
    const std::string option = argv[i];
    if (option.rfind("ack=", 0) == 0) {
      ack = true;
      ack_number = static_cast<uint32_t>(std::strtoul(option.c_str() + 4, nullptr, 0));
    } else if (option.rfind("pps=", 0) == 0) {
      pps = std::atof(option.c_str() + 4);
    } else {
      std::fprintf(stderr, "portcullis-synsend: unknown option %s\n", option.c_str());
      return 2;
    }
  }
  const bool v6 = dst.find(':') != std::string::npos;
  const int family = v6 ? AF_INET6 : AF_INET;
  const size_t addr_len = v6 ? 16 : 4;
  // A prefix: random sources inside it, its bits kept and the rest drawn.
  const size_t slash = src.find('/');
  uint8_t base[16] = {};
  int bits = static_cast<int>(addr_len) * 8;
  if (slash != std::string::npos) {
    bits = std::atoi(src.c_str() + slash + 1);
    if (inet_pton(family, src.substr(0, slash).c_str(), base) != 1 || bits < 0 ||
        bits > static_cast<int>(addr_len) * 8) {
      std::fprintf(stderr, "portcullis-synsend: bad prefix %s\n", src.c_str());
      return 2;
    }
  }
  std::mt19937 random(static_cast<uint32_t>(getpid()));
  // IPPROTO_RAW implies IP_HDRINCL (IPV6_HDRINCL for IPv6).
  const int fd = socket(family, SOCK_RAW, IPPROTO_RAW);
  if (fd < 0) {
    std::perror("socket");
    return 1;
  }
  sockaddr_storage to = {};
  socklen_t to_len = 0;
  if (v6) {
    auto* to6 = reinterpret_cast<sockaddr_in6*>(&to);
    to6->sin6_family = AF_INET6;
    to_len = sizeof(*to6);
    if (inet_pton(AF_INET6, dst.c_str(), &to6->sin6_addr) != 1) return 2;
  } else {
    auto* to4 = reinterpret_cast<sockaddr_in*>(&to);
    to4->sin_family = AF_INET;
    to_len = sizeof(*to4);
    if (inet_pton(AF_INET, dst.c_str(), &to4->sin_addr) != 1) return 2;
  }
  const auto start = std::chrono::steady_clock::now();
  const auto deadline = start + std::chrono::duration<double>(seconds);
  long sent = 0;
  for (; sent < count; ++sent) {
    if ((sent & 63) == 0 && pps > 0) {
      std::this_thread::sleep_until(start +
                                    std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                        std::chrono::duration<double>(sent / pps)));
    }
    if ((sent & 1023) == 0 && std::chrono::steady_clock::now() > deadline) break;
    std::string from = src;
    if (slash != std::string::npos) {
      uint8_t a[16];
      for (size_t i = 0; i < addr_len; ++i) {
        const int keep = std::clamp(bits - static_cast<int>(i) * 8, 0, 8);
        const uint8_t mask = static_cast<uint8_t>(0xff00 >> keep);
        a[i] = static_cast<uint8_t>((base[i] & mask) | (random() & ~mask));
      }
      char text[INET6_ADDRSTRLEN];
      from = inet_ntop(family, a, text, sizeof(text));
    }
    portcullis::testing::Frame f = portcullis::testing::Syn(
        from, dst, static_cast<uint16_t>(port), static_cast<uint16_t>(1024 + sent % 60000));
    if (ack) {
      f.tcp_flags = portcullis::testing::kAck;
      f.tcp_seq = 1000;
      f.tcp_ack = ack_number;
    }
    std::vector<uint8_t> frame = f.Build();
    if (sendto(fd, frame.data() + 14, frame.size() - 14, 0, reinterpret_cast<sockaddr*>(&to),
               to_len) < 0) {
      std::perror("sendto");
      return 1;
    }
  }
  std::printf("%ld\n", sent);
  return sent == count ? 0 : 1;
}
