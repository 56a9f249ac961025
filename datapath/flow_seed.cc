#include "datapath/flow_seed.h"

#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <netinet/in.h>

#include <array>
#include <cstring>
#include <fstream>
#include <set>
#include <tuple>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/abi.h"

namespace portcullis::datapath {
namespace {

constexpr int kEstablished = 0x01, kSynSent = 0x02, kListen = 0x0a;

struct Endpoint {
  uint8_t family = 0;
  std::array<uint8_t, 16> addr{};
  uint16_t port = 0;
};

// "0100007F:1F90" (IPv4) or 32 hex digits (IPv6), each 32-bit word in host
// byte order, then the port. IPv4-mapped IPv6 addresses (dual-stack
// sockets) are IPv4 on the wire.
bool ParseEndpoint(absl::string_view text, Endpoint& out) {
  const std::vector<absl::string_view> parts = absl::StrSplit(text, ':');
  if (parts.size() != 2 || (parts[0].size() != 8 && parts[0].size() != 32)) return false;
  uint32_t port = 0;
  if (!absl::SimpleHexAtoi(parts[1], &port) || port > 0xffff) return false;
  const size_t words = parts[0].size() / 8;
  std::array<uint8_t, 16> bytes{};
  for (size_t w = 0; w < words; ++w) {
    uint32_t word = 0;
    if (!absl::SimpleHexAtoi(parts[0].substr(w * 8, 8), &word)) return false;
    std::memcpy(&bytes[w * 4], &word, 4);  // host order, as the kernel printed it
  }
  static constexpr uint8_t kMapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
  out = Endpoint{};
  out.port = static_cast<uint16_t>(port);
  if (words == 1 || std::memcmp(bytes.data(), kMapped, 12) == 0) {
    out.family = PC_FAMILY_V4;
    std::memcpy(out.addr.data(), words == 1 ? &bytes[0] : &bytes[12], 4);
  } else {
    out.family = PC_FAMILY_V6;
    out.addr = bytes;
  }
  return true;
}

struct Socket {
  Endpoint local, remote;
  int state;
};

std::vector<Socket> ReadSockets(const std::string& path) {
  std::vector<Socket> out;
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);  // the header
  while (std::getline(in, line)) {
    const std::vector<absl::string_view> f = absl::StrSplit(line, ' ', absl::SkipWhitespace());
    Socket s;
    uint32_t state = 0;
    if (f.size() < 4 || !ParseEndpoint(f[1], s.local) || !ParseEndpoint(f[2], s.remote) ||
        !absl::SimpleHexAtoi(f[3], &state)) {
      continue;
    }
    s.state = static_cast<int>(state);
    out.push_back(s);
  }
  return out;
}

}  // namespace

absl::StatusOr<uint64_t> SeedOpenedFlows(Datapath& dp, const std::string& proc_net) {
  std::vector<Socket> sockets = ReadSockets(proc_net + "/tcp");
  for (const Socket& s : ReadSockets(proc_net + "/tcp6")) sockets.push_back(s);
  // Listening (family, address, port); a wildcard address listens on all.
  std::set<std::tuple<uint8_t, std::array<uint8_t, 16>, uint16_t>> listening;
  for (const Socket& s : sockets) {
    if (s.state == kListen) listening.emplace(s.local.family, s.local.addr, s.local.port);
  }
  auto served = [&](const Endpoint& local) {
    return listening.count({local.family, local.addr, local.port}) ||
           listening.count({local.family, std::array<uint8_t, 16>{}, local.port}) ||
           listening.count({PC_FAMILY_V6, std::array<uint8_t, 16>{}, local.port});  // [::]
  };
  const int fd = dp.map_fd(Map::kEgressFlows);
  uint64_t seeded = 0;
  for (const Socket& s : sockets) {
    if ((s.state != kEstablished && s.state != kSynSent) || served(s.local)) continue;
    pc_flow_key key{};
    key.family = s.local.family;
    key.proto = IPPROTO_TCP;
    key.sport = htons(s.remote.port);
    key.dport = htons(s.local.port);
    std::memcpy(key.src, s.remote.addr.data(), 16);
    std::memcpy(key.dst, s.local.addr.data(), 16);
    const pc_flow flow = {.opened_at = 0, .seen_at = dp.Now()};
    if (bpf_map_update_elem(fd, &key, &flow, BPF_NOEXIST) == 0) ++seeded;
  }
  return seeded;
}

}  // namespace portcullis::datapath
