// A policy at the documented capacity, for tests of memory and of long
// admissions.
#pragma once

#include <string>

#include "absl/strings/str_cat.h"

namespace portcullis::testing {

// `n` blocklist entries, half hosts and half /24s, under 10.0.0.0/8 or
// 11.0.0.0/8 by `variant`; tcp/80 and 8080 open; the failsafe for admins.
inline std::string BlocklistPolicy(int n, int variant) {
  std::string text =
      absl::StrCat("apiVersion: portcullis/v1\nkind: IngressPolicy\nmetadata: {name: big", variant,
                   "}\nspec:\n  defaultAction: deny\n  sets:\n    admins: [198.18.1.0/28]\n"
                   "  failsafe:\n    - {ports: [22, 10250], proto: tcp, from: [admins]}\n"
                   "  ports:\n    - {ports: [80, 8080], proto: tcp, from: any}\n  blocklist:\n");
  for (int i = 0; i < n; ++i) {
    absl::StrAppend(&text, "    - ", 10 + variant, ".", (i >> 16) & 255, ".", (i >> 8) & 255, ".",
                    i % 2 ? "0/24" : absl::StrCat(i & 255, "/32"), "\n");
  }
  return text;
}

}  // namespace portcullis::testing
