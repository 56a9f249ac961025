// libFuzzer: policy YAML → loader → validator → compiler. Properties beyond
// "no crash": a valid policy compiles or says why (capacity), and writes
// back as YAML that reads into the same policy (same content hash).
#include <cstdint>
#include <cstdlib>
#include <string>

#include "policy/compiler.h"
#include "policy/diff.h"
#include "policy/text.h"
#include "policy/validator.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  portcullis::policy::CheckedPolicyFile checked = portcullis::policy::CheckPolicyText(text);
  (void)checked.Format("fuzz.yaml");
  if (!checked.ok()) return 0;
  const portcullis::v1::Policy& policy = checked.loaded->policy;
  auto compiled = portcullis::policy::Compile(policy);
  if (!compiled.ok() && compiled.status().code() != absl::StatusCode::kResourceExhausted) {
    std::abort();  // the validator accepted what the compiler calls invalid
  }
  portcullis::policy::CheckedPolicyFile again =
      portcullis::policy::CheckPolicyText(portcullis::policy::ToYaml(policy));
  if (!again.ok() || portcullis::policy::ContentHash(again.loaded->policy) !=
                         portcullis::policy::ContentHash(policy)) {
    std::abort();  // the last-known-good copy would not read back as the same policy
  }
  if (!portcullis::policy::DiffPolicies(policy, again.loaded->policy).empty()) std::abort();
  return 0;
}
