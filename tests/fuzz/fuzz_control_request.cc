// libFuzzer: the control service's request handling on arbitrary protobuf
// messages: a PushRequest through admission (validator, compiler, baseline
// against a live policy) and the diff against it; the same bytes as an audit
// page through the chain verifier, and as a role map through its parser.
#include <google/protobuf/stubs/logging.h>

#include <cstdint>
#include <string>

#include "control/admission.h"
#include "control/audit_chain.h"
#include "control/roles.h"
#include "policy/diff.h"
#include "policy/validator.h"

namespace {

const portcullis::v1::Policy& Live() {
  static const portcullis::v1::Policy live = [] {
    auto checked = portcullis::policy::CheckPolicyText(R"(apiVersion: portcullis/v1
kind: IngressPolicy
metadata: {name: live}
spec:
  defaultAction: deny
  sets: {admins: [198.51.100.0/28]}
  failsafe:
    - {ports: [22, 10250], proto: tcp, from: [admins]}
  ports:
    - {ports: [80, 443], proto: tcp, from: any}
)");
    return checked.loaded->policy;
  }();
  return live;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 is expected, and noisy
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const portcullis::control::Baseline baseline{
      *portcullis::control::PortList::Parse(portcullis::control::kDefaultProtectedPorts),
      *portcullis::control::PortList::Parse(portcullis::control::kDefaultManagementPorts)};
  portcullis::v1::PushRequest push;
  if (push.ParseFromArray(data, static_cast<int>(size))) {
    (void)portcullis::control::Admit(push.policy(), &Live(), push.allow_failsafe_change(),
                                     baseline);
    (void)portcullis::policy::DiffPolicies(Live(), push.policy());
  }
  portcullis::v1::AuditResponse audit;
  if (audit.ParseFromArray(data, static_cast<int>(size))) {
    (void)portcullis::control::VerifyAuditChain({audit.entries().begin(), audit.entries().end()},
                                                "");
  }
  (void)portcullis::control::RoleMap::Parse(std::string(reinterpret_cast<const char*>(data), size),
                                            "roles.yaml");
  return 0;
}
