// A uniquely named veth pair whose first end has a chosen ifindex, removed
// on destruction (also when the test fails). (veth rather than dummy: the
// dummy driver is not always built.)
#pragma once

#include <net/if.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

namespace portcullis::testing {

class TestLink {
 public:
  explicit TestLink(unsigned ifindex)
      : name_("pcd" + std::to_string(getpid() % 100000) + "x" + std::to_string(ifindex % 1000)) {
    const std::string cmd = "ip link add " + name_ + " index " + std::to_string(ifindex) +
                            " type veth peer name " + name_ + "p 2>/dev/null";
    if (std::system(cmd.c_str()) == 0) ifindex_ = if_nametoindex(name_.c_str());
  }
  ~TestLink() {
    if (ifindex_ != 0) std::system(("ip link del " + name_ + " 2>/dev/null").c_str());
  }
  TestLink(const TestLink&) = delete;
  TestLink& operator=(const TestLink&) = delete;

  unsigned ifindex() const { return ifindex_; }  // 0 if it could not be created
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  unsigned ifindex_ = 0;
};

}  // namespace portcullis::testing
