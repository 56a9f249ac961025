// libFuzzer: a policy as it arrives on the wire (protobuf bytes, unchecked)
// → validator → compiler. The agent re-validates what the service streams,
// and the compiler must never crash on anything the validator lets through.
#include <google/protobuf/stubs/logging.h>

#include <cstdint>
#include <cstdlib>

#include "policy/compiler.h"
#include "policy/text.h"
#include "policy/validator.h"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 is expected, and noisy
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  portcullis::v1::Policy policy;
  if (!policy.ParseFromArray(data, static_cast<int>(size))) return 0;
  portcullis::policy::Diagnostics diags;
  portcullis::policy::Validate(policy, diags);
  (void)diags.Format("wire");
  (void)portcullis::policy::ToYaml(policy);
  (void)portcullis::policy::ContentHash(policy);
  if (diags.has_errors()) return 0;
  auto compiled = portcullis::policy::Compile(policy);
  if (!compiled.ok() && compiled.status().code() != absl::StatusCode::kResourceExhausted) {
    std::abort();  // the validator accepted what the compiler calls invalid
  }
  return 0;
}
