#include "control/shadow_report.h"

#include <algorithm>
#include <map>
#include <string>
#include <tuple>

#include "absl/strings/str_cat.h"

namespace portcullis::control {
namespace {

using TransitionKey = std::tuple<std::string, std::string, std::string, std::string>;

template <typename Row>
TransitionKey KeyOf(const Row& r) {
  return {r.from_verdict(), r.from_reason(), r.to_verdict(), r.to_reason()};
}

template <typename Row>
void SetKey(const TransitionKey& k, Row& r) {
  r.set_from_verdict(std::get<0>(k));
  r.set_from_reason(std::get<1>(k));
  r.set_to_verdict(std::get<2>(k));
  r.set_to_reason(std::get<3>(k));
}

struct Sums {
  uint64_t packets = 0, sources = 0;
  std::map<std::pair<std::string, uint32_t>, uint64_t> ports;
  std::map<std::string, uint64_t> addresses;
};

// The `top` busiest of `counts`, busiest first (ties by key).
template <typename K>
std::vector<std::pair<K, uint64_t>> Busiest(const std::map<K, uint64_t>& counts, size_t top) {
  std::vector<std::pair<K, uint64_t>> rows(counts.begin(), counts.end());
  std::stable_sort(rows.begin(), rows.end(),
                   [](const auto& a, const auto& b) { return a.second > b.second; });
  if (rows.size() > top) rows.resize(top);
  return rows;
}

}  // namespace

v1::ShadowReportResponse BuildShadowReport(const v1::PolicyVersion* live,
                                           const std::vector<v1::AgentState>& agents,
                                           uint32_t top) {
  v1::ShadowReportResponse out;
  if (live == nullptr || !live->has_shadow()) return out;
  const size_t limit = top == 0 ? 10 : top;
  const v1::ShadowCandidate& candidate = live->shadow();
  *out.mutable_candidate() = candidate;
  out.mutable_candidate()->clear_policy();
  out.set_live_version(live->version());

  std::map<TransitionKey, Sums> sums;
  for (const v1::AgentState& a : agents) {
    const v1::ShadowCounts& s = a.status().shadow();
    if (s.id() != candidate.id() || s.content_hash() != candidate.content_hash()) {
      if (!a.stale()) out.add_agents_missing(a.status().node());
      if (!s.error().empty())
        out.add_agent_errors(absl::StrCat(a.status().node(), ": ", s.error()));
      continue;
    }
    out.add_agents_reporting(a.status().node());
    for (const v1::ShadowTransition& t : s.transitions()) {
      Sums& sum = sums[KeyOf(t)];
      sum.packets += t.packets();
      sum.ports[{t.proto(), t.port()}] += t.packets();
    }
    for (const v1::ShadowSource& src : s.sources()) {
      sums[KeyOf(src)].addresses[src.address()] += src.packets();
    }
    for (const v1::ShadowSourceTotal& total : s.source_totals()) {
      sums[KeyOf(total)].sources += total.sources();
    }
  }
  std::vector<std::pair<TransitionKey, const Sums*>> order;
  for (const auto& [key, sum] : sums) order.emplace_back(key, &sum);
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return a.second->packets > b.second->packets;
  });
  for (const auto& [key, sum] : order) {
    v1::ShadowChange& change = *out.add_changes();
    SetKey(key, change);
    change.set_packets(sum->packets);
    change.set_sources(sum->sources);
    for (const auto& [port, n] : Busiest(sum->ports, SIZE_MAX)) {
      v1::ShadowTransition& row = *change.add_ports();
      SetKey(key, row);
      row.set_proto(port.first);
      row.set_port(port.second);
      row.set_packets(n);
    }
    for (const auto& [address, n] : Busiest(sum->addresses, limit)) {
      v1::ShadowSource& row = *change.add_top_sources();
      SetKey(key, row);
      row.set_address(address);
      row.set_packets(n);
    }
  }
  return out;
}

}  // namespace portcullis::control
