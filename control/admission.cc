#include "control/admission.h"

#include "policy/validator.h"

namespace portcullis::control {

std::vector<v1::Finding> Admit(const v1::Policy& policy, const v1::Policy* live,
                               bool allow_failsafe_change, const Baseline& baseline) {
  policy::Diagnostics diags;
  policy::Validate(policy, diags);  // compiles it too: what no agent could load is an error
  if (!diags.has_errors()) CheckBaseline(policy, live, allow_failsafe_change, baseline, diags);
  std::vector<v1::Finding> out;
  for (const policy::Diagnostic& d : diags.all()) {
    v1::Finding& f = out.emplace_back();
    f.set_path(d.path);
    f.set_message(d.message);
    f.set_warning(d.severity == policy::Severity::kWarning);
  }
  return out;
}

bool HasErrors(const std::vector<v1::Finding>& findings) {
  for (const v1::Finding& f : findings) {
    if (!f.warning()) return true;
  }
  return false;
}

}  // namespace portcullis::control
