// A reference model of PRODUCT.md's evaluation order, written from the spec
// and docs/POLICY.md alone: it reads the policy proto directly (no compiler,
// no masks, no tries) and parses raw frames with its own code. The
// differential test holds the BPF program to it, frame by frame.
//
// Scope: stateless judgements. It has no flow tables and no token buckets,
// so it models policies without rate limits, whose ICMP budget (step 7) never
// runs dry, and a node that has opened no flows (no `established`); those
// are covered by their own datapath tests. Of `cookies`, it models what needs
// no bucket: `always` without `perSource`, and `auto` without `global`.
#pragma once

#include <cstdint>
#include <vector>

#include "common/abi.h"
#include "portcullis/v1/policy.pb.h"

namespace portcullis::testing {

struct ModelVerdict {
  pc_verdict verdict;
  pc_reason reason;
};

ModelVerdict ModelJudge(const v1::Policy& policy, const std::vector<uint8_t>& frame);

}  // namespace portcullis::testing
