// The BPF program against the reference model (tests/support/
// reference_model.h): random policies, and random and mutated frames under
// each; every verdict and reason must agree. Deterministic seeds, so a
// disagreement reproduces; it prints the policy and the frame.
// PORTCULLIS_DIFFERENTIAL_FRAMES sets the number of frames (200,000 here;
// the soak target runs 2,000,000).
#include <cstdlib>
#include <random>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "policy/text.h"
#include "tests/support/datapath_fixture.h"
#include "tests/support/reference_model.h"

namespace portcullis::testing {
namespace {

// Addresses the frames use, and the networks the policies draw sets from:
// each address is inside some of them and outside others.
// Some are sources that never appear on the wire (PRODUCT.md step 2).
const char* kV4[] = {"198.18.1.5",  "198.18.1.200", "198.18.2.9",     "198.18.200.1", "198.18.0.10",
                     "198.18.0.11", "198.19.7.7",   "198.18.255.255", "224.0.0.5"};
const char* kV6[] = {"2001:db8:1::5",
                     "2001:db8:1:0:8000::1",
                     "2001:db8:2::9",
                     "2001:db8:ff::1",
                     "2001:db8:10::10",
                     "2001:db8:10:1::1",
                     "::ffff:198.18.1.5",
                     "::198.18.1.5",
                     "::",
                     "ff02::1"};
const char* kV4Nets[] = {"198.18.1.0/24",   "198.18.1.0/28", "198.18.0.0/16", "198.18.2.9/32",
                         "198.18.200.0/24", "198.18.0.0/15", "198.19.0.0/16", "198.18.0.10/32",
                         "198.18.128.0/17", "0.0.0.0/0"};
const char* kV6Nets[] = {"2001:db8:1::/64",  "2001:db8::/32",    "2001:db8:2::9/128",
                         "2001:db8:ff::/48", "2001:db8:10::/64", "::/0"};
const uint16_t kPorts[] = {22, 53, 80, 443, 8080, 10250, 10254, 30000, 31000, 32767};

template <typename T, size_t N>
const T& Pick(std::mt19937& rng, const T (&a)[N]) {
  return a[std::uniform_int_distribution<size_t>(0, N - 1)(rng)];
}
bool Coin(std::mt19937& rng, double p = 0.5) { return std::bernoulli_distribution(p)(rng); }

std::string RandomRule(std::mt19937& rng, int sets) {
  std::vector<std::string> ports;
  const int n = std::uniform_int_distribution<int>(1, 3)(rng);
  for (int i = 0; i < n; ++i) {
    const uint16_t a = Pick(rng, kPorts);
    if (Coin(rng, 0.3)) {
      const uint16_t b = Pick(rng, kPorts);
      ports.push_back(absl::StrCat("\"", std::min(a, b), "-", std::max(a, b), "\""));
    } else {
      ports.push_back(absl::StrCat(a));
    }
  }
  std::string from = "any";
  if (sets > 0 && Coin(rng, 0.7)) {
    std::vector<std::string> names;
    for (int s = 0; s < sets; ++s) {
      if (Coin(rng, 0.4)) names.push_back(absl::StrCat("s", s));
    }
    if (names.empty()) names.push_back("s0");
    from = absl::StrCat("[", absl::StrJoin(names, ", "), "]");
  }
  return absl::StrCat("{ports: [", absl::StrJoin(ports, ", "),
                      "], proto: ", Coin(rng) ? "tcp" : "udp", ", from: ", from, "}");
}

std::string RandomPolicy(std::mt19937& rng) {
  std::string y = "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: diff}\nspec:\n";
  absl::StrAppend(&y, "  mode: ", Coin(rng, 0.2) ? "audit" : "enforce", "\n");
  absl::StrAppend(&y, "  defaultAction: ", Coin(rng) ? "deny" : "allow", "\n");
  absl::StrAppend(&y, "  icmp: ", Coin(rng) ? "deny" : "allow", "\n");
  absl::StrAppend(&y, "  fragments: ", Coin(rng) ? "deny" : "allow", "\n");
  // An ICMP budget the run cannot exhaust, and cookies that need no bucket:
  // the model has no buckets.
  const char* cookies[] = {"", ", syn: {cookies: off}", ", syn: {cookies: auto}",
                           ", syn: {cookies: always}", ", syn: {cookies: always}"};
  absl::StrAppend(&y, "  rateLimits: {icmp: {perSource: {rate: 1000000, burst: 1000000}}",
                  Pick(rng, cookies), "}\n");
  if (Coin(rng, 0.3)) {
    absl::StrAppend(&y, "  destinations: [", Pick(rng, kV4Nets), ", \"", Pick(rng, kV6Nets),
                    "\"]\n");
  }
  const int sets = std::uniform_int_distribution<int>(0, 4)(rng);
  if (sets) absl::StrAppend(&y, "  sets:\n");
  for (int s = 0; s < sets; ++s) {
    std::set<std::string> cidrs;
    const int n = std::uniform_int_distribution<int>(1, 3)(rng);
    for (int i = 0; i < n; ++i) cidrs.insert(Coin(rng) ? Pick(rng, kV4Nets) : Pick(rng, kV6Nets));
    std::vector<std::string> quoted;
    for (const std::string& c : cidrs) quoted.push_back("\"" + c + "\"");
    absl::StrAppend(&y, "    s", s, ": [", absl::StrJoin(quoted, ", "), "]\n");
  }
  if (Coin(rng, 0.5)) {
    absl::StrAppend(&y, "  blocklist: [\"", Pick(rng, kV4Nets), "\", \"", Pick(rng, kV6Nets),
                    "\"]\n");
  }
  if (Coin(rng, 0.6)) {
    absl::StrAppend(&y, "  failsafe:\n    - ", RandomRule(rng, sets), "\n");
  }
  const int rules = std::uniform_int_distribution<int>(0, 5)(rng);
  if (rules) absl::StrAppend(&y, "  ports:\n");
  for (int r = 0; r < rules; ++r) absl::StrAppend(&y, "    - ", RandomRule(rng, sets), "\n");
  return y;
}

std::vector<uint8_t> RandomFrame(std::mt19937& rng) {
  const bool v6 = Coin(rng, 0.4);
  Frame f;
  const int kind = std::uniform_int_distribution<int>(0, 9)(rng);
  const std::string src = v6 ? Pick(rng, kV6) : Pick(rng, kV4);
  const std::string dst = v6 ? Pick(rng, kV6) : Pick(rng, kV4);
  if (kind <= 4) {
    uint8_t flags = static_cast<uint8_t>(std::uniform_int_distribution<int>(0, 255)(rng));
    if (Coin(rng)) flags = kSyn;
    f = Tcp(src, dst, Pick(rng, kPorts), Pick(rng, kPorts), flags);
  } else if (kind <= 6) {
    f = Udp(src, dst, Pick(rng, kPorts), Pick(rng, kPorts));
  } else if (kind == 7) {
    const uint8_t types[] = {0, 3, 8, 11, 2, 128, 133, 135, 137, 138};
    f = Icmp(src, dst, Pick(rng, types),
             static_cast<uint8_t>(std::uniform_int_distribution<int>(0, 5)(rng)));
    if (Coin(rng, 0.2)) f.proto = v6 ? 1 : 58;  // the other family's ICMP
    f.hop_limit = Coin(rng) ? 255 : 64;
  } else if (kind == 8) {
    f = Udp(src, dst, 1, 1);
    f.proto = Coin(rng) ? 47 : 132;  // GRE, SCTP: no ports
  } else {
    if (Coin(rng, 0.5)) return Arp();
    f = Tcp(src, dst, 1000, Pick(rng, kPorts), kAck);
  }
  if (Coin(rng, 0.2))
    f.frag_offset = static_cast<uint16_t>(std::uniform_int_distribution<int>(1, 100)(rng));
  if (Coin(rng, 0.1)) f.more_fragments = true;
  const int tags = std::discrete_distribution<int>({70, 15, 10, 5})(rng);
  for (int t = 0; t < tags; ++t) f.vlan_tpids.push_back(Coin(rng) ? 0x8100 : 0x88a8);
  if (!v6 && Coin(rng, 0.2))
    f.ipv4_option_words = static_cast<uint8_t>(std::uniform_int_distribution<int>(1, 10)(rng));
  if (v6 && Coin(rng, 0.3)) {
    const uint8_t types[] = {0, 43, 60, 44};
    const int n = std::uniform_int_distribution<int>(1, 10)(rng);
    for (int i = 0; i < n; ++i) {
      f.ipv6_ext.push_back(
          {Pick(rng, types), static_cast<uint8_t>(std::uniform_int_distribution<int>(0, 2)(rng))});
    }
  }
  f.payload = std::uniform_int_distribution<size_t>(0, 40)(rng);
  std::vector<uint8_t> bytes = f.Build();
  // Mutations: flipped bytes (lengths, versions, next headers), truncation,
  // trailing padding.
  if (Coin(rng, 0.35)) {
    const int n = std::uniform_int_distribution<int>(1, 4)(rng);
    for (int i = 0; i < n && !bytes.empty(); ++i) {
      const size_t at =
          std::uniform_int_distribution<size_t>(0, std::min<size_t>(bytes.size() - 1, 90))(rng);
      bytes[at] = static_cast<uint8_t>(std::uniform_int_distribution<int>(0, 255)(rng));
    }
  }
  if (Coin(rng, 0.15) && !bytes.empty()) {
    bytes.resize(std::uniform_int_distribution<size_t>(0, bytes.size())(rng));
  }
  if (Coin(rng, 0.1))
    bytes.resize(bytes.size() + std::uniform_int_distribution<size_t>(1, 30)(rng), 0);
  return bytes;
}

std::string Hex(const std::vector<uint8_t>& b) {
  std::string out;
  for (uint8_t c : b) absl::StrAppend(&out, absl::Hex(c, absl::kZeroPad2));
  return out;
}

// As `simulate` judges: every SYN has a listener, so `cookies` applies.
class DifferentialTest : public DatapathTest {
 protected:
  static void SetUpTestSuite() {
    LoadSuite({.use_user_clock = true, .record_last_verdict = true, .assume_listeners = true});
  }
};

TEST_F(DifferentialTest, TheProgramAgreesWithTheReferenceModelOnEveryFrame) {
  int64_t frames = 200000;
  if (const char* env = std::getenv("PORTCULLIS_DIFFERENTIAL_FRAMES")) {
    ASSERT_TRUE(absl::SimpleAtoi(env, &frames));
  }
  constexpr int kFramesPerPolicy = 2000;
  std::mt19937 rng(1126);
  int64_t judged = 0, disagreements = 0, policies = 0;
  std::map<pc_reason, int64_t> by_reason;
  while (judged < frames && disagreements < 5) {
    const std::string yaml = RandomPolicy(rng);
    policy::CheckedPolicyFile checked = policy::CheckPolicyText(yaml);
    if (!checked.ok()) continue;  // e.g. a rule naming a set the draw left empty
    auto compiled = policy::Compile(checked.loaded->policy);
    ASSERT_TRUE(compiled.ok()) << compiled.status() << "\n" << yaml;
    ASSERT_TRUE(installer_->Install(*compiled, static_cast<uint64_t>(++policies)).ok());
    for (int i = 0; i < kFramesPerPolicy && judged < frames; ++i, ++judged) {
      // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header
      // (and no driver hands XDP one); the datapath tests cover the program's
      // own bound check.
      std::vector<uint8_t> frame;
      do {
        frame = RandomFrame(rng);
      } while (frame.size() < 14);
      const datapath::Judgement got = Run(frame);
      const ModelVerdict want = ModelJudge(checked.loaded->policy, frame);
      ++by_reason[want.reason];
      if (got.verdict != want.verdict || got.reason != want.reason) {
        ++disagreements;
        ADD_FAILURE() << "BPF: " << VerdictName(got.verdict) << "/" << ReasonName(got.reason)
                      << ", model: " << VerdictName(want.verdict) << "/" << ReasonName(want.reason)
                      << "\nframe " << Hex(frame) << "\npolicy:\n"
                      << yaml;
        if (disagreements >= 5) break;
      }
    }
  }
  std::string spread;
  for (const auto& [reason, n] : by_reason)
    absl::StrAppend(&spread, " ", ReasonName(reason), "=", n);
  std::cout << judged << " frames under " << policies << " policies; by reason:" << spread << "\n";
  // Every reason the model can give without state was exercised.
  for (pc_reason r :
       {PC_REASON_ALLOWED, PC_REASON_FAILSAFE, PC_REASON_NOT_POLICED, PC_REASON_NON_IP,
        PC_REASON_BLOCKLIST, PC_REASON_NOT_ALLOWLISTED, PC_REASON_PORT_CLOSED, PC_REASON_FRAGMENT,
        PC_REASON_ICMP_DENIED, PC_REASON_MALFORMED, PC_REASON_SYN_COOKIE}) {
    EXPECT_GT(by_reason[r], 0) << ReasonName(r);
  }
}

}  // namespace
}  // namespace portcullis::testing
