// portcullis-demo-capture FILE: writes the demo capture (see demo_traffic.h).
#include <iostream>

#include "tests/support/demo_traffic.h"

int main(int argc, char** argv) {
  if (argc != 2) {
    std::cerr << "usage: portcullis-demo-capture FILE.pcap\n";
    return 2;
  }
  const absl::Status s = portcullis::testing::WriteDemoCapture(argv[1]);
  if (!s.ok()) {
    std::cerr << "portcullis-demo-capture: " << s.message() << "\n";
    return 1;
  }
  return 0;
}
