// portcullis-synsend: sends exactly COUNT TCP SYNs from SRC to DST:PORT
// through a raw socket (source ports vary), as fast as it can or at --pps,
// and stops by itself after COUNT packets or SECONDS seconds. For tests and
// benchmarks inside network namespaces only.
//   portcullis-synsend SRC DST PORT COUNT [SECONDS]
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
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
    std::vector<uint8_t> frame =
        portcullis::testing::Syn(src, dst, static_cast<uint16_t>(port),
                                 static_cast<uint16_t>(1024 + sent % 60000))
            .Build();
    if (sendto(fd, frame.data() + 14, frame.size() - 14, 0, reinterpret_cast<sockaddr*>(&to),
               sizeof(to)) < 0) {
      std::perror("sendto");
      return 1;
    }
  }
  std::printf("%ld\n", sent);
  return sent == count ? 0 : 1;
}
