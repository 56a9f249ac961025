// What `portcullisctl shadow report` shows: the agents' shadow counts for
// the current candidate, summed by (live -> shadow) transition, with the
// busiest ports and sources of each.
#pragma once

#include <cstdint>
#include <vector>

#include "portcullis/v1/control.pb.h"

namespace portcullis::control {

// `live` is the live version as published (with its shadow candidate, if
// any); `agents` what the registry holds. Only reports for the current
// candidate count; live agents without one are listed as missing.
v1::ShadowReportResponse BuildShadowReport(const v1::PolicyVersion* live,
                                           const std::vector<v1::AgentState>& agents, uint32_t top);

}  // namespace portcullis::control
