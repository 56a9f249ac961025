// The agent's HTTP endpoints under a slowloris: clients that open
// connections and never finish their request must not keep kubelet's probes
// waiting (two such clients held /healthz for 29.5 s with 2 workers).
#include "common/http_server.h"

#include <arpa/inet.h>
#include <civetweb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace portcullis {
namespace {

int Connect(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_port = htons(port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) != 0) {
    close(fd);
    return -1;
  }
  timeval tv{.tv_sec = 5, .tv_usec = 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  return fd;
}

// A free port on loopback, from the kernel.
uint16_t FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa));
  socklen_t len = sizeof(sa);
  getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &len);
  close(fd);
  return ntohs(sa.sin_port);
}

TEST(HttpServerTest, HealthzAnswersWithinASecondWhileEightClientsHoldUnfinishedRequests) {
  std::atomic<bool> ready{true};
  const uint16_t port = FreePort();
  auto server = HttpServer::Start(absl::StrCat("127.0.0.1:", port), {}, &ready);
  ASSERT_TRUE(server.ok()) << server.status();
  std::vector<int> held;
  absl::Cleanup close_held = [&] {
    for (int fd : held) close(fd);
  };
  for (int i = 0; i < 8; ++i) {
    const int fd = Connect(port);
    ASSERT_GE(fd, 0);
    const std::string partial = "GET /healthz HTTP/1.1\r\nHost: agent\r\nX-Slow: ";
    ASSERT_EQ(write(fd, partial.data(), partial.size()), static_cast<ssize_t>(partial.size()));
    held.push_back(fd);
  }
  const auto start = std::chrono::steady_clock::now();
  const int fd = Connect(port);
  ASSERT_GE(fd, 0);
  absl::Cleanup close_probe = [fd] { close(fd); };
  const std::string request = "GET /healthz HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n";
  ASSERT_EQ(write(fd, request.data(), request.size()), static_cast<ssize_t>(request.size()));
  char buf[256] = {};
  const ssize_t n = read(fd, buf, sizeof(buf) - 1);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_GT(n, 0) << "no answer";
  EXPECT_EQ(std::string(buf, 15), "HTTP/1.1 200 OK");
  EXPECT_LT(elapsed, std::chrono::seconds(1));
  // The held connections are cut off after the request timeout, not kept.
  char drain[64] = {};
  const auto held_since = std::chrono::steady_clock::now();
  const ssize_t got = read(held[0], drain, sizeof(drain) - 1);
  ASSERT_GT(got, 0);
  EXPECT_EQ(std::string(drain, 24), "HTTP/1.0 400 Bad Request");
  EXPECT_LT(std::chrono::steady_clock::now() - held_since, std::chrono::seconds(3));
}

TEST(HttpServerTest, AnIpv6AddressIsAClearErrorWithoutIpv6Support) {
  std::atomic<bool> ready{true};
  auto server = HttpServer::Start("::1:9469", {}, &ready);
  if (mg_check_feature(8)) GTEST_SKIP() << "CivetWeb with IPv6";
  ASSERT_FALSE(server.ok());
  EXPECT_EQ(server.status().message(),
            "--metrics-addr ::1:9469: this build's HTTP server (CivetWeb) has no IPv6; give an "
            "IPv4 address or 0.0.0.0");
}

}  // namespace
}  // namespace portcullis
