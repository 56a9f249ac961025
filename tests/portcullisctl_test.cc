// `portcullisctl validate` and `simulate` as a user runs them: the real
// binary, real files, exit codes and output.
#include <unistd.h>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/command.h"
#include "tests/support/demo_traffic.h"
#include "tests/support/frame.h"
#include "tests/support/pcap_writer.h"
#include "tests/support/temp_dir.h"

namespace portcullis::testing {
namespace {

using ::testing::HasSubstr;

const std::string kCtl = PORTCULLISCTL_PATH;
const std::string kExample = std::string(PORTCULLIS_SOURCE_DIR) + "/docs/examples/edge-prod.yaml";

constexpr char kPolicy[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: sim}
spec:
  defaultAction: deny
  blocklist: [198.18.3.0/24]
  failsafe:
    - {ports: [22], proto: tcp, from: any}
  ports:
    - {ports: [443], proto: tcp, from: any}
  rateLimits:
    syn:
      perSource: {rate: 1, burst: 2}
)";

std::string Quote(const std::string& s) { return "'" + s + "'"; }

class PortcullisctlTest : public ::testing::Test {
 protected:
  CommandResult Ctl(const std::string& args) { return RunCommand(Quote(kCtl) + " " + args); }

  CommandResult Simulate(const std::string& policy, const std::string& pcap,
                         const std::string& format = "json") {
    return Ctl(absl::StrCat("simulate --policy ", Quote(policy), " --pcap ", Quote(pcap),
                            " --format ", format));
  }

  void RequireRoot() {
    if (geteuid() != 0) GTEST_SKIP() << "simulate loads BPF programs: needs root";
  }

  TempDir dir_;
};

TEST_F(PortcullisctlTest, ValidateAcceptsTheExample) {
  CommandResult r = Ctl("validate " + Quote(kExample));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, kExample + ": valid\n");
  EXPECT_EQ(r.err, "");
}

// Every example policy the docs point to is valid, without warnings.
TEST_F(PortcullisctlTest, EveryDocumentedExampleIsValid) {
  int examples = 0;
  for (const auto& entry :
       std::filesystem::directory_iterator(std::string(PORTCULLIS_SOURCE_DIR) + "/docs/examples")) {
    if (entry.path().extension() != ".yaml") continue;
    ++examples;
    const CommandResult r = Ctl("validate " + Quote(entry.path().string()));
    EXPECT_EQ(r.exit_code, 0) << entry.path() << "\n" << r.err;
    EXPECT_EQ(r.out, entry.path().string() + ": valid\n");
  }
  EXPECT_GE(examples, 3);
}

TEST_F(PortcullisctlTest, ValidateRejectsWithLineAndColumn) {
  const std::string p = dir_.Write("bad.yaml", absl::StrCat(kPolicy, "  icmp: maybe\n"));
  CommandResult r = Ctl("validate " + Quote(p));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err,
            absl::StrCat(p, ":14:9: error: spec.icmp: \"maybe\" is not one of: deny, allow\n", p,
                         ": invalid (1 error)\n"));
  EXPECT_EQ(r.out, "");
}

TEST_F(PortcullisctlTest, ValidateReportsWarningsButPasses) {
  const std::string p =
      dir_.Write("warn.yaml", absl::StrCat(kPolicy, "  sets:\n    spare: [198.18.9.0/24]\n"));
  CommandResult r = Ctl("validate " + Quote(p));
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_EQ(r.out, p + ": valid (1 warning)\n");
  EXPECT_EQ(r.err, p + ":15:5: warning: spec.sets.spare: set \"spare\" is not used by any rule\n");
}

// The red team's admission bombs, each validated under a 256 MiB address
// space (the agent's whole memory limit): a 20 KB rule listing the whole
// port range 2,000 times (21 s and 545 MB before), a 1 KB alias bomb (117 s
// and 2.6 GB, then "valid"), and 1 MB of ranges over the limit. Each is
// answered, and the bombs are refused naming the limit.
TEST_F(PortcullisctlTest, HostilePoliciesAreJudgedInBoundedMemory) {
  const std::string head =
      "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: h}\nspec:\n"
      "  failsafe:\n    - {ports: [22], proto: tcp, from: any}\n";
  std::string wide = head + "  ports:\n    - {ports: [";
  for (int i = 0; i < 2000; ++i) absl::StrAppend(&wide, i ? ", " : "", "\"1-65535\"");
  absl::StrAppend(&wide, "], proto: tcp, from: any}\n");
  std::string bomb = head + "  sets:\n    a0: &a0 [198.18.0.0/24, 198.18.1.0/24]\n";
  for (int i = 1; i < 12; ++i) {
    absl::StrAppend(&bomb, "    a", i, ": &a", i, " [");
    for (int k = 0; k < 10; ++k) absl::StrAppend(&bomb, k ? ", " : "", "*a", i - 1);
    absl::StrAppend(&bomb, "]\n");
  }
  absl::StrAppend(&bomb, "  ports:\n    - {ports: [443], proto: tcp, from: [a11]}\n");
  std::string ranges = head + "  ports:\n";
  for (int i = 0; ranges.size() < (1u << 20); ++i) {
    absl::StrAppend(&ranges, "    - {ports: [");
    for (int k = 0; k < 20; ++k)
      absl::StrAppend(&ranges, k ? ", " : "", "\"", 1 + (i * 7 + k) % 60000, "-65535\"");
    absl::StrAppend(&ranges, "], proto: tcp, from: any}\n");
  }
  struct Case {
    std::string name, text;
    int exit_code;
    std::string output;
  };
  for (const Case& c : std::vector<Case>{
           {"wide.yaml", wide, 0, "wide.yaml: valid\n"},
           {"bomb.yaml", bomb, 1,
            "bomb.yaml:12:24: error: aliases here expand to more than 10000 YAML nodes, the limit"},
           {"ranges.yaml", ranges, 1,
            "ranges.yaml:5:3: error: spec: 63741 port ranges in the rules; the limit is 4096"},
       }) {
    const std::string path = dir_.Write(c.name, c.text);
    CommandResult r = RunCommand(
        absl::StrCat("prlimit --as=", 256 << 20, " ", Quote(kCtl), " validate ", Quote(path)));
    EXPECT_EQ(r.exit_code, c.exit_code) << c.name << ": " << r.out << r.err;
    EXPECT_THAT(r.out + r.err, HasSubstr(path.substr(0, path.size() - c.name.size()) + c.output))
        << c.name;
  }
}

TEST_F(PortcullisctlTest, UsageErrorsExitTwo) {
  EXPECT_EQ(Ctl("").exit_code, 2);
  EXPECT_EQ(Ctl("validate").exit_code, 2);
  CommandResult r = Ctl("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("unknown command \"frobnicate\""));
  r = Simulate(kExample, "x.pcap", "xml");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("--format: \"xml\" is not json or table"));
  r = Ctl("simulate --pcap x.pcap");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_THAT(r.err, HasSubstr("simulate needs --policy"));
  r = Ctl("push --reason-text x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "portcullisctl: unknown flag --reason-text (see --help)\n");
}

TEST_F(PortcullisctlTest, SimulatePrintsOneJsonLinePerPacketThenTheSummary) {
  RequireRoot();
  const std::string pcap = dir_.File("four.pcap");
  {
    auto w = PcapWriter::Create(pcap);
    ASSERT_TRUE(w.ok()) << w.status();
    (*w)->Write(1'000'000'000, Syn("198.18.4.1", "198.18.0.10", 443).Build());
    (*w)->Write(1'000'000'001, Syn("198.18.4.1", "198.18.0.10", 8080).Build());
    (*w)->Write(1'000'000'002, Syn("198.18.3.3", "198.18.0.10", 443).Build());
    (*w)->Write(1'000'000'003, Arp());
  }
  CommandResult r = Simulate(dir_.Write("p.yaml", kPolicy), pcap);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"packet\": 1, \"verdict\": \"pass\", \"reason\": \"allowed\"}\n"
            "{\"packet\": 2, \"verdict\": \"drop\", \"reason\": \"port_closed\"}\n"
            "{\"packet\": 3, \"verdict\": \"drop\", \"reason\": \"blocklist\"}\n"
            "{\"packet\": 4, \"verdict\": \"pass\", \"reason\": \"non_ip\"}\n"
            "{\"summary\": {\"total\": 4, \"pass\": 2, \"drop\": 2, \"audit\": 0, \"cookie\": 0, "
            "\"by_reason\": {\"allowed\": 1, \"non_ip\": 1, \"blocklist\": 1, "
            "\"port_closed\": 1}}}\n");
}

TEST_F(PortcullisctlTest, SimulateRunsRateLimitsOnCaptureTimestamps) {
  RequireRoot();
  // burst 2, 1/s: the third SYN in the same instant is over; one 1.5 s later is not.
  const std::string pcap = dir_.File("syns.pcap");
  {
    auto w = PcapWriter::Create(pcap);
    ASSERT_TRUE(w.ok()) << w.status();
    for (uint64_t t : {5'000'000'000ULL, 5'000'000'000ULL, 5'000'000'000ULL, 6'500'000'000ULL}) {
      (*w)->Write(t, Syn("198.18.4.1", "198.18.0.10", 443).Build());
    }
  }
  CommandResult r = Simulate(dir_.Write("p.yaml", kPolicy), pcap);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"packet\": 1, \"verdict\": \"pass\", \"reason\": \"allowed\"}\n"
            "{\"packet\": 2, \"verdict\": \"pass\", \"reason\": \"allowed\"}\n"
            "{\"packet\": 3, \"verdict\": \"drop\", \"reason\": \"syn_rate_source\"}\n"
            "{\"packet\": 4, \"verdict\": \"pass\", \"reason\": \"allowed\"}\n"
            "{\"summary\": {\"total\": 4, \"pass\": 3, \"drop\": 1, \"audit\": 0, \"cookie\": 0, "
            "\"by_reason\": {\"allowed\": 3, \"syn_rate_source\": 1}}}\n");
}

// A spoofed flood on a capture: with cookies: auto, what is over the global
// budget is shown as answered with a cookie, not dropped.
TEST_F(PortcullisctlTest, SimulateShowsSynsAnsweredWithCookies) {
  RequireRoot();
  const std::string pcap = dir_.File("spoofed.pcap");
  {
    auto w = PcapWriter::Create(pcap);
    ASSERT_TRUE(w.ok()) << w.status();
    for (int i = 1; i <= 3; ++i) {
      (*w)->Write(7'000'000'000ULL, Syn(absl::StrCat("198.19.0.", i), "198.18.0.10", 443).Build());
    }
  }
  std::string policy = kPolicy;
  policy += "      global: {rate: 1, burst: 1}\n      cookies: auto\n";
  CommandResult r = Simulate(dir_.Write("p.yaml", policy), pcap);
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out,
            "{\"packet\": 1, \"verdict\": \"pass\", \"reason\": \"allowed\"}\n"
            "{\"packet\": 2, \"verdict\": \"cookie\", \"reason\": \"syn_cookie\"}\n"
            "{\"packet\": 3, \"verdict\": \"cookie\", \"reason\": \"syn_cookie\"}\n"
            "{\"summary\": {\"total\": 3, \"pass\": 1, \"drop\": 0, \"audit\": 0, \"cookie\": 2, "
            "\"by_reason\": {\"allowed\": 1, \"syn_cookie\": 2}}}\n");
}

TEST_F(PortcullisctlTest, SimulateTableSummarisesByReason) {
  RequireRoot();
  const std::string pcap = dir_.File("demo.pcap");
  ASSERT_TRUE(WriteDemoCapture(pcap).ok());
  CommandResult table = Simulate(kExample, pcap, "table");
  ASSERT_EQ(table.exit_code, 0) << table.err;
  CommandResult json = Simulate(kExample, pcap, "json");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  // The table's counts are the JSON summary's.
  EXPECT_THAT(table.out, HasSubstr(pcap + ": 559 packets"));
  EXPECT_THAT(json.out, HasSubstr("\"total\": 559"));
  EXPECT_THAT(table.out, HasSubstr("  failsafe           pass             1    0.2%"));
  EXPECT_THAT(json.out, HasSubstr("\"failsafe\": 1,"));
  EXPECT_THAT(table.out, HasSubstr("  port_closed        drop            24    4.3%"));
  EXPECT_THAT(json.out, HasSubstr("\"port_closed\": 24,"));
}

TEST_F(PortcullisctlTest, SimulateRejectsAMissingCapture) {
  CommandResult r = Simulate(kExample, dir_.File("absent.pcap"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, "portcullisctl: " + dir_.File("absent.pcap") + ": No such file or directory\n");
  EXPECT_EQ(r.out, "");
}

TEST_F(PortcullisctlTest, SimulateRejectsAFileThatIsNotACapture) {
  const std::string junk = dir_.Write("junk.pcap", "this is not a capture at all\n");
  CommandResult r = Simulate(kExample, junk);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(junk + ": not a readable pcap or pcapng capture"));
  EXPECT_EQ(r.out, "");
}

TEST_F(PortcullisctlTest, SimulateRejectsANonEthernetCapture) {
  const std::string pcap = dir_.File("raw.pcap");
  {
    auto w = PcapWriter::Create(pcap, /*DLT_RAW=*/12);
    ASSERT_TRUE(w.ok()) << w.status();
    std::vector<uint8_t> ip = Syn("198.18.4.1", "198.18.0.10", 443).Build();
    ip.erase(ip.begin(), ip.begin() + 14);
    (*w)->Write(1, ip);
  }
  CommandResult r = Simulate(kExample, pcap);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(pcap + ": link type RAW (12) is not Ethernet"));
}

TEST_F(PortcullisctlTest, SimulateRejectsACaptureCutShortAndPrintsNothing) {
  RequireRoot();
  const std::string pcap = dir_.File("cut.pcap");
  ASSERT_TRUE(WriteDemoCapture(pcap).ok());
  std::filesystem::resize_file(pcap, std::filesystem::file_size(pcap) - 30);
  CommandResult r = Simulate(kExample, pcap);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_THAT(r.err, HasSubstr(pcap + ": corrupt or truncated capture"));
  EXPECT_EQ(r.out, "");  // no half report
}

TEST_F(PortcullisctlTest, SimulateRejectsAnInvalidPolicy) {
  const std::string p = dir_.Write("bad.yaml", absl::StrCat(kPolicy, "  fragments: sometimes\n"));
  CommandResult r = Simulate(p, dir_.File("any.pcap"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.err, absl::StrCat(p,
                                ":14:14: error: spec.fragments: \"sometimes\" is not one of: "
                                "deny, allow\n",
                                p, ": invalid (1 error)\n"));
}

TEST_F(PortcullisctlTest, ControlCommandsExplainWhatIsMissing) {
  CommandResult r = Ctl("push " + Quote(kExample) + " --reason x");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "portcullisctl: --control HOST:PORT is required\n");

  r = Ctl("history --control 127.0.0.1:1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "portcullisctl: --ca is required\n");

  const std::string ca = dir_.Write("ca.crt", "-----BEGIN CERTIFICATE-----\n");
  const std::string remote = " --control 127.0.0.1:1 --ca " + ca;
  r = Ctl("push " + Quote(kExample) + remote);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "portcullisctl: push needs --reason \"why\"\n");

  r = Ctl("rollback --reason x" + remote);
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_EQ(r.err, "portcullisctl: rollback needs --to VERSION\n");

  r = Ctl("history --timeout-seconds 2" + remote);  // nothing listens on port 1
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_THAT(r.err, HasSubstr("cannot reach the control service at 127.0.0.1:1"));
}

}  // namespace
}  // namespace portcullis::testing
