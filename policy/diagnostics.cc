#include "policy/diagnostics.h"

#include <algorithm>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
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

const SourceLocation* SourceMap::Find(absl::string_view path) const {
  if (auto it = fields_.find(path); it != fields_.end()) return &it->second;
  // "LIST[N]": item N of a list of strings.
  if (!absl::EndsWith(path, "]")) return nullptr;
  const size_t open = path.rfind('[');
  size_t index = 0;
  if (open == absl::string_view::npos ||
      !absl::SimpleAtoi(path.substr(open + 1, path.size() - open - 2), &index)) {
    return nullptr;
  }
  const auto it = items_.find(path.substr(0, open));
  if (it == items_.end() || index >= it->second.size()) return nullptr;
  return &it->second[index];
}

SourceLocation Diagnostics::Locate(absl::string_view path) const {
  if (locations_ == nullptr) return {};
  // A field that was never written (a missing key) is placed at the nearest
  // enclosing field that was.
  absl::string_view p = path;
  while (true) {
    if (const SourceLocation* at = locations_->Find(p)) return *at;
    const size_t cut = p.find_last_of(".[");
    if (cut == absl::string_view::npos || cut == 0) break;
    p = p.substr(0, cut);
  }
  if (const SourceLocation* at = locations_->Find("")) return *at;
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
