// Findings about a policy: errors (the policy is rejected) and warnings (it
// is accepted, but something looks wrong). Each names the field by its path
// ("spec.ports[1].from[0]") and, when the policy came from a file, the line
// and column.
#pragma once

#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace portcullis::policy {

struct SourceLocation {
  int line = 0;    // 1-based; 0 when unknown (a policy that came from the wire)
  int column = 0;  // 1-based
};

// Where each field of a loaded policy was written, by path.
using SourceMap = absl::flat_hash_map<std::string, SourceLocation>;

enum class Severity { kError, kWarning };

struct Diagnostic {
  Severity severity;
  std::string path;  // field path; empty for the document as a whole
  SourceLocation location;
  std::string message;
};

class Diagnostics {
 public:
  // `locations` (may be null) supplies line:column for paths.
  explicit Diagnostics(const SourceMap* locations = nullptr) : locations_(locations) {}

  void set_locations(const SourceMap* locations) { locations_ = locations; }

  // At most one error per path: a later Error() for a path that already has
  // one is dropped.
  void Error(absl::string_view path, absl::string_view message);
  void Warning(absl::string_view path, absl::string_view message);
  // With an explicit location, for findings the source map cannot place
  // (YAML syntax errors, unknown keys).
  void ErrorAt(SourceLocation location, absl::string_view path, absl::string_view message);

  bool has_errors() const;
  int error_count() const;
  const std::vector<Diagnostic>& all() const { return diagnostics_; }

  // One line per finding, in the order found: "FILE:LINE:COL: error: PATH: MESSAGE".
  std::string Format(absl::string_view file) const;

 private:
  void Add(Severity severity, SourceLocation location, absl::string_view path,
           absl::string_view message);
  SourceLocation Locate(absl::string_view path) const;

  const SourceMap* locations_;
  std::vector<Diagnostic> diagnostics_;
};

std::string FormatDiagnostic(absl::string_view file, const Diagnostic& d);
// One line per finding, in order.
std::string FormatDiagnostics(absl::string_view file, const std::vector<Diagnostic>& all);
int CountErrors(const std::vector<Diagnostic>& all);

}  // namespace portcullis::policy
