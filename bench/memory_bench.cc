// Peak memory of admission and of an agent's apply against policy size:
// for each size, a child process runs the stages in order and prints its
// peak RSS after each, so the figure for a stage includes what the stages
// before it left allocated, as in the real program. Stages:
//   file:   read + validate (CheckPolicyText: YAML, validation, compile)
//           = `portcullisctl validate` and the agent's --policy-file;
//   proto:  parse the policy proto as it arrives from the control service;
//   compile, install (into a fresh datapath: root), and the
//   last-known-good text (ToYaml).
// Not a test: it asserts nothing. Results: docs/BENCHMARKS.md.
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "datapath/datapath.h"
#include "datapath/policy_installer.h"
#include "policy/compiler.h"
#include "policy/text.h"
#include "policy/validator.h"

namespace portcullis::bench {
namespace {

double PeakMb() {
  struct rusage u;
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_maxrss) / 1024.0;
}

// `n` blocklist entries, half hosts and half /24s, a tenth of them IPv6.
std::string Policy(int n) {
  std::string text =
      "apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: big}\nspec:\n"
      "  failsafe:\n    - {ports: [22], proto: tcp, from: any}\n"
      "  ports:\n    - {ports: [443], proto: tcp, from: any}\n  blocklist:\n";
  for (int i = 0; i < n; ++i) {
    const uint32_t a = 0x0a000000u + static_cast<uint32_t>(i) * 256u;
    if (i % 10 == 9) {
      absl::StrAppend(&text, "    - \"2001:db8:", absl::Hex(i >> 16), ":", absl::Hex(i & 0xffff),
                      "::/64\"\n");
    } else {
      absl::StrAppend(&text, "    - ", a >> 24, ".", (a >> 16) & 255, ".", (a >> 8) & 255, ".",
                      i % 2 ? "0/24" : "1/32", "\n");
    }
  }
  return text;
}

void Stages(int n, bool from_proto) {
  std::string text = Policy(n);
  std::printf("%9d %8.1f", n, text.size() / 1048576.0);
  v1::Policy policy;
  if (from_proto) {
    // The wire form, built without the YAML stages' peak.
    std::string wire;
    {
      v1::Policy built;
      built.set_api_version("portcullis/v1");
      built.set_kind("IngressPolicy");
      built.mutable_metadata()->set_name("big");
      v1::PolicySpec* spec = built.mutable_spec();
      for (absl::string_view line : absl::StrSplit(text, '\n')) {
        if (absl::ConsumePrefix(&line, "    - ") && !absl::StartsWith(line, "{"))
          spec->add_blocklist(std::string(absl::StripPrefix(absl::StripSuffix(line, "\""), "\"")));
      }
      v1::PortRule* fs = spec->add_failsafe();
      fs->set_proto(v1::PROTOCOL_TCP);
      fs->add_ports()->set_first(22);
      fs->mutable_ports(0)->set_last(22);
      fs->mutable_from()->set_any(true);
      wire = built.SerializeAsString();
    }
    text.clear();
    text.shrink_to_fit();
    const double before = PeakMb();
    policy.ParseFromString(wire);
    std::printf("  proto %7.1f (base %.1f)", PeakMb(), before);
  } else {
    auto checked = policy::CheckPolicyText(text);
    if (!checked.ok()) {
      std::printf("  invalid: %s\n", checked.Format("p").c_str());
      return;
    }
    policy = checked.loaded->policy;
    std::printf("  validate %7.1f", PeakMb());
  }
  auto compiled = policy::Compile(policy);
  std::printf("  compile %7.1f", PeakMb());
  if (geteuid() == 0) {
    auto dp = datapath::Datapath::Load({});
    if (dp.ok()) {
      datapath::PolicyInstaller installer(**dp);
      (void)installer.Install(*compiled, 1);
      std::printf("  install %7.1f", PeakMb());
    }
  }
  const std::string lkg = policy::ToYaml(policy);
  std::printf("  lkg %7.1f MB peak\n", PeakMb());
}

}  // namespace
}  // namespace portcullis::bench

int main() {
  std::printf("# peak RSS (MB) after each stage; prefixes, policy text MB\n");
  for (bool from_proto : {false, true}) {
    std::printf("%s\n", from_proto ? "# from the control service (proto)" : "# from a file (YAML)");
    for (int n : {10'000, 100'000, 250'000, 500'000, 1'000'000}) {
      std::fflush(stdout);
      const pid_t pid = fork();
      if (pid == 0) {
        portcullis::bench::Stages(n, from_proto);
        std::fflush(stdout);
        _exit(0);
      }
      int status = 0;
      waitpid(pid, &status, 0);
    }
  }
  return 0;
}
