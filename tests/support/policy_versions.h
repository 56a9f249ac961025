// Policy versions as the control service streams them, for the tests of the
// agent's control-service policy source.
#pragma once

#include <cstdint>

#include "policy/text.h"
#include "policy/validator.h"
#include "portcullis/v1/control.pb.h"

namespace portcullis::testing {

// A small valid policy (defaultAction allow, tcp/80 from any).
inline constexpr char kStreamedPolicy[] = R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: t}
spec:
  defaultAction: allow
  ports:
    - {ports: [80], proto: tcp, from: any}
)";

// Version `number` of kStreamedPolicy, with its content hash; with !valid,
// its port rule names port 0, which an agent must reject.
inline v1::PolicyVersion StreamedVersion(uint64_t number, bool valid = true) {
  v1::PolicyVersion v;
  v.set_version(number);
  *v.mutable_policy() = policy::CheckPolicyText(kStreamedPolicy).loaded->policy;
  if (!valid) v.mutable_policy()->mutable_spec()->mutable_ports(0)->mutable_ports(0)->set_first(0);
  v.set_content_hash(policy::ContentHash(v.policy()));
  return v;
}

}  // namespace portcullis::testing
