// Whether the control service admits a policy: the validator of
// `portcullisctl validate`, the compiler (what no agent could load is
// refused here rather than on every node) and the baseline against the live
// version. Pure: the service's Push, Rollback and Validate use it, and so
// does the request fuzzer.
#pragma once

#include <vector>

#include "control/baseline.h"
#include "portcullis/v1/control.pb.h"

namespace portcullis::control {

// Errors refuse the policy; warnings do not. `live` may be null.
std::vector<v1::Finding> Admit(const v1::Policy& policy, const v1::Policy* live,
                               bool allow_failsafe_change, const Baseline& baseline);

bool HasErrors(const std::vector<v1::Finding>& findings);

}  // namespace portcullis::control
