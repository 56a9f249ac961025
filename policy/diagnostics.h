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

// Where each field of a loaded policy was written, by path. The items of
// lists of strings (CIDRs, set names) are kept as one array per list, 8
// bytes an item: a path per item cost 100 bytes each for 1M CIDRs.
class SourceMap {
 public:
  void Set(const std::string& path, SourceLocation at) { fields_[path] = at; }
  // Item `index` of the list at `list` ("spec.blocklist"), whose path is
  // "spec.blocklist[index]"; items are added in order.
  void AddItem(const std::string& list, SourceLocation at) { items_[list].push_back(at); }
  // Where `path` was written, if it was.
  const SourceLocation* Find(absl::string_view path) const;

 private:
  absl::flat_hash_map<std::string, SourceLocation> fields_;
  absl::flat_hash_map<std::string, std::vector<SourceLocation>> items_;
};

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
