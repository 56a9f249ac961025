// The shadow report's two halves without a datapath: what an agent reports
// of its counts (bounded, busiest first, distinct sources counted), and how
// the service sums agents' reports for the current candidate only.
#include "control/shadow_report.h"

#include <arpa/inet.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "agent/shadow_summary.h"
#include "gtest/gtest.h"

namespace portcullis {
namespace {

pc_shadow_key Key(uint8_t to_reason, uint16_t port) {
  return {.from_verdict = PC_VERDICT_PASS,
          .from_reason = PC_REASON_ALLOWED,
          .to_verdict = PC_VERDICT_DROP,
          .to_reason = to_reason,
          .port = port,
          .proto = IPPROTO_TCP};
}

pc_shadow_source_key Source(uint8_t to_reason, uint32_t host) {
  pc_shadow_source_key k{.from_verdict = PC_VERDICT_PASS,
                         .from_reason = PC_REASON_ALLOWED,
                         .to_verdict = PC_VERDICT_DROP,
                         .to_reason = to_reason,
                         .family = PC_FAMILY_V4};
  const uint32_t addr = htonl((198u << 24) | (18u << 16) | host);
  std::memcpy(k.addr, &addr, 4);
  return k;
}

TEST(ShadowSummaryTest, IsBoundedBusiestFirstAndCountsEverySource) {
  datapath::ShadowCounts counts;
  for (uint16_t port = 1; port <= 100; ++port) {
    counts.transitions.push_back({Key(PC_REASON_PORT_CLOSED, port), port});
  }
  for (uint32_t host = 1; host <= 30; ++host) {
    counts.sources.push_back({Source(PC_REASON_PORT_CLOSED, host), host});
    counts.sources.push_back({Source(PC_REASON_BLOCKLIST, host), 100 + host});
  }
  const v1::ShadowCounts s = agent::SummarizeShadow(
      counts, 3, "sha256:x", {.transitions = 5, .sources_per_change = 4, .sources = 6});
  EXPECT_EQ(s.id(), 3u);
  ASSERT_EQ(s.transitions_size(), 5);
  EXPECT_EQ(s.transitions(0).port(), 100u);  // busiest first
  EXPECT_EQ(s.transitions(0).packets(), 100u);
  EXPECT_EQ(s.transitions(0).from_reason(), "allowed");
  EXPECT_EQ(s.transitions(0).to_verdict(), "drop");
  EXPECT_EQ(s.transitions(0).to_reason(), "port_closed");
  EXPECT_EQ(s.transitions(0).proto(), "tcp");
  // 6 sources in all, at most 4 per transition: the blocklist's busiest 4
  // (they have more packets), then port_closed's busiest 2.
  ASSERT_EQ(s.sources_size(), 6);
  EXPECT_EQ(s.sources(0).address(), "198.18.0.30");
  EXPECT_EQ(s.sources(0).to_reason(), "blocklist");
  EXPECT_EQ(s.sources(4).to_reason(), "port_closed");
  EXPECT_EQ(s.sources(4).address(), "198.18.0.30");
  ASSERT_EQ(s.source_totals_size(), 2);
  for (const v1::ShadowSourceTotal& t : s.source_totals()) EXPECT_EQ(t.sources(), 30u);
}

v1::AgentState Agent(const std::string& node, uint64_t id, uint64_t packets, bool stale = false) {
  v1::AgentState a;
  a.set_stale(stale);
  a.mutable_status()->set_node(node);
  if (id == 0) return a;
  v1::ShadowCounts& s = *a.mutable_status()->mutable_shadow();
  s.set_id(id);
  s.set_content_hash(absl::StrCat("sha256:", id));
  for (uint32_t port : {443u, 8080u}) {
    v1::ShadowTransition& t = *s.add_transitions();
    t.set_from_verdict("pass");
    t.set_from_reason("allowed");
    t.set_to_verdict("drop");
    t.set_to_reason("not_allowlisted");
    t.set_proto("tcp");
    t.set_port(port);
    t.set_packets(port == 443 ? packets : 1);
  }
  v1::ShadowSource& src = *s.add_sources();
  src.set_from_verdict("pass");
  src.set_from_reason("allowed");
  src.set_to_verdict("drop");
  src.set_to_reason("not_allowlisted");
  src.set_address(node == "a" ? "198.18.4.1" : "198.18.4.2");
  src.set_packets(packets);
  v1::ShadowSourceTotal& total = *s.add_source_totals();
  total.set_from_verdict("pass");
  total.set_from_reason("allowed");
  total.set_to_verdict("drop");
  total.set_to_reason("not_allowlisted");
  total.set_sources(2);
  return a;
}

TEST(ShadowReportTest, SumsTheAgentsJudgingByTheCurrentCandidateOnly) {
  v1::PolicyVersion live;
  live.set_version(4);
  live.mutable_shadow()->set_id(2);
  live.mutable_shadow()->set_content_hash("sha256:2");
  live.mutable_shadow()->mutable_policy()->mutable_metadata()->set_name("big");
  v1::AgentState failed = Agent("d", 0, 0);
  failed.mutable_status()->mutable_shadow()->set_error("shadow candidate 2: no memory");
  const v1::ShadowReportResponse r = control::BuildShadowReport(
      &live,
      {Agent("a", 2, 10), Agent("b", 2, 30), Agent("c", 1, 1000), Agent("e", 0, 0, true), failed},
      1);
  EXPECT_FALSE(r.candidate().has_policy()) << "the report carries no policy";
  EXPECT_EQ(r.live_version(), 4u);
  EXPECT_EQ(std::vector<std::string>(r.agents_reporting().begin(), r.agents_reporting().end()),
            (std::vector<std::string>{"a", "b"}));
  // c reports another candidate, d failed; e is stale and not awaited.
  EXPECT_EQ(std::vector<std::string>(r.agents_missing().begin(), r.agents_missing().end()),
            (std::vector<std::string>{"c", "d"}));
  ASSERT_EQ(r.agent_errors_size(), 1);
  EXPECT_EQ(r.agent_errors(0), "d: shadow candidate 2: no memory");
  ASSERT_EQ(r.changes_size(), 1);
  const v1::ShadowChange& c = r.changes(0);
  EXPECT_EQ(c.packets(), 10u + 1 + 30 + 1);
  EXPECT_EQ(c.sources(), 4u);
  ASSERT_EQ(c.ports_size(), 2);
  EXPECT_EQ(c.ports(0).port(), 443u);
  EXPECT_EQ(c.ports(0).packets(), 40u);
  EXPECT_EQ(c.ports(1).packets(), 2u);
  ASSERT_EQ(c.top_sources_size(), 1) << "top 1";
  EXPECT_EQ(c.top_sources(0).address(), "198.18.4.2");

  EXPECT_FALSE(control::BuildShadowReport(nullptr, {}, 0).has_candidate());
  live.clear_shadow();
  EXPECT_FALSE(control::BuildShadowReport(&live, {Agent("a", 2, 10)}, 0).has_candidate());
}

}  // namespace
}  // namespace portcullis
