// The demo capture: a few seconds of traffic in front of an ingress, against
// docs/examples/edge-prod.yaml. Legitimate clients, an office user on a
// NodePort, admins, a port scanner, a blocklisted network, a SYN flood from
// one attacker, fragments, ICMP, ARP, a malformed frame, and traffic to a
// destination the policy does not police. All hosts are in 198.18.0.0/15
// and 2001:db8::/32.
#pragma once

#include <string>

#include "absl/status/status.h"

namespace portcullis::testing {

absl::Status WriteDemoCapture(const std::string& path);

}  // namespace portcullis::testing
