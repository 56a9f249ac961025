// portcullis-synsend: sends exactly COUNT TCP SYNs from SRC to DST:PORT
// through a raw socket (source ports vary), as fast as it can, and stops by
// itself after COUNT packets or SECONDS seconds. For tests and benchmarks
// inside network namespaces only.
//   portcullis-synsend SRC DST PORT COUNT [SECONDS [ack=N]]
// SRC may be an IPv4 prefix (198.19.0.0/16): each SYN then comes from a
// random address in it, as in a spoofed flood. With ack=N it sends bare ACKs
// acknowledging N instead (a forged cookie), from source port 1024 on.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>

#include "tests/support/frame.h"

int main(int argc, char** argv) {
  if (argc < 5) {
    std::fprintf(stderr, "usage: portcullis-synsend SRC DST PORT COUNT [SECONDS]\n");
    return 2;
  }
  const std::string src = argv[1], dst = argv[2];
  const int port = std::atoi(argv[3]);
  const long count = std::atol(argv[4]);
  const double seconds = argc > 5 ? std::atof(argv[5]) : 30;
  const std::string mode = argc > 6 ? argv[6] : "";
  const bool ack = mode.rfind("ack=", 0) == 0;
  const uint32_t ack_number =
      ack ? static_cast<uint32_t>(std::strtoul(mode.c_str() + 4, nullptr, 0)) : 0;
  // A prefix: random sources inside it.
  uint32_t base = 0, span = 0;
  if (const size_t slash = src.find('/'); slash != std::string::npos) {
    in_addr a{};
    inet_pton(AF_INET, src.substr(0, slash).c_str(), &a);
    const int bits = std::atoi(src.c_str() + slash + 1);
    span = bits >= 32 ? 1 : 1u << (32 - bits);
    base = ntohl(a.s_addr) & ~(span - 1);
  }
  std::mt19937 random(static_cast<uint32_t>(getpid()));
  const int fd = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);  // IP_HDRINCL implied
  if (fd < 0) {
    std::perror("socket");
    return 1;
  }
  struct sockaddr_in to = {};
  to.sin_family = AF_INET;
  inet_pton(AF_INET, dst.c_str(), &to.sin_addr);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  long sent = 0;
  for (; sent < count; ++sent) {
    if ((sent & 1023) == 0 && std::chrono::steady_clock::now() > deadline) break;
    std::string from = src;
    if (span) {
      in_addr a{htonl(base + static_cast<uint32_t>(random() % span))};
      char text[INET_ADDRSTRLEN];
      from = inet_ntop(AF_INET, &a, text, sizeof(text));
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
               sizeof(to)) < 0) {
      std::perror("sendto");
      return 1;
    }
  }
  std::printf("%ld\n", sent);
  return sent == count ? 0 : 1;
}
