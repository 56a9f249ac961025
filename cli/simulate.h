// `portcullisctl simulate`: the real datapath program, loaded with a
// user-set clock, judges every frame of a capture (BPF_PROG_TEST_RUN) under
// a policy compiled exactly as the agent compiles it.
#pragma once

#include <array>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/abi.h"
#include "policy/compiler.h"

namespace portcullis::cli {

struct PacketVerdict {
  pc_verdict verdict;
  pc_reason reason;
};

struct SimulationResult {
  std::vector<PacketVerdict> packets;  // in capture order
  std::array<uint64_t, PC_VERDICT_COUNT> by_verdict{};
  std::array<uint64_t, PC_REASON_COUNT> by_reason{};
  uint64_t truncated = 0;     // frames the capture cut short (snaplen)
  uint64_t out_of_order = 0;  // frames stamped earlier than the one before
};

// Called every so often with the number of frames judged so far.
using Progress = std::function<void(uint64_t frames)>;

absl::StatusOr<SimulationResult> Simulate(const policy::CompiledPolicy& policy,
                                          const std::string& pcap_path,
                                          const Progress& progress = nullptr);

// PRODUCT.md's JSON lines: one per packet, then the summary.
std::string FormatJson(const SimulationResult& result);
// A readable summary with counts by reason.
std::string FormatTable(const SimulationResult& result, const std::string& pcap_path);

}  // namespace portcullis::cli
