// Drops by port: named port ranges count in rows of a per-CPU array that
// outlive policies (counted_ports), other ports in the hash; a full registry
// reclaims only rows no policy in the maps uses, and otherwise falls back to
// the hash by port number, so no drop goes uncounted.
#include <netinet/in.h>

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "agent/metrics.h"
#include "datapath/counters.h"
#include "gtest/gtest.h"
#include "tests/support/datapath_fixture.h"

namespace portcullis::testing {
namespace {

constexpr char kDst[] = "198.18.0.10";
constexpr char kOutsider[] = "198.18.4.1";  // in no set

// A deny-by-default policy whose TCP `ports` (YAML items) are open to
// admins only, so the outsider's SYNs to them drop as not_allowlisted.
std::string PolicyNaming(const std::vector<std::string>& ports) {
  return absl::StrCat(R"(
apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: port-counters}
spec:
  defaultAction: deny
  sets:
    admins: [198.18.1.0/28]
  failsafe:
    - {ports: [22], proto: tcp, from: [admins]}
  ports:
    - {ports: [)",
                      absl::StrJoin(ports, ", "), R"(], proto: tcp, from: [admins]}
)");
}

std::vector<std::string> Range(int first, int count) {
  std::vector<std::string> out;
  for (int p = first; p < first + count; ++p) out.push_back(absl::StrCat(p));
  return out;
}

class PortCountersTest : public DatapathTest {
 protected:
  struct Drops {
    uint64_t in_row = 0;   // counted in a row whose range starts at the port
    uint16_t last = 0;     // that row's last port
    uint64_t in_hash = 0;  // counted in the hash under the port
  };
  // TCP drops for `reason` counted under `port`.
  Drops DropsAt(uint16_t port, pc_reason reason) {
    auto counts = datapath::ReadPortDropCounters(*dp_);
    EXPECT_TRUE(counts.ok()) << counts.status();
    Drops d;
    for (const auto& c : counts.value_or(std::vector<datapath::PortDropCount>{})) {
      if (c.key.proto != IPPROTO_TCP || c.key.port != port || c.key.reason != reason) continue;
      if (c.from_row) {
        d.in_row += c.packets;
        d.last = c.last_port;
      } else {
        d.in_hash += c.packets;
      }
    }
    return d;
  }
  void DropSyn(uint16_t port, pc_reason want = PC_REASON_NOT_ALLOWLISTED) {
    EXPECT_EQ(Run(Syn(kOutsider, kDst, port)).reason, want) << "port " << port;
  }
  // The registered range of `port`'s row, if any.
  int RowOf(uint16_t first, uint16_t last) {
    auto rows = datapath::ReadCountedPorts(*dp_);
    EXPECT_TRUE(rows.ok()) << rows.status();
    for (size_t r = 0; r < rows->size(); ++r) {
      const pc_counted_port& c = (*rows)[r];
      if (c.in_use && c.proto == IPPROTO_TCP && c.first == first && c.last == last) {
        return static_cast<int>(r);
      }
    }
    return -1;
  }
};

TEST_F(PortCountersTest, ARangeCountsInOneRowAndUnnamedPortsUnderZero) {
  Install(PolicyNaming({"\"30000-30010\"", "443"}));
  const Drops range = DropsAt(30000, PC_REASON_NOT_ALLOWLISTED);
  const Drops https = DropsAt(443, PC_REASON_NOT_ALLOWLISTED);
  const Drops other = DropsAt(0, PC_REASON_PORT_CLOSED);
  DropSyn(30000);
  DropSyn(30005);
  DropSyn(30010);
  DropSyn(443);
  DropSyn(9999, PC_REASON_PORT_CLOSED);

  const Drops range_after = DropsAt(30000, PC_REASON_NOT_ALLOWLISTED);
  EXPECT_EQ(range_after.in_row, range.in_row + 3);
  EXPECT_EQ(range_after.last, 30010);
  EXPECT_EQ(range_after.in_hash, 0u) << "a named range must not count in the hash";
  EXPECT_EQ(DropsAt(30005, PC_REASON_NOT_ALLOWLISTED).in_hash, 0u);
  const Drops https_after = DropsAt(443, PC_REASON_NOT_ALLOWLISTED);
  EXPECT_EQ(https_after.in_row, https.in_row + 1);
  EXPECT_EQ(https_after.last, 443);
  EXPECT_EQ(DropsAt(0, PC_REASON_PORT_CLOSED).in_hash, other.in_hash + 1);
  EXPECT_EQ(DropsAt(9999, PC_REASON_PORT_CLOSED).in_hash, 0u);
}

TEST_F(PortCountersTest, ARangeKeepsItsRowAndCountAcrossPolicies) {
  Install(PolicyNaming({"443"}), 1);
  const int row = RowOf(443, 443);
  ASSERT_GE(row, 0);
  const uint64_t before = DropsAt(443, PC_REASON_NOT_ALLOWLISTED).in_row;
  DropSyn(443);
  DropSyn(443);
  Install(PolicyNaming({"443", "8443"}), 2);  // 443 kept, 8443 added
  EXPECT_EQ(RowOf(443, 443), row);
  EXPECT_GE(RowOf(8443, 8443), 0);
  EXPECT_NE(RowOf(8443, 8443), row);
  DropSyn(443);
  EXPECT_EQ(DropsAt(443, PC_REASON_NOT_ALLOWLISTED).in_row, before + 3);
  Install(PolicyNaming({"8443"}), 3);  // 443 no longer named: closed
  DropSyn(443, PC_REASON_PORT_CLOSED);
  Install(PolicyNaming({"443"}), 4);  // named again: the same row goes on
  EXPECT_EQ(RowOf(443, 443), row);
  DropSyn(443);
  EXPECT_EQ(DropsAt(443, PC_REASON_NOT_ALLOWLISTED).in_row, before + 4);
}

TEST_F(PortCountersTest, AFullRegistryReclaimsOnlyUnusedRowsAndElseCountsInTheHash) {
  // Every row taken by the live policy: the next policy's new port has none
  // left and counts in the hash under its number.
  Install(PolicyNaming(Range(20000, PC_MAX_COUNTED_PORTS)), 1);
  DropSyn(20000);
  const uint64_t first_row = DropsAt(20000, PC_REASON_NOT_ALLOWLISTED).in_row;
  EXPECT_GE(first_row, 1u);
  std::vector<std::string> more = Range(20000, PC_MAX_COUNTED_PORTS);
  more.push_back("21000");
  Install(PolicyNaming(more), 2);
  EXPECT_LT(RowOf(21000, 21000), 0);
  DropSyn(21000);
  DropSyn(20005);
  EXPECT_EQ(DropsAt(21000, PC_REASON_NOT_ALLOWLISTED).in_hash, 1u);
  EXPECT_EQ(DropsAt(20005, PC_REASON_NOT_ALLOWLISTED).in_row, 1u);
  EXPECT_EQ(DropsAt(20000, PC_REASON_NOT_ALLOWLISTED).in_row, first_row)
      << "a row the live policy uses must not be reclaimed";

  // Still none while the live policy (the one just above) uses them all.
  Install(PolicyNaming({"21000"}), 3);
  EXPECT_LT(RowOf(21000, 21000), 0);
  // Now the live policy uses no row: one is reclaimed, zeroed, and counts.
  Install(PolicyNaming({"21000"}), 4);
  ASSERT_GE(RowOf(21000, 21000), 0);
  EXPECT_EQ(DropsAt(21000, PC_REASON_NOT_ALLOWLISTED).in_row, 0u)
      << "a reclaimed row must start from zero";
  DropSyn(21000);
  EXPECT_EQ(DropsAt(21000, PC_REASON_NOT_ALLOWLISTED).in_row, 1u);
  EXPECT_EQ(DropsAt(21000, PC_REASON_NOT_ALLOWLISTED).in_hash, 1u) << "the hash keeps its count";
}

// The agent's metric: a range shows under its own label, even when its
// first port counts under an earlier, narrower range of the policy.
TEST_F(PortCountersTest, TheMetricShowsEachRangeUnderItsOwnLabel) {
  const std::string yaml = PolicyNaming({"8000"}) +
                           "    - {ports: [\"8000-8100\"], proto: tcp, "
                           "from: [admins]}\n";
  policy::CompiledPolicy compiled = CompileYaml(yaml);
  ASSERT_TRUE(installer_->Install(compiled, 1).ok());
  agent::DatapathCollector collector(*dp_);
  collector.SetPolicy(compiled);
  auto metric = [&](const std::string& port) {
    double value = 0;
    for (const auto& family : collector.Collect()) {
      if (family.name != "portcullis_drops_by_port_total") continue;
      for (const auto& m : family.metric) {
        bool match = true;
        for (const auto& [name, want] : std::vector<std::pair<std::string, std::string>>{
                 {"proto", "tcp"}, {"port", port}, {"reason", "not_allowlisted"}}) {
          bool found = false;
          for (const auto& l : m.label) found |= l.name == name && l.value == want;
          match &= found;
        }
        if (match) value += m.counter.value;
      }
    }
    return value;
  };
  const double single = metric("8000"), range = metric("8000-8100");
  DropSyn(8000);
  DropSyn(8050);
  DropSyn(8100);
  EXPECT_EQ(metric("8000"), single + 1);
  EXPECT_EQ(metric("8000-8100"), range + 2);
}

}  // namespace
}  // namespace portcullis::testing
