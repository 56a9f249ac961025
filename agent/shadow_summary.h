// What the agent reports of its shadow candidate: the datapath's shadow
// counts (datapath/counters.h), named and bounded so that a report stays
// within the control service's size limit whatever the traffic.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "datapath/counters.h"
#include "portcullis/v1/control.pb.h"

namespace portcullis::agent {

struct ShadowSummaryLimits {
  size_t transitions = 32;         // (transition, proto, port) rows, busiest first
  size_t sources_per_change = 10;  // busiest sources of each transition
  size_t sources = 32;             // source rows in all
};

v1::ShadowCounts SummarizeShadow(const datapath::ShadowCounts& counts, uint64_t id,
                                 const std::string& content_hash,
                                 const ShadowSummaryLimits& limits = {});

}  // namespace portcullis::agent
