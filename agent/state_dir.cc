#include "agent/state_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "policy/yaml_loader.h"

namespace portcullis::agent {
namespace {

constexpr char kPolicyFile[] = "policy.yaml";
constexpr char kVersionFile[] = "policy.version";
constexpr char kQdiscFile[] = "tc-qdiscs";

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

absl::Status WriteDurably(const std::string& dir, const std::string& name,
                          const std::string& content) {
  const std::string tmp = absl::StrCat(dir, "/.", name, ".tmp");
  const std::string dst = absl::StrCat(dir, "/", name);
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot write", tmp);
  const bool written =
      write(fd, content.data(), content.size()) == static_cast<ssize_t>(content.size()) &&
      fsync(fd) == 0;
  close(fd);
  if (!written) return Errno("cannot write", tmp);
  if (rename(tmp.c_str(), dst.c_str())) return Errno("cannot rename to", dst);
  const int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<StateDir> StateDir::Open(const std::string& path) {
  std::error_code ec;
  std::filesystem::create_directories(path, ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("--state-dir ", path, ": cannot create: ", ec.message()));
  }
  return StateDir(path);
}

absl::StatusOr<std::optional<AppliedPolicy>> StateDir::LastApplied() const {
  auto yaml = policy::ReadTextFile(absl::StrCat(path_, "/", kPolicyFile));
  if (absl::IsNotFound(yaml.status())) return std::nullopt;
  if (!yaml.ok()) return yaml.status();
  auto version_text = policy::ReadTextFile(absl::StrCat(path_, "/", kVersionFile));
  uint64_t version = 0;
  if (!version_text.ok() ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(*version_text), &version)) {
    return absl::DataLossError(absl::StrCat(path_, "/", kVersionFile, " is missing or corrupt"));
  }
  return AppliedPolicy{*std::move(yaml), version};
}

absl::Status StateDir::SaveApplied(const AppliedPolicy& applied) const {
  // The policy first: a crash between the two leaves a version that names
  // the older text, which the next start re-applies as a newer version.
  if (absl::Status s = WriteDurably(path_, kPolicyFile, applied.yaml); !s.ok()) return s;
  return WriteDurably(path_, kVersionFile, absl::StrCat(applied.version, "\n"));
}

absl::Status StateDir::RecordQdisc(const std::string& ifname) const {
  const std::string path = absl::StrCat(path_, "/", kQdiscFile);
  std::ofstream out(path, std::ios::app);
  out << ifname << "\n";
  out.flush();
  if (!out) return absl::UnavailableError(absl::StrCat("cannot write ", path));
  return absl::OkStatus();
}

std::set<std::string> StateDir::RecordedQdiscs() const {
  std::set<std::string> names;
  std::ifstream in(absl::StrCat(path_, "/", kQdiscFile));
  for (std::string line; std::getline(in, line);) {
    if (!line.empty()) names.insert(line);
  }
  return names;
}

absl::Status StateDir::RemoveAll() const {
  for (const char* name : {kQdiscFile, kPolicyFile, kVersionFile}) {
    const std::string path = absl::StrCat(path_, "/", name);
    if (unlink(path.c_str()) && errno != ENOENT) return Errno("cannot remove", path);
  }
  return absl::OkStatus();
}

}  // namespace portcullis::agent
