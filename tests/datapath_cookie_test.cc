// SYN cookies in the XDP program (PRODUCT.md step 12): which SYNs are
// answered (auto: over the global bucket; always: within the source bucket;
// off: none), and that the answer is a correct SYN-ACK, for IPv4 and IPv6,
// untagged and behind VLAN tags, IPv4 options and IPv6 extension headers:
// addresses, ports, sequence numbers, checksums and the options the client
// offered.
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "datapath/counters.h"
#include "tests/support/datapath_fixture.h"

namespace portcullis::testing {
namespace {

constexpr char kPolicy[] = R"(
apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: cookie-test}
spec:
  mode: MODE
  defaultAction: deny
  failsafe:
    - {ports: [22], proto: tcp, from: any}
  ports:
    - {ports: [443], proto: tcp, from: any}
  rateLimits:
    syn:
      perSource: {rate: 1, burst: PER_SOURCE}
      global: {rate: 1, burst: 1}
      cookies: COOKIES
)";

std::string PolicyWith(absl::string_view cookies, absl::string_view mode = "enforce",
                       int per_source = 100) {
  return absl::StrReplaceAll(
      kPolicy, {{"COOKIES", cookies}, {"MODE", mode}, {"PER_SOURCE", absl::StrCat(per_source)}});
}

constexpr uint32_t kXdpPass = 2, kXdpTx = 3, kXdpDrop = 1;

// What a Linux client offers: MSS 1460, SACK, timestamps, window scale 7.
std::vector<uint8_t> LinuxSynOptions(uint32_t tsval) {
  return {2,
          4,
          0x05,
          0xb4,
          4,
          2,
          8,
          10,
          static_cast<uint8_t>(tsval >> 24),
          static_cast<uint8_t>(tsval >> 16),
          static_cast<uint8_t>(tsval >> 8),
          static_cast<uint8_t>(tsval),
          0,
          0,
          0,
          0,
          1,
          3,
          3,
          7};
}

uint16_t Get16(const std::vector<uint8_t>& b, size_t at) { return b[at] << 8 | b[at + 1]; }
uint32_t Get32(const std::vector<uint8_t>& b, size_t at) {
  return static_cast<uint32_t>(Get16(b, at)) << 16 | Get16(b, at + 2);
}

// Ones' complement sum over [at, at + len).
uint32_t Sum(const std::vector<uint8_t>& b, size_t at, size_t len, uint32_t sum = 0) {
  for (size_t i = 0; i + 1 < len; i += 2) sum += Get16(b, at + i);
  if (len % 2) sum += b[at + len - 1] << 8;
  return sum;
}
uint16_t Fold(uint32_t sum) {
  while (sum >> 16) sum = (sum & 0xffff) + (sum >> 16);
  return static_cast<uint16_t>(sum);
}

// The client's SYN, and where its headers sit in the frame.
struct Case {
  std::string name;
  bool v6;
  std::vector<uint16_t> vlans;
  bool ip_extras;  // IPv4 options or IPv6 extension headers
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.name; }

class CookieTest : public DatapathTest, public ::testing::WithParamInterface<Case> {
 protected:
  static void SetUpTestSuite() {
    LoadSuite({.use_user_clock = true, .record_last_verdict = true, .assume_listeners = true});
  }

  Frame ClientSyn(uint16_t sport, std::vector<uint8_t> options) {
    const Case& c = GetParam();
    Frame f = c.v6 ? Syn("2001:db8:7::1", "2001:db8:10::10", 443, sport)
                   : Syn("198.18.7.1", "198.18.0.10", 443, sport);
    f.vlan_tpids = c.vlans;
    if (c.ip_extras) {
      if (c.v6) {
        f.ipv6_ext = {{IPPROTO_HOPOPTS, 0}, {IPPROTO_DSTOPTS, 1}};
      } else {
        f.ipv4_option_words = 2;
      }
    }
    f.tcp_seq = 0x10203040;
    f.tcp_options = std::move(options);
    return f;
  }

  uint64_t CookiesSent() {
    auto n = datapath::ReadCookieCounts(*dp_);
    EXPECT_TRUE(n.ok()) << n.status();
    return n.ok() ? (*n)[PC_COOKIE_SENT] : 0;
  }

  // Checks that `out` is the SYN-ACK for `syn` and returns its TCP options.
  std::vector<uint8_t> ExpectSynAck(const Frame& syn, const std::vector<uint8_t>& in,
                                    const std::vector<uint8_t>& out) {
    const Case& c = GetParam();
    const size_t l3 = 14 + 4 * c.vlans.size();
    const size_t ip_len = c.v6 ? 40 : 20;
    EXPECT_EQ(out.size(), l3 + ip_len + 44);
    if (out.size() != l3 + ip_len + 44) return {};
    // Ethernet: addresses swapped; the tags and type as they came.
    EXPECT_TRUE(std::equal(out.begin(), out.begin() + 6, in.begin() + 6));
    EXPECT_TRUE(std::equal(out.begin() + 6, out.begin() + 12, in.begin()));
    EXPECT_TRUE(std::equal(out.begin() + 12, out.begin() + l3, in.begin() + 12));
    const size_t addr = c.v6 ? l3 + 8 : l3 + 12, alen = c.v6 ? 16 : 4;
    // IP: addresses swapped, no options or extension headers, TTL 64.
    EXPECT_TRUE(
        std::equal(out.begin() + addr, out.begin() + addr + alen, in.begin() + addr + alen));
    EXPECT_TRUE(
        std::equal(out.begin() + addr + alen, out.begin() + addr + 2 * alen, in.begin() + addr));
    if (c.v6) {
      EXPECT_EQ(out[l3] >> 4, 6);
      EXPECT_EQ(Get16(out, l3 + 4), 44);  // payload length
      EXPECT_EQ(out[l3 + 6], IPPROTO_TCP);
      EXPECT_EQ(out[l3 + 7], 64);
    } else {
      EXPECT_EQ(out[l3], 0x45);
      EXPECT_EQ(Get16(out, l3 + 2), 64);  // total length
      EXPECT_EQ(out[l3 + 8], 64);
      EXPECT_EQ(out[l3 + 9], IPPROTO_TCP);
      EXPECT_EQ(Fold(Sum(out, l3, 20)), 0xffff) << "IPv4 header checksum";
    }
    // TCP: ports swapped, ack = ISN + 1, SYN|ACK, 44 bytes, checksum.
    const size_t l4 = l3 + ip_len;
    EXPECT_EQ(Get16(out, l4), syn.dport);
    EXPECT_EQ(Get16(out, l4 + 2), syn.sport);
    EXPECT_EQ(Get32(out, l4 + 8), syn.tcp_seq + 1);
    EXPECT_EQ(out[l4 + 12] >> 4, 11);
    EXPECT_EQ(out[l4 + 13], 0x12);
    uint32_t pseudo = Sum(out, addr, 2 * alen) + IPPROTO_TCP + 44;
    EXPECT_EQ(Fold(Sum(out, l4, 44, pseudo)), 0xffff) << "TCP checksum";
    return std::vector<uint8_t>(out.begin() + l4 + 20, out.end());
  }
};

// Walks TCP options into (kind -> body).
std::map<uint8_t, std::vector<uint8_t>> Options(const std::vector<uint8_t>& o) {
  std::map<uint8_t, std::vector<uint8_t>> out;
  for (size_t i = 0; i < o.size();) {
    if (o[i] == 0) break;
    if (o[i] == 1) {
      ++i;
      continue;
    }
    const size_t len = o[i + 1];
    out[o[i]] = std::vector<uint8_t>(o.begin() + i + 2, o.begin() + i + len);
    i += len;
  }
  return out;
}

TEST_P(CookieTest, ASynOverTheGlobalBudgetIsAnsweredWithASynAckCarryingACookie) {
  Install(PolicyWith("auto"));
  const Frame first = ClientSyn(40001, LinuxSynOptions(1111));
  EXPECT_EQ(Run(first).action, kXdpPass) << "within the global budget: to the listener";

  const uint64_t sent = CookiesSent();
  const Frame syn = ClientSyn(40002, LinuxSynOptions(0xabcdef01));
  const std::vector<uint8_t> in = syn.Build();
  const datapath::Judgement j = Run(in);
  EXPECT_EQ(j.action, kXdpTx);
  EXPECT_EQ(j.verdict, PC_VERDICT_COOKIE);
  EXPECT_EQ(j.reason, PC_REASON_SYN_COOKIE);
  EXPECT_EQ(CookiesSent(), sent + 1);

  const auto opts = Options(ExpectSynAck(syn, in, j.frame_out));
  ASSERT_TRUE(opts.count(2)) << "MSS";
  EXPECT_GE(Get16(opts.at(2), 0), 536);
  EXPECT_TRUE(opts.count(4)) << "SACK permitted, as offered";
  ASSERT_TRUE(opts.count(8)) << "timestamps, as offered";
  EXPECT_EQ(Get32(opts.at(8), 4), 0xabcdef01u) << "TSecr echoes the client's TSval";
  ASSERT_TRUE(opts.count(3)) << "window scale, as offered";
  EXPECT_EQ(opts.at(3)[0], PC_COOKIE_RCV_WSCALE);

  // The cookie's low bits: MSS 1460 (v4) / 1440 (v6) is index 3, SACK, wscale 7.
  const size_t l4 = j.frame_out.size() - 44;
  const uint32_t cookie = Get32(j.frame_out, l4 + 4);
  EXPECT_EQ(cookie >> 6 & 3, 3u);
  EXPECT_EQ(cookie >> 5 & 1, 1u);
  EXPECT_EQ(cookie >> 1 & 15, 7u);
}

TEST_P(CookieTest, OptionsTheClientDidNotOfferAreNotAnswered) {
  Install(PolicyWith("always"));
  const Frame syn = ClientSyn(40003, {2, 4, 0x02, 0x18});  // MSS 536 only
  const std::vector<uint8_t> in = syn.Build();
  const datapath::Judgement j = Run(in);
  ASSERT_EQ(j.action, kXdpTx);
  const auto opts = Options(ExpectSynAck(syn, in, j.frame_out));
  EXPECT_TRUE(opts.count(2));
  EXPECT_FALSE(opts.count(3));
  EXPECT_FALSE(opts.count(4));
  EXPECT_FALSE(opts.count(8));
  const uint32_t cookie = Get32(j.frame_out, j.frame_out.size() - 44 + 4);
  EXPECT_EQ(cookie >> 6 & 3, 0u) << "the smallest MSS";
  EXPECT_EQ(cookie >> 5 & 1, 0u) << "no SACK";
  EXPECT_EQ(cookie >> 1 & 15, 15u) << "no window scale";
}

INSTANTIATE_TEST_SUITE_P(Frames, CookieTest,
                         ::testing::Values(Case{"v4", false, {}, false},
                                           Case{"v6", true, {}, false},
                                           Case{"v4_vlan", false, {0x8100}, false},
                                           Case{"v6_qinq", true, {0x88a8, 0x8100}, false},
                                           Case{"v4_options", false, {0x8100}, true},
                                           Case{"v6_extension_headers", true, {}, true}),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.name;
                         });

// Which SYNs are answered, by `cookies`.
class CookieModeTest : public DatapathTest {
 protected:
  static void SetUpTestSuite() {
    LoadSuite({.use_user_clock = true, .record_last_verdict = true, .assume_listeners = true});
  }
  datapath::Judgement SynFrom(const std::string& src, uint16_t sport) {
    return Run(Syn(src, "198.18.0.10", 443, sport));
  }
  uint64_t Buckets() {
    uint64_t n = 0;
    pc_bucket_key_v4 key{}, next{};
    for (void* prev = nullptr;
         bpf_map_get_next_key(dp_->map_fd(datapath::Map::kSourceBucketsV4), prev, &next) == 0;
         prev = &key) {
      key = next;
      ++n;
    }
    return n;
  }
};

TEST_F(CookieModeTest, OffDropsOverTheGlobalBudgetAsBefore) {
  Install(PolicyWith("off"));
  EXPECT_EQ(SynFrom("198.18.7.1", 1).reason, PC_REASON_ALLOWED);
  const datapath::Judgement j = SynFrom("198.18.7.2", 2);
  EXPECT_EQ(j.action, kXdpDrop);
  EXPECT_EQ(j.reason, PC_REASON_SYN_RATE_GLOBAL);
}

TEST_F(CookieModeTest, LeftOutMeansOff) {
  Install(absl::StrReplaceAll(PolicyWith("off"), {{"      cookies: off\n", ""}}));
  EXPECT_EQ(SynFrom("198.18.7.1", 1).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(SynFrom("198.18.7.2", 2).reason, PC_REASON_SYN_RATE_GLOBAL);
}

TEST_F(CookieModeTest, TheSourceBucketStillComesFirst) {
  Install(PolicyWith("always", "enforce", 2));
  EXPECT_EQ(SynFrom("198.18.7.1", 1).reason, PC_REASON_SYN_COOKIE);
  EXPECT_EQ(SynFrom("198.18.7.1", 2).reason, PC_REASON_SYN_COOKIE);
  const datapath::Judgement j = SynFrom("198.18.7.1", 3);
  EXPECT_EQ(j.action, kXdpDrop);
  EXPECT_EQ(j.reason, PC_REASON_SYN_RATE_SOURCE);
  // always: the global bucket takes no part; auto: it decides.
  EXPECT_EQ(SynFrom("198.18.7.2", 4).reason, PC_REASON_SYN_COOKIE);
}

TEST_F(CookieModeTest, AlwaysWithoutASourceLimitCreatesNoBucket) {
  Install(absl::StrReplaceAll(PolicyWith("always"),
                              {{"      perSource: {rate: 1, burst: 100}\n", ""}}));
  for (int i = 0; i < 50; ++i) {
    ASSERT_EQ(SynFrom(absl::StrCat("198.19.0.", i + 1), static_cast<uint16_t>(1000 + i)).reason,
              PC_REASON_SYN_COOKIE);
  }
  EXPECT_EQ(Buckets(), 0u) << "a spoofed flood answered with cookies leaves no bucket behind";
}

TEST_F(CookieModeTest, AuditPassesWhatItWouldAnswer) {
  Install(PolicyWith("always", "audit"));
  const datapath::Judgement j = SynFrom("198.18.7.1", 1);
  EXPECT_EQ(j.action, kXdpPass);
  EXPECT_EQ(j.verdict, PC_VERDICT_AUDIT);
  EXPECT_EQ(j.reason, PC_REASON_SYN_COOKIE);
}

TEST_F(CookieModeTest, OnlySynsAreAnswered) {
  Install(PolicyWith("always"));
  EXPECT_EQ(Run(Tcp("198.18.7.1", "198.18.0.10", 1, 443, kAck)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Tcp("198.18.7.1", "198.18.0.10", 1, 443, kSyn | kAck)).reason, PC_REASON_ALLOWED);
  // A failsafe port is never rate-limited, and so never answered.
  EXPECT_EQ(Run(Syn("198.18.7.1", "198.18.0.10", 22, 1)).reason, PC_REASON_FAILSAFE);
}

// Without assume_listeners, as the agent runs: a SYN is answered only when
// a listener in this network namespace would get its connection.
class CookieListenerTest : public DatapathTest {};

TEST_F(CookieListenerTest, ASynWithNoListenerHereIsJudgedAsWithCookiesOff) {
  Install(PolicyWith("auto"));
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in any{.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_ANY)}};
  ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&any), sizeof(any)), 0);
  socklen_t len = sizeof(any);
  ASSERT_EQ(getsockname(fd, reinterpret_cast<sockaddr*>(&any), &len), 0);
  const uint16_t port = ntohs(any.sin_port);
  Install(absl::StrReplaceAll(PolicyWith("auto"), {{"[443]", absl::StrCat("[", port, "]")}}));

  EXPECT_EQ(Run(Syn("198.18.7.1", "198.18.0.10", port, 1)).reason, PC_REASON_ALLOWED);
  EXPECT_EQ(Run(Syn("198.18.7.1", "198.18.0.10", port, 2)).reason, PC_REASON_SYN_RATE_GLOBAL)
      << "bound, not listening: nothing would complete the cookie";
  ASSERT_EQ(listen(fd, 16), 0);
  EXPECT_EQ(Run(Syn("198.18.7.1", "198.18.0.10", port, 3)).reason, PC_REASON_SYN_COOKIE);
  close(fd);
}

// A client that reuses its port for a new connection to a server that
// closed first sends its SYN to the server's TIME_WAIT socket, which the
// kernel reopens. A cookie cannot be completed there (the new connection
// would collide with the TIME_WAIT socket), so the SYN goes to the kernel.
// Sent to a cookie it was judged as with `off`: dropped over the budget,
// again on every retry, so the client could never connect.
TEST_F(CookieListenerTest, ASynToAConnectionInTimeWaitGoesToTheKernel) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in addr{.sin_family = AF_INET, .sin_port = 0, .sin_addr = {htonl(INADDR_LOOPBACK)}};
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  ASSERT_EQ(listen(listener, 16), 0);
  const uint16_t port = ntohs(addr.sin_port);
  // One connection, closed by the server first: its end is in TIME_WAIT.
  const int client = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_EQ(connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  sockaddr_in local{};
  len = sizeof(local);
  ASSERT_EQ(getsockname(client, reinterpret_cast<sockaddr*>(&local), &len), 0);
  const int server = accept(listener, nullptr, nullptr);
  ASSERT_GE(server, 0);
  close(server);
  char byte;
  ASSERT_EQ(read(client, &byte, 1), 0);  // the server's FIN
  close(client);
  Install(absl::StrReplaceAll(PolicyWith("auto"), {{"[443]", absl::StrCat("[", port, "]")}}));

  EXPECT_EQ(Run(Syn("198.18.7.1", "127.0.0.1", port, 1)).reason, PC_REASON_ALLOWED)
      << "within the global budget";
  const datapath::Judgement reopen =
      Run(Syn("127.0.0.1", "127.0.0.1", port, ntohs(local.sin_port)));
  EXPECT_EQ(reopen.reason, PC_REASON_ALLOWED);
  EXPECT_EQ(reopen.action, kXdpPass);
  EXPECT_EQ(Run(Syn("127.0.0.1", "127.0.0.1", port, ntohs(local.sin_port) ^ 1)).reason,
            PC_REASON_SYN_COOKIE)
      << "another port: the listener's, answered with a cookie";
  close(listener);
}

// With pods behind --tc-interfaces, a SYN that finds no socket in the
// node's namespace may be for a pod (a NodePort DNATed to it, its own
// address): answered, for the cookie program at the pod's side to complete.
class CookiesForPodsTest : public DatapathTest {
 protected:
  static void SetUpTestSuite() {
    LoadSuite({.use_user_clock = true, .record_last_verdict = true, .cookies_for_pods = true});
  }
};

TEST_F(CookiesForPodsTest, ASynThatFindsNoSocketHereIsAnswered) {
  Install(PolicyWith("auto"));
  EXPECT_EQ(Run(Syn("198.18.7.1", "198.18.0.10", 443, 1)).reason, PC_REASON_ALLOWED)
      << "within the global budget";
  const datapath::Judgement j = Run(Syn("198.18.7.1", "198.18.0.10", 443, 2));
  EXPECT_EQ(j.reason, PC_REASON_SYN_COOKIE);
  EXPECT_EQ(j.action, kXdpTx);
}

// cookie_handovers is pinned with the other maps: an ACK that the previous
// agent's uplink program checked is still handed to the pod after a restart.
class HandoverPinTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_EQ(mkdir(dir_.c_str(), 0700), 0) << dir_ << ": " << strerror(errno);
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  static absl::StatusOr<std::unique_ptr<datapath::Datapath>> Load(const std::string& dir) {
    return datapath::Datapath::Load({.cookies_for_pods = true, .pin_dir = dir});
  }

  const std::string dir_ = absl::StrCat("/sys/fs/bpf/pc-handover-", getpid());
  const std::string pin_ = dir_ + "/cookie_handovers";
};

TEST_F(HandoverPinTest, AHandoverOutlivesTheAgentThatRecordedIt) {
  const pc_cookie_handover_key key{.seq = htonl(1000), .ack = htonl(2000)};
  pc_cookie_handover value{};
  value.at = 123;
  value.mss = 1460;
  {
    auto first = Load(dir_);
    ASSERT_TRUE(first.ok()) << first.status();
    ASSERT_EQ((*first)->cookies_unsupported(), "");
    datapath::UniqueFd pinned(bpf_obj_get(pin_.c_str()));
    ASSERT_GE(pinned.get(), 0) << pin_ << ": " << strerror(errno);
    ASSERT_EQ(bpf_map_update_elem(pinned.get(), &key, &value, BPF_ANY), 0);
  }
  auto second = Load(dir_);
  ASSERT_TRUE(second.ok()) << second.status();
  ASSERT_EQ((*second)->cookies_unsupported(), "");
  // What the second agent's programs use, seen through a pin of its own.
  const std::string copy = dir_ + "/copy";
  ASSERT_EQ(mkdir(copy.c_str(), 0700), 0);
  ASSERT_EQ((*second)->PinMaps(copy), absl::OkStatus());
  datapath::UniqueFd used(bpf_obj_get((copy + "/cookie_handovers").c_str()));
  ASSERT_GE(used.get(), 0);
  pc_cookie_handover got{};
  ASSERT_EQ(bpf_map_lookup_elem(used.get(), &key, &got), 0) << "the handover was lost";
  EXPECT_EQ(got.at, 123);
  EXPECT_EQ(got.mss, 1460);
}

TEST_F(HandoverPinTest, OneOfAnotherShapeIsReplaced) {
  const int old =
      bpf_map_create(BPF_MAP_TYPE_LRU_HASH, "cookie_handovers", sizeof(pc_cookie_handover_key),
                     sizeof(pc_cookie_handover), 16, nullptr);
  ASSERT_GE(old, 0);
  datapath::UniqueFd old_fd(old);
  ASSERT_EQ(bpf_obj_pin(old, pin_.c_str()), 0);
  auto dp = Load(dir_);
  ASSERT_TRUE(dp.ok()) << dp.status();
  EXPECT_EQ((*dp)->cookies_unsupported(), "");
  datapath::UniqueFd pinned(bpf_obj_get(pin_.c_str()));
  ASSERT_GE(pinned.get(), 0);
  bpf_map_info info{};
  __u32 len = sizeof(info);
  ASSERT_EQ(bpf_obj_get_info_by_fd(pinned.get(), &info, &len), 0);
  EXPECT_EQ(info.max_entries, PC_COOKIE_HANDOVERS);
}

}  // namespace
}  // namespace portcullis::testing
