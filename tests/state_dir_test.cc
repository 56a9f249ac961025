// The agent's state dir against another local user: it is written only
// through fresh files, never through links, and a directory others can write
// (or plant a last-known-good policy in) is refused.
#include "agent/state_dir.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/yaml_loader.h"
#include "tests/support/temp_dir.h"

namespace portcullis::agent {
namespace {

using ::testing::HasSubstr;
using testing::TempDir;

std::string Read(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

mode_t Mode(const std::string& path) {
  struct stat st;
  EXPECT_EQ(lstat(path.c_str(), &st), 0) << path;
  return st.st_mode & 07777;
}

// The red team's symlink at .policy.yaml.tmp made the agent (root)
// overwrite the file it pointed to.
TEST(StateDirTest, WritesNeverFollowAPlantedLink) {
  TempDir dir;
  const std::string victim = dir.Write("victim", "precious\n");
  const std::string state = dir.path() + "/state";
  auto sd = StateDir::Open(state);
  ASSERT_TRUE(sd.ok()) << sd.status();
  ASSERT_EQ(symlink(victim.c_str(), (state + "/.policy.yaml.tmp").c_str()), 0);
  ASSERT_EQ(symlink(victim.c_str(), (state + "/tc-qdiscs").c_str()), 0);
  const mode_t old_umask = umask(0);
  ASSERT_TRUE(sd->SaveApplied({"apiVersion: portcullis/v1\n", 3}).ok());
  umask(old_umask);
  EXPECT_EQ(Read(victim), "precious\n");
  EXPECT_EQ(Read(state + "/policy.yaml"), "apiVersion: portcullis/v1\n");
  EXPECT_EQ(Mode(state + "/policy.yaml"), 0600) << "whatever the umask";
  EXPECT_EQ(Mode(state + "/policy.version"), 0600);
  EXPECT_FALSE(sd->RecordQdisc("eth0").ok()) << "appended through a link";
  EXPECT_EQ(Read(victim), "precious\n");
}

TEST(StateDirTest, ADirectoryOthersCanWriteOrALinkIsRefused) {
  TempDir dir;
  const std::string open_dir = dir.path() + "/open";
  ASSERT_EQ(mkdir(open_dir.c_str(), 0700), 0);
  ASSERT_EQ(chmod(open_dir.c_str(), 0777), 0);
  auto sd = StateDir::Open(open_dir);
  ASSERT_FALSE(sd.ok());
  EXPECT_THAT(sd.status().message(), HasSubstr("other users can write to it (mode 777)"));
  const std::string link = dir.path() + "/link";
  ASSERT_EQ(symlink(dir.path().c_str(), link.c_str()), 0);
  sd = StateDir::Open(link);
  ASSERT_FALSE(sd.ok());
  EXPECT_THAT(sd.status().message(), HasSubstr("not a directory (a symbolic link is refused)"));
  // Created by the agent: private whatever the umask.
  const mode_t old_umask = umask(0);
  sd = StateDir::Open(dir.path() + "/fresh");
  umask(old_umask);
  ASSERT_TRUE(sd.ok()) << sd.status();
  EXPECT_EQ(Mode(dir.path() + "/fresh"), 0700);
}

// A last-known-good policy that is a link (to a file someone else wrote) is
// not read.
TEST(StateDirTest, ALastKnownGoodThatIsALinkIsNotRead) {
  TempDir dir;
  const std::string planted = dir.Write("planted", "apiVersion: portcullis/v1\n");
  auto sd = StateDir::Open(dir.path() + "/state");
  ASSERT_TRUE(sd.ok()) << sd.status();
  ASSERT_EQ(symlink(planted.c_str(), (sd->path() + "/policy.yaml").c_str()), 0);
  auto lkg = sd->LastApplied();
  ASSERT_FALSE(lkg.ok());
  EXPECT_THAT(lkg.status().message(), HasSubstr("is a symbolic link"));
}

TEST(StateDirTest, TheApplyMarkIsTakenOnce) {
  TempDir dir;
  auto sd = StateDir::Open(dir.path() + "/state");
  ASSERT_TRUE(sd.ok()) << sd.status();
  EXPECT_EQ(sd->TakeApplying(), std::nullopt);
  ASSERT_TRUE(sd->MarkApplying({"sha256:abc", 2}).ok());
  EXPECT_EQ(sd->TakeApplying(), (InterruptedApply{"sha256:abc", 2}));
  EXPECT_EQ(sd->TakeApplying(), std::nullopt);
  ASSERT_TRUE(sd->MarkApplying({"sha256:abc", 1}).ok());
  ASSERT_TRUE(sd->ClearApplying().ok());
  EXPECT_EQ(sd->TakeApplying(), std::nullopt);
}

// The policy file: a FIFO hung the agent in open(2), deaf to SIGTERM, and
// /dev/zero filled its memory. Only regular files, up to the limit, are read.
TEST(PolicyFileTest, OnlyARegularFileWithinTheLimitIsRead) {
  TempDir dir;
  const std::string fifo = dir.path() + "/fifo";
  ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
  auto text = policy::ReadTextFile(fifo);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().message(), fifo + ": not a regular file");
  text = policy::ReadTextFile("/dev/zero");
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().message(), "/dev/zero: not a regular file");
  const std::string big = dir.path() + "/big.yaml";
  ASSERT_EQ(truncate(dir.Write("big.yaml", "").c_str(), (32 << 20) + 1), 0);
  text = policy::ReadTextFile(big);
  ASSERT_FALSE(text.ok());
  EXPECT_EQ(text.status().message(), big + ": 33554433 bytes; the limit is 33554432 (32 MiB)");
}

}  // namespace
}  // namespace portcullis::agent
