#include "agent/state_dir.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "policy/yaml_loader.h"

namespace portcullis::agent {
namespace {

constexpr char kPolicyFile[] = "policy.yaml";
constexpr char kVersionFile[] = "policy.version";
constexpr char kQdiscFile[] = "tc-qdiscs";
// The content hash of the policy being applied; removed once the apply
// returns. Found at start, it names a policy that stopped the agent.
constexpr char kApplyingFile[] = "applying";

absl::Status Errno(absl::string_view what, const std::string& path) {
  return absl::UnavailableError(absl::StrCat(what, " ", path, ": ", std::strerror(errno)));
}

// Writes through a fresh temporary file, never through a link: whoever else
// could create `.NAME.tmp` as a symlink would otherwise have the agent (root)
// overwrite its target. Mode 0600 whatever the umask.
absl::Status WriteDurably(const std::string& dir, const std::string& name,
                          const std::string& content) {
  const std::string tmp = absl::StrCat(dir, "/.", name, ".tmp");
  const std::string dst = absl::StrCat(dir, "/", name);
  if (unlink(tmp.c_str()) && errno != ENOENT) return Errno("cannot remove", tmp);
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot write", tmp);
  const bool written =
      fchmod(fd, 0600) == 0 &&
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

absl::StatusOr<std::string> ReadOwnFile(const std::string& path) {
  return policy::ReadTextFile(path, O_NOFOLLOW);
}

}  // namespace

absl::StatusOr<StateDir> StateDir::Open(const std::string& path) {
  std::error_code ec;
  const std::filesystem::path dir(path);
  if (dir.has_parent_path()) std::filesystem::create_directories(dir.parent_path(), ec);
  if (ec || (mkdir(path.c_str(), 0700) && errno != EEXIST)) {
    return absl::UnavailableError(absl::StrCat(
        "--state-dir ", path, ": cannot create: ", ec ? ec.message() : std::strerror(errno)));
  }
  RETURN_IF_ERROR(CheckPrivateDir("--state-dir", path));
  return StateDir(path);
}

absl::Status CheckPrivateDir(absl::string_view flag, const std::string& path) {
  struct stat st;
  if (lstat(path.c_str(), &st)) {
    return absl::UnavailableError(absl::StrCat(flag, " ", path, ": ", std::strerror(errno)));
  }
  if (!S_ISDIR(st.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrCat(flag, " ", path, ": not a directory (a symbolic link is refused)"));
  }
  if (st.st_uid != geteuid()) {
    return absl::FailedPreconditionError(
        absl::StrCat(flag, " ", path, ": owned by uid ", st.st_uid, ", not by this process (uid ",
                     geteuid(), "): whoever owns it could plant the policy this agent enforces"));
  }
  if (st.st_mode & (S_IWGRP | S_IWOTH)) {
    return absl::FailedPreconditionError(
        absl::StrCat(flag, " ", path, ": other users can write to it (mode ",
                     absl::StrFormat("%o", st.st_mode & 07777), "): chmod 0700 it"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::optional<AppliedPolicy>> StateDir::LastApplied() const {
  auto yaml = ReadOwnFile(absl::StrCat(path_, "/", kPolicyFile));
  if (absl::IsNotFound(yaml.status())) return std::nullopt;
  if (!yaml.ok()) return yaml.status();
  auto version_text = ReadOwnFile(absl::StrCat(path_, "/", kVersionFile));
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
  const int fd = open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) return Errno("cannot write", path);
  const std::string line = absl::StrCat(ifname, "\n");
  const bool written = write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  close(fd);
  if (!written) return Errno("cannot write", path);
  return absl::OkStatus();
}

std::set<std::string> StateDir::RecordedQdiscs() const {
  std::set<std::string> names;
  auto text = ReadOwnFile(absl::StrCat(path_, "/", kQdiscFile));
  if (!text.ok()) return names;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    names.insert(std::string(line));
  }
  return names;
}

absl::Status StateDir::MarkApplying(const InterruptedApply& mark) const {
  return WriteDurably(path_, kApplyingFile, absl::StrCat(mark.hash, " ", mark.attempts, "\n"));
}

absl::Status StateDir::ClearApplying() const {
  const std::string path = absl::StrCat(path_, "/", kApplyingFile);
  if (unlink(path.c_str()) && errno != ENOENT) return Errno("cannot remove", path);
  return absl::OkStatus();
}

std::optional<InterruptedApply> StateDir::TakeApplying() const {
  auto text = ReadOwnFile(absl::StrCat(path_, "/", kApplyingFile));
  if (!text.ok()) return std::nullopt;
  if (absl::Status s = ClearApplying(); !s.ok()) {
    LogWarning("cannot clear the apply marker", {{"error", std::string(s.message())}});
  }
  const std::vector<absl::string_view> parts =
      absl::StrSplit(absl::StripAsciiWhitespace(*text), ' ', absl::SkipEmpty());
  InterruptedApply mark;
  if (parts.empty()) return std::nullopt;
  mark.hash = std::string(parts[0]);
  if (parts.size() < 2 || !absl::SimpleAtoi(parts[1], &mark.attempts)) mark.attempts = 1;
  return mark;
}

absl::Status StateDir::RemoveAll() const {
  for (const char* name : {kQdiscFile, kPolicyFile, kVersionFile, kApplyingFile}) {
    const std::string path = absl::StrCat(path_, "/", name);
    if (unlink(path.c_str()) && errno != ENOENT) return Errno("cannot remove", path);
  }
  return absl::OkStatus();
}

}  // namespace portcullis::agent
