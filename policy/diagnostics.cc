#include "policy/diagnostics.h"

#include <algorithm>

#include "absl/strings/str_cat.h"

namespace portcullis::policy {

void Diagnostics::Error(absl::string_view path, absl::string_view message) {
  // A field the loader already rejected (wrong type, unknown word) reads as
  // missing or zero; one error per field is enough.
  for (const Diagnostic& d : diagnostics_) {
    if (d.severity == Severity::kError && d.path == path) return;
  }
  Add(Severity::kError, Locate(path), path, message);
}

void Diagnostics::Warning(absl::string_view path, absl::string_view message) {
  Add(Severity::kWarning, Locate(path), path, message);
}

void Diagnostics::ErrorAt(SourceLocation location, absl::string_view path,
                          absl::string_view message) {
  Add(Severity::kError, location, path, message);
}

bool Diagnostics::has_errors() const { return error_count() > 0; }

int Diagnostics::error_count() const { return CountErrors(diagnostics_); }

std::string Diagnostics::Format(absl::string_view file) const {
  return FormatDiagnostics(file, diagnostics_);
}

void Diagnostics::Add(Severity severity, SourceLocation location, absl::string_view path,
                      absl::string_view message) {
  diagnostics_.push_back(Diagnostic{severity, std::string(path), location, std::string(message)});
}

SourceLocation Diagnostics::Locate(absl::string_view path) const {
  if (locations_ == nullptr) return {};
  // A field that was never written (a missing key) is placed at the nearest
  // enclosing field that was.
  std::string p(path);
  while (true) {
    if (auto it = locations_->find(p); it != locations_->end()) return it->second;
    const size_t cut = p.find_last_of(".[");
    if (cut == std::string::npos || cut == 0) break;
    p.resize(cut);
  }
  if (auto it = locations_->find(""); it != locations_->end()) return it->second;
  return {};
}

std::string FormatDiagnostic(absl::string_view file, const Diagnostic& d) {
  std::string out(file);
  if (d.location.line > 0) absl::StrAppend(&out, ":", d.location.line, ":", d.location.column);
  absl::StrAppend(&out, d.severity == Severity::kError ? ": error: " : ": warning: ");
  if (!d.path.empty()) absl::StrAppend(&out, d.path, ": ");
  absl::StrAppend(&out, d.message);
  return out;
}

std::string FormatDiagnostics(absl::string_view file, const std::vector<Diagnostic>& all) {
  std::string out;
  for (const Diagnostic& d : all) absl::StrAppend(&out, FormatDiagnostic(file, d), "\n");
  return out;
}

int CountErrors(const std::vector<Diagnostic>& all) {
  return static_cast<int>(std::count_if(
      all.begin(), all.end(), [](const Diagnostic& d) { return d.severity == Severity::kError; }));
}

}  // namespace portcullis::policy
