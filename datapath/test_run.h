// Runs the real datapath program over one frame with BPF_PROG_TEST_RUN and
// reports its verdict. Needs a Datapath loaded with record_last_verdict (and
// use_user_clock to set the time). Used by `portcullisctl simulate` and tests.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "common/abi.h"
#include "datapath/datapath.h"

namespace portcullis::datapath {

struct Judgement {
  uint32_t action;  // XDP_* or TC_ACT_*, as the program returned it
  pc_verdict verdict;
  pc_reason reason;
  uint64_t version;                // policy version that judged the frame; 0 without a policy
  std::vector<uint8_t> frame_out;  // the frame as the program left it (a SYN-ACK for XDP_TX)
};

class TestRunner {
 public:
  explicit TestRunner(Datapath& dp) : dp_(dp) {}

  // Sets the datapath's clock (ns). FailedPrecondition without use_user_clock.
  absl::Status SetClock(uint64_t now_ns);

  // Judges one Ethernet frame at the XDP hook (or the pod-facing TC hook,
  // portcullis_tc_pod). With `ingress_ifindex` the frame arrives on that
  // interface (at XDP: a device that exists in this network namespace), or,
  // at TC, had arrived on it before it was routed toward the pod; without,
  // on loopback (XDP) or from the node itself (TC).
  absl::StatusOr<Judgement> Run(absl::Span<const uint8_t> frame, pc_hook hook = PC_HOOK_XDP,
                                uint32_t ingress_ifindex = 0);

  // Runs a frame leaving the node through the TC egress program (which
  // records its flow for `established`).
  absl::Status RunEgress(absl::Span<const uint8_t> frame);

  // Runs the program `repeat` times over the frame and returns the last
  // action, without reading last_verdict: safe from several threads at once
  // (the counters tell what happened). Used for concurrency tests and benchmarks;
  // *duration_ns (optional) gets the kernel's mean run time.
  absl::StatusOr<uint32_t> RunRepeated(absl::Span<const uint8_t> frame, uint32_t repeat,
                                       pc_hook hook = PC_HOOK_XDP, uint32_t* duration_ns = nullptr);

 private:
  Datapath& dp_;
};

}  // namespace portcullis::datapath
