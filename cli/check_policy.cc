#include "cli/check_policy.h"

#include <iostream>

#include "datapath/datapath.h"
#include "policy/validator.h"

namespace portcullis::cli {

std::optional<v1::Policy> CheckPolicy(const std::string& path, bool report_valid) {
  policy::CheckedPolicyFile checked = policy::CheckPolicyFile(path);
  if (checked.loaded) {
    // Valid anywhere; honoured only where the kernel can complete a cookie.
    constexpr absl::string_view kField = "spec.rateLimits.syn.cookies";
    const v1::Cookies cookies = checked.loaded->policy.spec().rate_limits().syn().cookies();
    if (cookies == v1::COOKIES_AUTO || cookies == v1::COOKIES_ALWAYS) {
      if (absl::Status s = datapath::SynCookiesSupported(); !s.ok()) {
        const policy::SourceLocation* at = checked.loaded->locations.Find(kField);
        checked.diagnostics.push_back(policy::Diagnostic{
            policy::Severity::kWarning, std::string(kField), at ? *at : policy::SourceLocation{},
            absl::StrCat("an agent on a kernel like this one answers no SYN with a cookie (",
                         s.message(), "): SYNs are judged there as with cookies: off")});
      }
    }
  }
  std::cerr << checked.Format(path);
  if (!checked.ok()) {
    std::cerr << path << ": invalid (" << checked.errors() << " error"
              << (checked.errors() == 1 ? "" : "s") << ")\n";
    return std::nullopt;
  }
  if (report_valid) {
    std::cout << path << ": valid";
    if (checked.warnings()) {
      std::cout << " (" << checked.warnings() << " warning" << (checked.warnings() == 1 ? "" : "s")
                << ")";
    }
    std::cout << "\n";
  }
  return checked.loaded->policy;
}

}  // namespace portcullis::cli
