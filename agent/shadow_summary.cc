#include "agent/shadow_summary.h"

#include <algorithm>
#include <map>
#include <tuple>
#include <vector>

#include "agent/labels.h"
#include "common/abi.h"

namespace portcullis::agent {
namespace {

using Transition = std::tuple<uint8_t, uint8_t, uint8_t, uint8_t>;

template <typename Key>
Transition TransitionOf(const Key& k) {
  return {k.from_verdict, k.from_reason, k.to_verdict, k.to_reason};
}

template <typename Row>
void Name(const Transition& t, Row& row) {
  row.set_from_verdict(std::string(VerdictName(std::get<0>(t))));
  row.set_from_reason(std::string(ReasonName(std::get<1>(t))));
  row.set_to_verdict(std::string(VerdictName(std::get<2>(t))));
  row.set_to_reason(std::string(ReasonName(std::get<3>(t))));
}

template <typename Count>
void BusiestFirst(std::vector<Count>& rows) {
  std::stable_sort(rows.begin(), rows.end(),
                   [](const Count& a, const Count& b) { return a.packets > b.packets; });
}

}  // namespace

v1::ShadowCounts SummarizeShadow(const datapath::ShadowCounts& counts, uint64_t id,
                                 const std::string& content_hash,
                                 const ShadowSummaryLimits& limits) {
  v1::ShadowCounts out;
  out.set_id(id);
  out.set_content_hash(content_hash);
  std::vector<datapath::ShadowTransitionCount> transitions = counts.transitions;
  BusiestFirst(transitions);
  for (const datapath::ShadowTransitionCount& c : transitions) {
    if (static_cast<size_t>(out.transitions_size()) == limits.transitions) break;
    v1::ShadowTransition& row = *out.add_transitions();
    Name(TransitionOf(c.key), row);
    row.set_proto(ProtoName(c.key.proto));
    row.set_port(c.key.port);
    row.set_packets(c.packets);
  }
  std::vector<datapath::ShadowSourceCount> sources = counts.sources;
  BusiestFirst(sources);
  std::map<Transition, uint64_t> listed, distinct;
  for (const datapath::ShadowSourceCount& c : sources) {
    const Transition t = TransitionOf(c.key);
    ++distinct[t];
    if (static_cast<size_t>(out.sources_size()) == limits.sources ||
        listed[t] == limits.sources_per_change) {
      continue;
    }
    ++listed[t];
    v1::ShadowSource& row = *out.add_sources();
    Name(t, row);
    row.set_address(AddressName(c.key.family, c.key.addr));
    row.set_packets(c.packets);
  }
  for (const auto& [t, n] : distinct) {
    if (static_cast<size_t>(out.source_totals_size()) == limits.transitions) break;
    v1::ShadowSourceTotal& row = *out.add_source_totals();
    Name(t, row);
    row.set_sources(n);
  }
  return out;
}

}  // namespace portcullis::agent
