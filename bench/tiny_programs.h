// Hand-assembled XDP programs the benchmarks measure against.
#pragma once

#include <bpf/bpf.h>
#include <linux/bpf.h>

#include <cstdio>
#include <cstdlib>

namespace portcullis::bench {

// An XDP program that only returns `action`: the floor of every figure.
inline int LoadReturnProgram(int action, const char* name) {
  const struct bpf_insn insns[] = {
      {.code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = BPF_REG_0, .imm = action},
      {.code = BPF_JMP | BPF_EXIT},
  };
  const int fd = bpf_prog_load(BPF_PROG_TYPE_XDP, name, "GPL", insns, 2, nullptr);
  if (fd < 0) {
    std::perror("bpf_prog_load");
    std::exit(1);
  }
  return fd;
}

}  // namespace portcullis::bench
