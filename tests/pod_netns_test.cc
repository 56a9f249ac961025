// How the agent finds a pod's side of its veth (agent/pod_netns.h): the
// peer's namespace among those in /run/netns, matched by the id the node's
// namespace gives it, and the peer's index there; nothing for a link whose
// peer is not in another namespace. On namespaces the test creates, with
// the node's side in one of them (entered with InNetns).
#include "agent/pod_netns.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/support/command.h"
#include "tests/support/temp_dir.h"

namespace portcullis::agent {
namespace {

using ::portcullis::testing::RunCommand;
using ::testing::HasSubstr;

ino_t Inode(int fd) {
  struct stat st = {};
  return fstat(fd, &st) == 0 ? st.st_ino : 0;
}

TEST(PodNetnsTest, FindsThePeersNamespaceAndIndexAndNothingForALinkWithoutOne) {
  if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  const std::string node = absl::StrCat("pcpn", getpid(), "n");
  const std::string pod = absl::StrCat("pcpn", getpid(), "p");
  struct Cleanup {
    std::string node, pod;
    ~Cleanup() { RunCommand("ip netns del " + node + "; ip netns del " + pod); }
  } cleanup{node, pod};
  ASSERT_EQ(RunCommand(absl::StrCat("ip netns add ", node, " && ip netns add ", pod, " && ip -n ",
                                    node, " link add calipod type veth peer name eth0 netns ", pod,
                                    " && ip -n ", node, " link add own0 type veth peer name own1"))
                .exit_code,
            0);
  // (ip netns exec mounts the namespace's own /sys.)
  int want_ifindex = 0;
  ASSERT_TRUE(absl::SimpleAtoi(
      absl::StripAsciiWhitespace(
          RunCommand("ip netns exec " + pod + " cat /sys/class/net/eth0/ifindex").out),
      &want_ifindex));
  const int node_fd = open(("/run/netns/" + node).c_str(), O_RDONLY | O_CLOEXEC);
  const int pod_fd = open(("/run/netns/" + pod).c_str(), O_RDONLY | O_CLOEXEC);
  ASSERT_GE(node_fd, 0);
  ASSERT_GE(pod_fd, 0);
  testing::TempDir empty;

  const absl::Status s = InNetns(node_fd, [&] {
    auto side = FindPodSide("calipod");
    EXPECT_TRUE(side.ok()) << side.status();
    if (side.ok()) {
      EXPECT_TRUE(side->has_value());
      if (side->has_value()) {
        EXPECT_EQ(Inode((*side)->netns.get()), Inode(pod_fd)) << "the pod's namespace";
        EXPECT_EQ((*side)->ifindex, want_ifindex) << "eth0's index in it";
      }
    }
    for (const char* own : {"lo", "own0"}) {  // own0: a veth whose peer is here
      auto none = FindPodSide(own);
      EXPECT_TRUE(none.ok()) << none.status();
      if (none.ok()) EXPECT_FALSE(none->has_value()) << own;
    }
    auto elsewhere = FindPodSide("calipod", empty.path());
    EXPECT_TRUE(absl::IsNotFound(elsewhere.status())) << elsewhere.status();
    EXPECT_THAT(elsewhere.status().message(), HasSubstr("is not in " + empty.path()));
    EXPECT_TRUE(absl::IsNotFound(FindPodSide("nosuch0").status()));
    return absl::OkStatus();
  });
  EXPECT_TRUE(s.ok()) << s;
  close(node_fd);
  close(pod_fd);
}

TEST(PodNetnsTest, PodNamespacesAreOutOfReachWithoutTheirDirectory) {
  const absl::Status s = CanReachPodNamespaces("/nonexistent/netns");
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("/nonexistent/netns"));
  if (geteuid() == 0) EXPECT_TRUE(CanReachPodNamespaces("/").ok()) << "root has CAP_SYS_ADMIN";
}

TEST(PodNetnsTest, InNetnsSaysWhatFailed) {
  const absl::Status s = InNetns(-1, [] { return absl::OkStatus(); });
  EXPECT_THAT(s.message(), HasSubstr("setns"));
}

}  // namespace
}  // namespace portcullis::agent
