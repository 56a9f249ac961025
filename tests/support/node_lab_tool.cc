// portcullis-node-lab up PREFIX | down PREFIX: builds the Kubernetes-node
// lab of node_lab.h (namespaces PREFIX + name) and leaves it in place, or
// removes it. For scripts (the demo) that want the lab the tests use.
#include <cstdio>
#include <cstring>
#include <string>

#include "tests/support/node_lab.h"

int main(int argc, char** argv) {
  using portcullis::testing::NodeLab;
  if (argc != 3 || (std::strcmp(argv[1], "up") != 0 && std::strcmp(argv[1], "down") != 0)) {
    std::fprintf(stderr, "usage: portcullis-node-lab up|down PREFIX\n");
    return 2;
  }
  const std::string prefix = argv[2];
  if (std::strcmp(argv[1], "down") == 0) {
    NodeLab::Remove(prefix);
    return 0;
  }
  NodeLab lab(prefix, /*keep=*/true);
  if (!lab.error().empty()) {
    std::fprintf(stderr, "portcullis-node-lab: %s\n", lab.error().c_str());
    NodeLab::Remove(prefix);
    return 1;
  }
  return 0;
}
